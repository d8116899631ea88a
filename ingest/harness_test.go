package ingest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/events"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/queue/queuetest"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/internal/webhook"
)

const testPartitions = 3

func testLogger() *slog.Logger {
	if os.Getenv("AEROGATE_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testEnv is a real stack for ingest: a database of its own, the embedded broker, the
// account repository and a resolver following account changes.
type testEnv struct {
	t        testing.TB
	dbURL    string
	pool     *pgxpool.Pool
	broker   *queue.Embedded
	keySpec  string
	accounts *account.Repository
	resolver *account.Resolver
	messages *message.Repository
	pub      *queue.Producer
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	e := &testEnv{t: t}
	e.dbURL, e.pool = storetest.New(t)
	var err error
	e.broker, err = queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: testPartitions, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.broker.Close)
	e.keySpec, _ = secret.GenerateKeySpec("k1")
	keys, err := secret.ParseKeyRing([]string{e.keySpec})
	if err != nil {
		t.Fatal(err)
	}
	e.accounts = account.NewRepository(e.pool, keys)
	e.resolver, err = account.NewResolver(e.accounts, account.ResolverOptions{TTL: time.Minute, NegativeTTL: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.resolver.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.resolver.Listen(ctx, e.dbURL) }()
	t.Cleanup(func() { cancel(); <-done })
	e.messages = message.NewRepository(e.pool)
	e.pub, err = queue.NewProducer(queue.ProducerConfig{Cluster: e.broker.Cluster(), Topic: queue.TopicWebhooks, MaxBytes: queue.WebhookMaxMessageBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.pub.Close() })
	return e
}

func (e *testEnv) addAccount(tenant, waba, phone, display string, mps int) *account.Account {
	e.t.Helper()
	a, err := e.accounts.Upsert(context.Background(), account.UpsertInput{TenantID: tenant, WABAID: waba, PhoneNumberID: phone,
		DisplayPhoneNumber: display, AccessToken: "token-" + phone, ThroughputMPS: mps})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// publish puts bodies on wa.webhooks as the edge does: raw, keyed by WABA, with the time.
func (e *testEnv) publish(bodies ...[]byte) {
	e.t.Helper()
	msgs := make([]kafka.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = kafka.Message{Key: []byte(webhook.FirstWABAID(b)), Value: b,
			Headers: []kafka.Header{{Key: webhook.HeaderReceivedAt, Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.pub.WriteMessages(ctx, msgs...); err != nil {
		e.t.Fatal(err)
	}
}

func tuneForTests(o *ingest.Options) {
	o.SessionTimeout = 2 * time.Second
	o.RebalanceTimeout = 3 * time.Second
	o.HeartbeatInterval = 200 * time.Millisecond
	o.CommitInterval = 50 * time.Millisecond
	o.FetchMaxWait = 200 * time.Millisecond
	o.SweepInterval = 100 * time.Millisecond
	o.OutboxPoll = 100 * time.Millisecond
}

// start runs an ingester until the test ends.
func (e *testEnv) start() *ingest.Ingester {
	e.t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	o := ingest.Options{Kafka: e.broker.Cluster(), Pool: e.pool, Accounts: e.resolver, Logger: testLogger()}
	o.Config.GroupID = "test-ingest-" + hex.EncodeToString(b[:])
	o.Config.BatchMax = 8
	tuneForTests(&o)
	in, err := ingest.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("ingest.Run: %v", err)
		}
	})
	return in
}

// sentMessage records a message the sender sent, with its wamid.
func (e *testEnv) sentMessage(a *account.Account, to, wamid string) string {
	e.t.Helper()
	id := uuid.NewString()
	c := message.Claim{ID: id, TenantID: a.TenantID, AccountID: a.ID, PhoneNumberID: a.PhoneNumberID, Recipient: to, AcceptedAt: time.Now()}
	if err := e.messages.MarkSentMany(context.Background(), []message.Sent{{Claim: c, WAMID: wamid, SentAt: time.Now()}}); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *testEnv) message(tenant, id string) *message.Message {
	e.t.Helper()
	m, err := e.messages.Get(context.Background(), tenant, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *testEnv) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// events reads wa.events, checking every record against the schema file.
func (e *testEnv) events() []events.Event {
	e.t.Helper()
	var out []events.Event
	for _, m := range queuetest.ReadAll(e.t, e.broker.Cluster(), queue.TopicEvents) {
		var doc any
		if err := json.Unmarshal(m.Value, &doc); err != nil {
			e.t.Fatalf("wa.events record is not JSON: %v", err)
		}
		if err := eventSchema(e.t).Validate(doc); err != nil {
			e.t.Errorf("wa.events record does not match the schema: %v\n%s", err, m.Value)
		}
		var ev events.Event
		_ = json.Unmarshal(m.Value, &ev)
		if string(m.Key) != ev.TenantID {
			e.t.Errorf("event keyed %q, tenant %q", m.Key, ev.TenantID)
		}
		out = append(out, ev)
	}
	return out
}

func (e *testEnv) deadLetters() []ingest.DeadLetter {
	e.t.Helper()
	var out []ingest.DeadLetter
	for _, m := range queuetest.ReadAll(e.t, e.broker.Cluster(), queue.TopicWebhooksDLQ) {
		var d ingest.DeadLetter
		if err := json.Unmarshal(m.Value, &d); err != nil {
			e.t.Fatalf("dead letter is not JSON: %v", err)
		}
		out = append(out, d)
	}
	return out
}

var compiledSchema *jsonschema.Schema

func eventSchema(t testing.TB) *jsonschema.Schema {
	if compiledSchema != nil {
		return compiledSchema
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(events.Schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("wa.events.v1.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	if compiledSchema, err = c.Compile("wa.events.v1.schema.json"); err != nil {
		t.Fatal(err)
	}
	return compiledSchema
}

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
		time.Sleep(50 * time.Millisecond)
	}
}

func atLeast(n int, what string, got func() int) func() error {
	return func() error {
		if g := got(); g < n {
			return fmt.Errorf("%d %s, want %d", g, what, n)
		}
		return nil
	}
}
