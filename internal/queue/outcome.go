package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
)

// The fate of a write that was not acknowledged. Every error of a Producer (and of
// ClassifyWriteError) wraps exactly one of these, so a caller can tell a client the
// truth:
//
//   - ErrNotWritten: no broker can have appended any of the messages: the connection was
//     refused, the request was never (completely) written to a connection, or a broker
//     answered with an error that it gives before appending (not the leader, unknown
//     topic, not enough in-sync replicas, too large). Retrying cannot duplicate anything.
//   - ErrOutcomeUnknown: a produce request was written to a broker and no answer came in
//     time, the connection broke after it was written, or the broker said the write timed
//     out after it appended it. The messages may be in the log now, or appear there
//     later (a frozen broker appends what it read when it wakes up).
var (
	ErrNotWritten     = errors.New("kafka write not written")
	ErrOutcomeUnknown = errors.New("kafka write outcome unknown")
)

// errNotSent marks a transport error that happened before a whole request was written to
// a broker's connection: a broker reads only complete requests, so it cannot have acted
// on it.
var errNotSent = errors.New("request not sent")

type notSentError struct{ err error }

func (e *notSentError) Error() string   { return "request not sent: " + e.err.Error() }
func (e *notSentError) Unwrap() []error { return []error{errNotSent, e.err} }

// outcomeError wraps err, a failed write, with its fate (ErrTooLarge is also not
// written, but says no retry will help, so it does not wrap ErrUnavailable).
// maybeWritten is whether any attempt at the write may have reached a broker's log.
func outcomeError(err error, maybeWritten bool) error {
	switch {
	case errors.Is(err, ErrNotWritten), errors.Is(err, ErrOutcomeUnknown):
		return err
	case maybeWritten:
		return fmt.Errorf("%w: %w: %w", ErrUnavailable, ErrOutcomeUnknown, err)
	case isTooLarge(err):
		return fmt.Errorf("%w: %w: %w", ErrTooLarge, ErrNotWritten, err)
	}
	return fmt.Errorf("%w: %w: %w", ErrUnavailable, ErrNotWritten, err)
}

func isTooLarge(err error) bool {
	var tooLarge kafka.MessageTooLargeError
	return errors.Is(err, ErrTooLarge) || errors.As(err, &tooLarge) || errors.Is(err, kafka.MessageSizeTooLarge)
}

// mayHaveWritten reports whether a failed produce round trip may have reached a
// broker's log. Only what proves otherwise says no: a dial that failed, a request that
// was not completely written, a broker error code given before the append. A deadline
// or cancellation is "maybe": the request may have been on the wire when it hit.
func mayHaveWritten(err error) bool {
	if errors.Is(err, errNotSent) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		return appendedCode(kerr)
	}
	return true
}

// appendedCode reports whether a broker's error code may come after the leader appended
// the records: a produce that timed out waiting for the in-sync replicas, one refused
// after the append, and an unknown server error. Every other produce error is given
// before the append.
func appendedCode(e kafka.Error) bool {
	return e == kafka.RequestTimedOut || e == kafka.NotEnoughReplicasAfterAppend || e == kafka.Unknown
}

// ClassifyWriteError returns err with its fate: an error that already wraps ErrNotWritten
// or ErrOutcomeUnknown (a Producer's) is returned as it is; any other error of a write
// (another writer's, which may have retried inside and reported its last attempt only)
// proves nothing about what reached the log: it is ErrOutcomeUnknown, except a message
// too large (ErrTooLarge, ErrNotWritten). A cancelled context keeps its context.Canceled
// (and is ErrOutcomeUnknown); nil stays nil.
func ClassifyWriteError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNotWritten) || errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) {
		// Report the first failure; all messages of a call share the fate of their batch.
		for _, e := range werrs {
			if e != nil {
				return ClassifyWriteError(e)
			}
		}
	}
	if isTooLarge(err) {
		return outcomeError(err, false)
	}
	if errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return outcomeError(err, true)
}

// probedConn is a broker connection that knows when a request could not have reached
// the broker. Before the first byte of each request it checks, without blocking,
// whether the broker already closed the connection (a stopped or killed broker leaves
// its idle connections half-closed in the pool, and a request written into one would
// otherwise look like one lost after it was sent); and any error while writing a request
// means the broker holds at most part of it, which it never acts on. Both come back as
// notSentError. Errors while reading the answer are what they are: the request was sent.
type probedConn struct {
	net.Conn
	// requestStarted is false between the last read and the next write: the next
	// write starts a request.
	requestStarted bool
}

func (c *probedConn) Write(b []byte) (int, error) {
	if !c.requestStarted {
		c.requestStarted = true
		if err := peerClosed(c.Conn); err != nil {
			return 0, &notSentError{err}
		}
	}
	n, err := c.Conn.Write(b)
	if err != nil {
		return n, &notSentError{err}
	}
	return n, nil
}

func (c *probedConn) Read(b []byte) (int, error) {
	c.requestStarted = false
	return c.Conn.Read(b)
}

// dialProbed dials like kafka-go's default dialer and returns a probedConn.
func dialProbed(ctx context.Context, network, address string) (net.Conn, error) {
	d := net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &probedConn{Conn: c}, nil
}
