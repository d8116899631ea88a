package message_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

func accepted(tenant, key string) message.Message {
	return message.Message{
		ID:             uuid.NewString(),
		TenantID:       tenant,
		AccountID:      uuid.NewString(),
		PhoneNumberID:  "1000" + tenant,
		Recipient:      "15550001111",
		IdempotencyKey: key,
		AcceptedAt:     time.Now().UTC().Truncate(time.Microsecond),
	}
}

func TestGetAndInsertAccepted(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	ctx := context.Background()

	a := accepted("tenant-a", "key-1")
	b := accepted("tenant-b", "")
	if err := repo.InsertAccepted(ctx, []message.Message{a, b}); err != nil {
		t.Fatalf("InsertAccepted: %v", err)
	}

	got, err := repo.Get(ctx, "tenant-a", a.ID)
	if err != nil {
		t.Fatalf("Get own message: %v", err)
	}
	if got.Status != message.StatusAccepted || got.TenantID != "tenant-a" || got.AccountID != a.AccountID ||
		got.PhoneNumberID != a.PhoneNumberID || got.Recipient != a.Recipient || got.IdempotencyKey != "key-1" ||
		!got.AcceptedAt.Equal(a.AcceptedAt) || got.SentAt != nil || got.Attempts != 0 {
		t.Fatalf("Get = %+v, want the accepted row of %+v", got, a)
	}

	var keyIsNull bool
	if err := pool.QueryRow(ctx, "SELECT idempotency_key IS NULL FROM messages WHERE id = $1", b.ID).Scan(&keyIsNull); err != nil {
		t.Fatal(err)
	}
	if !keyIsNull {
		t.Error("an empty idempotency key is stored as '' instead of NULL")
	}

	for _, tc := range []struct {
		name, tenant, id string
	}{
		{"other tenant's message", "tenant-b", a.ID},
		{"unknown id", "tenant-a", uuid.NewString()},
		{"malformed id", "tenant-a", "not-a-uuid"},
		{"empty id", "tenant-a", ""},
		{"sql in id", "tenant-a", "' OR 1=1 --"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := repo.Get(ctx, tc.tenant, tc.id); !errors.Is(err, message.ErrNotFound) {
				t.Fatalf("Get(%q, %q) error = %v, want ErrNotFound", tc.tenant, tc.id, err)
			}
		})
	}
}

func TestInsertAcceptedNeverMovesStatusBack(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	ctx := context.Background()

	m := accepted("tenant-a", "")
	if err := repo.InsertAccepted(ctx, []message.Message{m}); err != nil {
		t.Fatal(err)
	}
	// The sender got there first and sent it.
	if _, err := pool.Exec(ctx, `UPDATE messages SET status = 'sent', wamid = 'wamid.X', attempts = 1, sent_at = now() WHERE id = $1`, m.ID); err != nil {
		t.Fatal(err)
	}
	// A late accepted record (and a duplicate inside one batch) changes nothing.
	fresh := accepted("tenant-a", "")
	if err := repo.InsertAccepted(ctx, []message.Message{m, m, fresh, fresh}); err != nil {
		t.Fatalf("InsertAccepted with existing and duplicate ids: %v", err)
	}
	got, err := repo.Get(ctx, "tenant-a", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != message.StatusSent || got.WAMID != "wamid.X" || got.Attempts != 1 || got.SentAt == nil {
		t.Fatalf("after a late InsertAccepted: %+v, want the sent row untouched", got)
	}
	if _, err := repo.Get(ctx, "tenant-a", fresh.ID); err != nil {
		t.Fatalf("the new row of a batch with a duplicate was not stored: %v", err)
	}
	if err := repo.InsertAccepted(ctx, nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

// BenchmarkInsertAccepted compares the unnest statement InsertAccepted uses with a
// multi-row VALUES list, for a batch of 500.
func BenchmarkInsertAccepted(b *testing.B) {
	_, pool := storetest.New(b)
	repo := message.NewRepository(pool)
	ctx := context.Background()
	batch := func() []message.Message {
		msgs := make([]message.Message, 500)
		for i := range msgs {
			msgs[i] = accepted(fmt.Sprint("tenant-", i%7), "")
		}
		return msgs
	}
	b.Run("unnest", func(b *testing.B) {
		for b.Loop() {
			if err := repo.InsertAccepted(ctx, batch()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/row")
	})
	b.Run("values", func(b *testing.B) {
		for b.Loop() {
			if err := insertValues(ctx, pool, batch()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/row")
	})
}

func insertValues(ctx context.Context, pool *pgxpool.Pool, msgs []message.Message) error {
	var sb strings.Builder
	sb.WriteString("INSERT INTO messages (id, tenant_id, account_id, phone_number_id, recipient, idempotency_key, accepted_at) VALUES ")
	args := make([]any, 0, len(msgs)*7)
	for i, m := range msgs {
		if i > 0 {
			sb.WriteByte(',')
		}
		n := i * 7
		fmt.Fprintf(&sb, "($%d::uuid,$%d,$%d::uuid,$%d,$%d,NULLIF($%d,''),$%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
		args = append(args, m.ID, m.TenantID, m.AccountID, m.PhoneNumberID, m.Recipient, m.IdempotencyKey, m.AcceptedAt)
	}
	sb.WriteString(" ON CONFLICT (id) DO NOTHING")
	_, err := pool.Exec(ctx, sb.String(), args...)
	return err
}

// TestUnknownOnlyMovesForward: a send answered 504 is recorded unknown; an acknowledged
// retry makes it accepted, a late unknown record never moves accepted (or anything
// later) back, and a sender's claim takes an unknown message like an accepted one.
func TestUnknownOnlyMovesForward(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	ctx := context.Background()
	status := func(id string) message.Status {
		t.Helper()
		m, err := repo.Get(ctx, "tenant-a", id)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		return m.Status
	}
	unknown := func(m message.Message) message.Message { m.Status = message.StatusUnknown; return m }

	retried := accepted("tenant-a", "k-retried")
	late := accepted("tenant-a", "k-late")
	both := accepted("tenant-a", "k-both")
	claimed := accepted("tenant-a", "k-claimed")
	if err := repo.InsertAccepted(ctx, []message.Message{unknown(retried), late, unknown(both), both, unknown(claimed)}); err != nil {
		t.Fatalf("InsertAccepted: %v", err)
	}
	if got := status(retried.ID); got != message.StatusUnknown {
		t.Fatalf("answered 504: status %s, want unknown", got)
	}
	if got := status(both.ID); got != message.StatusAccepted {
		t.Fatalf("unknown and accepted in one batch: status %s, want accepted", got)
	}
	if err := repo.InsertAccepted(ctx, []message.Message{retried, unknown(late)}); err != nil {
		t.Fatalf("InsertAccepted: %v", err)
	}
	if got := status(retried.ID); got != message.StatusAccepted {
		t.Errorf("unknown, then a retry acknowledged: status %s, want accepted", got)
	}
	if got := status(late.ID); got != message.StatusAccepted {
		t.Errorf("accepted, then a late unknown record: status %s, want accepted", got)
	}
	c := message.Claim{ID: claimed.ID, TenantID: claimed.TenantID, AccountID: claimed.AccountID,
		PhoneNumberID: claimed.PhoneNumberID, Recipient: claimed.Recipient, AcceptedAt: claimed.AcceptedAt}
	res, err := repo.ClaimMany(ctx, testLease, []message.Claim{c})
	if err != nil || !res[0].Claimed {
		t.Fatalf("claiming an unknown message: %+v, %v", res, err)
	}
	if err := repo.InsertAccepted(ctx, []message.Message{unknown(claimed), claimed}); err != nil {
		t.Fatal(err)
	}
	if got := status(claimed.ID); got != message.StatusSending {
		t.Errorf("sending, then late records: status %s, want sending", got)
	}
}

// TestBindKey: the first use of a key binds it to its fingerprint and message id; a reuse
// says whether the fingerprint is the same and what the message's status is now; another
// tenant's identical key is another key; concurrent first uses bind exactly once.
func TestBindKey(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	ctx := context.Background()
	fp := func(s string) []byte { b := sha256.Sum256([]byte(s)); return b[:] }
	id := uuid.NewString()

	b, err := repo.BindKey(ctx, "tenant-a", "order-1", fp("body-1"), id)
	if err != nil || !b.First || !b.Same || b.MessageID != id || b.Status != "" {
		t.Fatalf("first use: %+v, %v", b, err)
	}
	b, err = repo.BindKey(ctx, "tenant-a", "order-1", fp("body-1"), id)
	if err != nil || b.First || !b.Same || b.MessageID != id || b.Status != "" {
		t.Fatalf("same request again, no row yet: %+v, %v", b, err)
	}
	m := accepted("tenant-a", "order-1")
	m.ID = id
	if err := repo.InsertAccepted(ctx, []message.Message{m}); err != nil {
		t.Fatal(err)
	}
	b, err = repo.BindKey(ctx, "tenant-a", "order-1", fp("body-1"), id)
	if err != nil || b.First || !b.Same || b.Status != message.StatusAccepted {
		t.Fatalf("same request after it was accepted: %+v, %v", b, err)
	}
	b, err = repo.BindKey(ctx, "tenant-a", "order-1", fp("body-2"), id)
	if err != nil || b.First || b.Same || b.MessageID != id {
		t.Fatalf("another body with the key: %+v, %v", b, err)
	}
	b, err = repo.BindKey(ctx, "tenant-b", "order-1", fp("body-2"), uuid.NewString())
	if err != nil || !b.First || !b.Same || b.Status != "" {
		t.Fatalf("another tenant's identical key: %+v, %v (the message of tenant-a must not show)", b, err)
	}

	const n = 16
	firsts := make(chan bool, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := repo.BindKey(ctx, "tenant-a", "parallel", fp("same"), id)
			if err != nil || !b.Same {
				t.Errorf("parallel use: %+v, %v", b, err)
			}
			firsts <- b.First
		}()
	}
	wg.Wait()
	close(firsts)
	count := 0
	for f := range firsts {
		if f {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("%d parallel first uses were First, want exactly 1", count)
	}
}
