package account_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/store"
)

func newResolver(t testing.TB, repo *account.Repository, opts account.ResolverOptions) *account.Resolver {
	t.Helper()
	r, err := account.NewResolver(repo, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// listen runs r.Listen until the test ends and waits until it is listening.
func listen(t testing.TB, r *account.Resolver, url string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Listen(ctx, url) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Listen returned %v after cancellation, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Listen did not return after cancellation")
		}
	})
	eventually(t, 5*time.Second, "resolver listening", func() error {
		if !r.Listening() {
			return errors.New("not listening")
		}
		return nil
	})
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func resolveToken(r *account.Resolver, tenant, pnid string) (string, error) {
	a, err := r.Resolve(context.Background(), tenant, pnid)
	if err != nil {
		return "", err
	}
	return a.AccessToken.Reveal(), nil
}

func TestResolverServesFromCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-1"})
	r := newResolver(t, e.repo, account.ResolverOptions{})

	for _, pnid := range []string{"1001", ""} {
		a, err := r.Resolve(ctx, "t1", pnid)
		if err != nil || a.AccessToken.Reveal() != "tok-1" {
			t.Fatalf("Resolve(t1, %q) = %v, %v", pnid, a, err)
		}
	}
	if r.Loads() != 2 {
		t.Fatalf("%d loads for two cold keys, want 2", r.Loads())
	}
	r.WaitForTest()

	// Delete the row without firing the trigger: a cached answer still comes back,
	// which only memory can give.
	if _, err := e.pool.Exec(ctx, `BEGIN; SET LOCAL session_replication_role = replica;
		DELETE FROM whatsapp_accounts; COMMIT`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		for _, pnid := range []string{"1001", ""} {
			if tok, err := resolveToken(r, "t1", pnid); err != nil || tok != "tok-1" {
				t.Fatalf("cached Resolve(t1, %q) = %q, %v", pnid, tok, err)
			}
		}
	}
	if r.Loads() != 2 {
		t.Fatalf("%d loads after cached resolves, want 2", r.Loads())
	}

	// Another tenant asking for the same number is a different key and is not served
	// the cached account.
	if _, err := r.Resolve(ctx, "t2", "1001"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("cross-tenant Resolve: %v, want ErrNotFound", err)
	}

	r.Invalidate("t1", "1001")
	for _, pnid := range []string{"1001", ""} {
		if _, err := r.Resolve(ctx, "t1", pnid); !errors.Is(err, account.ErrNotFound) {
			t.Fatalf("Resolve(t1, %q) after Invalidate: %v, want ErrNotFound", pnid, err)
		}
	}
}

func TestResolverTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-1"})
	r := newResolver(t, e.repo, account.ResolverOptions{TTL: 100 * time.Millisecond})
	if tok, err := resolveToken(r, "t1", "1001"); err != nil || tok != "tok-1" {
		t.Fatal(tok, err)
	}
	// No listener: only the TTL can bring the change in.
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-2"})
	eventually(t, 5*time.Second, "TTL expiry", func() error {
		tok, err := resolveToken(r, "t1", "1001")
		if err != nil || tok != "tok-2" {
			return fmt.Errorf("got %q, %v", tok, err)
		}
		return nil
	})
}

func TestResolverNegativeCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newResolver(t, e.repo, account.ResolverOptions{NegativeTTL: 200 * time.Millisecond})
	ctx := context.Background()

	tests := []struct{ tenant, pnid string }{{"t1", "1001"}, {"t1", ""}, {"t1\x00x", "1000"}, {"", "1001"}}
	for _, tt := range tests {
		if _, err := r.Resolve(ctx, tt.tenant, tt.pnid); !errors.Is(err, account.ErrNotFound) {
			t.Fatalf("Resolve(%q, %q) = %v, want ErrNotFound", tt.tenant, tt.pnid, err)
		}
	}
	// NUL and empty tenants never reach the database.
	if r.Loads() != 2 {
		t.Fatalf("%d loads, want 2", r.Loads())
	}
	r.WaitForTest()
	for range 5 {
		if _, err := r.Resolve(ctx, "t1", "1001"); !errors.Is(err, account.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if r.Loads() != 2 {
		t.Fatalf("unknown id reloaded: %d loads, want 2", r.Loads())
	}

	// The number appears; without a listener the negative entry holds until NegativeTTL.
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok"})
	eventually(t, 5*time.Second, "negative entry expiry", func() error {
		_, err := r.Resolve(ctx, "t1", "1001")
		return err
	})
}

func TestResolverSingleFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok"})
	r := newResolver(t, e.repo, account.ResolverOptions{})

	// Hold the table so the first load blocks until every caller has lined up behind it.
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE whatsapp_accounts IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	const n = 50
	var wg sync.WaitGroup
	toks := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { toks[i], errs[i] = resolveToken(r, "t1", "1001") })
	}
	eventually(t, 10*time.Second, "callers waiting", func() error {
		if w := r.WaitingForTest(); w != n {
			return fmt.Errorf("%d of %d callers waiting", w, n)
		}
		return nil
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || toks[i] != "tok" {
			t.Fatalf("caller %d: %q, %v", i, toks[i], errs[i])
		}
	}
	if r.Loads() != 1 {
		t.Fatalf("%d concurrent callers made %d loads, want 1", n, r.Loads())
	}
}

func TestResolverCallerCancellation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok"})
	r := newResolver(t, e.repo, account.ResolverOptions{})

	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE whatsapp_accounts IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	patientDone := make(chan error, 1)
	go func() { _, err := r.Resolve(ctx, "t1", "1001"); patientDone <- err }()

	impatient, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := r.Resolve(impatient, "t1", "1001"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v, want DeadlineExceeded", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The shared load was not cancelled with the impatient caller.
	if err := <-patientDone; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
}

// TestResolverStaleLoadNotCached: a load that read the row before an invalidation must
// not cache what it read once the invalidation has happened.
func TestResolverStaleLoadNotCached(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok"})
	r := newResolver(t, e.repo, account.ResolverOptions{})

	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE whatsapp_accounts IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.Resolve(ctx, "t1", "1001"); done <- err }()
	eventually(t, 10*time.Second, "load in flight", func() error {
		if r.WaitingForTest() != 1 {
			return errors.New("no caller waiting")
		}
		return nil
	})
	r.Invalidate("t1", "1001") // as a notification arriving mid-load would
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.WaitForTest()
	if _, err := r.Resolve(ctx, "t1", "1001"); err != nil {
		t.Fatal(err)
	}
	if r.Loads() != 2 {
		t.Fatalf("%d loads, want 2: the load that straddled the invalidation was cached", r.Loads())
	}
}

// TestInvalidationAcrossResolvers: two instances (two gateways, or a gateway and a
// sender) on one database both drop an account changed through the repository.
func TestInvalidationAcrossResolvers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-1"})
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1002", AccessToken: "tok-p2"})

	var rs []*account.Resolver
	for range 2 {
		// Each instance has its own repository and pool, as separate processes would.
		other := newEnvPool(t, e)
		r := newResolver(t, other, account.ResolverOptions{TTL: time.Hour, NegativeTTL: time.Hour})
		listen(t, r, e.url)
		rs = append(rs, r)
	}
	warm := func() {
		t.Helper()
		for i, r := range rs {
			for _, pnid := range []string{"1001", "1002", "", "1003"} {
				_, _ = r.Resolve(ctx, "t1", pnid)
			}
			r.WaitForTest()
			if _, err := r.Resolve(ctx, "t1", "1001"); err != nil {
				t.Fatalf("resolver %d: %v", i, err)
			}
		}
	}
	expect := func(what string, check func(r *account.Resolver) error) {
		t.Helper()
		for i, r := range rs {
			eventually(t, time.Second, fmt.Sprintf("resolver %d sees %s", i, what), func() error { return check(r) })
		}
	}
	tokenIs := func(pnid, want string) func(*account.Resolver) error {
		return func(r *account.Resolver) error {
			tok, err := resolveToken(r, "t1", pnid)
			if err != nil || tok != want {
				return fmt.Errorf("Resolve(t1, %q): token matches %v, err %v", pnid, tok == want, err)
			}
			return nil
		}
	}

	warm()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-2"})
	expect("the new token", tokenIs("1001", "tok-2"))
	expect("the new token through the default", tokenIs("", "tok-2"))

	warm()
	if err := e.repo.SetTokenStatus(ctx, a.ID, account.StatusInvalid, "190"); err != nil {
		t.Fatal(err)
	}
	expect("the revoked token", func(r *account.Resolver) error {
		got, err := r.Resolve(ctx, "t1", "1001")
		if err != nil {
			return err
		}
		if !errors.Is(got.Usable(time.Now()), account.ErrNeedsReconnect) {
			return fmt.Errorf("status %s", got.TokenStatus)
		}
		return nil
	})

	warm()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1002", AccessToken: "tok-p2", IsDefault: true})
	expect("the new default", tokenIs("", "tok-p2"))

	warm()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1003", AccessToken: "tok-p3"})
	expect("a number that was unknown", tokenIs("1003", "tok-p3"))

	warm()
	if _, err := e.pool.Exec(ctx, `DELETE FROM whatsapp_accounts WHERE phone_number_id = '1003'`); err != nil {
		t.Fatal(err)
	}
	expect("a deleted number", func(r *account.Resolver) error {
		if _, err := r.Resolve(ctx, "t1", "1003"); !errors.Is(err, account.ErrNotFound) {
			return fmt.Errorf("err %v", err)
		}
		return nil
	})
}

func newEnvPool(t testing.TB, e *env) *account.Repository {
	t.Helper()
	pool, err := store.Open(context.Background(), e.url, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return account.NewRepository(pool, e.keys)
}

// TestListenReconnects: after its connection is killed, the listener reconnects, drops
// the cache (changes may have been missed), and invalidates on notifications again.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-1"})
	r := newResolver(t, e.repo, account.ResolverOptions{TTL: time.Hour})
	listen(t, r, e.url)

	listenerPID := func() (int, error) {
		var pid int
		err := e.pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, account.ListenerApplicationName).Scan(&pid)
		return pid, err
	}
	pid, err := listenerPID()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolveToken(r, "t1", "1001"); err != nil {
		t.Fatal(err)
	}
	r.WaitForTest()

	// Kill the listener's backend, then change the row while it may be disconnected.
	if _, err := e.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-2"})
	eventually(t, 5*time.Second, "change seen across the reconnect", func() error {
		if tok, err := resolveToken(r, "t1", "1001"); err != nil || tok != "tok-2" {
			return fmt.Errorf("stale token (err %v)", err)
		}
		return nil
	})
	eventually(t, 5*time.Second, "new listener connection", func() error {
		p, err := listenerPID()
		if err != nil || p == pid || !r.Listening() {
			return fmt.Errorf("pid %d, err %v", p, err)
		}
		return nil
	})

	// Notifications flow again on the new connection.
	if _, err := resolveToken(r, "t1", "1001"); err != nil {
		t.Fatal(err)
	}
	r.WaitForTest()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok-3"})
	eventually(t, time.Second, "change after the reconnect", func() error {
		if tok, err := resolveToken(r, "t1", "1001"); err != nil || tok != "tok-3" {
			return fmt.Errorf("stale token (err %v)", err)
		}
		return nil
	})
}

func TestListenBadURL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newResolver(t, e.repo, account.ResolverOptions{})
	if err := r.Listen(context.Background(), "postgres://u:pw@[bad"); err == nil {
		t.Fatal("Listen accepted an unparsable URL")
	}
	// An unreachable server: Listen keeps retrying and returns nil on cancellation.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := r.Listen(ctx, "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1"); err != nil {
		t.Fatalf("Listen = %v after cancellation, want nil", err)
	}
}

func FuzzParseNotice(f *testing.F) {
	f.Add(`{"tenant_id" : "t1", "phone_number_id" : "1001"}`)
	f.Add(`{"tenant_id":"t1"}`)
	f.Add(`{}`)
	f.Add(`not json`)
	f.Add(`{"tenant_id": 5}`)
	f.Fuzz(func(t *testing.T, payload string) {
		tenant, _, err := account.ParseNoticeForTest(payload)
		if err == nil && tenant == "" {
			t.Fatal("accepted a notice without a tenant")
		}
	})
}

func BenchmarkResolveHit(b *testing.B) {
	e := newEnv(b)
	e.upsert(b, account.UpsertInput{TenantID: "tenant-0001", PhoneNumberID: "106540352242922", AccessToken: "tok"})
	r := newResolver(b, e.repo, account.ResolverOptions{})
	ctx := context.Background()
	for range 3 {
		if _, err := r.Resolve(ctx, "tenant-0001", "106540352242922"); err != nil {
			b.Fatal(err)
		}
		r.WaitForTest()
	}
	loads := r.Loads()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(ctx, "tenant-0001", "106540352242922"); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if r.Loads() != loads {
		b.Fatalf("benchmark missed the cache: %d loads", r.Loads()-loads)
	}
}

// TestResolverConcurrentInvalidation runs resolves against invalidations and whole-cache
// drops (as after a listener reconnect), for the race detector, and checks that every
// answer is the right tenant's account.
func TestResolverConcurrentInvalidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, k := range []struct{ tenant, pnid string }{{"t1", "1001"}, {"t1", "1002"}, {"t2", "1003"}} {
		e.upsert(t, account.UpsertInput{TenantID: k.tenant, PhoneNumberID: k.pnid, AccessToken: "tok-" + k.pnid})
	}
	r := newResolver(t, e.repo, account.ResolverOptions{})

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Go(func() {
			for i := range 300 {
				tenant, pnid := "t1", []string{"1001", "1002", ""}[(g+i)%3]
				if i%5 == 0 {
					tenant, pnid = "t2", "1003"
				}
				a, err := r.Resolve(ctx, tenant, pnid)
				if err != nil {
					errs <- fmt.Errorf("Resolve(%s, %q): %w", tenant, pnid, err)
					return
				}
				if a.TenantID != tenant || (pnid != "" && a.PhoneNumberID != pnid) ||
					a.AccessToken.Reveal() != "tok-"+a.PhoneNumberID {
					errs <- fmt.Errorf("Resolve(%s, %q) returned %s/%s", tenant, pnid, a.TenantID, a.PhoneNumberID)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 60 {
			if i%10 == 0 {
				r.InvalidateAll()
			} else {
				r.Invalidate("t1", []string{"1001", "1002"}[i%2])
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
