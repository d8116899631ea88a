package ingest

import (
	"context"
	"fmt"
	"sync"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/retention"
	"github.com/aerostic/aerogate/internal/role"
)

// Run is the ingest role of `aerogate ingest` and `aerogate dev`: role.Open checks the
// keys ingest reads and builds what every role shares (Postgres pool, account resolver
// kept fresh by LISTEN/NOTIFY, the admin listener on admin.addr with /metrics, /healthz
// and /readyz); Run adds the Kafka producers and the consumer group and stores webhooks
// until ctx is cancelled, and removes rows past their retention (internal/retention).
// tune, if any, adjusts the Options before the ingester is built (tests shorten the
// group timeouts with it).
func Run(ctx context.Context, cfg config.Config, tune ...func(*Options)) error {
	deps, err := role.Open(ctx, cfg, config.RoleIngest)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	defer deps.Close()
	// Serve until the drain that follows a signal: readiness is false by then.
	ctx = deps.Context()

	kafka := deps.Kafka
	kafka.ClientID = cfg.Kafka.ClientID + "-ingest"
	topics := []string{queue.TopicWebhooks, queue.TopicWebhooksDLQ, queue.TopicEvents}
	if err := kafka.EnsureTopics(ctx, topics, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("ingest: %w", err)
	}
	opts := Options{
		Kafka:          kafka,
		Config:         cfg.Ingest,
		Pool:           deps.Pool,
		Accounts:       deps.Accounts.Resolver,
		Logger:         deps.Log,
		ProduceTimeout: cfg.Kafka.WriteTimeout,
	}
	for _, f := range tune {
		f(&opts)
	}
	in, err := New(opts)
	if err != nil {
		return err
	}
	// Ingest also keeps Postgres from growing for ever: one replica at a time removes
	// rows past their retention.
	sweeper, err := retention.New(deps.Pool, cfg.Retention, deps.Log)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { sweeper.Run(ctx) })
	defer wg.Wait()
	return in.Run(ctx)
}
