package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/store"
)

// Run is the ingest role of `aerogate ingest` and `aerogate dev`: it builds its
// dependencies from cfg (Postgres pool, account resolver kept fresh by LISTEN/NOTIFY,
// Kafka producers and consumer group) and stores webhooks until ctx is cancelled. tune,
// if any, adjusts the Options before the ingester is built (tests shorten the group
// timeouts with it).
func Run(ctx context.Context, cfg config.Config, tune ...func(*Options)) error {
	log := slog.Default().With("role", "ingest")
	if len(cfg.Kafka.Brokers) == 0 {
		return errors.New("ingest: kafka.brokers is empty")
	}
	pool, err := store.Open(ctx, cfg.Database.URL, cfg.Database.MaxConns)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	defer pool.Close()
	accounts, err := account.OpenLiveFromConfig(pool, cfg, log)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	defer accounts.Close()

	kafka, err := queue.NewCluster(cfg.Kafka)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if kafka.ClientID == "" || kafka.ClientID == config.Default().Kafka.ClientID {
		kafka.ClientID = "aerogate-ingest"
	} else {
		kafka.ClientID += "-ingest"
	}
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
		Pool:           pool,
		Accounts:       accounts.Resolver,
		Logger:         log,
		ProduceTimeout: cfg.Kafka.WriteTimeout,
	}
	for _, f := range tune {
		f(&opts)
	}
	in, err := New(opts)
	if err != nil {
		return err
	}
	return in.Run(ctx)
}
