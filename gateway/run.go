package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/inbound"
	"github.com/aerostic/aerogate/internal/media"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/onboarding"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/ratelimit"
	"github.com/aerostic/aerogate/internal/role"
	"github.com/aerostic/aerogate/internal/webhook"
)

// Run serves the gateway on cfg.HTTP.Addr and returns after a graceful shutdown once ctx
// is cancelled (or with the error that stopped it). role.Open checks the keys the gateway
// reads (the graph and meta settings too, for Embedded Signup) and builds what every role shares: the Postgres pool, the
// token key ring, the account resolver kept fresh by LISTEN/NOTIFY, the readiness checks
// and, when admin.addr is set, the admin listener; /metrics, /healthz and /readyz are
// also answered on the main port. It is how `aerogate gateway` and `aerogate dev` start
// the gateway; dev sets cfg.Kafka.Brokers to its embedded broker first. It logs through
// slog.Default().
func Run(ctx context.Context, cfg config.Config) error {
	deps, err := role.Open(ctx, cfg, config.RoleGateway)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer deps.Close()
	// Serve until the drain that follows a signal: readiness is false by then.
	ctx = deps.Context()
	log := deps.Log

	claimHeaders, err := ProxyClaimHeaders(cfg.Proxy.ClaimHeaders)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	limits, err := NewLimiter(cfg.RateLimit, log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer limits.Close()

	verifier, err := auth.NewVerifier(auth.Config{
		Algorithms:     cfg.JWT.Algorithms,
		HMACSecret:     []byte(cfg.JWT.Secret),
		PublicKeyFiles: cfg.JWT.PublicKeyFiles,
		JWKSFile:       cfg.JWT.JWKSFile,
		Issuer:         cfg.JWT.Issuer,
		Audience:       cfg.JWT.Audience,
		TenantClaim:    cfg.JWT.TenantClaim,
		Leeway:         cfg.JWT.Leeway,
		CacheSize:      cfg.JWT.CacheSize,
		HeaderClaims:   claimNames(claimHeaders),
		// A token can be no larger than the headers that carry it.
		MaxTokenBytes: cfg.HTTP.MaxHeaderBytes,
	})
	if err != nil {
		return fmt.Errorf("gateway: building jwt verifier: %w", err)
	}

	kafka := deps.Kafka
	// Topics are created by dev and by operators; creating a missing one here is a
	// convenience, and a broker that is down at start shows on /readyz instead.
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := kafka.EnsureTopics(tctx, []string{queue.TopicSends, queue.TopicWebhooks},
		cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor); err != nil {
		log.Warn("could not ensure the sends topic exists", "topic", queue.TopicSends, "error", err.Error())
	}
	cancel()

	// Concurrent requests share produce requests (one per partition leader, murmur2
	// keys, acks=all) instead of each paying for its own; no batch timer is involved.
	writer, err := queue.NewProducer(queue.ProducerConfig{Cluster: kafka, Topic: queue.TopicSends, Timeout: cfg.Kafka.WriteTimeout})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer func() {
		if err := writer.Close(); err != nil {
			log.Warn("closing kafka writer", "error", err.Error())
		}
	}()

	edge, closeEdge, err := webhook.NewEdgeFromConfig(cfg, kafka, "gateway", log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer closeEdge()

	signup, err := newOnboarding(cfg, deps, log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}

	srv, err := New(Options{
		Onboarding: signup,
		Graph: &Passthrough{
			Client:        deps.Graph,
			WABAs:         deps.Accounts.Repository,
			Media:         media.NewRepository(deps.Pool),
			MaxMediaBytes: cfg.Graph.MaxMediaBytes,
			MediaTimeout:  cfg.Graph.MediaTimeout,
			PublicBaseURL: cfg.PublicBaseURL,
		},
		Verifier:            verifier,
		Resolver:            deps.Accounts.Resolver,
		Messages:            message.NewRepository(deps.Pool),
		Sends:               writer,
		Inbound:             inbound.NewRepository(deps.Pool),
		Webhooks:            edge,
		WebhookMaxBodyBytes: cfg.Webhooks.MaxBodyBytes,
		ReadyChecks:         deps.Health.Checks(),
		MaxSendBodyBytes:    cfg.HTTP.MaxSendBodyBytes,
		MaxBodyBytes:        cfg.HTTP.MaxBodyBytes,
		MaxJSONDepth:        cfg.HTTP.MaxJSONDepth,
		MaxHeaderBytes:      cfg.HTTP.MaxHeaderBytes,
		TenantClaim:         cfg.JWT.TenantClaim,
		TenantParam:         cfg.Proxy.TenantParam,
		Proxy: ProxyOptions{
			Upstreams:            cfg.Proxy.Upstreams,
			Timeout:              cfg.Proxy.Timeout,
			HealthPath:           cfg.Proxy.HealthPath,
			HealthInterval:       cfg.Proxy.HealthInterval,
			MaxConnsPerUpstream:  cfg.Proxy.MaxConnsPerUpstream,
			ClaimHeaders:         claimHeaders,
			ForwardAuthorization: cfg.Proxy.ForwardAuthorization,
		},
		Limits:         limits,
		PublishTimeout: cfg.Kafka.WriteTimeout,
		ReadTimeout:    cfg.HTTP.ReadTimeout,
		WriteTimeout:   cfg.HTTP.WriteTimeout,
		IdleTimeout:    cfg.HTTP.IdleTimeout,
		Concurrency:    cfg.HTTP.Concurrency,
		AccessSample:   accessSample(cfg.Log.AccessSample),
		Logger:         log,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listening on %s: %w", cfg.HTTP.Addr, err)
	}
	log.Info("gateway listening", "addr", ln.Addr().String())

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = err
		if runErr == nil {
			runErr = errors.New("gateway: server stopped unexpectedly")
		}
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Shutdown.Grace)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("gateway shutdown", "error", err.Error())
	}
	log.Info("gateway stopped", "accepted", srv.Metrics().Accepted)
	return runErr
}

// accessSample maps log.access_sample (0: none) to Options.AccessSample (0: every one).
func accessSample(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// ProxyClaimHeaders parses proxy.claim_headers.
func ProxyClaimHeaders(specs []string) ([]ClaimHeader, error) {
	out := make([]ClaimHeader, 0, len(specs))
	for i, spec := range specs {
		claim, header, ok := config.ParseClaimHeader(spec)
		if !ok {
			return nil, fmt.Errorf("proxy.claim_headers[%d]: want claim:Header", i)
		}
		out = append(out, ClaimHeader{Claim: claim, Header: header})
	}
	return out, nil
}

func claimNames(chs []ClaimHeader) []string {
	names := make([]string, 0, len(chs))
	for _, ch := range chs {
		names = append(names, ch.Claim)
	}
	return names
}

// NewLimiter builds the per-tenant rate limiter of the ratelimit.* keys: nil when no
// rate is set anywhere. Close it (nil is fine) when done.
func NewLimiter(c config.RateLimit, log *slog.Logger) (*ratelimit.Limiter, error) {
	limit := func(rps, burst int) ratelimit.Limit {
		if rps > 0 && burst <= 0 {
			burst = rps
		}
		return ratelimit.Limit{RPS: rps, Burst: burst}
	}
	rc := ratelimit.Config{
		Default:  ratelimit.Limits{API: limit(c.APIRPS, c.APIBurst), Send: limit(c.SendRPS, c.SendBurst)},
		RedisURL: c.RedisURL,
		Logger:   log,
	}
	set := c.APIRPS > 0 || c.SendRPS > 0
	for i, spec := range c.TenantOverrides {
		o, err := config.ParseTenantOverride(spec)
		if err != nil {
			return nil, fmt.Errorf("ratelimit.tenant_overrides[%d]: %w", i, err)
		}
		pick := func(v, def int) int {
			if v < 0 {
				return def
			}
			return v
		}
		if rc.Overrides == nil {
			rc.Overrides = map[string]ratelimit.Limits{}
		}
		rc.Overrides[o.Tenant] = ratelimit.Limits{
			API:  limit(pick(o.APIRPS, c.APIRPS), pick(o.APIBurst, c.APIBurst)),
			Send: limit(pick(o.SendRPS, c.SendRPS), pick(o.SendBurst, c.SendBurst)),
		}
		set = set || o.APIRPS > 0 || o.SendRPS > 0
	}
	if !set {
		return nil, nil
	}
	return ratelimit.New(rc)
}

// newOnboarding builds Embedded Signup and the accounts API from cfg, on the role's
// Graph client (its calls carry appsecret_proof when meta.app_secret is set).
func newOnboarding(cfg config.Config, deps *role.Deps, log *slog.Logger) (*onboarding.Service, error) {
	return onboarding.New(onboarding.Config{
		AppID:               cfg.Meta.AppID,
		ConfigID:            cfg.Meta.ConfigID,
		Configured:          cfg.Meta.AppID != "" && cfg.Meta.AppSecret != "" && cfg.Meta.ConfigID != "",
		GraphVersion:        cfg.Graph.Version,
		PublicBaseURL:       cfg.PublicBaseURL,
		DialogBaseURL:       cfg.Meta.DialogBaseURL,
		StateTTL:            cfg.Onboarding.StateTTL,
		FrontendRedirectURL: cfg.Frontend.RedirectURL,
		Logger:              log,
	}, deps.Pool, deps.Accounts.Repository, deps.Graph)
}
