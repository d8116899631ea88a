// Package graph is the Meta Graph API client for the WhatsApp Cloud API, and the
// classification of Meta's error codes into what the caller should do (like franz-go's
// kerr: an error knows whether it is retriable).
package graph

import (
	"context"
	"time"
)

// Config configures the client.
type Config struct {
	BaseURL         string        // https://graph.facebook.com, or the fake
	Version         string        // default v22.0
	Timeout         time.Duration // per request; default 15s
	MaxConnsPerHost int
}

// Action is what a caller does about an error.
type Action int

const (
	// ActionRetry: retry the message with backoff (throughput, app/WABA limits,
	// temporary errors, 5xx, timeouts, connection errors).
	ActionRetry Action = iota + 1
	// ActionRetryRecipient: pair rate limit (131056); delay this recipient only.
	ActionRetryRecipient
	// ActionStopAccount: token expired or invalid (190); mark the account invalid and
	// keep its messages waiting.
	ActionStopAccount
	// ActionPauseNumber: spam restriction (131048) or blocked (368); pause the number and
	// keep its messages waiting.
	ActionPauseNumber
	// ActionFail: permanent (131026, 131047, 131049, 100, other client errors).
	ActionFail
)

func (a Action) String() string { panic("unimplemented") }

// Error is an error answered by the Graph API (or a transport failure with Code 0).
type Error struct {
	HTTPStatus int
	Code       int
	Subcode    int
	Type       string
	Title      string // Meta's error title or message; never contains the token
	FBTraceID  string
	Temporary  bool // transport failure or timeout: no answer from Meta
}

func (e *Error) Error() string { panic("unimplemented") }

// Action classifies the error by Meta's code, not by HTTP status.
func (e *Error) Action() Action { panic("unimplemented") }

// Retriable reports whether trying again later may succeed.
func (e *Error) Retriable() bool { panic("unimplemented") }

// Classify returns the action for any error: a *Error's Action, ActionRetry for
// transport errors, timeouts and context deadline errors.
func Classify(err error) Action { panic("unimplemented") }

// SendResult is Meta's answer to a send.
type SendResult struct {
	WAMID string // messages[0].id
	WAID  string // contacts[0].wa_id
}

// Client calls the Graph API. It reuses connections, never follows redirects and
// validates responses. It is safe for concurrent use.
type Client struct{}

// NewClient returns a client.
func NewClient(cfg Config) *Client { panic("unimplemented") }

// SendMessage posts payload (a Cloud API message body) to
// {base}/{version}/{phoneNumberID}/messages with the account's bearer token.
// Errors are *Error.
func (c *Client) SendMessage(ctx context.Context, phoneNumberID, token string, payload []byte) (SendResult, error) {
	panic("unimplemented")
}
