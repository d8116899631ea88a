// Package gateway is aerogate's fasthttp edge: tenant JWT authentication, the send API
// (POST /v1/messages and the Cloud-API-compatible POST /{version}/{phone_number_id}/messages),
// message status (GET /v1/messages/{id}), health and readiness, and the /api/* reverse
// proxy to the backend API (tenant and user from the token, per-tenant rate limits). A send is answered 202
// only after Kafka acknowledged it; otherwise 503 when it provably was not written, and
// 504 with its id when it may have been. Postgres is waited on only for a send with an
// Idempotency-Key (the key is bound to its request before anything is published).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/accesslog"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/inbound"
	"github.com/aerostic/aerogate/internal/jsonguard"
	"github.com/aerostic/aerogate/internal/media"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/onboarding"
	"github.com/aerostic/aerogate/internal/ratelimit"
	"github.com/aerostic/aerogate/internal/role"
	"github.com/aerostic/aerogate/internal/tenantfield"
	"github.com/aerostic/aerogate/internal/webhook"
)

// Publisher writes messages to wa.sends and returns once they are acknowledged;
// *queue.Producer (acks=all) satisfies it. Its errors are read with
// queue.ClassifyWriteError: only one wrapping queue.ErrNotWritten is answered 503, any
// other 504. The writer may keep the messages' bytes after a failed or cancelled call, so
// the gateway never reuses them then.
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// AccountResolver finds the tenant's account; *account.Resolver satisfies it.
type AccountResolver interface {
	Resolve(ctx context.Context, tenantID, phoneNumberID string) (*account.Account, error)
}

// ReadyCheck is one dependency /readyz checks.
type ReadyCheck = role.Check

// Options configures a Server. Verifier, Resolver and Sends are required.
type Options struct {
	Verifier *auth.Verifier
	Resolver AccountResolver
	// Messages records accepted sends, binds Idempotency-Keys to their first request,
	// and answers GET /v1/messages/{id}. Nil disables all three (GET answers 503; a key
	// then only derives the message id).
	Messages *message.Repository
	Sends    Publisher
	// Webhooks serves GET and POST /webhooks/meta (Meta's webhooks); nil leaves the route
	// out (404).
	Webhooks *webhook.Edge
	// WebhookMaxBodyBytes is the largest body the webhook route takes (default 3 MiB).
	WebhookMaxBodyBytes int
	// Inbound answers GET /v1/inbound; nil answers 503.
	Inbound *inbound.Repository
	// Onboarding serves Embedded Signup, the test message and the accounts API; nil
	// answers them 503 onboarding_not_configured.
	Onboarding *onboarding.Service
	// Graph serves the Graph API passthrough (media, templates, business profile, the
	// number's fields); nil answers it 503 passthrough_not_configured.
	Graph *Passthrough

	// ReadyChecks are what /readyz checks (role.Open's Health.Checks() in Run).
	ReadyChecks []ReadyCheck

	// Zero limits, timeouts and TenantClaim take config.Default()'s values.
	MaxSendBodyBytes int // 413 above
	MaxBodyBytes     int // every other route
	// MaxJSONDepth bounds the nesting of arrays and objects in a JSON body (400
	// json_too_deep above), at most jsonguard.MaxDepthLimit.
	MaxJSONDepth int
	// MaxHeaderBytes is the server's read buffer, which holds the request line and
	// headers: a request whose headers do not fit gets 431. The verifier's token
	// limit (auth.Config.MaxTokenBytes) should be the same.
	MaxHeaderBytes int
	// TenantClaim is the JWT claim holding the tenant; a query parameter or body field of
	// that name (or "tenantId", or TenantParam) must equal the token's tenant.
	TenantClaim string
	// TenantParam is one more name for that parameter (proxy.tenant_param).
	TenantParam string

	// Proxy, when it has upstreams, serves /api/* (every method) from the backends.
	Proxy ProxyOptions
	// Limits, when set, holds each tenant to its request rates: sends in the Send
	// class, every other authenticated request in the API class (429 past them).
	Limits *ratelimit.Limiter
	// PublishTimeout bounds the wait for Kafka's acknowledgement; past it, 504
	// queue_timeout (the send may be queued) or, when the write provably did not reach
	// a broker, 503 queue_unavailable. Default 5s.
	PublishTimeout time.Duration

	// RecordBuffer is how many accepted messages may wait to be recorded in Postgres
	// (default 65,536); past it a record is dropped and counted: the sender creates the
	// row anyway. RecordBatch caps one INSERT (default 1,000).
	RecordBuffer int
	RecordBatch  int

	ReadTimeout  time.Duration // default 10s
	WriteTimeout time.Duration // default 10s
	IdleTimeout  time.Duration // default 60s
	Concurrency  int           // fasthttp's connection limit; default 256 Ki

	// AccessSample logs one in this many requests answered below 400 at info (0: the
	// default, every one; negative: none). 4xx answers are always logged at info, 5xx
	// at error (internal/accesslog).
	AccessSample int

	Logger *slog.Logger
	Now    func() time.Time
}

// Passthrough is what the Graph API passthrough needs.
type Passthrough struct {
	Client *graph.Client
	// WABAs finds the tenant's phone number on a WABA (*account.Repository).
	WABAs interface {
		WABANumber(ctx context.Context, tenantID, wabaID string) (string, error)
	}
	// Media records and finds the tenant's media ids (*media.Repository).
	Media interface {
		Record(ctx context.Context, tenantID, mediaID, phoneNumberID string, src media.Source) error
		Owner(ctx context.Context, tenantID, mediaID string) (string, error)
		Forget(ctx context.Context, tenantID, mediaID string) error
	}
	// MaxMediaBytes bounds a media upload or download (graph.max_media_bytes);
	// MediaTimeout one media transfer (graph.media_timeout).
	MaxMediaBytes int
	MediaTimeout  time.Duration
	// PublicBaseURL is where backends reach the gateway: Meta's paging links and media
	// URLs are rewritten onto it.
	PublicBaseURL string
}

// MinHeaderBytes is the smallest header buffer New accepts.
const MinHeaderBytes = 1 << 10

// Metrics are counters since start.
type Metrics struct {
	Accepted        uint64 // sends answered 202/200
	PublishErrors   uint64 // sends answered 503 or 504 because Kafka did not acknowledge
	PublishUnknown  uint64 // of PublishErrors: answered 504, the send may be queued
	RecordDropped   uint64 // accepted records dropped because the buffer was full
	RecordErrors    uint64 // accepted records lost to a failed INSERT
	Recorded        uint64 // accepted records written
	PanicsRecovered uint64
}

// Server is the gateway's HTTP server.
type Server struct {
	opts        Options
	log         *slog.Logger
	now         func() time.Time
	realClock   bool // Options.Now was nil: time.Now serves both clocks
	deadline    *sharedDeadline
	tenantField []string
	tenantNames tenantfield.Names // tenantField and TenantParam, as the query and proxy check them
	proxy       *proxy
	handler     fasthttp.RequestHandler
	health      *role.Health
	access      *accesslog.Logger
	unmatched   *routeMetrics // requests no route matched

	// The passthrough's routes (matched after the router's, in graphRoute).
	passthroughObject *routeMetrics
	passthroughEdge   *routeMetrics
	srv               *fasthttp.Server
	rec               *recorder
	ridPrefix         [9]byte
	ridCounter        atomic.Uint64

	accepted       atomic.Uint64
	publishErrors  atomic.Uint64
	publishUnknown atomic.Uint64
	publishErrLog  everySecond
	panics         atomic.Uint64

	closeOnce sync.Once
}

// New validates opts and builds the server; it starts the accepted-message recorder.
func New(opts Options) (*Server, error) {
	if opts.Verifier == nil {
		return nil, errors.New("gateway: Verifier is required")
	}
	if opts.Resolver == nil {
		return nil, errors.New("gateway: Resolver is required")
	}
	if opts.Sends == nil {
		return nil, errors.New("gateway: Sends is required")
	}
	if opts.MaxSendBodyBytes < 0 || opts.MaxBodyBytes < 0 {
		return nil, errors.New("gateway: body limits must not be negative")
	}
	// Zero options take the configuration's defaults: config.Default is the one place
	// they live.
	d := config.Default()
	if opts.MaxSendBodyBytes == 0 {
		opts.MaxSendBodyBytes = d.HTTP.MaxSendBodyBytes
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = d.HTTP.MaxBodyBytes
	}
	if opts.WebhookMaxBodyBytes <= 0 {
		opts.WebhookMaxBodyBytes = webhook.DefaultMaxBodyBytes
	}
	if opts.MaxJSONDepth < 0 || opts.MaxJSONDepth > jsonguard.MaxDepthLimit {
		return nil, fmt.Errorf("gateway: JSON depth limit must be 1 to %d, got %d", jsonguard.MaxDepthLimit, opts.MaxJSONDepth)
	}
	if opts.MaxJSONDepth == 0 {
		opts.MaxJSONDepth = d.HTTP.MaxJSONDepth
	}
	if opts.MaxHeaderBytes == 0 {
		opts.MaxHeaderBytes = d.HTTP.MaxHeaderBytes
	}
	if opts.MaxHeaderBytes < MinHeaderBytes {
		return nil, fmt.Errorf("gateway: header buffer must be at least %d bytes, got %d", MinHeaderBytes, opts.MaxHeaderBytes)
	}
	if opts.TenantClaim == "" {
		opts.TenantClaim = d.JWT.TenantClaim
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = d.Kafka.WriteTimeout
	}
	if opts.RecordBuffer <= 0 {
		opts.RecordBuffer = 1 << 16
	}
	if opts.RecordBatch <= 0 {
		opts.RecordBatch = 1000
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = d.HTTP.ReadTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = d.HTTP.WriteTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = d.HTTP.IdleTimeout
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = d.HTTP.Concurrency
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if g := opts.Graph; g != nil {
		if g.Client == nil || g.WABAs == nil || g.Media == nil {
			return nil, errors.New("gateway: Graph needs Client, WABAs and Media")
		}
		if g.MaxMediaBytes <= 0 {
			g.MaxMediaBytes = d.Graph.MaxMediaBytes
		}
		if g.MediaTimeout <= 0 {
			g.MediaTimeout = d.Graph.MediaTimeout
		}
		g.PublicBaseURL = strings.TrimRight(g.PublicBaseURL, "/")
	}
	realClock := opts.Now == nil
	if realClock {
		opts.Now = time.Now
	}
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		realClock: realClock,
		deadline:  newSharedDeadline(opts.PublishTimeout),
	}
	s.tenantField = []string{"tenantId"}
	if opts.TenantClaim != "tenantId" {
		s.tenantField = append(s.tenantField, opts.TenantClaim)
	}
	s.tenantNames = tenantfield.NewNames(append(append([]string(nil), s.tenantField...), opts.TenantParam)...)
	if len(opts.Proxy.Upstreams) > 0 {
		p, err := newProxy(opts.Proxy, s.tenantNames, opts.MaxBodyBytes, opts.MaxJSONDepth, s.log)
		if err != nil {
			return nil, err
		}
		s.proxy = p
	}
	copy(s.ridPrefix[:8], randomID().String()[:8])
	s.ridPrefix[8] = '-'

	if opts.Messages != nil {
		s.rec = newRecorder(opts.Messages, opts.RecordBuffer, opts.RecordBatch, s.log)
	}

	s.health = role.NewHealth(s.log, opts.ReadyChecks...)
	sample := opts.AccessSample
	if sample == 0 {
		sample = 1
	}
	s.access = accesslog.New(s.log, sample)
	s.unmatched = newRouteMetrics("unmatched")
	s.passthroughObject = newRouteMetrics("/{version}/{object_id}")
	s.passthroughEdge = newRouteMetrics("/{version}/{object_id}/{edge}")

	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	// The Graph passthrough's paths, /{version}/{object_id}[/{edge}], are matched when no
	// route is: as routes they would shadow the router's 404 and 405 answers of every
	// two- and three-segment path.
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		if !s.graphRoute(ctx) {
			writeError(ctx, errNotFound)
		}
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		if !s.graphRoute(ctx) {
			writeError(ctx, errMethodNotAllowed)
		}
	}
	// Each route is registered through handle, which labels its requests with the
	// route's pattern (never the raw path) for aerogate_http_requests_total.
	handle(r, fasthttp.MethodGet, "/healthz", s.health.Healthz)
	handle(r, fasthttp.MethodHead, "/healthz", s.health.Healthz)
	handle(r, fasthttp.MethodGet, "/readyz", s.health.Readyz)
	handle(r, fasthttp.MethodGet, "/metrics", metrics.Handler())
	handle(r, fasthttp.MethodPost, "/v1/messages", s.authed(s.limited(ratelimit.Send, s.sendV1)))
	handle(r, fasthttp.MethodGet, "/v1/messages/{id}", s.authed(s.limited(ratelimit.API, s.getMessage)))
	handle(r, fasthttp.MethodPost, "/{version}/{phone_number_id}/messages", s.authed(s.limited(ratelimit.Send, s.sendGraph)))
	handle(r, fasthttp.MethodGet, "/v1/inbound", s.authed(s.limited(ratelimit.API, s.listInbound)))
	if s.proxy != nil {
		api := s.authed(s.limited(ratelimit.API, s.proxy.serve))
		for _, m := range []string{fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodPost, fasthttp.MethodPut,
			fasthttp.MethodPatch, fasthttp.MethodDelete} {
			handle(r, m, proxyRoute, api)
		}
		handle(r, fasthttp.MethodOptions, proxyRoute, func(ctx *fasthttp.RequestCtx) {
			if isPreflight(ctx) {
				s.proxy.preflight(ctx)
				return
			}
			api(ctx)
		})
	}
	if opts.Webhooks != nil {
		// Meta's webhooks carry no JWT: the signature over the body is their proof.
		handle(r, fasthttp.MethodGet, webhook.Path, opts.Webhooks.Handshake)
		handle(r, fasthttp.MethodPost, webhook.Path, opts.Webhooks.Receive)
	}
	s.onboardingRoutes(r)
	handle(r, fasthttp.MethodGet, "/v1/media/{media_id}/content", s.authed(s.limited(ratelimit.API, s.mediaContent)))
	s.handler = s.middleware(r.Handler)

	s.srv = &fasthttp.Server{
		Handler:            s.handler,
		ErrorHandler:       s.readError,
		Name:               "aerogate",
		ReadTimeout:        opts.ReadTimeout,
		WriteTimeout:       opts.WriteTimeout,
		IdleTimeout:        opts.IdleTimeout,
		Concurrency:        opts.Concurrency,
		MaxRequestBodySize: max(opts.MaxSendBodyBytes, opts.MaxBodyBytes, webhookLimit(opts)),
		// The read buffer must hold the request line and every header: it is the
		// header limit (431 past it), and so the real bound on a bearer token.
		ReadBufferSize:               opts.MaxHeaderBytes,
		DisablePreParseMultipartForm: true,
		// Bodies stream: the proxy forwards large uploads as they arrive, and so does the
		// Graph passthrough's media upload; every other route reads its body whole,
		// bounded, in the middleware (boundBody).
		StreamRequestBody:     true,
		HeaderReceived:        s.mediaTimeouts,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		Logger:                fasthttpLogger{s.log},
	}
	return s, nil
}

// webhookLimit is the body limit the webhook route needs of the server, 0 without it.
func webhookLimit(o Options) int {
	if o.Webhooks == nil {
		return 0
	}
	return o.WebhookMaxBodyBytes
}

// Handler returns the full request handler (middleware and routes), for tests and
// benchmarks that drive it without a listener.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); err != nil {
		return fmt.Errorf("serving http: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections, waits for requests in flight (until ctx ends),
// then flushes the accepted-message recorder.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	if err != nil {
		err = fmt.Errorf("shutting down http server: %w", err)
	}
	s.closeOnce.Do(func() {
		s.deadline.stop()
		if s.proxy != nil {
			s.proxy.close()
		}
		if s.rec != nil {
			if rerr := s.rec.close(ctx); rerr != nil && err == nil {
				err = rerr
			}
		}
	})
	return err
}

// Metrics returns the counters.
func (s *Server) Metrics() Metrics {
	m := Metrics{
		Accepted:        s.accepted.Load(),
		PublishErrors:   s.publishErrors.Load(),
		PublishUnknown:  s.publishUnknown.Load(),
		PanicsRecovered: s.panics.Load(),
	}
	if s.rec != nil {
		m.RecordDropped = s.rec.dropped.Load()
		m.RecordErrors = s.rec.failed.Load()
		m.Recorded = s.rec.written.Load()
	}
	return m
}

// fasthttpLogger sends fasthttp's own messages to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("http server", "detail", fmt.Sprintf(format, args...))
}
