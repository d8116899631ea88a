// Package fakemeta is a fake Meta Graph API for tests, bench and `aerogate dev`: it takes
// sends and answers like Meta, checks the bearer token each phone number was given, and can
// add latency, per-number throughput limits and chosen error codes.
package fakemeta

import "time"

// Options configure a fake.
type Options struct {
	// Latency is added to every send answer.
	Latency time.Duration
	// AcceptAnyToken accepts any non-empty bearer token for a phone number that was not
	// given one with SetToken (dev mode).
	AcceptAnyToken bool
}

// Received is one send the fake accepted or refused, as GET /_fake/messages lists it.
type Received struct {
	PhoneNumberID string    `json:"phone_number_id"`
	Token         string    `json:"token"` // the bearer token the send carried
	To            string    `json:"to"`
	Body          []byte    `json:"body"`
	WAMID         string    `json:"wamid,omitempty"` // empty when refused
	ErrorCode     int       `json:"error_code,omitempty"`
	At            time.Time `json:"at"`
}

// ErrorSpec is an error the fake answers with.
type ErrorSpec struct {
	HTTPStatus int    `json:"http_status"`
	Code       int    `json:"code"`
	Subcode    int    `json:"subcode,omitempty"`
	Title      string `json:"title"`
}

// Server is the fake. HTTP routes:
//
//	POST /{version}/{phone_number_id}/messages   a send, answered like Meta
//	GET  /_fake/messages[?phone_number_id=]      what was received (JSON array of Received)
//	POST /_fake/reset                            forget received messages and injected errors
type Server struct{}

// New returns a fake that is not listening yet.
func New(opts Options) *Server { panic("unimplemented") }

// Start listens on addr ("127.0.0.1:0" picks a port) and serves until Close.
func (s *Server) Start(addr string) error { panic("unimplemented") }

// URL is the base URL to give graph.Config.BaseURL, e.g. http://127.0.0.1:9090.
func (s *Server) URL() string { panic("unimplemented") }

// Close stops the server.
func (s *Server) Close() error { panic("unimplemented") }

// SetToken makes token the only one accepted for phoneNumberID; any other gets error 190.
func (s *Server) SetToken(phoneNumberID, token string) { panic("unimplemented") }

// SetLatency changes the added latency.
func (s *Server) SetLatency(d time.Duration) { panic("unimplemented") }

// SetThroughput limits phoneNumberID to mps sends a second (a token bucket with a burst
// of mps/10, at least 1); sends over it get error 130429. 0 removes the limit.
func (s *Server) SetThroughput(phoneNumberID string, mps int) { panic("unimplemented") }

// FailNext makes the next n sends to phoneNumberID answer with spec (n < 0: all of them
// until ClearErrors).
func (s *Server) FailNext(phoneNumberID string, n int, spec ErrorSpec) { panic("unimplemented") }

// FailRecipient makes the next n sends to that recipient answer with spec.
func (s *Server) FailRecipient(to string, n int, spec ErrorSpec) { panic("unimplemented") }

// ClearErrors removes injected errors.
func (s *Server) ClearErrors() { panic("unimplemented") }

// Received lists what was received, in arrival order.
func (s *Server) Received() []Received { panic("unimplemented") }

// Count returns how many sends were accepted (given a wamid).
func (s *Server) Count() int { panic("unimplemented") }

// Reset forgets received messages and injected errors.
func (s *Server) Reset() { panic("unimplemented") }
