// Package queue is aerogate's one home for Kafka: topic names, the JSON envelopes that
// travel on them, how every role connects (Cluster: brokers, TLS, SASL), the one producer
// (Producer) and the one consumer (Consumer) every role uses, and the embedded kfake broker
// used by dev and tests. kafka-go is the client underneath.
package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Topics.
const (
	TopicSends       = "wa.sends"
	TopicSendsRetry  = "wa.sends.retry"
	TopicSendsDLQ    = "wa.sends.dlq"
	TopicWebhooks    = "wa.webhooks"
	TopicWebhooksDLQ = "wa.webhooks.dlq"
	TopicEvents      = "wa.events"
)

// AllTopics are created at start (dev) or by EnsureTopics.
var AllTopics = []string{TopicSends, TopicSendsRetry, TopicSendsDLQ, TopicWebhooks, TopicWebhooksDLQ, TopicEvents}

// WebhookMaxMessageBytes is the max.message.bytes aerogate gives wa.webhooks and
// wa.webhooks.dlq when it creates them: a webhook body is up to 3 MB, over the brokers'
// usual 1 MiB default. Topics created by an operator need at least
// webhooks.max_body_bytes plus 64 KiB.
const WebhookMaxMessageBytes = 8 << 20

// topicConfigs are the settings aerogate gives the topics it creates, beyond the
// brokers' defaults.
var topicConfigs = map[string][]kafka.ConfigEntry{
	TopicWebhooks:    {{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(WebhookMaxMessageBytes)}},
	TopicWebhooksDLQ: {{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(WebhookMaxMessageBytes)}},
}

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
	// Priority is PriorityUrgent for a send marked urgent (X-Aerogate-Priority or the
	// body's "priority"); empty for every other send.
	Priority  string         `json:"priority,omitempty"`
	Attempt   int            `json:"attempt,omitempty"`
	NotBefore *time.Time     `json:"not_before,omitempty"`
	Error     *EnvelopeError `json:"error,omitempty"` // the final error, on the DLQ
}

// PriorityUrgent marks an urgent send (one-time passwords, order updates): within its
// number it goes ahead of queued campaign sends, still within the number's rate.
const PriorityUrgent = "urgent"

// Urgent reports whether the send is marked urgent.
func (e *Envelope) Urgent() bool { return e.Priority == PriorityUrgent }

// EnvelopeError is Meta's error (or a transport error) carried on the retry/DLQ topics.
type EnvelopeError struct {
	Code    int    `json:"code,omitempty"`
	Subcode int    `json:"subcode,omitempty"`
	Title   string `json:"title"`
}

// Defaults.
const (
	DefaultWriteTimeout = 5 * time.Second
	DefaultBatchBytes   = 1 << 20
	DefaultPartitions   = 10
	DefaultSession      = 10 * time.Second
	DefaultHeartbeat    = time.Second
	DefaultRebalance    = 10 * time.Second
	DefaultDialTimeout  = 3 * time.Second
)

// EmbeddedConfig configures the in-process broker.
type EmbeddedConfig struct {
	Addr       string // host:port to listen on; port 0 picks one
	DataDir    string // where the log persists; empty keeps it in memory
	Partitions int    // for AllTopics, created at start

	// SyncWrites fsyncs every produced batch and group commit. Without it the log is
	// written to the OS page cache at once (a killed process loses nothing; a machine
	// crash can lose what the OS had not flushed yet), like Kafka's own default.
	SyncWrites bool
	// Logger receives the broker's errors (and its warnings at debug level); nil means
	// slog.Default().
	Logger *slog.Logger
}

// Embedded is franz-go's kfake broker running in this process.
//
// Persistence (kfake with a DataDir): every produced batch is appended to a segment
// file and every group offset commit to groups.log as it happens, so both survive a
// SIGKILL of the process; Close additionally writes snapshots that make the next start
// faster. With SyncWrites off, a power loss or kernel crash can lose the writes the OS
// had not flushed to disk.
type Embedded struct {
	cluster *kfake.Cluster
	addrs   []string
}

// StartEmbedded starts the broker with AllTopics created.
//
// Topics that already exist in DataDir keep their partition count; topics missing from
// a persisted log are created with cfg.Partitions.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	addr := cfg.Addr
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake always asks for 127.0.0.1:<port>; listen on exactly what was configured.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, addr)
		}),
		kfake.ClusterID("aerogate-dev"),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.SeedTopics(int32(cfg.Partitions), AllTopics...),
		// Seeded topics take no topic settings: the broker-wide limit lets wa.webhooks
		// take Meta's largest bodies.
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(WebhookMaxMessageBytes)}),
		// Lets tests and dev use short session timeouts, so a crashed consumer's
		// partitions move quickly.
		kfake.GroupMinSessionTimeout(time.Second),
		kfake.WithLogger(kfakeLogger{logger.With("component", "kfake")}),
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating kafka data dir: %w", err)
		}
		opts = append(opts, kfake.DataDir(cfg.DataDir))
		if cfg.SyncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting embedded kafka on %s: %w", cfg.Addr, err)
	}
	e := &Embedded{cluster: c, addrs: c.ListenAddrs()}
	// SeedTopics only applies to a fresh data dir; after a restart, create what is missing.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Cluster().EnsureTopics(ctx, AllTopics, cfg.Partitions, 1); err != nil {
		c.Close()
		return nil, fmt.Errorf("starting embedded kafka: %w", err)
	}
	return e, nil
}

// Addrs returns the bootstrap addresses.
func (e *Embedded) Addrs() []string { return append([]string(nil), e.addrs...) }

// Cluster returns how to connect to the broker (plaintext, no authentication).
func (e *Embedded) Cluster() Cluster { return Cluster{Brokers: e.Addrs()} }

// Close stops the broker, persisting its log when it has a data directory.
func (e *Embedded) Close() { e.cluster.Close() }

type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var l slog.Level
	switch level {
	case kfake.LogLevelError:
		l = slog.LevelError
	case kfake.LogLevelWarn:
		l = slog.LevelDebug // client disconnects and the like: noise in dev
	default:
		return
	}
	ctx := context.Background()
	if k.l.Enabled(ctx, l) {
		k.l.Log(ctx, l, fmt.Sprintf(format, args...))
	}
}
