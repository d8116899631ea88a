package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// workOf runs f runs times (after one warm-up run) and returns its mean allocations and
// allocated bytes: the work budget of the hostile-input tests, counted rather than timed.
// The budgets are linear: up to 256 bytes per body byte, since fastjson's tree of a dense
// body (a value every 3 bytes) takes ~50, and up to three times that under -race, where
// sync.Pool drops the pooled parser and the counters are the whole process's. What they
// catch is super-linear work: the quadratic validator this replaced allocated gigabytes
// for a 64 KiB body.
func workOf(runs int, f func()) (allocs, bytes float64) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs), float64(after.TotalAlloc-before.TotalAlloc) / float64(runs)
}

// messageWith is a valid text send whose text object also holds extra, at size n.
func messageWith(extra string) string {
	return `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"x","extra":` + extra + `}}`
}

// hostileBodies are 64 KiB send bodies built to be expensive, with the answer each gets.
func hostileBodies() []struct {
	name   string
	body   string
	status int
	code   string
} {
	const size = 64 << 10
	fill := func(unit string, n int) string { return strings.Repeat(unit, n/len(unit)) }
	list := func(unit string) string {
		return "[" + strings.TrimSuffix(fill(unit+",", size-200), ",") + "]"
	}
	return []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"unclosed arrays", fill("[", size), 400, "json_too_deep"},
		{"unclosed objects", fill(`{"a":`, size), 400, "json_too_deep"},
		{"unclosed mix", fill(`[{"a":`, size), 400, "json_too_deep"},
		{"closed arrays", fill("[", size/2) + fill("]", size/2), 400, "json_too_deep"},
		{"deep inside a valid send", messageWith(fill("[", size/2-100) + fill("]", size/2-100)), 400, "json_too_deep"},
		{"deep then garbage", fill("[", 60) + fill("x", size-60), 400, "invalid_json"},
		{"at the depth limit, then garbage", messageWith(fill("[", 62)+"1"+fill("]", 62)) + fill(" ", size-600) + "x", 400, "invalid_json"},
		{"at the depth limit", messageWith(fill(`[{"a":`, 31*6) + "1" + fill("}]", 31*2)), 202, ""},
		{"long escape string", messageWith(`"` + fill(`\u00e9\n\"`, size-200) + `"`), 202, ""},
		{"many strings", messageWith(list(`""`)), 202, ""},
		{"many numbers", messageWith(list(`-1.5e+300`)), 202, ""},
		{"many nested keys", messageWith("{" + strings.TrimSuffix(fill(`"k":1,`, size-200), ",") + "}"), 202, ""},
		{"many top-level keys", strings.TrimSuffix(messageWith("1"), "}") + "," + strings.TrimSuffix(manyKeys(size-200), ",") + "}", 202, ""},
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `"k%d":0,`, i)
	}
	return b.String()
}

// TestHostileBodies: every pathological 64 KiB body gets its stable answer on both send
// paths within a work budget linear in its size. Before the depth guard, the unclosed
// arrays alone took minutes (fastjson's validator wrapped its error once per level).
func TestHostileBodies(t *testing.T) {
	s, tok := unitServer(t, &fixedResolver{acct: testAccount()}, nopSink{})
	h := s.Handler()
	for _, tc := range hostileBodies() {
		for _, path := range []string{"/v1/messages", "/v22.0/1001/messages"} {
			t.Run(tc.name+path, func(t *testing.T) {
				ctx := sendCtx(tok, tc.body)
				ctx.Request.SetRequestURI(path)
				h(ctx)
				status := ctx.Response.StatusCode()
				if path != "/v1/messages" && tc.status == 202 {
					tc.status = 200
				}
				code := stableCode(ctx.Response.Body())
				if status != tc.status || code != tc.code {
					t.Fatalf("%d bytes: got %d %s, want %d %s", len(tc.body), status, ctx.Response.Body(), tc.status, tc.code)
				}
				if len(ctx.Response.Body()) > 512 && status >= 400 {
					t.Fatalf("error answer of %d bytes", len(ctx.Response.Body()))
				}
				allocs, bytes := workOf(3, func() { ctx.Response.Reset(); h(ctx) })
				n := float64(len(tc.body))
				if allocs > 64+n/4 || bytes > 64<<10+256*n {
					t.Fatalf("%d-byte body cost %.0f allocations and %.0f bytes", len(tc.body), allocs, bytes)
				}
			})
		}
	}
}

// TestRepeatedTenantQuery: every value of a repeated tenantId must be the token's.
func TestRepeatedTenantQuery(t *testing.T) {
	s, tok := unitServer(t, &fixedResolver{acct: testAccount()}, nopSink{})
	for _, tc := range []struct {
		query  string
		status int
	}{
		{"tenantId=t1", 202},
		{"tenantId=t1&tenantId=t1", 202},
		{"tenantId=t1&tenantId=t2", 403},
		{"tenantId=t2&tenantId=t1", 403},
		{"tenantId=t1&x=1&tenantId=", 403},
		{"tenantId=t1&tenantId", 403},
		{"tenantId=t1&tenant%49d=t2", 403},
	} {
		ctx := sendCtx(tok, `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"x"}}`)
		ctx.Request.SetRequestURI("/v1/messages?" + tc.query)
		s.Handler()(ctx)
		if got := ctx.Response.StatusCode(); got != tc.status {
			t.Errorf("?%s: got %d %s, want %d", tc.query, got, ctx.Response.Body(), tc.status)
		}
	}
}

// TestTwoAuthorizationHeaders: a request with more than one Authorization header is
// refused whatever their order, not served by whichever one comes first.
func TestTwoAuthorizationHeaders(t *testing.T) {
	s, tok := unitServer(t, &fixedResolver{acct: testAccount()}, nopSink{})
	for _, second := range []string{"Bearer " + tok, "Bearer not-a-token", "Basic eDp5"} {
		ctx := sendCtx(tok, `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"x"}}`)
		ctx.Request.Header.Add("Authorization", second)
		s.Handler()(ctx)
		var v struct{ Error struct{ Code string } }
		_ = json.Unmarshal(ctx.Response.Body(), &v)
		if ctx.Response.StatusCode() != 400 || v.Error.Code != "duplicate_authorization" {
			t.Errorf("second header %.12q: got %d %s", second, ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// serveUnit starts s on a real listener and returns its address.
func serveUnit(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return ln.Addr().String()
}

// rawExchange writes req on a new connection, all of it before reading, as a hostile
// or careless client does, and reads the answer.
func rawExchange(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	writeErr := make(chan error, 1)
	go func() { _, err := io.WriteString(conn, req); writeErr <- err }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v (write: %v)", err, <-writeErr)
	}
	b, _ := io.ReadAll(resp.Body)
	<-writeErr
	return resp.StatusCode, string(b)
}

func rawSend(tok, path, extraHeaders, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s",
		path, tok, extraHeaders, len(body), body)
}

// bigToken is a valid token for t1 padded to about n bytes.
func bigToken(t *testing.T, n int) string {
	t.Helper()
	pad := strings.Repeat("p", n*3/4-60)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"tenantId": "t1", "exp": time.Now().Add(time.Hour).Unix(), "pad": pad}).SignedString(benchSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestHostileOverTheWire: through a real server and connection, the 64 KiB body of
// unclosed '[' gets its 400, a token as large as the header buffer allows is served, and
// headers over the buffer get a JSON 431.
func TestHostileOverTheWire(t *testing.T) {
	s, tok := unitServer(t, &fixedResolver{acct: testAccount()}, nopSink{})
	addr := serveUnit(t, s)
	const msg = `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"x"}}`

	// A 7 KiB token fits the default 8 KiB header buffer with this request's other headers.
	big := bigToken(t, 7<<10)
	if status, body := rawExchange(t, addr, rawSend(big, "/v1/messages", "", msg)); status != 202 {
		t.Fatalf("%d-byte token: got %d %s", len(big), status, body)
	}
	for _, over := range []string{
		rawSend(bigToken(t, 9<<10), "/v1/messages", "", msg),
		rawSend(tok, "/v1/messages", "X-Pad: "+strings.Repeat("a", 8<<10)+"\r\n", msg),
		rawSend(tok, "/v1/messages", strings.Repeat("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 400), msg),
	} {
		status, body := rawExchange(t, addr, over)
		if status != 431 || !strings.Contains(body, `"code":"headers_too_large"`) {
			t.Fatalf("%d-byte request: got %d %s", len(over), status, body)
		}
	}
	for _, path := range []string{"/v1/messages", "/v22.0/1001/messages"} {
		status, body := rawExchange(t, addr, rawSend(tok, path, "", strings.Repeat("[", 64<<10)))
		if status != 400 || stableCode([]byte(body)) != "json_too_deep" {
			t.Fatalf("%s: 64 KiB of '[': got %d %s", path, status, body)
		}
	}

	// The server lives on and serves the next request.
	if status, body := rawExchange(t, addr, rawSend(tok, "/v1/messages", "", msg)); status != 202 {
		t.Fatalf("after the hostile requests: %d %s", status, body)
	}
}

// TestHeaderBufferConfigurable: MaxHeaderBytes moves the 431 line, and the verifier
// takes tokens as large as the buffer holds.
func TestHeaderBufferConfigurable(t *testing.T) {
	s, tok := unitServer(t, &fixedResolver{acct: testAccount()}, nopSink{}, func(o *Options) { o.MaxHeaderBytes = 2 << 10 })
	addr := serveUnit(t, s)
	const msg = `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"x"}}`
	if status, body := rawExchange(t, addr, rawSend(tok, "/v1/messages", "X-Pad: "+strings.Repeat("a", 2<<10)+"\r\n", msg)); status != 431 {
		t.Fatalf("2 KiB header over a 2 KiB buffer: %d %s", status, body)
	}
	if status, body := rawExchange(t, addr, rawSend(tok, "/v1/messages", "X-Pad: "+strings.Repeat("a", 1<<10)+"\r\n", msg)); status != 202 {
		t.Fatalf("1 KiB header in a 2 KiB buffer: %d %s", status, body)
	}
	if _, err := New(Options{Verifier: s.opts.Verifier, Resolver: s.opts.Resolver, Sends: nopSink{}, MaxHeaderBytes: 100}); err == nil {
		t.Fatal("a 100-byte header buffer was accepted")
	}
	if _, err := New(Options{Verifier: s.opts.Verifier, Resolver: s.opts.Resolver, Sends: nopSink{}, MaxJSONDepth: 1000}); err == nil {
		t.Fatal("a JSON depth limit above what the parser supports was accepted")
	}
}

// BenchmarkHostileSend is the whole send handler (JWT from the cache, guard, parse,
// validation, envelope, publish to a no-op sink) on the 64 KiB hostile bodies:
// cpu-µs/op is this process's CPU time per request, which other load does not inflate.
func BenchmarkHostileSend(b *testing.B) {
	s, tok := unitServer(b, &fixedResolver{acct: testAccount()}, nopSink{})
	h := s.Handler()
	for _, tc := range hostileBodies() {
		b.Run(strings.ReplaceAll(tc.name, " ", "-"), func(b *testing.B) {
			ctx := sendCtx(tok, tc.body)
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			start := processCPU()
			for b.Loop() {
				ctx.Response.Reset()
				h(ctx)
			}
			cpu := processCPU() - start
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
			if ctx.Response.StatusCode() != tc.status {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		})
	}
}

// processCPU is this process's CPU time so far (user plus system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stableCode is the stable code of an error answer in either shape: error.code on /v1,
// error.error_data.aerogate_code in Meta's shape on the Cloud API path.
func stableCode(body []byte) string {
	var v struct {
		Error struct {
			Code      any `json:"code"`
			ErrorData struct {
				AerogateCode string `json:"aerogate_code"`
			} `json:"error_data"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &v)
	if c, ok := v.Error.Code.(string); ok {
		return c
	}
	return v.Error.ErrorData.AerogateCode
}
