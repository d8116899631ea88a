// Package queue is aerogate's Kafka layer: topic names, the JSON envelopes that travel on
// them, kafka-go writer and reader setup, and the embedded kfake broker used by dev and tests.
package queue

import (
	"context"
	"encoding/json"
	"errors"
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

// Defaults. The writer's batch timeout is short because kafka-go holds a synchronous
// WriteMessages until the batch of its partition is flushed: the library default (1s)
// would put a second on every accepted request.
const (
	DefaultBatchTimeout = 2 * time.Millisecond
	DefaultWriteTimeout = 5 * time.Second
	DefaultBatchSize    = 1000
	DefaultBatchBytes   = 1 << 20
	DefaultPartitions   = 10
	DefaultMaxWait      = 1500 * time.Millisecond
	DefaultSession      = 10 * time.Second
	DefaultHeartbeat    = time.Second
	DefaultRebalance    = 10 * time.Second
	DefaultDialTimeout  = 3 * time.Second
)

// WriterConfig configures a producer.
type WriterConfig struct {
	Brokers      []string
	Topic        string
	BatchTimeout time.Duration // default 2ms
	WriteTimeout time.Duration // default 5s
	ClientID     string

	// BatchSize is the most messages in one produce request of a partition (default 1000).
	// kafka-go keeps one batch per partition and flushes it when full or after
	// BatchTimeout, so under load a batch fills long before the limit matters.
	BatchSize int
	// BatchBytes caps a produce request of a partition (default 1 MiB, the broker's
	// default message.max.bytes); a larger single message fails with ErrTooLarge.
	BatchBytes int64
	// MaxAttempts bounds kafka-go's own retries of a failed batch (default 3).
	MaxAttempts int
	// Logger receives kafka-go's errors; nil means slog.Default().
	Logger *slog.Logger
}

// NewWriter returns a kafka-go writer that keys by hash (all of a key's messages in one
// partition), waits for acks=all, and batches for at most BatchTimeout.
//
// The balancer is murmur2, the Java client's default partitioner, so aerogate and any
// Java or librdkafka ("murmur2_random") producer put a key in the same partition.
// Callers should bound each WriteMessages with a context deadline (Publisher does):
// kafka-go retries internally and a dead broker would otherwise hold the call for long.
func NewWriter(cfg WriterConfig) *kafka.Writer {
	cfg = cfg.withDefaults()
	var metadataTopics []string
	if cfg.Topic != "" {
		// Only this writer's topic: the default asks for every topic in the cluster.
		metadataTopics = []string{cfg.Topic}
	}
	return &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Topic:                  cfg.Topic,
		Balancer:               &kafka.Murmur2Balancer{},
		MaxAttempts:            cfg.MaxAttempts,
		WriteBackoffMin:        20 * time.Millisecond,
		WriteBackoffMax:        500 * time.Millisecond,
		BatchSize:              cfg.BatchSize,
		BatchBytes:             cfg.BatchBytes,
		BatchTimeout:           cfg.BatchTimeout,
		ReadTimeout:            cfg.WriteTimeout,
		WriteTimeout:           cfg.WriteTimeout,
		RequiredAcks:           kafka.RequireAll,
		Async:                  false,
		AllowAutoTopicCreation: false,
		ErrorLogger:            kafkaLogger(cfg.Logger, "kafka writer"),
		Transport: &kafka.Transport{
			// Tells a request that never reached a broker from one that did (ErrNotWritten
			// or ErrOutcomeUnknown): see probedConn.
			Dial:           dialProbed,
			DialTimeout:    min(DefaultDialTimeout, cfg.WriteTimeout),
			ClientID:       cfg.ClientID,
			MetadataTopics: metadataTopics,
			// Partition leaders come from this cache, refreshed at a random moment within
			// the TTL: after a leader moves (a broker restarting) writes to its partitions
			// fail until then. kafka-go's 6 s default would mean seconds of 503s.
			MetadataTTL: metadataTTL,
		},
	}
}

// metadataTTL bounds how stale a writer's partition leaders can be.
const metadataTTL = time.Second

func (cfg WriterConfig) withDefaults() WriterConfig {
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = DefaultBatchTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "aerogate"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// ReaderConfig configures a consumer-group reader.
type ReaderConfig struct {
	Brokers  []string
	GroupID  string
	Topic    string
	ClientID string

	// MaxWait bounds a fetch that finds no data (default 1.5s). It does not delay
	// messages: MinBytes is 1, so the broker answers a waiting fetch as soon as a message
	// arrives (measured: a few ms from publish to FetchMessage on a quiet topic).
	// kafka-go uses MaxWait as the socket deadline and asks the broker to wait
	// MaxWait-1s (MaxWait*3/4 below 1s): small values (tens of ms) leave the broker too
	// little slack, so kafka-go drops the connection with an i/o timeout on every idle
	// fetch, and exactly 1s makes the broker wait 0 (a busy loop of empty fetches).
	MaxWait time.Duration
	// MaxBytes caps one fetch response (default 10 MiB).
	MaxBytes int
	// QueueCapacity is how many fetched messages kafka-go buffers (default 1000).
	QueueCapacity int
	// SessionTimeout (default 10s) and RebalanceTimeout (default 10s) bound how long
	// partitions of a crashed member stay unassigned. HeartbeatInterval defaults to 1s.
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	// Logger receives kafka-go's errors; nil means slog.Default().
	Logger *slog.Logger
}

// NewReader returns a consumer-group reader that never auto-commits (callers commit
// explicitly, after everything below the offset is finished).
//
// Use FetchMessage and CommitMessages, never ReadMessage (which commits on read).
// A group without committed offsets starts at the first offset. NewReader panics, as
// kafka.NewReader does, when Brokers, GroupID or Topic is empty.
func NewReader(cfg ReaderConfig) *kafka.Reader {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 10 << 20
	}
	if cfg.QueueCapacity <= 0 {
		cfg.QueueCapacity = 1000
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSession
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = DefaultRebalance
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeat
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "aerogate"
	}
	if cfg.GroupID == "" {
		panic("queue: NewReader without GroupID")
	}
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers: cfg.Brokers,
		GroupID: cfg.GroupID,
		Topic:   cfg.Topic,
		Dialer: &kafka.Dialer{
			ClientID:  cfg.ClientID,
			Timeout:   DefaultDialTimeout,
			DualStack: true,
		},
		QueueCapacity:     cfg.QueueCapacity,
		MinBytes:          1,
		MaxBytes:          cfg.MaxBytes,
		MaxWait:           cfg.MaxWait,
		ReadBatchTimeout:  cfg.MaxWait + 5*time.Second,
		ReadLagInterval:   -1,
		HeartbeatInterval: cfg.HeartbeatInterval,
		CommitInterval:    0, // synchronous commits, only through CommitMessages
		SessionTimeout:    cfg.SessionTimeout,
		RebalanceTimeout:  cfg.RebalanceTimeout,
		JoinGroupBackoff:  500 * time.Millisecond,
		StartOffset:       kafka.FirstOffset,
		ReadBackoffMin:    10 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
		MaxAttempts:       3,
		ErrorLogger:       kafkaLogger(cfg.Logger, "kafka reader"),
	})
}

// EnsureTopics creates the topics that do not exist yet.
// Existing topics are left alone, whatever their partition count.
func EnsureTopics(ctx context.Context, brokers []string, topics []string, partitions, replicationFactor int) error {
	if len(topics) == 0 {
		return nil
	}
	if partitions <= 0 {
		return fmt.Errorf("ensuring topics: partitions must be positive, got %d", partitions)
	}
	if replicationFactor <= 0 {
		return fmt.Errorf("ensuring topics: replication factor must be positive, got %d", replicationFactor)
	}
	conn, err := dialAny(ctx, brokers)
	if err != nil {
		return fmt.Errorf("ensuring topics: %w", err)
	}
	defer conn.Close()
	controller, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("ensuring topics: finding controller: %w", err)
	}
	ctrl, err := dialer().DialContext(ctx, "tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	if err != nil {
		return fmt.Errorf("ensuring topics: dialing controller %s:%d: %w", controller.Host, controller.Port, err)
	}
	defer ctrl.Close()
	setDeadline(ctx, ctrl)
	configs := make([]kafka.TopicConfig, len(topics))
	for i, t := range topics {
		configs[i] = kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: replicationFactor}
	}
	// kafka-go's Conn.CreateTopics already treats TopicAlreadyExists as success.
	if err := ctrl.CreateTopics(configs...); err != nil {
		return fmt.Errorf("ensuring topics %v: %w", topics, err)
	}
	return nil
}

// Ping checks that a broker answers metadata requests (readiness).
// It opens a fresh connection each time, so a cached metadata answer cannot hide a
// dead broker; without a deadline in ctx it gives up after 2 seconds.
func Ping(ctx context.Context, brokers []string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	conn, err := dialAny(ctx, brokers)
	if err != nil {
		return fmt.Errorf("pinging kafka: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Brokers(); err != nil {
		return fmt.Errorf("pinging kafka: metadata: %w", err)
	}
	return nil
}

func dialer() *kafka.Dialer {
	return &kafka.Dialer{ClientID: "aerogate-admin", Timeout: DefaultDialTimeout, DualStack: true}
}

// dialAny connects to the first broker that answers, with ctx's deadline on the conn.
func dialAny(ctx context.Context, brokers []string) (*kafka.Conn, error) {
	if len(brokers) == 0 {
		return nil, errors.New("no brokers configured")
	}
	var errs []error
	for _, b := range brokers {
		conn, err := dialer().DialContext(ctx, "tcp", b)
		if err != nil {
			errs = append(errs, fmt.Errorf("dialing %s: %w", b, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		setDeadline(ctx, conn)
		return conn, nil
	}
	return nil, errors.Join(errs...)
}

func setDeadline(ctx context.Context, conn *kafka.Conn) {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
}

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
	if err := EnsureTopics(ctx, e.addrs, AllTopics, cfg.Partitions, 1); err != nil {
		c.Close()
		return nil, fmt.Errorf("starting embedded kafka: %w", err)
	}
	return e, nil
}

// Addrs returns the bootstrap addresses.
func (e *Embedded) Addrs() []string { return append([]string(nil), e.addrs...) }

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

func kafkaLogger(l *slog.Logger, name string) kafka.Logger {
	if l == nil {
		l = slog.Default()
	}
	return kafka.LoggerFunc(func(format string, args ...any) {
		l.Warn(name + ": " + fmt.Sprintf(format, args...))
	})
}
