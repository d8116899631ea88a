package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/jsonguard"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// TokenKeySize is the size of a secrets.token_keys key (AES-256).
const TokenKeySize = 32

// maxWebhookBodyBytes keeps a webhook record under the max.message.bytes aerogate gives
// wa.webhooks (8 MiB), with room for the record's own overhead.
const maxWebhookBodyBytes = 7 << 20

// minHeaderBytes is the smallest http.max_header_bytes: room for a request line, a
// few headers and a small JWT.
const minHeaderBytes = 1 << 10

// Role names a kind of process, for ValidateFor.
type Role string

// The roles that ValidateFor knows.
const (
	RoleGateway  Role = "gateway"
	RoleSender   Role = "sender"
	RoleIngest   Role = "ingest"
	RoleWebhooks Role = "webhooks"
	// RoleRefresher renews expiring tenant tokens and checks the ones that never expire.
	RoleRefresher Role = "refresher"
)

// roleSections are the configuration sections (the first part of a key) each role reads;
// ValidateFor checks only those.
var roleSections = map[Role][]string{
	// The gateway calls Graph for Embedded Signup and the test message.
	RoleGateway: {"http", "admin", "database", "kafka", "jwt", "secrets", "accounts", "proxy", "ratelimit", "log",
		"graph", "meta", "public_base_url", "frontend", "onboarding", "webhooks", "shutdown"},
	RoleSender: {"admin", "database", "kafka", "graph", "meta", "secrets", "accounts", "sender", "log", "shutdown"},
	// Ingest also removes rows past their retention.
	RoleIngest: {"admin", "database", "kafka", "secrets", "accounts", "ingest", "retention", "log", "shutdown"},
	// The standalone webhook edge needs Kafka and the Meta app's secrets, no database.
	RoleWebhooks: {"http", "admin", "kafka", "meta", "webhooks", "log", "shutdown"},
	// The refresher needs no Kafka: it reads and writes whatsapp_accounts and calls Graph.
	RoleRefresher: {"admin", "database", "graph", "meta", "secrets", "accounts", "refresher", "log", "shutdown"},
}

// KeyError is one problem with one configuration key. Its message starts with the key.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// ValidateFor checks the keys that the given roles read, and nothing else: a sender
// needs no jwt.secret, a gateway no sender settings. Problems are joined as in Validate.
func (c Config) ValidateFor(roles ...Role) error {
	want := map[string]bool{}
	for _, r := range roles {
		secs, ok := roleSections[r]
		if !ok {
			return fmt.Errorf("config: unknown role %q", r)
		}
		for _, s := range secs {
			want[s] = true
		}
	}
	var errs []error
	for _, err := range c.problems() {
		section, _, _ := strings.Cut(err.Key, ".")
		if want[section] {
			errs = append(errs, err)
		}
	}
	if slices.Contains(roles, RoleRefresher) && !c.DevMode {
		// Renewing a token and debug_token both need the Meta app.
		if c.Meta.AppID == "" {
			errs = append(errs, &KeyError{Key: "meta.app_id", Err: errors.New("required by the refresher (the token exchange and debug_token are the app's calls)")})
		}
		if c.Meta.AppSecret == "" {
			errs = append(errs, &KeyError{Key: "meta.app_secret", Err: errors.New("required by the refresher (the token exchange and debug_token are the app's calls)")})
		}
	}
	return errors.Join(errs...)
}

// Validate checks every key and returns all problems joined, each naming its key,
// so an operator fixes everything in one go. Secret values are never quoted.
func (c Config) Validate() error {
	var errs []error
	for _, err := range c.problems() {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// problems lists what is wrong with every key, in key order.
func (c Config) problems() []*KeyError {
	var errs []*KeyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	positive := func(key string, n int) {
		if n <= 0 {
			bad(key, "must be positive, got %d", n)
		}
	}
	positiveDur := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration, got %s", d)
		}
	}
	hostPort := func(key, v string, needHost bool) {
		if err := checkHostPort(v, needHost); err != nil {
			bad(key, "%v, got %q", err, v)
		}
	}
	httpURL := func(key, v string, required bool) {
		if v == "" {
			if required {
				bad(key, "required")
			}
			return
		}
		if err := checkHTTPURL(v); err != nil {
			bad(key, "%v", err)
		}
	}

	hostPort("http.addr", c.HTTP.Addr, false)
	positive("http.max_send_body_bytes", c.HTTP.MaxSendBodyBytes)
	positive("http.max_body_bytes", c.HTTP.MaxBodyBytes)
	if c.HTTP.MaxJSONDepth < 1 || c.HTTP.MaxJSONDepth > jsonguard.MaxDepthLimit {
		bad("http.max_json_depth", "must be 1 to %d, got %d", jsonguard.MaxDepthLimit, c.HTTP.MaxJSONDepth)
	}
	if c.HTTP.MaxHeaderBytes < minHeaderBytes {
		bad("http.max_header_bytes", "must be at least %d, got %d", minHeaderBytes, c.HTTP.MaxHeaderBytes)
	}
	positiveDur("http.read_timeout", c.HTTP.ReadTimeout)
	positiveDur("http.write_timeout", c.HTTP.WriteTimeout)
	positiveDur("http.idle_timeout", c.HTTP.IdleTimeout)
	positive("http.concurrency", c.HTTP.Concurrency)
	if c.Admin.Addr != "" {
		hostPort("admin.addr", c.Admin.Addr, false)
	}

	if err := checkPostgresURL(c.Database.URL); err != nil {
		bad("database.url", "%v", err)
	}
	positive("database.max_conns", c.Database.MaxConns)

	if len(c.Kafka.Brokers) == 0 && !c.DevMode {
		bad("kafka.brokers", "required outside dev mode")
	}
	for i, b := range c.Kafka.Brokers {
		hostPort(fmt.Sprintf("kafka.brokers[%d]", i), b, true)
	}
	positive("kafka.partitions", c.Kafka.Partitions)
	positive("kafka.replication_factor", c.Kafka.ReplicationFactor)
	positiveDur("kafka.batch_timeout", c.Kafka.BatchTimeout)
	positiveDur("kafka.write_timeout", c.Kafka.WriteTimeout)
	if c.Kafka.ClientID == "" {
		bad("kafka.client_id", "required")
	}
	errs = append(errs, c.Kafka.validateSecurity()...)

	if c.Dev.DataDir == "" {
		bad("dev.data_dir", "required")
	}
	hostPort("dev.kafka_addr", c.Dev.KafkaAddr, false)
	hostPort("dev.fake_graph_addr", c.Dev.FakeGraphAddr, false)

	if err := checkBaseURL(c.Graph.BaseURL); err != nil {
		bad("graph.base_url", "%v", err)
	}
	if _, err := whatsapp.ParseGraphVersion(c.Graph.Version); err != nil {
		bad("graph.version", "%v, got %q", err, c.Graph.Version)
	}
	positiveDur("graph.timeout", c.Graph.Timeout)
	positive("graph.max_conns_per_host", c.Graph.MaxConnsPerHost)
	if c.Graph.MaxMediaBytes <= 0 || c.Graph.MaxMediaBytes > 1<<30 {
		bad("graph.max_media_bytes", "must be 1 to 1073741824 bytes, got %d", c.Graph.MaxMediaBytes)
	}
	positiveDur("graph.media_timeout", c.Graph.MediaTimeout)
	for i, h := range c.Graph.MediaHosts {
		if h == "" || strings.ContainsAny(h, "/:@?#[] ") {
			bad(fmt.Sprintf("graph.media_hosts[%d]", i), "must be a host name, got %q", h)
		}
	}

	errs = append(errs, c.JWT.validate(c.DevMode)...)

	httpURL("public_base_url", c.PublicBaseURL, false)
	for i, u := range c.Proxy.Upstreams {
		httpURL(fmt.Sprintf("proxy.upstreams[%d]", i), u, true)
		if pu, err := url.Parse(u); err == nil && (pu.RawQuery != "" || pu.Fragment != "") {
			bad(fmt.Sprintf("proxy.upstreams[%d]", i), "want a base URL without query or fragment")
		}
	}
	errs = append(errs, c.Proxy.validate()...)
	errs = append(errs, c.RateLimit.validate()...)
	httpURL("frontend.redirect_url", c.Frontend.RedirectURL, false)
	httpURL("meta.dialog_base_url", c.Meta.DialogBaseURL, true)
	if d := c.Onboarding.StateTTL; d < time.Minute || d > 24*time.Hour {
		bad("onboarding.state_ttl", "must be 1m-24h, got %s", d)
	}

	if len(c.Secrets.TokenKeys) == 0 && !c.DevMode {
		bad("secrets.token_keys", "required outside dev mode: at least one kid:base64key (32 bytes)")
	}
	seen := map[string]bool{}
	for i, spec := range c.Secrets.TokenKeys {
		kid, err := checkTokenKey(spec)
		if err != nil {
			bad(fmt.Sprintf("secrets.token_keys[%d]", i), "%v", err)
			continue
		}
		if seen[kid] {
			bad(fmt.Sprintf("secrets.token_keys[%d]", i), "key id %q given twice", kid)
		}
		seen[kid] = true
	}

	positiveDur("accounts.cache_ttl", c.Accounts.CacheTTL)
	positiveDur("accounts.negative_cache_ttl", c.Accounts.NegativeCacheTTL)
	positive("accounts.cache_max_entries", c.Accounts.CacheMaxEntries)

	if c.Sender.GroupID == "" {
		bad("sender.group_id", "required")
	}
	positive("sender.max_in_flight", c.Sender.MaxInFlight)
	positive("sender.max_attempts", c.Sender.MaxAttempts)
	positiveDur("sender.retry_base_delay", c.Sender.RetryBaseDelay)
	positiveDur("sender.retry_max_delay", c.Sender.RetryMaxDelay)
	if c.Sender.RetryMaxDelay > 0 && c.Sender.RetryMaxDelay < c.Sender.RetryBaseDelay {
		bad("sender.retry_max_delay", "must not be below sender.retry_base_delay (%s)", c.Sender.RetryBaseDelay)
	}
	positiveDur("sender.in_process_retry_max", c.Sender.InProcessRetryMax)
	positiveDur("sender.paused_retry_delay", c.Sender.PausedRetryDelay)
	if _, err := whatsapp.ParseThroughput(c.Sender.DefaultThroughputMPS); err != nil {
		bad("sender.default_throughput_mps", "%v, got %d", err, c.Sender.DefaultThroughputMPS)
	}

	hostPort("webhooks.addr", c.Webhooks.Addr, false)
	if n := c.Webhooks.MaxBodyBytes; n <= 0 || n > maxWebhookBodyBytes {
		bad("webhooks.max_body_bytes", "must be 1-%d, got %d", maxWebhookBodyBytes, n)
	}
	if c.Ingest.GroupID == "" {
		bad("ingest.group_id", "required")
	}
	positive("ingest.max_in_flight", c.Ingest.MaxInFlight)
	positive("ingest.batch_max", c.Ingest.BatchMax)
	positiveDur("ingest.pending_status_ttl", c.Ingest.PendingStatusTTL)

	for _, r := range []struct {
		key string
		d   time.Duration
	}{{"retention.messages", c.Retention.Messages}, {"retention.inbound", c.Retention.Inbound},
		{"retention.idempotency_keys", c.Retention.IdempotencyKeys}} {
		// A row younger than an hour may belong to a send or a retry still in flight.
		if r.d < time.Hour {
			bad(r.key, "must be at least 1h, got %s", r.d)
		}
	}
	if c.Retention.Interval < time.Second {
		bad("retention.interval", "must be at least 1s, got %s", c.Retention.Interval)
	}
	if n := c.Retention.BatchSize; n < 1 || n > 100000 {
		bad("retention.batch_size", "must be 1-100000, got %d", n)
	}
	positiveDur("shutdown.grace", c.Shutdown.Grace)
	if d := c.Shutdown.DrainDelay; d < 0 || d >= c.Shutdown.Grace {
		bad("shutdown.drain_delay", "must be 0 or more and below shutdown.grace (%s), got %s", c.Shutdown.Grace, d)
	}
	errs = append(errs, c.Refresher.validate(c.Graph.Timeout)...)

	if !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(c.Log.Level)) {
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	if c.Log.AccessSample < 0 {
		bad("log.access_sample", "must be 0 or more, got %d", c.Log.AccessSample)
	}
	return errs
}

// maxRefreshWindow keeps refresher.window below the life of a renewed token (60 days):
// a wider window would renew every token at every pass.
const maxRefreshWindow = 59 * 24 * time.Hour

func (r Refresher) validate(graphTimeout time.Duration) []*KeyError {
	var errs []*KeyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	if r.Interval < time.Second {
		bad("refresher.interval", "must be at least 1s, got %s", r.Interval)
	}
	if r.Window < time.Minute || r.Window > maxRefreshWindow {
		bad("refresher.window", "must be 1m-%s (a renewed token lives 60 days), got %s", maxRefreshWindow, r.Window)
	}
	if r.CheckInterval < time.Second {
		bad("refresher.check_interval", "must be at least 1s, got %s", r.CheckInterval)
	}
	// A lease must outlast the Graph call it covers, or another refresher could take the
	// account over while the call runs and renew the token a second time.
	if r.Lease < time.Second || (graphTimeout > 0 && r.Lease <= graphTimeout+time.Second) {
		bad("refresher.lease", "must be at least 1s and longer than graph.timeout (%s) plus 1s, got %s", graphTimeout, r.Lease)
	}
	if r.BatchSize < 1 || r.BatchSize > 10000 {
		bad("refresher.batch_size", "must be 1-10000, got %d", r.BatchSize)
	}
	if r.Concurrency < 1 || r.Concurrency > 256 {
		bad("refresher.concurrency", "must be 1-256, got %d", r.Concurrency)
	}
	if r.RetryBaseDelay <= 0 {
		bad("refresher.retry_base_delay", "must be a positive duration, got %s", r.RetryBaseDelay)
	}
	if r.RetryMaxDelay < r.RetryBaseDelay {
		bad("refresher.retry_max_delay", "must not be below refresher.retry_base_delay (%s), got %s", r.RetryBaseDelay, r.RetryMaxDelay)
	}
	return errs
}

func (j JWT) validate(dev bool) []*KeyError {
	var errs []*KeyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	var hmac, public bool
	if len(j.Algorithms) == 0 {
		bad("jwt.algorithms", "at least one of %s", strings.Join(auth.SupportedAlgorithms, ", "))
	}
	for _, a := range j.Algorithms {
		switch {
		case !slices.Contains(auth.SupportedAlgorithms, a):
			bad("jwt.algorithms", "%q not supported (use %s)", a, strings.Join(auth.SupportedAlgorithms, ", "))
		case strings.HasPrefix(a, "HS"):
			hmac = true
		default:
			public = true
		}
	}
	haveKeys := len(j.PublicKeyFiles) > 0 || j.JWKSFile != ""
	switch {
	case hmac && j.Secret == "" && !dev:
		bad("jwt.secret", "required when jwt.algorithms allows HS256/384/512 (or allow only RS256/ES256/EdDSA with jwt.public_key_files or jwt.jwks_file)")
	case hmac && j.Secret != "" && len(j.Secret) < 32:
		bad("jwt.secret", "must be at least 32 bytes, got %d", len(j.Secret))
	}
	if public && !haveKeys {
		bad("jwt.public_key_files", "RS256/ES256/EdDSA allowed but neither jwt.public_key_files nor jwt.jwks_file set")
	}
	if haveKeys && !public {
		bad("jwt.algorithms", "public keys configured but none of RS256, ES256, EdDSA allowed")
	}
	for i, spec := range j.PublicKeyFiles {
		_, path, hasKid := strings.Cut(spec, "=")
		if !hasKid {
			path = spec
		}
		if path == "" {
			bad(fmt.Sprintf("jwt.public_key_files[%d]", i), "want kid=path.pem or a path, got %q", spec)
		}
	}
	if j.TenantClaim == "" {
		bad("jwt.tenant_claim", "required")
	}
	if j.Leeway < 0 || j.Leeway > 5*time.Minute {
		bad("jwt.leeway", "must be 0-5m, got %s", j.Leeway)
	}
	if j.CacheSize <= 0 {
		bad("jwt.cache_size", "must be positive, got %d", j.CacheSize)
	}
	return errs
}

// validateSecurity checks kafka.tls.* and kafka.sasl.*: the files must be readable now,
// not at the first connection. internal/queue builds the TLS and SASL settings from them.
func (k Kafka) validateSecurity() []*KeyError {
	var errs []*KeyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	files := []struct{ key, path string }{
		{"kafka.tls.ca_file", k.TLS.CAFile},
		{"kafka.tls.cert_file", k.TLS.CertFile},
		{"kafka.tls.key_file", k.TLS.KeyFile},
	}
	for _, f := range files {
		switch {
		case f.path == "":
		case !k.TLS.Enabled:
			bad(f.key, "set but kafka.tls.enabled is false")
		default:
			if err := checkReadable(f.path); err != nil {
				bad(f.key, "%v", err)
			}
		}
	}
	if k.TLS.ServerName != "" && !k.TLS.Enabled {
		bad("kafka.tls.server_name", "set but kafka.tls.enabled is false")
	}
	if k.TLS.CertFile != "" && k.TLS.KeyFile == "" {
		bad("kafka.tls.key_file", "required with kafka.tls.cert_file")
	}
	if k.TLS.KeyFile != "" && k.TLS.CertFile == "" {
		bad("kafka.tls.cert_file", "required with kafka.tls.key_file")
	}

	switch mech := strings.ToUpper(k.SASL.Mechanism); {
	case mech == "":
		if k.SASL.Username != "" || k.SASL.Password != "" {
			bad("kafka.sasl.mechanism", "required when kafka.sasl.username or kafka.sasl.password is set (%s)", strings.Join(SASLMechanisms, ", "))
		}
	case !slices.Contains(SASLMechanisms, mech):
		bad("kafka.sasl.mechanism", "must be %s, got %q", strings.Join(SASLMechanisms, ", "), k.SASL.Mechanism)
	default:
		if k.SASL.Username == "" {
			bad("kafka.sasl.username", "required with kafka.sasl.mechanism %s", mech)
		}
		if k.SASL.Password == "" {
			bad("kafka.sasl.password", "required with kafka.sasl.mechanism %s", mech)
		}
	}
	return errs
}

// checkReadable opens path for reading; its error names the path, never the contents.
func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	return f.Close()
}

func checkHostPort(v string, needHost bool) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("want host:port")
	}
	if needHost && host == "" {
		return errors.New("want host:port with a host")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return errors.New("want host:port with a port of 0-65535")
	}
	return nil
}

func checkHTTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an absolute http(s) URL, got %q", redactURLString(v))
	}
	return nil
}

// checkBaseURL checks an API base URL: http(s)://host[:port][/path] and nothing more.
// User info is refused (a client would send it to every host it calls), as are a query
// and a fragment (the client appends paths).
func checkBaseURL(v string) error {
	if v == "" {
		return errors.New("required")
	}
	if err := checkHTTPURL(v); err != nil {
		return err
	}
	u, _ := url.Parse(v)
	switch {
	case u.User != nil:
		// Not quoted: the user name may be a credential too.
		return errors.New("must not hold user info (user@ or user:password@): want http(s)://host[:port][/path]")
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("must not have a query, got %q", redactURLString(v))
	case u.Fragment != "":
		return fmt.Errorf("must not have a fragment, got %q", redactURLString(v))
	}
	return nil
}

// checkPostgresURL never quotes the URL: it may hold a password.
func checkPostgresURL(v string) error {
	if v == "" {
		return errors.New("required")
	}
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return errors.New("want a postgres:// URL")
	}
	if u.Opaque != "" {
		return errors.New("want postgres://[user[:password]@]host[:port]/database")
	}
	if u.Port() != "" {
		if _, err := strconv.ParseUint(u.Port(), 10, 16); err != nil {
			return errors.New("port must be 0-65535")
		}
	}
	return nil
}

// checkTokenKey is a light check of a kid:base64key spec (internal/secret does the
// real parsing). Its errors name the key id at most, never the key.
func checkTokenKey(spec string) (string, error) {
	kid, b64, ok := strings.Cut(strings.TrimSpace(spec), ":")
	if !ok {
		return "", errors.New("want kid:base64key")
	}
	if kid == "" {
		return "", errors.New("empty key id")
	}
	for _, c := range []byte(kid) {
		if c <= ' ' || c >= 0x7f || c == ',' {
			return "", errors.New("key id must be printable ASCII without spaces or commas")
		}
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != TokenKeySize {
		return "", fmt.Errorf("key %q must be standard base64 of %d bytes", kid, TokenKeySize)
	}
	return kid, nil
}

func (p Proxy) validate() []*KeyError {
	var errs []*KeyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	if p.Timeout <= 0 {
		bad("proxy.timeout", "must be a positive duration, got %s", p.Timeout)
	}
	if p.HealthPath != "" && !strings.HasPrefix(p.HealthPath, "/") {
		bad("proxy.health_path", "must start with /, got %q", p.HealthPath)
	}
	if p.HealthInterval <= 0 {
		bad("proxy.health_interval", "must be a positive duration, got %s", p.HealthInterval)
	}
	if p.MaxConnsPerUpstream <= 0 {
		bad("proxy.max_conns_per_upstream", "must be positive, got %d", p.MaxConnsPerUpstream)
	}
	if p.TenantParam == "" || !isToken(p.TenantParam) {
		bad("proxy.tenant_param", "want a parameter name of letters, digits and -_., got %q", p.TenantParam)
	}
	seen := map[string]bool{}
	for i, spec := range p.ClaimHeaders {
		key := fmt.Sprintf("proxy.claim_headers[%d]", i)
		claim, header, ok := ParseClaimHeader(spec)
		switch {
		case !ok:
			bad(key, "want claim:Header, got %q", spec)
		case ReservedProxyHeader(header):
			bad(key, "%s is set by the gateway itself and cannot carry a claim", header)
		case seen[strings.ToLower(header)]:
			bad(key, "header %s given twice", header)
		}
		_ = claim
		seen[strings.ToLower(header)] = true
	}
	return errs
}

// ParseClaimHeader splits a proxy.claim_headers entry "claim:Header"; the header must
// be an HTTP token.
func ParseClaimHeader(spec string) (claim, header string, ok bool) {
	claim, header, ok = strings.Cut(spec, ":")
	claim, header = strings.TrimSpace(claim), strings.TrimSpace(header)
	if !ok || claim == "" || header == "" || !isToken(header) {
		return "", "", false
	}
	return claim, header, true
}

// ReservedProxyHeader reports whether the gateway sets or handles header itself on
// proxied requests, so no claim may be mapped to it.
func ReservedProxyHeader(header string) bool {
	h := strings.ToLower(strings.ReplaceAll(header, "_", "-"))
	switch h {
	case "host", "authorization", "content-length", "content-type", "content-encoding", "transfer-encoding",
		"connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection",
		"x-request-id", "x-tenant-id", "forwarded", "x-real-ip", "cookie", "expect":
		return true
	}
	return strings.HasPrefix(h, "x-forwarded-")
}

// isToken reports whether s is an RFC 9110 token (a header name).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// TenantOverride is one parsed ratelimit.tenant_overrides entry; -1 keeps the default.
type TenantOverride struct {
	Tenant                               string
	APIRPS, APIBurst, SendRPS, SendBurst int
}

// ParseTenantOverride parses "tenant:api_rps:api_burst:send_rps:send_burst".
func ParseTenantOverride(spec string) (TenantOverride, error) {
	parts := strings.Split(spec, ":")
	if len(parts) != 5 || strings.TrimSpace(parts[0]) == "" {
		return TenantOverride{}, errors.New("want tenant:api_rps:api_burst:send_rps:send_burst (empty fields keep the default)")
	}
	o := TenantOverride{Tenant: strings.TrimSpace(parts[0])}
	fields := []*int{&o.APIRPS, &o.APIBurst, &o.SendRPS, &o.SendBurst}
	for i, f := range fields {
		v := strings.TrimSpace(parts[i+1])
		if v == "" {
			*f = -1
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return TenantOverride{}, fmt.Errorf("field %d: want a number ≥ 0, got %q", i+2, v)
		}
		*f = n
	}
	return o, nil
}

func (r RateLimit) validate() []*KeyError {
	var errs []*KeyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	for _, k := range []struct {
		key string
		v   int
	}{{"ratelimit.api_rps", r.APIRPS}, {"ratelimit.api_burst", r.APIBurst}, {"ratelimit.send_rps", r.SendRPS}, {"ratelimit.send_burst", r.SendBurst}} {
		if k.v < 0 {
			bad(k.key, "must not be negative, got %d", k.v)
		}
	}
	seen := map[string]bool{}
	for i, spec := range r.TenantOverrides {
		key := fmt.Sprintf("ratelimit.tenant_overrides[%d]", i)
		o, err := ParseTenantOverride(spec)
		if err != nil {
			bad(key, "%v", err)
			continue
		}
		if seen[o.Tenant] {
			bad(key, "tenant %q given twice", o.Tenant)
		}
		seen[o.Tenant] = true
	}
	if r.RedisURL != "" {
		u, err := url.Parse(r.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			// The URL may hold a password: never quote it.
			bad("ratelimit.redis_url", "want redis://[user:password@]host:port[/db] or rediss://…")
		}
	}
	return errs
}
