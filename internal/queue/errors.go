package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
)

// ErrUnavailable means the broker did not acknowledge a write (down, unreachable,
// timed out, not enough in-sync replicas, no leader, unknown topic). The write may or
// may not have landed: the caller answers "try again" (the gateway: 503 with
// Retry-After) and a retry with the same idempotency key yields the same message.
var ErrUnavailable = errors.New("kafka unavailable")

// ErrTooLarge means a message is larger than the producer's MaxBytes.
var ErrTooLarge = errors.New("message too large for kafka")

// mapWriteError wraps a produce error in the sentinel callers branch on.
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
