package message_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/cputime"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

func newClaim(tenant string) message.Claim {
	return message.Claim{
		ID:             uuid.NewString(),
		TenantID:       tenant,
		AccountID:      uuid.NewString(),
		PhoneNumberID:  "pn-" + tenant,
		Recipient:      "15550001111",
		IdempotencyKey: "",
		AcceptedAt:     time.Now().UTC().Truncate(time.Microsecond),
	}
}

// seedRow inserts the row as the gateway (and later the webhooks) would have left it.
func seedRow(t *testing.T, pool *pgxpool.Pool, c message.Claim, status message.Status, attempts int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
		INSERT INTO messages (id, tenant_id, account_id, phone_number_id, recipient, status, attempts, accepted_at, wamid)
		VALUES ($1::uuid, $2, $3, $4, $5, $6::text, $7, $8, CASE WHEN $6::text IN ('sent','delivered','read') THEN 'wamid.seed.' || $9 END)`,
		c.ID, c.TenantID, c.AccountID, c.PhoneNumberID, c.Recipient, string(status), attempts, c.AcceptedAt, c.ID)
	if err != nil {
		t.Fatalf("seeding %s row: %v", status, err)
	}
}

// testLease is the claims' holder in these tests.
var testLease = message.Lease{Holder: message.NewHolder(), TTL: time.Minute}

// holdRow makes the row sending under holder's claim, which lapses after ttl (negative:
// lapsed already).
func holdRow(t *testing.T, pool *pgxpool.Pool, id, holder string, ttl time.Duration) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
		UPDATE messages SET status = 'sending', claim_holder = $2::uuid,
		       claim_expires_at = now() + $3::bigint * interval '1 millisecond' WHERE id = $1::uuid`,
		id, holder, ttl.Milliseconds())
	if err != nil {
		t.Fatalf("holding %s: %v", id, err)
	}
}

type row struct {
	status     message.Status
	attempts   int
	wamid      string
	errorCode  int
	errorTitle string
	sentAt     *time.Time
	tenant     string
	account    string
}

func loadRow(t *testing.T, pool *pgxpool.Pool, id string) (row, bool) {
	t.Helper()
	var r row
	var status string
	err := pool.QueryRow(context.Background(), `
		SELECT status, attempts, coalesce(wamid, ''), coalesce(error_code, 0), coalesce(error_title, ''),
		       sent_at, tenant_id, account_id::text
		  FROM messages WHERE id = $1`, id).Scan(&status, &r.attempts, &r.wamid, &r.errorCode, &r.errorTitle, &r.sentAt, &r.tenant, &r.account)
	if err != nil {
		return row{}, false
	}
	r.status = message.Status(status)
	return r, true
}

func TestClaimManyMovesOnlyAcceptedAndSending(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	ctx := context.Background()

	other := message.NewHolder()
	tests := []struct {
		name         string
		seed         message.Status // "" = no row yet (the gateway has not inserted it)
		seedAttempts int
		holder       string        // a claim on the seeded row: its holder, "" none
		holdFor      time.Duration // and how long it still holds (negative: lapsed)
		wantClaimed  bool
		wantHeld     bool // not claimed, but held by another live claim: wait, not skip
		wantStatus   message.Status
		wantAttempts int
	}{
		{"row not inserted yet", "", 0, "", 0, true, false, message.StatusSending, 1},
		{"unknown (answered 504, queued after all)", message.StatusUnknown, 0, "", 0, true, false, message.StatusSending, 1},
		{"accepted", message.StatusAccepted, 0, "", 0, true, false, message.StatusSending, 1},
		{"sending without a holder (redelivered)", message.StatusSending, 2, "", 0, true, false, message.StatusSending, 3},
		{"sending, our own claim", message.StatusSending, 1, testLease.Holder, time.Minute, true, false, message.StatusSending, 2},
		{"sending, another live claim waits", message.StatusSending, 1, other, time.Minute, false, true, message.StatusSending, 1},
		{"sending, another claim lapsed (crashed holder)", message.StatusSending, 1, other, -time.Second, true, false, message.StatusSending, 2},
		{"sent is skipped", message.StatusSent, 1, "", 0, false, false, message.StatusSent, 1},
		{"delivered is skipped", message.StatusDelivered, 1, "", 0, false, false, message.StatusDelivered, 1},
		{"read is skipped", message.StatusRead, 1, "", 0, false, false, message.StatusRead, 1},
		{"failed is skipped", message.StatusFailed, 4, "", 0, false, false, message.StatusFailed, 4},
	}
	claims := make([]message.Claim, len(tests))
	for i, tt := range tests {
		claims[i] = newClaim(fmt.Sprintf("tenant-%d", i))
		if tt.seed != "" {
			seedRow(t, pool, claims[i], tt.seed, tt.seedAttempts)
		}
		if tt.holder != "" {
			holdRow(t, pool, claims[i].ID, tt.holder, tt.holdFor)
		}
	}
	start := time.Now()
	res, err := repo.ClaimMany(ctx, testLease, claims)
	if err != nil {
		t.Fatalf("ClaimMany: %v", err)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res[i].Claimed != tt.wantClaimed {
				t.Fatalf("Claimed = %v, want %v", res[i].Claimed, tt.wantClaimed)
			}
			if held := !res[i].HeldUntil.IsZero(); held != tt.wantHeld {
				t.Fatalf("HeldUntil = %v, want held %v", res[i].HeldUntil, tt.wantHeld)
			}
			if tt.wantHeld && (res[i].HeldUntil.Before(start.Add(50*time.Second)) || res[i].HeldUntil.After(time.Now().Add(time.Minute))) {
				t.Fatalf("HeldUntil = %v, want about a minute from now", res[i].HeldUntil)
			}
			if tt.wantClaimed && res[i].Attempts != tt.wantAttempts {
				t.Fatalf("Attempts = %d, want %d", res[i].Attempts, tt.wantAttempts)
			}
			got, ok := loadRow(t, pool, claims[i].ID)
			if !ok || got.status != tt.wantStatus || got.attempts != tt.wantAttempts {
				t.Fatalf("row = %+v (found %v), want status %s attempts %d", got, ok, tt.wantStatus, tt.wantAttempts)
			}
			if tt.seed == "" && (got.tenant != claims[i].TenantID || got.account != claims[i].AccountID) {
				t.Fatalf("created row %+v does not carry the envelope's tenant and account", got)
			}
		})
	}
}

func TestMarkSentAndMarkFailedOnlyMoveForward(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Microsecond)

	t.Run("sent", func(t *testing.T) {
		tests := []struct {
			name      string
			seed      message.Status // "" = no row
			want      message.Status
			wantWAMID bool // the new wamid is stored
		}{
			{"no row yet", "", message.StatusSent, true},
			{"sending becomes sent", message.StatusSending, message.StatusSent, true},
			{"delivered stays delivered", message.StatusDelivered, message.StatusDelivered, false},
			{"read stays read", message.StatusRead, message.StatusRead, false},
			{"failed stays failed", message.StatusFailed, message.StatusFailed, false},
		}
		var sent []message.Sent
		claims := make([]message.Claim, len(tests))
		for i, tt := range tests {
			claims[i] = newClaim("t")
			if tt.seed != "" {
				seedRow(t, pool, claims[i], tt.seed, 1)
			}
			sent = append(sent, message.Sent{Claim: claims[i], WAMID: "wamid.new." + claims[i].ID, SentAt: at})
		}
		if err := repo.MarkSentMany(ctx, sent); err != nil {
			t.Fatalf("MarkSentMany: %v", err)
		}
		for i, tt := range tests {
			got, _ := loadRow(t, pool, claims[i].ID)
			if got.status != tt.want {
				t.Errorf("%s: status %s, want %s", tt.name, got.status, tt.want)
			}
			if tt.wantWAMID && (got.wamid != sent[i].WAMID || got.sentAt == nil || !got.sentAt.Equal(at)) {
				t.Errorf("%s: wamid %q sent_at %v, want %q %v", tt.name, got.wamid, got.sentAt, sent[i].WAMID, at)
			}
			if !tt.wantWAMID && got.wamid == sent[i].WAMID {
				t.Errorf("%s: wamid overwritten", tt.name)
			}
		}
	})

	t.Run("failed", func(t *testing.T) {
		tests := []struct {
			name string
			seed message.Status // "" = no row
			want message.Status
		}{
			{"no row yet", "", message.StatusFailed},
			{"accepted", message.StatusAccepted, message.StatusFailed},
			{"sending", message.StatusSending, message.StatusFailed},
			{"sent stays sent", message.StatusSent, message.StatusSent},
			{"delivered stays delivered", message.StatusDelivered, message.StatusDelivered},
		}
		var failed []message.Failure
		for _, tt := range tests {
			c := newClaim("t")
			if tt.seed != "" {
				seedRow(t, pool, c, tt.seed, 1)
			}
			failed = append(failed, message.Failure{Claim: c, ErrorCode: 131026, ErrorTitle: "Message undeliverable"})
		}
		// A failure whose account is unknown still gets a row.
		noAccount := newClaim("t")
		noAccount.AccountID = ""
		failed = append(failed, message.Failure{Claim: noAccount, ErrorTitle: "account not found"})
		if err := repo.MarkFailedMany(ctx, failed); err != nil {
			t.Fatalf("MarkFailedMany: %v", err)
		}
		for i, tt := range tests {
			got, _ := loadRow(t, pool, failed[i].ID)
			if got.status != tt.want {
				t.Errorf("%s: status %s, want %s", tt.name, got.status, tt.want)
			}
			if tt.want == message.StatusFailed && (got.errorCode != 131026 || got.errorTitle != "Message undeliverable") {
				t.Errorf("%s: error %d %q", tt.name, got.errorCode, got.errorTitle)
			}
			if tt.want != message.StatusFailed && got.errorCode != 0 {
				t.Errorf("%s: error recorded on a %s row", tt.name, got.status)
			}
		}
		if got, ok := loadRow(t, pool, noAccount.ID); !ok || got.status != message.StatusFailed || got.account != uuid.Nil.String() {
			t.Errorf("failure without account: %+v found=%v", got, ok)
		}
	})
}

func TestBatcherAnswersEveryCallerUnderConcurrency(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	b := repo.NewBatcher(message.BatcherOptions{MaxBatch: 64, MaxDelay: time.Millisecond})
	defer b.Close()
	ctx := context.Background()

	const n = 600
	claims := make([]message.Claim, n)
	for i := range claims {
		claims[i] = newClaim(fmt.Sprintf("t%d", i%7))
		switch {
		case i%10 == 5:
			seedRow(t, pool, claims[i], message.StatusSent, 1)
		case i%3 == 0:
			seedRow(t, pool, claims[i], message.StatusAccepted, 0)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range claims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := claims[i]
			res, err := b.Claim(ctx, c)
			if err != nil {
				errs <- fmt.Errorf("claim %d: %w", i, err)
				return
			}
			wantClaimed := i%10 != 5
			if res.Claimed != wantClaimed {
				errs <- fmt.Errorf("claim %d: claimed %v, want %v", i, res.Claimed, wantClaimed)
				return
			}
			if !res.Claimed {
				return
			}
			if i%2 == 0 {
				err = b.MarkSent(ctx, message.Sent{Claim: c, WAMID: "wamid." + c.ID, SentAt: time.Now()})
			} else {
				err = b.MarkFailed(ctx, message.Failure{Claim: c, ErrorCode: 100, ErrorTitle: "Invalid parameter"})
			}
			if err != nil {
				errs <- fmt.Errorf("outcome %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, c := range claims {
		got, _ := loadRow(t, pool, c.ID)
		want := message.StatusFailed
		switch {
		case i%10 == 5:
			want = message.StatusSent // was sent before: untouched
		case i%2 == 0:
			want = message.StatusSent
		}
		if got.status != want {
			t.Fatalf("message %d: status %s, want %s", i, got.status, want)
		}
	}
}

func TestBatcherSameIDTwiceAndBadRows(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	b := repo.NewBatcher(message.BatcherOptions{MaxBatch: 100, MaxDelay: 20 * time.Millisecond})
	ctx := context.Background()

	// The same id claimed twice at once lands in two statements: both answered, in some order.
	c := newClaim("t")
	var wg sync.WaitGroup
	attempts := make(chan int, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.Claim(ctx, c)
			if err != nil || !res.Claimed {
				t.Errorf("claim: %+v, %v", res, err)
			}
			attempts <- res.Attempts
		}()
	}
	wg.Wait()
	close(attempts)
	sum := 0
	for a := range attempts {
		sum += a
	}
	if sum != 3 {
		t.Errorf("attempts of the two claims sum to %d, want 1+2", sum)
	}

	// A row Postgres refuses fails alone; the rest of its batch goes through.
	good := newClaim("t")
	bad := newClaim("t")
	bad.TenantID = "bad\x00tenant"
	var badErr, goodErr error
	wg.Add(2)
	go func() { defer wg.Done(); _, badErr = b.Claim(ctx, bad) }()
	go func() { defer wg.Done(); _, goodErr = b.Claim(ctx, good) }()
	wg.Wait()
	if badErr == nil || goodErr != nil {
		t.Fatalf("bad row error %v, good row error %v", badErr, goodErr)
	}
	if got, _ := loadRow(t, pool, good.ID); got.status != message.StatusSending {
		t.Fatalf("good row status %s", got.status)
	}

	if _, err := b.Claim(ctx, message.Claim{ID: "not-a-uuid"}); !errors.Is(err, message.ErrInvalidID) {
		t.Fatalf("invalid id: %v", err)
	}
	b.Close()
	if _, err := b.Claim(ctx, newClaim("t")); !errors.Is(err, message.ErrBatcherClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// Rows are written in id order by every statement, so the gateway's accepted inserts
// and the sender's claims and outcomes of the same rows, batched in different orders,
// wait on each other instead of deadlocking; and each row of an outcome batch keeps its
// own values when the batch is reordered.
func TestConcurrentWritesOfTheSameRowsInAnyOrder(t *testing.T) {
	_, pool := storetest.New(t)
	repo := message.NewRepository(pool)
	ctx := context.Background()
	for round := range 5 {
		claims := make([]message.Claim, 240)
		for i := range claims {
			claims[i] = newClaim(fmt.Sprint("t", i%5))
		}
		shuffled := func(seed int) []message.Claim {
			out := slices.Clone(claims)
			rand.New(rand.NewPCG(uint64(round), uint64(seed))).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
			return out
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := shuffled(w)
				for len(mine) > 0 {
					n := min(len(mine), 60)
					var err error
					if w%2 == 0 {
						msgs := make([]message.Message, n)
						for i, c := range mine[:n] {
							msgs[i] = message.Message{ID: c.ID, TenantID: c.TenantID, AccountID: c.AccountID,
								PhoneNumberID: c.PhoneNumberID, Recipient: c.Recipient, AcceptedAt: c.AcceptedAt}
						}
						err = repo.InsertAccepted(ctx, msgs)
					} else {
						_, err = repo.ClaimMany(ctx, testLease, mine[:n])
					}
					if err != nil {
						errs <- err
						return
					}
					mine = mine[n:]
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}

	claims := make([]message.Claim, 50)
	failures := make([]message.Failure, len(claims))
	sent := make([]message.Sent, len(claims))
	for i := range claims {
		claims[i] = newClaim("t")
		failures[i] = message.Failure{Claim: claims[i], ErrorCode: 131000 + i, ErrorTitle: fmt.Sprint("title ", i)}
		sent[i] = message.Sent{Claim: claims[i], WAMID: "wamid." + claims[i].ID}
	}
	if err := repo.MarkFailedMany(ctx, failures[:25]); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.ClaimMany(ctx, testLease, claims[25:]); err != nil {
		t.Fatal(err)
	}
	if err := repo.MarkSentMany(ctx, sent[25:]); err != nil {
		t.Fatal(err)
	}
	for i, c := range claims {
		got, ok := loadRow(t, pool, c.ID)
		switch {
		case !ok:
			t.Fatalf("row %d missing", i)
		case i < 25 && (got.status != message.StatusFailed || got.errorCode != 131000+i || got.errorTitle != fmt.Sprint("title ", i)):
			t.Errorf("failed row %d: %+v", i, got)
		case i >= 25 && (got.status != message.StatusSent || got.wamid != "wamid."+c.ID || got.tenant != c.TenantID):
			t.Errorf("sent row %d: %+v", i, got)
		}
	}
}

// BenchmarkMessageWrites is the Postgres work the pipeline does per message, by batch
// size: the gateway's accepted insert, the sender's claim and its mark-sent, each one
// statement per batch, with time-ordered ids as the gateway makes them. It reports the
// CPU of the Postgres processes (the backend and the shared WAL writer, checkpointer and
// background writer) per message for each statement and in all, next to the wall time.
func BenchmarkMessageWrites(b *testing.B) {
	url, _ := storetest.New(b)
	ctx := context.Background()
	pool, err := store.Open(ctx, url, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	database := pool.Config().ConnConfig.Database
	repo := message.NewRepository(pool)
	for _, n := range []int{10, 50, 200} {
		b.Run(fmt.Sprint("rows=", n), func(b *testing.B) {
			var insert, claim, sent time.Duration
			// Reading /proc is not the statements' time.
			postgresCPU := func() time.Duration {
				b.StopTimer()
				defer b.StartTimer()
				return cputime.Read(database).Postgres
			}
			for b.Loop() {
				b.StopTimer()
				claims := make([]message.Claim, n)
				rows := make([]message.Message, n)
				outcomes := make([]message.Sent, n)
				for i := range claims {
					c := newClaim(fmt.Sprint("tenant-", i%7))
					c.ID = uuid.Must(uuid.NewV7()).String()
					claims[i] = c
					rows[i] = message.Message{ID: c.ID, TenantID: c.TenantID, AccountID: c.AccountID,
						PhoneNumberID: c.PhoneNumberID, Recipient: c.Recipient, AcceptedAt: c.AcceptedAt}
					outcomes[i] = message.Sent{Claim: c, WAMID: "wamid.HBgLMTU1NTAwMDExMTEVAgARGBI" + c.ID, SentAt: time.Now()}
				}
				pg0 := postgresCPU()
				if err := repo.InsertAccepted(ctx, rows); err != nil {
					b.Fatal(err)
				}
				pg1 := postgresCPU()
				if _, err := repo.ClaimMany(ctx, testLease, claims); err != nil {
					b.Fatal(err)
				}
				pg2 := postgresCPU()
				if err := repo.MarkSentMany(ctx, outcomes); err != nil {
					b.Fatal(err)
				}
				pg3 := postgresCPU()
				insert, claim, sent = insert+pg1-pg0, claim+pg2-pg1, sent+pg3-pg2
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N*n) }
			b.ReportMetric(per(insert), "pg-µs/insert")
			b.ReportMetric(per(claim), "pg-µs/claim")
			b.ReportMetric(per(sent), "pg-µs/sent")
			b.ReportMetric(per(insert+claim+sent), "pg-µs/msg")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/msg")
		})
	}
}
