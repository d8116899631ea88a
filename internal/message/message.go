// Package message stores the life of every send in Postgres: its status only moves
// forward (unknown → accepted → queued → sending → sent → delivered → read), and failed is
// final; binds each Idempotency-Key to the request that first used it (keys.go); and
// keeps the sender's per-number queue of parked sends (parked.go).
package message

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Status of a message (StatusQueued is in parked.go).
type Status string

const (
	// StatusUnknown: the gateway answered 504 queue_timeout: Kafka did not acknowledge
	// the send in time, so it may or may not be queued. It stays unknown until a sender
	// claims it (it was queued after all) or a retry of it is acknowledged.
	StatusUnknown   Status = "unknown"
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
	DeliveredAt    *time.Time // Meta's time of the delivered status
	ReadAt         *time.Time // Meta's time of the read status
	UpdatedAt      time.Time
	// ExpectedSendAt is when a queued message is expected to be sent (estimated when it
	// was parked); nil when not queued or while its account cannot send.
	ExpectedSendAt *time.Time
}

// Repository reads and writes messages, batching writes. The gateway's side (Get,
// InsertAccepted) lives in this file; the sender's side (claims and outcomes) in claim.go.
type Repository struct {
	pool *pgxpool.Pool
}

// NewRepository returns a repository over pool.
func NewRepository(pool *pgxpool.Pool) *Repository { return &Repository{pool: pool} }

const getSQL = `
SELECT id::text, tenant_id, account_id::text, phone_number_id, recipient,
       coalesce(idempotency_key, ''), status, coalesce(wamid, ''), attempts,
       coalesce(error_code, 0), coalesce(error_title, ''), accepted_at, sent_at, updated_at,
       delivered_at, read_at, CASE WHEN status = 'queued' THEN expected_send_at END
  FROM messages
 WHERE id = $1 AND tenant_id = $2`

// Get returns the tenant's message; another tenant's message is ErrNotFound.
func (r *Repository) Get(ctx context.Context, tenantID, id string) (*Message, error) {
	// A malformed id names no message; checking here keeps a cast error out of Postgres.
	uid, err := uuid.Parse(id)
	if err != nil {
		return nil, ErrNotFound
	}
	var m Message
	var status string
	err = r.pool.QueryRow(ctx, getSQL, uid.String(), tenantID).Scan(
		&m.ID, &m.TenantID, &m.AccountID, &m.PhoneNumberID, &m.Recipient,
		&m.IdempotencyKey, &status, &m.WAMID, &m.Attempts,
		&m.ErrorCode, &m.ErrorTitle, &m.AcceptedAt, &m.SentAt, &m.UpdatedAt,
		&m.DeliveredAt, &m.ReadAt, &m.ExpectedSendAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading message %s: %w", uid, err)
	}
	m.Status = Status(status)
	return &m, nil
}

// insertAcceptedSQL takes one array per column, so a batch of any size is one statement
// with one cached plan (a multi-row VALUES list would be new SQL for every batch size).
// An existing row only ever moves from unknown to accepted.
const insertAcceptedSQL = `
INSERT INTO messages AS m (id, tenant_id, account_id, phone_number_id, recipient, idempotency_key,
                           status, accepted_at, updated_at)
SELECT t.id::uuid, t.tenant_id, t.account_id::uuid, t.phone_number_id, t.recipient,
       NULLIF(t.idempotency_key, ''), t.status, t.accepted_at, t.accepted_at
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
              $8::text[])
       AS t(id, tenant_id, account_id, phone_number_id, recipient, idempotency_key, accepted_at, status)
ON CONFLICT (id) DO UPDATE SET status = 'accepted', updated_at = now()
 WHERE m.status = 'unknown' AND excluded.status = 'accepted'`

// InsertAccepted records sends the gateway answered, in one round trip: Status accepted
// (the default) or unknown (answered 504: the write may or may not be queued). Rows that
// exist already are left as they are, except that unknown becomes accepted (status never
// moves back). An id given twice counts once, as accepted if either says so.
func (r *Repository) InsertAccepted(ctx context.Context, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// One row per id (ON CONFLICT DO UPDATE may touch a row once per statement), in id
	// order (the status column is not reordered by args).
	byID := make(map[string]int, len(msgs))
	ids := make([]string, 0, len(msgs))
	status := make([]string, 0, len(msgs))
	keep := make([]int, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		st := StatusAccepted
		if m.Status == StatusUnknown {
			st = StatusUnknown
		}
		id := canonicalID(m.ID)
		if j, ok := byID[id]; ok {
			if st == StatusAccepted {
				status[j] = string(st)
			}
			continue
		}
		byID[id] = len(ids)
		ids = append(ids, id)
		status = append(status, string(st))
		keep = append(keep, i)
	}
	order := idOrder(ids)
	cols := makeRowColumns(len(ids))
	sorted := make([]string, len(ids))
	for k, j := range order {
		m := &msgs[keep[j]]
		cols.add(&Claim{ID: m.ID, TenantID: m.TenantID, AccountID: m.AccountID, PhoneNumberID: m.PhoneNumberID,
			Recipient: m.Recipient, IdempotencyKey: m.IdempotencyKey, AcceptedAt: m.AcceptedAt})
		sorted[k] = status[j]
	}
	if _, err := r.pool.Exec(ctx, insertAcceptedSQL, cols.args(sorted)...); err != nil {
		return fmt.Errorf("inserting %d accepted messages: %w", len(msgs), err)
	}
	return nil
}
