package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrClosed means the producer was closed before the message was handed to Kafka.
var ErrClosed = errors.New("kafka producer closed")

// Producer is aerogate's one way to write to Kafka, for every role and every topic. It
// funnels many concurrent WriteMessages calls into few produce requests: one loop collects
// whatever callers are waiting and sends them as one produce request per partition leader
// (see produce), while at most MaxInFlight requests are outstanding, and answers each
// caller with its own messages' fate. While a request is in flight the next batch grows by
// itself, so batches follow the load and no caller waits on a batch timer. A caller is
// answered only once the broker acknowledged (acks=all) or refused its messages.
//
// Every producer retries the same way: a partition that fails with a retriable error (a
// leader moving, a broker restarting, a dropped connection) is sent again up to
// produceAttempts times in all, with backoff between produceBackoffMin and
// produceBackoffMax, within Timeout; its messages keep the partition chosen first.
type Producer struct {
	topic      string
	addr       net.Addr
	transport  *kafka.Transport
	balancer   kafka.Balancer
	timeout    time.Duration
	maxBatch   int
	maxBytes   int64
	attempts   int
	backoffMin time.Duration
	backoffMax time.Duration
	metrics    produceMetrics

	reqs   chan *coalescedWrite
	slots  chan struct{}
	closed chan struct{}
	once   sync.Once
	loop   sync.WaitGroup
	writes sync.WaitGroup
}

// The retry rules of every producer.
const (
	produceAttempts   = 3
	produceBackoffMin = 20 * time.Millisecond
	produceBackoffMax = 500 * time.Millisecond
)

// ProducerConfig configures a Producer. Cluster and Topic are required.
type ProducerConfig struct {
	Cluster Cluster
	Topic   string
	// Timeout bounds one produce request with its retries (default 5s); a caller whose
	// messages are not acknowledged by then gets ErrUnavailable.
	Timeout time.Duration
	// Balancer picks each message's partition, once (default murmur2 of the key, the
	// Java client's default partitioner, so aerogate and any Java or librdkafka
	// "murmur2_random" producer put a key in the same partition).
	Balancer kafka.Balancer
	// MaxBatch caps the messages of one produce request (default 2,000).
	MaxBatch int
	// MaxBytes caps a produce request (default 1 MiB, the broker's default
	// message.max.bytes); a larger single call fails with ErrTooLarge.
	MaxBytes int64
	// MaxInFlight caps concurrent produce requests (default 4).
	MaxInFlight int
}

type coalescedWrite struct {
	msgs  []kafka.Message
	bytes int64
	done  chan error
}

var coalescedWrites = sync.Pool{New: func() any { return &coalescedWrite{done: make(chan error, 1)} }}

// NewProducer starts the collecting loop; Close stops it. It does not connect yet.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if len(cfg.Cluster.Brokers) == 0 {
		return nil, errors.New("producer: no kafka brokers")
	}
	if cfg.Topic == "" {
		return nil, errors.New("producer: no topic")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultWriteTimeout
	}
	if cfg.Balancer == nil {
		cfg.Balancer = &kafka.Murmur2Balancer{}
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultBatchBytes
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4
	}
	c := &Producer{
		topic: cfg.Topic,
		addr:  kafka.TCP(cfg.Cluster.Brokers...),
		// Metadata of this topic only: the default asks for every topic in the cluster.
		transport:  cfg.Cluster.transport(cfg.Timeout, cfg.Topic),
		balancer:   cfg.Balancer,
		timeout:    cfg.Timeout,
		maxBatch:   cfg.MaxBatch,
		maxBytes:   cfg.MaxBytes,
		attempts:   produceAttempts,
		backoffMin: produceBackoffMin,
		backoffMax: produceBackoffMax,
		metrics:    newProduceMetrics(cfg.Topic),
		reqs:       make(chan *coalescedWrite),
		slots:      make(chan struct{}, cfg.MaxInFlight),
		closed:     make(chan struct{}),
	}
	c.loop.Add(1)
	go c.run()
	return c, nil
}

// Topic is the topic the producer writes to.
func (c *Producer) Topic() string { return c.topic }

// WriteMessages writes msgs and returns once the broker acknowledged all of them, or an
// error wrapping ErrNotWritten (nothing can be in the log: also ErrUnavailable,
// ErrTooLarge or ErrClosed) or ErrOutcomeUnknown (the messages may be in the log, or
// appear there later: also ErrUnavailable). When ctx ends first it returns at once:
// ErrNotWritten if the messages were not handed to the writing loop yet, else
// ErrOutcomeUnknown, since they may still be delivered. Their bytes may still be read,
// so the caller must not reuse them after an error.
func (c *Producer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	var size int64
	for i := range msgs {
		size += messageSize(&msgs[i])
	}
	// Checked here so that an oversized call cannot fail the others it is coalesced with.
	if size > c.maxBytes {
		return fmt.Errorf("publishing to %s: %w", c.topic, ErrTooLarge)
	}
	r := coalescedWrites.Get().(*coalescedWrite)
	r.msgs, r.bytes = msgs, size
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		r.msgs = nil
		coalescedWrites.Put(r)
		return fmt.Errorf("publishing to %s: %w", c.topic, outcomeError(ctx.Err(), false))
	case <-c.closed:
		r.msgs = nil
		coalescedWrites.Put(r)
		return fmt.Errorf("publishing to %s: %w: %w", c.topic, ErrNotWritten, ErrClosed)
	}
	select {
	case err := <-r.done:
		r.msgs = nil
		coalescedWrites.Put(r)
		return err
	case <-ctx.Done():
		// r stays with the in-flight call until it answers; it is not reused. The loop
		// has it and writes it whatever happens here, so it may land.
		return fmt.Errorf("publishing to %s: %w", c.topic, outcomeError(ctx.Err(), true))
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

func (c *Producer) run() {
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
				// A request stays under MaxBytes in all, so no partition's record set
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

func (c *Producer) write(batch []*coalescedWrite, n int) {
	defer c.writes.Done()
	defer func() { <-c.slots }()
	msgs := make([]kafka.Message, 0, n)
	for _, r := range batch {
		msgs = append(msgs, r.msgs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	start := time.Now()
	errs := c.produce(ctx, msgs)
	c.metrics.observe(time.Since(start), len(msgs), errs)
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
				rerr = fmt.Errorf("publishing to %s: %w", c.topic, e)
				break
			}
		}
		i += len(r.msgs)
		r.done <- rerr
	}
}

// Close stops accepting writes, waits for the requests in flight, then closes the
// Transport's connections.
func (c *Producer) Close() error {
	c.once.Do(func() { close(c.closed) })
	c.loop.Wait()
	c.writes.Wait()
	c.transport.CloseIdleConnections()
	return nil
}
