package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrUnavailable means the broker did not acknowledge a write (down, unreachable,
// timed out, not enough in-sync replicas, no leader, unknown topic). The write may or
// may not have landed: the caller answers "try again" (the gateway: 503 with
// Retry-After) and a retry with the same idempotency key yields the same message.
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
// wrapping ErrUnavailable (or ErrTooLarge) within the writer's WriteTimeout.
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
	return fmt.Errorf("publishing to %s: %w", p.w.Topic, mapWriteError(err))
}

// Close flushes pending batches and closes connections.
func (p *Publisher) Close() error { return p.w.Close() }

func mapWriteError(err error) error {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) || errors.Is(err, kafka.MessageSizeTooLarge) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) {
		// Report the first failure; all messages of a call share the fate of their batch.
		for _, e := range werrs {
			if e != nil {
				return mapWriteError(e)
			}
		}
	}
	if errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
