package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// sweepLoop applies pending statuses whose wamid became known and drops expired ones,
// every SweepInterval until ctx ends.
func (in *Ingester) sweepLoop(ctx context.Context) {
	t := time.NewTicker(in.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := in.Sweep(ctx); err != nil && ctx.Err() == nil {
			in.log.Warn("sweeping pending statuses", "error", err.Error())
		} else if n > 0 {
			in.relay.Kick()
		}
	}
}

// crossedSQL finds messages whose wamid has pending statuses: the status was kept pending
// while the sender's write of the wamid was not yet committed, so the trigger did not see
// it. Normally there are none.
const crossedSQL = `
SELECT m.id, m.wamid, m.phone_number_id
  FROM messages m
 WHERE m.wamid IN (SELECT DISTINCT wamid FROM pending_statuses LIMIT 1000)
 ORDER BY m.id`

// Sweep applies the pending statuses of messages that have their wamid now, each
// message in its own transaction, drops pending statuses older than
// ingest.pending_status_ttl, and returns how many statuses it applied.
func (in *Ingester) Sweep(ctx context.Context) (int, error) {
	rows, err := in.opts.Pool.Query(ctx, crossedSQL)
	if err != nil {
		return 0, fmt.Errorf("finding pending statuses of known messages: %w", err)
	}
	type msg struct{ id, wamid, phone string }
	var found []msg
	var m msg
	if _, err := pgx.ForEachRow(rows, []any{&m.id, &m.wamid, &m.phone}, func() error { found = append(found, m); return nil }); err != nil {
		return 0, fmt.Errorf("finding pending statuses of known messages: %w", err)
	}
	applied := 0
	for _, m := range found {
		var n int
		if err := in.opts.Pool.QueryRow(ctx, `SELECT webhook_apply_pending($1::uuid, $2, $3)`, m.id, m.wamid, m.phone).Scan(&n); err != nil {
			return applied, fmt.Errorf("applying pending statuses of %s: %w", m.wamid, err)
		}
		applied += n
	}
	tag, err := in.opts.Pool.Exec(ctx, `DELETE FROM pending_statuses WHERE received_at < now() - $1::bigint * interval '1 millisecond'`,
		in.cfg.PendingStatusTTL.Milliseconds())
	if err != nil {
		return applied, fmt.Errorf("dropping expired pending statuses: %w", err)
	}
	if n := tag.RowsAffected(); n > 0 {
		in.log.Info("dropped pending statuses no message claimed", "statuses", n, "ttl", in.cfg.PendingStatusTTL)
	}
	return applied, nil
}
