package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrClosed means the writer was closed before the message was handed to Kafka.
var ErrClosed = errors.New("kafka writer closed")

// CoalescingWriter funnels many concurrent WriteMessages calls into few calls of one
// kafka-go Writer. The Writer keeps one batch in flight per partition and pays a fixed
// cost per call (partition assignment, a batch, a timer and a wait per partition);
// called once per HTTP request it spends most of its CPU on that overhead and every
// request waits out a batch of its own. Here one loop collects whatever callers are
// waiting, hands them to the Writer as one call while at most MaxInFlight calls are
// outstanding, and answers each caller with its own messages' fate: while a call is in
// flight the next batch grows by itself, so batches follow the load.
//
// Semantics are the Writer's: acks as configured on it, keyed partitioning by its
// Balancer, and an answer only once the broker acknowledged (or refused) the messages.
type CoalescingWriter struct {
	w        *kafka.Writer
	timeout  time.Duration
	maxBatch int
	maxBytes int64

	reqs   chan *coalescedWrite
	slots  chan struct{}
	closed chan struct{}
	once   sync.Once
	loop   sync.WaitGroup
	writes sync.WaitGroup
}

// CoalescingConfig tunes a CoalescingWriter.
type CoalescingConfig struct {
	// MaxBatch caps the messages of one Writer call (default 2,000).
	MaxBatch int
	// MaxInFlight caps concurrent Writer calls (default 4).
	MaxInFlight int
	// Timeout bounds one Writer call (default the Writer's WriteTimeout, else 5s).
	Timeout time.Duration
}

type coalescedWrite struct {
	msgs []kafka.Message
	done chan error
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
		w:        w,
		timeout:  cfg.Timeout,
		maxBatch: cfg.MaxBatch,
		maxBytes: w.BatchBytes,
		reqs:     make(chan *coalescedWrite),
		slots:    make(chan struct{}, cfg.MaxInFlight),
		closed:   make(chan struct{}),
	}
	c.loop.Add(1)
	go c.run()
	return c
}

// WriteMessages writes msgs and returns once the broker acknowledged all of them, or an
// error wrapping ErrUnavailable, ErrTooLarge or ErrClosed. When ctx ends first it
// returns at once; the messages may still be delivered and their bytes may still be
// read, so the caller must not reuse them after an error.
func (c *CoalescingWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	for i := range msgs {
		// The Writer refuses a whole call when one message is over BatchBytes: check here
		// so that one oversized message cannot fail the others it is coalesced with.
		if c.maxBytes > 0 && int64(len(msgs[i].Key)+len(msgs[i].Value)+messageOverhead) > c.maxBytes {
			return fmt.Errorf("publishing to %s: %w", c.w.Topic, ErrTooLarge)
		}
	}
	r := coalescedWrites.Get().(*coalescedWrite)
	r.msgs = msgs
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		r.msgs = nil
		coalescedWrites.Put(r)
		return fmt.Errorf("publishing to %s: %w: %w", c.w.Topic, ErrUnavailable, ctx.Err())
	case <-c.closed:
		r.msgs = nil
		coalescedWrites.Put(r)
		return ErrClosed
	}
	select {
	case err := <-r.done:
		r.msgs = nil
		coalescedWrites.Put(r)
		return err
	case <-ctx.Done():
		// r stays with the in-flight call until it answers; it is not reused.
		return fmt.Errorf("publishing to %s: %w: %w", c.w.Topic, ErrUnavailable, ctx.Err())
	}
}

// messageOverhead over-estimates a record's framing in a produce request.
const messageOverhead = 128

func (c *CoalescingWriter) run() {
	defer c.loop.Done()
	for {
		var first *coalescedWrite
		select {
		case first = <-c.reqs:
		case <-c.closed:
			return
		}
		// Waiting for a free slot is what lets the next batch grow under load.
		c.slots <- struct{}{}
		batch := []*coalescedWrite{first}
		n := len(first.msgs)
	collect:
		for n < c.maxBatch {
			select {
			case r := <-c.reqs:
				batch = append(batch, r)
				n += len(r.msgs)
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
	err := c.w.WriteMessages(ctx, msgs...)
	cancel()
	if err == nil {
		for _, r := range batch {
			r.done <- nil
		}
		return
	}
	// kafka-go reports per message when partitions fared differently.
	var werrs kafka.WriteErrors
	perMessage := errors.As(err, &werrs) && len(werrs) == len(msgs)
	i := 0
	for _, r := range batch {
		rerr := err
		if perMessage {
			rerr = nil
			for _, e := range werrs[i : i+len(r.msgs)] {
				if e != nil {
					rerr = e
					break
				}
			}
		}
		i += len(r.msgs)
		if rerr != nil {
			rerr = fmt.Errorf("publishing to %s: %w", c.w.Topic, mapWriteError(rerr))
		}
		r.done <- rerr
	}
}

// Close stops accepting writes, waits for the calls in flight, then closes the Writer.
func (c *CoalescingWriter) Close() error {
	c.once.Do(func() { close(c.closed) })
	c.loop.Wait()
	c.writes.Wait()
	return c.w.Close()
}
