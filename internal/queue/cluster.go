package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/aerostic/aerogate/config"
)

// Cluster is how every role reaches Kafka: the brokers, the client id, and TLS and SASL
// when the cluster wants them. Its Dialer and transport are the only places kafka-go
// connections are configured, so producers, consumers and admin calls all connect the
// same way.
type Cluster struct {
	Brokers  []string
	ClientID string         // default "aerogate"
	TLS      *tls.Config    // nil: plaintext
	SASL     sasl.Mechanism // nil: no authentication
}

// NewCluster builds a Cluster from the kafka section of the configuration, reading the
// TLS files now: an error names the key whose value is wrong.
func NewCluster(cfg config.Kafka) (Cluster, error) {
	c := Cluster{Brokers: cfg.Brokers, ClientID: cfg.ClientID}
	var err error
	if c.TLS, err = TLSConfig(cfg.TLS); err != nil {
		return Cluster{}, err
	}
	if c.SASL, err = SASLMechanism(cfg.SASL); err != nil {
		return Cluster{}, err
	}
	return c, nil
}

// TLSConfig returns the TLS settings of kafka.tls.*, or nil when TLS is off.
func TLSConfig(cfg config.KafkaTLS) (*tls.Config, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls.ca_file: no PEM certificate in %s", cfg.CAFile)
		}
	}
	switch {
	case cfg.CertFile != "" && cfg.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.cert_file, kafka.tls.key_file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	case cfg.CertFile != "":
		return nil, errors.New("kafka.tls.key_file: required with kafka.tls.cert_file")
	case cfg.KeyFile != "":
		return nil, errors.New("kafka.tls.cert_file: required with kafka.tls.key_file")
	}
	return t, nil
}

// SASLMechanism returns the SASL mechanism of kafka.sasl.*, or nil when none is set.
// Its errors never hold the password.
func SASLMechanism(cfg config.KafkaSASL) (sasl.Mechanism, error) {
	var algo scram.Algorithm
	switch strings.ToUpper(cfg.Mechanism) {
	case "":
		return nil, nil
	case config.SASLPlain:
		return plain.Mechanism{Username: cfg.Username, Password: cfg.Password}, nil
	case config.SASLScramSHA256:
		algo = scram.SHA256
	case config.SASLScramSHA512:
		algo = scram.SHA512
	default:
		return nil, fmt.Errorf("kafka.sasl.mechanism: must be %s, got %q", strings.Join(config.SASLMechanisms, ", "), cfg.Mechanism)
	}
	m, err := scram.Mechanism(algo, cfg.Username, cfg.Password)
	if err != nil {
		// The scram client refuses only user names and passwords that SASLprep rejects.
		return nil, errors.New("kafka.sasl.username, kafka.sasl.password: not valid for SCRAM (SASLprep)")
	}
	return m, nil
}

func (c Cluster) clientID() string {
	if c.ClientID == "" {
		return "aerogate"
	}
	return c.ClientID
}

// Dialer returns a kafka-go Dialer for single connections (consumer groups, partition
// readers, admin calls).
func (c Cluster) Dialer() *kafka.Dialer {
	return &kafka.Dialer{
		ClientID:      c.clientID(),
		Timeout:       DefaultDialTimeout,
		DualStack:     true,
		TLS:           c.TLS,
		SASLMechanism: c.SASL,
	}
}

// metadataTTL bounds how stale a producer's partition leaders can be.
const metadataTTL = time.Second

// transport returns a kafka-go Transport (a pool of connections, for producers) asking
// metadata of the given topics only (none: every topic in the cluster).
func (c Cluster) transport(dialTimeout time.Duration, metadataTopics ...string) *kafka.Transport {
	return &kafka.Transport{
		// Tells a request that never reached a broker from one that did (ErrNotWritten
		// or ErrOutcomeUnknown): see probedConn. TLS, when on, runs over it.
		Dial:           dialProbed,
		DialTimeout:    min(DefaultDialTimeout, dialTimeout),
		ClientID:       c.clientID(),
		TLS:            c.TLS,
		SASL:           c.SASL,
		MetadataTopics: metadataTopics,
		// Partition leaders come from this cache, refreshed at a random moment within the
		// TTL: after a leader moves (a broker restarting) writes to its partitions fail
		// until then. kafka-go's 6 s default would mean seconds of 503s.
		MetadataTTL: metadataTTL,
	}
}

// EnsureTopics creates the topics that do not exist yet.
// Existing topics are left alone, whatever their partition count.
func (c Cluster) EnsureTopics(ctx context.Context, topics []string, partitions, replicationFactor int) error {
	if len(topics) == 0 {
		return nil
	}
	if partitions <= 0 {
		return fmt.Errorf("ensuring topics: partitions must be positive, got %d", partitions)
	}
	if replicationFactor <= 0 {
		return fmt.Errorf("ensuring topics: replication factor must be positive, got %d", replicationFactor)
	}
	conn, err := c.dialAny(ctx)
	if err != nil {
		return fmt.Errorf("ensuring topics: %w", err)
	}
	defer conn.Close()
	controller, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("ensuring topics: finding controller: %w", err)
	}
	ctrl, err := c.Dialer().DialContext(ctx, "tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	if err != nil {
		return fmt.Errorf("ensuring topics: dialing controller %s:%d: %w", controller.Host, controller.Port, err)
	}
	defer ctrl.Close()
	setDeadline(ctx, ctrl)
	configs := make([]kafka.TopicConfig, len(topics))
	for i, t := range topics {
		configs[i] = kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: replicationFactor,
			ConfigEntries: topicConfigs[t]}
	}
	// kafka-go's Conn.CreateTopics already treats TopicAlreadyExists as success.
	if err := ctrl.CreateTopics(configs...); err != nil {
		return fmt.Errorf("ensuring topics %v: %w", topics, err)
	}
	return nil
}

// ErrUnknownTopic means a topic the caller needs does not exist.
var ErrUnknownTopic = errors.New("unknown topic")

// PartitionCounts returns the partition count of each topic; a topic that does not
// exist is an error wrapping ErrUnknownTopic.
func (c Cluster) PartitionCounts(ctx context.Context, topics ...string) (map[string]int, error) {
	conn, err := c.dialAny(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading partitions of %v: %w", topics, err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topics...)
	if err != nil {
		return nil, fmt.Errorf("reading partitions of %v: %w", topics, err)
	}
	counts := make(map[string]int, len(topics))
	for _, p := range parts {
		counts[p.Topic]++
	}
	for _, t := range topics {
		if counts[t] == 0 {
			return nil, fmt.Errorf("reading partitions of %s: %w", t, ErrUnknownTopic)
		}
	}
	return counts, nil
}

// Ping checks that a broker answers metadata requests (readiness).
// It opens a fresh connection each time, so a cached metadata answer cannot hide a
// dead broker; without a deadline in ctx it gives up after 2 seconds.
func (c Cluster) Ping(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	conn, err := c.dialAny(ctx)
	if err != nil {
		return fmt.Errorf("pinging kafka: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Brokers(); err != nil {
		return fmt.Errorf("pinging kafka: metadata: %w", err)
	}
	return nil
}

// partitionBounds returns the first and the next-to-be-written offsets of a partition.
func (c Cluster) partitionBounds(ctx context.Context, topic string, partition int) (first, last int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for _, b := range c.Brokers {
		conn, err := c.Dialer().DialLeader(ctx, "tcp", b, topic, partition)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		setDeadline(ctx, conn)
		first, last, err = conn.ReadOffsets()
		_ = conn.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return first, last, nil
	}
	return 0, 0, fmt.Errorf("reading offsets of %s/%d: %w", topic, partition, errors.Join(errs...))
}

// dialAny connects to the first broker that answers, with ctx's deadline on the conn.
func (c Cluster) dialAny(ctx context.Context) (*kafka.Conn, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("no brokers configured")
	}
	var errs []error
	for _, b := range c.Brokers {
		conn, err := c.Dialer().DialContext(ctx, "tcp", b)
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
