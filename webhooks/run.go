// Package webhooks is the `aerogate webhooks` role: Meta's webhook edge as a process of
// its own, for deployments that keep the public webhook URL apart from the send API. It
// serves GET and POST /webhooks/meta (internal/webhook's Edge: signature check, then an
// acknowledged publish of the raw body to wa.webhooks), /healthz, /readyz and /metrics,
// and nothing else. It needs Kafka only: ingest does the storing.
package webhooks

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/accesslog"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/role"
	"github.com/aerostic/aerogate/internal/webhook"
)

// Run serves the webhook edge on cfg.Webhooks.Addr until ctx is cancelled, then shuts
// down gracefully (requests in flight get their answer).
func Run(ctx context.Context, cfg config.Config) error {
	deps, err := role.Open(ctx, cfg, config.RoleWebhooks)
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	defer deps.Close()
	// Serve until the drain that follows a signal: readiness is false by then.
	ctx = deps.Context()
	log := deps.Log
	kafka := deps.Kafka
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := kafka.EnsureTopics(tctx, []string{queue.TopicWebhooks}, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor); err != nil {
		log.Warn("could not ensure the webhooks topic exists", "topic", queue.TopicWebhooks, "error", err.Error())
	}
	cancel()
	edge, closeEdge, err := webhook.NewEdgeFromConfig(cfg, kafka, "webhooks", log)
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	defer closeEdge()

	r := router.New()
	r.SaveMatchedRoutePath = true // for the access line's route
	r.GET(webhook.Path, edge.Handshake)
	r.POST(webhook.Path, edge.Receive)
	r.GET("/healthz", deps.Health.Healthz)
	r.GET("/readyz", deps.Health.Readyz)
	r.GET("/metrics", metrics.Handler())

	srv := &fasthttp.Server{
		Handler:                      accesslog.New(log, cfg.Log.AccessSample).Handler(r.Handler),
		Name:                         "aerogate",
		ReadTimeout:                  cfg.HTTP.ReadTimeout,
		WriteTimeout:                 cfg.HTTP.WriteTimeout,
		IdleTimeout:                  cfg.HTTP.IdleTimeout,
		Concurrency:                  cfg.HTTP.Concurrency,
		MaxRequestBodySize:           cfg.Webhooks.MaxBodyBytes,
		ReadBufferSize:               cfg.HTTP.MaxHeaderBytes,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
	}
	ln, err := net.Listen("tcp", cfg.Webhooks.Addr)
	if err != nil {
		return fmt.Errorf("webhooks: listening on %s: %w", cfg.Webhooks.Addr, err)
	}
	log.Info("webhook edge listening", "addr", ln.Addr().String(), "path", webhook.Path)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("webhooks: serving: %w", err)
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Shutdown.Grace)
	defer scancel()
	if err := srv.ShutdownWithContext(sctx); err != nil {
		log.Warn("webhooks shutdown", "error", err.Error())
	}
	log.Info("webhook edge stopped", "accepted", edge.Accepted())
	return runErr
}
