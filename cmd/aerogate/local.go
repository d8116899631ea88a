package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/devenv"
	"github.com/aerostic/aerogate/internal/role"
)

// runBroker runs dev's embedded Kafka-protocol broker alone, for running the roles as
// separate processes on one machine: on dev.kafka_addr, its log under dev.data_dir,
// every topic created with kafka.partitions partitions.
func runBroker(ctx context.Context, cfg config.Config, _ *pflag.FlagSet, _ io.Writer) error {
	if cfg.Dev.DataDir == "" {
		return &config.KeyError{Key: "dev.data_dir", Err: errors.New("required")}
	}
	b, err := devenv.StartBroker(cfg, slog.Default())
	if err != nil {
		return err
	}
	<-ctx.Done()
	b.Close()
	slog.Info("embedded kafka broker stopped")
	return nil
}

func fakeGraphFlags(fs *pflag.FlagSet) {
	fs.String("status-webhooks-url", "", "post sent, delivered and read of every send here, signed with meta.app_secret, like Meta (e.g. http://127.0.0.1:8082/webhooks/meta)")
}

// runFakeGraph runs dev's fake Graph API alone on dev.fake_graph_addr: it plays the Meta
// app of meta.app_id and meta.app_secret and accepts any non-empty token for a number it
// was not told about. Point graph.base_url and meta.dialog_base_url at it.
func runFakeGraph(ctx context.Context, cfg config.Config, fs *pflag.FlagSet, _ io.Writer) error {
	statusURL, _ := fs.GetString("status-webhooks-url")
	g, err := devenv.StartFakeGraph(cfg, statusURL, slog.Default())
	if err != nil {
		return err
	}
	<-ctx.Done()
	if err := g.Close(); err != nil {
		return err
	}
	slog.Info("fake graph api stopped")
	return nil
}

// runVersion prints the module version and the VCS revision the binary was built from.
func runVersion(_ context.Context, _ config.Config, _ *pflag.FlagSet, stdout io.Writer) error {
	_, err := fmt.Fprintln(stdout, role.Build().String())
	return err
}

func healthcheckFlags(fs *pflag.FlagSet) {
	fs.String("url", "", "URL to check (default: /readyz on admin.addr)")
	fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
}

// runHealthcheck GETs a readiness URL and fails unless it answers 200: the health check
// of a container whose image has no shell or curl (the aerogate image has neither).
func runHealthcheck(ctx context.Context, cfg config.Config, fs *pflag.FlagSet, _ io.Writer) error {
	u, _ := fs.GetString("url")
	timeout, _ := fs.GetDuration("timeout")
	if u == "" {
		if cfg.Admin.Addr == "" {
			return &config.KeyError{Key: "admin.addr", Err: errors.New("not set: give --url or admin.addr")}
		}
		u = "http://" + devenv.LocalAddr(cfg.Admin.Addr) + "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("checking %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("%s answered %d: %s", u, resp.StatusCode, body)
	}
	return nil
}
