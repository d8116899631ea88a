package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/ratelimit"
)

var proxySecret = []byte("proxy-test-secret-at-least-32-bytes-long")

// seen is one request as the backend received it, complete.
type seen struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// backend is a real HTTP server standing in for the backend API. It records every
// request whose body it read to the end.
type backend struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests []seen
	started  atomic.Int64 // requests whose handler began
	delay    time.Duration
	health   atomic.Int32 // status of GET /health
}

func newBackend(t *testing.T) *backend {
	b := &backend{}
	b.health.Store(200)
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		w.WriteHeader(int(b.health.Load()))
		return
	}
	b.started.Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // an aborted upload: never a complete request
	}
	b.mu.Lock()
	b.requests = append(b.requests, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	b.mu.Unlock()
	switch {
	case b.delay > 0:
		time.Sleep(b.delay)
	case r.URL.Path == "/api/big":
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 512 { // 32 MiB, chunked
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "X-Backend-Hop")
	w.Header().Set("X-Backend-Hop", "must not reach the client")
	w.Header().Set("X-Backend", "yes")
	w.WriteHeader(201)
	fmt.Fprintf(w, `{"got":%d}`, len(body))
}

func (b *backend) take() []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.requests
	b.requests = nil
	return r
}

type proxyEnv struct {
	base   string
	client *http.Client
	srv    *gateway.Server
}

func startProxy(t *testing.T, opts gateway.ProxyOptions, limits *ratelimit.Limiter) *proxyEnv {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: proxySecret, HeaderClaims: []string{"sub", "roles"}})
	if err != nil {
		t.Fatal(err)
	}
	if opts.ClaimHeaders == nil {
		opts.ClaimHeaders = []gateway.ClaimHeader{{Claim: "sub", Header: "X-User-Id"}, {Claim: "roles", Header: "X-User-Roles"}}
	}
	srv, err := gateway.New(gateway.Options{
		Verifier: v, Resolver: noAccounts{}, Sends: nopPublisher{},
		MaxBodyBytes: 64 << 10, Proxy: opts, Limits: limits,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	c := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return &proxyEnv{base: "http://" + ln.Addr().String(), client: c, srv: srv}
}

type noAccounts struct{}

func (noAccounts) Resolve(context.Context, string, string) (*account.Account, error) {
	return nil, account.ErrNotFound
}

type nopPublisher struct{}

func (nopPublisher) WriteMessages(context.Context, ...kafka.Message) error { return nil }

func userToken(t testing.TB, tenant string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"tenantId": tenant, "sub": "user-7", "roles": []any{"agent", "viewer"},
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(proxySecret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *proxyEnv) do(t *testing.T, method, path string, body []byte, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func multipartOf(t testing.TB, fields ...[2]string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, f := range fields {
		fw, err := w.CreateFormField(f[0])
		if err != nil {
			t.Fatal(err)
		}
		fw.Write([]byte(f[1]))
	}
	w.Close()
	return buf.Bytes(), w.FormDataContentType()
}

// spoofHeaders are identity and forwarding headers a client might send to pass itself
// off as another tenant or user, in every spelling a backend might read.
func spoofHeaders(tok string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	h["X-Tenant-Id"] = []string{"other", "other2"}
	h["x-tenant-id"] = []string{"other3"}
	h["X_Tenant_Id"] = []string{"other4"}
	h["X-User-Id"] = []string{"admin"}
	h["X_User_Id"] = []string{"admin"}
	h["X-User-Roles"] = []string{"superadmin"}
	h.Set("X-Forwarded-For", "10.9.9.9")
	h.Set("X-Forwarded-Host", "evil.example")
	h.Set("X-Forwarded-Proto", "https")
	h.Set("Forwarded", "for=10.9.9.9;host=evil.example")
	h.Set("X-Real-Ip", "10.9.9.9")
	h.Set("Connection", "X-Hop-Custom")
	h.Set("X-Hop-Custom", "hop")
	h.Set("Proxy-Authorization", "Basic eDp5")
	h.Set("X-Request-Id", "req-abc-123")
	h.Set("X-Custom", "kept")
	return h
}

// TestProxyForwardsIdentityFromToken: for every method and body kind, the backend
// gets the request as sent (path, query, body, end-to-end headers) with the tenant and
// user only from the token, one copy of each identity header whatever the client sent,
// the forwarding headers from the connection, and no hop-by-hop headers.
func TestProxyForwardsIdentityFromToken(t *testing.T) {
	be := newBackend(t)
	e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{be.srv.URL}, ForwardAuthorization: true}, nil)
	tok := userToken(t, "acme")
	mp, mpType := multipartOf(t, [2]string{"name", "x"}, [2]string{"tenantId", "acme"})
	bodies := []struct {
		name, contentType string
		body              []byte
	}{
		{"none", "", nil},
		{"json", "application/json", []byte(`{"name":"c1","tenantId":"acme","nested":{"tenantId":"other"}}`)},
		{"form", "application/x-www-form-urlencoded", []byte("name=c1&tenantId=acme")},
		{"multipart", mpType, mp},
	}
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		for _, b := range bodies {
			if b.body == nil && method != "GET" && method != "DELETE" {
				continue
			}
			t.Run(method+"/"+b.name, func(t *testing.T) {
				h := spoofHeaders(tok)
				if b.contentType != "" {
					h.Set("Content-Type", b.contentType)
				}
				resp, body := e.do(t, method, "/api/campaigns/42?tenantId=acme&page=2", b.body, h)
				if resp.StatusCode != 201 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if resp.Header.Get("X-Backend") != "yes" || resp.Header.Get("X-Backend-Hop") != "" {
					t.Errorf("response headers: %v", resp.Header)
				}
				if got := resp.Header.Get("X-Request-Id"); got != "req-abc-123" {
					t.Errorf("request id %q", got)
				}
				reqs := be.take()
				if len(reqs) != 1 {
					t.Fatalf("backend saw %d requests", len(reqs))
				}
				r := reqs[0]
				if r.method != method || r.path != "/api/campaigns/42" || r.query != "tenantId=acme&page=2" || !bytes.Equal(r.body, b.body) {
					t.Errorf("backend got %s %s?%s body %q", r.method, r.path, r.query, r.body)
				}
				want := map[string]string{
					"x-tenant-id": "acme", "x-user-id": "user-7", "x-user-roles": "agent,viewer",
					"x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http",
					"x-forwarded-host": strings.TrimPrefix(e.base, "http://"),
					"x-request-id":     "req-abc-123", "x-custom": "kept", "authorization": "Bearer " + tok,
				}
				for k, vs := range r.header {
					key := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
					switch key {
					case "forwarded", "x-real-ip", "x-hop-custom", "proxy-authorization", "connection":
						t.Errorf("backend got %s: %q", k, vs)
					}
					if w, ok := want[key]; ok {
						if len(vs) != 1 || vs[0] != w || k != http.CanonicalHeaderKey(key) {
							t.Errorf("backend got %s: %q, want one %s: %q", k, vs, http.CanonicalHeaderKey(key), w)
						}
						delete(want, key)
					}
				}
				for k := range want {
					t.Errorf("backend did not get %s", k)
				}
			})
		}
	}
}

// TestProxyRefusesSpoofing: every way of naming another tenant in the query or body is
// refused before anything reaches the backend.
func TestProxyRefusesSpoofing(t *testing.T) {
	be := newBackend(t)
	e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{be.srv.URL}, ForwardAuthorization: true}, nil)
	tok := userToken(t, "acme")
	mpOther, mpType := multipartOf(t, [2]string{"name", "x"}, [2]string{"tenantId", "other"})
	mpBracket, mpType2 := multipartOf(t, [2]string{"tenantId[]", "other"})
	mpTwice, mpType3 := multipartOf(t, [2]string{"tenantId", "acme"}, [2]string{"tenantId", "acme"})
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name        string
		query       string
		contentType string
		encoding    string
		body        string
		status      int
		code        string
	}{
		{"query", "tenantId=other", "", "", "", 403, "tenant_mismatch"},
		{"query case", "TENANTID=other", "", "", "", 403, "tenant_mismatch"},
		{"query bracket", "tenantId[]=other", "", "", "", 403, "tenant_mismatch"},
		{"query encoded name", "tenant%49d=other", "", "", "", 403, "tenant_mismatch"},
		{"query second copy", "tenantId=acme&tenantId=other", "", "", "", 403, "tenant_mismatch"},
		{"query semicolon", "a=1;tenantId=other", "", "", "", 403, "tenant_mismatch"},
		{"query empty", "tenantId=", "", "", "", 403, "tenant_mismatch"},
		{"json", "", js, "", `{"tenantId":"other"}`, 403, "tenant_mismatch"},
		{"json case", "", js, "", `{"TenantID":"other"}`, 403, "tenant_mismatch"},
		{"json escaped key", "", js, "", `{"tenant\u0049d":"other"}`, 403, "tenant_mismatch"},
		{"json not a string", "", js, "", `{"tenantId":["other"]}`, 403, "tenant_mismatch"},
		{"json charset", "", "application/json; charset=utf-8", "", `{"tenantId":"other"}`, 403, "tenant_mismatch"},
		{"json suffix type", "", "application/vnd.api+json", "", `{"tenantId":"other"}`, 403, "tenant_mismatch"},
		{"json twice", "", js, "", `{"tenantId":"acme","tenantId":"acme"}`, 400, "duplicate_tenant_field"},
		{"json malformed", "", js, "", `{"tenantId":"acme",`, 400, "invalid_json"},
		{"json too deep", "", js, "", `{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, 400, "json_too_deep"},
		{"no content type json", "", "", "", `{"tenantId":"other"}`, 403, "tenant_mismatch"},
		{"no content type form", "", "", "", `tenantId=other`, 403, "tenant_mismatch"},
		{"form", "", form, "", "a=1&tenantId=other", 403, "tenant_mismatch"},
		{"form bracket", "", form, "", "tenantId%5B0%5D=other", 403, "tenant_mismatch"},
		{"form twice", "", form, "", "tenantId=acme&tenantId=acme", 400, "duplicate_tenant_field"},
		{"multipart", "", mpType, "", string(mpOther), 403, "tenant_mismatch"},
		{"multipart bracket", "", mpType2, "", string(mpBracket), 403, "tenant_mismatch"},
		{"multipart twice", "", mpType3, "", string(mpTwice), 400, "duplicate_tenant_field"},
		{"compressed", "", js, "gzip", "\x1f\x8b", 415, "unsupported_content_encoding"},
	} {
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			if tc.body == "" && method != "GET" || tc.body != "" && method == "GET" {
				continue
			}
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				h := http.Header{"Authorization": {"Bearer " + tok}}
				if tc.contentType != "" {
					h.Set("Content-Type", tc.contentType)
				}
				if tc.encoding != "" {
					h.Set("Content-Encoding", tc.encoding)
				}
				var body []byte
				if tc.body != "" {
					body = []byte(tc.body)
				}
				path := "/api/contacts"
				if tc.query != "" {
					path += "?" + tc.query
				}
				resp, b := e.do(t, method, path, body, h)
				var v struct{ Error struct{ Code string } }
				json.Unmarshal(b, &v)
				if resp.StatusCode != tc.status || v.Error.Code != tc.code {
					t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tc.status, tc.code)
				}
				if n := be.started.Load(); n != 0 {
					t.Fatalf("backend was reached (%d requests)", n)
				}
			})
		}
	}
}

// TestProxyStreamsLargeBodies: an upload many times http.max_body_bytes passes through
// whole; a large multipart upload whose tenant field names another tenant near its end
// is refused, and the backend never receives it complete; a 32 MiB response streams.
func TestProxyStreamsLargeBodies(t *testing.T) {
	be := newBackend(t)
	e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{be.srv.URL}}, nil)
	tok := userToken(t, "acme")
	h := http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/octet-stream"}}

	big := make([]byte, 8<<20) // 128 × the 64 KiB body limit
	rand.Read(big)
	resp, b := e.do(t, "PUT", "/api/media/upload", big, h)
	if resp.StatusCode != 201 {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	if r := be.take(); len(r) != 1 || !bytes.Equal(r[0].body, big) {
		t.Fatal("backend did not get the upload intact")
	}

	file := strings.Repeat("f", 4<<20)
	mpOK, ct := multipartOf(t, [2]string{"file", file}, [2]string{"tenantId", "acme"})
	resp, b = e.do(t, "POST", "/api/media", mpOK, http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {ct}})
	if resp.StatusCode != 201 {
		t.Fatalf("large multipart: %d %s", resp.StatusCode, b)
	}
	if r := be.take(); len(r) != 1 || !bytes.Equal(r[0].body, mpOK) {
		t.Fatal("backend did not get the multipart upload intact")
	}

	mpBad, ct := multipartOf(t, [2]string{"file", file}, [2]string{"tenantId", "other"})
	resp, b = e.do(t, "POST", "/api/media", mpBad, http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {ct}})
	if resp.StatusCode != 403 || !bytes.Contains(b, []byte("tenant_mismatch")) {
		t.Fatalf("spoofed large multipart: %d %s", resp.StatusCode, b)
	}
	time.Sleep(100 * time.Millisecond)
	if r := be.take(); len(r) != 0 {
		t.Fatalf("backend received the refused upload complete (%d bytes)", len(r[0].body))
	}

	resp, b = e.do(t, "GET", "/api/big", nil, http.Header{"Authorization": {"Bearer " + tok}})
	if resp.StatusCode != 200 || len(b) != 32<<20 {
		t.Fatalf("big response: %d, %d bytes", resp.StatusCode, len(b))
	}
}

// TestProxyFailures: a backend that is down answers 502 and one that is slow 504,
// both within the configured timeout and with the JSON error; a backend the health
// check finds failing gets no traffic while another is healthy; WebSocket upgrades are
// refused with 501; a request without a token never reaches the backend.
func TestProxyFailures(t *testing.T) {
	tok := userToken(t, "acme")
	auth := http.Header{"Authorization": {"Bearer " + tok}}
	const timeout = 300 * time.Millisecond

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String()
	ln.Close()
	slow := newBackend(t)
	slow.delay = 3 * time.Second
	for _, tc := range []struct {
		name     string
		upstream string
		status   int
		code     string
	}{
		{"down", down, 502, "bad_gateway"},
		{"slow", slow.srv.URL, 504, "upstream_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{tc.upstream}, Timeout: timeout}, nil)
			start := time.Now()
			resp, b := e.do(t, "POST", "/api/x", []byte(`{}`), http.Header{"Authorization": auth["Authorization"], "Content-Type": {"application/json"}})
			el := time.Since(start)
			if resp.StatusCode != tc.status || !bytes.Contains(b, []byte(`"code":"`+tc.code+`"`)) || resp.Header.Get("X-Request-Id") == "" {
				t.Fatalf("got %d %s", resp.StatusCode, b)
			}
			if el > timeout+time.Second {
				t.Fatalf("answered after %v, timeout %v", el, timeout)
			}
		})
	}

	t.Run("health check", func(t *testing.T) {
		sick, well := newBackend(t), newBackend(t)
		sick.health.Store(500)
		e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{sick.srv.URL, well.srv.URL},
			HealthPath: "/health", HealthInterval: 50 * time.Millisecond}, nil)
		time.Sleep(200 * time.Millisecond)
		for range 20 {
			if resp, b := e.do(t, "GET", "/api/x", nil, auth); resp.StatusCode != 201 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		}
		if n := sick.started.Load(); n != 0 {
			t.Fatalf("the failing upstream got %d requests", n)
		}
		well.health.Store(500)
		time.Sleep(200 * time.Millisecond)
		if resp, b := e.do(t, "GET", "/api/x", nil, auth); resp.StatusCode != 502 || !bytes.Contains(b, []byte("upstream_unavailable")) {
			t.Fatalf("all down: %d %s", resp.StatusCode, b)
		}
		sick.health.Store(200)
		time.Sleep(200 * time.Millisecond)
		if resp, _ := e.do(t, "GET", "/api/x", nil, auth); resp.StatusCode != 201 || sick.started.Load() != 1 {
			t.Fatalf("recovered upstream not used: %d", resp.StatusCode)
		}
	})

	t.Run("websocket and auth", func(t *testing.T) {
		be := newBackend(t)
		e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{be.srv.URL}}, nil)
		h := http.Header{"Authorization": auth["Authorization"], "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
		if resp, b := e.do(t, "GET", "/api/ws", nil, h); resp.StatusCode != 501 || !bytes.Contains(b, []byte("websocket_not_supported")) {
			t.Fatalf("websocket: %d %s", resp.StatusCode, b)
		}
		if resp, _ := e.do(t, "GET", "/api/x", nil, http.Header{"X-Tenant-Id": {"acme"}}); resp.StatusCode != 401 {
			t.Fatalf("no token: %d", resp.StatusCode)
		}
		// A CORS preflight goes through without a token, and without any identity.
		resp, _ := e.do(t, "OPTIONS", "/api/x", nil, http.Header{"Origin": {"https://app.example"},
			"Access-Control-Request-Method": {"POST"}, "X-Tenant-Id": {"other"}, "Authorization": {"Bearer " + tok}})
		if resp.StatusCode != 201 {
			t.Fatalf("preflight: %d", resp.StatusCode)
		}
		r := be.take()
		if len(r) != 1 || r[0].header.Get("X-Tenant-Id") != "" || r[0].header.Get("Authorization") != "" {
			t.Fatalf("preflight reached the backend as %+v", r)
		}
	})
}

// TestProxyAuthorizationStripped: with forwarding off, the backend never sees the token.
func TestProxyAuthorizationStripped(t *testing.T) {
	be := newBackend(t)
	e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{be.srv.URL + "/base/"}}, nil)
	resp, _ := e.do(t, "GET", "/api/x", nil, http.Header{"Authorization": {"Bearer " + userToken(t, "acme")}})
	if resp.StatusCode != 201 {
		t.Fatal(resp.StatusCode)
	}
	r := be.take()
	if len(r) != 1 || r[0].header.Get("Authorization") != "" || r[0].path != "/base/api/x" || r[0].header.Get("X-Tenant-Id") != "acme" {
		t.Fatalf("backend got %+v", r)
	}
}

// TestRateLimits: past its burst a tenant gets 429 with Retry-After and the RateLimit
// headers, on the API and on sends separately, while another tenant is served.
func TestRateLimits(t *testing.T) {
	be := newBackend(t)
	lim, err := ratelimit.New(ratelimit.Config{Default: ratelimit.Limits{
		API: ratelimit.Limit{RPS: 1, Burst: 3}, Send: ratelimit.Limit{RPS: 1, Burst: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{be.srv.URL}}, lim)
	acme := http.Header{"Authorization": {"Bearer " + userToken(t, "acme")}}
	for i := range 3 {
		resp, _ := e.do(t, "GET", "/api/x", nil, acme)
		if resp.StatusCode != 201 || resp.Header.Get("RateLimit-Policy") != `"api";q=3;w=3` ||
			resp.Header.Get("RateLimit") != fmt.Sprintf(`"api";r=%d;t=%d`, 2-i, i+1) {
			t.Fatalf("request %d: %d %q %q", i, resp.StatusCode, resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit"))
		}
	}
	resp, b := e.do(t, "GET", "/api/x", nil, acme)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || !bytes.Contains(b, []byte("rate_limited")) ||
		resp.Header.Get("RateLimit") != `"api";r=0;t=3` {
		t.Fatalf("over the limit: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	if n := len(be.take()); n != 3 {
		t.Fatalf("backend got %d requests", n)
	}
	if resp, _ := e.do(t, "GET", "/api/x", nil, http.Header{"Authorization": {"Bearer " + userToken(t, "globex")}}); resp.StatusCode != 201 {
		t.Fatalf("another tenant: %d", resp.StatusCode)
	}
	// Sends have their own bucket (the send itself then fails: there is no account).
	send := http.Header{"Authorization": acme["Authorization"], "Content-Type": {"application/json"}}
	msg := []byte(`{"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"x"}}`)
	if resp, _ := e.do(t, "POST", "/v1/messages", msg, send); resp.StatusCode == 429 {
		t.Fatal("first send limited")
	}
	if resp, _ := e.do(t, "POST", "/v1/messages", msg, send); resp.StatusCode != 429 || resp.Header.Get("RateLimit-Policy") != `"send";q=1;w=1` {
		t.Fatalf("second send: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestRateLimitAcrossInstances: two gateway instances sharing Redis hold one tenant to
// its rate together, within ±10%.
func TestRateLimitAcrossInstances(t *testing.T) {
	addr := "127.0.0.1:6379"
	if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
		t.Skipf("no Redis at %s", addr)
	} else {
		c.Close()
	}
	be := newBackend(t)
	const rps, burst = 100, 10
	tok := userToken(t, fmt.Sprintf("redis-%d", time.Now().UnixNano()))
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	const run = 3 * time.Second
	start := time.Now()
	for range 2 {
		lim, err := ratelimit.New(ratelimit.Config{Default: ratelimit.Limits{API: ratelimit.Limit{RPS: rps, Burst: burst}},
			RedisURL: "redis://" + addr + "/0", RedisTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lim.Close() })
		e := startProxy(t, gateway.ProxyOptions{Upstreams: []string{be.srv.URL}}, lim)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < run {
					req, _ := http.NewRequest("GET", e.base+"/api/x", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					resp, err := e.client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case 201:
						ok.Add(1)
					case 429:
						limited.Add(1)
					default:
						t.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	want := burst + rps*time.Since(start).Seconds()
	got := float64(ok.Load())
	t.Logf("two instances: %v allowed, %v refused in %v; limit %v", got, limited.Load(), time.Since(start), want)
	if limited.Load() == 0 || got < want*0.9 || got > want*1.1 {
		t.Fatalf("allowed %v, want %v ±10%%", got, want)
	}
}
