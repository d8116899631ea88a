package graph

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/cputime"
	"github.com/aerostic/aerogate/internal/fakemeta"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		err  *Error
		want Action
	}{
		{"throughput", &Error{HTTPStatus: 429, Code: 130429}, ActionRetry},
		{"app too many calls", &Error{HTTPStatus: 400, Code: 4}, ActionRetry},
		{"waba rate limit", &Error{HTTPStatus: 400, Code: 80007}, ActionRetry},
		{"api unknown", &Error{HTTPStatus: 400, Code: 1}, ActionRetry},
		{"api service", &Error{HTTPStatus: 500, Code: 2}, ActionRetry},
		{"something went wrong", &Error{HTTPStatus: 500, Code: 131000}, ActionRetry},
		{"service unavailable", &Error{HTTPStatus: 503, Code: 131016}, ActionRetry},
		{"register rate limit", &Error{HTTPStatus: 400, Code: 133016}, ActionRetry},
		{"pair rate", &Error{HTTPStatus: 400, Code: 131056}, ActionRetryRecipient},
		{"token", &Error{HTTPStatus: 401, Code: 190, Subcode: 463}, ActionStopAccount},
		{"token with 400", &Error{HTTPStatus: 400, Code: 190}, ActionStopAccount},
		{"spam", &Error{HTTPStatus: 400, Code: 131048}, ActionPauseNumber},
		{"blocked", &Error{HTTPStatus: 400, Code: 368}, ActionPauseNumber},
		{"undeliverable", &Error{HTTPStatus: 400, Code: 131026}, ActionFail},
		{"re-engagement", &Error{HTTPStatus: 400, Code: 131047}, ActionFail},
		{"marketing limit", &Error{HTTPStatus: 400, Code: 131049}, ActionFail},
		{"invalid parameter", &Error{HTTPStatus: 400, Code: 100}, ActionFail},
		{"unsupported type", &Error{HTTPStatus: 400, Code: 131051}, ActionFail},
		{"media download", &Error{HTTPStatus: 400, Code: 131052}, ActionFail},
		{"media upload", &Error{HTTPStatus: 400, Code: 131053}, ActionFail},
		{"template first", &Error{HTTPStatus: 400, Code: 132000}, ActionFail},
		{"template paused", &Error{HTTPStatus: 400, Code: 132015}, ActionFail},
		{"template last", &Error{HTTPStatus: 400, Code: 132999}, ActionFail},
		{"known permanent code with 5xx", &Error{HTTPStatus: 500, Code: 131026}, ActionFail},
		{"template code with 5xx", &Error{HTTPStatus: 502, Code: 132001}, ActionFail},
		{"permission denied", &Error{HTTPStatus: 403, Code: 10}, ActionFail},
		{"other 4xx code", &Error{HTTPStatus: 400, Code: 131009}, ActionFail},
		{"unknown code with 5xx", &Error{HTTPStatus: 500, Code: 99999}, ActionRetry},
		{"unknown code marked transient", &Error{HTTPStatus: 400, Code: 99999, Transient: true}, ActionRetry},
		{"5xx without code", &Error{HTTPStatus: 502}, ActionRetry},
		{"503 without code", &Error{HTTPStatus: 503}, ActionRetry},
		{"429 without code", &Error{HTTPStatus: 429}, ActionRetry},
		{"408 without code", &Error{HTTPStatus: 408}, ActionRetry},
		{"redirect", &Error{HTTPStatus: 302}, ActionRetry},
		{"2xx without id", &Error{HTTPStatus: 200}, ActionRetry},
		{"404 without code", &Error{HTTPStatus: 404}, ActionFail},
		{"400 without code", &Error{HTTPStatus: 400}, ActionFail},
		{"transport", &Error{Temporary: true}, ActionRetry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.err.Action(); got != c.want {
				t.Errorf("Action() = %v, want %v", got, c.want)
			}
			if got := Classify(fmt.Errorf("sending: %w", c.err)); got != c.want {
				t.Errorf("Classify(wrapped) = %v, want %v", got, c.want)
			}
			wantRetriable := c.want == ActionRetry || c.want == ActionRetryRecipient
			if c.err.Retriable() != wantRetriable {
				t.Errorf("Retriable() = %v, want %v", c.err.Retriable(), wantRetriable)
			}
		})
	}
}

func TestClassifyOtherErrors(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		context.DeadlineExceeded,
		fmt.Errorf("x: %w", context.DeadlineExceeded),
		&net.OpError{Op: "dial", Err: errors.New("connection refused")},
		io.ErrUnexpectedEOF,
	} {
		if got := Classify(err); got != ActionRetry {
			t.Errorf("Classify(%v) = %v, want retry", err, got)
		}
	}
	if got := Classify(nil); got != 0 {
		t.Errorf("Classify(nil) = %v", got)
	}
}

func TestActionString(t *testing.T) {
	t.Parallel()
	want := map[Action]string{ActionRetry: "retry", ActionRetryRecipient: "retry-recipient",
		ActionStopAccount: "stop-account", ActionPauseNumber: "pause-number", ActionFail: "fail", 0: "Action(0)"}
	for a, s := range want {
		if a.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(a), a.String(), s)
		}
	}
}

func TestParseError(t *testing.T) {
	t.Parallel()
	meta := `{"error":{"message":"(#131026) Message undeliverable","type":"OAuthException","code":131026,
		"error_subcode":2494010,"error_data":{"messaging_product":"whatsapp","details":"Message Undeliverable."},
		"is_transient":false,"fbtrace_id":"AazXy"}}`
	e := ParseError(400, []byte(meta))
	if e.HTTPStatus != 400 || e.Code != 131026 || e.Subcode != 2494010 || e.Type != "OAuthException" ||
		e.Title != "(#131026) Message undeliverable" || e.Details != "Message Undeliverable." ||
		e.FBTraceID != "AazXy" || e.Temporary || e.Action() != ActionFail {
		t.Errorf("ParseError = %+v", e)
	}
	if s := e.Error(); !strings.Contains(s, "131026/2494010") || !strings.Contains(s, "AazXy") || !strings.Contains(s, "HTTP 400") {
		t.Errorf("Error() = %q", s)
	}

	cases := []struct {
		name   string
		status int
		body   string
		code   int
		title  string // substring
		action Action
	}{
		{"user title only", 400, `{"error":{"code":100,"error_user_title":"Bad to"}}`, 100, "Bad to", ActionFail},
		{"no message", 400, `{"error":{"code":100}}`, 100, "graph error", ActionFail},
		{"transient flag", 400, `{"error":{"code":555,"is_transient":true}}`, 555, "", ActionRetry},
		{"code as a quoted number", 400, `{"error":{"code":"190"}}`, 190, "graph error", ActionStopAccount},
		{"code as a word", 400, `{"error":{"code":"abc"}}`, 0, "unexpected response 400", ActionFail},
		{"float code", 400, `{"error":{"code":1.5}}`, 0, "graph error", ActionFail},
		{"negative code", 400, `{"error":{"code":-4}}`, 0, "graph error", ActionFail},
		{"huge code", 400, `{"error":{"code":99999999999999}}`, 0, "graph error", ActionFail},
		{"html 502", 502, `<html><body>Bad Gateway</body></html>`, 0, "unexpected response 502: <html>", ActionRetry},
		{"empty 500", 500, ``, 0, "unexpected response 500", ActionRetry},
		{"json without error", 400, `{"ok":true}`, 0, "unexpected response 400", ActionFail},
		{"error not an object", 400, `{"error":"nope"}`, 0, "unexpected response 400", ActionFail},
		{"redirect", 301, ``, 0, "redirect 301", ActionRetry},
		{"error_data not an object", 400, `{"error":{"code":131047,"error_data":"x"}}`, 131047, "", ActionFail},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := ParseError(c.status, []byte(c.body))
			if e.Code != c.code || !strings.Contains(e.Title, c.title) || e.Action() != c.action || e.HTTPStatus != c.status {
				t.Errorf("ParseError = %+v (action %v)", e, e.Action())
			}
		})
	}

	big := strings.Repeat("A", 100000)
	if e := ParseError(500, []byte(big)); len(e.Title) > 200 {
		t.Errorf("non-JSON title is %d bytes", len(e.Title))
	}
	if e := ParseError(400, []byte(`{"error":{"code":1,"message":"`+big+`","error_data":{"details":"`+big+`"}}}`)); len(e.Title) > maxFieldLen || len(e.Details) > maxFieldLen {
		t.Errorf("title %d bytes, details %d bytes", len(e.Title), len(e.Details))
	}
	if e := ParseError(400, []byte("{\"error\":{\"code\":1,\"message\":\"a\\u0000b\\nc\xff\"}}")); strings.ContainsAny(e.Title, "\x00\n") {
		t.Errorf("title keeps control characters: %q", e.Title)
	}
}

func FuzzParseError(f *testing.F) {
	f.Add(400, []byte(`{"error":{"message":"m","type":"OAuthException","code":131026,"error_subcode":1,"error_data":{"details":"d"},"fbtrace_id":"x"}}`))
	f.Add(500, []byte(`<html>`))
	f.Add(302, []byte(``))
	f.Add(400, []byte(`{"error":{"code":1e3,"error_subcode":"x","is_transient":"yes"}}`))
	f.Add(401, []byte(`{"error":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := ParseError(status, body)
		if e == nil {
			t.Fatal("nil error")
		}
		if e.Title == "" {
			t.Fatal("empty title")
		}
		if len(e.Title) > 2*maxFieldLen || len(e.Details) > maxFieldLen || len(e.Type) > maxFieldLen || len(e.FBTraceID) > maxFieldLen {
			t.Fatalf("unbounded fields: %d %d", len(e.Title), len(e.Details))
		}
		if e.Code < 0 || e.Subcode < 0 {
			t.Fatalf("negative code %d/%d", e.Code, e.Subcode)
		}
		a := e.Action()
		if a < ActionRetry || a > ActionFail {
			t.Fatalf("action %v", a)
		}
		_ = e.Error()
	})
}

const (
	phone = "106540352242922"
	token = "EAAG-secret-token-123456"
	body  = `{"messaging_product":"whatsapp","to":"15550100","type":"text","text":{"body":"hi"}}`
)

func fake(t testing.TB, opts fakemeta.Options) *fakemeta.Server {
	t.Helper()
	s := fakemeta.New(opts)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.SetToken(phone, token)
	return s
}

func client(t testing.TB, base string, timeout time.Duration) *Client {
	t.Helper()
	c, err := New(Config{BaseURL: base, Version: "v22.0", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not *graph.Error", err, err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("error string contains the token: %v", err)
	}
	return e
}

func TestSendMessageSuccess(t *testing.T) {
	t.Parallel()
	s := fake(t, fakemeta.Options{})
	c := client(t, s.URL(), 5*time.Second)
	res, err := c.SendMessage(context.Background(), phone, token, []byte(body))
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if !strings.HasPrefix(res.WAMID, "wamid.") || res.WAID != "15550100" {
		t.Errorf("result %+v", res)
	}
	rec := s.Received()
	if len(rec) != 1 || rec[0].Token != token || rec[0].WAMID != res.WAMID || string(rec[0].Body) != body {
		t.Fatalf("fake received %+v", rec)
	}
	// Connections are reused.
	for range 5 {
		if _, err := c.SendMessage(context.Background(), phone, token, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSendMessageInjectedErrorsAreClassified(t *testing.T) {
	t.Parallel()
	s := fake(t, fakemeta.Options{})
	c := client(t, s.URL(), 5*time.Second)
	cases := []struct {
		spec fakemeta.ErrorSpec
		want Action
	}{
		{fakemeta.ErrorSpec{Code: 130429, Title: "Rate limit hit"}, ActionRetry},
		{fakemeta.ErrorSpec{Code: 131056, Title: "Pair rate limit hit"}, ActionRetryRecipient},
		{fakemeta.ErrorSpec{Code: 4, HTTPStatus: 400}, ActionRetry},
		{fakemeta.ErrorSpec{Code: 80007}, ActionRetry},
		{fakemeta.ErrorSpec{Code: 1}, ActionRetry},
		{fakemeta.ErrorSpec{Code: 2}, ActionRetry},
		{fakemeta.ErrorSpec{Code: 131000, HTTPStatus: 500}, ActionRetry},
		{fakemeta.ErrorSpec{Code: 190, Subcode: 463, Title: "Session has expired"}, ActionStopAccount},
		{fakemeta.ErrorSpec{Code: 131048}, ActionPauseNumber},
		{fakemeta.ErrorSpec{Code: 368}, ActionPauseNumber},
		{fakemeta.ErrorSpec{Code: 131026, Title: "Message undeliverable"}, ActionFail},
		{fakemeta.ErrorSpec{Code: 131047}, ActionFail},
		{fakemeta.ErrorSpec{Code: 131049}, ActionFail},
		{fakemeta.ErrorSpec{Code: 100}, ActionFail},
		{fakemeta.ErrorSpec{Code: 132001, Title: "Template name does not exist"}, ActionFail},
		{fakemeta.ErrorSpec{Code: 131026, HTTPStatus: 500}, ActionFail},
		{fakemeta.ErrorSpec{Code: 77777, HTTPStatus: 503}, ActionRetry},
	}
	for _, cs := range cases {
		s.FailNext(phone, 1, cs.spec)
		_, err := c.SendMessage(context.Background(), phone, token, []byte(body))
		e := asError(t, err)
		if e.Code != cs.spec.Code || e.Subcode != cs.spec.Subcode || e.Action() != cs.want || Classify(err) != cs.want {
			t.Errorf("spec %+v: got %+v, action %v, want %v", cs.spec, e, e.Action(), cs.want)
		}
		if cs.spec.Title != "" && e.Title != cs.spec.Title {
			t.Errorf("title %q, want %q", e.Title, cs.spec.Title)
		}
		if e.FBTraceID == "" || e.Type != "OAuthException" {
			t.Errorf("trace id or type missing: %+v", e)
		}
	}
}

func TestSendMessageWrongTokenStopsAccount(t *testing.T) {
	t.Parallel()
	s := fake(t, fakemeta.Options{})
	c := client(t, s.URL(), 5*time.Second)
	_, err := c.SendMessage(context.Background(), phone, "EAAG-other-tenants-token", []byte(body))
	e := asError(t, err)
	if e.HTTPStatus != 401 || e.Code != 190 || e.Action() != ActionStopAccount || e.Retriable() {
		t.Errorf("wrong token: %+v", e)
	}
	if strings.Contains(err.Error(), "EAAG-other") {
		t.Errorf("error names the token: %v", err)
	}
}

func TestSendMessageTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	s := fake(t, fakemeta.Options{Latency: 2 * time.Second})
	cases := map[string]struct {
		timeout time.Duration
		ctx     func() (context.Context, context.CancelFunc)
	}{
		"client timeout": {100 * time.Millisecond, func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}},
		"context deadline": {10 * time.Second, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}},
	}
	for name, cs := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := client(t, s.URL(), cs.timeout)
			ctx, cancel := cs.ctx()
			defer cancel()
			began := time.Now()
			_, err := c.SendMessage(ctx, phone, token, []byte(body))
			e := asError(t, err)
			if !e.Temporary || e.Action() != ActionRetry || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("timeout: %+v", e)
			}
			if time.Since(began) >= 2*time.Second {
				t.Error("waited for the whole fake latency")
			}
		})
	}
}

func TestSendMessageRefusesBadArgumentsWithoutARequest(t *testing.T) {
	t.Parallel()
	s := fake(t, fakemeta.Options{})
	c := client(t, s.URL(), 5*time.Second)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name    string
		ctx     context.Context
		phone   string
		tok     string
		payload string
		action  Action
	}{
		{"empty phone id", context.Background(), "", token, body, ActionFail},
		{"path traversal", context.Background(), "../../me", token, body, ActionFail},
		{"query injection", context.Background(), "123?access_token=x", token, body, ActionFail},
		{"slash", context.Background(), "123/456", token, body, ActionFail},
		{"too long", context.Background(), strings.Repeat("1", 40), token, body, ActionFail},
		{"non-ascii digits", context.Background(), "١٢٣", token, body, ActionFail},
		{"dev id", context.Background(), "dev-1", token, body, ActionFail},
		{"empty token", context.Background(), phone, "", body, ActionStopAccount},
		{"header injection", context.Background(), phone, "abc\r\nX-Evil: 1", body, ActionStopAccount},
		{"payload not json", context.Background(), phone, token, `{"messaging_product":`, ActionFail},
		{"payload array", context.Background(), phone, token, `[1]`, ActionFail},
		{"canceled context", canceled, phone, token, body, ActionRetry},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			_, err := c.SendMessage(cs.ctx, cs.phone, cs.tok, []byte(cs.payload))
			if e := asError(t, err); e.Action() != cs.action {
				t.Errorf("action %v, want %v (%v)", e.Action(), cs.action, e)
			}
		})
	}
	if n := len(s.Received()); n != 0 {
		t.Errorf("the fake saw %d requests", n)
	}
}

func TestSendMessageDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	s := fake(t, fakemeta.Options{})
	var hits atomic.Int32
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, s.URL()+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redir.Close()
	c := client(t, redir.URL, 5*time.Second)
	_, err := c.SendMessage(context.Background(), phone, token, []byte(body))
	e := asError(t, err)
	if e.HTTPStatus != 307 || !strings.Contains(e.Title, "redirect") {
		t.Errorf("redirect: %+v", e)
	}
	if hits.Load() != 1 || len(s.Received()) != 0 {
		t.Errorf("redirect followed: %d hits, fake got %d", hits.Load(), len(s.Received()))
	}
}

func TestSendMessageOddAnswers(t *testing.T) {
	t.Parallel()
	var answer atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := answer.Load().(func(http.ResponseWriter, *http.Request))
		a(w, r)
	}))
	defer srv.Close()
	c := client(t, srv.URL+"/prefix/", 5*time.Second)
	cases := []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
		status int
		action Action
	}{
		{"200 without id", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"messaging_product":"whatsapp","messages":[{"id":""}]}`)
		}, 200, ActionRetry},
		{"200 not json", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `<html>ok</html>`)
		}, 200, ActionRetry},
		{"error echoing the token", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":{"code":100,"message":"bad header %s"}}`, r.Header.Get("Authorization"))
		}, 400, ActionFail},
		{"html echoing the token", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(502)
			fmt.Fprintf(w, `<p>%s</p>`, r.Header.Get("Authorization"))
		}, 502, ActionRetry},
		{"body over the cap", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			w.Write([]byte(strings.Repeat("x", 200<<10)))
		}, 0, ActionRetry},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			answer.Store(cs.answer)
			_, err := c.SendMessage(context.Background(), phone, token, []byte(body))
			e := asError(t, err)
			if e.HTTPStatus != cs.status || e.Action() != cs.action || len(e.Title) > 2*maxFieldLen {
				t.Errorf("%+v (action %v)", e, e.Action())
			}
		})
	}
	// The URL is {base}/{version}/{phone}/messages, with the base's path kept.
	answer.Store(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prefix/v22.0/"+phone+"/messages" || r.URL.RawQuery != "" || r.Method != "POST" ||
			r.Header.Get("Authorization") != "Bearer "+token || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(404)
			fmt.Fprintf(w, "%s %s", r.Method, r.URL)
			return
		}
		io.WriteString(w, `{"messages":[{"id":"wamid.X"}],"contacts":[{"wa_id":"1"}]}`)
	})
	if res, err := c.SendMessage(context.Background(), phone, token, []byte(body)); err != nil || res.WAMID != "wamid.X" {
		t.Errorf("request shape: %v %+v", err, res)
	}
}

func TestSendMessageConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := client(t, "http://"+addr, 2*time.Second)
	_, err = c.SendMessage(context.Background(), phone, token, []byte(body))
	if e := asError(t, err); !e.Temporary || e.Action() != ActionRetry {
		t.Errorf("connection refused: %+v", e)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		want error
	}{
		{Config{BaseURL: "ftp://graph.facebook.com"}, ErrBaseURL},
		{Config{BaseURL: "graph.facebook.com"}, ErrBaseURL},
		{Config{BaseURL: "https://user:pw-secret@graph.facebook.com"}, ErrBaseURL},
		{Config{BaseURL: "https://user-secret@graph.facebook.com"}, ErrBaseURL},
		{Config{BaseURL: "https://graph.facebook.com?x=1"}, ErrBaseURL},
		{Config{BaseURL: "https://graph.facebook.com#x"}, ErrBaseURL},
		{Config{BaseURL: "https://graph.facebook.com", Version: "22"}, ErrVersion},
		{Config{BaseURL: "https://graph.facebook.com", Version: "v22.0/../x"}, ErrVersion},
	} {
		_, err := New(tc.cfg)
		if !errors.Is(err, tc.want) {
			t.Errorf("New(%+v) = %v, want %v", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%+v) error shows the URL's user info: %v", tc.cfg, err)
		}
	}
	c, err := New(Config{})
	if err != nil || c.prefix != "https://graph.facebook.com/v22.0/" || c.hc.Addr != "graph.facebook.com:443" || !c.hc.IsTLS {
		t.Errorf("defaults: %v %q %q", err, c.prefix, c.hc.Addr)
	}
}

// BenchmarkSendMessage is one Graph exchange over loopback, client and fake server in
// this process: cpu-µs/send is the CPU both sides spend per message (the end-to-end
// bench pays it once per delivered message, beside the gateway's own exchange).
func BenchmarkSendMessage(b *testing.B) {
	s := fake(b, fakemeta.Options{MaxReceived: 10000})
	c := client(b, s.URL(), 5*time.Second)
	payload := []byte(body)
	b.ReportAllocs()
	b.SetParallelism(16)
	cpu0 := cputime.Read("")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.SendMessage(context.Background(), phone, token, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	cpu := cputime.Read("").Sub(cpu0)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
	b.ReportMetric(float64(cpu.Process.Microseconds())/float64(b.N), "cpu-µs/send")
}

func FuzzParseSuccess(f *testing.F) {
	f.Add([]byte(`{"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.X"}]}`))
	f.Add([]byte(`{"messages":[]}`))
	f.Add([]byte(`{"messages":[{"id":7}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := parseSuccess(200, body)
		if err != nil {
			e := asError(t, err)
			if e.Action() != ActionRetry || len(e.Title) > 2*maxFieldLen {
				t.Fatalf("invalid success body gave %+v", e)
			}
			return
		}
		if res.WAMID == "" || len(res.WAMID) > maxFieldLen || len(res.WAID) > maxFieldLen {
			t.Fatalf("result %+v", res)
		}
	})
}

func BenchmarkParseSuccess(b *testing.B) {
	body := []byte(`{"messaging_product":"whatsapp","contacts":[{"input":"+15551234567","wa_id":"15551234567"}],"messages":[{"id":"wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseSuccess(200, body); err != nil {
			b.Fatal(err)
		}
	}
}
