// Package retention removes stored rows past their age so that Postgres does not grow
// for ever: finished sends and their statuses (retention.messages), inbound messages
// (retention.inbound), Idempotency-Key records (retention.idempotency_keys) and expired
// Embedded Signup states. Unfinished sends (unknown, accepted, sending, and any status
// that is not final) are never removed, whatever their age.
//
// A pass deletes in statements of at most retention.batch_size rows, each its own short
// transaction, skipping rows another transaction holds (SKIP LOCKED): no long lock, no
// rewrite of a table. Any number of replicas may run a Sweeper: a session advisory lock
// lets one of them sweep at a time and the others skip that pass.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/metrics"
)

// lockKey is the advisory lock key of a pass (an arbitrary constant: "aerorete").
const lockKey int64 = 0x6165726f72657465

// stateGrace is how long after its expiry an Embedded Signup state is kept (the
// onboarding code itself removes states an hour past expiry as well).
const stateGrace = time.Hour

// Result is what one pass removed, by table. Skipped is true when another replica held
// the lock and this pass did nothing.
type Result struct {
	Messages        int64
	Statuses        int64
	Inbound         int64
	IdempotencyKeys int64
	States          int64
	Skipped         bool
}

// Total is every row a pass removed.
func (r Result) Total() int64 {
	return r.Messages + r.Statuses + r.Inbound + r.IdempotencyKeys + r.States
}

// Sweeper removes rows past their retention.
type Sweeper struct {
	pool *pgxpool.Pool
	cfg  config.Retention
	log  *slog.Logger
}

// New returns a Sweeper over pool; log nil means slog.Default().
func New(pool *pgxpool.Pool, cfg config.Retention, log *slog.Logger) (*Sweeper, error) {
	switch {
	case pool == nil:
		return nil, errors.New("retention: no pool")
	case cfg.BatchSize <= 0:
		return nil, errors.New("retention: batch size must be positive")
	case cfg.Messages <= 0 || cfg.Inbound <= 0 || cfg.IdempotencyKeys <= 0:
		return nil, errors.New("retention: ages must be positive")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Sweeper{pool: pool, cfg: cfg, log: log}, nil
}

// Run sweeps every retention.interval (the first time at once) until ctx ends; a
// failed pass is logged and tried again at the next interval.
func (s *Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		res, err := s.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("retention sweep failed", "error", err.Error())
		case res.Total() > 0:
			s.log.Info("retention sweep", "messages", res.Messages, "statuses", res.Statuses,
				"inbound", res.Inbound, "idempotency_keys", res.IdempotencyKeys, "states", res.States)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// The statements of a pass. Each removes at most $2 rows older than $1.
const (
	// Finished sends only, and their statuses with them.
	deleteMessages = `
WITH gone AS (
	DELETE FROM messages WHERE id IN (
		SELECT id FROM messages
		 WHERE accepted_at < $1 AND status IN ('sent', 'delivered', 'read', 'failed')
		 LIMIT $2 FOR UPDATE SKIP LOCKED)
	RETURNING id
), statuses AS (
	DELETE FROM message_statuses WHERE message_id IN (SELECT id FROM gone) RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM statuses)`
	deleteInbound = `
DELETE FROM inbound_messages WHERE seq IN (
	SELECT seq FROM inbound_messages WHERE stored_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`
	deleteIdempotencyKeys = `
DELETE FROM idempotency_keys WHERE (tenant_id, idempotency_key) IN (
	SELECT tenant_id, idempotency_key FROM idempotency_keys WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`
	deleteStates = `
DELETE FROM onboarding_states WHERE state_hash IN (
	SELECT state_hash FROM onboarding_states WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`
)

// Sweep makes one pass: for each kind of row, batches until one removes fewer than
// retention.batch_size rows. It does nothing (Skipped) while another replica sweeps.
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	var res Result
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey).Scan(&locked); err != nil {
		return res, fmt.Errorf("retention: taking the sweep lock: %w", err)
	}
	if !locked {
		res.Skipped = true
		return res, nil
	}
	defer func() {
		// A failed unlock leaves the lock with the session: end the session instead.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey); err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()

	// One clock, the database's, for every cut-off of the pass.
	var now time.Time
	if err := conn.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	n := int64(s.cfg.BatchSize)

	for {
		var msgs, sts int64
		if err := conn.QueryRow(ctx, deleteMessages, now.Add(-s.cfg.Messages), n).Scan(&msgs, &sts); err != nil {
			return res, fmt.Errorf("retention: removing messages: %w", err)
		}
		res.Messages += msgs
		res.Statuses += sts
		metrics.RetentionDeleted.WithLabelValues("messages").Add(float64(msgs))
		metrics.RetentionDeleted.WithLabelValues("message_statuses").Add(float64(sts))
		if msgs < n {
			break
		}
	}
	for _, step := range []struct {
		table string
		sql   string
		age   time.Duration
		count *int64
	}{
		{"inbound_messages", deleteInbound, s.cfg.Inbound, &res.Inbound},
		{"idempotency_keys", deleteIdempotencyKeys, s.cfg.IdempotencyKeys, &res.IdempotencyKeys},
		{"onboarding_states", deleteStates, stateGrace, &res.States},
	} {
		for {
			tag, err := conn.Exec(ctx, step.sql, now.Add(-step.age), n)
			if err != nil {
				return res, fmt.Errorf("retention: removing %s: %w", step.table, err)
			}
			*step.count += tag.RowsAffected()
			metrics.RetentionDeleted.WithLabelValues(step.table).Add(float64(tag.RowsAffected()))
			if tag.RowsAffected() < n {
				break
			}
		}
	}
	return res, nil
}
