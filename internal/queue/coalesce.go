package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrClosed means the writer was closed before the message was handed to Kafka.
var ErrClosed = errors.New("kafka writer closed")

// CoalescingWriter funnels many concurrent WriteMessages calls into few produce
// requests. Called once per HTTP request, kafka-go's Writer spends most of its CPU on
// fixed per-call costs and makes every request wait out a batch timer of its own. Here
// one loop collects whatever callers are waiting and sends them as one produce request
// per partition leader (see produce), while at most MaxInFlight requests are
// outstanding, and answers each caller with its own messages' fate: while a request is
// in flight the next batch grows by itself, so batches follow the load.
//
// It takes its settings from a kafka-go Writer (NewWriter): the Transport and its
// connections, Topic, Balancer (murmur2), RequiredAcks, Compression, BatchBytes,
// MaxAttempts and the write backoff. The Writer's BatchSize and BatchTimeout do not
// apply: there is no timer, a request leaves as soon as a slot is free. A caller is
// answered only once the broker acknowledged (or refused) its messages.
type CoalescingWriter struct {
	w          *kafka.Writer
	transport  kafka.RoundTripper
	balancer   kafka.Balancer
	timeout    time.Duration
	maxBatch   int
	maxBytes   int64
	attempts   int
	backoffMin time.Duration
	backoffMax time.Duration

	reqs   chan *coalescedWrite
	slots  chan struct{}
	closed chan struct{}
	once   sync.Once
	loop   sync.WaitGroup
	writes sync.WaitGroup
}

// CoalescingConfig tunes a CoalescingWriter.
type CoalescingConfig struct {
	// MaxBatch caps the messages of one produce request (default 2,000); the Writer's
	// BatchBytes caps its bytes.
	MaxBatch int
	// MaxInFlight caps concurrent produce requests (default 4).
	MaxInFlight int
	// Timeout bounds one request with its retries (default the Writer's WriteTimeout,
	// else 5s).
	Timeout time.Duration
}

type coalescedWrite struct {
	msgs  []kafka.Message
	bytes int64
	done  chan error
}

var coalescedWrites = sync.Pool{New: func() any { return &coalescedWrite{done: make(chan error, 1)} }}

// NewCoalescingWriter starts the collecting loop over w. Close stops it and closes w.
func NewCoalescingWriter(w *kafka.Writer, cfg CoalescingConfig) *CoalescingWriter {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = w.WriteTimeout
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultWriteTimeout
	}
	c := &CoalescingWriter{
		w:          w,
		transport:  w.Transport,
		balancer:   w.Balancer,
		timeout:    cfg.Timeout,
		maxBatch:   cfg.MaxBatch,
		maxBytes:   w.BatchBytes,
		attempts:   max(w.MaxAttempts, 1),
		backoffMin: cmp.Or(w.WriteBackoffMin, 100*time.Millisecond),
		backoffMax: cmp.Or(w.WriteBackoffMax, time.Second),
		reqs:       make(chan *coalescedWrite),
		slots:      make(chan struct{}, cfg.MaxInFlight),
		closed:     make(chan struct{}),
	}
	if c.transport == nil {
		c.transport = kafka.DefaultTransport
	}
	if c.balancer == nil {
		c.balancer = &kafka.Murmur2Balancer{}
	}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultBatchBytes
	}
	c.loop.Add(1)
	go c.run()
	return c
}

// WriteMessages writes msgs and returns once the broker acknowledged all of them, or an
// error wrapping ErrNotWritten (nothing can be in the log: also ErrUnavailable,
// ErrTooLarge or ErrClosed) or ErrOutcomeUnknown (the messages may be in the log, or
// appear there later: also ErrUnavailable). When ctx ends first it returns at once:
// ErrNotWritten if the messages were not handed to the writing loop yet, else
// ErrOutcomeUnknown, since they may still be delivered. Their bytes may still be read,
// so the caller must not reuse them after an error.
func (c *CoalescingWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	var size int64
	for i := range msgs {
		size += messageSize(&msgs[i])
	}
	// Checked here so that an oversized call cannot fail the others it is coalesced with.
	if size > c.maxBytes {
		return fmt.Errorf("publishing to %s: %w", c.w.Topic, ErrTooLarge)
	}
	r := coalescedWrites.Get().(*coalescedWrite)
	r.msgs, r.bytes = msgs, size
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		r.msgs = nil
		coalescedWrites.Put(r)
		return fmt.Errorf("publishing to %s: %w", c.w.Topic, outcomeError(ctx.Err(), false))
	case <-c.closed:
		r.msgs = nil
		coalescedWrites.Put(r)
		return fmt.Errorf("publishing to %s: %w: %w", c.w.Topic, ErrNotWritten, ErrClosed)
	}
	select {
	case err := <-r.done:
		r.msgs = nil
		coalescedWrites.Put(r)
		return err
	case <-ctx.Done():
		// r stays with the in-flight call until it answers; it is not reused. The loop
		// has it and writes it whatever happens here, so it may land.
		return fmt.Errorf("publishing to %s: %w", c.w.Topic, outcomeError(ctx.Err(), true))
	}
}

// messageOverhead over-estimates a record's framing in a produce request.
const messageOverhead = 128

func messageSize(m *kafka.Message) int64 {
	n := len(m.Key) + len(m.Value) + messageOverhead
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 8
	}
	return int64(n)
}

func (c *CoalescingWriter) run() {
	defer c.loop.Done()
	// next is a caller that did not fit the previous batch: it starts the next one.
	var next *coalescedWrite
	for {
		first := next
		if first == nil {
			select {
			case first = <-c.reqs:
			case <-c.closed:
				return
			}
		}
		next = nil
		// Waiting for a free slot is what lets the next batch grow under load.
		c.slots <- struct{}{}
		batch := []*coalescedWrite{first}
		n, size := len(first.msgs), first.bytes
	collect:
		for n < c.maxBatch {
			select {
			case r := <-c.reqs:
				// A request stays under BatchBytes in all, so no partition's record set
				// can be over the broker's limit.
				if size+r.bytes > c.maxBytes {
					next = r
					break collect
				}
				batch = append(batch, r)
				n += len(r.msgs)
				size += r.bytes
			default:
				break collect
			}
		}
		c.writes.Add(1)
		go c.write(batch, n)
	}
}

func (c *CoalescingWriter) write(batch []*coalescedWrite, n int) {
	defer c.writes.Done()
	defer func() { <-c.slots }()
	msgs := make([]kafka.Message, 0, n)
	for _, r := range batch {
		msgs = append(msgs, r.msgs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	errs := c.produce(ctx, msgs)
	cancel()
	i := 0
	for _, r := range batch {
		var rerr error
		if errs == nil {
			r.done <- nil
			continue
		}
		for _, e := range errs[i : i+len(r.msgs)] {
			if e != nil {
				rerr = fmt.Errorf("publishing to %s: %w", c.w.Topic, e)
				break
			}
		}
		i += len(r.msgs)
		r.done <- rerr
	}
}

// Close stops accepting writes, waits for the requests in flight, then closes the
// Writer and the Transport's connections.
func (c *CoalescingWriter) Close() error {
	c.once.Do(func() { close(c.closed) })
	c.loop.Wait()
	c.writes.Wait()
	err := c.w.Close()
	if t, ok := c.transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
	return err
}
