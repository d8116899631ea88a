// Package config is aerogate's typed configuration: defaults < YAML file < environment
// (AEROGATE_*) < flags, with Validate naming the key that is wrong.
package config

import (
	"time"

	"github.com/aerostic/aerogate/internal/jsonguard"
)

// Config is every setting of every role. The koanf tags are the YAML paths; the
// environment variable of a key is AEROGATE_ + the path in upper snake case
// (http.addr → AEROGATE_HTTP_ADDR). These names are a contract: add keys, rename none.
type Config struct {
	HTTP          HTTP       `koanf:"http"`
	Admin         Admin      `koanf:"admin"`
	Database      Database   `koanf:"database"`
	Kafka         Kafka      `koanf:"kafka"`
	Dev           Dev        `koanf:"dev"`
	Graph         Graph      `koanf:"graph"`
	JWT           JWT        `koanf:"jwt"`
	Meta          Meta       `koanf:"meta"`
	PublicBaseURL string     `koanf:"public_base_url"`
	Proxy         Proxy      `koanf:"proxy"`
	RateLimit     RateLimit  `koanf:"ratelimit"`
	Frontend      Frontend   `koanf:"frontend"`
	Onboarding    Onboarding `koanf:"onboarding"`
	Secrets       Secrets    `koanf:"secrets"`
	Accounts      Accounts   `koanf:"accounts"`
	Sender        Sender     `koanf:"sender"`
	Refresher     Refresher  `koanf:"refresher"`
	Webhooks      Webhooks   `koanf:"webhooks"`
	Ingest        Ingest     `koanf:"ingest"`
	Retention     Retention  `koanf:"retention"`
	Shutdown      Shutdown   `koanf:"shutdown"`
	Log           Log        `koanf:"log"`

	// DevMode is set by `aerogate dev`, not by configuration: it relaxes the rules
	// for keys that dev generates itself (jwt.secret, secrets.token_keys).
	DevMode bool `koanf:"-"`
}

// HTTP configures the gateway's listener.
type HTTP struct {
	Addr             string        `koanf:"addr"`
	MaxSendBodyBytes int           `koanf:"max_send_body_bytes"` // limit for send requests (413 above)
	MaxBodyBytes     int           `koanf:"max_body_bytes"`      // limit for every other request
	MaxJSONDepth     int           `koanf:"max_json_depth"`      // nesting limit of JSON bodies (400 above)
	MaxHeaderBytes   int           `koanf:"max_header_bytes"`    // request line + headers, hence the largest JWT (431 above)
	ReadTimeout      time.Duration `koanf:"read_timeout"`
	WriteTimeout     time.Duration `koanf:"write_timeout"`
	IdleTimeout      time.Duration `koanf:"idle_timeout"`
	Concurrency      int           `koanf:"concurrency"`
}

// Admin configures the operations listener (/metrics, /healthz, /readyz) of a process.
type Admin struct {
	// Addr is where it listens; empty: none (the gateway also answers them on http.addr).
	Addr string `koanf:"addr"`
}

// Database configures the Postgres pool.
type Database struct {
	URL      string `koanf:"url"`
	MaxConns int    `koanf:"max_conns"`
}

// Kafka configures the brokers and topics.
type Kafka struct {
	Brokers []string `koanf:"brokers"` // empty in dev: the embedded broker
	// Partitions is the partition count used when aerogate creates its topics.
	Partitions int `koanf:"partitions"`
	// ReplicationFactor is used when aerogate creates its topics.
	ReplicationFactor int `koanf:"replication_factor"`
	// BatchTimeout is no longer used: every producer sends as soon as a request slot is
	// free. The key stays so that existing configurations load.
	BatchTimeout time.Duration `koanf:"batch_timeout"`
	// WriteTimeout bounds a produce call; past it the gateway answers 503.
	WriteTimeout time.Duration `koanf:"write_timeout"`
	// ClientID names this process to the brokers.
	ClientID string `koanf:"client_id"`
	// TLS and SASL apply to every connection of every role to the brokers.
	TLS  KafkaTLS  `koanf:"tls"`
	SASL KafkaSASL `koanf:"sasl"`
}

// KafkaTLS configures TLS to the brokers.
type KafkaTLS struct {
	Enabled bool `koanf:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the brokers' certificates; empty means
	// the system's roots.
	CAFile string `koanf:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key, for brokers that
	// authenticate clients by certificate; both or neither.
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
	// ServerName is the name checked against the brokers' certificates; empty means each
	// broker's host name.
	ServerName string `koanf:"server_name"`
}

// SASL mechanisms of kafka.sasl.mechanism.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASLMechanisms lists the values kafka.sasl.mechanism accepts (besides empty: none).
var SASLMechanisms = []string{SASLPlain, SASLScramSHA256, SASLScramSHA512}

// KafkaSASL configures SASL authentication to the brokers.
type KafkaSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no SASL.
	Mechanism string `koanf:"mechanism"`
	Username  string `koanf:"username"`
	Password  string `koanf:"password"` // secret
}

// Dev configures `aerogate dev`.
type Dev struct {
	DataDir       string `koanf:"data_dir"`
	KafkaAddr     string `koanf:"kafka_addr"`
	FakeGraphAddr string `koanf:"fake_graph_addr"`
}

// Graph configures the Meta Graph API client.
type Graph struct {
	BaseURL         string        `koanf:"base_url"`
	Version         string        `koanf:"version"`
	Timeout         time.Duration `koanf:"timeout"`
	MaxConnsPerHost int           `koanf:"max_conns_per_host"`
	// MaxMediaBytes is the largest media upload or download the Graph passthrough
	// streams; WhatsApp's own per-type limits (image 5 MiB, ...) apply below it.
	MaxMediaBytes int `koanf:"max_media_bytes"`
	// MediaTimeout bounds one media transfer through the passthrough (upload to Meta,
	// or download from Meta's media URL), end to end.
	MediaTimeout time.Duration `koanf:"media_timeout"`
	// MediaHosts are the hosts (besides base_url's) the passthrough fetches media
	// from with a tenant's token: Meta's media URLs point there. Any other host in a
	// media URL is refused, so a token is never sent elsewhere.
	MediaHosts []string `koanf:"media_hosts"`
}

// JWT configures tenant token verification.
type JWT struct {
	Secret         string        `koanf:"secret"` // HS256/384/512 key, ≥ 32 bytes
	TenantClaim    string        `koanf:"tenant_claim"`
	Algorithms     []string      `koanf:"algorithms"`       // allow-list; default HS256
	PublicKeyFiles []string      `koanf:"public_key_files"` // kid=path.pem list for RS256/ES256/EdDSA
	JWKSFile       string        `koanf:"jwks_file"`
	Issuer         string        `koanf:"issuer"`
	Audience       string        `koanf:"audience"`
	Leeway         time.Duration `koanf:"leeway"`
	CacheSize      int           `koanf:"cache_size"` // verified-token cache entries
}

// Meta is the Meta app.
type Meta struct {
	AppID     string `koanf:"app_id"`
	AppSecret string `koanf:"app_secret"`
	// AppSecrets are more app secrets webhook signatures are checked against, for
	// rotation: a webhook signed with any of them or AppSecret is taken.
	AppSecrets  []string `koanf:"app_secrets"`
	ConfigID    string   `koanf:"config_id"`
	VerifyToken string   `koanf:"verify_token"`
	// DialogBaseURL is the host of the Embedded Signup dialog URL (dev: the fake).
	DialogBaseURL string `koanf:"dialog_base_url"`
}

// WebhookSecrets returns every app secret a webhook signature may be made with:
// meta.app_secret, then meta.app_secrets.
func (m Meta) WebhookSecrets() []string {
	var out []string
	if m.AppSecret != "" {
		out = append(out, m.AppSecret)
	}
	for _, s := range m.AppSecrets {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Onboarding configures Embedded Signup.
type Onboarding struct {
	// StateTTL is how long an OAuth state handed to a front end stays usable.
	StateTTL time.Duration `koanf:"state_ttl"`
}

// Proxy configures the backend proxy for /api/*.
type Proxy struct {
	Upstreams []string `koanf:"upstreams"`
	// Timeout bounds one proxied request up to the backend's response headers; past
	// it the gateway answers 504.
	Timeout time.Duration `koanf:"timeout"`
	// HealthPath is what the active health check GETs on each upstream (a 2xx means
	// up); empty: no active checks.
	HealthPath     string        `koanf:"health_path"`
	HealthInterval time.Duration `koanf:"health_interval"`
	// MaxConnsPerUpstream bounds the connections to each upstream.
	MaxConnsPerUpstream int `koanf:"max_conns_per_upstream"`
	// TenantParam names the query parameter and body field that may repeat the
	// tenant (it must equal the token's); jwt.tenant_claim and tenantId are checked too.
	TenantParam string `koanf:"tenant_param"`
	// ClaimHeaders are claim:Header pairs: each header is removed from the client's
	// request and set from the token's claim.
	ClaimHeaders []string `koanf:"claim_headers"`
	// ForwardAuthorization passes the client's Authorization header to the backend.
	ForwardAuthorization bool `koanf:"forward_authorization"`
}

// RateLimit configures per-tenant request rates. A zero rate means no limit; a zero
// burst means a burst equal to the rate.
type RateLimit struct {
	APIRPS    int `koanf:"api_rps"`
	APIBurst  int `koanf:"api_burst"`
	SendRPS   int `koanf:"send_rps"`
	SendBurst int `koanf:"send_burst"`
	// TenantOverrides are tenant:api_rps:api_burst:send_rps:send_burst entries; an
	// empty field keeps the default.
	TenantOverrides []string `koanf:"tenant_overrides"`
	// RedisURL, when set, holds the limits in Redis across every gateway instance
	// (secret: may hold a password).
	RedisURL string `koanf:"redis_url"`
}

// Frontend is where the OAuth callback sends the browser.
type Frontend struct {
	RedirectURL string `koanf:"redirect_url"`
}

// Secrets holds the keys that encrypt tokens at rest.
type Secrets struct {
	TokenKeys []string `koanf:"token_keys"` // kid:base64key, first encrypts
}

// Accounts configures the account cache.
type Accounts struct {
	CacheTTL         time.Duration `koanf:"cache_ttl"`
	NegativeCacheTTL time.Duration `koanf:"negative_cache_ttl"`
	CacheMaxEntries  int           `koanf:"cache_max_entries"`
}

// Sender configures the send pipeline.
type Sender struct {
	GroupID string `koanf:"group_id"`
	// MaxInFlight bounds sends in flight per partition (back-pressure past it).
	MaxInFlight int `koanf:"max_in_flight"`
	// MaxAttempts bounds Graph calls per message; the last failure goes to the DLQ.
	MaxAttempts int `koanf:"max_attempts"`
	// RetryBaseDelay and RetryMaxDelay shape the exponential backoff with jitter.
	RetryBaseDelay time.Duration `koanf:"retry_base_delay"`
	RetryMaxDelay  time.Duration `koanf:"retry_max_delay"`
	// InProcessRetryMax is the longest backoff waited out in process; longer ones go
	// to wa.sends.retry with a not_before time.
	InProcessRetryMax time.Duration `koanf:"in_process_retry_max"`
	// PausedRetryDelay is how long sends of a stopped account wait before another try.
	PausedRetryDelay time.Duration `koanf:"paused_retry_delay"`
	// DefaultThroughputMPS is used for an account that has none.
	DefaultThroughputMPS int `koanf:"default_throughput_mps"`
}

// Refresher configures the token refresher.
type Refresher struct {
	// Interval is how often a pass looks for due accounts.
	Interval time.Duration `koanf:"interval"`
	// Window: an active token that expires within it is renewed.
	Window time.Duration `koanf:"window"`
	// CheckInterval is how often a token that never expires is checked with debug_token.
	CheckInterval time.Duration `koanf:"check_interval"`
	// Lease is how long a claimed account stays reserved for the refresher that claimed
	// it; another one takes it over only after it lapsed (its holder crashed).
	Lease time.Duration `koanf:"lease"`
	// BatchSize is how many accounts one claim takes.
	BatchSize int `koanf:"batch_size"`
	// Concurrency is how many accounts are refreshed or checked at once.
	Concurrency int `koanf:"concurrency"`
	// RetryBaseDelay and RetryMaxDelay shape the backoff (exponential, full jitter)
	// after a failed refresh or check.
	RetryBaseDelay time.Duration `koanf:"retry_base_delay"`
	RetryMaxDelay  time.Duration `koanf:"retry_max_delay"`
}

// Webhooks configures the edge that takes Meta's webhooks (on the gateway, and as
// `aerogate webhooks`).
type Webhooks struct {
	// Addr is where `aerogate webhooks` listens (the gateway serves the same route on
	// http.addr).
	Addr string `koanf:"addr"`
	// MaxBodyBytes is the largest webhook body taken (413 above); Meta sends up to 3 MB.
	MaxBodyBytes int `koanf:"max_body_bytes"`
}

// Ingest configures the role that stores what Meta's webhooks say.
type Ingest struct {
	GroupID string `koanf:"group_id"`
	// MaxInFlight bounds webhook bodies fetched but not yet stored, per partition.
	MaxInFlight int `koanf:"max_in_flight"`
	// BatchMax is the most webhook bodies stored in one Postgres transaction.
	BatchMax int `koanf:"batch_max"`
	// PendingStatusTTL is how long a status whose wamid no message has waits for the
	// sender to record it before it is dropped.
	PendingStatusTTL time.Duration `koanf:"pending_status_ttl"`
}

// Retention configures how long stored rows are kept. Ingest removes older ones in
// bounded batches; unfinished sends are never removed.
type Retention struct {
	// Messages is how long a finished send (sent, delivered, read, failed) and its
	// statuses are kept after it was accepted.
	Messages time.Duration `koanf:"messages"`
	// Inbound is how long an inbound message is kept after it was stored.
	Inbound time.Duration `koanf:"inbound"`
	// IdempotencyKeys is how long an Idempotency-Key stays bound to its first request.
	IdempotencyKeys time.Duration `koanf:"idempotency_keys"`
	// Interval is how often a sweep runs; BatchSize bounds the rows one statement removes.
	Interval  time.Duration `koanf:"interval"`
	BatchSize int           `koanf:"batch_size"`
}

// Shutdown configures the graceful stop on SIGTERM or SIGINT.
type Shutdown struct {
	// Grace bounds the whole stop: past it the process exits at once.
	Grace time.Duration `koanf:"grace"`
	// DrainDelay is how long a process answers /readyz with 503 before it stops taking
	// requests, for load balancers to stop sending it new ones.
	DrainDelay time.Duration `koanf:"drain_delay"`
}

// Log configures logging.
type Log struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // text or json
	// AccessSample logs one in this many successful HTTP requests at info (1: all of
	// them; 0: none); failed ones are always logged.
	AccessSample int `koanf:"access_sample"`
}

// Default returns the configuration every other source overrides.
func Default() Config {
	return Config{
		HTTP: HTTP{
			Addr:             "127.0.0.1:8080",
			MaxSendBodyBytes: 64 << 10,
			MaxBodyBytes:     1 << 20,
			MaxJSONDepth:     jsonguard.DefaultMaxDepth,
			MaxHeaderBytes:   8 << 10,
			ReadTimeout:      10 * time.Second,
			WriteTimeout:     10 * time.Second,
			IdleTimeout:      60 * time.Second,
			Concurrency:      256 * 1024,
		},
		Database: Database{
			URL:      "postgres://postgres@127.0.0.1:5432/aerogate?sslmode=disable",
			MaxConns: 16,
		},
		Kafka: Kafka{
			Partitions:        12,
			ReplicationFactor: 1,
			BatchTimeout:      2 * time.Millisecond,
			WriteTimeout:      5 * time.Second,
			ClientID:          "aerogate",
		},
		Dev: Dev{
			DataDir:       ".aerogate",
			KafkaAddr:     "127.0.0.1:9092",
			FakeGraphAddr: "127.0.0.1:9090",
		},
		Graph: Graph{
			BaseURL:         "https://graph.facebook.com",
			Version:         "v22.0",
			Timeout:         15 * time.Second,
			MaxConnsPerHost: 512,
			MaxMediaBytes:   100 << 20,
			MediaTimeout:    2 * time.Minute,
			MediaHosts:      []string{"lookaside.fbsbx.com"},
		},
		JWT: JWT{
			TenantClaim: "tenantId",
			Algorithms:  []string{"HS256"},
			Leeway:      30 * time.Second,
			CacheSize:   100_000,
		},
		Meta:          Meta{DialogBaseURL: "https://www.facebook.com"},
		PublicBaseURL: "https://api.aerostic.com",
		Proxy: Proxy{
			Timeout:              30 * time.Second,
			HealthInterval:       5 * time.Second,
			MaxConnsPerUpstream:  512,
			TenantParam:          "tenantId",
			ClaimHeaders:         []string{"sub:X-User-Id"},
			ForwardAuthorization: true,
		},
		Onboarding: Onboarding{StateTTL: 10 * time.Minute},
		Accounts: Accounts{
			CacheTTL:         5 * time.Minute,
			NegativeCacheTTL: 10 * time.Second,
			CacheMaxEntries:  100_000,
		},
		Sender: Sender{
			GroupID:              "aerogate-sender",
			MaxInFlight:          1024,
			MaxAttempts:          8,
			RetryBaseDelay:       200 * time.Millisecond,
			RetryMaxDelay:        10 * time.Minute,
			InProcessRetryMax:    5 * time.Second,
			PausedRetryDelay:     time.Minute,
			DefaultThroughputMPS: 80,
		},
		Refresher: Refresher{
			Interval:       time.Hour,
			Window:         240 * time.Hour,
			CheckInterval:  24 * time.Hour,
			Lease:          2 * time.Minute,
			BatchSize:      100,
			Concurrency:    4,
			RetryBaseDelay: 5 * time.Minute,
			RetryMaxDelay:  6 * time.Hour,
		},
		Webhooks: Webhooks{
			Addr:         "127.0.0.1:8082",
			MaxBodyBytes: 3 << 20,
		},
		Ingest: Ingest{
			GroupID:          "aerogate-ingest",
			MaxInFlight:      256,
			BatchMax:         100,
			PendingStatusTTL: 24 * time.Hour,
		},
		Retention: Retention{
			Messages:        30 * 24 * time.Hour,
			Inbound:         30 * 24 * time.Hour,
			IdempotencyKeys: 30 * 24 * time.Hour,
			Interval:        time.Minute,
			BatchSize:       1000,
		},
		Shutdown: Shutdown{Grace: 30 * time.Second},
		Log:      Log{Level: "info", Format: "text", AccessSample: 1},
	}
}
