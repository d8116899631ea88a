package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/aerostic/aerogate/internal/metrics"
)

func newTestProducer(t *testing.T, brokers []string, topic string, cfg ProducerConfig) *Producer {
	t.Helper()
	cfg.Cluster = Cluster{Brokers: brokers, ClientID: "test"}
	cfg.Topic = topic
	cfg.Timeout = cmp.Or(cfg.Timeout, 2*time.Second)
	return mustProducer(t, cfg)
}

// TestProducerDeliversEveryConcurrentWrite: many callers at once each get their
// acknowledgement, and every message is on the topic once, in its key's partition.
func TestProducerDeliversEveryConcurrentWrite(t *testing.T) {
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 4})
	c := newTestProducer(t, b.Addrs(), TopicSends, ProducerConfig{MaxInFlight: 2, MaxBatch: 50})

	const callers, each = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("tenant-%d", g%7)
				err := c.WriteMessages(context.Background(), kafka.Message{Key: []byte(key), Value: []byte(fmt.Sprintf("%d/%d", g, i))})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("WriteMessages: %v", err)
	}

	r := newReader(t, b.Addrs(), "coalesce-test", TopicSends)
	msgs := fetch(t, r, callers*each)
	seen := map[string]bool{}
	partitionOf := map[string]int{}
	for _, m := range msgs {
		if seen[string(m.Value)] {
			t.Fatalf("message %s delivered twice", m.Value)
		}
		seen[string(m.Value)] = true
		if p, ok := partitionOf[string(m.Key)]; ok && p != m.Partition {
			t.Fatalf("key %s in partitions %d and %d", m.Key, p, m.Partition)
		}
		partitionOf[string(m.Key)] = m.Partition
	}
	if len(seen) != callers*each {
		t.Fatalf("read %d distinct messages, want %d", len(seen), callers*each)
	}
}

// TestProducerOversizedMessageFailsAlone: a message over the batch limit is
// refused without failing the messages it would have been coalesced with.
func TestProducerOversizedMessageFailsAlone(t *testing.T) {
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	c := newTestProducer(t, b.Addrs(), TopicSends, ProducerConfig{})
	big := []byte(strings.Repeat("x", DefaultBatchBytes+1))
	var wg sync.WaitGroup
	var bigErr error
	smallErrs := make([]error, 20)
	wg.Add(1)
	go func() {
		defer wg.Done()
		bigErr = c.WriteMessages(context.Background(), kafka.Message{Key: []byte("t"), Value: big})
	}()
	for i := range smallErrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			smallErrs[i] = c.WriteMessages(context.Background(), kafka.Message{Key: []byte("t"), Value: []byte("small")})
		}()
	}
	wg.Wait()
	if !errors.Is(bigErr, ErrTooLarge) {
		t.Fatalf("oversized write: %v, want ErrTooLarge", bigErr)
	}
	for i, err := range smallErrs {
		if err != nil {
			t.Fatalf("small write %d: %v", i, err)
		}
	}
}

// TestProducerBrokerDown: with the broker gone every caller gets ErrUnavailable
// within the writer's timeout, and after Close a write is refused at once.
func TestProducerBrokerDown(t *testing.T) {
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	c := newTestProducer(t, b.Addrs(), TopicSends, ProducerConfig{Timeout: time.Second})
	if err := c.WriteMessages(context.Background(), kafka.Message{Key: []byte("t"), Value: []byte("up")}); err != nil {
		t.Fatalf("write while the broker is up: %v", err)
	}
	b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.WriteMessages(ctx, kafka.Message{Key: []byte("t"), Value: []byte("down")})
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("writes to a dead broker were still waiting after 10s")
	}
	for i, err := range errs {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("write %d to a dead broker: %v, want ErrUnavailable", i, err)
		}
	}

	if err := c.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if err := c.WriteMessages(context.Background(), kafka.Message{Key: []byte("t"), Value: []byte("late")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
}

// produceFaults answers the broker's produce requests with an error code on every
// partition while armed; disarmed, the broker handles them as usual.
type produceFaults struct {
	code    atomic.Int32 // 0: disarmed
	left    atomic.Int32 // requests still to fail; negative: every one
	refused atomic.Int32
}

func injectProduceFaults(b *Embedded) *produceFaults {
	f := &produceFaults{}
	b.cluster.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		b.cluster.KeepControl()
		code := int16(f.code.Load())
		if code == 0 || f.left.Load() == 0 {
			return nil, nil, false
		}
		f.left.Add(-1)
		f.refused.Add(1)
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	return f
}

// arm fails the next n produce requests (every one when n < 0) with code.
func (f *produceFaults) arm(code int16, n int32) {
	f.refused.Store(0)
	f.left.Store(n)
	f.code.Store(int32(code))
}

// TestProducerProduceErrors: a retriable partition error (leader moved) is
// retried and every message lands once; a permanent one fails its callers at once;
// a retriable one that persists fails after the writer's attempts.
func TestProducerProduceErrors(t *testing.T) {
	const notLeader, tooLarge = 6, 10
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 4})
	faults := injectProduceFaults(b)
	c := newTestProducer(t, b.Addrs(), TopicSends, ProducerConfig{})

	// Retriable, once: every caller is acknowledged and each message is on the topic once.
	faults.arm(notLeader, 1)
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.WriteMessages(context.Background(), kafka.Message{Key: []byte(fmt.Sprintf("tenant-%d", i%9)), Value: []byte(fmt.Sprint(i))})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d after a leader error: %v", i, err)
		}
	}
	if n := faults.refused.Load(); n != 1 {
		t.Fatalf("the broker refused %d requests, want 1", n)
	}
	msgs := fetch(t, newReader(t, b.Addrs(), "produce-errors", TopicSends), len(errs))
	seen := map[string]int{}
	for _, m := range msgs {
		seen[string(m.Value)]++
	}
	for i := range errs {
		if n := seen[fmt.Sprint(i)]; n != 1 {
			t.Fatalf("message %d is on the topic %d times, want once", i, n)
		}
	}

	// Permanent: one request, the caller gets the mapped error.
	faults.arm(tooLarge, -1)
	err := c.WriteMessages(context.Background(), kafka.Message{Key: []byte("t"), Value: []byte("x")})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("write refused as too large: %v, want ErrTooLarge", err)
	}
	if n := faults.refused.Load(); n != 1 {
		t.Fatalf("a permanent error was tried %d times, want once", n)
	}

	// Retriable, for good: ErrUnavailable after MaxAttempts requests (produceAttempts: 3).
	faults.arm(notLeader, -1)
	err = c.WriteMessages(context.Background(), kafka.Message{Key: []byte("t"), Value: []byte("y")})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("write while the leader keeps moving: %v, want ErrUnavailable", err)
	}
	if n := faults.refused.Load(); n != 3 {
		t.Fatalf("a retriable error was tried %d times, want 3 (MaxAttempts)", n)
	}
}

// TestProducerSplitsAtBatchBytes: callers that together exceed MaxBytes are
// spread over several produce requests, and every one is acknowledged and delivered.
func TestProducerSplitsAtBatchBytes(t *testing.T) {
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	c := newTestProducer(t, b.Addrs(), TopicSends, ProducerConfig{MaxInFlight: 1, MaxBytes: 4 << 10})
	t.Cleanup(func() { c.Close() })

	value := strings.Repeat("v", 500)
	const callers = 40 // ~25 KiB in all, at most ~6 callers a request
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.WriteMessages(context.Background(), kafka.Message{Key: []byte(fmt.Sprint(i % 3)), Value: []byte(fmt.Sprintf("%d:%s", i, value))})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if n := len(fetch(t, newReader(t, b.Addrs(), "split-test", TopicSends), callers)); n != callers {
		t.Fatalf("read %d messages, want %d", n, callers)
	}
}

// TestProducerMetrics: every produce batch is timed and counted for its topic, and a
// batch that fails is counted once by outcome.
func TestProducerMetrics(t *testing.T) {
	t.Parallel()
	const topic, missing = "produce-metrics", "produce-metrics-missing"
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	if err := b.Cluster().EnsureTopics(context.Background(), []string{topic}, 2, 1); err != nil {
		t.Fatal(err)
	}
	c := newTestProducer(t, b.Addrs(), topic, ProducerConfig{MaxInFlight: 1})
	for i := range 3 {
		msgs := make([]kafka.Message, 5)
		for j := range msgs {
			msgs[j] = kafka.Message{Key: []byte(fmt.Sprintf("k%d", j)), Value: []byte(fmt.Sprint(i))}
		}
		if err := c.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	records := histogram(t, metrics.ProduceRecords.WithLabelValues(topic))
	if records.GetSampleCount() != 3 || records.GetSampleSum() != 15 {
		t.Errorf("records histogram: %d batches, %v records; want 3 batches of 5", records.GetSampleCount(), records.GetSampleSum())
	}
	if n := histogram(t, metrics.ProduceDuration.WithLabelValues(topic)).GetSampleCount(); n != 3 {
		t.Errorf("duration histogram: %d batches, want 3", n)
	}

	bad := newTestProducer(t, b.Addrs(), missing, ProducerConfig{})
	if err := bad.WriteMessages(context.Background(), kafka.Message{Value: []byte("x")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("write to a missing topic: %v", err)
	}
	if n := metricValue(t, metrics.ProduceErrors.WithLabelValues(missing, "not_written")); n != 1 {
		t.Errorf("not_written errors of %s = %v, want 1", missing, n)
	}
	if n := metricValue(t, metrics.ProduceErrors.WithLabelValues(topic, "not_written")) +
		metricValue(t, metrics.ProduceErrors.WithLabelValues(topic, "unknown")); n != 0 {
		t.Errorf("errors of %s = %v, want 0", topic, n)
	}
}

func histogram(t *testing.T, o prometheus.Observer) *dto.Histogram {
	t.Helper()
	var d dto.Metric
	if err := o.(prometheus.Metric).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetHistogram()
}
