package fakemeta

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	phone = "106540352242922"
	token = "EAAG-test-token"
	body  = `{"messaging_product":"whatsapp","to":"+1 555 0100","type":"text","text":{"body":"hi"}}`
)

func start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(opts)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

type answer struct {
	status int
	body   []byte
}

func post(t testing.TB, url, auth, payload string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, b}
}

func send(t testing.TB, s *Server, phoneID, tok, payload string) answer {
	t.Helper()
	auth := ""
	if tok != "" {
		auth = "Bearer " + tok
	}
	return post(t, s.URL()+"/v22.0/"+phoneID+"/messages", auth, payload)
}

type metaOK struct {
	MessagingProduct string `json:"messaging_product"`
	Contacts         []struct {
		Input string `json:"input"`
		WAID  string `json:"wa_id"`
	} `json:"contacts"`
	Messages []struct {
		ID string `json:"id"`
	} `json:"messages"`
}

// errorOf parses Meta's error body strictly enough to check the fake's shape.
func errorOf(t testing.TB, a answer) metaErrorBody {
	t.Helper()
	var e metaError
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	if e.Error.Type != "OAuthException" || e.Error.Message == "" || e.Error.FBTraceID == "" ||
		e.Error.ErrorData == nil || e.Error.ErrorData.Details == "" {
		t.Errorf("error body lacks Meta's fields: %s", a.body)
	}
	return e.Error
}

func TestSendAnswersLikeMeta(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	s.SetToken(phone, token)
	ids := map[string]bool{}
	for range 3 {
		a := send(t, s, phone, token, body)
		if a.status != http.StatusOK {
			t.Fatalf("status %d: %s", a.status, a.body)
		}
		var ok metaOK
		if err := json.Unmarshal(a.body, &ok); err != nil {
			t.Fatalf("%s: %v", a.body, err)
		}
		if ok.MessagingProduct != "whatsapp" || len(ok.Contacts) != 1 || ok.Contacts[0].Input != "+1 555 0100" ||
			ok.Contacts[0].WAID != "15550100" || len(ok.Messages) != 1 || !strings.HasPrefix(ok.Messages[0].ID, "wamid.") {
			t.Fatalf("answer %s", a.body)
		}
		if ids[ok.Messages[0].ID] {
			t.Fatalf("wamid %s repeated", ok.Messages[0].ID)
		}
		ids[ok.Messages[0].ID] = true
	}
	if s.Count() != 3 {
		t.Errorf("Count = %d, want 3", s.Count())
	}
	rec := s.Received()
	if len(rec) != 3 {
		t.Fatalf("Received %d, want 3", len(rec))
	}
	r := rec[0]
	if r.PhoneNumberID != phone || r.Token != token || r.To != "+1 555 0100" || string(r.Body) != body ||
		!ids[r.WAMID] || r.ErrorCode != 0 || r.At.IsZero() {
		t.Errorf("Received[0] = %+v", r)
	}
}

func TestSendRefusals(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	s.SetToken(phone, token)
	anyTok := start(t, Options{AcceptAnyToken: true})
	anyTok.SetToken(phone, token)
	cases := []struct {
		name     string
		srv      *Server
		phone    string
		auth     string
		payload  string
		status   int
		code     int
		accepted bool
	}{
		{"no authorization", s, phone, "", body, 401, 190, false},
		{"not a bearer token", s, phone, "Basic " + token, body, 401, 190, false},
		{"empty bearer", s, phone, "Bearer ", body, 401, 190, false},
		{"wrong token", s, phone, "Bearer nope", body, 401, 190, false},
		{"another number's token", s, "999", "Bearer " + token, body, 401, 190, false},
		{"any token for an unknown number in dev", anyTok, "999", "Bearer whatever", body, 200, 0, true},
		{"dev still checks a given token", anyTok, phone, "Bearer whatever", body, 401, 190, false},
		{"not json", s, phone, "Bearer " + token, `{"messaging_product":`, 400, 100, false},
		{"wrong product", s, phone, "Bearer " + token, `{"messaging_product":"sms","to":"1"}`, 400, 100, false},
		{"missing to", s, phone, "Bearer " + token, `{"messaging_product":"whatsapp"}`, 400, 100, false},
		{"array body", s, phone, "Bearer " + token, `[]`, 400, 100, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := post(t, c.srv.URL()+"/v22.0/"+c.phone+"/messages", c.auth, c.payload)
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %s", a.status, c.status, a.body)
			}
			if c.accepted {
				return
			}
			if e := errorOf(t, a); e.Code != c.code {
				t.Errorf("code %d, want %d", e.Code, c.code)
			}
			if strings.Contains(string(a.body), token) {
				t.Error("error body echoes the token")
			}
		})
	}
	if s.Count() != 0 {
		t.Errorf("Count = %d after refusals only", s.Count())
	}
	for _, r := range s.Received() {
		if r.WAMID != "" || r.ErrorCode == 0 {
			t.Errorf("refused send recorded as %+v", r)
		}
	}
}

func TestInjectedErrors(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	s.SetToken(phone, token)
	s.SetToken("222", token)

	s.FailNext(phone, 2, ErrorSpec{Code: 131048, Title: "Spam rate limit hit"})
	for i := range 2 {
		a := send(t, s, phone, token, body)
		if e := errorOf(t, a); a.status != 400 || e.Code != 131048 || e.Message != "Spam rate limit hit" {
			t.Fatalf("send %d: %d %s", i, a.status, a.body)
		}
	}
	if a := send(t, s, phone, token, body); a.status != 200 {
		t.Fatalf("third send after FailNext(2): %d %s", a.status, a.body)
	}

	// Default HTTP statuses follow the code; an explicit one wins; subcode is carried.
	for _, c := range []struct {
		spec   ErrorSpec
		status int
	}{
		{ErrorSpec{Code: 130429}, 429},
		{ErrorSpec{Code: 2}, 500},
		{ErrorSpec{Code: 190}, 401},
		{ErrorSpec{Code: 131026}, 400},
		{ErrorSpec{Code: 131000, HTTPStatus: 503, Subcode: 2494010}, 503},
	} {
		s.FailNext(phone, 1, c.spec)
		a := send(t, s, phone, token, body)
		e := errorOf(t, a)
		if a.status != c.status || e.Code != c.spec.Code || e.ErrorSubcode != c.spec.Subcode {
			t.Errorf("spec %+v: %d %s", c.spec, a.status, a.body)
		}
	}

	// n < 0 lasts until ClearErrors, and only for that number.
	s.FailNext(phone, -1, ErrorSpec{Code: 368})
	for range 3 {
		if a := send(t, s, phone, token, body); a.status != 400 {
			t.Fatalf("FailNext(-1): %d", a.status)
		}
	}
	if a := send(t, s, "222", token, body); a.status != 200 {
		t.Fatalf("other number failed: %d %s", a.status, a.body)
	}
	s.ClearErrors()
	if a := send(t, s, phone, token, body); a.status != 200 {
		t.Fatalf("after ClearErrors: %d %s", a.status, a.body)
	}

	// FailRecipient hits that recipient only.
	s.FailRecipient("15550199", 1, ErrorSpec{Code: 131056, Title: "pair rate"})
	other := `{"messaging_product":"whatsapp","to":"15550199"}`
	if a := send(t, s, phone, token, body); a.status != 200 {
		t.Fatalf("other recipient: %d", a.status)
	}
	if a := send(t, s, phone, token, other); errorOf(t, a).Code != 131056 {
		t.Fatalf("recipient error: %s", a.body)
	}
	if a := send(t, s, phone, token, other); a.status != 200 {
		t.Fatalf("recipient after its one error: %d", a.status)
	}
}

func TestThroughputLimit(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	s.SetToken(phone, token)
	s.SetThroughput(phone, 1) // burst 1
	okN, limited := 0, 0
	for range 4 {
		a := send(t, s, phone, token, body)
		switch a.status {
		case 200:
			okN++
		case 429:
			if errorOf(t, a).Code != 130429 {
				t.Fatalf("limited with %s", a.body)
			}
			limited++
		default:
			t.Fatalf("status %d", a.status)
		}
	}
	// 4 sends in well under a second at 1/s with a burst of 1: at most 2 get through
	// (1/s rather than more, so a loaded machine cannot stretch them past a refill).
	if okN == 0 || okN > 2 || limited < 2 {
		t.Errorf("ok=%d limited=%d", okN, limited)
	}
	s.SetThroughput(phone, 0)
	for range 5 {
		if a := send(t, s, phone, token, body); a.status != 200 {
			t.Fatalf("after removing the limit: %d", a.status)
		}
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	s := start(t, Options{Latency: 150 * time.Millisecond})
	s.SetToken(phone, token)
	began := time.Now()
	if a := send(t, s, phone, token, body); a.status != 200 {
		t.Fatal(a.status)
	}
	answered := time.Now()
	if d := answered.Sub(began); d < 150*time.Millisecond {
		t.Errorf("answer came after %v, before the configured latency", d)
	}
	s.SetLatency(0)
	// The send was recorded at arrival, not after the delay: the whole latency lies
	// between the record and the answer, however slowly the request got there.
	if r := s.Received()[0]; answered.Sub(r.At) < 150*time.Millisecond {
		t.Errorf("recorded %v before the answer, want at least the latency", answered.Sub(r.At))
	}
}

func TestControlEndpoints(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	ctl := func(path, payload string) int {
		return post(t, s.URL()+path, "", payload).status
	}
	if st := ctl("/_fake/tokens", `{"phone_number_id":"`+phone+`","token":"`+token+`"}`); st != 204 {
		t.Fatalf("tokens: %d", st)
	}
	if a := send(t, s, phone, token, body); a.status != 200 {
		t.Fatalf("send after token over HTTP: %d", a.status)
	}
	if st := ctl("/_fake/errors", `{"phone_number_id":"`+phone+`","n":1,"error":{"code":131047,"title":"Re-engagement message"}}`); st != 204 {
		t.Fatalf("errors: %d", st)
	}
	if a := send(t, s, phone, token, body); errorOf(t, a).Code != 131047 {
		t.Fatalf("injected over HTTP: %s", a.body)
	}
	if st := ctl("/_fake/throughput", `{"phone_number_id":"`+phone+`","mps":1}`); st != 204 {
		t.Fatalf("throughput: %d", st)
	}
	send(t, s, phone, token, body)
	if a := send(t, s, phone, token, body); a.status != 429 {
		t.Fatalf("throughput over HTTP not applied: %d", a.status)
	}
	if st := ctl("/_fake/latency", `{"latency_ms":0}`); st != 204 {
		t.Fatalf("latency: %d", st)
	}
	s.SetToken("333", "other")
	send(t, s, "333", "other", body)

	get := func(path string, v any) {
		resp, err := http.Get(s.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var all, one []Received
	get("/_fake/messages", &all)
	get("/_fake/messages?phone_number_id=333", &one)
	if len(all) != 5 || len(one) != 1 || one[0].Token != "other" || string(one[0].Body) != body {
		t.Fatalf("listed %d and %+v", len(all), one)
	}
	var stats map[string]int
	get("/_fake/stats", &stats)
	if stats["accepted"] != 3 || stats["received"] != 5 {
		t.Errorf("stats %v", stats)
	}
	if st := ctl("/_fake/reset", ``); st != 204 {
		t.Fatalf("reset: %d", st)
	}
	get("/_fake/messages", &all)
	if len(all) != 0 || s.Count() != 0 {
		t.Errorf("after reset: %d listed, count %d", len(all), s.Count())
	}

	for path, payload := range map[string]string{
		"/_fake/tokens":     `{"phone_number_id":"1"}`,
		"/_fake/errors":     `{"phone_number_id":"1","to":"2","error":{"code":1}}`,
		"/_fake/throughput": `{"phone_number_id":"1","mps":-1}`,
		"/_fake/latency":    `nope`,
	} {
		if st := ctl(path, payload); st != 400 {
			t.Errorf("POST %s %s: %d, want 400", path, payload, st)
		}
	}
	if st := ctl("/nope", `{}`); st != 400 {
		t.Errorf("unknown path: %d", st)
	}
}

func TestConcurrentSendsAllRecorded(t *testing.T) {
	t.Parallel()
	s := start(t, Options{AcceptAnyToken: true})
	c := &fasthttp.Client{}
	const workers, each = 32, 50
	var wg sync.WaitGroup
	wamids := make(chan string, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI(fmt.Sprintf("%s/v22.0/%d/messages", s.URL(), w))
				req.Header.SetMethod("POST")
				req.Header.Set("Authorization", "Bearer t")
				req.SetBodyString(fmt.Sprintf(`{"messaging_product":"whatsapp","to":"%d"}`, i))
				if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					t.Errorf("send: %v %d", err, resp.StatusCode())
				}
				var ok metaOK
				if err := json.Unmarshal(resp.Body(), &ok); err == nil && len(ok.Messages) == 1 {
					wamids <- ok.Messages[0].ID
				}
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
			}
		})
	}
	wg.Wait()
	close(wamids)
	seen := map[string]bool{}
	for id := range wamids {
		if seen[id] {
			t.Fatalf("duplicate wamid %s", id)
		}
		seen[id] = true
	}
	if len(seen) != workers*each || s.Count() != workers*each || len(s.Received()) != workers*each {
		t.Errorf("wamids %d, Count %d, Received %d; want %d", len(seen), s.Count(), len(s.Received()), workers*each)
	}
}

func TestMaxReceivedKeepsNewest(t *testing.T) {
	t.Parallel()
	s := start(t, Options{AcceptAnyToken: true, MaxReceived: 10})
	for i := range 25 {
		send(t, s, phone, "t", fmt.Sprintf(`{"messaging_product":"whatsapp","to":"%d"}`, i))
	}
	rec := s.Received()
	if len(rec) > 10 || len(rec) == 0 || rec[len(rec)-1].To != "24" {
		t.Errorf("kept %d, last %+v", len(rec), rec[len(rec)-1])
	}
	if s.Count() != 25 {
		t.Errorf("Count = %d, want 25", s.Count())
	}
	if !bytes.Contains(rec[len(rec)-1].Body, []byte(`"24"`)) {
		t.Error("body not kept")
	}
}

func BenchmarkSend(b *testing.B) {
	s := start(b, Options{AcceptAnyToken: true, MaxReceived: 100000})
	c := &fasthttp.Client{MaxConnsPerHost: 512}
	url := s.URL() + "/v22.0/" + phone + "/messages"
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		req.Header.SetMethod("POST")
		req.Header.Set("Authorization", "Bearer t")
		req.SetBodyString(body)
		for pb.Next() {
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Fatalf("%v %d", err, resp.StatusCode())
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}

// BenchmarkHandleSend is the fake's own work per send, without the HTTP exchange.
func BenchmarkHandleSend(b *testing.B) {
	s := New(Options{AcceptAnyToken: true, MaxReceived: 100000})
	h := s.Handler()
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v22.0/" + phone + "/messages")
		ctx.Request.Header.Set("Authorization", "Bearer t")
		ctx.Request.SetBodyString(body)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// Close right after Start returns even when Serve has not started accepting yet.
func TestCloseRightAfterStart(t *testing.T) {
	t.Parallel()
	for range 200 {
		s := New(Options{})
		if err := s.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return")
		}
	}
}
