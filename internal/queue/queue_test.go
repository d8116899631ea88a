package queue

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func startBroker(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	e, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func newPublisher(t *testing.T, brokers []string, topic string) *Producer {
	t.Helper()
	return mustProducer(t, ProducerConfig{Cluster: Cluster{Brokers: brokers, ClientID: "test"}, Topic: topic, Timeout: 2 * time.Second})
}

func mustProducer(t *testing.T, cfg ProducerConfig) *Producer {
	t.Helper()
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func publish(p *Producer, key, value []byte) error {
	return p.WriteMessages(context.Background(), kafka.Message{Key: key, Value: value})
}

// groupReader reads topic as a member of group and commits only through
// CommitMessages: a plain kafka-go reader, to look at what is on a topic.
func groupReader(brokers []string, group, topic string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: group, Topic: topic,
		StartOffset: kafka.FirstOffset, MaxWait: 500 * time.Millisecond, CommitInterval: 0})
}

func newReader(t *testing.T, brokers []string, group, topic string) *kafka.Reader {
	t.Helper()
	r := groupReader(brokers, group, topic)
	t.Cleanup(func() { r.Close() })
	return r
}

// fetch reads n messages, failing the test after a generous deadline.
func fetch(t *testing.T, r *kafka.Reader, n int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs := make([]kafka.Message, 0, n)
	for len(msgs) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("FetchMessage after %d of %d: %v", len(msgs), n, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func testEnvelope(i int) *Envelope {
	return &Envelope{
		ID:            fmt.Sprintf("msg-%d", i),
		TenantID:      "tenant-a",
		AccountID:     "acc-1",
		PhoneNumberID: "1234567890",
		Recipient:     "15551234567",
		Payload:       json.RawMessage(`{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"hi"}}`),
		AcceptedAt:    time.Now().UTC().Truncate(time.Millisecond),
	}
}

func TestWriteThenReadCarriesKeyAndEnvelope(t *testing.T) {
	t.Parallel()
	e := startBroker(t, EmbeddedConfig{Partitions: 4})
	p := newPublisher(t, e.Addrs(), TopicSends)
	env := testEnvelope(1)
	value, err := Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	if err := publish(p, []byte(env.TenantID), value); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	r := newReader(t, e.Addrs(), "g-roundtrip", TopicSends)
	m := fetch(t, r, 1)[0]
	if string(m.Key) != env.TenantID {
		t.Errorf("key = %q, want %q", m.Key, env.TenantID)
	}
	got, err := Decode(m.Value)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.ID != env.ID || got.PhoneNumberID != env.PhoneNumberID || !got.AcceptedAt.Equal(env.AcceptedAt) ||
		string(got.Payload) != string(env.Payload) {
		t.Errorf("envelope = %+v, want %+v", got, env)
	}
	if err := r.CommitMessages(context.Background(), m); err != nil {
		t.Fatalf("CommitMessages: %v", err)
	}
}

func TestSameKeySamePartition(t *testing.T) {
	t.Parallel()
	e := startBroker(t, EmbeddedConfig{Partitions: 8})
	p := newPublisher(t, e.Addrs(), TopicSends)

	const keys, perKey = 40, 5
	var msgs []kafka.Message
	for round := 0; round < perKey; round++ {
		for k := 0; k < keys; k++ {
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("tenant-%d", k)), Value: []byte(strconv.Itoa(round))})
		}
	}
	// Concurrent publishes, as the gateway does them.
	var wg sync.WaitGroup
	errs := make(chan error, len(msgs))
	for _, m := range msgs {
		wg.Go(func() { errs <- publish(p, m.Key, m.Value) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}

	r := newReader(t, e.Addrs(), "g-partition", TopicSends)
	partOf := map[string]int{}
	used := map[int]bool{}
	for _, m := range fetch(t, r, len(msgs)) {
		k := string(m.Key)
		if p, ok := partOf[k]; ok && p != m.Partition {
			t.Errorf("key %s in partitions %d and %d", k, p, m.Partition)
		}
		partOf[k] = m.Partition
		used[m.Partition] = true
	}
	if len(partOf) != keys {
		t.Errorf("read %d distinct keys, want %d", len(partOf), keys)
	}
	if len(used) < 4 {
		t.Errorf("%d keys spread over only %d of 8 partitions", keys, len(used))
	}
	// murmur2 like the Java client: the partition is a pure function of the key.
	b := &kafka.Murmur2Balancer{}
	parts := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for k, p := range partOf {
		if want := b.Balance(kafka.Message{Key: []byte(k)}, parts...); want != p {
			t.Errorf("key %s in partition %d, murmur2 says %d", k, p, want)
		}
	}
}

func TestEmbeddedListensOnGivenAddr(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e := startBroker(t, EmbeddedConfig{Addr: addr})
	if got := e.Addrs(); len(got) != 1 || got[0] != addr {
		t.Fatalf("Addrs = %v, want [%s]", got, addr)
	}
	if err := (Cluster{Brokers: []string{addr}}).Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	// Busy address: a clear error, not a broker somewhere else.
	if _, err := StartEmbedded(EmbeddedConfig{Addr: addr}); err == nil {
		t.Fatal("second StartEmbedded on the same address succeeded")
	}
}

func TestEmbeddedPersistsMessagesAndOffsetsAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := mustProducer(t, ProducerConfig{Cluster: Cluster{Brokers: e.Addrs()}, Topic: TopicSends})
	for i := range 10 {
		if err := publish(p, []byte("t"), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	r := groupReader(e.Addrs(), "g-persist", TopicSends)
	msgs := fetch(t, r, 4)
	if err := r.CommitMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	r.Close()
	e.Close()

	e2 := startBroker(t, EmbeddedConfig{DataDir: dir, Partitions: 1})
	// Committed offsets survive: the group resumes at the fifth message.
	r2 := newReader(t, e2.Addrs(), "g-persist", TopicSends)
	if m := fetch(t, r2, 1)[0]; string(m.Value) != "4" || m.Offset != 4 {
		t.Errorf("group resumed at offset %d value %q, want offset 4 value \"4\"", m.Offset, m.Value)
	}
	// Messages survive: a new group reads all ten, in order.
	r3 := newReader(t, e2.Addrs(), "g-fresh", TopicSends)
	for i, m := range fetch(t, r3, 10) {
		if string(m.Value) != strconv.Itoa(i) {
			t.Errorf("message %d = %q", i, m.Value)
		}
	}
	// Topics are all there after the restart, and writes keep working.
	if err := e2.Cluster().EnsureTopics(context.Background(), AllTopics, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := publish(newPublisher(t, e2.Addrs(), TopicSendsDLQ), []byte("t"), []byte("x")); err != nil {
		t.Fatalf("Publish after restart: %v", err)
	}
}

// TestEmbeddedSurvivesSIGKILL runs a broker in a child process, kills it without Close
// and restarts on its data dir: acknowledged writes and commits must be there.
func TestEmbeddedSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashBroker$")
	cmd.Env = append(os.Environ(), "QUEUE_CRASH_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
	}
	if !ready {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child broker never became ready")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, out)
	cmd.Wait()

	e := startBroker(t, EmbeddedConfig{DataDir: dir, Partitions: 1})
	r := newReader(t, e.Addrs(), "g-crash", TopicSends)
	if m := fetch(t, r, 1)[0]; m.Offset != 3 {
		t.Errorf("group resumed at offset %d, want 3", m.Offset)
	}
	r2 := newReader(t, e.Addrs(), "g-crash-all", TopicSends)
	for i, m := range fetch(t, r2, 5) {
		if string(m.Value) != strconv.Itoa(i) {
			t.Errorf("message %d = %q", i, m.Value)
		}
	}
}

func TestHelperCrashBroker(t *testing.T) {
	dir := os.Getenv("QUEUE_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process for TestEmbeddedSurvivesSIGKILL")
	}
	e, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := mustProducer(t, ProducerConfig{Cluster: Cluster{Brokers: e.Addrs()}, Topic: TopicSends})
	for i := range 5 {
		if err := publish(p, []byte("t"), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	r := groupReader(e.Addrs(), "g-crash", TopicSends)
	msgs := fetch(t, r, 3)
	if err := r.CommitMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed by the parent
}

func TestPublishToDeadBrokerFailsInBoundedTime(t *testing.T) {
	t.Parallel()
	cases := map[string]func(t *testing.T) []string{
		"nobody listens": func(t *testing.T) []string {
			return []string{fmt.Sprintf("127.0.0.1:%d", freePort(t))}
		},
		"broker accepts connections and never answers": func(t *testing.T) []string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var conns []net.Conn
			t.Cleanup(func() {
				ln.Close()
				mu.Lock()
				defer mu.Unlock()
				for _, c := range conns {
					c.Close()
				}
			})
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
			return []string{ln.Addr().String()}
		},
		"broker closed after a good write": func(t *testing.T) []string {
			e, err := StartEmbedded(EmbeddedConfig{Partitions: 1})
			if err != nil {
				t.Fatal(err)
			}
			p := mustProducer(t, ProducerConfig{Cluster: Cluster{Brokers: e.Addrs()}, Topic: TopicSends})
			defer p.Close()
			if err := publish(p, []byte("k"), []byte("v")); err != nil {
				t.Fatal(err)
			}
			e.Close()
			return e.Addrs()
		},
	}
	for name, brokers := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := brokers(t)
			p := mustProducer(t, ProducerConfig{Cluster: Cluster{Brokers: b}, Topic: TopicSends, Timeout: 500 * time.Millisecond})
			defer p.Close()
			done := make(chan error, 1)
			go func() { done <- publish(p, []byte("k"), []byte("v")) }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Publish error = %v, want ErrUnavailable", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Publish to a dead broker did not return")
			}
			if err := (Cluster{Brokers: b}).Ping(context.Background()); err == nil {
				t.Error("Ping of a dead broker succeeded")
			}
		})
	}
}

func TestPublishTooLarge(t *testing.T) {
	t.Parallel()
	e := startBroker(t, EmbeddedConfig{Partitions: 1})
	p := mustProducer(t, ProducerConfig{Cluster: Cluster{Brokers: e.Addrs()}, Topic: TopicSends, MaxBytes: 1024})
	defer p.Close()
	err := publish(p, []byte("k"), make([]byte, 4096))
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

func TestEnsureTopicsIsIdempotent(t *testing.T) {
	t.Parallel()
	e := startBroker(t, EmbeddedConfig{Partitions: 2})
	ctx := context.Background()
	for range 2 {
		if err := (Cluster{Brokers: e.Addrs()}).EnsureTopics(ctx, []string{"extra", TopicSends}, 3, 1); err != nil {
			t.Fatalf("EnsureTopics: %v", err)
		}
	}
	conn, err := kafka.Dial("tcp", e.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for topic, want := range map[string]int{"extra": 3, TopicSends: 2} {
		parts, err := conn.ReadPartitions(topic)
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) != want {
			t.Errorf("%s has %d partitions, want %d", topic, len(parts), want)
		}
	}
	if err := (Cluster{Brokers: e.Addrs()}).EnsureTopics(ctx, []string{"x"}, 0, 1); err == nil {
		t.Error("EnsureTopics with 0 partitions succeeded")
	}
	if err := (Cluster{Brokers: nil}).EnsureTopics(ctx, []string{"x"}, 1, 1); err == nil {
		t.Error("EnsureTopics without brokers succeeded")
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	good, err := Encode(testEnvelope(1))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"valid", string(good), true},
		{"unknown fields ignored", `{"id":"1","tenant_id":"t","phone_number_id":"1","payload":{},"new_field":1}`, true},
		{"empty", ``, false},
		{"not json", `hello`, false},
		{"array", `[]`, false},
		{"null", `null`, false},
		{"trailing data", string(good) + `{}`, false},
		{"missing id", `{"tenant_id":"t","phone_number_id":"1","payload":{}}`, false},
		{"missing tenant", `{"id":"1","phone_number_id":"1","payload":{}}`, false},
		{"missing phone number id", `{"id":"1","tenant_id":"t","payload":{}}`, false},
		{"missing payload", `{"id":"1","tenant_id":"t","phone_number_id":"1"}`, false},
		{"payload not an object", `{"id":"1","tenant_id":"t","phone_number_id":"1","payload":"x"}`, false},
		{"payload not JSON inside", `{"id":"1","tenant_id":"t","phone_number_id":"1","payload":{"a":}}`, false},
		{"negative attempt", `{"id":"1","tenant_id":"t","phone_number_id":"1","payload":{},"attempt":-1}`, false},
		{"bad time", `{"id":"1","tenant_id":"t","phone_number_id":"1","payload":{},"accepted_at":"yesterday"}`, false},
		{"wrong type", `{"id":1,"tenant_id":"t","phone_number_id":"1","payload":{}}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := Decode([]byte(c.in))
			if c.ok && err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !c.ok {
				if !errors.Is(err, ErrInvalidEnvelope) || e != nil {
					t.Fatalf("Decode = %v, %v; want ErrInvalidEnvelope", e, err)
				}
			}
		})
	}
	if _, err := Encode(&Envelope{ID: "x"}); !errors.Is(err, ErrInvalidEnvelope) {
		t.Errorf("Encode of an incomplete envelope: %v", err)
	}
}

func TestEnvelopeRoundTripWithRetryFields(t *testing.T) {
	t.Parallel()
	env := testEnvelope(2)
	nb := time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)
	env.Attempt, env.NotBefore = 3, &nb
	env.Error = &EnvelopeError{Code: 131026, Title: "Message undeliverable"}
	b, err := Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 3 || got.NotBefore == nil || !got.NotBefore.Equal(nb) || *got.Error != *env.Error {
		t.Errorf("round trip lost retry fields: %+v", got)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	good, _ := Encode(testEnvelope(1))
	f.Add(good)
	f.Add([]byte(`{"id":"1","tenant_id":"t","phone_number_id":"1","payload":{}}`))
	f.Add([]byte(`{"payload":[1,2,3]}`))
	f.Add([]byte(`{"not_before":"2020-01-01T00:00:00Z","error":{"code":1}}`))
	f.Add([]byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			if e != nil || !errors.Is(err, ErrInvalidEnvelope) {
				t.Fatalf("Decode error %v with envelope %v", err, e)
			}
			return
		}
		// Whatever Decode accepts re-encodes and decodes to the same envelope.
		b2, err := Encode(e)
		if err != nil {
			t.Fatalf("Encode of a decoded envelope: %v", err)
		}
		if _, err := Decode(b2); err != nil {
			t.Fatalf("Decode of a re-encoded envelope: %v", err)
		}
	})
}

func TestEncodeRejectsPayloadThatIsNotJSON(t *testing.T) {
	e := &Envelope{ID: "1", TenantID: "t", PhoneNumberID: "1", Payload: json.RawMessage(`{"a":`)}
	if _, err := Encode(e); err == nil {
		t.Fatal("Encode accepted a payload that is not JSON")
	}
}

func BenchmarkDecode(b *testing.B) {
	v := []byte(`{"id":"0192f0c4-6d1e-7b3a-9c5e-1f2a3b4c5d6e","tenant_id":"tenant-0001","account_id":"0192f0c4-6d1e-7b3a-9c5e-1f2a3b4c5d6f","phone_number_id":"100000100","to":"919876543210","payload":{"messaging_product":"whatsapp","to":"919876543210","type":"text","text":{"body":"Your order #12345 has shipped and will arrive tomorrow"}},"accepted_at":"2026-11-25T12:00:00Z"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(v); err != nil {
			b.Fatal(err)
		}
	}
}
