// Package metrics is the one home of aerogate's Prometheus metric families, so every role
// names the same thing the same way and an operator's dashboard works for every process.
//
// Families are package-level collectors registered on Registry (not the client's global
// default registry, so a library that registers its own collectors cannot collide with
// ours). One process serves one registry on /metrics; `aerogate dev` runs every role in one
// process, which is why each family is owned by the part that updates it rather than by a
// role. Label values are bounded: routes are the router's patterns, never raw paths; codes
// are Meta's error codes; partitions are the topic's partitions. Hot paths hold curried
// children (WithLabelValues once, at construction) instead of looking labels up per event.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

const namespace = "aerogate"

// ParkedSeriesMax is the most numbers with a series of their own in ParkedMessages.
const ParkedSeriesMax = 100

// Registry holds every aerogate family plus the Go runtime and process collectors.
var Registry = prometheus.NewRegistry()

// latencyBuckets covers an in-memory answer (100 µs) to a Graph call at its timeout (15 s).
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15}

var (
	// HTTPRequests counts answered HTTP requests by role, route pattern and status code.
	HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "http_requests_total",
		Help: "HTTP requests answered, by role, route pattern and status code.",
	}, []string{"role", "route", "status"})
	// HTTPDuration is the time from reading a request to writing its answer.
	HTTPDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by role and route pattern.",
		Buckets: latencyBuckets,
	}, []string{"role", "route"})

	// ProduceDuration is the time of one acknowledged produce request to Kafka.
	ProduceDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "kafka_produce_duration_seconds",
		Help:    "Time from sending a produce batch to its acknowledgement (or failure), by topic.",
		Buckets: latencyBuckets,
	}, []string{"topic"})
	// ProduceRecords is how many records one produce batch carried.
	ProduceRecords = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "kafka_produce_records",
		Help:    "Records per produce batch, by topic.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096},
	}, []string{"topic"})
	// ProduceErrors counts produce batches that failed, by topic and outcome
	// ("not_written": the broker refused or was unreachable; "unknown": no answer in time).
	ProduceErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "kafka_produce_errors_total",
		Help: "Produce batches that failed, by topic and outcome (not_written or unknown).",
	}, []string{"topic", "outcome"})

	// ConsumerLag is the high watermark minus the next offset to fetch, per partition.
	ConsumerLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "kafka_consumer_lag",
		Help: "Messages between a partition's high watermark and the consumer's position.",
	}, []string{"group", "topic", "partition"})
	// ConsumerCommits counts offset commits per partition.
	ConsumerCommits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "kafka_consumer_commits_total",
		Help: "Offset commits, by consumer group, topic and partition.",
	}, []string{"group", "topic", "partition"})
	// ConsumerCommittedOffset is the last committed offset per partition.
	ConsumerCommittedOffset = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "kafka_consumer_committed_offset",
		Help: "Last committed offset, by consumer group, topic and partition.",
	}, []string{"group", "topic", "partition"})

	// Sends counts the sender's final and intermediate outcomes of Graph sends by Meta
	// error code ("" when there was none): sent, retried, failed, parked, skipped.
	Sends = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "sends_total",
		Help: "Send attempts by outcome (sent, retried, failed, parked, skipped) and Meta error code.",
	}, []string{"outcome", "code"})
	// GraphDuration is the time of one Graph API call.
	GraphDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "graph_request_duration_seconds",
		Help:    "Time of one Graph API call, by operation.",
		Buckets: latencyBuckets,
	}, []string{"operation"})
	// RateLimitWaits counts sends held back by pacing, by reason (number, pair, paused).
	RateLimitWaits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "rate_limit_waits_total",
		Help: "Sends that had to wait for pacing, by reason (number, pair, paused).",
	}, []string{"reason"})
	// RateLimitWaitSeconds is how long those sends waited.
	RateLimitWaitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "rate_limit_wait_seconds",
		Help:    "How long a send waited for pacing, by reason.",
		Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"reason"})

	// AccountCache counts account resolver lookups by result (hit, negative_hit, miss).
	AccountCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "account_cache_requests_total",
		Help: "Account cache lookups by result (hit, negative_hit, miss).",
	}, []string{"result"})
	// AccountCacheInvalidations counts accounts dropped from the cache by a change
	// notification (or all of them after the LISTEN connection was lost).
	AccountCacheInvalidations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "account_cache_invalidations_total",
		Help: "Account cache invalidations, by kind (account, all).",
	}, []string{"kind"})
	// JWTCache counts verified-token cache lookups by result (hit, miss).
	JWTCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "jwt_cache_requests_total",
		Help: "Verified-JWT cache lookups by result (hit, miss).",
	}, []string{"result"})

	// Accounts counts whatsapp_accounts rows by token status (the refresher updates it).
	Accounts = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "accounts",
		Help: "WhatsApp accounts by token status (active, expired, invalid, needs_reconnect, disconnected).",
	}, []string{"token_status"})
	// AccountsExpiring counts active accounts whose token expires within refresher.window.
	AccountsExpiring = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "accounts_expiring",
		Help: "Active accounts whose token expires within refresher.window.",
	})
	// TokenEarliestExpiry is the time left before the soonest expiry of an active token
	// (negative once it passed; +Inf when no active token expires).
	TokenEarliestExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "token_earliest_expiry_seconds",
		Help: "Seconds until the soonest expiry of an active account's token (+Inf when none expires).",
	})
	// TokenRefreshes counts renewals by outcome (refreshed, failed, needs_reconnect, lost).
	TokenRefreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "token_refreshes_total",
		Help: "Token renewals by outcome (refreshed, failed, needs_reconnect, lost).",
	}, []string{"outcome"})
	// TokenChecks counts debug_token checks of tokens that never expire, by outcome
	// (valid, needs_reconnect, failed, lost).
	TokenChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "token_checks_total",
		Help: "debug_token checks of tokens that never expire, by outcome (valid, needs_reconnect, failed, lost).",
	}, []string{"outcome"})
	// WebhookRequests counts Meta webhook requests at the edge by role and result
	// (accepted, invalid_signature, too_large, unavailable, verified, verify_refused).
	WebhookRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "webhook_requests_total",
		Help: "Meta webhook requests at the edge, by role and result.",
	}, []string{"role", "result"})
	// IngestItems counts webhook items ingest handled, by kind (message, status,
	// quality, other, invalid, body) and result (stored, duplicate, pending, ignored,
	// dead_lettered).
	IngestItems = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "ingest_items_total",
		Help: "Webhook items handled by ingest, by kind and result.",
	}, []string{"kind", "result"})
	// EventsPublished counts wa.events records published from the outbox, by type.
	EventsPublished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "events_published_total",
		Help: "Events published to wa.events, by type.",
	}, []string{"type"})
	// ParkedMessages is the sends waiting in the sender's per-number queue (Postgres),
	// per number with a backlog on this instance: a number's series exists only while it
	// has one, and at most ParkedSeriesMax numbers get their own series (the others add
	// up under phone_number_id="other"), so the cardinality stays bounded.
	ParkedMessages = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "parked_messages",
		Help: "Sends waiting in the per-number queue, by phone number id (numbers with a backlog only; \"other\" past the cap).",
	}, []string{"phone_number_id"})
	// ParkedOldestAge is the age of the oldest send at the head of a per-number queue on
	// this instance (0 when nothing waits).
	ParkedOldestAge = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "parked_oldest_age_seconds",
		Help: "Age of the oldest parked send at the head of a per-number queue on this instance.",
	})
	// Parked counts sends parked in the per-number queue, by reason (pacing, behind,
	// stopped, paused).
	Parked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "parked_total",
		Help: "Sends parked in the per-number queue, by reason (pacing, behind, stopped, paused).",
	}, []string{"reason"})
	// ParkedReleased counts parked sends the drains released and finished (its rate is
	// the drain rate).
	ParkedReleased = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "parked_released_total",
		Help: "Parked sends released by the drains and finished (sent, failed or retried).",
	})

	// RetentionDeleted counts rows removed past their retention, by table.
	RetentionDeleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "retention_deleted_rows_total",
		Help: "Rows removed past their retention, by table.",
	}, []string{"table"})

	// Ready is 1 while a readiness check passes and 0 while it fails, by check name.
	Ready = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "ready",
		Help: "1 while the named readiness check passes, else 0.",
	}, []string{"check"})

	// ProxyRequests counts /api/* requests proxied to the backend, by upstream (its
	// host:port as configured) and status answered ("502"/"504" when it did not answer).
	ProxyRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "proxy_requests_total",
		Help: "Requests proxied to a backend, by upstream and status answered.",
	}, []string{"upstream", "status"})
	// ProxyDuration is the time from sending a request upstream to its response headers.
	ProxyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "proxy_request_duration_seconds",
		Help:    "Time from forwarding a request to the backend's response headers, by upstream.",
		Buckets: latencyBuckets,
	}, []string{"upstream"})
	// ProxyUpstreamUp is 1 while an upstream passes its health check, else 0.
	ProxyUpstreamUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "proxy_upstream_up",
		Help: "1 while the upstream passes its active health check, else 0.",
	}, []string{"upstream"})
	// RateLimitRejections counts requests answered 429, by class (api, send) and tenant.
	// The tenant label is bounded: the first 100 tenants rejected since start keep their
	// id, any other is counted as "_other".
	RateLimitRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "ratelimit_rejections_total",
		Help: "Requests refused with 429, by class and tenant (the first 100 tenants rejected, then _other).",
	}, []string{"class", "tenant"})
	// RateLimitRedisUp is 1 while the shared limits in Redis answer, 0 while the gateway
	// decides on its local buckets instead. Absent when no Redis is configured.
	// (A vector without labels: its one child exists once WithLabelValues() is called.)
	RateLimitRedisUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "ratelimit_redis_up",
		Help: "1 while rate limits are held in Redis, 0 while decided on local buckets because Redis failed.",
	}, nil)
	// RateLimitLocalFallbacks counts decisions taken on local buckets because Redis failed.
	RateLimitLocalFallbacks = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "ratelimit_local_fallbacks_total",
		Help: "Rate-limit decisions taken on local buckets because Redis was unreachable.",
	})
)

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		HTTPRequests, HTTPDuration,
		ProduceDuration, ProduceRecords, ProduceErrors,
		ConsumerLag, ConsumerCommits, ConsumerCommittedOffset,
		Sends, GraphDuration, RateLimitWaits, RateLimitWaitSeconds,
		AccountCache, AccountCacheInvalidations, JWTCache,
		Ready,
		Accounts, AccountsExpiring, TokenEarliestExpiry, TokenRefreshes, TokenChecks,
		WebhookRequests, IngestItems, EventsPublished,
		ProxyRequests, ProxyDuration, ProxyUpstreamUp,
		RateLimitRejections, RateLimitRedisUp, RateLimitLocalFallbacks,
		RetentionDeleted,
		ParkedMessages, ParkedOldestAge, Parked, ParkedReleased,
	)
}

// Handler serves Registry in the Prometheus text (or OpenMetrics) format.
func Handler() fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(Registry, promhttp.HandlerOpts{
		Registry:          Registry,
		EnableOpenMetrics: true,
	}))
}
