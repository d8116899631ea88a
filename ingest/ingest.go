// Package ingest is the `aerogate ingest` role: it consumes wa.webhooks (the raw bodies
// the webhook edge published) and stores what Meta said, every entry, change and item on
// its own, for the right tenant, however often and in whatever order Meta delivered it.
//
// # Per item
//
//   - An inbound message is stored in inbound_messages once per wamid (INSERT … ON
//     CONFLICT DO NOTHING), its tenant found from metadata.phone_number_id through the
//     account resolver, Meta's timestamp kept.
//   - A status moves its message forward only (sent < delivered < read; read and failed
//     are final), keeping each status's time (message_statuses, delivered_at, read_at), once
//     per message and status. A status whose wamid no message has yet (it can outrun the
//     sender's write) waits in pending_statuses and is applied when the sender records the
//     wamid: a trigger on messages does it in the sender's own transaction, and ingest's
//     sweep applies the few whose write crossed the status's. It is never dropped before
//     ingest.pending_status_ttl.
//   - phone_number_quality_update with THROUGHPUT_UPGRADE raises the number's
//     throughput_mps to Meta's 1,000, which the accounts trigger announces to every sender.
//   - An item of a number no account has, an item that cannot be read, and a body that
//     does not parse go to wa.webhooks.dlq with the reason; the rest of the body and the
//     partition go on. Other fields (account_update, template status, …) are counted and
//     left alone.
//
// # Published once: an outbox
//
// Every stored change writes its wa.events record to event_outbox in the same
// transaction (a duplicate stores nothing, so it writes no record); internal/events' Relay
// publishes the outbox and deletes what the broker acknowledged. A crash between the
// commit and the publish loses nothing (the row waits in the outbox); a crash after the
// acknowledgement and before the delete publishes that record again with the same id.
// The statuses the messages trigger applies write their records the same way.
//
// # Offsets
//
// A partition's bodies are stored in batches of up to ingest.batch_max bodies, one
// transaction each, and settled with queue.Partition.Done only after the transaction
// committed and their dead letters were acknowledged; the shared consumer commits an
// offset only once everything before it is done. A batch Postgres refuses for its values
// is stored item by item, and only the refused items are dead-lettered.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/events"
	"github.com/aerostic/aerogate/internal/queue"
)

// Options configure an Ingester. Kafka, Pool and Accounts are required.
type Options struct {
	Kafka    queue.Cluster
	Config   config.Ingest // zero fields take config.Default's
	Pool     *pgxpool.Pool
	Accounts *account.Resolver
	Logger   *slog.Logger

	// Consumer-group timing (see queue.ConsumerConfig); zero takes its defaults.
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	CommitInterval    time.Duration
	FetchMaxWait      time.Duration
	// ProduceTimeout bounds one write to wa.webhooks.dlq or wa.events (default
	// queue.DefaultWriteTimeout).
	ProduceTimeout time.Duration
	// SweepInterval is how often pending statuses whose wamid became known are applied
	// and expired ones dropped (default 1s).
	SweepInterval time.Duration
	// OutboxPoll is how often the relay reads the outbox unprompted (default 500ms).
	OutboxPoll time.Duration
}

// Stats are counters since New.
type Stats struct {
	Bodies       int64 // wa.webhooks records settled as done
	Stored       int64 // items stored for the first time
	Duplicates   int64 // items stored before
	Pending      int64 // statuses kept until their wamid is known
	Ignored      int64 // items of kinds ingest does not store
	DeadLettered int64 // items and bodies written to wa.webhooks.dlq
	Published    int64 // wa.events records published
}

type counters struct {
	bodies, stored, duplicates, pending, ignored, deadLettered atomic.Int64
}

// Ingester is the ingest pipeline. Build it with New and run it once with Run.
type Ingester struct {
	opts     Options
	cfg      config.Ingest
	log      *slog.Logger
	consumer *queue.Consumer
	dlq      *queue.Producer
	events   *queue.Producer
	relay    *events.Relay
	relayP   atomic.Pointer[events.Relay] // for Stats, which may run before Run built it
	stats    counters
	started  atomic.Bool
}

// New checks opts; it connects to nothing yet.
func New(opts Options) (*Ingester, error) {
	switch {
	case len(opts.Kafka.Brokers) == 0:
		return nil, errors.New("ingest: no kafka brokers")
	case opts.Pool == nil:
		return nil, errors.New("ingest: postgres pool is required")
	case opts.Accounts == nil:
		return nil, errors.New("ingest: account resolver is required")
	}
	d := config.Default().Ingest
	cfg := opts.Config
	if cfg.GroupID == "" {
		cfg.GroupID = d.GroupID
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = d.MaxInFlight
	}
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = d.BatchMax
	}
	if cfg.PendingStatusTTL <= 0 {
		cfg.PendingStatusTTL = d.PendingStatusTTL
	}
	if opts.Kafka.ClientID == "" {
		opts.Kafka.ClientID = "aerogate-ingest"
	}
	if opts.ProduceTimeout <= 0 {
		opts.ProduceTimeout = queue.DefaultWriteTimeout
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	in := &Ingester{opts: opts, cfg: cfg, log: opts.Logger.With("component", "ingest")}
	var err error
	in.consumer, err = queue.NewConsumer(queue.ConsumerConfig{
		Cluster:           opts.Kafka,
		GroupID:           cfg.GroupID,
		Topics:            []string{queue.TopicWebhooks},
		Handler:           in.openPartition,
		MaxInFlight:       cfg.MaxInFlight,
		SessionTimeout:    opts.SessionTimeout,
		RebalanceTimeout:  opts.RebalanceTimeout,
		HeartbeatInterval: opts.HeartbeatInterval,
		CommitInterval:    opts.CommitInterval,
		FetchMaxWait:      opts.FetchMaxWait,
		Logger:            in.log,
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	return in, nil
}

// Stats returns the counters.
func (in *Ingester) Stats() Stats {
	s := Stats{
		Bodies: in.stats.bodies.Load(), Stored: in.stats.stored.Load(), Duplicates: in.stats.duplicates.Load(),
		Pending: in.stats.pending.Load(), Ignored: in.stats.ignored.Load(), DeadLettered: in.stats.deadLettered.Load(),
	}
	if r := in.relayP.Load(); r != nil {
		s.Published = r.Published()
	}
	return s
}

// Run consumes until ctx is cancelled, then finishes the batches being stored, abandons
// the rest (redelivered, never committed past), publishes what the outbox holds, and
// returns nil. It may be called once.
func (in *Ingester) Run(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return errors.New("ingest: Run called twice")
	}
	o := in.opts
	var err error
	if in.dlq, err = queue.NewProducer(queue.ProducerConfig{Cluster: o.Kafka, Topic: queue.TopicWebhooksDLQ,
		Timeout: o.ProduceTimeout, MaxBytes: queue.WebhookMaxMessageBytes}); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	defer in.dlq.Close()
	if in.events, err = queue.NewProducer(queue.ProducerConfig{Cluster: o.Kafka, Topic: queue.TopicEvents,
		Timeout: o.ProduceTimeout, MaxBytes: queue.WebhookMaxMessageBytes}); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	defer in.events.Close()
	if in.relay, err = events.NewRelay(events.RelayOptions{Pool: o.Pool, Publisher: in.events,
		Poll: o.OutboxPoll, Logger: in.log}); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	in.relayP.Store(in.relay)

	in.log.Info("ingest started", "group", in.cfg.GroupID, "batch_max", in.cfg.BatchMax)
	// The relay and the sweep outlive the consumer: what its last batches stored is
	// published before Run returns.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var g errgroup.Group
	g.Go(func() error { in.relay.Run(bgCtx); return nil })
	g.Go(func() error { in.sweepLoop(bgCtx); return nil })
	err = in.consumer.Run(ctx)
	stopBackground()
	_ = g.Wait()
	in.log.Info("ingest stopped", "stats", in.Stats())
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	return nil
}
