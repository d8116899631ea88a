// Package queue is aerogate's Kafka layer: topic names, the JSON envelopes that travel on
// them, kafka-go writer and reader setup, and the embedded kfake broker used by dev and tests.
package queue

import (
	"context"
	"encoding/json"
	"time"

	"github.com/segmentio/kafka-go"
)

// Topics.
const (
	TopicSends      = "wa.sends"
	TopicSendsRetry = "wa.sends.retry"
	TopicSendsDLQ   = "wa.sends.dlq"
	TopicWebhooks   = "wa.webhooks"
	TopicEvents     = "wa.events"
)

// AllTopics are created at start (dev) or by EnsureTopics.
var AllTopics = []string{TopicSends, TopicSendsRetry, TopicSendsDLQ, TopicWebhooks, TopicEvents}

// Envelope is a send on wa.sends (and, with Attempt/NotBefore/Error, on the retry and
// DLQ topics). It never holds an access token: the sender resolves the token itself.
type Envelope struct {
	ID             string          `json:"id"`
	TenantID       string          `json:"tenant_id"`
	AccountID      string          `json:"account_id"`
	PhoneNumberID  string          `json:"phone_number_id"`
	Recipient      string          `json:"to"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Payload        json.RawMessage `json:"payload"` // the Cloud API message body
	AcceptedAt     time.Time       `json:"accepted_at"`
	Attempt        int             `json:"attempt,omitempty"`
	NotBefore      *time.Time      `json:"not_before,omitempty"`
	Error          *EnvelopeError  `json:"error,omitempty"` // the final error, on the DLQ
}

// EnvelopeError is Meta's error (or a transport error) carried on the retry/DLQ topics.
type EnvelopeError struct {
	Code    int    `json:"code,omitempty"`
	Subcode int    `json:"subcode,omitempty"`
	Title   string `json:"title"`
}

// WriterConfig configures a producer.
type WriterConfig struct {
	Brokers      []string
	Topic        string
	BatchTimeout time.Duration // default 2ms
	WriteTimeout time.Duration // default 5s
	ClientID     string
}

// NewWriter returns a kafka-go writer that keys by hash (all of a key's messages in one
// partition), waits for acks=all, and batches for at most BatchTimeout.
func NewWriter(cfg WriterConfig) *kafka.Writer { panic("unimplemented") }

// ReaderConfig configures a consumer-group reader.
type ReaderConfig struct {
	Brokers  []string
	GroupID  string
	Topic    string
	ClientID string
}

// NewReader returns a consumer-group reader that never auto-commits (callers commit
// explicitly, after everything below the offset is finished).
func NewReader(cfg ReaderConfig) *kafka.Reader { panic("unimplemented") }

// EnsureTopics creates the topics that do not exist yet.
func EnsureTopics(ctx context.Context, brokers []string, topics []string, partitions, replicationFactor int) error {
	panic("unimplemented")
}

// Ping checks that a broker answers metadata requests (readiness).
func Ping(ctx context.Context, brokers []string) error { panic("unimplemented") }

// EmbeddedConfig configures the in-process broker.
type EmbeddedConfig struct {
	Addr       string // host:port to listen on; port 0 picks one
	DataDir    string // where the log persists; empty keeps it in memory
	Partitions int    // for AllTopics, created at start
}

// Embedded is franz-go's kfake broker running in this process.
type Embedded struct{}

// StartEmbedded starts the broker with AllTopics created.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) { panic("unimplemented") }

// Addrs returns the bootstrap addresses.
func (e *Embedded) Addrs() []string { panic("unimplemented") }

// Close stops the broker, persisting its log when it has a data directory.
func (e *Embedded) Close() { panic("unimplemented") }
