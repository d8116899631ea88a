package sender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/store"
)

// Run is the sender role of `aerogate sender` and `aerogate dev`: it builds every
// dependency from cfg (Postgres pool, token key ring, account repository and resolver
// kept fresh by LISTEN/NOTIFY, Graph client, Kafka producers and consumer group) and
// sends until ctx is cancelled; then it finishes or abandons in-flight work (abandoned
// work is redelivered, never committed past) and returns nil. tune, if any, adjusts the
// Options before the sender is built (tests shorten the group timeouts with it).
func Run(ctx context.Context, cfg config.Config, tune ...func(*Options)) error {
	log := slog.Default()
	if len(cfg.Kafka.Brokers) == 0 {
		return errors.New("sender: kafka.brokers is empty")
	}
	pool, err := store.Open(ctx, cfg.Database.URL, cfg.Database.MaxConns)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	defer pool.Close()
	accounts, err := account.OpenLiveFromConfig(pool, cfg, log)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	defer accounts.Close()

	kafka, err := queue.NewCluster(cfg.Kafka)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	kafka.ClientID = clientID(cfg.Kafka.ClientID)
	topics := []string{queue.TopicSends, queue.TopicSendsRetry, queue.TopicSendsDLQ}
	if err := kafka.EnsureTopics(ctx, topics, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("sender: %w", err)
	}

	opts := Options{
		Kafka:       kafka,
		Config:      cfg.Sender,
		Accounts:    accounts.Resolver,
		AccountRepo: accounts.Repository,
		Messages:    message.NewRepository(pool),
		Graph: graph.NewClient(graph.Config{
			BaseURL:         cfg.Graph.BaseURL,
			Version:         cfg.Graph.Version,
			Timeout:         cfg.Graph.Timeout,
			MaxConnsPerHost: cfg.Graph.MaxConnsPerHost,
			AppSecret:       cfg.Meta.AppSecret,
		}),
		Logger:         log,
		ProduceTimeout: cfg.Kafka.WriteTimeout,
		// A revoked partition lets its Graph calls finish before it moves; the group
		// must wait that long, or the next owner could send them again.
		RebalanceTimeout: max(queue.DefaultRebalance, cfg.Graph.Timeout+5*time.Second),
		// A claim outlasts a Graph call at its timeout and the recording of its outcome.
		ClaimLease: cfg.Graph.Timeout + 15*time.Second,
	}
	for _, f := range tune {
		f(&opts)
	}
	s, err := New(opts)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

func clientID(base string) string {
	if base == "" {
		base = "aerogate"
	}
	return base + "-sender"
}
