package retention_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/retention"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

type fixture struct {
	t    *testing.T
	pool *pgxpool.Pool
	ctx  context.Context
}

func (f fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// message stores a send with status, accepted age ago, with one recorded status.
func (f fixture) message(status string, age time.Duration) string {
	f.t.Helper()
	id := uuid.NewString()
	f.exec(`INSERT INTO messages (id, tenant_id, account_id, phone_number_id, recipient, status, accepted_at)
		VALUES ($1, 't', $2, 'p', '15550001', $3, now() - $4::interval)`, id, uuid.NewString(), status, age.String())
	f.exec(`INSERT INTO message_statuses (message_id, status, at) VALUES ($1, 'sent', now())`, id)
	return id
}

func (f fixture) inbound(age time.Duration) string {
	f.t.Helper()
	wamid := "wamid." + uuid.NewString()
	f.exec(`INSERT INTO inbound_messages (tenant_id, account_id, phone_number_id, wamid, from_wa_id, type,
			sent_at, received_at, stored_at, message)
		VALUES ('t', $1, 'p', $2, '15550002', 'text', now(), now(), now() - $3::interval, '{}')`, uuid.NewString(), wamid, age.String())
	return wamid
}

func (f fixture) idempotencyKey(age time.Duration) string {
	f.t.Helper()
	key := uuid.NewString()
	f.exec(`INSERT INTO idempotency_keys (tenant_id, idempotency_key, fingerprint, message_id, created_at)
		VALUES ('t', $1, $2, $3, now() - $4::interval)`, key, make([]byte, 32), uuid.NewString(), age.String())
	return key
}

func (f fixture) state(expiredAgo time.Duration) []byte {
	f.t.Helper()
	hash := uuid.New()
	h := append(hash[:], hash[:]...)
	f.exec(`INSERT INTO onboarding_states (state_hash, tenant_id, created_at, expires_at)
		VALUES ($1, 't', now() - $2::interval - interval '10 minutes', now() - $2::interval)`, h, expiredAgo.String())
	return h
}

func (f fixture) exists(sql string, arg any) bool {
	f.t.Helper()
	var ok bool
	if err := f.pool.QueryRow(f.ctx, `SELECT EXISTS (`+sql+`)`, arg).Scan(&ok); err != nil {
		f.t.Fatal(err)
	}
	return ok
}

func retentionConfig() config.Retention {
	c := config.Default().Retention
	c.Messages = 30 * 24 * time.Hour
	c.Inbound = 7 * 24 * time.Hour
	c.IdempotencyKeys = 24 * time.Hour
	c.BatchSize = 2 // several batches per table
	return c
}

// TestSweepRemovesAgedRowsOnly ages rows of every kind and checks what a pass leaves:
// the aged finished sends (with their statuses), inbound messages, idempotency records
// and long-expired states go; recent rows stay, and so do unfinished sends of any age.
func TestSweepRemovesAgedRowsOnly(t *testing.T) {
	t.Parallel()
	_, pool := storetest.New(t)
	f := fixture{t: t, pool: pool, ctx: context.Background()}
	day := 24 * time.Hour

	var gone, kept []string
	for _, st := range []string{"sent", "delivered", "read", "failed", "sent"} {
		gone = append(gone, f.message(st, 31*day))
	}
	for _, st := range []string{"sent", "read", "failed"} {
		kept = append(kept, f.message(st, 29*day))
	}
	// Unfinished sends, however old: never removed.
	for _, st := range []string{"unknown", "accepted", "sending"} {
		kept = append(kept, f.message(st, 400*day))
	}
	oldInbound := []string{f.inbound(8 * day), f.inbound(9 * day), f.inbound(100 * day)}
	newInbound := f.inbound(6 * day)
	oldKeys := []string{f.idempotencyKey(25 * time.Hour), f.idempotencyKey(48 * time.Hour), f.idempotencyKey(72 * time.Hour)}
	newKey := f.idempotencyKey(23 * time.Hour)
	oldState := f.state(2 * time.Hour)
	recentlyExpired := f.state(30 * time.Minute)
	live := f.state(-5 * time.Minute)

	s, err := retention.New(pool, retentionConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Sweep(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := retention.Result{Messages: 5, Statuses: 5, Inbound: 3, IdempotencyKeys: 3, States: 1}
	if res != want {
		t.Fatalf("Sweep = %+v, want %+v", res, want)
	}
	for _, id := range gone {
		if f.exists(`SELECT 1 FROM messages WHERE id = $1`, id) || f.exists(`SELECT 1 FROM message_statuses WHERE message_id = $1`, id) {
			t.Errorf("aged finished message %s (or its status) is still there", id)
		}
	}
	for _, id := range kept {
		if !f.exists(`SELECT 1 FROM messages WHERE id = $1`, id) || !f.exists(`SELECT 1 FROM message_statuses WHERE message_id = $1`, id) {
			t.Errorf("message %s (recent or unfinished) was removed", id)
		}
	}
	for _, w := range oldInbound {
		if f.exists(`SELECT 1 FROM inbound_messages WHERE wamid = $1`, w) {
			t.Errorf("aged inbound message %s is still there", w)
		}
	}
	if !f.exists(`SELECT 1 FROM inbound_messages WHERE wamid = $1`, newInbound) {
		t.Error("a recent inbound message was removed")
	}
	for _, k := range oldKeys {
		if f.exists(`SELECT 1 FROM idempotency_keys WHERE idempotency_key = $1`, k) {
			t.Errorf("aged idempotency key %s is still there", k)
		}
	}
	if !f.exists(`SELECT 1 FROM idempotency_keys WHERE idempotency_key = $1`, newKey) {
		t.Error("a recent idempotency key was removed")
	}
	if f.exists(`SELECT 1 FROM onboarding_states WHERE state_hash = $1`, oldState) {
		t.Error("a state expired two hours ago is still there")
	}
	for _, h := range [][]byte{recentlyExpired, live} {
		if !f.exists(`SELECT 1 FROM onboarding_states WHERE state_hash = $1`, h) {
			t.Error("a live or just-expired state was removed")
		}
	}

	// A second pass finds nothing more.
	if again, err := s.Sweep(f.ctx); err != nil || again.Total() != 0 {
		t.Fatalf("second Sweep = %+v, %v; want nothing", again, err)
	}
}

// TestSweepAcrossReplicas: sweepers of several replicas at once remove each row once
// and leave the same rows as one would; while one holds the lock the others skip.
func TestSweepAcrossReplicas(t *testing.T) {
	t.Parallel()
	_, pool := storetest.New(t)
	f := fixture{t: t, pool: pool, ctx: context.Background()}
	const aged, recent = 40, 5
	for i := range aged + recent {
		st := []string{"sent", "read", "failed", "accepted"}[i%4]
		age := 31 * 24 * time.Hour
		if i >= aged {
			age = time.Hour
		}
		f.message(st, age)
	}
	var unfinished int
	for i := range aged {
		if i%4 == 3 {
			unfinished++
		}
	}

	var mu sync.Mutex
	var removed int64
	var wg sync.WaitGroup
	for range 4 {
		s, err := retention.New(pool, retentionConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for range 3 {
				res, err := s.Sweep(f.ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				removed += res.Messages
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if want := int64(aged - unfinished); removed != want {
		t.Fatalf("replicas removed %d messages in all, want %d (each aged finished one once)", removed, want)
	}
	var left int
	if err := pool.QueryRow(f.ctx, `SELECT count(*) FROM messages`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if want := recent + unfinished; left != want {
		t.Fatalf("%d messages left, want %d", left, want)
	}

	// One replica holds the lock: another's pass is skipped.
	conn, err := pool.Acquire(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(f.ctx, `SELECT pg_advisory_lock(x'6165726f72657465'::bigint)`); err != nil {
		t.Fatal(err)
	}
	s, _ := retention.New(pool, retentionConfig(), nil)
	if res, err := s.Sweep(f.ctx); err != nil || !res.Skipped {
		t.Fatalf("Sweep while another replica sweeps = %+v, %v; want skipped", res, err)
	}
	if _, err := conn.Exec(f.ctx, `SELECT pg_advisory_unlock(x'6165726f72657465'::bigint)`); err != nil {
		t.Fatal(err)
	}
}
