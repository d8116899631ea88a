package gateway_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/queue"
)

// TestPartitionerMatchesKafkaGo: KafkaPublisher and queue.NewWriter put a key in the same
// partition, so swapping one for the other never splits a tenant across partitions.
func TestPartitionerMatchesKafkaGo(t *testing.T) {
	kp := kgo.StickyKeyPartitioner(nil).ForTopic(queue.TopicSends)
	for _, n := range []int{1, 3, 12, 64} {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := range 500 {
			key := []byte(fmt.Sprintf("tenant-%d", i))
			want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: key}, parts...)
			if got := kp.Partition(&kgo.Record{Key: key}, n); got != want {
				t.Fatalf("key %s of %d partitions: kgo %d, kafka-go %d", key, n, got, want)
			}
		}
	}
}

// TestKafkaPublisherRoundTrip: what KafkaPublisher acknowledges is on the topic, keyed,
// readable by kafka-go; several messages in one call all land.
func TestKafkaPublisherRoundTrip(t *testing.T) {
	b, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p, err := gateway.NewKafkaPublisher(queue.WriterConfig{Brokers: b.Addrs(), Topic: queue.TopicSends, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := map[string]string{}
	var batch []kafka.Message
	for i := range 5 {
		k, v := fmt.Sprint("tenant-", i), fmt.Sprintf(`{"n":%d}`, i)
		want[v] = k
		if i == 0 {
			if err := p.WriteMessages(ctx, kafka.Message{Key: []byte(k), Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		batch = append(batch, kafka.Message{Key: []byte(k), Value: []byte(v)})
	}
	if err := p.WriteMessages(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	got := map[string]string{}
	for part := range 4 {
		conn, err := kafka.DialLeader(ctx, "tcp", b.Addrs()[0], queue.TopicSends, part)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Addrs(), Topic: queue.TopicSends, Partition: part, MaxWait: 50 * time.Millisecond})
		for range last {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got[string(m.Value)] = string(m.Key)
			if want := (&kafka.Murmur2Balancer{}).Balance(m, 0, 1, 2, 3); want != part {
				t.Errorf("key %s in partition %d, want %d", m.Key, part, want)
			}
		}
		r.Close()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read back %v, want %v", got, want)
	}
}
