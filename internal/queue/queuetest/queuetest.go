// Package queuetest reads topics back in tests: every record a topic holds now, without
// a consumer group.
package queuetest

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/queue"
)

// ReadAll returns every record of topic, partition by partition in offset order, up to
// each partition's end as it is when called.
func ReadAll(t testing.TB, c queue.Cluster, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := c.Dialer().DialContext(ctx, "tcp", c.Brokers[0])
	if err != nil {
		t.Fatalf("queuetest: dialing: %v", err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatalf("queuetest: partitions of %s: %v", topic, err)
	}
	var out []kafka.Message
	for _, p := range parts {
		lc, err := c.Dialer().DialLeader(ctx, "tcp", c.Brokers[0], topic, p.ID)
		if err != nil {
			t.Fatalf("queuetest: dialing the leader of %s/%d: %v", topic, p.ID, err)
		}
		first, last, err := lc.ReadOffsets()
		lc.Close()
		if err != nil {
			t.Fatalf("queuetest: offsets of %s/%d: %v", topic, p.ID, err)
		}
		if first >= last {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Brokers, Topic: topic, Partition: p.ID, Dialer: c.Dialer(),
			MaxWait: 100 * time.Millisecond, MaxBytes: 16 << 20})
		if err := r.SetOffset(first); err != nil {
			t.Fatalf("queuetest: %v", err)
		}
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("queuetest: reading %s/%d at %d of %d: %v", topic, p.ID, len(out), last, err)
			}
			out = append(out, m)
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	return out
}
