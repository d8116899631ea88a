package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/retry"
)

// Publisher writes records and returns once Kafka acknowledged them; *queue.Producer
// satisfies it.
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// RelayOptions configure a Relay. Pool and Publisher are required.
type RelayOptions struct {
	Pool      *pgxpool.Pool
	Publisher Publisher // to wa.events
	// Batch is the most outbox rows published in one produce call (default 500).
	Batch int
	// Poll is how often the outbox is read when nothing kicks the relay (default
	// 500ms): rows written by other processes' transactions (a status applied when the
	// sender recorded its wamid) and rows a crashed relay left.
	Poll   time.Duration
	Logger *slog.Logger
}

// Relay publishes event_outbox rows to wa.events and deletes them.
type Relay struct {
	opts      RelayOptions
	log       *slog.Logger
	kick      chan struct{}
	published atomic.Int64
}

// NewRelay checks opts.
func NewRelay(opts RelayOptions) (*Relay, error) {
	if opts.Pool == nil || opts.Publisher == nil {
		return nil, fmt.Errorf("events relay: Pool and Publisher are required")
	}
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Relay{opts: opts, log: opts.Logger, kick: make(chan struct{}, 1)}, nil
}

// Kick makes the relay read the outbox now (after a commit that wrote to it).
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Published is how many records this relay published.
func (r *Relay) Published() int64 { return r.published.Load() }

// Run publishes until ctx ends; then it publishes what is in the outbox one last time
// (bounded by a few seconds) and returns.
func (r *Relay) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Poll)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = r.Drain(fctx)
			cancel()
			return
		case <-r.kick:
		case <-t.C:
		}
		if _, err := r.Drain(ctx); err != nil && ctx.Err() == nil {
			failures++
			r.log.Warn("publishing wa.events from the outbox; trying again", "error", err.Error())
			retry.Sleep(ctx, retry.Backoff(failures, 100*time.Millisecond, 5*time.Second, nil))
			continue
		}
		failures = 0
	}
}

// Drain publishes outbox batches until the outbox is empty (of rows no other relay
// holds) and returns how many it published.
func (r *Relay) Drain(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := r.publishBatch(ctx)
		total += n
		if err != nil || n < r.opts.Batch {
			return total, err
		}
	}
}

const selectOutboxSQL = `
SELECT id, event_id::text, tenant_id, type, phone_number_id, occurred_at, data
  FROM event_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`

// publishBatch publishes one batch: the rows stay locked (invisible to other relays)
// until they are published and deleted, or the publish failed and they are left.
func (r *Relay) publishBatch(ctx context.Context) (int, error) {
	tx, err := r.opts.Pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the event outbox: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, selectOutboxSQL, r.opts.Batch)
	if err != nil {
		return 0, fmt.Errorf("reading the event outbox: %w", err)
	}
	var ids []int64
	var msgs []kafka.Message
	var types []string
	var (
		id   int64
		ev   Event
		data []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &ev.ID, &ev.TenantID, &ev.Type, &ev.PhoneNumberID, &ev.OccurredAt, &data}, func() error {
		ev.Version = Version
		ev.OccurredAt = ev.OccurredAt.UTC()
		ev.Data = data
		b, err := json.Marshal(&ev)
		if err != nil {
			return fmt.Errorf("encoding event %s: %w", ev.ID, err)
		}
		ids = append(ids, id)
		types = append(types, ev.Type)
		msgs = append(msgs, kafka.Message{Key: []byte(ev.TenantID), Value: b})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading the event outbox: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	if err := r.opts.Publisher.WriteMessages(ctx, msgs...); err != nil {
		return 0, fmt.Errorf("publishing %d events: %w", len(msgs), err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM event_outbox WHERE id = ANY($1)`, ids); err != nil {
		return 0, fmt.Errorf("deleting %d published events: %w", len(ids), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("deleting %d published events: %w", len(ids), err)
	}
	r.published.Add(int64(len(msgs)))
	for _, t := range types {
		metrics.EventsPublished.WithLabelValues(t).Inc()
	}
	return len(msgs), nil
}
