// Package inbound reads the messages customers sent to tenants' numbers, as ingest stored
// them from Meta's webhooks, for GET /v1/inbound: a tenant's messages in arrival order,
// paged by an opaque cursor.
package inbound

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrInvalidCursor means a cursor this package did not hand out.
var ErrInvalidCursor = errors.New("invalid inbound cursor")

// Page sizes.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// Message is one inbound message.
type Message struct {
	ID            string          `json:"id"`
	WAMID         string          `json:"wamid"`
	PhoneNumberID string          `json:"phone_number_id"`
	From          string          `json:"from"`
	Type          string          `json:"type"`
	Timestamp     time.Time       `json:"timestamp"`   // when the customer sent it (Meta's)
	ReceivedAt    time.Time       `json:"received_at"` // when aerogate's webhook edge received it
	Contact       json.RawMessage `json:"contact,omitempty"`
	Message       json.RawMessage `json:"message"` // Meta's message object as received
}

// Repository reads inbound_messages.
type Repository struct{ pool *pgxpool.Pool }

// NewRepository returns a repository over pool.
func NewRepository(pool *pgxpool.Pool) *Repository { return &Repository{pool: pool} }

// Cursor is a position in a tenant's inbound messages: the messages after it come next.
// Its text form is opaque; the zero Cursor is the beginning.
type Cursor struct{ seq int64 }

const cursorPrefix = "in1."

// String is the cursor's opaque text form ("" for the beginning).
func (c Cursor) String() string {
	if c.seq <= 0 {
		return ""
	}
	return cursorPrefix + base64.RawURLEncoding.EncodeToString(strconv.AppendInt(nil, c.seq, 36))
}

// ParseCursor reads a cursor's text form; "" is the beginning.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	rest, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok || len(rest) > 24 {
		return Cursor{}, ErrInvalidCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Cursor{}, ErrInvalidCursor
	}
	n, err := strconv.ParseInt(string(b), 36, 64)
	if err != nil || n <= 0 {
		return Cursor{}, ErrInvalidCursor
	}
	return Cursor{seq: n}, nil
}

const listSQL = `
SELECT seq, id::text, wamid, phone_number_id, from_wa_id, type, sent_at, received_at, contact, message
  FROM inbound_messages
 WHERE tenant_id = $1 AND seq > $2
 ORDER BY seq
 LIMIT $3`

// List returns up to limit of the tenant's messages after the cursor, in arrival order,
// and the cursor to pass next (the same cursor when there is nothing new: poll with it).
// limit is clamped to 1..MaxLimit; 0 means DefaultLimit.
func (r *Repository) List(ctx context.Context, tenantID string, after Cursor, limit int) ([]Message, Cursor, error) {
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 1:
		limit = 1
	case limit > MaxLimit:
		limit = MaxLimit
	}
	rows, err := r.pool.Query(ctx, listSQL, tenantID, after.seq, limit)
	if err != nil {
		return nil, after, fmt.Errorf("listing inbound messages: %w", err)
	}
	out := make([]Message, 0, limit)
	next := after
	var m Message
	var seq int64
	var contact, msg []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &m.ID, &m.WAMID, &m.PhoneNumberID, &m.From, &m.Type,
		&m.Timestamp, &m.ReceivedAt, &contact, &msg}, func() error {
		m.Timestamp, m.ReceivedAt = m.Timestamp.UTC(), m.ReceivedAt.UTC()
		m.Contact, m.Message = nil, json.RawMessage(append([]byte(nil), msg...))
		if contact != nil {
			m.Contact = json.RawMessage(append([]byte(nil), contact...))
		}
		out = append(out, m)
		next = Cursor{seq: seq}
		return nil
	})
	if err != nil {
		return nil, after, fmt.Errorf("listing inbound messages: %w", err)
	}
	return out, next, nil
}
