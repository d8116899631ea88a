package webhook

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/queue"
)

// Path is where Meta is told to deliver webhooks.
const Path = "/webhooks/meta"

// HeaderReceivedAt is the Kafka header of a wa.webhooks record holding when the edge
// received the body (RFC 3339, nanoseconds, UTC). The record's value is the raw body as
// Meta signed it; its key is the first entry's WABA id.
const HeaderReceivedAt = "received_at"

// DefaultMaxBodyBytes is the largest body the edge takes by default: Meta sends at most
// 3 MB.
const DefaultMaxBodyBytes = 3 << 20

// Publisher writes records and returns once Kafka acknowledged them (acks=all);
// *queue.Producer satisfies it. It may keep the records' bytes after a failed call.
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// EdgeOptions configure an Edge. Publisher is required.
type EdgeOptions struct {
	// Verifier checks X-Hub-Signature-256; nil refuses every POST with 401 (no app
	// secret is configured, so no body can be trusted).
	Verifier *Verifier
	// VerifyToken is meta.verify_token, the handshake's shared secret; empty refuses
	// every handshake.
	VerifyToken string
	// Publisher writes to wa.webhooks.
	Publisher Publisher
	// MaxBodyBytes is the largest body taken (default DefaultMaxBodyBytes); 413 above.
	MaxBodyBytes int
	// PublishTimeout bounds the wait for the broker's acknowledgement (default 5s);
	// past it, 503 and Meta delivers again.
	PublishTimeout time.Duration
	// Role labels the metrics (gateway or webhooks).
	Role   string
	Logger *slog.Logger
	Now    func() time.Time
}

// Edge answers Meta's webhook handshake and takes its signed POSTs: each verified body is
// published whole to wa.webhooks, and Meta gets its 200 only once the broker acknowledged
// it. It parses nothing but the first entry's id (the record's key): ingest does the rest.
type Edge struct {
	opts     EdgeOptions
	log      *slog.Logger
	accepted atomic.Uint64
	results  map[string]resultCounter
}

type resultCounter interface{ Inc() }

// Results of a webhook request, the values of the result label of
// aerogate_webhook_requests_total.
const (
	ResultAccepted         = "accepted"
	ResultInvalidSignature = "invalid_signature"
	ResultTooLarge         = "too_large"
	ResultUnavailable      = "unavailable"
	ResultVerified         = "verified"
	ResultVerifyRefused    = "verify_refused"
)

// NewEdge checks opts.
func NewEdge(opts EdgeOptions) (*Edge, error) {
	if opts.Publisher == nil {
		return nil, errors.New("webhook edge: Publisher is required")
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = queue.DefaultWriteTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Role == "" {
		opts.Role = "webhooks"
	}
	e := &Edge{opts: opts, log: opts.Logger, results: map[string]resultCounter{}}
	for _, r := range []string{ResultAccepted, ResultInvalidSignature, ResultTooLarge, ResultUnavailable, ResultVerified, ResultVerifyRefused} {
		e.results[r] = metrics.WebhookRequests.WithLabelValues(opts.Role, r)
	}
	return e, nil
}

// Accepted counts bodies published and answered 200.
func (e *Edge) Accepted() uint64 { return e.accepted.Load() }

// Handshake is GET /webhooks/meta: hub.mode=subscribe with the right hub.verify_token
// gets hub.challenge back as text/plain; anything else 403.
func (e *Edge) Handshake(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	token := args.Peek("hub.verify_token")
	challenge := args.Peek("hub.challenge")
	if e.opts.VerifyToken == "" || string(args.Peek("hub.mode")) != "subscribe" || len(challenge) == 0 ||
		subtle.ConstantTimeCompare(token, []byte(e.opts.VerifyToken)) != 1 {
		e.results[ResultVerifyRefused].Inc()
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", "webhook verification refused")
		return
	}
	e.results[ResultVerified].Inc()
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBody(challenge)
}

// Receive is POST /webhooks/meta: size, then the signature over the raw body, then the
// acknowledged publish. Nothing is published for a body that fails a check.
func (e *Edge) Receive(ctx *fasthttp.RequestCtx) {
	received := e.opts.Now()
	body := ctx.PostBody()
	if len(body) > e.opts.MaxBodyBytes || ctx.Request.Header.ContentLength() > e.opts.MaxBodyBytes {
		e.results[ResultTooLarge].Inc()
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "body_too_large", "webhook body exceeds webhooks.max_body_bytes")
		return
	}
	if e.opts.Verifier == nil {
		e.results[ResultInvalidSignature].Inc()
		writeError(ctx, fasthttp.StatusUnauthorized, "invalid_signature", "no app secret is configured to check X-Hub-Signature-256")
		return
	}
	if err := e.opts.Verifier.Verify(body, ctx.Request.Header.Peek(SignatureHeader)); err != nil {
		e.results[ResultInvalidSignature].Inc()
		writeError(ctx, fasthttp.StatusUnauthorized, "invalid_signature", err.Error())
		return
	}
	// The body buffer is the connection's and the producer may keep a record after a
	// failed call, so the record gets its own copy.
	value := append([]byte(nil), body...)
	msg := kafka.Message{
		Value:   value,
		Headers: []kafka.Header{{Key: HeaderReceivedAt, Value: received.UTC().AppendFormat(nil, time.RFC3339Nano)}},
	}
	if waba := FirstWABAID(value); waba != "" {
		msg.Key = []byte(waba)
	}
	pctx, cancel := context.WithTimeout(context.Background(), e.opts.PublishTimeout)
	err := e.opts.Publisher.WriteMessages(pctx, msg)
	cancel()
	if err != nil {
		e.results[ResultUnavailable].Inc()
		e.log.Warn("webhook not published; Meta will deliver it again",
			"request_id", string(ctx.Response.Header.Peek("X-Request-Id")), "bytes", len(body), "error", err.Error())
		if errors.Is(err, queue.ErrTooLarge) {
			writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "body_too_large", "webhook body is larger than the queue takes")
			return
		}
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, fasthttp.StatusServiceUnavailable, "queue_unavailable", "the webhook could not be queued; deliver it again")
		return
	}
	e.accepted.Add(1)
	e.results[ResultAccepted].Inc()
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString("OK")
}

// writeError answers {"error":{"code","message","request_id"}} like every aerogate route.
func writeError(ctx *fasthttp.RequestCtx, status int, code, message string) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b := append(make([]byte, 0, 128), `{"error":{"code":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"message":`...)
	b = strconv.AppendQuote(b, message)
	b = append(b, `,"request_id":`...)
	b = strconv.AppendQuote(b, string(ctx.Response.Header.Peek("X-Request-Id")))
	b = append(b, "}}"...)
	ctx.SetBody(b)
}

// NewEdgeFromConfig builds the edge of a role from cfg: the app secrets
// (meta.app_secret and meta.app_secrets), meta.verify_token, webhooks.max_body_bytes and
// a wa.webhooks producer on kafka. Without any app secret every POST is refused (401) and
// a warning says so. The returned function closes the producer.
func NewEdgeFromConfig(cfg config.Config, kafka queue.Cluster, role string, log *slog.Logger) (*Edge, func(), error) {
	v, err := NewVerifier(cfg.Meta.WebhookSecrets()...)
	if errors.Is(err, ErrNoSecret) {
		log.Warn("meta.app_secret is not set: every webhook POST is refused with 401", "path", Path)
		v = nil
	} else if err != nil {
		return nil, nil, err
	}
	p, err := queue.NewProducer(queue.ProducerConfig{Cluster: kafka, Topic: queue.TopicWebhooks,
		Timeout: cfg.Kafka.WriteTimeout, MaxBytes: queue.WebhookMaxMessageBytes})
	if err != nil {
		return nil, nil, err
	}
	e, err := NewEdge(EdgeOptions{
		Verifier:       v,
		VerifyToken:    cfg.Meta.VerifyToken,
		Publisher:      p,
		MaxBodyBytes:   cfg.Webhooks.MaxBodyBytes,
		PublishTimeout: cfg.Kafka.WriteTimeout,
		Role:           role,
		Logger:         log,
	})
	if err != nil {
		_ = p.Close()
		return nil, nil, err
	}
	return e, func() { _ = p.Close() }, nil
}
