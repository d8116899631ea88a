package queue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/metrics"
)

// consumerTopic is what the ingest role will drain: a topic consumed with a handler only.
const consumerTopic = TopicWebhooks

// produceToPartitions writes perPartition messages to every partition of topic, the
// value of each being its index within its partition (so offset == value).
func produceToPartitions(t *testing.T, b *Embedded, topic string, partitions, perPartition int) {
	t.Helper()
	p := mustProducer(t, ProducerConfig{Cluster: b.Cluster(), Topic: topic,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })})
	for i := range perPartition {
		msgs := make([]kafka.Message, partitions)
		for part := range partitions {
			msgs[part] = kafka.Message{Partition: part, Key: []byte("k"), Value: []byte(strconv.Itoa(i))}
		}
		if err := p.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
}

// committedOffsets asks the broker what group committed on topic's partitions (-1: none).
func committedOffsets(t *testing.T, b *Embedded, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := (&kafka.Client{Addr: kafka.TCP(b.Addrs()...)}).OffsetFetch(ctx, &kafka.OffsetFetchRequest{
		GroupID: group, Topics: map[string][]int{topic: ids},
	})
	if err != nil {
		t.Fatalf("fetching committed offsets: %v", err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("committed offset of %s/%d: %v", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// ledger records what a test handler saw and finished, per partition.
type ledger struct {
	mu       sync.Mutex
	seen     map[int][]int64
	finished map[int]map[int64]bool
	// outOfOrder counts finishes of an offset while an earlier one of its partition was
	// still unfinished: proof the test finishes out of order at all.
	outOfOrder int
}

func newLedger() *ledger {
	return &ledger{seen: map[int][]int64{}, finished: map[int]map[int64]bool{}}
}

func (l *ledger) saw(part int, off int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[part] = append(l.seen[part], off)
}

func (l *ledger) finish(part int, off int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.finished[part] == nil {
		l.finished[part] = map[int64]bool{}
	}
	for _, o := range l.seen[part] {
		if o < off && !l.finished[part][o] {
			l.outOfOrder++
			break
		}
	}
	l.finished[part][off] = true
}

// firstUnfinished is the lowest offset of part seen and not finished, or next if none.
func (l *ledger) firstUnfinished(part int, next int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	low := next
	for _, o := range l.seen[part] {
		if !l.finished[part][o] && o < low {
			low = o
		}
	}
	return low
}

func (l *ledger) count(part int) (seen, finished int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen[part]), len(l.finished[part])
}

// shuffledHandler finishes every message after a random pause, so messages of a
// partition finish out of order, except offset hold, which it keeps unfinished until the
// partition closes and then abandons.
type shuffledHandler struct {
	p    *Partition
	l    *ledger
	hold int64
	held bool
}

func (h *shuffledHandler) Handle(m kafka.Message) {
	h.l.saw(h.p.ID, m.Offset)
	if m.Offset == h.hold {
		h.held = true
		return
	}
	go func() {
		time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
		h.l.finish(h.p.ID, m.Offset)
		h.p.Done(m.Offset)
	}()
}

func (h *shuffledHandler) Close() {
	if h.held {
		h.p.Abandon(h.hold)
	}
}

func startConsumer(t *testing.T, cfg ConsumerConfig) (stop func()) {
	t.Helper()
	c, err := NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("Run did not return within 20s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testConsumerConfig(b *Embedded, group string, handler func(*Partition) PartitionHandler) ConsumerConfig {
	return ConsumerConfig{
		Cluster: b.Cluster(), GroupID: group, Topics: []string{consumerTopic}, Handler: handler,
		SessionTimeout: 2 * time.Second, RebalanceTimeout: 3 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
		CommitInterval: 20 * time.Millisecond,
	}
}

// TestConsumerCommitsOnlyBelowTheLowestUnfinishedOffset consumes a topic with nothing
// but a handler that finishes messages out of order and holds one per partition: the
// committed offset never passes an unfinished message, stops right at the held one, and
// a consumer started after a stop resumes exactly there.
func TestConsumerCommitsOnlyBelowTheLowestUnfinishedOffset(t *testing.T) {
	t.Parallel()
	const partitions, perPartition, hold = 2, 150, 40
	const group = "g-ordered-commits"
	b := startBroker(t, EmbeddedConfig{Partitions: partitions})
	produceToPartitions(t, b, consumerTopic, partitions, perPartition)

	first := newLedger()
	stopFirst := startConsumer(t, testConsumerConfig(b, group, func(p *Partition) PartitionHandler {
		return &shuffledHandler{p: p, l: first, hold: hold}
	}))
	// Until everything but the held messages is finished and committed, every committed
	// offset must be at or below the partition's lowest unfinished offset.
	check := func() map[int]int64 {
		committed := committedOffsets(t, b, group, consumerTopic, partitions)
		for part, off := range committed {
			if low := first.firstUnfinished(part, perPartition); off > low {
				t.Fatalf("partition %d committed %d past unfinished offset %d", part, off, low)
			}
		}
		return committed
	}
	eventually(t, 20*time.Second, func() error {
		committed := check()
		for part := range partitions {
			seen, finished := first.count(part)
			if seen != perPartition || finished != perPartition-1 || committed[part] != hold {
				return fmt.Errorf("partition %d: seen %d, finished %d, committed %d", part, seen, finished, committed[part])
			}
		}
		return nil
	})
	first.mu.Lock()
	outOfOrder := first.outOfOrder
	first.mu.Unlock()
	if outOfOrder == 0 {
		t.Fatal("no message finished before an earlier one: the test did not exercise out-of-order finishing")
	}
	// More commit rounds (and the final commit of the stop) do not pass the held offset.
	time.Sleep(5 * 20 * time.Millisecond)
	check()
	stopFirst()
	for part, off := range committedOffsets(t, b, group, consumerTopic, partitions) {
		if off != hold {
			t.Fatalf("after the stop partition %d committed %d, want the held offset %d", part, off, hold)
		}
	}
	for part := range partitions {
		labels := []string{group, consumerTopic, strconv.Itoa(part)}
		if n := metricValue(t, metrics.ConsumerCommits.WithLabelValues(labels...)); n < 1 {
			t.Errorf("partition %d: %v commits counted", part, n)
		}
	}

	// A restart resumes at the committed offset: the held messages come again, and
	// nothing before them.
	second := newLedger()
	stopSecond := startConsumer(t, testConsumerConfig(b, group, func(p *Partition) PartitionHandler {
		return &shuffledHandler{p: p, l: second, hold: -1}
	}))
	eventually(t, 20*time.Second, func() error {
		committed := committedOffsets(t, b, group, consumerTopic, partitions)
		for part := range partitions {
			if committed[part] != perPartition {
				return fmt.Errorf("partition %d committed %d", part, committed[part])
			}
		}
		return nil
	})
	stopSecond()
	for part := range partitions {
		second.mu.Lock()
		seen := append([]int64(nil), second.seen[part]...)
		second.mu.Unlock()
		if len(seen) != perPartition-hold || seen[0] != hold {
			t.Errorf("partition %d after the restart: %d messages from offset %v, want %d from %d",
				part, len(seen), seen[:min(len(seen), 1)], perPartition-hold, hold)
		}
	}
}

// TestConsumerBackPressure: a partition never has more than MaxInFlight unsettled
// messages, and its lag shows what waits behind them.
func TestConsumerBackPressure(t *testing.T) {
	t.Parallel()
	const partitions, perPartition, maxInFlight = 2, 100, 10
	const group = "g-back-pressure"
	b := startBroker(t, EmbeddedConfig{Partitions: partitions})
	produceToPartitions(t, b, consumerTopic, partitions, perPartition)

	l := newLedger()
	cfg := testConsumerConfig(b, group, Each(func(p *Partition, m kafka.Message) {
		l.saw(p.ID, m.Offset)
		go func() {
			<-p.Context().Done()
			p.Abandon(m.Offset)
		}()
	}))
	cfg.MaxInFlight = maxInFlight
	stop := startConsumer(t, cfg)
	eventually(t, 20*time.Second, func() error {
		for part := range partitions {
			if seen, _ := l.count(part); seen != maxInFlight {
				return fmt.Errorf("partition %d: %d handed out", part, seen)
			}
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // fetching would have gone on by now
	for part := range partitions {
		if seen, _ := l.count(part); seen != maxInFlight {
			t.Errorf("partition %d: %d messages handed out, want MaxInFlight %d", part, seen, maxInFlight)
		}
		lag := metricValue(t, metrics.ConsumerLag.WithLabelValues(group, consumerTopic, strconv.Itoa(part)))
		if want := float64(perPartition - maxInFlight); lag != want {
			t.Errorf("partition %d: lag %v, want %v", part, lag, want)
		}
	}
	stop()
	for part, off := range committedOffsets(t, b, group, consumerTopic, partitions) {
		if off >= 0 {
			t.Errorf("partition %d committed %d with nothing finished", part, off)
		}
	}
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue reads a counter or gauge child.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
