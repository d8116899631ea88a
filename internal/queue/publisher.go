package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrUnavailable means the broker did not acknowledge a write (down, unreachable,
// timed out, not enough in-sync replicas, no leader, unknown topic). Such an error also
// wraps ErrNotWritten or ErrOutcomeUnknown, which says whether the write may have
// landed: the gateway answers 503 for the first and 504 with the message id for the
// second.
var ErrUnavailable = errors.New("kafka unavailable")

// ErrTooLarge means a message is larger than the writer's BatchBytes.
var ErrTooLarge = errors.New("message too large for kafka")

// Publisher writes to one topic with acks=all and a bounded wait.
// It is safe for concurrent use; share one per topic so that requests batch together.
type Publisher struct {
	w       *kafka.Writer
	timeout time.Duration
}

// NewPublisher returns a publisher over NewWriter(cfg).
func NewPublisher(cfg WriterConfig) *Publisher {
	cfg = cfg.withDefaults()
	return &Publisher{w: NewWriter(cfg), timeout: cfg.WriteTimeout}
}

// Writer returns the underlying kafka-go writer (for Stats).
func (p *Publisher) Writer() *kafka.Writer { return p.w }

// Publish writes one message and returns once the broker acknowledged it, or an error
// wrapping ErrUnavailable (or ErrTooLarge) within the writer's WriteTimeout. kafka-go's
// Writer reports only its last attempt, so a failed Publish is ErrOutcomeUnknown unless
// the message was too large (see ClassifyWriteError).
func (p *Publisher) Publish(ctx context.Context, key, value []byte) error {
	return p.PublishMessages(ctx, kafka.Message{Key: key, Value: value})
}

// PublishMessages writes msgs (all to the publisher's topic; leave Message.Topic empty).
// On error, none of msgs should be taken as written, though some may have been.
func (p *Publisher) PublishMessages(ctx context.Context, msgs ...kafka.Message) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	err := p.w.WriteMessages(ctx, msgs...)
	if err == nil {
		return nil
	}
	return fmt.Errorf("publishing to %s: %w", p.w.Topic, ClassifyWriteError(err))
}

// Close flushes pending batches and closes connections.
func (p *Publisher) Close() error { return p.w.Close() }
