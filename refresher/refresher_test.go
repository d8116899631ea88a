package refresher_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/role"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/refresher"
)

const (
	appID     = "900000000000001"
	appSecret = "0123456789abcdef0123456789abcdef"
	day       = 24 * time.Hour
)

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a migrated database, a key ring, the fake Graph API playing the Meta app, and a
// Graph client for it.
type env struct {
	dbURL   string
	pool    *pgxpool.Pool
	keySpec string
	repo    *account.Repository
	fake    *fakemeta.Server
	graph   *graph.Client
	log     *syncBuffer
	tokens  []string // every token the test made or the fake issued, for the leak checks
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dbURL, pool := storetest.New(t)
	spec, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseKeyRing([]string{spec})
	if err != nil {
		t.Fatal(err)
	}
	fake := fakemeta.New(fakemeta.Options{AppID: appID, AppSecret: appSecret, RequireAppSecretProof: true,
		Logger: slog.New(slog.DiscardHandler)})
	if err := fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	gc, err := role.NewGraphClient(config.Graph{BaseURL: fake.URL(), Version: "v22.0", Timeout: 5 * time.Second, MaxConnsPerHost: 64},
		config.Meta{AppID: appID, AppSecret: appSecret})
	if err != nil {
		t.Fatal(err)
	}
	return &env{dbURL: dbURL, pool: pool, keySpec: spec, repo: account.NewRepository(pool, keys), fake: fake, graph: gc,
		log: &syncBuffer{}}
}

func testConfig() config.Refresher {
	c := config.Default().Refresher
	c.Lease = 30 * time.Second
	c.BatchSize = 10
	c.RetryBaseDelay = time.Minute
	c.RetryMaxDelay = time.Hour
	return c
}

func (e *env) refresher(t *testing.T, c config.Refresher) *refresher.Refresher {
	t.Helper()
	r, err := refresher.New(refresher.Options{Accounts: e.repo, Graph: e.graph, Config: c,
		Logger: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// addAccount stores an account whose token the fake knows (granted on the account's
// WABA, expiring at expiresAt, nil for never).
func (e *env) addAccount(t *testing.T, tenant, phone string, expiresAt *time.Time) *account.Account {
	t.Helper()
	token := fmt.Sprintf("EAAGtoken%s%s", tenant, phone)
	k := fakemeta.KnownToken{WABAID: "2000" + phone, PhoneNumberID: phone}
	if expiresAt != nil {
		k.ExpiresAt = *expiresAt
	}
	if !e.fake.KnowToken(token, k) {
		t.Fatalf("fake knew token of %s already", phone)
	}
	a, err := e.repo.Upsert(context.Background(), account.UpsertInput{TenantID: tenant, WABAID: k.WABAID,
		PhoneNumberID: phone, AccessToken: token, TokenExpiresAt: expiresAt})
	if err != nil {
		t.Fatal(err)
	}
	e.tokens = append(e.tokens, token)
	return a
}

// counters reads the refresher's counters.
func counters() map[string]float64 {
	out := map[string]float64{}
	for _, o := range []string{"refreshed", "failed", "needs_reconnect", "lost"} {
		out["refreshes "+o] = testutil.ToFloat64(metrics.TokenRefreshes.WithLabelValues(o))
	}
	for _, o := range []string{"valid", "failed", "needs_reconnect", "lost"} {
		out["checks "+o] = testutil.ToFloat64(metrics.TokenChecks.WithLabelValues(o))
	}
	return out
}

func in(d time.Duration) *time.Time {
	t := time.Now().Add(d).UTC().Truncate(time.Second)
	return &t
}

func (e *env) get(t *testing.T, a *account.Account) *account.Account {
	t.Helper()
	got, err := e.repo.Get(context.Background(), a.TenantID, a.PhoneNumberID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// bookkeeping reads the refresher's columns that Account does not hold.
func (e *env) bookkeeping(t *testing.T, a *account.Account) (refreshed, checked, leaseUntil *time.Time) {
	t.Helper()
	err := e.pool.QueryRow(context.Background(), `SELECT last_refreshed_at, last_checked_at, refresh_lease_until
		FROM whatsapp_accounts WHERE id = $1::uuid`, a.ID).Scan(&refreshed, &checked, &leaseUntil)
	if err != nil {
		t.Fatal(err)
	}
	return refreshed, checked, leaseUntil
}

// noTokens fails if any token the test made or the fake issued shows in text.
func (e *env) noTokens(t *testing.T, where, text string) {
	t.Helper()
	for _, tok := range append(e.tokens, e.fake.IssuedTokens()...) {
		if strings.Contains(text, tok) {
			t.Errorf("%s holds an access token:\n%s", where, text)
			return
		}
	}
}

// TestPassRenewsOnlyDueTokens: of accounts expiring in 11, 9 and 1 days, already
// expired, never expiring, and never expiring but revoked, a pass renews exactly the 9-
// and 1-day ones (one exchange each, at the fake), marks the expired one needs_reconnect
// without asking Meta, and finds the revoked one by its debug_token check.
func TestPassRenewsOnlyDueTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a11 := e.addAccount(t, "acme", "1011", in(11*day))
	a9 := e.addAccount(t, "acme", "1009", in(9*day))
	a1 := e.addAccount(t, "beta", "1001", in(day))
	expired := e.addAccount(t, "beta", "1000", in(-time.Hour))
	never := e.addAccount(t, "gamma", "1100", nil)
	revoked := e.addAccount(t, "gamma", "1101", nil)
	e.fake.RevokeToken(revoked.AccessToken.Reveal())
	// Other statuses are left alone.
	gone := e.addAccount(t, "delta", "1200", in(2*day))
	if _, err := e.repo.Disconnect(ctx, "delta", "1200"); err != nil {
		t.Fatal(err)
	}

	r := e.refresher(t, testConfig())
	before := counters()
	start := time.Now()
	sum, err := r.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := counters()
	for name, want := range map[string]float64{"refreshes refreshed": 2, "refreshes needs_reconnect": 1, "refreshes failed": 0,
		"checks valid": 1, "checks needs_reconnect": 1, "checks failed": 0} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("metric %s went up by %v, want %v", name, got, want)
		}
	}
	if got := [3]int{sum.Count(refresher.OutcomeRefreshed), sum.Count(refresher.OutcomeFailed), sum.Count(refresher.OutcomeChecked)}; got != [3]int{2, 2, 1} {
		t.Errorf("refreshed, failed, checked = %v, want [2 2 1]; results %+v", got, sum.Results)
	}

	for _, c := range []struct {
		a        *account.Account
		renewals int
	}{{a11, 0}, {a9, 1}, {a1, 1}, {expired, 0}, {never, 0}, {revoked, 0}, {gone, 0}} {
		if n := e.fake.Exchanges(c.a.AccessToken.Reveal()); n != c.renewals {
			t.Errorf("account %s: token exchanged %d times, want %d", c.a.PhoneNumberID, n, c.renewals)
		}
	}
	if n := e.fake.TotalExchanges(); n != 2 {
		t.Errorf("fake granted %d exchanges, want 2", n)
	}

	for _, old := range []*account.Account{a9, a1} {
		got := e.get(t, old)
		st := e.fake.Token(got.AccessToken.Reveal())
		if got.AccessToken == old.AccessToken || st.RenewedFrom != old.AccessToken.Reveal() {
			t.Errorf("account %s: stored token is not the one renewed from the old token (%+v)", old.PhoneNumberID, st)
		}
		want := start.Add(fakemeta.RenewedLifetime)
		if got.TokenExpiresAt == nil || got.TokenExpiresAt.Sub(want).Abs() > 5*time.Second || !got.TokenExpiresAt.Equal(st.ExpiresAt.Truncate(time.Second)) &&
			got.TokenExpiresAt.Sub(st.ExpiresAt).Abs() > 2*time.Second {
			t.Errorf("account %s: expiry %v, want about %v (the fake's %v)", old.PhoneNumberID, got.TokenExpiresAt, want, st.ExpiresAt)
		}
		if got.TokenStatus != account.StatusActive || got.RefreshAttempts != 0 || got.LastRefreshError != "" {
			t.Errorf("account %s after renewal: %s, %d attempts, error %q", old.PhoneNumberID, got.TokenStatus, got.RefreshAttempts, got.LastRefreshError)
		}
		if refreshed, _, lease := e.bookkeeping(t, old); refreshed == nil || lease != nil {
			t.Errorf("account %s: last_refreshed_at %v, lease %v; want a time and no lease", old.PhoneNumberID, refreshed, lease)
		}
		e.tokens = append(e.tokens, got.AccessToken.Reveal())
	}
	if got := e.get(t, a11); got.AccessToken != a11.AccessToken || !got.TokenExpiresAt.Equal(*a11.TokenExpiresAt) {
		t.Errorf("11-day account changed: %+v", got)
	}

	for _, c := range []struct {
		a    *account.Account
		want string
	}{{expired, "expired"}, {revoked, "debug_token"}} {
		got := e.get(t, c.a)
		if got.TokenStatus != account.StatusNeedsReconnect || got.RefreshAttempts != 1 || !strings.Contains(got.LastRefreshError, c.want) {
			t.Errorf("account %s: %s, %d attempts, error %q; want needs_reconnect, 1, mentioning %q",
				c.a.PhoneNumberID, got.TokenStatus, got.RefreshAttempts, got.LastRefreshError, c.want)
		}
		e.noTokens(t, "last_refresh_error", got.LastRefreshError)
	}
	if got := e.get(t, never); got.TokenStatus != account.StatusActive {
		t.Errorf("never-expiring valid account: %s", got.TokenStatus)
	}
	if _, checked, _ := e.bookkeeping(t, never); checked == nil {
		t.Error("never-expiring account: last_checked_at not set")
	}
	if got := e.get(t, gone); got.TokenStatus != account.StatusDisconnected {
		t.Errorf("disconnected account: %s", got.TokenStatus)
	}

	// Nothing is due any more: a second pass claims nothing.
	sum, err = r.Pass(ctx)
	if err != nil || len(sum.Results) != 0 {
		t.Errorf("second pass: %+v, %v; want nothing", sum.Results, err)
	}

	if err := r.UpdateStats(ctx); err != nil {
		t.Fatal(err)
	}
	for status, want := range map[string]float64{"active": 4, "needs_reconnect": 2, "disconnected": 1, "invalid": 0} {
		if got := testutil.ToFloat64(metrics.Accounts.WithLabelValues(status)); got != want {
			t.Errorf("aerogate_accounts{token_status=%q} = %v, want %v", status, got, want)
		}
	}
	if got := testutil.ToFloat64(metrics.AccountsExpiring); got != 0 {
		t.Errorf("aerogate_accounts_expiring = %v, want 0 (the 11-day token is outside the window)", got)
	}
	if got := testutil.ToFloat64(metrics.TokenEarliestExpiry); (time.Duration(got*float64(time.Second)) - 11*day).Abs() > time.Minute {
		t.Errorf("aerogate_token_earliest_expiry_seconds = %v, want about 11 days", got)
	}

	var out bytes.Buffer
	if err := r.AddSkipped(ctx, &sum); err != nil {
		t.Fatal(err)
	}
	if err := sum.Write(&out); err != nil {
		t.Fatal(err)
	}
	e.noTokens(t, "summary", out.String())
	e.noTokens(t, "logs", e.log.String())
}

// TestFailureBacksOff: a failed renewal is counted, keeps Meta's code and message, is
// not tried again before its backoff, and succeeds later with the bookkeeping reset;
// code 190 makes the account needs_reconnect.
func TestFailureBacksOff(t *testing.T) {
	cases := []struct {
		name      string
		spec      fakemeta.ErrorSpec
		reconnect bool
		text      string
	}{
		{"service unavailable", fakemeta.ErrorSpec{HTTPStatus: 503, Code: 2, Title: "Service temporarily unavailable"}, false, "code 2"},
		{"token refused", fakemeta.ErrorSpec{HTTPStatus: 400, Code: 190, Subcode: 460, Title: "Error validating access token: password changed"}, true, "code 190"},
		{"invalid parameter", fakemeta.ErrorSpec{HTTPStatus: 400, Code: 100, Title: "Invalid parameter"}, false, "code 100"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			a := e.addAccount(t, "acme", "2001", in(3*day))
			e.fake.FailStep(fakemeta.StepRenew+":"+a.AccessToken.Reveal(), 1, c.spec)
			r := e.refresher(t, testConfig())
			before := time.Now()
			sum, err := r.Pass(ctx)
			if err != nil || sum.Count(refresher.OutcomeFailed) != 1 {
				t.Fatalf("pass: %+v, %v; want one failure", sum.Results, err)
			}
			got := e.get(t, a)
			if got.RefreshAttempts != 1 || !strings.Contains(got.LastRefreshError, c.text) || got.AccessToken != a.AccessToken {
				t.Errorf("after failure: attempts %d, error %q, token changed %t", got.RefreshAttempts, got.LastRefreshError, got.AccessToken != a.AccessToken)
			}
			e.noTokens(t, "last_refresh_error", got.LastRefreshError)
			if c.reconnect {
				if got.TokenStatus != account.StatusNeedsReconnect {
					t.Errorf("status %s, want needs_reconnect", got.TokenStatus)
				}
				return
			}
			if got.TokenStatus != account.StatusActive || got.NextRefreshAt == nil ||
				got.NextRefreshAt.Before(before) || got.NextRefreshAt.After(before.Add(time.Minute+time.Second)) {
				t.Errorf("status %s, next attempt %v; want active, within the first backoff (1m) of %v", got.TokenStatus, got.NextRefreshAt, before)
			}
			// Not due before its backoff ends.
			if sum, _ := r.Pass(ctx); len(sum.Results) != 0 {
				t.Errorf("pass during backoff: %+v", sum.Results)
			}
			if _, err := e.pool.Exec(ctx, `UPDATE whatsapp_accounts SET next_refresh_at = now() - interval '1 second'`); err != nil {
				t.Fatal(err)
			}
			if sum, _ := r.Pass(ctx); sum.Count(refresher.OutcomeRefreshed) != 1 {
				t.Fatalf("pass after backoff: %+v", sum.Results)
			}
			got = e.get(t, a)
			if got.RefreshAttempts != 0 || got.LastRefreshError != "" || got.NextRefreshAt != nil || got.AccessToken == a.AccessToken {
				t.Errorf("after renewal: %d attempts, error %q, next %v", got.RefreshAttempts, got.LastRefreshError, got.NextRefreshAt)
			}
			if n := e.fake.Exchanges(a.AccessToken.Reveal()); n != 1 {
				t.Errorf("token exchanged %d times, want 1 (the failed try is not a renewal)", n)
			}
			e.noTokens(t, "logs", e.log.String())
		})
	}
}

// TestLeaseLostWritesNothing: a renewal whose account was reconnected while its Graph
// call ran does not overwrite the tenant's new token.
func TestLeaseLostWritesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.addAccount(t, "acme", "3001", in(2*day))
	e.fake.SlowStep(fakemeta.StepRenew, 1, 500*time.Millisecond)
	r := e.refresher(t, testConfig())
	done := make(chan refresher.Summary, 1)
	go func() {
		sum, _ := r.Pass(ctx)
		done <- sum
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := e.repo.Upsert(ctx, account.UpsertInput{TenantID: "acme", WABAID: a.WABAID, PhoneNumberID: a.PhoneNumberID,
		AccessToken: "EAAGreconnected", TokenExpiresAt: in(60 * day)}); err != nil {
		t.Fatal(err)
	}
	sum := <-done
	if sum.Count(refresher.OutcomeSkipped) != 1 {
		t.Errorf("results %+v, want the claim reported lost (skipped)", sum.Results)
	}
	if got := e.get(t, a); got.AccessToken.Reveal() != "EAAGreconnected" {
		t.Error("the renewal overwrote the token the tenant reconnected with")
	}
}

// TestTwoRefreshersRenewEachAccountOnce: two refreshers (each with its own pool, as two
// replicas) make passes at once over 200 due accounts; the fake renews every token
// exactly once.
func TestTwoRefreshersRenewEachAccountOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 200
	accts := make([]*account.Account, n)
	for i := range accts {
		accts[i] = e.addAccount(t, fmt.Sprintf("tenant-%d", i%7), fmt.Sprintf("4%04d", i), in(time.Duration(1+i%9)*day))
	}
	e.fake.SlowStep(fakemeta.StepRenew, -1, 2*time.Millisecond)
	c := testConfig()
	c.BatchSize, c.Concurrency = 16, 8
	var sums [2]refresher.Summary
	var wg sync.WaitGroup
	for i := range sums {
		pool, err := pgxpool.New(ctx, e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		keys, _ := secret.ParseKeyRing([]string{e.keySpec})
		r, err := refresher.New(refresher.Options{Accounts: account.NewRepository(pool, keys), Graph: e.graph, Config: c,
			Logger: slog.New(slog.NewTextHandler(e.log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if sums[i], err = r.Pass(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	a, b := sums[0].Count(refresher.OutcomeRefreshed), sums[1].Count(refresher.OutcomeRefreshed)
	t.Logf("refresher 1 renewed %d, refresher 2 renewed %d", a, b)
	if a+b != n || a == 0 || b == 0 {
		t.Errorf("renewed %d + %d, want %d in all, by both", a, b, n)
	}
	for _, acct := range accts {
		if got := e.fake.Exchanges(acct.AccessToken.Reveal()); got != 1 {
			t.Errorf("account %s: exchanged %d times, want 1", acct.PhoneNumberID, got)
		}
	}
	if got := e.fake.TotalExchanges(); got != n {
		t.Errorf("fake granted %d exchanges, want %d", got, n)
	}
	var left int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_accounts WHERE refresh_lease_until IS NOT NULL
		OR token_expires_at < now() + interval '10 days'`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d accounts still leased or due (%v)", left, err)
	}
	e.noTokens(t, "logs", e.log.String())
}

// TestOnceSummaryAndExitStatus runs the command's function: one line per account, the
// counts, ErrFailed when an account failed, and no token anywhere.
func TestOnceSummaryAndExitStatus(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := config.Default()
	cfg.Database.URL = e.dbURL
	cfg.Secrets.TokenKeys = []string{e.keySpec}
	cfg.Graph.BaseURL = e.fake.URL()
	cfg.Meta.AppID, cfg.Meta.AppSecret = appID, appSecret
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	good := e.addAccount(t, "acme", "5009", in(9*day))
	e.addAccount(t, "acme", "5011", in(11*day))
	e.addAccount(t, "beta", "5100", nil)

	var dry bytes.Buffer
	if err := refresher.Once(ctx, cfg, &dry, true); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if !hasLine(dry.String(), "refresh", "acme", "5009") || !hasLine(dry.String(), "check", "beta", "5100") ||
		!hasLine(dry.String(), "skip", "acme", "5011") ||
		!strings.HasSuffix(dry.String(), "\ndry run: would have refreshed 1, failed 0, checked 1, skipped 1\n") {
		t.Errorf("dry run output:\n%s", dry.String())
	}
	if n := e.fake.TotalExchanges(); n != 0 {
		t.Errorf("the dry run renewed %d tokens", n)
	}

	var out bytes.Buffer
	if err := refresher.Once(ctx, cfg, &out, false); err != nil {
		t.Fatalf("once: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[1], "refreshed") || !strings.Contains(lines[1], "5009") ||
		!strings.HasPrefix(lines[2], "checked") || !strings.HasPrefix(lines[3], "skipped") ||
		lines[4] != "refreshed 1, failed 0, checked 1, skipped 1" {
		t.Errorf("once output:\n%s", out.String())
	}
	e.tokens = append(e.tokens, e.get(t, good).AccessToken.Reveal())

	bad := e.addAccount(t, "gamma", "5200", in(-time.Minute))
	out.Reset()
	err := refresher.Once(ctx, cfg, &out, false)
	if err == nil || !strings.Contains(err.Error(), refresher.ErrFailed.Error()) {
		t.Errorf("once with an expired token: error %v, want ErrFailed", err)
	}
	if !hasLine(out.String(), "failed", "gamma", "5200") || !strings.Contains(out.String(), "needs_reconnect") ||
		!strings.HasSuffix(out.String(), "refreshed 0, failed 1, checked 0, skipped 3\n") {
		t.Errorf("once output:\n%s", out.String())
	}
	if got := e.get(t, bad); got.TokenStatus != account.StatusNeedsReconnect {
		t.Errorf("expired account: %s", got.TokenStatus)
	}
	e.noTokens(t, "stdout", dry.String()+out.String())
	e.noTokens(t, "error", fmt.Sprint(err))
	e.noTokens(t, "logs", e.log.String())
}

// hasLine reports whether a line of out starts with the given whitespace-separated fields.
func hasLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}
