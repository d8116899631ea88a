package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func newCoalescing(t *testing.T, brokers []string, topic string, cfg CoalescingConfig) *CoalescingWriter {
	t.Helper()
	w := NewWriter(WriterConfig{Brokers: brokers, Topic: topic, WriteTimeout: 2 * time.Second, BatchTimeout: time.Millisecond, ClientID: "test"})
	c := NewCoalescingWriter(w, cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCoalescingWriterDeliversEveryConcurrentWrite: many callers at once each get their
// acknowledgement, and every message is on the topic once, in its key's partition.
func TestCoalescingWriterDeliversEveryConcurrentWrite(t *testing.T) {
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 4})
	c := newCoalescing(t, b.Addrs(), TopicSends, CoalescingConfig{MaxInFlight: 2, MaxBatch: 50})

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

// TestCoalescingWriterOversizedMessageFailsAlone: a message over the batch limit is
// refused without failing the messages it would have been coalesced with.
func TestCoalescingWriterOversizedMessageFailsAlone(t *testing.T) {
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	c := newCoalescing(t, b.Addrs(), TopicSends, CoalescingConfig{})
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

// TestCoalescingWriterBrokerDown: with the broker gone every caller gets ErrUnavailable
// within the writer's timeout, and after Close a write is refused at once.
func TestCoalescingWriterBrokerDown(t *testing.T) {
	b := startBroker(t, EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	c := newCoalescing(t, b.Addrs(), TopicSends, CoalescingConfig{Timeout: time.Second})
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
