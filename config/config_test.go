package config

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// get renders a key's value the way the tests compare it.
func get(c Config, key string) string {
	k, ok := keys().byKey[key]
	if !ok {
		panic("unknown key " + key)
	}
	v := reflect.ValueOf(c).FieldByIndex(k.index).Interface()
	if l, ok := v.([]string); ok {
		return strings.Join(l, ",")
	}
	return fmt.Sprint(v)
}

func parsedFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return fs
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   []string
		wants map[string]string
	}{
		{
			name: "defaults",
			wants: map[string]string{
				"http.addr": "127.0.0.1:8080", "kafka.brokers": "", "graph.version": "v22.0",
				"http.read_timeout": "10s", "jwt.secret": "", "log.level": "info",
			},
		},
		{
			name: "file over defaults",
			args: []string{"--config", "testdata/file.yaml"},
			wants: map[string]string{
				"http.addr": "127.0.0.2:1001", "kafka.brokers": "file-1:9092,file-2:9092", "graph.version": "v21.0",
				"http.read_timeout": "3s", "jwt.secret": "file-secret-0123456789abcdef0123456789",
				"meta.app_id": "1234567890", "log.level": "debug",
				"http.write_timeout": "10s", "graph.base_url": "https://graph.facebook.com",
			},
		},
		{
			name:  "file named by AEROGATE_CONFIG",
			env:   []string{"AEROGATE_CONFIG=testdata/file.yaml"},
			wants: map[string]string{"http.addr": "127.0.0.2:1001", "graph.version": "v21.0"},
		},
		{
			name:  "--config beats AEROGATE_CONFIG",
			args:  []string{"--config", "testdata/partial.yaml"},
			env:   []string{"AEROGATE_CONFIG=testdata/file.yaml"},
			wants: map[string]string{"http.addr": "127.0.0.1:8080", "http.max_body_bytes": "2048", "graph.version": "v22.0"},
		},
		{
			name: "environment over file",
			args: []string{"--config", "testdata/file.yaml"},
			env: []string{
				"AEROGATE_HTTP_ADDR=127.0.0.3:1002", "AEROGATE_KAFKA_BROKERS=env-1:9092, env-2:9092,",
				"AEROGATE_HTTP_READ_TIMEOUT=5s", "AEROGATE_JWT_SECRET=env-secret-0123456789abcdef0123456789",
			},
			wants: map[string]string{
				"http.addr": "127.0.0.3:1002", "kafka.brokers": "env-1:9092,env-2:9092",
				"http.read_timeout": "5s", "jwt.secret": "env-secret-0123456789abcdef0123456789",
				"graph.version": "v21.0", "log.level": "debug",
			},
		},
		{
			name: "flags over environment",
			args: []string{"--config", "testdata/file.yaml", "--http.addr", "127.0.0.4:1003", "--kafka.brokers", "flag-1:9092,flag-2:9092", "--http.read_timeout=7s", "--graph.version", "v23.0"},
			env:  []string{"AEROGATE_HTTP_ADDR=127.0.0.3:1002", "AEROGATE_KAFKA_BROKERS=env-1:9092", "AEROGATE_HTTP_READ_TIMEOUT=5s"},
			wants: map[string]string{
				"http.addr": "127.0.0.4:1003", "kafka.brokers": "flag-1:9092,flag-2:9092",
				"http.read_timeout": "7s", "graph.version": "v23.0", "log.level": "debug",
			},
		},
		{
			name:  "flags left unset do not override",
			args:  []string{"--config", "testdata/file.yaml", "--log.format", "json"},
			env:   []string{"AEROGATE_HTTP_MAX_BODY_BYTES=4096"},
			wants: map[string]string{"http.addr": "127.0.0.2:1001", "http.max_body_bytes": "4096", "log.format": "json"},
		},
		{
			name:  "repeated list flag",
			args:  []string{"--proxy.upstreams", "http://a:1", "--proxy.upstreams", "http://b:2"},
			wants: map[string]string{"proxy.upstreams": "http://a:1,http://b:2"},
		},
		{
			name:  "empty environment variable is unset",
			args:  []string{"--config", "testdata/file.yaml"},
			env:   []string{"AEROGATE_HTTP_ADDR=", "AEROGATE_KAFKA_BROKERS="},
			wants: map[string]string{"http.addr": "127.0.0.2:1001", "kafka.brokers": "file-1:9092,file-2:9092"},
		},
		{
			name:  "key without value keeps default, empty section allowed",
			args:  []string{"--config", "testdata/partial.yaml"},
			wants: map[string]string{"http.addr": "127.0.0.1:8080", "http.max_body_bytes": "2048", "meta.app_id": ""},
		},
		{
			name:  "unknown AEROGATE_ variables are ignored",
			env:   []string{"AEROGATE_NOT_A_KEY=1", "AEROGATE_HTTP=x", "OTHER_HTTP_ADDR=1.2.3.4:5"},
			wants: map[string]string{"http.addr": "127.0.0.1:8080"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(parsedFlags(t, tc.args...), tc.env)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			for key, want := range tc.wants {
				if got := get(cfg, key); got != want {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
		})
	}
}

func TestLoadNilFlagSet(t *testing.T) {
	cfg, err := load(nil, []string{"AEROGATE_GRAPH_VERSION=v20.0"})
	if err != nil || cfg.Graph.Version != "v20.0" {
		t.Fatalf("load(nil) = %q, %v", cfg.Graph.Version, err)
	}
}

// TestDesignEnvNames pins the environment names DESIGN.md promises operators.
func TestDesignEnvNames(t *testing.T) {
	tests := []struct {
		env, key, value, want string
	}{
		{"AEROGATE_HTTP_ADDR", "http.addr", "0.0.0.0:9000", ""},
		{"AEROGATE_DATABASE_URL", "database.url", "postgres://u:p@db:5432/x", ""},
		{"AEROGATE_KAFKA_BROKERS", "kafka.brokers", "k1:9092,k2:9092", ""},
		{"AEROGATE_DEV_DATA_DIR", "dev.data_dir", "/var/lib/aerogate", ""},
		{"AEROGATE_DEV_KAFKA_ADDR", "dev.kafka_addr", "127.0.0.1:19092", ""},
		{"AEROGATE_DEV_FAKE_GRAPH_ADDR", "dev.fake_graph_addr", "127.0.0.1:19090", ""},
		{"AEROGATE_GRAPH_BASE_URL", "graph.base_url", "http://127.0.0.1:19090", ""},
		{"AEROGATE_GRAPH_VERSION", "graph.version", "v23.0", ""},
		{"AEROGATE_JWT_SECRET", "jwt.secret", "0123456789abcdef0123456789abcdef", ""},
		{"AEROGATE_JWT_TENANT_CLAIM", "jwt.tenant_claim", "org", ""},
		{"AEROGATE_META_APP_ID", "meta.app_id", "123", ""},
		{"AEROGATE_META_APP_SECRET", "meta.app_secret", "shh", ""},
		{"AEROGATE_META_CONFIG_ID", "meta.config_id", "456", ""},
		{"AEROGATE_META_VERIFY_TOKEN", "meta.verify_token", "vt", ""},
		{"AEROGATE_PUBLIC_BASE_URL", "public_base_url", "https://gw.example.com", ""},
		{"AEROGATE_PROXY_UPSTREAMS", "proxy.upstreams", "http://a:1, http://b:2", "http://a:1,http://b:2"},
		{"AEROGATE_FRONTEND_REDIRECT_URL", "frontend.redirect_url", "https://app.example.com/done", ""},
		{"AEROGATE_SECRETS_TOKEN_KEYS", "secrets.token_keys", "k2:AAAA,k1:BBBB", ""},
	}
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			if got := EnvName(tc.key); got != tc.env {
				t.Fatalf("EnvName(%s) = %s", tc.key, got)
			}
			cfg, err := load(nil, []string{tc.env + "=" + tc.value})
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" {
				want = tc.value
			}
			if got := get(cfg, tc.key); got != want {
				t.Fatalf("%s = %q, want %q", tc.key, got, want)
			}
		})
	}
}

// TestEveryKeyHasEnvAndFlag sets each key through its variable and, unless secret,
// through its flag.
func TestEveryKeyHasEnvAndFlag(t *testing.T) {
	for _, k := range keys().list {
		var value, want string
		switch {
		case k.typ == durationType:
			value, want = "42s", "42s"
		case k.typ.Kind() == reflect.Int:
			value, want = "42", "42"
		case k.typ.Kind() == reflect.Slice:
			value, want = "x,y", "x,y"
		case k.typ.Kind() == reflect.Bool:
			value, want = "true", "true"
		default:
			value, want = "v42", "v42"
		}
		t.Run(k.key, func(t *testing.T) {
			if usages[k.key] == "" {
				t.Errorf("no --help text for %s", k.key)
			}
			cfg, err := load(nil, []string{k.env + "=" + value})
			if err != nil || get(cfg, k.key) != want {
				t.Fatalf("via %s: %q, %v", k.env, get(cfg, k.key), err)
			}
			if k.secret {
				return
			}
			cfg, err = load(parsedFlags(t, "--"+k.key, value), nil)
			if err != nil || get(cfg, k.key) != want {
				t.Fatalf("via --%s: %q, %v", k.key, get(cfg, k.key), err)
			}
		})
	}
	for key := range usages {
		if _, ok := keys().byKey[key]; !ok {
			t.Errorf("help text for unknown key %s", key)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	garbled := filepath.Join(dir, "garbled.yaml")
	if err := os.WriteFile(garbled, []byte("jwt:\n  secret: \"garbled-secret-do-not-print\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	scalar := filepath.Join(dir, "scalar.yaml")
	if err := os.WriteFile(scalar, []byte("scalar-secret-do-not-print\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		env      []string
		mentions []string
		hides    []string
	}{
		{
			name:     "bad integer from environment",
			env:      []string{"AEROGATE_HTTP_MAX_SEND_BODY_BYTES=abc"},
			mentions: []string{"AEROGATE_HTTP_MAX_SEND_BODY_BYTES", "http.max_send_body_bytes", "integer", `"abc"`},
		},
		{
			name:     "bad duration from environment",
			env:      []string{"AEROGATE_KAFKA_WRITE_TIMEOUT=5"},
			mentions: []string{"kafka.write_timeout", "duration"},
		},
		{
			name:     "every bad variable reported",
			env:      []string{"AEROGATE_HTTP_CONCURRENCY=x", "AEROGATE_SENDER_MAX_ATTEMPTS=y"},
			mentions: []string{"http.concurrency", "sender.max_attempts"},
		},
		{
			name:     "unknown keys",
			args:     []string{"--config", "testdata/unknown.yaml"},
			mentions: []string{`unknown key "http.adr"`, `unknown key "grpah.version"`, "testdata/unknown.yaml"},
		},
		{
			name: "bad types in file",
			args: []string{"--config", "testdata/badtypes.yaml"},
			mentions: []string{
				"http.max_send_body_bytes: want an integer", "http.read_timeout: want a duration",
				"kafka.partitions: want an integer", "kafka.brokers: want a list", "jwt.secret: want a string",
				"secrets.token_keys: want a list", "dev: want a mapping",
			},
			hides: []string{"file-secret-do-not-print", "file-token-key-do-not-print", "unknown key"},
		},
		{
			name:     "broken YAML",
			args:     []string{"--config", garbled},
			mentions: []string{"invalid YAML"},
			hides:    []string{"garbled-secret-do-not-print"},
		},
		{
			name:     "YAML that is not a mapping",
			args:     []string{"--config", scalar},
			mentions: []string{"invalid YAML"},
			hides:    []string{"scalar-secret-do-not-print"},
		},
		{
			name:     "missing file",
			env:      []string{"AEROGATE_CONFIG=" + filepath.Join(dir, "absent.yaml")},
			mentions: []string{"absent.yaml"},
		},
		{
			name:     "empty --config",
			args:     []string{"--config="},
			mentions: []string{"--config"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(parsedFlags(t, tc.args...), tc.env)
			if err == nil {
				t.Fatal("load succeeded")
			}
			for _, m := range tc.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error does not mention %q:\n%v", m, err)
				}
			}
			for _, h := range tc.hides {
				if strings.Contains(err.Error(), h) {
					t.Errorf("error shows a secret %q:\n%v", h, err)
				}
			}
		})
	}
}

func tokenKey(kid string) string {
	return kid + ":" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
}

// production is a configuration that passes Validate outside dev mode.
func production() Config {
	c := Default()
	c.Kafka.Brokers = []string{"kafka-1:9092", "kafka-2:9092"}
	c.JWT.Secret = "0123456789abcdef0123456789abcdef"
	c.Secrets.TokenKeys = []string{tokenKey("k1"), tokenKey("k0")}
	c.Database.URL = "postgres://aerogate:hunter2-db-password@db:5432/aerogate"
	return c
}

// TestValidateFor checks that each role is held only to the keys it reads.
func TestValidateFor(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		roles []Role
		keys  []string // each must be named; none means valid
	}{
		{name: "sender without jwt.secret", roles: []Role{RoleSender}, edit: func(c *Config) { c.JWT.Secret = "" }},
		{name: "gateway without jwt.secret", roles: []Role{RoleGateway}, edit: func(c *Config) { c.JWT.Secret = "" }, keys: []string{"jwt.secret"}},
		{name: "gateway with bad graph settings", roles: []Role{RoleGateway}, edit: func(c *Config) {
			c.Graph.BaseURL = "https://user@graph.facebook.com"
			c.Graph.Timeout = 0
		}, keys: []string{"graph.base_url", "graph.timeout"}}, // Embedded Signup calls Graph
		{name: "gateway with bad onboarding settings", roles: []Role{RoleGateway}, edit: func(c *Config) {
			c.Onboarding.StateTTL = 0
			c.Meta.DialogBaseURL = "www.facebook.com"
		}, keys: []string{"onboarding.state_ttl", "meta.dialog_base_url"}},
		{name: "sender with bad graph settings", roles: []Role{RoleSender}, edit: func(c *Config) {
			c.Graph.BaseURL = "https://user@graph.facebook.com"
			c.Graph.Timeout = 0
		}, keys: []string{"graph.base_url", "graph.timeout"}},
		{name: "both roles", roles: []Role{RoleGateway, RoleSender}, edit: func(c *Config) {
			c.JWT.Secret = ""
			c.Graph.BaseURL = "https://user@graph.facebook.com"
		}, keys: []string{"jwt.secret", "graph.base_url"}},
		{name: "gateway ignores sender", roles: []Role{RoleGateway}, edit: func(c *Config) { c.Sender.MaxAttempts = 0 }},
		{name: "sender ignores http", roles: []Role{RoleSender}, edit: func(c *Config) { c.HTTP.Addr = "nope" }},
		{name: "sender needs brokers and token keys", roles: []Role{RoleSender}, edit: func(c *Config) {
			c.Kafka.Brokers = nil
			c.Secrets.TokenKeys = nil
		}, keys: []string{"kafka.brokers", "secrets.token_keys"}},
		{name: "admin.addr for both", roles: []Role{RoleSender}, edit: func(c *Config) { c.Admin.Addr = "nope" }, keys: []string{"admin.addr"}},
		{name: "refresher needs the meta app", roles: []Role{RoleRefresher}, edit: func(c *Config) {},
			keys: []string{"meta.app_id", "meta.app_secret"}},
		{name: "refresher needs no kafka nor jwt", roles: []Role{RoleRefresher}, edit: func(c *Config) {
			c.Meta.AppID, c.Meta.AppSecret = "1234", "app-secret"
			c.Kafka.Brokers, c.JWT.Secret = nil, ""
		}},
		{name: "refresher keys", roles: []Role{RoleRefresher}, edit: func(c *Config) {
			c.Meta.AppID, c.Meta.AppSecret = "1234", "app-secret"
			c.Refresher.Interval = 0
			c.Refresher.Window = 60 * 24 * time.Hour
			c.Refresher.CheckInterval = -time.Second
			c.Refresher.Lease = c.Graph.Timeout // must outlast a Graph call
			c.Refresher.BatchSize = 0
			c.Refresher.Concurrency = 1000
			c.Refresher.RetryMaxDelay = time.Second
		}, keys: []string{"refresher.interval", "refresher.window", "refresher.check_interval", "refresher.lease",
			"refresher.batch_size", "refresher.concurrency", "refresher.retry_max_delay"}},
		{name: "gateway ignores refresher", roles: []Role{RoleGateway}, edit: func(c *Config) { c.Refresher.Lease = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := production()
			tc.edit(&c)
			err := c.ValidateFor(tc.roles...)
			if len(tc.keys) == 0 {
				if err != nil {
					t.Fatalf("ValidateFor(%v): %v", tc.roles, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateFor(%v) accepted a bad config", tc.roles)
			}
			lines := strings.Split(err.Error(), "\n")
			for _, key := range tc.keys {
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, key+": ") }) {
					t.Errorf("no problem named %s in:\n%v", key, err)
				}
			}
			if len(lines) != len(tc.keys) {
				t.Errorf("got %d problems, want %d:\n%v", len(lines), len(tc.keys), err)
			}
		})
	}
	if err := production().ValidateFor("refresher"); err == nil {
		t.Error("ValidateFor accepted an unknown role")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*Config)
		keys   []string // each must be named; none means valid
		hidden []string
	}{
		{name: "production config", edit: func(*Config) {}},
		{name: "dev mode needs no secrets or brokers", edit: func(c *Config) {
			*c = Default()
			c.DevMode = true
		}},
		{name: "defaults outside dev", edit: func(c *Config) { *c = Default() }, keys: []string{"jwt.secret", "secrets.token_keys", "kafka.brokers"}},
		{name: "public keys instead of secret", edit: func(c *Config) {
			c.JWT.Secret = ""
			c.JWT.Algorithms = []string{"RS256", "EdDSA"}
			c.JWT.JWKSFile = "/etc/aerogate/jwks.json"
		}},
		{name: "http.addr without port", edit: func(c *Config) { c.HTTP.Addr = "localhost" }, keys: []string{"http.addr"}},
		{name: "http.addr bad port", edit: func(c *Config) { c.HTTP.Addr = "localhost:99999" }, keys: []string{"http.addr"}},
		{name: "http.addr all interfaces", edit: func(c *Config) { c.HTTP.Addr = ":8080" }},
		{name: "database.url not postgres", edit: func(c *Config) { c.Database.URL = "mysql://root:hunter2-db-password@db/x" }, keys: []string{"database.url"}, hidden: []string{"hunter2"}},
		{name: "database.url garbage", edit: func(c *Config) { c.Database.URL = "postgres://u:hunter2-db-password@db:port/x" }, keys: []string{"database.url"}, hidden: []string{"hunter2"}},
		{name: "database.url empty", edit: func(c *Config) { c.Database.URL = "" }, keys: []string{"database.url"}},
		{name: "graph.base_url relative", edit: func(c *Config) { c.Graph.BaseURL = "graph.facebook.com" }, keys: []string{"graph.base_url"}},
		{name: "graph.base_url ftp", edit: func(c *Config) { c.Graph.BaseURL = "ftp://graph.facebook.com" }, keys: []string{"graph.base_url"}},
		{name: "graph.base_url with user", edit: func(c *Config) { c.Graph.BaseURL = "https://user@graph.facebook.com" }, keys: []string{"graph.base_url"}, hidden: []string{"https://user"}},
		{name: "graph.base_url with password", edit: func(c *Config) { c.Graph.BaseURL = "https://u:hunter2@graph.facebook.com" }, keys: []string{"graph.base_url"}},
		{name: "graph.base_url with query", edit: func(c *Config) { c.Graph.BaseURL = "https://graph.facebook.com/?x=1" }, keys: []string{"graph.base_url"}},
		{name: "graph.base_url with fragment", edit: func(c *Config) { c.Graph.BaseURL = "https://graph.facebook.com/#x" }, keys: []string{"graph.base_url"}},
		{name: "admin.addr", edit: func(c *Config) { c.Admin.Addr = "localhost" }, keys: []string{"admin.addr"}},
		{name: "admin.addr set", edit: func(c *Config) { c.Admin.Addr = "127.0.0.1:9100" }},
		{name: "graph.version", edit: func(c *Config) { c.Graph.Version = "22.0" }, keys: []string{"graph.version"}},
		{name: "sizes and timeouts", edit: func(c *Config) {
			c.HTTP.MaxSendBodyBytes = 0
			c.HTTP.ReadTimeout = -time.Second
			c.Kafka.Partitions = 0
			c.Sender.MaxInFlight = -1
			c.Sender.MaxAttempts = 0
			c.Accounts.CacheMaxEntries = 0
			c.Accounts.CacheTTL = 0
			c.Graph.Timeout = 0
			c.Database.MaxConns = 0
		}, keys: []string{
			"http.max_send_body_bytes", "http.read_timeout", "kafka.partitions", "sender.max_in_flight",
			"sender.max_attempts", "accounts.cache_max_entries", "accounts.cache_ttl", "graph.timeout", "database.max_conns",
		}},
		{name: "retry delays inverted", edit: func(c *Config) { c.Sender.RetryMaxDelay = time.Millisecond }, keys: []string{"sender.retry_max_delay"}},
		{name: "short jwt.secret", edit: func(c *Config) { c.JWT.Secret = "short-jwt-secret" }, keys: []string{"jwt.secret"}, hidden: []string{"short-jwt-secret"}},
		{name: "short jwt.secret in dev", edit: func(c *Config) { c.JWT.Secret = "short-jwt-secret"; c.DevMode = true }, keys: []string{"jwt.secret"}},
		{name: "unknown algorithm", edit: func(c *Config) { c.JWT.Algorithms = []string{"HS256", "none"} }, keys: []string{"jwt.algorithms"}},
		{name: "RS256 without keys", edit: func(c *Config) { c.JWT.Algorithms = []string{"RS256"} }, keys: []string{"jwt.public_key_files"}},
		{name: "keys without RS256", edit: func(c *Config) { c.JWT.PublicKeyFiles = []string{"k=/x.pem"} }, keys: []string{"jwt.algorithms"}},
		{name: "public key spec without path", edit: func(c *Config) {
			c.JWT.Algorithms = []string{"ES256"}
			c.JWT.PublicKeyFiles = []string{"k="}
		}, keys: []string{"jwt.public_key_files[0]"}},
		{name: "tenant claim empty", edit: func(c *Config) { c.JWT.TenantClaim = "" }, keys: []string{"jwt.tenant_claim"}},
		{name: "leeway", edit: func(c *Config) { c.JWT.Leeway = time.Hour }, keys: []string{"jwt.leeway"}},
		{name: "token key not base64", edit: func(c *Config) { c.Secrets.TokenKeys = []string{"k1:not-base64-token-key!"} }, keys: []string{"secrets.token_keys[0]"}, hidden: []string{"not-base64-token-key"}},
		{name: "token key short", edit: func(c *Config) { c.Secrets.TokenKeys = []string{tokenKey("k1"), "k2:QUFBQQ=="} }, keys: []string{"secrets.token_keys[1]"}, hidden: []string{"QUFBQQ"}},
		{name: "token key without kid", edit: func(c *Config) { c.Secrets.TokenKeys = []string{"c2VjcmV0LXRva2VuLWtleQ=="} }, keys: []string{"secrets.token_keys[0]"}, hidden: []string{"c2VjcmV0LXRva2VuLWtleQ"}},
		{name: "token key duplicate kid", edit: func(c *Config) { c.Secrets.TokenKeys = []string{tokenKey("k1"), tokenKey("k1")} }, keys: []string{"secrets.token_keys[1]"}},
		{name: "broker without port", edit: func(c *Config) { c.Kafka.Brokers = []string{"kafka-1:9092", "kafka-2"} }, keys: []string{"kafka.brokers[1]"}},
		{name: "throughput too high", edit: func(c *Config) { c.Sender.DefaultThroughputMPS = 1001 }, keys: []string{"sender.default_throughput_mps"}},
		{name: "throughput zero", edit: func(c *Config) { c.Sender.DefaultThroughputMPS = 0 }, keys: []string{"sender.default_throughput_mps"}},
		{name: "upstream relative", edit: func(c *Config) { c.Proxy.Upstreams = []string{"http://ok:1", "/api"} }, keys: []string{"proxy.upstreams[1]"}},
		{name: "upstream with query", edit: func(c *Config) { c.Proxy.Upstreams = []string{"http://ok:1/?a=1"} }, keys: []string{"proxy.upstreams[0]"}},
		{name: "proxy settings", edit: func(c *Config) {
			c.Proxy.Timeout = 0
			c.Proxy.HealthPath = "health"
			c.Proxy.HealthInterval = 0
			c.Proxy.MaxConnsPerUpstream = 0
			c.Proxy.TenantParam = "tenant id"
		}, keys: []string{"proxy.timeout", "proxy.health_path", "proxy.health_interval", "proxy.max_conns_per_upstream", "proxy.tenant_param"}},
		{name: "claim headers", edit: func(c *Config) {
			c.Proxy.ClaimHeaders = []string{"sub:X-User-Id", "roles", "email:X-Tenant-Id", "x:X_Forwarded_For", "sub:x-user-id", "a:Bad Header"}
		}, keys: []string{"proxy.claim_headers[1]", "proxy.claim_headers[2]", "proxy.claim_headers[3]", "proxy.claim_headers[4]", "proxy.claim_headers[5]"}},
		{name: "rate limits", edit: func(c *Config) {
			c.RateLimit.APIRPS = -1
			c.RateLimit.SendBurst = -2
			c.RateLimit.TenantOverrides = []string{"acme:1:2:3:4", "acme:::5:", "x:1", ":1:1:1:1", "y:a:1:1:1"}
		}, keys: []string{"ratelimit.api_rps", "ratelimit.send_burst", "ratelimit.tenant_overrides[1]", "ratelimit.tenant_overrides[2]", "ratelimit.tenant_overrides[3]", "ratelimit.tenant_overrides[4]"}},
		{name: "redis url", edit: func(c *Config) { c.RateLimit.RedisURL = "http://u:redis-password-value@r:6379" }, keys: []string{"ratelimit.redis_url"}, hidden: []string{"redis-password-value"}},
		{name: "redirect url relative", edit: func(c *Config) { c.Frontend.RedirectURL = "/done" }, keys: []string{"frontend.redirect_url"}},
		{name: "public base url", edit: func(c *Config) { c.PublicBaseURL = "api.aerostic.com" }, keys: []string{"public_base_url"}},
		{name: "log level and format", edit: func(c *Config) { c.Log.Level = "loud"; c.Log.Format = "xml" }, keys: []string{"log.level", "log.format"}},
		{name: "dev addresses", edit: func(c *Config) { c.Dev.KafkaAddr = "nope"; c.Dev.FakeGraphAddr = "" }, keys: []string{"dev.kafka_addr", "dev.fake_graph_addr"}},
		{name: "kafka tls", edit: func(c *Config) {
			c.Kafka.TLS = KafkaTLS{Enabled: true, CAFile: "testdata/file.yaml", CertFile: "testdata/file.yaml", KeyFile: "testdata/file.yaml", ServerName: "kafka"}
		}},
		{name: "kafka tls ca file missing", edit: func(c *Config) { c.Kafka.TLS = KafkaTLS{Enabled: true, CAFile: "testdata/no-such-ca.pem"} }, keys: []string{"kafka.tls.ca_file"}},
		{name: "kafka tls cert without key", edit: func(c *Config) { c.Kafka.TLS = KafkaTLS{Enabled: true, CertFile: "testdata/file.yaml"} }, keys: []string{"kafka.tls.key_file"}},
		{name: "kafka tls settings while disabled", edit: func(c *Config) { c.Kafka.TLS = KafkaTLS{CAFile: "testdata/file.yaml", ServerName: "kafka"} },
			keys: []string{"kafka.tls.ca_file", "kafka.tls.server_name"}},
		{name: "kafka sasl scram", edit: func(c *Config) {
			c.Kafka.SASL = KafkaSASL{Mechanism: "scram-sha-512", Username: "u", Password: "hunter2"}
		}},
		{name: "kafka sasl unknown mechanism", edit: func(c *Config) { c.Kafka.SASL = KafkaSASL{Mechanism: "GSSAPI", Username: "u", Password: "hunter2"} },
			keys: []string{"kafka.sasl.mechanism"}},
		{name: "kafka sasl without password", edit: func(c *Config) { c.Kafka.SASL = KafkaSASL{Mechanism: SASLPlain, Username: "u"} }, keys: []string{"kafka.sasl.password"}},
		{name: "kafka sasl password without mechanism", edit: func(c *Config) { c.Kafka.SASL = KafkaSASL{Password: "hunter2"} }, keys: []string{"kafka.sasl.mechanism"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := production()
			tc.edit(&c)
			err := c.Validate()
			if len(tc.keys) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted a bad config")
			}
			lines := strings.Split(err.Error(), "\n")
			for _, key := range tc.keys {
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, key+": ") }) {
					t.Errorf("no problem named %s in:\n%v", key, err)
				}
			}
			if len(lines) != len(tc.keys) {
				t.Errorf("got %d problems, want %d:\n%v", len(lines), len(tc.keys), err)
			}
			for _, h := range append(tc.hidden, "hunter2") {
				if strings.Contains(err.Error(), h) {
					t.Errorf("error shows secret %q:\n%v", h, err)
				}
			}
		})
	}
}

func TestSecretsAbsentFromHelp(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	Flags(fs)
	help := fs.FlagUsages()
	for key := range secretKeys {
		if strings.Contains(help, "--"+key) {
			t.Errorf("--help offers secret flag --%s", key)
		}
		if fs.Lookup(key) != nil {
			t.Errorf("secret %s has a flag", key)
		}
	}
	for _, key := range []string{"database.url", "jwt.secret", "kafka.sasl.password", "meta.app_secret", "meta.verify_token", "secrets.token_keys"} {
		if !IsSecret(key) {
			t.Errorf("%s is not treated as secret", key)
		}
	}
	for _, k := range keys().list {
		// A bool flag shows as --key[=true|false].
		if !k.secret && !strings.Contains(help, "--"+k.key+" ") && !strings.Contains(help, "--"+k.key+"[") {
			t.Errorf("--help lacks --%s", k.key)
		}
	}
	if !strings.Contains(help, `--http.addr string`) || !strings.Contains(help, `(default "127.0.0.1:8080")`) {
		t.Errorf("--help does not show http.addr with its default:\n%s", help)
	}
	// Secret flags do not parse either.
	if err := fs.Parse([]string{"--jwt.secret", "x"}); err == nil {
		t.Error("--jwt.secret accepted")
	}
}

func TestRedacted(t *testing.T) {
	c := production()
	c.Meta.AppSecret = "meta-app-secret-value"
	c.Meta.VerifyToken = "meta-verify-token-value"
	c.Meta.AppID = "1234"
	c.Proxy.Upstreams = []string{"http://svc:proxy-password-value@backend:8000"}
	c.RateLimit.RedisURL = "redis://default:redis-password-value@redis:6379/0"
	c.Secrets.TokenKeys = []string{tokenKey("k1"), "malformed-token-key-value"}
	c.Kafka.SASL = KafkaSASL{Mechanism: SASLScramSHA512, Username: "aerogate", Password: "kafka-sasl-password-value"}
	secrets := []string{"kafka-sasl-password-value",
		c.JWT.Secret, "hunter2-db-password", "meta-app-secret-value", "meta-verify-token-value",
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)), "malformed-token-key-value", "proxy-password-value", "redis-password-value",
	}
	orig := c
	orig.Secrets.TokenKeys = slices.Clone(c.Secrets.TokenKeys)

	r := c.Redacted()
	if !reflect.DeepEqual(c, orig) {
		t.Fatal("Redacted changed its receiver")
	}
	wants := map[string]string{
		"jwt.secret":          Redacted,
		"kafka.sasl.password": Redacted,
		"kafka.sasl.username": "aerogate",
		"meta.app_secret":     Redacted,
		"meta.verify_token":   Redacted,
		"secrets.token_keys":  "k1:" + Redacted + "," + Redacted,
		"database.url":        "postgres://aerogate:redacted@db:5432/aerogate",
		"meta.app_id":         "1234",
		"http.addr":           c.HTTP.Addr,
		"kafka.brokers":       "kafka-1:9092,kafka-2:9092",
	}
	for key, want := range wants {
		if got := get(r, key); got != want {
			t.Errorf("redacted %s = %q, want %q", key, got, want)
		}
	}
	if got := Default().Redacted().JWT.Secret; got != "" {
		t.Errorf("unset secret redacted to %q, want empty", got)
	}
	if got := redactURLString("postgres://u@h/db?password=qp-secret&sslmode=disable"); strings.Contains(got, "qp-secret") || !strings.Contains(got, "sslmode=disable") {
		t.Errorf("query password not redacted: %s", got)
	}

	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "config", c)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", slog.Any("config", c))
	for _, out := range []string{text.String(), js.String(), fmt.Sprint(r)} {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("log output shows secret %q:\n%s", s, out)
			}
		}
	}
	for _, want := range []string{"config.http.addr=127.0.0.1:8080", "config.jwt.secret=[redacted]", "config.kafka.brokers=kafka-1:9092,kafka-2:9092", "config.http.read_timeout=10s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text log lacks %q:\n%s", want, text.String())
		}
	}
}

// TestExampleYAML keeps config/example.yaml true: it sets every key, to its default.
func TestExampleYAML(t *testing.T) {
	k := koanf.New(".")
	if err := k.Load(file.Provider("example.yaml"), yaml.Parser()); err != nil {
		t.Fatal(err)
	}
	if got, want := k.Keys(), slices.Sorted(slices.Values(Keys())); !slices.Equal(got, want) {
		t.Errorf("example.yaml keys differ from Config's:\n got %v\nwant %v", got, want)
	}
	cfg, err := load(parsedFlags(t, "--config", "example.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		for _, key := range Keys() {
			if get(cfg, key) != get(Default(), key) {
				t.Errorf("example.yaml %s = %q, default is %q", key, get(cfg, key), get(Default(), key))
			}
		}
	}
}

func FuzzLoadYAML(f *testing.F) {
	for _, name := range []string{"example.yaml", "testdata/file.yaml", "testdata/partial.yaml", "testdata/unknown.yaml", "testdata/badtypes.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("http: {addr: [1, {a: b}]}\n"))
	f.Add([]byte("? [a]\n: b\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("1: 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := Default()
		errs := decodeYAML(&cfg, b, "fuzz")
		for _, err := range errs {
			if !strings.HasPrefix(err.Error(), "fuzz: ") {
				t.Fatalf("error does not name its source: %v", err)
			}
		}
		if len(errs) == 0 {
			_ = cfg.Validate() // must not panic on whatever the file held
			_ = cfg.LogValue()
		}
	})
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{
		"AEROGATE_HTTP_ADDR=127.0.0.1:1",     // a key
		"AEROGATE_HTTP_ADR=127.0.0.1:2",      // a typo of one
		"AEROGATE_ACCESS_TOKEN=secret-value", // read by accounts add
		"AEROGATE_CONFIG=/x.yaml",            // the config file
		"AEROGATE_SOMETHING_ELSE=1",          // nothing near
		"PATH=/usr/bin",                      // not ours
	})
	want := []string{"AEROGATE_HTTP_ADR (did you mean AEROGATE_HTTP_ADDR?)", "AEROGATE_SOMETHING_ELSE"}
	if !slices.Equal(got, want) {
		t.Fatalf("UnknownEnv = %q, want %q", got, want)
	}
	for _, s := range got {
		if strings.Contains(s, "127.0.0.1") || strings.Contains(s, "secret") {
			t.Fatalf("UnknownEnv leaked a value: %q", s)
		}
	}
}
