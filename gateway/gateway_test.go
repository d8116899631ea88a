package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

var jwtSecret = []byte("test-secret-that-is-at-least-32-bytes-long!")

// Account fixtures: tenant-a owns 1001 (default, active), 1002 (token past its expiry),
// 1003 (needs_reconnect), 1004 (invalid), 1005 (status expired); tenant-b owns 2001;
// tenant-c owns nothing.
const (
	tenantA = "tenant-a"
	tenantB = "tenant-b"
	tenantC = "tenant-c"

	accessTokenA = "EAAG-meta-access-token-of-tenant-a-SECRET"
)

type env struct {
	base     string
	pool     *pgxpool.Pool
	repo     *account.Repository
	msgs     *message.Repository
	brokers  []string
	srv      *gateway.Server
	client   *http.Client
	accounts map[string]*account.Account
}

type envConfig struct {
	brokers        []string // nil: start an embedded broker
	publishTimeout time.Duration
	readyChecks    func(e *env) []gateway.ReadyCheck
}

// testKeys returns a fresh token key spec and the key ring made of it.
func testKeys(t testing.TB) (spec string, keys *secret.KeyRing) {
	t.Helper()
	spec, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err = secret.ParseKeyRing([]string{spec})
	if err != nil {
		t.Fatal(err)
	}
	return spec, keys
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	ctx := context.Background()
	dbURL, pool := storetest.New(t)
	_, keys := testKeys(t)
	e := &env{pool: pool, repo: account.NewRepository(pool, keys), msgs: message.NewRepository(pool), accounts: map[string]*account.Account{}}

	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(60 * 24 * time.Hour)
	for _, in := range []account.UpsertInput{
		{TenantID: tenantA, WABAID: "102290129340398", PhoneNumberID: "1001", AccessToken: accessTokenA, TokenExpiresAt: &future, IsDefault: true},
		{TenantID: tenantA, WABAID: "102290129340398", PhoneNumberID: "1002", AccessToken: "tok-1002", TokenExpiresAt: &past},
		{TenantID: tenantA, WABAID: "102290129340398", PhoneNumberID: "1003", AccessToken: "tok-1003"},
		{TenantID: tenantA, WABAID: "102290129340398", PhoneNumberID: "1004", AccessToken: "tok-1004"},
		{TenantID: tenantA, WABAID: "102290129340398", PhoneNumberID: "1005", AccessToken: "tok-1005"},
		{TenantID: tenantB, WABAID: "102290129340399", PhoneNumberID: "2001", AccessToken: "tok-2001", IsDefault: true},
	} {
		a, err := e.repo.Upsert(ctx, in)
		if err != nil {
			t.Fatalf("upserting %s: %v", in.PhoneNumberID, err)
		}
		e.accounts[in.PhoneNumberID] = a
	}
	for pn, st := range map[string]account.TokenStatus{"1003": account.StatusNeedsReconnect, "1004": account.StatusInvalid, "1005": account.StatusExpired} {
		if err := e.repo.SetTokenStatus(ctx, e.accounts[pn].ID, st, "test"); err != nil {
			t.Fatal(err)
		}
	}

	resolver, err := account.NewResolver(e.repo, account.ResolverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(resolver.Close)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = resolver.Listen(lctx, dbURL) }()
	t.Cleanup(func() { cancel(); <-done })

	e.brokers = cfg.brokers
	if e.brokers == nil {
		broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 3, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(broker.Close)
		e.brokers = broker.Addrs()
	}
	writer, err := queue.NewProducer(queue.ProducerConfig{Cluster: queue.Cluster{Brokers: e.brokers}, Topic: queue.TopicSends, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Close() })

	verifier, err := auth.NewVerifier(auth.Config{HMACSecret: jwtSecret, Leeway: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	opts := gateway.Options{
		Verifier:       verifier,
		Resolver:       resolver,
		Messages:       e.msgs,
		Sends:          writer,
		PublishTimeout: cfg.publishTimeout,
		TenantClaim:    "tenantId",
		Logger:         quiet,
	}
	if cfg.readyChecks != nil {
		opts.ReadyChecks = cfg.readyChecks(e)
	}
	srv, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.base = "http://" + ln.Addr().String()
	e.client = &http.Client{Timeout: 15 * time.Second}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

func token(t testing.TB, tenant string) string {
	t.Helper()
	tok, err := auth.IssueHS256(jwtSecret, "tenantId", tenant, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
	path   string // the request's path, without the query
}

// errorCode is the stable code of an error answer, in either shape.
func (r response) errorCode() string {
	var v struct {
		Error struct {
			Code      any `json:"code"`
			ErrorData struct {
				AerogateCode string `json:"aerogate_code"`
			} `json:"error_data"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.body, &v)
	if s, ok := v.Error.Code.(string); ok {
		return s
	}
	return v.Error.ErrorData.AerogateCode
}

// metaError is the Graph API error body.
type metaErrorBody struct {
	Error struct {
		Message      string `json:"message"`
		Type         string `json:"type"`
		Code         *int   `json:"code"`
		ErrorSubcode int    `json:"error_subcode"`
		IsTransient  bool   `json:"is_transient"`
		ErrorData    struct {
			MessagingProduct string `json:"messaging_product"`
			Details          string `json:"details"`
			AerogateCode     string `json:"aerogate_code"`
		} `json:"error_data"`
		FBTraceID string `json:"fbtrace_id"`
	} `json:"error"`
}

// withoutRequestID drops the request id so two error bodies can be compared.
func (r response) withoutRequestID(t *testing.T) string {
	t.Helper()
	var v map[string]map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, r.body)
	}
	delete(v["error"], "request_id")
	delete(v["error"], "fbtrace_id")
	b, _ := json.Marshal(v)
	return string(b)
}

func (e *env) do(t *testing.T, method, path, bearer string, body []byte, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b, req.URL.Path}
}

func textBody(extra string) []byte {
	return []byte(`{"messaging_product":"whatsapp","to":"+15551230000","type":"text","text":{"body":"hello"}` + extra + `}`)
}

// checkError asserts an error answer: status, code, JSON shape, request id, and that
// no secret leaked into it. status and code are the /v1 answer's; on the
// Cloud-API-compatible path the answer is checked in Meta's shape instead, with the
// status metaErrorOf gives (TestMetaErrorShape pins that mapping down).
func checkError(t *testing.T, r response, status int, code string, secrets ...string) {
	t.Helper()
	if gateway.OnGraphPath(r.path) {
		checkMetaError(t, r, gateway.MetaStatus(status, code), code, secrets...)
		return
	}
	if r.status != status || r.errorCode() != code {
		t.Fatalf("got %d %s, want %d with code %s", r.status, r.body, status, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var v struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil || v.Error.Message == "" || v.Error.RequestID == "" {
		t.Errorf("error body %s lacks code/message/request_id (%v)", r.body, err)
	}
	if v.Error.RequestID != r.header.Get("X-Request-Id") {
		t.Errorf("request_id %q differs from X-Request-Id %q", v.Error.RequestID, r.header.Get("X-Request-Id"))
	}
	for _, s := range secrets {
		if s != "" && (bytes.Contains(r.body, []byte(s)) || strings.Contains(fmt.Sprint(r.header), s)) {
			t.Errorf("answer leaks a secret: %s", r.body)
		}
	}
}

// checkMetaError asserts an answer in the Graph API's error shape: the status, the
// stable code in error_data.aerogate_code, message, type and a numeric code, fbtrace_id
// equal to the request id, and no secret in it.
func checkMetaError(t *testing.T, r response, status int, code string, secrets ...string) metaErrorBody {
	t.Helper()
	var v metaErrorBody
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, r.body)
	}
	if r.status != status || v.Error.ErrorData.AerogateCode != code {
		t.Fatalf("got %d %s, want %d with aerogate_code %s", r.status, r.body, status, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if v.Error.Message == "" || v.Error.Type == "" || v.Error.Code == nil || *v.Error.Code <= 0 ||
		v.Error.ErrorData.MessagingProduct != "whatsapp" || v.Error.ErrorData.Details == "" {
		t.Errorf("error body %s lacks Meta's fields", r.body)
	}
	if v.Error.FBTraceID == "" || v.Error.FBTraceID != r.header.Get("X-Request-Id") {
		t.Errorf("fbtrace_id %q differs from X-Request-Id %q", v.Error.FBTraceID, r.header.Get("X-Request-Id"))
	}
	for _, s := range secrets {
		if s != "" && (bytes.Contains(r.body, []byte(s)) || strings.Contains(fmt.Sprint(r.header), s)) {
			t.Errorf("answer leaks a secret: %s", r.body)
		}
	}
	return v
}

func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGateway(t *testing.T) {
	e := newEnv(t, envConfig{})
	tokA, tokB, tokC := token(t, tenantA), token(t, tenantB), token(t, tenantC)

	t.Run("auth rejections", func(t *testing.T) {
		exp := time.Now().Add(time.Hour).Unix()
		b64 := base64.RawURLEncoding.EncodeToString
		expired := signed(t, jwt.SigningMethodHS256, jwtSecret, jwt.MapClaims{"tenantId": tenantA, "exp": time.Now().Add(-time.Hour).Unix()})
		tests := []struct {
			name   string
			header string
		}{
			{"missing", ""},
			{"not bearer", "Basic dXNlcjpwYXNz"},
			{"empty bearer", "Bearer "},
			{"malformed", "Bearer not-a-jwt"},
			{"garbage segments", "Bearer a.b.c"},
			{"expired", "Bearer " + expired},
			{"wrongly signed", "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("another-secret-that-is-32-bytes-long!!"), jwt.MapClaims{"tenantId": tenantA, "exp": exp})},
			{"alg none", "Bearer " + b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64([]byte(fmt.Sprintf(`{"tenantId":%q,"exp":%d}`, tenantA, exp))) + "."},
			{"alg swapped to HS512", "Bearer " + signed(t, jwt.SigningMethodHS512, jwtSecret, jwt.MapClaims{"tenantId": tenantA, "exp": exp})},
			{"alg header RS256 over an HMAC signature", "Bearer " + swapAlg(t, signed(t, jwt.SigningMethodHS256, jwtSecret, jwt.MapClaims{"tenantId": tenantA, "exp": exp}), "RS256")},
			{"no exp", "Bearer " + signed(t, jwt.SigningMethodHS256, jwtSecret, jwt.MapClaims{"tenantId": tenantA})},
			{"no tenant", "Bearer " + signed(t, jwt.SigningMethodHS256, jwtSecret, jwt.MapClaims{"exp": exp})},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				for _, route := range []struct{ method, path string }{
					{"POST", "/v1/messages"}, {"POST", "/v22.0/1001/messages"}, {"GET", "/v1/messages/7c9e6679-7425-40de-944b-e07cc9f1f5a1"},
				} {
					hdr := map[string]string{}
					if tc.header != "" {
						hdr["Authorization"] = tc.header
					}
					r := e.do(t, route.method, route.path, "", textBody(""), hdr)
					checkError(t, r, http.StatusUnauthorized, "unauthorized", strings.TrimPrefix(tc.header, "Bearer "))
					if r.header.Get("WWW-Authenticate") == "" {
						t.Error("401 without WWW-Authenticate")
					}
				}
			})
		}
	})

	t.Run("bad bodies", func(t *testing.T) {
		tests := []struct {
			name   string
			body   string
			status int
			code   string
		}{
			{"not json", `hello`, 400, "invalid_json"},
			{"empty", ``, 400, "invalid_json"},
			{"json array", `[]`, 400, "invalid_json"},
			{"wrong messaging_product", `{"messaging_product":"sms","to":"15551234567","type":"text","text":{"body":"x"}}`, 400, "invalid_messaging_product"},
			{"missing to", `{"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}`, 400, "invalid_to"},
			{"non-numeric to", `{"messaging_product":"whatsapp","to":"call-me","type":"text","text":{"body":"x"}}`, 400, "invalid_to"},
			{"unknown type", `{"messaging_product":"whatsapp","to":"15551234567","type":"fax","fax":{}}`, 400, "invalid_type"},
			{"missing type object", `{"messaging_product":"whatsapp","to":"15551234567","type":"image"}`, 400, "invalid_message_object"},
			{"duplicate field", `{"messaging_product":"whatsapp","to":"15551234567","to":"2","type":"text","text":{"body":"x"}}`, 400, "duplicate_field"},
			{"bad phone_number_id", `{"messaging_product":"whatsapp","phone_number_id":"a/b","to":"15551234567","type":"text","text":{"body":"x"}}`, 400, "invalid_phone_number_id"},
			{"dev phone_number_id", `{"messaging_product":"whatsapp","phone_number_id":"dev-1","to":"15551234567","type":"text","text":{"body":"x"}}`, 400, "invalid_phone_number_id"},
			{"text of 4,097 characters", `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat("ü", 4097) + `"}}`, 400, "invalid_text_body"},
			{"to of 16 digits", `{"messaging_product":"whatsapp","to":"+1234 5678 9012 3456","type":"text","text":{"body":"x"}}`, 400, "invalid_to"},
			{"over the send limit", `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat("x", 64<<10) + `"}}`, 413, "body_too_large"},
			{"over every limit", `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat("x", 3<<20) + `"}}`, 413, "body_too_large"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				for _, path := range []string{"/v1/messages", "/v22.0/1001/messages"} {
					r := e.do(t, "POST", path, tokA, []byte(tc.body), nil)
					checkError(t, r, tc.status, tc.code, tokA)
				}
			})
		}
		t.Run("bad idempotency key", func(t *testing.T) {
			r := e.do(t, "POST", "/v1/messages", tokA, textBody(""), map[string]string{"Idempotency-Key": strings.Repeat("k", 256)})
			checkError(t, r, 400, "invalid_idempotency_key", tokA)
		})
	})

	t.Run("cross-tenant and unknown numbers", func(t *testing.T) {
		foreign := e.do(t, "POST", "/v1/messages", tokA, textBody(`,"phone_number_id":"2001"`), nil)
		unknown := e.do(t, "POST", "/v1/messages", tokA, textBody(`,"phone_number_id":"9999"`), nil)
		checkError(t, foreign, 404, "account_not_found", tokA)
		checkError(t, unknown, 404, "account_not_found", tokA)
		if a, b := foreign.withoutRequestID(t), unknown.withoutRequestID(t); a != b {
			t.Errorf("foreign and unknown numbers answer differently:\n%s\n%s", a, b)
		}
		gForeign := e.do(t, "POST", "/v22.0/2001/messages", tokA, textBody(""), nil)
		gUnknown := e.do(t, "POST", "/v22.0/9999/messages", tokA, textBody(""), nil)
		checkError(t, gForeign, 404, "account_not_found")
		if a, b := gForeign.withoutRequestID(t), gUnknown.withoutRequestID(t); a != b {
			t.Errorf("graph path: foreign and unknown numbers answer differently:\n%s\n%s", a, b)
		}
		checkError(t, e.do(t, "POST", "/v1/messages", tokC, textBody(""), nil), 404, "account_not_found")
	})

	t.Run("tenantId must match the token", func(t *testing.T) {
		tests := []struct {
			name, path string
			body       []byte
			method     string
			status     int
		}{
			{"query mismatch", "/v1/messages?tenantId=" + tenantB, textBody(""), "POST", 403},
			{"empty query value", "/v1/messages?tenantId=", textBody(""), "POST", 403},
			{"body mismatch", "/v1/messages", textBody(`,"tenantId":"` + tenantB + `"`), "POST", 403},
			{"graph path query mismatch", "/v22.0/1001/messages?tenantId=" + tenantB, textBody(""), "POST", 403},
			{"graph path body mismatch", "/v22.0/1001/messages", textBody(`,"tenantId":"` + tenantB + `"`), "POST", 403},
			{"get query mismatch", "/v1/messages/7c9e6679-7425-40de-944b-e07cc9f1f5a1?tenantId=" + tenantB, nil, "GET", 403},
			{"query equal", "/v1/messages?tenantId=" + tenantA, textBody(""), "POST", 202},
			{"body equal", "/v1/messages", textBody(`,"tenantId":"` + tenantA + `"`), "POST", 202},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(t, tc.method, tc.path, tokA, tc.body, nil)
				if tc.status == 403 {
					checkError(t, r, 403, "tenant_mismatch", tokA)
				} else if r.status != tc.status {
					t.Fatalf("got %d %s, want %d", r.status, r.body, tc.status)
				}
			})
		}
	})

	t.Run("unusable accounts", func(t *testing.T) {
		for _, tc := range []struct{ pn, code string }{
			{"1002", "account_token_expired"},
			{"1005", "account_token_expired"},
			{"1003", "account_needs_reconnect"},
			{"1004", "account_needs_reconnect"},
		} {
			t.Run(tc.pn, func(t *testing.T) {
				checkError(t, e.do(t, "POST", "/v1/messages", tokA, textBody(`,"phone_number_id":"`+tc.pn+`"`), nil), 409, tc.code, tokA)
				checkError(t, e.do(t, "POST", "/v22.0/"+tc.pn+"/messages", tokA, textBody(""), nil), 409, tc.code, tokA)
			})
		}
	})

	t.Run("idempotency", func(t *testing.T) {
		send := func(tok, key string) string {
			var hdr map[string]string
			if key != "" {
				hdr = map[string]string{"Idempotency-Key": key}
			}
			r := e.do(t, "POST", "/v1/messages", tok, textBody(""), hdr)
			if r.status != 202 {
				t.Fatalf("send: %d %s", r.status, r.body)
			}
			var v struct{ ID, Status string }
			if err := json.Unmarshal(r.body, &v); err != nil || v.Status != "accepted" || len(v.ID) != 36 {
				t.Fatalf("202 body %s", r.body)
			}
			return v.ID
		}
		a1, a2 := send(tokA, "order-42"), send(tokA, "order-42")
		b1 := send(tokB, "order-42")
		a3 := send(tokA, "order-43")
		n1, n2 := send(tokA, ""), send(tokA, "")
		if a1 != a2 {
			t.Errorf("same key, same tenant: ids %s and %s differ", a1, a2)
		}
		if a1 == b1 {
			t.Errorf("same key, other tenant: same id %s", a1)
		}
		if a1 == a3 || n1 == n2 {
			t.Errorf("different keys or no key share an id: %s %s %s %s", a1, a3, n1, n2)
		}
	})

	t.Run("envelope on wa.sends", func(t *testing.T) {
		const key = "envelope-check-1"
		r := e.do(t, "POST", "/v1/messages", tokA, textBody(`,"phone_number_id":"1001"`), map[string]string{"Idempotency-Key": key})
		if r.status != 202 {
			t.Fatalf("send: %d %s", r.status, r.body)
		}
		var v struct{ ID string }
		_ = json.Unmarshal(r.body, &v)

		msg := readEnvelope(t, e.brokers, v.ID)
		if string(msg.Key) != tenantA {
			t.Errorf("kafka key = %q, want the tenant id %q", msg.Key, tenantA)
		}
		for _, s := range []string{accessTokenA, tokA, "tok-2001"} {
			if bytes.Contains(msg.Value, []byte(s)) || bytes.Contains(msg.Key, []byte(s)) {
				t.Fatalf("a token travels on wa.sends: %s", msg.Value)
			}
			for _, h := range msg.Headers {
				if bytes.Contains(h.Value, []byte(s)) {
					t.Fatalf("a token travels in a kafka header")
				}
			}
		}
		env, err := queue.Decode(msg.Value)
		if err != nil {
			t.Fatalf("queue.Decode: %v: %s", err, msg.Value)
		}
		want := queue.Envelope{ID: v.ID, TenantID: tenantA, AccountID: e.accounts["1001"].ID, PhoneNumberID: "1001", Recipient: "15551230000", IdempotencyKey: key}
		if env.ID != want.ID || env.TenantID != want.TenantID || env.AccountID != want.AccountID ||
			env.PhoneNumberID != want.PhoneNumberID || env.Recipient != want.Recipient || env.IdempotencyKey != want.IdempotencyKey {
			t.Errorf("envelope = %+v, want %+v", env, want)
		}
		if time.Since(env.AcceptedAt) > time.Minute || env.AcceptedAt.IsZero() {
			t.Errorf("accepted_at = %v", env.AcceptedAt)
		}
		var payload map[string]any
		if err := json.Unmarshal(env.Payload, &payload); err != nil {
			t.Fatal(err)
		}
		if _, ok := payload["phone_number_id"]; ok || payload["to"] != "15551230000" || payload["type"] != "text" || payload["messaging_product"] != "whatsapp" {
			t.Errorf("payload = %s, want the Cloud API body without phone_number_id, to as digits", env.Payload)
		}
	})

	t.Run("urgent sends", func(t *testing.T) {
		tests := []struct {
			name   string
			path   string
			body   []byte
			header map[string]string
			urgent bool
		}{
			{"body field", "/v1/messages", textBody(`,"priority":"urgent"`), nil, true},
			{"header", "/v1/messages", textBody(""), map[string]string{"X-Aerogate-Priority": "urgent"}, true},
			{"header on the cloud api path", "/v22.0/1001/messages", textBody(""), map[string]string{"X-Aerogate-Priority": "urgent"}, true},
			{"normal", "/v1/messages", textBody(`,"priority":"normal"`), map[string]string{"X-Aerogate-Priority": "normal"}, false},
			{"neither", "/v1/messages", textBody(""), nil, false},
		}
		for _, tc := range tests {
			r := e.do(t, "POST", tc.path, tokA, tc.body, tc.header)
			if r.status != 202 && r.status != 200 {
				t.Fatalf("%s: %d %s", tc.name, r.status, r.body)
			}
			var v struct {
				ID       string
				Messages []struct{ ID string }
			}
			_ = json.Unmarshal(r.body, &v)
			if v.ID == "" && len(v.Messages) == 1 {
				v.ID = v.Messages[0].ID
			}
			env, err := queue.Decode(readEnvelope(t, e.brokers, v.ID).Value)
			if err != nil {
				t.Fatal(err)
			}
			if env.Urgent() != tc.urgent {
				t.Errorf("%s: envelope priority %q, want urgent %v", tc.name, env.Priority, tc.urgent)
			}
			if bytes.Contains(env.Payload, []byte("priority")) {
				t.Errorf("%s: priority forwarded to Meta: %s", tc.name, env.Payload)
			}
		}
		checkError(t, e.do(t, "POST", "/v1/messages", tokA, textBody(`,"priority":"high"`), nil), 400, "invalid_priority")
		checkError(t, e.do(t, "POST", "/v1/messages", tokA, textBody(""), map[string]string{"X-Aerogate-Priority": "now"}), 400, "invalid_priority")
	})

	t.Run("graph compatible path", func(t *testing.T) {
		r := e.do(t, "POST", "/v22.0/1001/messages", tokA, textBody(""), nil)
		if r.status != 200 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		var v struct {
			MessagingProduct string `json:"messaging_product"`
			Contacts         []struct {
				Input string `json:"input"`
				WaID  string `json:"wa_id"`
			} `json:"contacts"`
			Messages []struct {
				ID            string `json:"id"`
				MessageStatus string `json:"message_status"`
			} `json:"messages"`
		}
		dec := json.NewDecoder(bytes.NewReader(r.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("response %s: %v", r.body, err)
		}
		if v.MessagingProduct != "whatsapp" || len(v.Contacts) != 1 || v.Contacts[0].Input != "+15551230000" ||
			v.Contacts[0].WaID != "15551230000" || len(v.Messages) != 1 || len(v.Messages[0].ID) != 36 ||
			v.Messages[0].MessageStatus != "accepted" {
			t.Fatalf("response = %s", r.body)
		}
		got := e.waitMessage(t, tenantA, v.Messages[0].ID)
		if got.PhoneNumberID != "1001" {
			t.Errorf("recorded phone_number_id = %s", got.PhoneNumberID)
		}

		checkError(t, e.do(t, "POST", "/22.0/1001/messages", tokA, textBody(""), nil), 400, "invalid_version")
		checkError(t, e.do(t, "POST", "/v22.0/dev-1/messages", tokA, textBody(""), nil), 400, "invalid_phone_number_id")
		checkError(t, e.do(t, "POST", "/v22.0/1001/messages", tokA, textBody(`,"phone_number_id":"1002"`), nil), 400, "phone_number_id_mismatch")
		if r := e.do(t, "POST", "/v22.0/1001/messages", tokA, textBody(`,"phone_number_id":"1001"`), nil); r.status != 200 {
			t.Errorf("equal phone_number_id in path and body: %d %s", r.status, r.body)
		}
	})

	t.Run("recipient formats and the text limit", func(t *testing.T) {
		long := strings.Repeat("ü", 4096) // 4,096 characters, 8,192 bytes
		for _, path := range []string{"/v1/messages", "/v22.0/1001/messages"} {
			r := e.do(t, "POST", path, tokA, []byte(`{"messaging_product":"whatsapp","to":"+91 98765 43210","type":"text","text":{"body":"`+long+`"}}`), nil)
			if r.status != 200 && r.status != 202 {
				t.Fatalf("%s with 4,096 characters: %d %s", path, r.status, r.body)
			}
			var v struct {
				ID       string
				Contacts []struct {
					Input string `json:"input"`
					WaID  string `json:"wa_id"`
				}
				Messages []struct{ ID string }
			}
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Fatal(err)
			}
			if path != "/v1/messages" {
				if len(v.Contacts) != 1 || v.Contacts[0].Input != "+91 98765 43210" || v.Contacts[0].WaID != "919876543210" || len(v.Messages) != 1 {
					t.Fatalf("Cloud API answer %s", r.body)
				}
				v.ID = v.Messages[0].ID
			}
			env, err := queue.Decode(readEnvelope(t, e.brokers, v.ID).Value)
			if err != nil {
				t.Fatal(err)
			}
			var payload struct {
				To   string `json:"to"`
				Text struct {
					Body string `json:"body"`
				} `json:"text"`
			}
			if err := json.Unmarshal(env.Payload, &payload); err != nil {
				t.Fatal(err)
			}
			if env.Recipient != "919876543210" || payload.To != "919876543210" || payload.Text.Body != long {
				t.Errorf("%s: envelope to %q, payload to %q, body intact %v", path, env.Recipient, payload.To, payload.Text.Body == long)
			}
		}
	})

	t.Run("get message", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/messages", tokA, textBody(""), nil)
		var v struct{ ID string }
		_ = json.Unmarshal(r.body, &v)
		e.waitMessage(t, tenantA, v.ID)

		own := e.do(t, "GET", "/v1/messages/"+v.ID, tokA, nil, nil)
		if own.status != 200 {
			t.Fatalf("own message: %d %s", own.status, own.body)
		}
		var m map[string]any
		if err := json.Unmarshal(own.body, &m); err != nil {
			t.Fatal(err)
		}
		if m["id"] != v.ID || m["status"] != "accepted" || m["phone_number_id"] != "1001" || m["to"] != "15551230000" ||
			m["attempts"] != float64(0) || m["accepted_at"] == nil || m["error"] != nil {
			t.Errorf("own message = %s", own.body)
		}

		other := e.do(t, "GET", "/v1/messages/"+v.ID, tokB, nil, nil)
		unknown := e.do(t, "GET", "/v1/messages/7c9e6679-7425-40de-944b-e07cc9f1f5a1", tokB, nil, nil)
		malformed := e.do(t, "GET", "/v1/messages/not-a-uuid", tokB, nil, nil)
		for _, r := range []response{other, unknown, malformed} {
			checkError(t, r, 404, "message_not_found", tokB)
			if r.withoutRequestID(t) != other.withoutRequestID(t) {
				t.Errorf("404 bodies differ: %s vs %s", r.body, other.body)
			}
		}

		// A failed message shows Meta's code and title; a sent one its wamid.
		if _, err := e.pool.Exec(context.Background(), `UPDATE messages SET status = 'failed', attempts = 2,
			error_code = 131026, error_title = 'Message undeliverable' WHERE id = $1`, v.ID); err != nil {
			t.Fatal(err)
		}
		failed := e.do(t, "GET", "/v1/messages/"+v.ID, tokA, nil, nil)
		var f struct {
			Status   string `json:"status"`
			Attempts int    `json:"attempts"`
			Error    *struct {
				Code  int    `json:"code"`
				Title string `json:"title"`
			} `json:"error"`
		}
		if err := json.Unmarshal(failed.body, &f); err != nil || f.Status != "failed" || f.Attempts != 2 ||
			f.Error == nil || f.Error.Code != 131026 || f.Error.Title != "Message undeliverable" {
			t.Errorf("failed message = %s", failed.body)
		}
		r = e.do(t, "POST", "/v1/messages", tokA, textBody(""), nil)
		_ = json.Unmarshal(r.body, &v)
		e.waitMessage(t, tenantA, v.ID)
		if _, err := e.pool.Exec(context.Background(), `UPDATE messages SET status = 'sent', attempts = 1,
			wamid = 'wamid.HBgL', sent_at = now() WHERE id = $1`, v.ID); err != nil {
			t.Fatal(err)
		}
		sent := e.do(t, "GET", "/v1/messages/"+v.ID, tokA, nil, nil)
		m = nil
		if err := json.Unmarshal(sent.body, &m); err != nil || m["status"] != "sent" || m["wamid"] != "wamid.HBgL" || m["sent_at"] == nil {
			t.Errorf("sent message = %s", sent.body)
		}

		// A message waiting in its number's queue is queued, with when it should go.
		r = e.do(t, "POST", "/v1/messages", tokA, textBody(""), nil)
		_ = json.Unmarshal(r.body, &v)
		e.waitMessage(t, tenantA, v.ID)
		if _, err := e.pool.Exec(context.Background(), `UPDATE messages SET status = 'queued',
			expected_send_at = '2031-01-02T03:04:05Z' WHERE id = $1`, v.ID); err != nil {
			t.Fatal(err)
		}
		queued := e.do(t, "GET", "/v1/messages/"+v.ID, tokA, nil, nil)
		m = nil
		if err := json.Unmarshal(queued.body, &m); err != nil || m["status"] != "queued" || m["expected_send_at"] != "2031-01-02T03:04:05Z" {
			t.Errorf("queued message = %s", queued.body)
		}
		if _, err := e.pool.Exec(context.Background(), `UPDATE messages SET status = 'sending' WHERE id = $1`, v.ID); err != nil {
			t.Fatal(err)
		}
		if m = nil; json.Unmarshal(e.do(t, "GET", "/v1/messages/"+v.ID, tokA, nil, nil).body, &m) != nil || m["expected_send_at"] != nil {
			t.Errorf("a message no longer queued still shows an expected send time: %v", m)
		}
	})

	t.Run("request id", func(t *testing.T) {
		r := e.do(t, "GET", "/healthz", "", nil, map[string]string{"X-Request-Id": "client-req-42"})
		if r.header.Get("X-Request-Id") != "client-req-42" {
			t.Errorf("sane X-Request-Id not echoed: %q", r.header.Get("X-Request-Id"))
		}
		r = e.do(t, "GET", "/healthz", "", nil, map[string]string{"X-Request-Id": "bad id with spaces"})
		if got := r.header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
			t.Errorf("insane X-Request-Id kept or none generated: %q", got)
		}
		a := e.do(t, "GET", "/healthz", "", nil, nil).header.Get("X-Request-Id")
		b := e.do(t, "GET", "/healthz", "", nil, nil).header.Get("X-Request-Id")
		if a == "" || a == b {
			t.Errorf("generated request ids %q %q", a, b)
		}
	})

	t.Run("routing errors are JSON", func(t *testing.T) {
		checkError(t, e.do(t, "GET", "/nope", "", nil, nil), 404, "not_found")
		huge := strings.Repeat("a", 12<<10)
		checkError(t, e.do(t, "POST", "/v1/messages", huge, textBody(""), nil), 431, "headers_too_large", huge)
		checkError(t, e.do(t, "DELETE", "/v1/messages", tokA, nil, nil), 405, "method_not_allowed")
	})

	t.Run("health", func(t *testing.T) {
		if r := e.do(t, "GET", "/healthz", "", nil, nil); r.status != 200 {
			t.Errorf("/healthz = %d", r.status)
		}
		if r := e.do(t, "GET", "/readyz", "", nil, nil); r.status != 200 {
			t.Errorf("/readyz with no checks = %d %s", r.status, r.body)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		before := e.srv.Metrics().Accepted
		if r := e.do(t, "POST", "/v1/messages", tokA, textBody(""), nil); r.status != 202 {
			t.Fatalf("send: %d %s", r.status, r.body)
		}
		if m := e.srv.Metrics(); m.PanicsRecovered != 0 || m.PublishErrors != 0 || m.Accepted != before+1 {
			t.Errorf("metrics = %+v (accepted before %d)", m, before)
		}
	})
}

func swapAlg(t *testing.T, tok, alg string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"JWT"}`))
	return strings.Join(parts, ".")
}

// waitMessage polls until the accepted record reached Postgres.
func (e *env) waitMessage(t *testing.T, tenant, id string) *message.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := e.msgs.Get(context.Background(), tenant, id)
		if err == nil {
			if m.Status != message.StatusAccepted {
				t.Errorf("status = %s, want accepted", m.Status)
			}
			return m
		}
		if !errors.Is(err, message.ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("message %s never recorded: %v", id, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readEnvelope reads wa.sends from the start until the message with id.
func readEnvelope(t *testing.T, brokers []string, id string) kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(queue.TopicSends)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: queue.TopicSends, Partition: p.ID, MaxWait: 50 * time.Millisecond})
		last, err := lastOffset(ctx, brokers[0], p.ID)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < last; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("reading partition %d: %v", p.ID, err)
			}
			if bytes.Contains(m.Value, []byte(`"id":"`+id+`"`)) {
				r.Close()
				return m
			}
		}
		r.Close()
	}
	t.Fatalf("message %s not found on %s", id, queue.TopicSends)
	return kafka.Message{}
}

func lastOffset(ctx context.Context, broker string, partition int) (int64, error) {
	conn, err := kafka.DialLeader(ctx, "tcp", broker, queue.TopicSends, partition)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ReadLastOffset()
}

// TestOversizedBodyRawClient sends a body far over every limit from a client that
// writes the whole request before it reads: it must read a 413 JSON answer, not a
// connection reset.
func TestOversizedBodyRawClient(t *testing.T) {
	e := newEnv(t, envConfig{})
	body := bytes.Repeat([]byte("x"), 6<<20)
	for i := range 3 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		head := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", token(t, tenantA), len(body))
		writeErr := make(chan error, 1)
		go func() {
			_, err := conn.Write(append([]byte(head), body...))
			writeErr <- err
		}()
		resp, err := http.ReadResponse(bufioReader(conn), nil)
		if err != nil {
			t.Fatalf("try %d: reading the answer to an oversized body: %v (write: %v)", i, err, <-writeErr)
		}
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		<-writeErr
		if resp.StatusCode != 413 || !bytes.Contains(b, []byte(`"code":"body_too_large"`)) {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
	}
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func readyChecks(e *env) []gateway.ReadyCheck {
	return []gateway.ReadyCheck{
		{Name: "postgres", Check: e.pool.Ping},
		{Name: "kafka", Check: queue.Cluster{Brokers: e.brokers}.Ping},
	}
}

// TestBrokerDown: with the broker stopped (or never there), a send gets 503
// queue_unavailable with Retry-After within the publish timeout, never a 202 and never a
// 504: the producer knows nothing reached a broker (its pooled connections are checked
// for a closed peer before a request goes out). /readyz names kafka as down.
func TestBrokerDown(t *testing.T) {
	closedPort := func(t *testing.T) []string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return []string{addr}
	}
	tests := []struct {
		name string
		// start returns the brokers and a func that takes them down after one send.
		start func(t *testing.T) (brokers []string, stop func())
	}{
		{"nothing listens", func(t *testing.T) ([]string, func()) { return closedPort(t), nil }},
		{"broker stopped after a send", func(t *testing.T) ([]string, func()) {
			b, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 1, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			stop := func() { once.Do(b.Close) }
			t.Cleanup(stop)
			return b.Addrs(), stop
		}},
	}
	const publishTimeout = time.Second
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			brokers, stop := tc.start(t)
			e := newEnv(t, envConfig{brokers: brokers, publishTimeout: publishTimeout, readyChecks: readyChecks})
			tok := token(t, tenantA)
			if stop != nil {
				if r := e.do(t, "POST", "/v1/messages", tok, textBody(""), nil); r.status != 202 {
					t.Fatalf("send while the broker is up: %d %s", r.status, r.body)
				}
				if r := e.do(t, "GET", "/readyz", "", nil, nil); r.status != 200 {
					t.Fatalf("/readyz while up: %d %s", r.status, r.body)
				}
				stop()
			}
			for _, path := range []string{"/v1/messages", "/v22.0/1001/messages"} {
				start := time.Now()
				// One key per route: a key is bound to its first request, route included.
				r := e.do(t, "POST", path, tok, textBody(""), map[string]string{"Idempotency-Key": "down-" + path})
				took := time.Since(start)
				checkError(t, r, 503, "queue_unavailable", tok)
				if r.header.Get("Retry-After") != "1" {
					t.Errorf("Retry-After = %q", r.header.Get("Retry-After"))
				}
				// Bounded by the publish timeout (plus generous slack for a loaded machine).
				if took > publishTimeout+4*time.Second {
					t.Errorf("503 took %v, want about the publish timeout %v", took, publishTimeout)
				}
			}
			r := e.do(t, "GET", "/readyz", "", nil, nil)
			var ready struct {
				Status string            `json:"status"`
				Checks map[string]string `json:"checks"`
				Down   []string          `json:"down"`
			}
			if err := json.Unmarshal(r.body, &ready); err != nil || r.status != 503 || ready.Checks["kafka"] != "down" ||
				ready.Checks["postgres"] != "ok" || len(ready.Down) != 1 || ready.Down[0] != "kafka" {
				t.Errorf("/readyz with kafka down = %d %s", r.status, r.body)
			}
			if m := e.srv.Metrics(); m.PublishErrors != 2 {
				t.Errorf("publish errors = %d, want 2", m.PublishErrors)
			}
		})
	}
}
