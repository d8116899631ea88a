package queue

import (
	"errors"
)

// ErrUnavailable means the broker did not acknowledge a write (down, unreachable,
// timed out, not enough in-sync replicas, no leader, unknown topic). Such an error also
// wraps ErrNotWritten or ErrOutcomeUnknown, which says whether the write may have
// landed: the gateway answers 503 for the first and 504 with the message id for the
// second.
var ErrUnavailable = errors.New("kafka unavailable")

// ErrTooLarge means a message is larger than the producer's MaxBytes (also
// ErrNotWritten).
var ErrTooLarge = errors.New("message too large for kafka")
