package sender_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/sender"
)

// testLogger is quiet unless AEROGATE_TEST_LOG is set (debug, info, warn).
func testLogger() *slog.Logger {
	var level slog.Level
	switch os.Getenv("AEROGATE_TEST_LOG") {
	case "":
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	default:
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// testEnv is a real stack for the sender: a Postgres database of its own, the embedded
// broker, the fake Graph API over HTTP, the account repository and resolver.
type testEnv struct {
	t        testing.TB
	dbURL    string
	pool     *pgxpool.Pool
	broker   *queue.Embedded
	fake     *fakemeta.Server
	keySpec  string
	accounts *account.Repository
	resolver *account.Resolver
	messages *message.Repository
	sendsPub *queue.Producer
}

const testPartitions = 3

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	e := &testEnv{t: t}
	e.dbURL, e.pool = storetest.New(t)
	var err error
	e.broker, err = queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: testPartitions, Logger: testLogger()})
	if err != nil {
		t.Fatalf("starting broker: %v", err)
	}
	t.Cleanup(e.broker.Close)
	e.fake = fakemeta.New(fakemeta.Options{Logger: testLogger()})
	if err := e.fake.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("starting fake graph: %v", err)
	}
	t.Cleanup(func() { _ = e.fake.Close() })
	e.keySpec, err = secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseKeyRing([]string{e.keySpec})
	if err != nil {
		t.Fatal(err)
	}
	e.accounts = account.NewRepository(e.pool, keys)
	e.resolver, err = account.NewResolver(e.accounts, account.ResolverOptions{TTL: time.Minute, NegativeTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.resolver.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.resolver.Listen(ctx, e.dbURL)
	}()
	t.Cleanup(func() { cancel(); <-done })
	e.messages = message.NewRepository(e.pool)
	e.sendsPub = e.producer(queue.TopicSends)
	return e
}

// producer writes to topic of the test broker until the test ends.
func (e *testEnv) producer(topic string) *queue.Producer {
	e.t.Helper()
	p, err := queue.NewProducer(queue.ProducerConfig{Cluster: e.broker.Cluster(), Topic: topic})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = p.Close() })
	return p
}

// testSenderConfig has short delays so retries and waits show within a test.
func testSenderConfig() config.Sender {
	c := config.Default().Sender
	c.GroupID = "test-sender"
	c.MaxInFlight = 256
	c.MaxAttempts = 8
	c.RetryBaseDelay = 20 * time.Millisecond
	c.RetryMaxDelay = 200 * time.Millisecond
	c.InProcessRetryMax = 40 * time.Millisecond
	c.PausedRetryDelay = 300 * time.Millisecond
	return c
}

// tuneForTests makes group membership move fast (the embedded broker allows a 1s
// session timeout).
func tuneForTests(o *sender.Options) {
	o.SessionTimeout = 2 * time.Second
	o.RebalanceTimeout = 3 * time.Second
	o.HeartbeatInterval = 200 * time.Millisecond
	o.CommitInterval = 100 * time.Millisecond
	// A crashed child's claims lapse soon (the fake answers in milliseconds).
	o.ClaimLease = 5 * time.Second
}

func (e *testEnv) graphConfig() graph.Config {
	return graph.Config{BaseURL: e.fake.URL(), Version: "v22.0", Timeout: 2 * time.Second}
}

// graphClient is a client of the fake Graph API.
func (e *testEnv) graphClient() *graph.Client {
	e.t.Helper()
	c, err := graph.New(e.graphConfig())
	if err != nil {
		e.t.Fatalf("graph.New: %v", err)
	}
	return c
}

// startSender runs a sender until the test ends and returns it.
func (e *testEnv) startSender(cfg config.Sender, gc graph.Config) *sender.Sender {
	e.t.Helper()
	s, stop := e.runSender(cfg, gc)
	e.t.Cleanup(stop)
	return s
}

// runSender runs a sender until stop, which waits for Run to return. tune adjusts its
// options after the test defaults.
func (e *testEnv) runSender(cfg config.Sender, gc graph.Config, tune ...func(*sender.Options)) (s *sender.Sender, stop func()) {
	e.t.Helper()
	gclient, err := graph.New(gc)
	if err != nil {
		e.t.Fatalf("graph.New: %v", err)
	}
	opts := sender.Options{
		Kafka:       e.broker.Cluster(),
		Config:      cfg,
		Accounts:    e.resolver,
		AccountRepo: e.accounts,
		Messages:    e.messages,
		Graph:       gclient,
		Logger:      testLogger(),
	}
	tuneForTests(&opts)
	for _, f := range tune {
		f(&opts)
	}
	s, err = sender.New(opts)
	if err != nil {
		e.t.Fatalf("sender.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	return s, func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run returned %v after cancellation", err)
				}
			case <-time.After(20 * time.Second):
				e.t.Error("Run did not return within 20s of cancellation")
			}
		})
	}
}

// addAccount connects a number for a tenant with its own token, at the fake too.
func (e *testEnv) addAccount(tenant, number, token string, mps int) *account.Account {
	e.t.Helper()
	a, err := e.accounts.Upsert(context.Background(), account.UpsertInput{
		TenantID: tenant, WABAID: "102290129340398", PhoneNumberID: number, AccessToken: token, ThroughputMPS: mps,
	})
	if err != nil {
		e.t.Fatalf("adding account %s/%s: %v", tenant, number, err)
	}
	e.fake.SetToken(number, token)
	return a
}

// newEnvelope is a send as the gateway would write it: a text message whose body
// names it, so the fake's records can be traced back.
func newEnvelope(a *account.Account, to, text string) *queue.Envelope {
	payload, _ := json.Marshal(map[string]any{
		"messaging_product": "whatsapp", "to": to, "type": "text",
		"text": map[string]string{"body": text},
	})
	return &queue.Envelope{
		ID: uuid.NewString(), TenantID: a.TenantID, AccountID: a.ID, PhoneNumberID: a.PhoneNumberID,
		Recipient: to, Payload: payload, AcceptedAt: time.Now().UTC(),
	}
}

// produce writes envelopes to wa.sends keyed by tenant, in order.
func (e *testEnv) produce(envs ...*queue.Envelope) {
	e.t.Helper()
	msgs := make([]kafka.Message, len(envs))
	for i, env := range envs {
		b, err := queue.Encode(env)
		if err != nil {
			e.t.Fatal(err)
		}
		msgs[i] = kafka.Message{Key: []byte(env.TenantID), Value: b}
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 500)
		if err := e.sendsPub.WriteMessages(context.Background(), msgs[:n]...); err != nil {
			e.t.Fatalf("producing sends: %v", err)
		}
		msgs = msgs[n:]
	}
}

// bodyText returns the text body of a received send.
func bodyText(b []byte) string {
	var p struct {
		Text struct {
			Body string `json:"body"`
		} `json:"text"`
	}
	_ = json.Unmarshal(b, &p)
	return p.Text.Body
}

// statuses returns the status of every message id given.
func (e *testEnv) statuses(ids []string) map[string]message.Status {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT id::text, status FROM messages WHERE id = ANY($1::uuid[])`, ids)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]message.Status{}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			e.t.Fatal(err)
		}
		out[id] = message.Status(st)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitStatus waits until every envelope's message has status want.
func (e *testEnv) waitStatus(within time.Duration, want message.Status, envs ...*queue.Envelope) {
	e.t.Helper()
	ids := make([]string, len(envs))
	for i, env := range envs {
		ids[i] = env.ID
	}
	eventually(e.t, within, fmt.Sprintf("%d messages %s", len(ids), want), func() error {
		st := e.statuses(ids)
		n := 0
		var sample []string
		for _, id := range ids {
			if st[id] == want {
				n++
			} else if len(sample) < 3 {
				sample = append(sample, fmt.Sprintf("%s=%q", id, st[id]))
			}
		}
		if n != len(ids) {
			return fmt.Errorf("%d of %d; e.g. %s", n, len(ids), strings.Join(sample, " "))
		}
		return nil
	})
}

func (e *testEnv) message(tenant, id string) *message.Message {
	e.t.Helper()
	m, err := e.messages.Get(context.Background(), tenant, id)
	if err != nil {
		e.t.Fatalf("loading message %s: %v", id, err)
	}
	return m
}

// dlqReader reads wa.sends.dlq from the start with a group of its own.
func (e *testEnv) dlqReader() *kafka.Reader {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.broker.Addrs(), GroupID: "dlq-" + uuid.NewString(), Topic: queue.TopicSendsDLQ,
		StartOffset: kafka.FirstOffset, MaxWait: 500 * time.Millisecond,
		SessionTimeout: 2 * time.Second, RebalanceTimeout: 2 * time.Second, HeartbeatInterval: 200 * time.Millisecond})
	e.t.Cleanup(func() { _ = r.Close() })
	return r
}

// readDLQ reads n dead letters (or fails the test).
func readDLQ(t *testing.T, r *kafka.Reader, n int, within time.Duration) map[string]*queue.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	out := map[string]*queue.Envelope{}
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("reading dead letters: got %d of %d: %v", len(out), n, err)
		}
		var env queue.Envelope
		if err := json.Unmarshal(m.Value, &env); err != nil {
			t.Fatalf("dead letter is not an envelope: %v", err)
		}
		out[env.ID] = &env
	}
	return out
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// received groups the fake's accepted sends by text body.
func acceptedByBody(fake *fakemeta.Server) map[string][]fakemeta.Received {
	out := map[string][]fakemeta.Received{}
	for _, r := range fake.Received() {
		if r.WAMID == "" {
			continue
		}
		b := bodyText(r.Body)
		out[b] = append(out[b], r)
	}
	return out
}
