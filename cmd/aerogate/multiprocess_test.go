package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/devenv"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/internal/webhook"
)

// The multi-process run's secrets: none may show in any log.
const (
	mpJWTSecret   = "multiprocess-jwt-secret-of-at-least-32-bytes"
	mpAppSecret   = "multiprocess-app-secret-0123456789abcdef"
	mpVerifyToken = "multiprocess-verify-token-5f1e"
	// Every send's text and every inbound message's text start with these: message
	// bodies are not to be logged either.
	sendMarker    = "confidential-body-"
	inboundMarker = "customer-says-"
	mpTenant      = "acme"
	mpNumber      = "106540352242922" // the fake dialog's default grant
)

// mpGrace is shutdown.grace of the roles: a SIGTERM'd process must be gone within it
// (and exit 0), or the test fails.
const mpGrace = 20 * time.Second

// proc is one OS process of the stack, started again after each stop. Its output, over
// every run, is kept for the log checks.
type proc struct {
	name  string
	bin   string
	args  []string
	env   []string
	ready string // a URL answering 200 once the process serves; "" for none
	out   *syncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	state  *os.ProcessState
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	fmt.Fprintf(p.out, "=== start %s\n", p.name)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(exited)
	}()
	p.cmd, p.exited, p.state = cmd, exited, nil
}

// signal sends sig to the running process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// wait waits for the process to exit and returns its exit code; a process still there
// after d is a failure (it did not stop within its grace).
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(d):
		t.Fatalf("%s still runs %v after SIGTERM", p.name, d)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.ExitCode()
}

func (p *proc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// waitReady polls the process's readiness URL until it answers 200; the process
// exiting meanwhile fails the test.
func (p *proc) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	if p.ready == "" {
		return
	}
	deadline := time.Now().Add(d)
	for {
		resp, err := http.Get(p.ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		p.mu.Lock()
		exited := p.exited
		p.mu.Unlock()
		select {
		case <-exited:
			t.Fatalf("%s exited before it was ready:\n%s", p.name, tail(p.out.String(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v (%s: %v):\n%s", p.name, d, p.ready, err, tail(p.out.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// mpStack is the whole deployment as separate processes.
type mpStack struct {
	t        *testing.T
	bin      string
	env      []string
	broker   *proc
	graph    *proc
	roles    []*proc // gateway ×2, webhooks, sender ×2, ingest
	gateways []string
	edge     string // the webhooks role's base URL
	fake     string
	dbURL    string
	keys     []string
	jwt      string
	pool     *pgxpool.Pool
	secrets  []string // codes and states of the onboarding
	tokens   []string // access tokens the fake saw
}

// TestMultiProcessRestarts runs every role as its own OS process from the built binary
// (gateway twice, the webhook edge, sender twice, ingest), next to `aerogate broker` and
// `aerogate fake-graph`, on one throwaway database. Under a steady load of sends (each
// with an Idempotency-Key, retried on failure as a client would) and signed inbound
// webhooks, every role process gets SIGTERM and is started again, first one at a time
// (a rolling restart), then all at once. After each phase it reconciles: every send that
// was answered 202 reached the fake Graph API exactly once (SIGTERM lets in-flight sends
// finish and commits their offsets, so there is no duplicate window here: that is the
// crash tests' SIGKILL), and every webhook answered 200 was stored once. At the end no
// process log holds a token, a JWT, a key, the app secret, a code, a state, a PIN or a
// message body. Run with -v to see the counts.
func TestMultiProcessRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs eight processes")
	}
	s := startMPStack(t)
	s.onboard()
	s.checkHealthcheckCommand()

	var total mpCounts
	for _, phase := range []struct {
		name    string
		restart func(s *mpStack, load *mpLoad)
	}{
		{"rolling", (*mpStack).rollingRestart},
		{"all-at-once", (*mpStack).allAtOnceRestart},
	} {
		load := s.startLoad(phase.name)
		load.waitSome(20)
		phase.restart(s, load)
		load.waitSome(20) // the restarted stack takes load again
		load.stop()
		c := s.reconcile(phase.name, load)
		t.Logf("%s restart: %d sends accepted (202), %d reached Graph, %d lost, %d sent twice; %d webhooks acknowledged, %d stored, %d lost",
			phase.name, c.accepted, c.delivered, c.lost, c.duplicated, c.webhooks, c.stored, c.webhooksLost)
		if c.lost != 0 || c.duplicated != 0 || c.webhooksLost != 0 {
			t.Errorf("%s restart: %d lost, %d sent twice, %d webhooks lost; want none", phase.name, c.lost, c.duplicated, c.webhooksLost)
		}
		if c.accepted == 0 || c.webhooks == 0 {
			t.Errorf("%s restart: no load went through", phase.name)
		}
		total.add(c)
	}
	t.Logf("in all: %d sends accepted, %d lost, %d sent twice; %d webhooks, %d lost",
		total.accepted, total.lost, total.duplicated, total.webhooks, total.webhooksLost)

	s.stopAll()
	s.checkLogs()
}

func startMPStack(t *testing.T) *mpStack {
	t.Helper()
	s := &mpStack{t: t, bin: buildBinary(t), dbURL: storetest.NewEmpty(t)}
	k1, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	s.keys = []string{k1}
	kafkaAddr, graphAddr := freeAddr(t), freeAddr(t)
	s.fake = "http://" + graphAddr
	gw1, gw2, edge := freeAddr(t), freeAddr(t), freeAddr(t)
	s.gateways = []string{"http://" + gw1, "http://" + gw2}
	s.edge = "http://" + edge
	s.env = []string{
		"AEROGATE_DATABASE_URL=" + s.dbURL,
		"AEROGATE_DATABASE_MAX_CONNS=8",
		"AEROGATE_KAFKA_BROKERS=" + kafkaAddr,
		"AEROGATE_KAFKA_PARTITIONS=4",
		"AEROGATE_DEV_KAFKA_ADDR=" + kafkaAddr,
		"AEROGATE_DEV_FAKE_GRAPH_ADDR=" + graphAddr,
		"AEROGATE_DEV_DATA_DIR=" + t.TempDir(),
		"AEROGATE_GRAPH_BASE_URL=" + s.fake,
		"AEROGATE_GRAPH_TIMEOUT=5s",
		"AEROGATE_META_DIALOG_BASE_URL=" + s.fake,
		"AEROGATE_META_APP_ID=" + devenv.DevAppID,
		"AEROGATE_META_CONFIG_ID=" + devenv.DevConfigID,
		"AEROGATE_META_APP_SECRET=" + mpAppSecret,
		"AEROGATE_META_VERIFY_TOKEN=" + mpVerifyToken,
		"AEROGATE_PUBLIC_BASE_URL=" + s.gateways[0],
		"AEROGATE_JWT_SECRET=" + mpJWTSecret,
		"AEROGATE_SECRETS_TOKEN_KEYS=" + strings.Join(s.keys, ","),
		"AEROGATE_LOG_FORMAT=json",
		"AEROGATE_SHUTDOWN_GRACE=" + mpGrace.String(),
		"AEROGATE_SHUTDOWN_DRAIN_DELAY=500ms",
	}
	newProc := func(name string, ready string, env []string, args ...string) *proc {
		p := &proc{name: name, bin: s.bin, args: args, env: append(append([]string(nil), s.env...), env...),
			ready: ready, out: &syncBuffer{}}
		t.Cleanup(func() {
			p.kill()
			if t.Failed() {
				t.Logf("%s output:\n%s", name, tail(p.out.String(), 20000))
			}
		})
		return p
	}

	s.broker = newProc("broker", "", nil, "broker")
	s.broker.start(t)
	s.graph = newProc("fake-graph", s.fake+"/_fake/stats", nil, "fake-graph", "--status-webhooks-url", s.edge+webhook.Path)
	s.graph.start(t)
	s.graph.waitReady(t, 30*time.Second)
	// Graph calls take a while, so a SIGTERM finds some in flight.
	if resp, err := http.Post(s.fake+"/_fake/latency", "application/json", strings.NewReader(`{"latency_ms":40}`)); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	// migrate waits for the broker by itself (--wait).
	migrate := exec.Command(s.bin, "migrate", "--wait", "30s")
	migrate.Env = append(os.Environ(), s.env...)
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("aerogate migrate: %v\n%s", err, out)
	} else {
		_, _ = s.broker.out.Write(out) // checked with the other logs
	}
	pool, err := store.Open(context.Background(), s.dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.pool = pool

	admin := func() string { return freeAddr(t) }
	for i, gw := range []string{gw1, gw2} {
		a := admin()
		s.roles = append(s.roles, newProc(fmt.Sprintf("gateway-%d", i+1), "http://"+gw+"/readyz",
			[]string{"AEROGATE_HTTP_ADDR=" + gw, "AEROGATE_ADMIN_ADDR=" + a}, "gateway"))
	}
	s.roles = append(s.roles, newProc("webhooks", s.edge+"/readyz",
		[]string{"AEROGATE_WEBHOOKS_ADDR=" + edge, "AEROGATE_ADMIN_ADDR=" + admin()}, "webhooks"))
	for i := range 2 {
		a := admin()
		s.roles = append(s.roles, newProc(fmt.Sprintf("sender-%d", i+1), "http://"+a+"/readyz",
			[]string{"AEROGATE_ADMIN_ADDR=" + a}, "sender"))
	}
	a := admin()
	s.roles = append(s.roles, newProc("ingest", "http://"+a+"/readyz", []string{"AEROGATE_ADMIN_ADDR=" + a}, "ingest"))
	a = admin()
	s.roles = append(s.roles, newProc("refresher", "http://"+a+"/readyz", []string{"AEROGATE_ADMIN_ADDR=" + a}, "refresher"))
	for _, p := range s.roles {
		p.start(t)
	}
	for _, p := range s.roles {
		p.waitReady(t, 60*time.Second)
	}

	tok, err := auth.IssueHS256([]byte(mpJWTSecret), "tenantId", mpTenant, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	s.jwt = tok
	return s
}

// onboard connects the tenant's numbers through Embedded Signup (both entrances), as
// the README walks it, on the first gateway.
func (s *mpStack) onboard() {
	s.t.Helper()
	s.secrets = append(s.secrets, walkOnboarding(s.t, s.gateways[0], s.fake, s.jwt)...)
}

// checkHealthcheckCommand runs `aerogate healthcheck` as the compose file does, with a
// role's environment: 0 while it is ready, not 0 for an address nothing answers on.
func (s *mpStack) checkHealthcheckCommand() {
	s.t.Helper()
	sender := s.roles[3]
	hc := exec.Command(s.bin, "healthcheck")
	hc.Env = append(os.Environ(), sender.env...)
	if out, err := hc.CombinedOutput(); err != nil {
		s.t.Errorf("aerogate healthcheck of a ready sender: %v\n%s", err, out)
	}
	hc = exec.Command(s.bin, "healthcheck", "--url", "http://"+freeAddr(s.t)+"/readyz")
	hc.Env = append(os.Environ(), sender.env...)
	if out, err := hc.CombinedOutput(); err == nil {
		s.t.Errorf("aerogate healthcheck of nothing succeeded:\n%s", out)
	}
}

// stopRole sends SIGTERM and checks the process stopped cleanly within its grace.
func (s *mpStack) stopRole(p *proc) {
	s.t.Helper()
	if code := p.wait(s.t, mpGrace+10*time.Second); code != 0 {
		s.t.Errorf("%s exited with %d after SIGTERM, want 0 (a graceful stop):\n%s", p.name, code, tail(p.out.String(), 4000))
	}
}

// rollingRestart stops and starts each role process in turn, waiting for it to be ready
// again, and for more sends to go through, before the next one. Each process must turn
// unready (503 on /readyz) before it stops listening.
func (s *mpStack) rollingRestart(load *mpLoad) {
	for _, p := range s.roles {
		unready := s.watchUnready(p)
		p.signal(s.t, syscall.SIGTERM)
		s.stopRole(p)
		if !<-unready {
			s.t.Errorf("%s never answered /readyz with 503 between SIGTERM and its exit", p.name)
		}
		p.start(s.t)
		p.waitReady(s.t, 60*time.Second)
		load.waitSome(10)
	}
}

// watchUnready polls p's readiness URL until it stops answering and says whether it saw a
// 503 meanwhile.
func (s *mpStack) watchUnready(p *proc) <-chan bool {
	seen := make(chan bool, 1)
	go func() {
		saw := false
		defer func() { seen <- saw }()
		client := &http.Client{Timeout: time.Second}
		for deadline := time.Now().Add(mpGrace); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			resp, err := client.Get(p.ready)
			if err != nil {
				if saw {
					return
				}
				continue // not the answer yet, or a connection the stop closed
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				saw = true
			}
			p.mu.Lock()
			exited := p.exited
			p.mu.Unlock()
			select {
			case <-exited:
				return
			default:
			}
		}
	}()
	return seen
}

// allAtOnceRestart stops every role process at once, then starts them all again.
func (s *mpStack) allAtOnceRestart(*mpLoad) {
	for _, p := range s.roles {
		p.signal(s.t, syscall.SIGTERM)
	}
	for _, p := range s.roles {
		s.stopRole(p)
	}
	for _, p := range s.roles {
		p.start(s.t)
	}
	for _, p := range s.roles {
		p.waitReady(s.t, 60*time.Second)
	}
}

// stopAll stops every role process with SIGTERM, then the fake Graph API and the broker;
// each must exit 0.
func (s *mpStack) stopAll() {
	for _, group := range [][]*proc{s.roles, {s.graph, s.broker}} {
		for _, p := range group {
			p.signal(s.t, syscall.SIGTERM)
		}
		for _, p := range group {
			s.stopRole(p)
		}
	}
}

// mpLoad is a phase's steady load: sends and inbound webhooks, each retried until it is
// acknowledged, as a client and Meta do.
type mpLoad struct {
	s      *mpStack
	phase  string
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	accepted map[string]string // marker → message id (202)
	webhooks map[string]bool   // wamid → acknowledged (200)
	sends    atomic.Int64
	failures atomic.Int64 // tries that did not get their acknowledgement
}

const (
	mpSendWorkers = 3
	mpSendEvery   = 60 * time.Millisecond // per worker: about 50 sends a second
	mpHookEvery   = 100 * time.Millisecond
	mpTryDeadline = 60 * time.Second // one send or webhook gives up after this
)

func (s *mpStack) startLoad(phase string) *mpLoad {
	l := &mpLoad{s: s, phase: phase, stopCh: make(chan struct{}), accepted: map[string]string{}, webhooks: map[string]bool{}}
	var seq atomic.Int64
	client := &http.Client{Timeout: 15 * time.Second}
	for w := range mpSendWorkers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stopCh:
					return
				case <-time.After(mpSendEvery):
				}
				n := seq.Add(1)
				l.send(client, w+i, fmt.Sprintf("%s%s-%d", sendMarker, phase, n), fmt.Sprintf("1555010%04d", n%16))
			}
		})
	}
	l.wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-l.stopCh:
				return
			case <-time.After(mpHookEvery):
			}
			l.webhook(i)
		}
	})
	return l
}

// send posts one send with an Idempotency-Key, to the gateways in turn, until it is
// answered 202 (a retry with the key names the same message and is never sent twice).
func (l *mpLoad) send(client *http.Client, gw int, marker, to string) {
	t := l.s.t
	body := fmt.Sprintf(`{"messaging_product":"whatsapp","to":%q,"type":"text","text":{"body":%q}}`, to, marker)
	key := "key-" + marker
	deadline := time.Now().Add(mpTryDeadline)
	for try := 0; time.Now().Before(deadline); try++ {
		base := l.s.gateways[(gw+try)%len(l.s.gateways)]
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+l.s.jwt)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := client.Do(req)
		if err == nil {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusAccepted:
				var a struct{ ID string }
				if json.Unmarshal(raw, &a) != nil || a.ID == "" {
					t.Errorf("202 without an id: %s", raw)
					return
				}
				l.mu.Lock()
				l.accepted[marker] = a.ID
				l.mu.Unlock()
				l.sends.Add(1)
				return
			case http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusTooManyRequests:
				// Not acknowledged (a role or the broker catching up): retry with the key.
			default:
				t.Errorf("POST /v1/messages = %d %s", resp.StatusCode, raw)
				return
			}
		}
		l.failures.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("send %s never acknowledged within %v", marker, mpTryDeadline)
}

// webhook posts one signed inbound message to the webhook edge (a gateway's webhook
// route when the edge does not answer) until it is answered 200, as Meta retries.
func (l *mpLoad) webhook(i int) {
	t := l.s.t
	wamid := fmt.Sprintf("wamid.mp-%s-%d", l.phase, i)
	body := fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: "102290129340398", Changes: []fakemeta.WebhookChange{{
		PhoneNumberID: mpNumber, DisplayPhoneNumber: "15550100100",
		Messages: []fakemeta.WebhookMessage{{ID: wamid, From: "15550109999", Name: "Customer",
			Text: fmt.Sprintf("%s%s-%d", inboundMarker, l.phase, i), Timestamp: time.Now()}},
	}}})
	targets := []string{l.s.edge, l.s.gateways[0], l.s.gateways[1]}
	deadline := time.Now().Add(mpTryDeadline)
	for try := 0; time.Now().Before(deadline); try++ {
		p := &fakemeta.WebhookPoster{URL: targets[try%len(targets)] + webhook.Path, Secret: mpAppSecret}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, err := p.Post(ctx, body)
		cancel()
		if err == nil && code == http.StatusOK {
			l.mu.Lock()
			l.webhooks[wamid] = true
			l.mu.Unlock()
			return
		}
		if err == nil && code != http.StatusServiceUnavailable {
			t.Errorf("webhook post = %d", code)
			return
		}
		l.failures.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("webhook %s never acknowledged within %v", wamid, mpTryDeadline)
}

// waitSome waits until n more sends of the phase were accepted.
func (l *mpLoad) waitSome(n int64) {
	l.s.t.Helper()
	want := l.sends.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for l.sends.Load() < want {
		if time.Now().After(deadline) {
			l.s.t.Fatalf("%s: fewer than %d sends accepted in 30s (%d failed tries)", l.phase, n, l.failures.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the load once every send and webhook begun was acknowledged.
func (l *mpLoad) stop() {
	close(l.stopCh)
	l.wg.Wait()
}

type mpCounts struct {
	accepted, delivered, lost, duplicated int
	webhooks, stored, webhooksLost        int
}

func (c *mpCounts) add(o mpCounts) {
	c.accepted += o.accepted
	c.delivered += o.delivered
	c.lost += o.lost
	c.duplicated += o.duplicated
	c.webhooks += o.webhooks
	c.stored += o.stored
	c.webhooksLost += o.webhooksLost
}

// reconcile waits (bounded) until the phase's sends were all sent and its webhooks all
// stored, then counts, against the fake Graph API's record and the database.
func (s *mpStack) reconcile(phase string, l *mpLoad) mpCounts {
	t := s.t
	t.Helper()
	ctx := context.Background()
	pool := s.pool

	l.mu.Lock()
	ids := make([]string, 0, len(l.accepted))
	for _, id := range l.accepted {
		ids = append(ids, id)
	}
	wamids := make([]string, 0, len(l.webhooks))
	for w := range l.webhooks {
		wamids = append(wamids, w)
	}
	l.mu.Unlock()

	var sent, stored int
	deadline := time.Now().Add(45 * time.Second)
	for {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM messages WHERE id = ANY($1::uuid[]) AND wamid IS NOT NULL
			AND status IN ('sent', 'delivered', 'read')`, ids).Scan(&sent); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_messages WHERE wamid = ANY($1)`, wamids).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if sent == len(ids) && stored == len(wamids) {
			break
		}
		if time.Now().After(deadline) {
			break // counted as lost below
		}
		time.Sleep(100 * time.Millisecond)
	}

	// What the fake Graph API received, over HTTP from its own process.
	resp, err := http.Get(s.fake + "/_fake/messages")
	if err != nil {
		t.Fatal(err)
	}
	var received []fakemeta.Received
	if err := json.NewDecoder(resp.Body).Decode(&received); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	byMarker := map[string]int{}
	for _, r := range received {
		s.tokens = append(s.tokens, r.Token)
		if r.WAMID == "" {
			continue // refused: not a send
		}
		var b struct {
			Text struct{ Body string } `json:"text"`
		}
		if json.Unmarshal(r.Body, &b) == nil && strings.HasPrefix(b.Text.Body, sendMarker+phase+"-") {
			byMarker[b.Text.Body]++
		}
	}

	c := mpCounts{accepted: len(ids), webhooks: len(wamids), stored: stored}
	for marker := range l.accepted {
		switch n := byMarker[marker]; {
		case n == 0:
			c.lost++
		case n > 1:
			c.duplicated++
			c.delivered++
		default:
			c.delivered++
		}
	}
	if sent != len(ids) {
		t.Errorf("%s: %d of %d accepted sends are recorded sent in the database", phase, sent, len(ids))
	}
	c.webhooksLost = len(wamids) - stored
	return c
}

// checkLogs reads the output of every process, over every run, for secrets and bodies.
func (s *mpStack) checkLogs() {
	t := s.t
	t.Helper()
	pool := s.pool
	ring, err := secret.ParseKeyRing(s.keys)
	if err != nil {
		t.Fatal(err)
	}
	repo := account.NewRepository(pool, ring)
	secrets := map[string]string{
		"jwt secret": mpJWTSecret, "app secret": mpAppSecret, "verify token": mpVerifyToken,
		"tenant jwt": s.jwt, "message body": sendMarker, "inbound message body": inboundMarker,
	}
	for i, k := range s.keys {
		_, key, _ := strings.Cut(k, ":")
		secrets[fmt.Sprintf("token key %d", i)] = key
	}
	// The JWT's signature alone is as bad as the whole token.
	if i := strings.LastIndexByte(s.jwt, '.'); i > 0 {
		secrets["tenant jwt signature"] = s.jwt[i+1:]
	}
	for i, sec := range s.secrets {
		secrets[fmt.Sprintf("onboarding code or state %d", i)] = sec
	}
	for i, tok := range s.tokens {
		secrets[fmt.Sprintf("access token %d", i)] = tok
	}
	if a, err := repo.Get(context.Background(), mpTenant, mpNumber); err != nil {
		t.Fatal(err)
	} else {
		secrets["stored access token"] = a.AccessToken.Reveal()
	}
	if pin, err := repo.RegistrationPIN(context.Background(), mpTenant, mpNumber); err != nil || pin == "" {
		t.Fatalf("registration pin: %q, %v", pin, err)
	} else {
		secrets["registration pin"] = `"` + pin + `"`
	}

	all := append(append([]*proc(nil), s.roles...), s.graph, s.broker)
	lines := 0
	for _, p := range all {
		out := p.out.String()
		lines += strings.Count(out, "\n")
		for what, sec := range secrets {
			if sec == "" {
				continue
			}
			if i := strings.Index(out, sec); i >= 0 {
				t.Errorf("%s's log holds the %s: …%s…", p.name, what, redactAround(out, i, len(sec)))
			}
		}
	}
	// The logs are there and say something: access lines of both edges, start-ups.
	for _, want := range []struct{ proc, text string }{
		{"gateway-1", `"msg":"http request"`}, {"webhooks", `"msg":"http request"`},
		{"sender-1", `"msg":"aerogate starting"`}, {"ingest", `"msg":"stopping: not ready any more"`},
	} {
		for _, p := range all {
			if p.name == want.proc && !strings.Contains(p.out.String(), want.text) {
				t.Errorf("%s's log has no %s", p.name, want.text)
			}
		}
	}
	t.Logf("checked %d log lines of %d processes for %d secrets", lines, len(all), len(secrets))
}

// redactAround shows where a secret was found without printing it.
func redactAround(s string, i, n int) string {
	from, to := max(0, i-80), min(len(s), i+n+40)
	return s[from:i] + "<secret>" + s[i+n:to]
}
