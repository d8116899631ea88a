package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime"
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
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/media"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

// Passthrough fixtures: tenant pa owns number ptNumberA on WABA ptWABAA; tenant pb owns
// ptNumberB on ptWABAB. Meta's ids are numeric.
const (
	ptTenantA  = "pt-tenant-a"
	ptTenantB  = "pt-tenant-b"
	ptNumberA  = "106000000000001"
	ptNumberB  = "206000000000001"
	ptWABAA    = "105000000000001"
	ptWABAB    = "205000000000001"
	ptTokenA   = "EAAG-passthrough-token-of-tenant-a-SECRET"
	ptTokenB   = "EAAG-passthrough-token-of-tenant-b-SECRET"
	ptSecret   = "fake-app-secret-for-passthrough"
	ptUnknown  = "999999999999999"
	ptVersion  = "v22.0"
	ptPublicIs = "https://api.example.test"
)

// logBuffer collects log lines, safe for concurrent writers.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// refusePublish is the gateway's publisher in passthrough tests: nothing here sends.
type refusePublish struct{}

func (refusePublish) WriteMessages(context.Context, ...kafka.Message) error {
	return errors.New("no sends in passthrough tests")
}

type ptEnv struct {
	t      *testing.T
	base   string
	fake   *fakemeta.Server
	media  *media.Repository
	logs   *logBuffer
	client *http.Client
	jwtA   string
	jwtB   string
	// answers holds every answer's headers and body, to look for tokens in.
	answers bytes.Buffer
}

type ptConfig struct {
	graphTimeout  time.Duration
	maxMediaBytes int
}

func newPassthroughEnv(t *testing.T, cfg ptConfig) *ptEnv {
	t.Helper()
	ctx := context.Background()
	dbURL, pool := storetest.New(t)
	_, keys := testKeys(t)
	repo := account.NewRepository(pool, keys)
	for _, in := range []account.UpsertInput{
		{TenantID: ptTenantA, WABAID: ptWABAA, PhoneNumberID: ptNumberA, AccessToken: ptTokenA, IsDefault: true},
		{TenantID: ptTenantB, WABAID: ptWABAB, PhoneNumberID: ptNumberB, AccessToken: ptTokenB, IsDefault: true},
	} {
		if _, err := repo.Upsert(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	resolver, err := account.NewResolver(repo, account.ResolverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(resolver.Close)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = resolver.Listen(lctx, dbURL) }()
	t.Cleanup(func() { cancel(); <-done })

	fake := fakemeta.New(fakemeta.Options{AppID: "900000000000001", AppSecret: ptSecret, RequireAppSecretProof: true, Logger: quiet})
	if err := fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	fake.SetToken(ptNumberA, ptTokenA)
	fake.SetToken(ptNumberB, ptTokenB)
	fake.SetWABANumbers(ptWABAA, fakemeta.Phone{ID: ptNumberA, DisplayPhoneNumber: "+1 555-000-0001", VerifiedName: "A", ThroughputLevel: "HIGH"})
	fake.SetWABANumbers(ptWABAB, fakemeta.Phone{ID: ptNumberB, DisplayPhoneNumber: "+1 555-000-0002", VerifiedName: "B"})

	gc, err := graph.New(graph.Config{BaseURL: fake.URL(), Version: ptVersion, Timeout: cfg.graphTimeout,
		AppID: "900000000000001", AppSecret: ptSecret})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewVerifier(auth.Config{HMACSecret: jwtSecret, Leeway: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := &ptEnv{t: t, fake: fake, media: media.NewRepository(pool), logs: &logBuffer{},
		client: &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
	srv, err := gateway.New(gateway.Options{
		Verifier: verifier,
		Resolver: resolver,
		Sends:    refusePublish{},
		Graph: &gateway.Passthrough{
			Client: gc, WABAs: repo, Media: e.media, MaxMediaBytes: cfg.maxMediaBytes,
			MediaTimeout: time.Minute, PublicBaseURL: ptPublicIs,
		},
		AccessSample: 1,
		Logger:       slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	})
	e.base = "http://" + ln.Addr().String()
	e.jwtA = signed(t, jwt.SigningMethodHS256, jwtSecret, jwt.MapClaims{"tenantId": ptTenantA, "exp": time.Now().Add(time.Hour).Unix()})
	e.jwtB = signed(t, jwt.SigningMethodHS256, jwtSecret, jwt.MapClaims{"tenantId": ptTenantB, "exp": time.Now().Add(time.Hour).Unix()})
	return e
}

type ptAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a ptAnswer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %d is not JSON: %s", a.status, a.body)
	}
	return m
}

// metaCode is the answer's Meta error code and aerogate code (error_data.aerogate_code,
// or the /v1 shape's code).
func (a ptAnswer) codes(t *testing.T) (int, string) {
	t.Helper()
	var m struct {
		Error struct {
			Code      json.RawMessage `json:"code"`
			ErrorData struct {
				AerogateCode string `json:"aerogate_code"`
			} `json:"error_data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %d is not an error: %s", a.status, a.body)
	}
	var n int
	if json.Unmarshal(m.Error.Code, &n) == nil {
		return n, m.Error.ErrorData.AerogateCode
	}
	var s string
	_ = json.Unmarshal(m.Error.Code, &s)
	return 0, s
}

func (e *ptEnv) do(method, path, jwt, contentType string, body io.Reader, header ...string) ptAnswer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading: %v", method, path, err)
	}
	_ = resp.Header.Write(&e.answers)
	e.answers.Write(b)
	return ptAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *ptEnv) json(method, path, jwt, body string) ptAnswer {
	e.t.Helper()
	var r io.Reader
	ct := ""
	if body != "" {
		r, ct = strings.NewReader(body), "application/json"
	}
	return e.do(method, path, jwt, ct, r)
}

func multipartUpload(t testing.TB, fields [][2]string, fileType string, file []byte) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, f := range fields {
		_ = w.WriteField(f[0], f[1])
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="f"`)
	h.Set("Content-Type", fileType)
	pw, _ := w.CreatePart(h)
	_, _ = pw.Write(file)
	_ = w.Close()
	return w.FormDataContentType(), b.Bytes()
}

func (e *ptEnv) upload(jwt, number, fileType string, file []byte, extra ...[2]string) ptAnswer {
	e.t.Helper()
	fields := append([][2]string{{"messaging_product", "whatsapp"}, {"type", fileType}}, extra...)
	ct, body := multipartUpload(e.t, fields, fileType, file)
	return e.do("POST", "/"+ptVersion+"/"+number+"/media", jwt, ct, bytes.NewReader(body))
}

// checkNoSecrets fails if a token shows in any answer or log line.
func (e *ptEnv) checkNoSecrets() {
	e.t.Helper()
	for _, s := range []string{ptTokenA, ptTokenB, ptSecret} {
		if strings.Contains(e.answers.String(), s) {
			e.t.Errorf("an answer holds a secret (%.12s…)", s)
		}
		if strings.Contains(e.logs.String(), s) {
			e.t.Errorf("a log line holds a secret (%.12s…)", s)
		}
	}
}

// checkFakeCalls: every call the fake saw carried the owning tenant's token, and every
// Graph call a valid appsecret_proof (the media download goes to Meta's CDN with the
// token alone).
func (e *ptEnv) checkFakeCalls(wantToken string) {
	e.t.Helper()
	calls := e.fake.Calls()
	if len(calls) == 0 {
		e.t.Fatal("the fake saw no call")
	}
	for _, c := range calls {
		if c.Token != wantToken {
			e.t.Errorf("%s %s reached the fake with another token", c.Method, c.Path)
		}
		if strings.HasPrefix(c.Path, "/whatsapp_business/") {
			continue
		}
		if !c.ProofValid {
			e.t.Errorf("%s %s reached the fake without a valid appsecret_proof", c.Method, c.Path)
		}
	}
}

func TestPassthroughCalls(t *testing.T) {
	e := newPassthroughEnv(t, ptConfig{})
	a := e.jwtA
	v := "/" + ptVersion + "/"

	// The number's own fields: quality, throughput, name status.
	r := e.json("GET", v+ptNumberA+"?fields=quality_rating,throughput,name_status", a, "")
	if r.status != 200 {
		t.Fatalf("number fields: %d %s", r.status, r.body)
	}
	if m := r.json(t); m["throughput"].(map[string]any)["level"] != "HIGH" || m["name_status"] != "APPROVED" || m["quality_rating"] != "GREEN" {
		t.Errorf("number fields: %s", r.body)
	}

	// Media: upload, metadata (its url now the gateway's), content, delete.
	img := bytes.Repeat([]byte("JPEGDATA"), 4096)
	r = e.upload(a, ptNumberA, "image/jpeg", img)
	if r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	id, _ := r.json(t)["id"].(string)
	if id == "" {
		t.Fatalf("upload answered no id: %s", r.body)
	}
	if owner, err := e.media.Owner(context.Background(), ptTenantA, id); err != nil || owner != ptNumberA {
		t.Fatalf("uploaded media not recorded for tenant a: %q %v", owner, err)
	}
	r = e.json("GET", v+id, a, "")
	if r.status != 200 {
		t.Fatalf("media metadata: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["url"] != ptPublicIs+"/v1/media/"+id+"/content" || m["mime_type"] != "image/jpeg" || m["file_size"] != float64(len(img)) {
		t.Errorf("media metadata: %s", r.body)
	}
	r = e.do("GET", "/v1/media/"+id+"/content", a, "", nil)
	if r.status != 200 || !bytes.Equal(r.body, img) || r.header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("media content: %d %q, %d bytes", r.status, r.header.Get("Content-Type"), len(r.body))
	}

	// Business profile: set, read.
	r = e.json("POST", v+ptNumberA+"/whatsapp_business_profile", a, `{"messaging_product":"whatsapp","about":"We ship fast"}`)
	if r.status != 200 {
		t.Fatalf("profile update: %d %s", r.status, r.body)
	}
	r = e.json("GET", v+ptNumberA+"/whatsapp_business_profile?fields=about", a, "")
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"about":"We ship fast"`)) {
		t.Fatalf("profile: %d %s", r.status, r.body)
	}

	// Templates: create three, list them two by two following Meta's paging links (now
	// the gateway's, without the token), delete one.
	for i := range 3 {
		r = e.json("POST", v+ptWABAA+"/message_templates", a,
			fmt.Sprintf(`{"name":"order_%d","language":"en_US","category":"UTILITY","components":[{"type":"BODY","text":"Order {{1}}"}]}`, i))
		if r.status != 200 || r.json(t)["status"] != "PENDING" {
			t.Fatalf("template create: %d %s", r.status, r.body)
		}
	}
	var names []string
	next := v + ptWABAA + "/message_templates?limit=2"
	for pages := 0; next != ""; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		r = e.json("GET", next, a, "")
		if r.status != 200 {
			t.Fatalf("template list: %d %s", r.status, r.body)
		}
		var page struct {
			Data []struct {
				Name string `json:"name"`
			} `json:"data"`
			Paging struct {
				Next string `json:"next"`
			} `json:"paging"`
		}
		_ = json.Unmarshal(r.body, &page)
		for _, d := range page.Data {
			names = append(names, d.Name)
		}
		next = ""
		if page.Paging.Next != "" {
			u, err := url.Parse(page.Paging.Next)
			if err != nil || u.Scheme+"://"+u.Host != ptPublicIs || u.Query().Has("access_token") {
				t.Fatalf("paging.next not rewritten onto the gateway without the token: %s", page.Paging.Next)
			}
			next = u.RequestURI()
		}
	}
	if strings.Join(names, ",") != "order_0,order_1,order_2" {
		t.Errorf("templates listed: %v", names)
	}
	r = e.json("DELETE", v+ptWABAA+"/message_templates?name=order_1", a, "")
	if r.status != 200 || len(e.fake.Templates(ptWABAA)) != 2 {
		t.Fatalf("template delete: %d %s", r.status, r.body)
	}
	r = e.json("GET", v+ptWABAA+"/phone_numbers", a, "")
	if r.status != 200 || !bytes.Contains(r.body, []byte(ptNumberA)) {
		t.Fatalf("phone numbers: %d %s", r.status, r.body)
	}

	// A customer's inbound media (recorded by ingest as the tenant's) downloads too.
	in, err := e.fake.AddMedia(ptNumberA, "audio/ogg", []byte("OggS-voice-note"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.media.Record(context.Background(), ptTenantA, in, ptNumberA, media.SourceInbound); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/v1/media/"+in+"/content", a, "", nil)
	if r.status != 200 || string(r.body) != "OggS-voice-note" {
		t.Fatalf("inbound media content: %d %s", r.status, r.body)
	}

	// Deleted media is gone, here and at Meta.
	r = e.json("DELETE", v+id, a, "")
	if r.status != 200 {
		t.Fatalf("media delete: %d %s", r.status, r.body)
	}
	if _, ok := e.fake.MediaOf(id); ok {
		t.Error("media still at the fake after DELETE")
	}
	if r = e.json("GET", v+id, a, ""); r.status == 200 {
		t.Errorf("deleted media still answers: %s", r.body)
	}

	e.checkFakeCalls(ptTokenA)
	e.checkNoSecrets()
}

// TestPassthroughIsolation: another tenant's number, WABA or media id gets exactly the
// answer of an id that does not exist, and reaches Meta not at all.
func TestPassthroughIsolation(t *testing.T) {
	e := newPassthroughEnv(t, ptConfig{})
	v := "/" + ptVersion + "/"
	r := e.upload(e.jwtA, ptNumberA, "image/png", []byte("PNG"))
	mediaA, _ := r.json(t)["id"].(string)
	if r.status != 200 || mediaA == "" {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	before := len(e.fake.Calls())
	for _, tc := range []struct{ name, method, owned, unknown, body string }{
		{"number", "GET", v + ptNumberA, v + ptUnknown, ""},
		{"profile", "GET", v + ptNumberA + "/whatsapp_business_profile", v + ptUnknown + "/whatsapp_business_profile", ""},
		{"upload", "POST", v + ptNumberA + "/media", v + ptUnknown + "/media", ""},
		{"templates", "GET", v + ptWABAA + "/message_templates", v + ptUnknown + "/message_templates", ""},
		{"template create", "POST", v + ptWABAA + "/message_templates", v + ptUnknown + "/message_templates", `{"name":"x","language":"en","category":"UTILITY"}`},
		{"phone numbers", "GET", v + ptWABAA + "/phone_numbers", v + ptUnknown + "/phone_numbers", ""},
		{"media", "GET", v + mediaA, v + ptUnknown, ""},
		{"media delete", "DELETE", v + mediaA, v + ptUnknown, ""},
		{"media content", "GET", "/v1/media/" + mediaA + "/content", "/v1/media/" + ptUnknown + "/content", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var other, unknown ptAnswer
			if tc.method == "POST" && tc.body == "" {
				ct, body := multipartUpload(t, [][2]string{{"messaging_product", "whatsapp"}}, "image/png", []byte("x"))
				other = e.do(tc.method, tc.owned, e.jwtB, ct, bytes.NewReader(body))
				unknown = e.do(tc.method, tc.unknown, e.jwtB, ct, bytes.NewReader(body))
			} else {
				other = e.json(tc.method, tc.owned, e.jwtB, tc.body)
				unknown = e.json(tc.method, tc.unknown, e.jwtB, tc.body)
			}
			if other.status < 400 || other.status != unknown.status || !sameError(other.body, unknown.body, tc.owned, tc.unknown) {
				t.Errorf("another tenant's id: %d %s\nunknown id: %d %s", other.status, other.body, unknown.status, unknown.body)
			}
		})
	}
	if after := len(e.fake.Calls()); after != before {
		t.Errorf("refused calls reached the fake: %d calls", after-before)
	}
	e.checkNoSecrets()
}

// sameError compares two error answers but for their request ids and the ids asked for.
func sameError(a, b []byte, idA, idB string) bool {
	norm := func(x []byte, id string) string {
		var m map[string]any
		if json.Unmarshal(x, &m) != nil {
			return string(x)
		}
		if e, ok := m["error"].(map[string]any); ok {
			delete(e, "fbtrace_id")
			delete(e, "request_id")
		}
		out, _ := json.Marshal(m)
		return strings.ReplaceAll(string(out), id, "ID")
	}
	return norm(a, idA) == norm(b, idB)
}

func TestPassthroughRefusals(t *testing.T) {
	e := newPassthroughEnv(t, ptConfig{maxMediaBytes: 1 << 20})
	v := "/" + ptVersion + "/"
	ctForm := "application/x-www-form-urlencoded"
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		header      []string
		status      int
		code        string
	}{
		{name: "edge off the allow-list", method: "POST", path: v + ptNumberA + "/register", contentType: "application/json", body: `{"messaging_product":"whatsapp","pin":"123456"}`, status: 403, code: "edge_not_allowed"},
		{name: "WABA edge off the allow-list", method: "POST", path: v + ptWABAA + "/subscribed_apps", status: 403, code: "edge_not_allowed"},
		{name: "GET on the send path", method: "GET", path: v + ptNumberA + "/messages", status: 403, code: "edge_not_allowed"},
		{name: "method off the allow-list", method: "DELETE", path: v + ptNumberA + "/whatsapp_business_profile", status: 400, code: "method_not_allowed"},
		{name: "access_token in the query", method: "GET", path: v + ptNumberA + "?access_token=EAAGx", status: 400, code: "access_token_not_allowed"},
		{name: "Access_Token in the query", method: "GET", path: v + ptWABAA + "/message_templates?Access_Token=EAAGx", status: 400, code: "access_token_not_allowed"},
		{name: "access_token in a form body", method: "POST", path: v + ptNumberA + "/whatsapp_business_profile", contentType: ctForm, body: "messaging_product=whatsapp&access_token=EAAGx", status: 400, code: "access_token_not_allowed"},
		{name: "access_token in a JSON body", method: "POST", path: v + ptWABAA + "/message_templates", contentType: "application/json", body: `{"name":"x","access_token":"EAAGx"}`, status: 400, code: "access_token_not_allowed"},
		{name: "access token in a header", method: "GET", path: v + ptNumberA, header: []string{"X-Access-Token", "EAAGx"}, status: 400, code: "access_token_not_allowed"},
		{name: "tenantId of another tenant", method: "GET", path: v + ptNumberA + "?tenantId=" + ptTenantB, status: 403, code: "tenant_mismatch"},
		{name: "no JWT", method: "GET", path: v + ptNumberA, status: 401, code: "unauthorized"},
		{name: "not a Graph id", method: "GET", path: v + "me", status: 400, code: "not_found"},
	}
	before := len(e.fake.Calls())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			jwt := e.jwtA
			if tc.code == "unauthorized" {
				jwt = ""
			}
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := e.do(tc.method, tc.path, jwt, tc.contentType, body, tc.header...)
			if _, code := r.codes(t); r.status != tc.status || code != tc.code {
				t.Errorf("%d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}

	// Uploads: a token field, a file over its kind's limit or over graph.max_media_bytes.
	for _, tc := range []struct {
		name     string
		fileType string
		size     int
		extra    [][2]string
		status   int
		code     string
	}{
		{"access_token field", "image/png", 10, [][2]string{{"access_token", "EAAGx"}}, 400, "access_token_not_allowed"},
		{"sticker over 500 KiB", "image/webp", 600 << 10, nil, 413, "media_too_large"},
		{"document over max_media_bytes", "application/pdf", 1<<20 + 1, nil, 413, "media_too_large"},
		{"image far over 5 MiB", "image/jpeg", 12 << 20, nil, 413, "media_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.upload(e.jwtA, ptNumberA, tc.fileType, bytes.Repeat([]byte{7}, tc.size), tc.extra...)
			if _, code := r.codes(t); r.status != tc.status || code != tc.code {
				t.Errorf("%d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	for _, c := range e.fake.Calls()[before:] {
		if c.Status == 200 {
			t.Errorf("a refused call succeeded at the fake: %s %s", c.Method, c.Path)
		}
	}
	e.checkNoSecrets()
}

// TestPassthroughMetaErrors: Meta's errors pass through with Meta's status and body;
// its rate limits come with Retry-After; a Graph API that does not answer in time is 504.
func TestPassthroughMetaErrors(t *testing.T) {
	e := newPassthroughEnv(t, ptConfig{graphTimeout: 300 * time.Millisecond})
	path := "/" + ptVersion + "/" + ptWABAA + "/message_templates"
	for _, tc := range []struct {
		code  int
		retry string
	}{{4, "60"}, {80007, "60"}, {130429, "1"}, {100, ""}} {
		e.fake.FailStep(fakemeta.StepGraph+":"+path, 1, fakemeta.ErrorSpec{Code: tc.code, Title: "limit"})
		r := e.json("GET", path, e.jwtA, "")
		if code, _ := r.codes(t); code != tc.code || r.header.Get("Retry-After") != tc.retry {
			t.Errorf("Meta's %d: %d %q %s", tc.code, r.status, r.header.Get("Retry-After"), r.body)
		}
	}
	e.fake.SlowStep(fakemeta.StepGraph+":"+path, 1, time.Second)
	r := e.json("GET", path, e.jwtA, "")
	if _, code := r.codes(t); r.status != 504 || code != "graph_timeout" {
		t.Errorf("slow Graph: %d %s", r.status, r.body)
	}
	e.checkNoSecrets()
}

// patternReader yields n deterministic bytes without holding them.
type patternReader struct{ left, i int }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := min(len(b), p.left)
	for j := range n {
		b[j] = byte(p.i*31 + p.i>>8)
		p.i++
	}
	p.left -= n
	return n, nil
}

// heapPeak samples HeapInuse until stopped and returns the highest value seen.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak.Load() }
}

// TestPassthroughStreamsMedia: a 16 MiB video goes up through the gateway to Meta and
// comes back down, and the process's heap never holds a good part of it: the gateway,
// the fake (which keeps media on disk) and this client all stream.
func TestPassthroughStreamsMedia(t *testing.T) {
	const size = 16 << 20
	e := newPassthroughEnv(t, ptConfig{})
	// The multipart body is produced as it is sent: head, the file, tail.
	var head, tail bytes.Buffer
	w := multipart.NewWriter(&head)
	_ = w.WriteField("messaging_product", "whatsapp")
	_ = w.WriteField("type", "video/mp4")
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="v.mp4"`)
	h.Set("Content-Type", "video/mp4")
	_, _ = w.CreatePart(h)
	boundary := w.Boundary()
	tail.WriteString("\r\n--" + boundary + "--\r\n")
	want := sha256.New()
	_, _ = io.Copy(want, &patternReader{left: size})

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := heapPeak()

	body := io.MultiReader(bytes.NewReader(head.Bytes()), &patternReader{left: size}, bytes.NewReader(tail.Bytes()))
	req, _ := http.NewRequest("POST", e.base+"/"+ptVersion+"/"+ptNumberA+"/media", body)
	req.ContentLength = int64(head.Len() + size + tail.Len())
	req.Header.Set("Authorization", "Bearer "+e.jwtA)
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ans, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var up struct{ ID string }
	if resp.StatusCode != 200 || json.Unmarshal(ans, &up) != nil || up.ID == "" {
		t.Fatalf("upload: %d %s", resp.StatusCode, ans)
	}
	if m, ok := e.fake.MediaOf(up.ID); !ok || m.Size != size {
		t.Fatalf("the fake holds %d bytes, want %d", m.Size, size)
	}

	req, _ = http.NewRequest("GET", e.base+"/v1/media/"+up.ID+"/content", nil)
	req.Header.Set("Authorization", "Bearer "+e.jwtA)
	resp, err = e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	peak := stop()
	if err != nil || resp.StatusCode != 200 || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("download: %d, %d bytes, %v; same bytes: %v", resp.StatusCode, n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	grew := int64(peak) - int64(base.HeapInuse)
	t.Logf("heap in use: %d MiB before, %d MiB at most while 2×16 MiB streamed (+%.1f MiB)",
		base.HeapInuse>>20, peak>>20, float64(grew)/(1<<20))
	if grew > size/4 {
		t.Errorf("the heap grew by %d bytes while streaming %d: the body is being held", grew, size)
	}
}
