package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/sender"
)

const (
	e2eAppID     = "7700112233"
	e2eAppSecret = "e2e-app-secret-fedcba9876543210"
	e2eConfigID  = "cfg-445566"
	e2eJWTSecret = "e2e-jwt-secret-that-is-at-least-32-bytes"
	frontendURL  = "https://app.example.test/whatsapp/done?tab=channels"
)

// offsetClock is the fake Graph API's clock: real time plus an offset a test moves on,
// so a code can age past 30 seconds without waiting.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

type e2e struct {
	t       *testing.T
	base    string
	pool    *pgxpool.Pool
	repo    *account.Repository
	fake    *fakemeta.Server
	clock   *offsetClock
	brokers []string
	client  *http.Client // follows no redirect: each hop is checked
	logs    *syncBuffer
	secrets []string // what no log line, redirect, answer or Kafka record may hold
}

// TestOnboardingEndToEnd runs the gateway and the sender as `aerogate dev` does, against
// real Postgres, the embedded broker and the fake Graph API, and connects two tenants
// through both Embedded Signup entrances, then sends through what was connected.
func TestOnboardingEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway and sender")
	}
	e := &e2e{t: t, clock: &offsetClock{}, logs: &syncBuffer{},
		client: &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	dbURL, pool := storetest.New(t)
	e.pool = pool
	spec, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := secret.ParseKeyRing([]string{spec})
	e.repo = account.NewRepository(pool, keys)
	e.secrets = append(e.secrets, e2eAppSecret, spec, e2eJWTSecret)

	// Every role logs into one buffer, read for secrets at the end.
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prev := slog.Default()
	slog.SetDefault(logger)
	t.Cleanup(func() { slog.SetDefault(prev) })

	broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 3, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	e.brokers = broker.Addrs()
	e.fake = fakemeta.New(fakemeta.Options{AppID: e2eAppID, AppSecret: e2eAppSecret, RequireAppSecretProof: true,
		Now: e.clock.Now, Logger: logger})
	if err := e.fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.fake.Close() })

	addr := freeAddr(t)
	e.base = "http://" + addr
	cfg := config.Default()
	cfg.HTTP.Addr = addr
	cfg.Database.URL = dbURL
	cfg.Kafka.Brokers = e.brokers
	cfg.Kafka.Partitions = 3
	cfg.JWT.Secret = e2eJWTSecret
	cfg.Secrets.TokenKeys = []string{spec}
	cfg.Graph.BaseURL = e.fake.URL()
	cfg.Graph.Timeout = 5 * time.Second
	cfg.Meta.AppID, cfg.Meta.AppSecret, cfg.Meta.ConfigID = e2eAppID, e2eAppSecret, e2eConfigID
	cfg.Meta.DialogBaseURL = e.fake.URL()
	cfg.PublicBaseURL = e.base
	cfg.Frontend.RedirectURL = frontendURL
	cfg.Sender.PausedRetryDelay = 200 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- gateway.Run(ctx, cfg) }()
	go func() {
		done <- sender.Run(ctx, cfg, func(o *sender.Options) {
			o.SessionTimeout, o.RebalanceTimeout, o.HeartbeatInterval = 2*time.Second, 3*time.Second, 200*time.Millisecond
			o.CommitInterval = 100 * time.Millisecond
		})
	}()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("role returned %v", err)
			}
		}
		if t.Failed() {
			t.Logf("logs:\n%s", e.logs.String())
		}
	})
	waitFor(t, 30*time.Second, func() bool {
		resp, err := e.client.Get(e.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	acme, globex := e.jwt("acme", "alice@acme"), e.jwt("globex", "bob@globex")

	// Redirect flow, a 60-day token: URL → dialog → callback → front end.
	const acmeWABA, acmeNumber = "200000000000001", "300000000000001"
	e.fake.SetDialogGrant(fakemeta.Grant{WABAID: acmeWABA, TokenExpiresIn: 60 * 24 * time.Hour,
		PhoneNumbers: []fakemeta.Phone{{ID: acmeNumber, DisplayPhoneNumber: "+1 555-000-0001", VerifiedName: "Acme"}}})
	start := e.beginSignup(acme)
	if !strings.HasPrefix(start.URL, e.fake.URL()+"/v22.0/dialog/oauth?") || start.RedirectURI != e.base+"/meta/callback" ||
		start.AppID != e2eAppID || start.ConfigID != e2eConfigID || start.GraphVersion != "v22.0" {
		t.Fatalf("embedded-signup answer %+v", start)
	}
	callback := e.follow(start.URL, e.base+"/meta/callback")
	landing := e.follow(callback, "https://app.example.test/whatsapp/done")
	if got := mustQuery(t, landing); got.Get("status") != "connected" || got.Get("tab") != "channels" || len(got) != 2 {
		t.Fatalf("front end redirect %q, want status=connected and its own query only", landing)
	}
	acmeToken := e.tokenOf(acmeNumber)
	acmeAcct := e.account("acme", acmeNumber)
	wantExp := e.clock.Now().Add(60 * 24 * time.Hour)
	if acmeAcct.AccessToken.Reveal() != acmeToken || acmeAcct.TokenExpiresAt == nil ||
		acmeAcct.TokenExpiresAt.Sub(wantExp).Abs() > 5*time.Second || !acmeAcct.IsDefault {
		t.Fatalf("acme's account %+v (expiry %v, want ≈ %v)", acmeAcct, acmeAcct.TokenExpiresAt, wantExp)
	}

	// JavaScript SDK flow, a token that never expires: the code comes from the fake's
	// control endpoint as the SDK would hand it over.
	const globexWABA, globexNumber = "200000000000002", "300000000000002"
	start = e.beginSignup(globex)
	code := e.mintCode(fmt.Sprintf(`{"waba_id":%q,"phone_numbers":[{"id":%q,"verified_name":"Globex","throughput_level":"HIGH"}]}`,
		globexWABA, globexNumber))
	r := e.do(http.MethodPost, "/v1/whatsapp/embedded-signup", globex,
		fmt.Sprintf(`{"code":%q,"state":%q,"waba_id":%q,"phone_number_id":%q}`, code, start.State, globexWABA, globexNumber))
	var connected struct {
		Status   string `json:"status"`
		Accounts []struct {
			PhoneNumberID  string  `json:"phone_number_id"`
			TokenExpiresAt *string `json:"token_expires_at"`
			ThroughputMPS  int     `json:"throughput_mps"`
			VerifiedName   string  `json:"verified_name"`
		} `json:"accounts"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &connected) != nil || connected.Status != "connected" ||
		len(connected.Accounts) != 1 || connected.Accounts[0].PhoneNumberID != globexNumber ||
		connected.Accounts[0].TokenExpiresAt != nil || connected.Accounts[0].ThroughputMPS != 1000 || connected.Accounts[0].VerifiedName != "Globex" {
		t.Fatalf("POST embedded-signup = %d %s", r.status, r.body)
	}
	globexToken := e.tokenOf(globexNumber)
	if a := e.account("globex", globexNumber); a.AccessToken.Reveal() != globexToken || a.TokenExpiresAt != nil {
		t.Fatalf("globex's account %+v, want its own never-expiring token", a)
	}

	// Sends through the gateway and the sender reach Meta with exactly each tenant's
	// token and a valid appsecret_proof.
	for _, tc := range []struct{ jwt, number, token string }{{acme, acmeNumber, acmeToken}, {globex, globexNumber, globexToken}} {
		r := e.do(http.MethodPost, "/v1/messages", tc.jwt, `{"messaging_product":"whatsapp","to":"+15551230000","type":"text","text":{"body":"from `+tc.number+`"}}`)
		if r.status != http.StatusAccepted {
			t.Fatalf("send: %d %s", r.status, r.body)
		}
		var got *fakemeta.Received
		waitFor(t, 30*time.Second, func() bool {
			for _, rec := range e.fake.Received() {
				if rec.PhoneNumberID == tc.number && rec.WAMID != "" && strings.Contains(string(rec.Body), "from "+tc.number) {
					got = &rec
					return true
				}
			}
			return false
		})
		if got.Token != tc.token || got.AppSecretProof != graph.AppSecretProof(e2eAppSecret, tc.token) {
			t.Fatalf("send from %s reached Meta with token %.8s… proof %q", tc.number, got.Token, got.AppSecretProof)
		}
	}

	// The test message: hello_world with the account's token, Meta's answer or error.
	r = e.do(http.MethodPost, "/v1/whatsapp/test-message", acme, `{"to":"+1 555 123 4567"}`)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"id":"wamid.`) {
		t.Fatalf("test message: %d %s", r.status, r.body)
	}
	e.fake.FailRecipient("15557654321", 1, fakemeta.ErrorSpec{Code: 131026, Title: "Message Undeliverable."})
	r = e.do(http.MethodPost, "/v1/whatsapp/test-message", acme, `{"to":"15557654321","phone_number_id":"`+acmeNumber+`"}`)
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"graph_code":131026`) {
		t.Fatalf("undeliverable test message: %d %s", r.status, r.body)
	}
	r = e.do(http.MethodPost, "/v1/whatsapp/test-message", acme, `{"to":"15557654321","phone_number_id":"`+globexNumber+`"}`)
	if r.status != http.StatusNotFound || r.code() != "account_not_found" {
		t.Fatalf("test message from another tenant's number: %d %s", r.status, r.body)
	}

	// Accounts: the tenant's own, never a token.
	r = e.do(http.MethodGet, "/v1/whatsapp/accounts", acme, "")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), acmeNumber) || strings.Contains(string(r.body), globexNumber) {
		t.Fatalf("accounts: %d %s", r.status, r.body)
	}

	// Refusals change nothing.
	start = e.beginSignup(globex)
	before := e.dump()
	// Another tenant's number: 409.
	code = e.mintCode(fmt.Sprintf(`{"waba_id":%q}`, acmeWABA))
	r = e.do(http.MethodPost, "/v1/whatsapp/embedded-signup", globex, fmt.Sprintf(`{"code":%q,"state":%q}`, code, start.State))
	if r.status != http.StatusConflict || r.code() != "phone_number_taken" {
		t.Fatalf("another tenant's number: %d %s", r.status, r.body)
	}
	// A state of another tenant, through the SDK entrance.
	code = e.mintCode(`{"waba_id":"200000000000003","phone_numbers":[{"id":"300000000000003"}]}`)
	r = e.do(http.MethodPost, "/v1/whatsapp/embedded-signup", acme, fmt.Sprintf(`{"code":%q,"state":%q}`, code, start.State))
	if r.status != http.StatusBadRequest || r.code() != "invalid_state" {
		t.Fatalf("another tenant's state: %d %s", r.status, r.body)
	}
	// A code older than 30 seconds.
	e.clock.Advance(31 * time.Second)
	r = e.do(http.MethodPost, "/v1/whatsapp/embedded-signup", globex, fmt.Sprintf(`{"code":%q,"state":%q}`, code, start.State))
	if r.status != http.StatusBadRequest || r.code() != "code_rejected" {
		t.Fatalf("a code of 31 s: %d %s", r.status, r.body)
	}
	// A tampered state and a replayed callback, through the redirect entrance.
	tampered := strings.Replace(callback, "state=", "state=x", 1)
	if got := mustQuery(t, e.follow(tampered, "https://app.example.test/whatsapp/done")); got.Get("status") != "error" || got.Get("reason") != "invalid_state" {
		t.Fatalf("tampered state: %v", got)
	}
	if got := mustQuery(t, e.follow(callback, "https://app.example.test/whatsapp/done")); got.Get("status") != "error" || got.Get("reason") != "invalid_state" {
		t.Fatalf("replayed callback: %v", got)
	}
	// A tenantId in the body that is not the token's.
	r = e.do(http.MethodPost, "/v1/whatsapp/embedded-signup", globex, fmt.Sprintf(`{"code":%q,"state":%q,"tenantId":"acme"}`, code, start.State))
	if r.status != http.StatusForbidden || r.code() != "tenant_mismatch" {
		t.Fatalf("tenantId of another tenant: %d %s", r.status, r.body)
	}
	if after := e.dump(); after != before {
		t.Fatalf("refusals changed the tables:\n%s\n---\n%s", before, after)
	}

	// Disconnect through the API and through the CLI: the token is erased and sends
	// answer 409 account_disconnected at once (every cache dropped the account).
	if r := e.do(http.MethodDelete, "/v1/whatsapp/accounts/"+globexNumber, acme, ""); r.status != http.StatusNotFound {
		t.Fatalf("deleting another tenant's account: %d %s", r.status, r.body)
	}
	r = e.do(http.MethodDelete, "/v1/whatsapp/accounts/"+globexNumber, globex, "")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"token_status":"disconnected"`) {
		t.Fatalf("disconnect: %d %s", r.status, r.body)
	}
	t.Setenv("AEROGATE_DATABASE_URL", dbURL)
	t.Setenv("AEROGATE_SECRETS_TOKEN_KEYS", spec)
	t.Setenv("AEROGATE_JWT_SECRET", e2eJWTSecret)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"accounts", "remove", "--tenant", "acme", "--phone-number-id", acmeNumber}, &stdout, &stderr); code != 0 ||
		!strings.Contains(stdout.String(), "disconnected") {
		t.Fatalf("aerogate accounts remove = %d\n%s%s", code, stdout.String(), stderr.String())
	}
	slog.SetDefault(logger) // run set its own
	for _, tc := range []struct{ jwt, number string }{{globex, globexNumber}, {acme, acmeNumber}} {
		var ct []byte
		if err := pool.QueryRow(context.Background(), `SELECT access_token FROM whatsapp_accounts WHERE phone_number_id = $1`, tc.number).Scan(&ct); err != nil || len(ct) != 0 {
			t.Fatalf("token of %s after disconnect: %d bytes, %v", tc.number, len(ct), err)
		}
		waitFor(t, 5*time.Second, func() bool {
			r := e.do(http.MethodPost, "/v1/messages", tc.jwt, `{"messaging_product":"whatsapp","to":"15551230000","type":"text","text":{"body":"x"}}`)
			return r.status == http.StatusConflict && r.code() == "account_disconnected"
		})
	}

	e.checkKafka()
	e.checkLogs()
}

func (e *e2e) jwt(tenant, subject string) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"tenantId": tenant, "sub": subject, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(e2eJWTSecret))
	if err != nil {
		e.t.Fatal(err)
	}
	e.secrets = append(e.secrets, s)
	return s
}

type e2eResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r e2eResponse) code() string {
	var v struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.body, &v)
	return v.Error.Code
}

// answers keeps every API answer, to be searched for secrets.
var answersMu sync.Mutex

func (e *e2e) do(method, path, bearer, body string) e2eResponse {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := e2eResponse{resp.StatusCode, resp.Header, b}
	e.checkAnswer(path, string(b)+fmt.Sprint(resp.Header))
	return r
}

type signupStart struct {
	AppID        string `json:"app_id"`
	ConfigID     string `json:"config_id"`
	GraphVersion string `json:"graph_version"`
	State        string `json:"state"`
	URL          string `json:"url"`
	RedirectURI  string `json:"redirect_uri"`
}

func (e *e2e) beginSignup(bearer string) signupStart {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v1/whatsapp/embedded-signup", bearer, "")
	var s signupStart
	if r.status != http.StatusOK || json.Unmarshal(r.body, &s) != nil || len(s.State) < 43 {
		e.t.Fatalf("GET embedded-signup = %d %s", r.status, r.body)
	}
	return s
}

// follow GETs u, which must redirect to a URL starting with want, and returns that URL.
func (e *e2e) follow(u, want string) string {
	e.t.Helper()
	resp, err := e.client.Get(u)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, want) {
		e.t.Fatalf("GET %s = %d Location %q %s, want a redirect to %s", u, resp.StatusCode, loc, b, want)
	}
	if strings.HasPrefix(loc, "https://app.example.test") {
		// The front end's redirect: no code, state or token, and no referrer leaves.
		e.checkAnswer("front end redirect", loc)
		if p := resp.Header.Get("Referrer-Policy"); p != "no-referrer" {
			e.t.Errorf("callback Referrer-Policy %q", p)
		}
	} else if c := mustQuery(e.t, loc).Get("code"); c != "" {
		e.secrets = append(e.secrets, c)
	}
	return loc
}

func mustQuery(t *testing.T, u string) url.Values {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Query()
}

func (e *e2e) mintCode(grant string) string {
	e.t.Helper()
	resp, err := http.Post(e.fake.URL()+"/_fake/codes", "application/json", strings.NewReader(grant))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Code string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK || v.Code == "" {
		e.t.Fatalf("POST /_fake/codes: %d %v", resp.StatusCode, err)
	}
	e.secrets = append(e.secrets, v.Code)
	return v.Code
}

// tokenOf is the business token the fake issued for the number, and its PIN is noted
// as a secret too.
func (e *e2e) tokenOf(number string) string {
	e.t.Helper()
	for _, r := range e.fake.Registrations() {
		if r.PhoneNumberID == number {
			e.secrets = append(e.secrets, r.Token, "pin="+r.PIN, `"`+r.PIN+`"`)
			return r.Token
		}
	}
	e.t.Fatalf("number %s was never registered", number)
	return ""
}

func (e *e2e) account(tenant, number string) *account.Account {
	e.t.Helper()
	a, err := e.repo.Get(context.Background(), tenant, number)
	if err != nil {
		e.t.Fatalf("account %s/%s: %v", tenant, number, err)
	}
	return a
}

func (e *e2e) dump() string {
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

// checkAnswer fails the test when an answer or redirect holds a secret seen so far
// (tokens, codes, PINs, the app secret; states are only ever in the embedded-signup
// answer and the dialog URL, where they belong).
func (e *e2e) checkAnswer(what, s string) {
	answersMu.Lock()
	defer answersMu.Unlock()
	for _, tok := range e.fake.IssuedTokens() {
		if strings.Contains(s, tok) {
			e.t.Errorf("%s holds a business token", what)
		}
	}
	for _, sec := range e.secrets {
		if strings.HasPrefix(sec, "ey") {
			continue // the caller's own JWT is not secret from the caller
		}
		if sec != "" && strings.Contains(s, sec) {
			e.t.Errorf("%s holds a secret (%.6s…): %s", what, sec, s)
		}
	}
}

// checkLogs reads every log line of the run for tokens, codes, PINs, JWTs and secrets.
func (e *e2e) checkLogs() {
	logs := e.logs.String()
	if !strings.Contains(logs, "embedded signup connected") {
		e.t.Fatalf("no onboarding in the logs:\n%s", logs)
	}
	for _, tok := range e.fake.IssuedTokens() {
		e.secrets = append(e.secrets, tok)
	}
	for _, sec := range e.secrets {
		if sec != "" && strings.Contains(logs, sec) {
			e.t.Errorf("a secret (%.6s…) is in the logs", sec)
		}
	}
}

// checkKafka reads every record of every sends topic for tokens, codes and secrets.
func (e *e2e) checkKafka() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := 0
	for _, topic := range []string{queue.TopicSends, queue.TopicSendsRetry, queue.TopicSendsDLQ} {
		for p := range 3 {
			conn, err := kafka.DialLeader(ctx, "tcp", e.brokers[0], topic, p)
			if err != nil {
				e.t.Fatalf("dialing %s/%d: %v", topic, p, err)
			}
			last, err := conn.ReadLastOffset()
			if err != nil {
				e.t.Fatal(err)
			}
			if _, err := conn.Seek(0, kafka.SeekAbsolute); err != nil {
				e.t.Fatal(err)
			}
			for off := int64(0); off < last; {
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				m, err := conn.ReadMessage(10 << 20)
				if err != nil {
					if errors.Is(err, io.EOF) {
						break
					}
					e.t.Fatalf("reading %s/%d: %v", topic, p, err)
				}
				off = m.Offset + 1
				n++
				e.checkAnswer("kafka record of "+topic, string(m.Key)+string(m.Value))
			}
			conn.Close()
		}
	}
	if n == 0 {
		e.t.Fatal("no Kafka record to check")
	}
}
