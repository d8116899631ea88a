// Package message stores the life of every accepted send in Postgres: its status only
// moves forward (accepted → sending → sent → delivered → read), and failed is final.
package message

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Status of a message.
type Status string

const (
	StatusAccepted  Status = "accepted"
	StatusSending   Status = "sending"
	StatusSent      Status = "sent"
	StatusDelivered Status = "delivered"
	StatusRead      Status = "read"
	StatusFailed    Status = "failed"
)

// ErrNotFound means no message with that id for that tenant.
var ErrNotFound = errors.New("message not found")

// Message is one row of messages.
type Message struct {
	ID             string
	TenantID       string
	AccountID      string
	PhoneNumberID  string
	Recipient      string
	IdempotencyKey string
	Status         Status
	WAMID          string
	Attempts       int
	ErrorCode      int
	ErrorTitle     string
	AcceptedAt     time.Time
	SentAt         *time.Time
	UpdatedAt      time.Time
}

// Repository reads and writes messages, batching writes. The gateway's side (Get,
// InsertAccepted) lives in this file; the sender's side (claims and outcomes) in claim.go.
type Repository struct {
	pool *pgxpool.Pool
}

// NewRepository returns a repository over pool.
func NewRepository(pool *pgxpool.Pool) *Repository { return &Repository{pool: pool} }

// Get returns the tenant's message; another tenant's message is ErrNotFound.
func (r *Repository) Get(ctx context.Context, tenantID, id string) (*Message, error) {
	panic("unimplemented")
}

// InsertAccepted records accepted messages in one round trip; rows that exist already
// are left as they are (status never moves back).
func (r *Repository) InsertAccepted(ctx context.Context, msgs []Message) error {
	panic("unimplemented")
}
