package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/devenv"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/sender"
	"github.com/aerostic/aerogate/webhooks"
)

func runGateway(ctx context.Context, cfg config.Config, _ *pflag.FlagSet, _ io.Writer) error {
	if err := cfg.ValidateFor(config.RoleGateway); err != nil {
		return err
	}
	return gateway.Run(ctx, cfg)
}

func runSender(ctx context.Context, cfg config.Config, _ *pflag.FlagSet, _ io.Writer) error {
	if err := cfg.ValidateFor(config.RoleSender); err != nil {
		return err
	}
	return sender.Run(ctx, cfg)
}

func runWebhooks(ctx context.Context, cfg config.Config, _ *pflag.FlagSet, _ io.Writer) error {
	if err := cfg.ValidateFor(config.RoleWebhooks); err != nil {
		return err
	}
	return webhooks.Run(ctx, cfg)
}

func runIngest(ctx context.Context, cfg config.Config, _ *pflag.FlagSet, _ io.Writer) error {
	if err := cfg.ValidateFor(config.RoleIngest); err != nil {
		return err
	}
	return ingest.Run(ctx, cfg)
}

// runMigrate prepares the infrastructure every other process expects: the database
// schema and, when kafka.brokers names a cluster, aerogate's topics.
func runMigrate(ctx context.Context, cfg config.Config, _ *pflag.FlagSet, _ io.Writer) error {
	if err := store.Migrate(ctx, cfg.Database.URL); err != nil {
		return err
	}
	slog.Info("migrations applied")
	if len(cfg.Kafka.Brokers) == 0 {
		return nil
	}
	kafka, err := queue.NewCluster(cfg.Kafka)
	if err != nil {
		return err
	}
	if err := kafka.EnsureTopics(ctx, queue.AllTopics, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor); err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	slog.Info("kafka topics ready", "topics", queue.AllTopics)
	return nil
}

// runDev runs every role in this process against the embedded broker and the fake Graph
// API. A role that fails stops the others.
func runDev(ctx context.Context, cfg config.Config, _ *pflag.FlagSet, _ io.Writer) error {
	env, err := devenv.Start(ctx, &cfg, slog.Default())
	if err != nil {
		return err
	}
	defer env.Close()
	if err := cfg.Validate(); err != nil {
		return err
	}
	slog.Info("aerogate dev ready", "http", cfg.HTTP.Addr, "admin", cfg.Admin.Addr, "kafka", cfg.Kafka.Brokers, "graph", cfg.Graph.BaseURL, "config", cfg)

	// One process, one registry: the gateway answers /metrics, /healthz and /readyz on
	// http.addr, and the sender on admin.addr (127.0.0.1:8081 unless set); ingest's
	// readiness is the same process's.
	gatewayCfg := cfg
	gatewayCfg.Admin.Addr = ""
	ingestCfg := gatewayCfg
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return roleErr("gateway", gateway.Run(gctx, gatewayCfg)) })
	g.Go(func() error { return roleErr("sender", sender.Run(gctx, cfg)) })
	g.Go(func() error { return roleErr("ingest", ingest.Run(gctx, ingestCfg)) })
	return g.Wait()
}

func roleErr(role string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", role, err)
	}
	return nil
}
