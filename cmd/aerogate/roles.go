package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/devenv"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/retry"
	"github.com/aerostic/aerogate/internal/role"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/refresher"
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

func refresherFlags(fs *pflag.FlagSet) {
	fs.Bool("once", false, "make one pass, print a line per account and a summary, and exit (1 when an account failed)")
	fs.Bool("dry-run", false, "list what a pass would renew or check, changing nothing")
}

// runRefresher runs the refresher role, or one pass with --once, or a listing with
// --dry-run. Beside `aerogate dev` with no Graph API or Meta app configured, it uses dev's
// fake Graph API and Meta app, and dev's token keys.
func runRefresher(ctx context.Context, cfg config.Config, fs *pflag.FlagSet, stdout io.Writer) error {
	once, _ := fs.GetBool("once")
	dryRun, _ := fs.GetBool("dry-run")
	if err := applyDevKeys(&cfg); err != nil {
		return err
	}
	if ok, err := devenv.ApplyFakeGraph(&cfg); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return err
	} else if ok {
		slog.Info("using the fake Graph API and Meta app of aerogate dev", "graph", cfg.Graph.BaseURL, "data_dir", cfg.Dev.DataDir)
	}
	if err := cfg.ValidateFor(config.RoleRefresher); err != nil {
		return err
	}
	if once || dryRun {
		return refresher.Once(ctx, cfg, stdout, dryRun)
	}
	return refresher.Run(ctx, cfg)
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

func migrateFlags(fs *pflag.FlagSet) {
	fs.Duration("wait", time.Minute, "how long to keep trying while Postgres or Kafka is not reachable yet (0: try once)")
}

// runMigrate prepares the infrastructure every other process expects: the database
// schema and, when kafka.brokers names a cluster, aerogate's topics. Each step is tried
// again, with backoff, while it fails for up to --wait (Postgres and Kafka starting next
// to it), so a one-shot job needs no shell loop around it.
func runMigrate(ctx context.Context, cfg config.Config, fs *pflag.FlagSet, _ io.Writer) error {
	wait, _ := fs.GetDuration("wait")
	if wait < 0 {
		return errors.New("--wait must not be negative")
	}
	deadline := time.Now().Add(wait)
	if err := untilDeadline(ctx, deadline, "postgres", func(ctx context.Context) error {
		return store.Migrate(ctx, cfg.Database.URL)
	}); err != nil {
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
	if err := untilDeadline(ctx, deadline, "kafka", func(ctx context.Context) error {
		if err := kafka.EnsureTopics(ctx, queue.AllTopics, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor); err != nil {
			return fmt.Errorf("creating topics: %w", err)
		}
		return nil
	}); err != nil {
		return err
	}
	slog.Info("kafka topics ready", "topics", queue.AllTopics, "partitions", cfg.Kafka.Partitions,
		"replication_factor", cfg.Kafka.ReplicationFactor)
	return nil
}

// migrateAttemptTimeout bounds one try of a migrate step.
const migrateAttemptTimeout = 30 * time.Second

// untilDeadline runs step until it succeeds, backing off between tries (250ms up to
// 5s); the last error is returned once the next try would start after deadline.
func untilDeadline(ctx context.Context, deadline time.Time, what string, step func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, migrateAttemptTimeout)
		err := step(sctx)
		cancel()
		if err == nil {
			return nil
		}
		d := retry.Backoff(attempt, 250*time.Millisecond, 5*time.Second, nil)
		if ctx.Err() != nil || time.Now().Add(d).After(deadline) {
			return err
		}
		slog.Warn("not ready yet; trying again", "step", what, "attempt", attempt, "in", d, "error", err.Error())
		if !retry.Sleep(ctx, d) {
			return err
		}
	}
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
	slog.Info("aerogate dev", "http", cfg.HTTP.Addr, "admin", cfg.Admin.Addr, "kafka", cfg.Kafka.Brokers,
		"graph", cfg.Graph.BaseURL, "database", role.DatabaseName(cfg.Database.URL), "data_dir", cfg.Dev.DataDir)

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
	refresherCfg := gatewayCfg
	g.Go(func() error { return roleErr("refresher", refresher.Run(gctx, refresherCfg)) })
	return g.Wait()
}

func roleErr(role string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", role, err)
	}
	return nil
}
