package onboarding_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/onboarding"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

const (
	appID     = "7700112233"
	appSecret = "fake-app-secret-0123456789abcdef"
	configID  = "cfg-889900"
)

// clock is a test clock both the service and the fake read.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer collects every log line of the run, to be searched for secrets.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type testEnv struct {
	t     *testing.T
	pool  *pgxpool.Pool
	repo  *account.Repository
	fake  *fakemeta.Server
	svc   *onboarding.Service
	clock *clock
	logs  *logBuffer
	// secrets seen during the test, which no log line may hold
	secrets []string
}

func newTestEnv(t *testing.T, graphTimeout time.Duration) *testEnv {
	t.Helper()
	_, pool := storetest.New(t)
	spec, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseKeyRing([]string{spec})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, pool: pool, repo: account.NewRepository(pool, keys), logs: &logBuffer{},
		clock: &clock{t: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.fake = fakemeta.New(fakemeta.Options{AppID: appID, AppSecret: appSecret, RequireAppSecretProof: true,
		Now: e.clock.Now, Logger: log})
	if err := e.fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.fake.Close() })
	g, err := graph.New(graph.Config{BaseURL: e.fake.URL(), Timeout: graphTimeout, AppID: appID, AppSecret: appSecret})
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = onboarding.New(onboarding.Config{
		AppID: appID, ConfigID: configID, Configured: true,
		PublicBaseURL: "https://api.example.test/", DialogBaseURL: e.fake.URL(),
		Logger: log, Now: e.clock.Now,
	}, pool, e.repo, g)
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, appSecret, spec)
	t.Cleanup(e.checkLogs)
	return e
}

// checkLogs fails the test if any secret seen in it reached a log line.
func (e *testEnv) checkLogs() {
	logs := e.logs.String()
	if !strings.Contains(logs, "embedded signup") {
		e.t.Errorf("no onboarding log line to check:\n%s", logs)
	}
	for _, tok := range e.fake.IssuedTokens() {
		e.secrets = append(e.secrets, tok)
	}
	for _, r := range e.fake.Registrations() {
		e.secrets = append(e.secrets, "pin="+r.PIN, `"`+r.PIN+`"`)
	}
	for _, s := range e.secrets {
		if s != "" && strings.Contains(logs, s) {
			e.t.Errorf("a secret (%.6s…) is in the logs:\n%s", s, logs)
		}
	}
}

func (e *testEnv) begin(tenant, subject string) onboarding.Start {
	e.t.Helper()
	st, err := e.svc.Begin(context.Background(), tenant, subject)
	if err != nil {
		e.t.Fatalf("Begin: %v", err)
	}
	e.secrets = append(e.secrets, st.State)
	return st
}

func (e *testEnv) mint(g fakemeta.Grant) string {
	c := e.fake.MintCode(g)
	e.secrets = append(e.secrets, c)
	return c
}

// dump is every row of the tables onboarding writes, as text, in a fixed order.
func (e *testEnv) dump() string {
	e.t.Helper()
	var b strings.Builder
	for _, table := range []string{"whatsapp_accounts", "onboarding_states"} {
		var s string
		if err := e.pool.QueryRow(context.Background(),
			`SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '') FROM `+table+` t`).Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		b.WriteString(table + ":\n" + s + "\n")
	}
	return b.String()
}

// twoNumbers is a WABA with a standard and a high-throughput number, neither registered.
var twoNumbers = fakemeta.Grant{WABAID: "200000000000001", PhoneNumbers: []fakemeta.Phone{
	{ID: "300000000000001", DisplayPhoneNumber: "+1 555-000-0001", VerifiedName: "Acme Shipping"},
	{ID: "300000000000002", DisplayPhoneNumber: "+1 555-000-0002", VerifiedName: "Acme Support", ThroughputLevel: "HIGH", QualityRating: "YELLOW"},
}}

func TestSDKFlowConnectsEveryNumberWithTheTenantsToken(t *testing.T) {
	e := newTestEnv(t, 2*time.Second)
	ctx := context.Background()
	st := e.begin("acme", "user-1")
	if len(st.State) < 43 || st.AppID != appID || st.ConfigID != configID || st.GraphVersion != "v22.0" ||
		st.RedirectURI != "https://api.example.test/meta/callback" || !st.ExpiresAt.Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("Begin = %+v", st)
	}
	g := twoNumbers
	g.TokenExpiresIn = 60 * 24 * time.Hour
	code := e.mint(g)

	res, err := e.svc.Complete(ctx, onboarding.Request{TenantID: "acme", Subject: "user-1", Code: code, State: st.State})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if res.TenantID != "acme" || len(res.Accounts) != 2 {
		t.Fatalf("Complete = %+v", res)
	}
	tokens := e.fake.IssuedTokens()
	if len(tokens) != 1 {
		t.Fatalf("fake issued %d tokens", len(tokens))
	}
	wantExp := e.clock.Now().Add(60 * 24 * time.Hour).Truncate(time.Second)
	regs := e.fake.Registrations()
	if len(regs) != 2 || e.fake.Subscriptions(g.WABAID) != 1 {
		t.Fatalf("registrations %d, subscriptions %d; want 2 and 1", len(regs), e.fake.Subscriptions(g.WABAID))
	}
	for i, pn := range []string{"300000000000001", "300000000000002"} {
		a, err := e.repo.Get(ctx, "acme", pn)
		if err != nil {
			t.Fatal(err)
		}
		if a.AccessToken.Reveal() != tokens[0] || a.TokenExpiresAt == nil || !a.TokenExpiresAt.Equal(wantExp) ||
			a.TokenStatus != account.StatusActive || a.WABAID != g.WABAID || a.IsDefault != (i == 0) {
			t.Errorf("account %s = %+v (expiry %v, want %v)", pn, a, a.TokenExpiresAt, wantExp)
		}
		if wantMPS := []int{80, 1000}[i]; a.ThroughputMPS != wantMPS {
			t.Errorf("account %s throughput %d, want %d", pn, a.ThroughputMPS, wantMPS)
		}
		// The token and PIN are stored encrypted, never in the clear.
		var rawTok, rawPIN []byte
		if err := e.pool.QueryRow(ctx, `SELECT access_token, registration_pin FROM whatsapp_accounts WHERE phone_number_id = $1`, pn).
			Scan(&rawTok, &rawPIN); err != nil {
			t.Fatal(err)
		}
		pin, err := e.repo.RegistrationPIN(ctx, "acme", pn)
		if err != nil {
			t.Fatal(err)
		}
		if regs[i].PhoneNumberID != pn || regs[i].PIN != pin || len(pin) != 6 || regs[i].Token != tokens[0] {
			t.Errorf("registration %+v, stored pin %q", regs[i], pin)
		}
		if bytes.Contains(rawTok, []byte(tokens[0])) || bytes.Contains(rawPIN, []byte(pin)) {
			t.Errorf("token or pin of %s stored in the clear", pn)
		}
	}
	sums, err := e.svc.Accounts(ctx, "acme")
	if err != nil || len(sums) != 2 || sums[1].VerifiedName != "Acme Support" || sums[1].QualityRating != "YELLOW" ||
		sums[0].DisplayPhoneNumber != "+1 555-000-0001" || sums[0].AccessToken != "" {
		t.Fatalf("Accounts = %+v, %v", sums, err)
	}

	// The state was consumed with the accounts: a replay is refused and changes nothing.
	before := e.dump()
	_, err = e.svc.Complete(ctx, onboarding.Request{TenantID: "acme", Subject: "user-1", Code: e.mint(g), State: st.State})
	if !errors.Is(err, onboarding.ErrInvalidState) {
		t.Fatalf("replayed state: %v, want invalid_state", err)
	}
	if after := e.dump(); after != before {
		t.Fatalf("a replayed state changed the tables:\n%s\n---\n%s", before, after)
	}
}

func TestRedirectFlowThroughTheDialog(t *testing.T) {
	e := newTestEnv(t, 2*time.Second)
	ctx := context.Background()
	st := e.begin("globex", "")
	u, err := url.Parse(st.URL)
	if err != nil || !strings.HasPrefix(st.URL, e.fake.URL()+"/v22.0/dialog/oauth?") {
		t.Fatalf("dialog url %q", st.URL)
	}
	q := u.Query()
	if q.Get("client_id") != appID || q.Get("config_id") != configID || q.Get("state") != st.State ||
		q.Get("redirect_uri") != "https://api.example.test/meta/callback" || q.Get("response_type") != "code" ||
		q.Get("override_default_response_type") != "true" {
		t.Fatalf("dialog query %v", q)
	}
	// The fake's dialog consents at once and sends the browser back with a code.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(st.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || back.Host != "api.example.test" || back.Path != "/meta/callback" {
		t.Fatalf("dialog answered %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	code := back.Query().Get("code")
	e.secrets = append(e.secrets, code)
	if back.Query().Get("state") != st.State || code == "" {
		t.Fatalf("callback query %v", back.Query())
	}

	// A redirect-flow code is exchanged with the same redirect_uri: presented as an SDK
	// code (without it) Meta refuses it, and nothing changes.
	before := e.dump()
	if _, err := e.svc.Complete(ctx, onboarding.Request{TenantID: "globex", Code: code, State: st.State}); !errors.Is(err, onboarding.ErrCodeRejected) {
		t.Fatalf("redirect code without redirect_uri: %v", err)
	}
	if after := e.dump(); after != before {
		t.Fatalf("tables changed:\n%s\n---\n%s", before, after)
	}
	// Meta marks a code used only on a successful exchange, so the same one still works.
	res, err := e.svc.Complete(ctx, onboarding.Request{Redirect: true, Code: code, State: st.State})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if res.TenantID != "globex" || len(res.Accounts) != 1 || res.Accounts[0].PhoneNumberID != fakemeta.DefaultPhoneNumberID {
		t.Fatalf("Complete = %+v", res)
	}
	a, err := e.repo.Get(ctx, "globex", fakemeta.DefaultPhoneNumberID)
	if err != nil {
		t.Fatal(err)
	}
	if a.TokenExpiresAt != nil || !a.IsDefault || a.WABAID != fakemeta.DefaultWABAID || a.AccessToken.Reveal() != e.fake.IssuedTokens()[0] {
		t.Fatalf("account = %+v, want a never-expiring default with the issued token", a)
	}
}

// seed gives tenant acme an account on one of twoNumbers (to be re-connected) and another
// of its own, so "as they were" covers updates as well as inserts.
func (e *testEnv) seed() {
	e.t.Helper()
	for _, in := range []account.UpsertInput{
		{TenantID: "acme", WABAID: "200000000000001", PhoneNumberID: "300000000000001", AccessToken: "old-token-1", IsDefault: true},
		{TenantID: "acme", WABAID: "200000000000009", PhoneNumberID: "300000000000009", AccessToken: "old-token-9"},
		{TenantID: "initech", WABAID: "200000000000007", PhoneNumberID: "300000000000007", AccessToken: "old-token-7"},
	} {
		if _, err := e.repo.Upsert(context.Background(), in); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestFailureAtAnyStepChangesNothing(t *testing.T) {
	e := newTestEnv(t, 500*time.Millisecond)
	ctx := context.Background()
	e.seed()
	metaRefusal := fakemeta.ErrorSpec{HTTPStatus: 400, Code: 100, Title: "(#100) Invalid parameter"}
	metaDown := fakemeta.ErrorSpec{HTTPStatus: 503, Code: 2, Title: "Service temporarily unavailable"}
	for _, tc := range []struct {
		name   string
		inject func()
		want   *onboarding.Error
	}{
		{"exchange refused", func() { e.fake.FailStep(fakemeta.StepExchange, 1, metaRefusal) }, onboarding.ErrCodeRejected},
		{"exchange down", func() { e.fake.FailStep(fakemeta.StepExchange, 1, metaDown) }, onboarding.ErrGraphUnavailable},
		{"debug_token refused", func() { e.fake.FailStep(fakemeta.StepDebugToken, 1, metaRefusal) }, onboarding.ErrGraph},
		{"debug_token slow", func() { e.fake.SlowStep(fakemeta.StepDebugToken, 1, 2*time.Second) }, onboarding.ErrGraphUnavailable},
		{"phone_numbers refused", func() { e.fake.FailStep(fakemeta.StepPhoneNumbers, 1, metaRefusal) }, onboarding.ErrGraph},
		{"phone_numbers down", func() { e.fake.FailStep(fakemeta.StepPhoneNumbers, 1, metaDown) }, onboarding.ErrGraphUnavailable},
		{"subscribed_apps refused", func() { e.fake.FailStep(fakemeta.StepSubscribe, 1, metaRefusal) }, onboarding.ErrGraph},
		{"subscribed_apps slow", func() { e.fake.SlowStep(fakemeta.StepSubscribe, 1, 2*time.Second) }, onboarding.ErrGraphUnavailable},
		{"register refused", func() { e.fake.FailStep(fakemeta.StepRegister, 1, metaRefusal) }, onboarding.ErrGraph},
		// The second number's registration fails after the first one's succeeded.
		{"second register down", func() { e.fake.FailStep(fakemeta.StepRegister+":300000000000002", 1, metaDown) }, onboarding.ErrGraphUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer e.fake.ClearFaults()
			st := e.begin("acme", "u")
			g := twoNumbers
			g.TokenExpiresIn = 60 * 24 * time.Hour
			code := e.mint(g)
			before := e.dump()
			tc.inject()
			_, err := e.svc.Complete(ctx, onboarding.Request{TenantID: "acme", Subject: "u", Code: code, State: st.State})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Complete: %v, want %s", err, tc.want.Code)
			}
			if after := e.dump(); after != before {
				t.Fatalf("tables changed:\n%s\n---\n%s", before, after)
			}
		})
	}
	// The old tokens still serve: nothing was touched.
	if a, err := e.repo.Get(ctx, "acme", "300000000000001"); err != nil || a.AccessToken.Reveal() != "old-token-1" {
		t.Fatalf("seeded account after failures: %+v, %v", a, err)
	}
}

func TestDatabaseErrorMidTransactionChangesNothing(t *testing.T) {
	e := newTestEnv(t, 2*time.Second)
	ctx := context.Background()
	e.seed()
	// A real database error inside the transaction, after the first number's row was
	// written: the second number's row is refused by a trigger.
	if _, err := e.pool.Exec(ctx, `
		CREATE FUNCTION refuse_second() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.phone_number_id = '300000000000002' THEN
				RAISE EXCEPTION 'injected failure';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_second BEFORE INSERT OR UPDATE ON whatsapp_accounts
			FOR EACH ROW EXECUTE FUNCTION refuse_second();`); err != nil {
		t.Fatal(err)
	}
	st := e.begin("acme", "u")
	code := e.mint(twoNumbers)
	before := e.dump()
	_, err := e.svc.Complete(ctx, onboarding.Request{TenantID: "acme", Subject: "u", Code: code, State: st.State})
	if !errors.Is(err, onboarding.ErrUnavailable) {
		t.Fatalf("Complete: %v, want unavailable", err)
	}
	if after := e.dump(); after != before {
		t.Fatalf("tables changed:\n%s\n---\n%s", before, after)
	}
}

func TestPhoneNumberOfAnotherTenantIsRefused(t *testing.T) {
	e := newTestEnv(t, 2*time.Second)
	ctx := context.Background()
	e.seed()
	st := e.begin("acme", "u")
	code := e.mint(fakemeta.Grant{WABAID: "200000000000007", PhoneNumbers: []fakemeta.Phone{
		{ID: "300000000000006"}, {ID: "300000000000007"}, // 7 is initech's
	}})
	before := e.dump()
	_, err := e.svc.Complete(ctx, onboarding.Request{TenantID: "acme", Subject: "u", Code: code, State: st.State})
	var oe *onboarding.Error
	if !errors.As(err, &oe) || oe.Code != "phone_number_taken" || oe.Status != 409 {
		t.Fatalf("Complete: %v, want 409 phone_number_taken", err)
	}
	if after := e.dump(); after != before {
		t.Fatalf("tables changed:\n%s\n---\n%s", before, after)
	}
	// Refused before anything changed at Meta either.
	if n := len(e.fake.Registrations()); n != 0 || e.fake.Subscriptions("200000000000007") != 0 {
		t.Fatalf("registered %d numbers and subscribed %d times", n, e.fake.Subscriptions("200000000000007"))
	}
}

func TestStatesAndCodesRefused(t *testing.T) {
	e := newTestEnv(t, 2*time.Second)
	ctx := context.Background()
	e.seed()
	complete := func(tenant, subject, state, code string) error {
		_, err := e.svc.Complete(ctx, onboarding.Request{TenantID: tenant, Subject: subject, Code: code, State: state})
		return err
	}
	tamper := func(s string) string {
		b := []byte(s)
		if b[5] == 'A' {
			b[5] = 'B'
		} else {
			b[5] = 'A'
		}
		return string(b)
	}
	for _, tc := range []struct {
		name string
		run  func() error
		want *onboarding.Error
	}{
		{"tampered", func() error { return complete("acme", "u", tamper(e.begin("acme", "u").State), e.mint(twoNumbers)) }, onboarding.ErrInvalidState},
		{"truncated", func() error { return complete("acme", "u", e.begin("acme", "u").State[:40], e.mint(twoNumbers)) }, onboarding.ErrInvalidState},
		{"padded", func() error { return complete("acme", "u", e.begin("acme", "u").State+"=", e.mint(twoNumbers)) }, onboarding.ErrInvalidState},
		{"empty", func() error { return complete("acme", "u", "", e.mint(twoNumbers)) }, onboarding.ErrInvalidState},
		{"unknown", func() error { return complete("acme", "u", strings.Repeat("A", 43), e.mint(twoNumbers)) }, onboarding.ErrInvalidState},
		{"other tenant's", func() error { return complete("initech", "u", e.begin("acme", "u").State, e.mint(twoNumbers)) }, onboarding.ErrInvalidState},
		{"other subject's", func() error { return complete("acme", "mallory", e.begin("acme", "u").State, e.mint(twoNumbers)) }, onboarding.ErrInvalidState},
		{"expired", func() error {
			st := e.begin("acme", "u")
			e.clock.Advance(10*time.Minute + time.Second)
			return complete("acme", "u", st.State, e.mint(twoNumbers))
		}, onboarding.ErrStateExpired},
		{"code older than 30s", func() error {
			st := e.begin("acme", "u")
			code := e.mint(twoNumbers)
			e.clock.Advance(31 * time.Second)
			return complete("acme", "u", st.State, code)
		}, onboarding.ErrCodeRejected},
		{"code of 30s is still good but missing scope", func() error {
			st := e.begin("acme", "u")
			code := e.mint(fakemeta.Grant{WABAID: "200000000000001", Scopes: []string{"whatsapp_business_management"}})
			e.clock.Advance(30 * time.Second)
			return complete("acme", "u", st.State, code)
		}, onboarding.ErrMissingMessagingScope},
		{"unknown code", func() error { return complete("acme", "u", e.begin("acme", "u").State, "AQnot-a-code") }, onboarding.ErrCodeRejected},
		{"malformed code", func() error { return complete("acme", "u", e.begin("acme", "u").State, "a code") }, onboarding.ErrInvalidRequest},
		{"waba with no numbers", func() error {
			return complete("acme", "u", e.begin("acme", "u").State, e.mint(fakemeta.Grant{WABAID: "200000000000005"}))
		}, onboarding.ErrNoPhoneNumbers},
		{"waba not granted", func() error {
			st := e.begin("acme", "u")
			_, err := e.svc.Complete(ctx, onboarding.Request{TenantID: "acme", Subject: "u", Code: e.mint(twoNumbers), State: st.State, WABAID: "200000000000009"})
			return err
		}, onboarding.ErrWABANotGranted},
		{"number not in waba", func() error {
			st := e.begin("acme", "u")
			_, err := e.svc.Complete(ctx, onboarding.Request{TenantID: "acme", Subject: "u", Code: e.mint(twoNumbers), State: st.State, PhoneNumberID: "300000000000009"})
			return err
		}, onboarding.ErrPhoneNumberNotInWABA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The cases call Begin themselves, which adds a state: compare the accounts,
			// and check that no state was consumed.
			beforeAccounts := e.accountsDump()
			statesBefore := e.stateCount()
			err := tc.run()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %s", err, tc.want.Code)
			}
			if after := e.accountsDump(); after != beforeAccounts {
				t.Fatalf("accounts changed:\n%s\n---\n%s", beforeAccounts, after)
			}
			if n := e.stateCount(); n < statesBefore {
				t.Fatalf("a refused completion consumed a state (%d → %d)", statesBefore, n)
			}
		})
	}

	// A state tried by another tenant is not burnt: its own tenant still completes with it.
	st := e.begin("acme", "u")
	if err := complete("initech", "u", st.State, e.mint(twoNumbers)); !errors.Is(err, onboarding.ErrInvalidState) {
		t.Fatal(err)
	}
	if err := complete("acme", "u", st.State, e.mint(twoNumbers)); err != nil {
		t.Fatalf("the state's own tenant: %v", err)
	}
}

func (e *testEnv) accountsDump() string {
	var s string
	if err := e.pool.QueryRow(context.Background(),
		`SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '') FROM whatsapp_accounts t`).Scan(&s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *testEnv) stateCount() int {
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM onboarding_states`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestConcurrentCompletionsOfOneStateConnectOnce(t *testing.T) {
	e := newTestEnv(t, 2*time.Second)
	st := e.begin("acme", "u")
	codes := []string{e.mint(twoNumbers), e.mint(twoNumbers)}
	var wg sync.WaitGroup
	errs := make([]error, len(codes))
	for i, c := range codes {
		wg.Go(func() {
			_, errs[i] = e.svc.Complete(context.Background(), onboarding.Request{TenantID: "acme", Subject: "u", Code: c, State: st.State})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, onboarding.ErrInvalidState):
			t.Errorf("the other completion: %v, want invalid_state", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d completions succeeded with one state, want 1 (%v)", ok, errs)
	}
}

func TestNotConfigured(t *testing.T) {
	// No Meta app: nothing to log or leak.
	_, pool := storetest.New(t)
	g, _ := graph.New(graph.Config{BaseURL: "http://127.0.0.1:1"})
	svc, err := onboarding.New(onboarding.Config{}, pool, account.NewRepository(pool, nil), g)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Begin(context.Background(), "acme", ""); !errors.Is(err, onboarding.ErrNotConfigured) {
		t.Fatalf("Begin: %v", err)
	}
}
