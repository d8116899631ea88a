package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/sender"
)

// stack is the gateway and the sender, each through its production Run, over a broker
// whose produce requests the test can freeze, a fake Graph API and a database of its own.
type stack struct {
	base    string
	token   string
	fake    *fakemeta.Server
	freeze  func()
	thaw    func()
	held    *atomic.Int32
	client  *http.Client
	cluster *kfake.Cluster
}

const (
	stackTenant = "acme"
	stackNumber = "106540352242922"
)

func startStack(t *testing.T) *stack {
	t.Helper()
	dbURL, pool := storetest.New(t)
	keySpec, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseKeyRing([]string{keySpec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := account.NewRepository(pool, keys).Upsert(context.Background(), account.UpsertInput{
		TenantID: stackTenant, WABAID: "102290129340398", PhoneNumberID: stackNumber, AccessToken: "meta-token-acme",
		ThroughputMPS: 1000, IsDefault: true,
	}); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	// The roles log through slog.Default: keep a 504 storm out of the test output.
	prev := slog.Default()
	slog.SetDefault(quiet)
	t.Cleanup(func() { slog.SetDefault(prev) })
	fake := fakemeta.New(fakemeta.Options{Logger: quiet})
	if err := fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	fake.SetToken(stackNumber, "meta-token-acme")

	// The broker: kfake, with a control that freezes produce requests: it reads them and
	// answers nothing until thawed, then appends them as usual (what a paused broker
	// process does when it resumes).
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, queue.AllTopics...),
		kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{fake: fake, held: &atomic.Int32{}, client: &http.Client{Timeout: 20 * time.Second}, cluster: cluster}
	var mu sync.Mutex
	var wake chan struct{}
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		mu.Lock()
		w := wake
		mu.Unlock()
		if w == nil {
			return nil, nil, false
		}
		s.held.Add(1)
		cluster.SleepControl(func() { <-w })
		return nil, nil, false
	})
	s.freeze = func() { mu.Lock(); wake = make(chan struct{}); mu.Unlock() }
	s.thaw = func() {
		mu.Lock()
		if wake != nil {
			close(wake)
			wake = nil
		}
		mu.Unlock()
	}
	t.Cleanup(cluster.Close)
	t.Cleanup(s.thaw)

	cfg := config.Default()
	cfg.Database.URL = dbURL
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.Partitions = 3
	cfg.Kafka.WriteTimeout = time.Second
	cfg.HTTP.Addr = freeAddr(t)
	cfg.Graph.BaseURL = fake.URL()
	cfg.Graph.Timeout = 5 * time.Second
	cfg.JWT.Secret = "outcome-test-secret-that-is-at-least-32-bytes"
	cfg.Secrets.TokenKeys = []string{keySpec}
	cfg.Sender.RetryBaseDelay = 20 * time.Millisecond
	cfg.Sender.InProcessRetryMax = 100 * time.Millisecond
	s.token, err = auth.IssueHS256([]byte(cfg.JWT.Secret), cfg.JWT.TenantClaim, stackTenant, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var roles sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{
		"gateway": func(ctx context.Context) error { return gateway.Run(ctx, cfg) },
		"sender": func(ctx context.Context) error {
			return sender.Run(ctx, cfg, func(o *sender.Options) {
				o.SessionTimeout, o.RebalanceTimeout, o.HeartbeatInterval = 2*time.Second, 3*time.Second, 200*time.Millisecond
			})
		},
	} {
		roles.Add(1)
		go func() {
			defer roles.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	t.Cleanup(func() {
		s.thaw()
		cancel()
		roles.Wait()
	})
	s.base = "http://" + cfg.HTTP.Addr
	waitFor(t, 30*time.Second, func() bool {
		resp, err := http.Get(s.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s
}

type answer struct {
	status int
	body   []byte
	// id is the message id the answer names: {"id"} (202), messages[0].id (200 on the
	// Cloud API path) or error.id (504; error.error_data.message_id on the Cloud API
	// path, whose errors are in Meta's shape). code is the stable error code in either.
	id, code, msgStatus string
}

// reusedStatus is the status of idempotency_key_reused on path: 422 on /v1, 400 (Meta's
// code 100) on the Cloud API path.
func reusedStatus(path string) int {
	if strings.HasPrefix(path, "/v1/") {
		return 422
	}
	return 400
}

func (s *stack) send(t *testing.T, path, key, text string) answer {
	t.Helper()
	body := fmt.Sprintf(`{"messaging_product":"whatsapp","to":"+919876543210","type":"text","text":{"body":%q}}`, text)
	req, _ := http.NewRequest("POST", s.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", path, err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, body: b}
	var v struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		Messages []struct {
			ID     string `json:"id"`
			Status string `json:"message_status"`
		} `json:"messages"`
		Error struct {
			Code      any    `json:"code"` // a string on /v1, Meta's number on the Cloud API path
			ID        string `json:"id"`
			ErrorData struct {
				AerogateCode string `json:"aerogate_code"`
				MessageID    string `json:"message_id"`
			} `json:"error_data"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &v)
	a.id, a.msgStatus = v.ID, v.Status
	a.code, _ = v.Error.Code.(string)
	if a.code == "" {
		a.code = v.Error.ErrorData.AerogateCode
	}
	if v.Error.ErrorData.MessageID != "" {
		a.id = v.Error.ErrorData.MessageID
	}
	if len(v.Messages) == 1 {
		a.id, a.msgStatus = v.Messages[0].ID, v.Messages[0].Status
	}
	if v.Error.ID != "" {
		a.id = v.Error.ID
	}
	return a
}

func (s *stack) get(t *testing.T, id string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.base+"/v1/messages/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", id, err)
	}
	defer resp.Body.Close()
	var v struct{ Status string }
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v.Status
}

// deliveries counts the fake Graph API's accepted sends by text body.
func (s *stack) deliveries() map[string]int {
	out := map[string]int{}
	for _, r := range s.fake.Received() {
		if r.WAMID == "" {
			continue
		}
		var p struct{ Text struct{ Body string } }
		_ = json.Unmarshal(r.Body, &p)
		out[p.Text.Body]++
	}
	return out
}

// TestFrozenBrokerAnswersTellTheTruth freezes the broker behind a running gateway: no
// answer claims that nothing was accepted for a message that is later delivered; every
// answer names its message, and GET tells the outcome, first unknown, then sent once the
// broker woke up and the sender delivered it, exactly once, retries with the same key
// included.
func TestFrozenBrokerAnswersTellTheTruth(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway and the sender")
	}
	s := startStack(t)
	if a := s.send(t, "/v1/messages", "", "warm-up"); a.status != 202 {
		t.Fatalf("send with the broker up: %d %s", a.status, a.body)
	}

	s.freeze()
	type sent struct {
		text, path, key string
		a               answer
	}
	var all []*sent
	for i := range 12 {
		path := "/v1/messages"
		if i%2 == 1 {
			path = "/v22.0/" + stackNumber + "/messages"
		}
		key := ""
		if i%3 != 0 {
			key = fmt.Sprintf("frozen-key-%d", i)
		}
		all = append(all, &sent{text: fmt.Sprintf("frozen-%02d", i), path: path, key: key})
	}
	var wg sync.WaitGroup
	for _, m := range all {
		wg.Add(1)
		go func() { defer wg.Done(); m.a = s.send(t, m.path, m.key, m.text) }()
	}
	wg.Wait()
	if s.held.Load() == 0 {
		t.Fatal("the broker held no produce request: the freeze did not take")
	}
	// Normally every send shares the held produce request and is unknown (504). On a
	// loaded machine a late one can still be waiting behind it when its deadline passes:
	// then it was not written, and 503 is the truth; it must never be delivered.
	var unknown, notWritten []*sent
	for _, m := range all {
		switch {
		case m.a.status == 504 && m.a.code == "queue_timeout" && len(m.a.id) == 36:
			unknown = append(unknown, m)
		case m.a.status == 503 && m.a.code == "queue_unavailable":
			notWritten = append(notWritten, m)
		default:
			t.Errorf("%s to %s with the broker frozen: %d %s, want 504 queue_timeout with the id (or 503 queue_unavailable)", m.text, m.path, m.a.status, m.a.body)
		}
	}
	var retried *sent
	for _, m := range unknown {
		if m.key != "" && retried == nil {
			retried = m
		}
	}
	if retried == nil {
		t.Fatalf("no keyed send was in the held produce request (%d unknown, %d not written)", len(unknown), len(notWritten))
	}
	// Retried with the same key and body while still frozen: the same id, still unknown.
	// With the same key and another body: refused, nothing published.
	again := s.send(t, retried.path, retried.key, retried.text)
	if again.status != 504 || again.id != retried.a.id {
		t.Errorf("same key, same body, still frozen: %d %s, want 504 with id %s", again.status, again.body, retried.a.id)
	}
	if r := s.send(t, retried.path, retried.key, "another body"); r.status != reusedStatus(retried.path) || r.code != "idempotency_key_reused" {
		t.Errorf("same key, another body: %d %s, want %d idempotency_key_reused", r.status, r.body, reusedStatus(retried.path))
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, m := range unknown {
			if st, status := s.get(t, m.a.id); st != 200 || status != "unknown" {
				return false
			}
		}
		return true
	})

	s.thaw()
	waitFor(t, 30*time.Second, func() bool {
		for _, m := range unknown {
			if _, status := s.get(t, m.a.id); status != "sent" {
				return false
			}
		}
		return true
	})
	// Any late copy (the retry published the key's message twice) has had time to reach
	// the fake by now, if the sender let it.
	time.Sleep(500 * time.Millisecond)
	got := s.deliveries()
	for _, m := range unknown {
		if got[m.text] != 1 {
			t.Errorf("%s answered 504 and delivered %d times, want once", m.text, got[m.text])
		}
	}
	for _, m := range notWritten {
		if got[m.text] != 0 {
			t.Errorf("%s answered 503 (nothing accepted) but was delivered %d times", m.text, got[m.text])
		}
	}
	if got["another body"] != 0 {
		t.Errorf("the refused body was delivered")
	}
	// After the thaw, the same key and body: the same id and its status now, nothing sent.
	if r := s.send(t, retried.path, retried.key, retried.text); r.status/100 != 2 || r.id != retried.a.id || r.msgStatus != "sent" {
		t.Errorf("same key, same body after delivery: %d %s, want the same id, sent", r.status, r.body)
	}
	if got := s.deliveries(); got[retried.text] != 1 {
		t.Errorf("%s delivered %d times after the last retry, want once", retried.text, got[retried.text])
	}
}

// TestIdempotencyKeyBoundToItsRequest: the same key with another body is refused and
// sends nothing; the same key and body from parallel clients yields one id and one
// Graph call.
func TestIdempotencyKeyBoundToItsRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway and the sender")
	}
	s := startStack(t)

	first := s.send(t, "/v1/messages", "order-1", "key body A")
	if first.status != 202 {
		t.Fatalf("first use: %d %s", first.status, first.body)
	}
	for _, tc := range []struct{ path, text string }{
		{"/v1/messages", "key body B"},
		{"/v22.0/" + stackNumber + "/messages", "key body A"}, // another path is another request
	} {
		if r := s.send(t, tc.path, "order-1", tc.text); r.status != reusedStatus(tc.path) || r.code != "idempotency_key_reused" {
			t.Errorf("reuse on %s with %q: %d %s, want %d idempotency_key_reused", tc.path, tc.text, r.status, r.body, reusedStatus(tc.path))
		}
	}

	const parallel = 8
	answers := make([]answer, parallel)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = s.send(t, "/v1/messages", "order-2", "parallel body") }()
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != 202 || a.id != answers[0].id {
			t.Errorf("parallel %d: %d %s, want 202 with the id %s", i, a.status, a.body, answers[0].id)
		}
	}
	waitFor(t, 20*time.Second, func() bool {
		_, a := s.get(t, first.id)
		_, b := s.get(t, answers[0].id)
		return a == "sent" && b == "sent"
	})
	time.Sleep(500 * time.Millisecond) // a second copy, if the sender let it go, has reached the fake
	got := s.deliveries()
	if got["key body A"] != 1 || got["key body B"] != 0 || got["parallel body"] != 1 {
		t.Errorf("deliveries %v, want key body A once, key body B never, parallel body once", got)
	}
	if n := s.fake.Count(); n != 2 {
		t.Errorf("the fake Graph API accepted %d sends, want 2", n)
	}
}
