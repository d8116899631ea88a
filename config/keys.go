package config

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
)

// EnvPrefix starts every environment variable aerogate reads.
const EnvPrefix = "AEROGATE_"

// EnvConfigFile names the YAML file when --config is not given.
const EnvConfigFile = EnvPrefix + "CONFIG"

// secretKeys never get a flag (so they stay out of --help and ps) and are redacted
// in logs. database.url is here because it may carry a password.
var secretKeys = map[string]bool{
	"database.url":        true,
	"jwt.secret":          true,
	"kafka.sasl.password": true,
	"meta.app_secret":     true,
	"meta.app_secrets":    true,
	"meta.verify_token":   true,
	"ratelimit.redis_url": true,
	"secrets.token_keys":  true,
}

// usages is the --help text of each key; a test checks that every key has one.
var usages = map[string]string{
	"http.addr":                     "gateway listen address (host:port)",
	"http.max_send_body_bytes":      "largest send request body in bytes (413 above)",
	"http.max_body_bytes":           "largest body of any other request in bytes",
	"http.max_json_depth":           "deepest nesting of arrays and objects in a JSON body (1-256; 400 json_too_deep above)",
	"http.max_header_bytes":         "largest request line plus headers in bytes, and so the largest JWT (431 above)",
	"http.read_timeout":             "gateway read timeout",
	"http.write_timeout":            "gateway write timeout",
	"http.idle_timeout":             "gateway keep-alive idle timeout",
	"http.concurrency":              "most connections the gateway serves at once",
	"admin.addr":                    "listen address of /metrics, /healthz and /readyz (host:port); empty: none (the gateway serves them on http.addr too)",
	"database.url":                  "Postgres URL (secret: may hold a password)",
	"database.max_conns":            "Postgres pool size",
	"kafka.brokers":                 "Kafka brokers, comma-separated; empty in dev means the embedded broker",
	"kafka.partitions":              "partition count of the topics aerogate creates",
	"kafka.replication_factor":      "replication factor of the topics aerogate creates",
	"kafka.batch_timeout":           "not used (every producer sends as soon as a request slot is free); accepted so existing configurations load",
	"kafka.write_timeout":           "longest produce call; past it the gateway answers 503",
	"kafka.client_id":               "client id sent to the brokers",
	"kafka.tls.enabled":             "connect to the brokers over TLS",
	"kafka.tls.ca_file":             "PEM CA bundle for the brokers' certificates (default: the system's roots)",
	"kafka.tls.cert_file":           "PEM client certificate, for brokers that authenticate clients by certificate",
	"kafka.tls.key_file":            "PEM key of kafka.tls.cert_file",
	"kafka.tls.server_name":         "name checked against the brokers' certificates (default: each broker's host)",
	"kafka.sasl.mechanism":          "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means none",
	"kafka.sasl.username":           "SASL user name",
	"kafka.sasl.password":           "SASL password (secret)",
	"dev.data_dir":                  "where dev keeps the embedded broker's log and its generated keys",
	"dev.kafka_addr":                "embedded broker listen address in dev",
	"dev.fake_graph_addr":           "fake Graph API listen address in dev",
	"graph.base_url":                "Graph API base URL",
	"graph.version":                 "Graph API version, like v22.0",
	"graph.timeout":                 "timeout of one Graph API call",
	"graph.max_conns_per_host":      "most connections to the Graph API",
	"graph.max_media_bytes":         "largest media upload or download through the Graph passthrough, in bytes",
	"graph.media_timeout":           "bound on one media transfer through the Graph passthrough",
	"graph.media_hosts":             "hosts media is downloaded from with a tenant's token, comma-separated",
	"jwt.secret":                    "HS256/384/512 secret for tenant JWTs, at least 32 bytes (secret)",
	"jwt.tenant_claim":              "JWT claim holding the tenant id",
	"jwt.algorithms":                "JWT algorithms accepted: HS256, HS384, HS512, RS256, ES256, EdDSA",
	"jwt.public_key_files":          "kid=path.pem public keys for RS256/ES256/EdDSA, comma-separated",
	"jwt.jwks_file":                 "JWKS file of public keys for RS256/ES256/EdDSA",
	"jwt.issuer":                    "required JWT iss, when set",
	"jwt.audience":                  "required JWT aud, when set",
	"jwt.leeway":                    "clock skew allowed on exp, nbf and iat",
	"jwt.cache_size":                "verified-token cache entries",
	"meta.app_id":                   "Meta app id",
	"meta.app_secret":               "Meta app secret (secret)",
	"meta.app_secrets":              "more Meta app secrets webhook signatures may be made with, for rotation (secret)",
	"meta.config_id":                "Meta Embedded Signup configuration id",
	"meta.verify_token":             "Meta webhook verify token (secret)",
	"meta.dialog_base_url":          "host of the Embedded Signup dialog URL (dev: the fake Graph API)",
	"onboarding.state_ttl":          "how long an Embedded Signup state stays usable",
	"public_base_url":               "public URL of the gateway, where Meta redirects after Embedded Signup",
	"proxy.upstreams":               "backend base URLs for /api/*, comma-separated",
	"proxy.timeout":                 "longest wait for a backend's response headers; 504 past it",
	"proxy.health_path":             "path GET on each upstream by the active health check (2xx: up); empty: no check",
	"proxy.health_interval":         "time between active health checks",
	"proxy.max_conns_per_upstream":  "most connections to each upstream",
	"proxy.tenant_param":            "query parameter and body field that may repeat the tenant; must equal the token's",
	"proxy.claim_headers":           "claim:Header pairs set from the token on proxied requests (client copies removed), comma-separated",
	"proxy.forward_authorization":   "pass the client's Authorization header to the backend",
	"ratelimit.api_rps":             "requests per second per tenant on the API (0: no limit)",
	"ratelimit.api_burst":           "burst above ratelimit.api_rps (0: equal to the rate)",
	"ratelimit.send_rps":            "sends per second per tenant (0: no limit)",
	"ratelimit.send_burst":          "burst above ratelimit.send_rps (0: equal to the rate)",
	"ratelimit.tenant_overrides":    "tenant:api_rps:api_burst:send_rps:send_burst overrides, comma-separated; an empty field keeps the default",
	"ratelimit.redis_url":           "Redis URL holding the limits across gateway instances; empty: per instance (secret: may hold a password)",
	"frontend.redirect_url":         "where the OAuth callback sends the browser",
	"secrets.token_keys":            "kid:base64key list encrypting tokens at rest, first one encrypts (secret)",
	"accounts.cache_ttl":            "how long an account stays cached",
	"accounts.negative_cache_ttl":   "how long an unknown account id stays cached as unknown",
	"accounts.cache_max_entries":    "account cache entries",
	"sender.group_id":               "Kafka consumer group of the sender",
	"sender.max_in_flight":          "sends in flight per partition",
	"sender.max_attempts":           "Graph calls per message before the DLQ",
	"sender.retry_base_delay":       "first retry backoff",
	"sender.retry_max_delay":        "longest retry backoff",
	"sender.in_process_retry_max":   "longest backoff waited out in process; longer ones go to wa.sends.retry",
	"sender.paused_retry_delay":     "how long sends of a stopped account wait before another try",
	"sender.default_throughput_mps": "messages per second for an account that has none (1-1000)",
	"refresher.interval":            "how often the refresher looks for tokens to renew or check",
	"refresher.window":              "an active token expiring within this is renewed (below 60 days)",
	"refresher.check_interval":      "how often a token that never expires is checked with debug_token",
	"refresher.lease":               "how long a claimed account stays reserved for its refresher (above graph.timeout)",
	"refresher.batch_size":          "accounts taken per claim (1-10000)",
	"refresher.concurrency":         "accounts refreshed or checked at once (1-256)",
	"refresher.retry_base_delay":    "first backoff after a failed refresh or check",
	"refresher.retry_max_delay":     "longest backoff after failed refreshes or checks",
	"webhooks.addr":                 "listen address of `aerogate webhooks` (host:port)",
	"webhooks.max_body_bytes":       "largest Meta webhook body in bytes (413 above)",
	"ingest.group_id":               "Kafka consumer group of ingest",
	"ingest.max_in_flight":          "webhook bodies fetched but not yet stored, per partition",
	"ingest.batch_max":              "most webhook bodies stored in one Postgres transaction",
	"ingest.pending_status_ttl":     "how long a status waits for its message's wamid before it is dropped",
	"retention.messages":            "how long a finished send and its statuses are kept (unfinished ones always are)",
	"retention.inbound":             "how long an inbound message is kept",
	"retention.idempotency_keys":    "how long an Idempotency-Key stays bound to its first request",
	"retention.interval":            "how often ingest removes rows past their retention",
	"retention.batch_size":          "most rows one retention statement removes (1-100000)",
	"shutdown.grace":                "longest graceful stop after SIGTERM or SIGINT; past it, or at a second signal, the process exits at once",
	"shutdown.drain_delay":          "how long /readyz answers 503 before the process stops taking requests",
	"log.level":                     "log level: debug, info, warn, error",
	"log.format":                    "log format: text or json",
	"log.access_sample":             "log one in this many successful HTTP requests at info (1: all; 0: none); failed ones always",
}

// keyInfo is one configuration key: where it lives in Config and how it is named.
type keyInfo struct {
	key    string // YAML path, e.g. http.max_send_body_bytes
	env    string // AEROGATE_HTTP_MAX_SEND_BODY_BYTES
	index  []int  // reflect field index in Config
	typ    reflect.Type
	secret bool
}

type keyTable struct {
	list     []keyInfo
	byKey    map[string]*keyInfo
	byEnv    map[string]*keyInfo
	sections map[string]bool // http, database, ...: keys that hold other keys
}

var durationType = reflect.TypeFor[time.Duration]()

// keys walks Config's koanf tags once. Env names are mapped from the known keys, not
// split on '_', because keys contain underscores (public_base_url).
var keys = sync.OnceValue(func() *keyTable {
	t := &keyTable{byKey: map[string]*keyInfo{}, byEnv: map[string]*keyInfo{}, sections: map[string]bool{}}
	var walk func(typ reflect.Type, prefix string, index []int)
	walk = func(typ reflect.Type, prefix string, index []int) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" {
				continue
			}
			key := prefix + tag
			idx := append(append([]int(nil), index...), i)
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				t.sections[key] = true
				walk(f.Type, key+".", idx)
				continue
			}
			switch f.Type.Kind() {
			case reflect.String, reflect.Int, reflect.Int64, reflect.Bool:
			case reflect.Slice:
				if f.Type.Elem().Kind() != reflect.String {
					panic("config: unsupported key type " + f.Type.String() + " for " + key)
				}
			default:
				panic("config: unsupported key type " + f.Type.String() + " for " + key)
			}
			t.list = append(t.list, keyInfo{
				key:    key,
				env:    EnvName(key),
				index:  idx,
				typ:    f.Type,
				secret: secretKeys[key],
			})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	for i := range t.list {
		k := &t.list[i]
		if _, dup := t.byEnv[k.env]; dup {
			panic(fmt.Sprintf("config: keys collide on %s", k.env))
		}
		t.byKey[k.key] = k
		t.byEnv[k.env] = k
	}
	return t
})

// EnvName is the environment variable of a key: http.addr → AEROGATE_HTTP_ADDR.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Keys lists every configuration key (YAML path) in struct order.
func Keys() []string {
	t := keys()
	out := make([]string, len(t.list))
	for i, k := range t.list {
		out[i] = k.key
	}
	return out
}

// IsSecret reports whether key holds a secret: no flag, redacted in logs.
func IsSecret(key string) bool { return secretKeys[key] }
