package role_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/role"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

func init() { slog.SetDefault(slog.New(slog.DiscardHandler)) }

func keySpec(t *testing.T, kid string) string {
	t.Helper()
	spec, err := secret.GenerateKeySpec(kid)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// stack is a database with accounts stored under some keys, and a broker.
type stack struct {
	dbURL   string
	brokers []string
}

// newStack stores one account per key spec, each encrypted under that key.
func newStack(t *testing.T, specs ...string) stack {
	t.Helper()
	dbURL, pool := storetest.New(t)
	for i, spec := range specs {
		keys, err := secret.ParseKeyRing([]string{spec})
		if err != nil {
			t.Fatal(err)
		}
		n := string(rune('1' + i))
		if _, err := account.NewRepository(pool, keys).Upsert(context.Background(), account.UpsertInput{
			TenantID: "tenant-" + n, WABAID: "900" + n, PhoneNumberID: "100" + n, AccessToken: "EAAG-token-" + n,
		}); err != nil {
			t.Fatal(err)
		}
	}
	broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	return stack{dbURL: dbURL, brokers: broker.Addrs()}
}

func (s stack) config(tokenKeys ...string) config.Config {
	cfg := config.Default()
	cfg.Database.URL = s.dbURL
	cfg.Kafka.Brokers = s.brokers
	cfg.Secrets.TokenKeys = tokenKeys
	return cfg
}

func readyz(t *testing.T, addr string) (int, role.Readiness, string) {
	t.Helper()
	var r role.Readiness
	var status int
	var body []byte
	// The account listener connects in the background: wait for it, not for the rest.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		r = role.Readiness{}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
		if r.Checks["account_listener"] == "ok" || time.Now().After(deadline) {
			return status, r, string(body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReadyzTokenKeys: a process whose secrets.token_keys cannot decrypt the stored
// tokens (keys regenerated or deleted, database kept) is not ready, and /readyz names
// the key id; with the right keys it is ready.
func TestReadyzTokenKeys(t *testing.T) {
	k1, k2 := keySpec(t, "k1"), keySpec(t, "k2")
	s := newStack(t, k1, k2)

	tests := []struct {
		name    string
		keys    []string
		wantBad []string // key ids /readyz must name; none: ready
		wantOK  []string // key ids it must not name
	}{
		{name: "right keys", keys: []string{k1, k2}},
		{name: "rotated: new key first, old ones kept", keys: []string{keySpec(t, "k3"), k2, k1}},
		{name: "regenerated key with the same id", keys: []string{keySpec(t, "k1"), k2}, wantBad: []string{`"k1"`}, wantOK: []string{`"k2"`}},
		{name: "key id missing", keys: []string{k1}, wantBad: []string{`"k2"`}, wantOK: []string{`"k1"`}},
		{name: "every key replaced", keys: []string{keySpec(t, "dev1")}, wantBad: []string{`"k1"`, `"k2"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s.config(tc.keys...)
			cfg.Admin.Addr = freeAddr(t)
			deps, err := role.Open(context.Background(), cfg, config.RoleSender)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer deps.Close()

			status, r, body := readyz(t, deps.AdminAddr())
			var m dto.Metric
			if err := metrics.Ready.WithLabelValues("token_keys").Write(&m); err != nil {
				t.Fatal(err)
			}
			gauge := m.GetGauge().GetValue()
			if len(tc.wantBad) == 0 {
				if status != http.StatusOK || r.Checks["token_keys"] != "ok" {
					t.Fatalf("/readyz = %d %s, want 200 with token_keys ok", status, body)
				}
				if gauge != 1 {
					t.Errorf("aerogate_ready{check=token_keys} = %v, want 1", gauge)
				}
				return
			}
			if status != http.StatusServiceUnavailable || r.Checks["token_keys"] != "down" {
				t.Fatalf("/readyz = %d %s, want 503 with token_keys down", status, body)
			}
			for _, kid := range tc.wantBad {
				if !strings.Contains(r.Errors["token_keys"], kid) {
					t.Errorf("/readyz does not name key id %s: %s", kid, body)
				}
			}
			for _, kid := range tc.wantOK {
				if strings.Contains(r.Errors["token_keys"], kid) {
					t.Errorf("/readyz names key id %s, which decrypts: %s", kid, body)
				}
			}
			for _, c := range []string{"postgres", "kafka", "account_listener"} {
				if r.Checks[c] != "ok" {
					t.Errorf("check %s = %q, want ok: %s", c, r.Checks[c], body)
				}
			}
			if gauge != 0 {
				t.Errorf("aerogate_ready{check=token_keys} = %v, want 0", gauge)
			}
			// Never a key itself.
			for _, spec := range tc.keys {
				_, b64, _ := strings.Cut(spec, ":")
				if strings.Contains(body, b64) {
					t.Fatal("/readyz shows a key")
				}
			}
		})
	}
}

// TestOpenRefusesBadValues: what a role's components would refuse later is refused by
// Open, naming the key; keys a role does not read are not checked.
func TestOpenRefusesBadValues(t *testing.T) {
	s := newStack(t)
	tests := []struct {
		name    string
		role    config.Role
		edit    func(*config.Config)
		wantKey string // "" means Open succeeds
	}{
		{name: "sender: base url with user info", role: config.RoleSender,
			edit: func(c *config.Config) { c.Graph.BaseURL = "https://user@graph.facebook.com" }, wantKey: "graph.base_url"},
		{name: "gateway: base url with user info (Embedded Signup calls Graph)", role: config.RoleGateway,
			edit: func(c *config.Config) { c.Graph.BaseURL = "https://user@graph.facebook.com" }, wantKey: "graph.base_url"},
		{name: "gateway ignores the sender settings", role: config.RoleGateway,
			edit: func(c *config.Config) { c.Sender.MaxAttempts = 0 }},
		{name: "sender needs no jwt.secret", role: config.RoleSender,
			edit: func(c *config.Config) { c.JWT.Secret = "" }},
		{name: "gateway needs jwt.secret", role: config.RoleGateway,
			edit: func(c *config.Config) { c.JWT.Secret = "" }, wantKey: "jwt.secret"},
		{name: "admin.addr in use", role: config.RoleSender,
			edit: func(c *config.Config) { c.Admin.Addr = s.brokers[0] }, wantKey: "admin.addr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s.config(keySpec(t, "k1"))
			cfg.JWT.Secret = strings.Repeat("s", 32)
			tc.edit(&cfg)
			deps, err := role.Open(context.Background(), cfg, tc.role)
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				deps.Close()
				return
			}
			if err == nil {
				deps.Close()
				t.Fatal("Open accepted the configuration")
			}
			var ke *config.KeyError
			if !errors.As(err, &ke) || !strings.HasPrefix(err.Error(), tc.wantKey+": ") {
				t.Fatalf("Open = %v, want an error naming %s", err, tc.wantKey)
			}
			if strings.Contains(err.Error(), "https://user") {
				t.Errorf("error shows the URL's user info: %v", err)
			}
		})
	}
}

// TestNewGraphClientNamesKey: graph.New's refusals name the configuration key even when
// configuration validation was skipped.
func TestNewGraphClientNamesKey(t *testing.T) {
	for _, tc := range []struct {
		graph config.Graph
		key   string
	}{
		{config.Graph{BaseURL: "https://user:pw@graph.facebook.com", Version: "v22.0"}, "graph.base_url"},
		{config.Graph{BaseURL: "https://graph.facebook.com", Version: "22"}, "graph.version"},
	} {
		_, err := role.NewGraphClient(tc.graph, config.Meta{})
		if err == nil || !strings.HasPrefix(err.Error(), tc.key+": ") {
			t.Errorf("NewGraphClient(%+v) = %v, want an error naming %s", tc.graph, err, tc.key)
		}
	}
	if _, err := role.NewGraphClient(config.Default().Graph, config.Meta{}); err != nil {
		t.Errorf("default graph settings: %v", err)
	}
}

// TestStopTurnsUnreadyFirst: when the process's context ends, /readyz answers 503 naming
// shutdown at once, and the role's Context ends shutdown.drain_delay later; the admin
// listener still answers meanwhile.
func TestStopTurnsUnreadyFirst(t *testing.T) {
	s := newStack(t)
	cfg := s.config(keySpec(t, "k1"))
	cfg.Admin.Addr = freeAddr(t)
	cfg.Shutdown.DrainDelay = 500 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	deps, err := role.Open(ctx, cfg, config.RoleIngest)
	if err != nil {
		t.Fatal(err)
	}
	defer deps.Close()
	if status, r, body := readyz(t, deps.AdminAddr()); status != http.StatusOK || r.Checks["shutdown"] != "ok" {
		t.Fatalf("before the stop: /readyz = %d %s", status, body)
	}

	stopped := time.Now()
	stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, r, body := readyz(t, deps.AdminAddr())
		if status == http.StatusServiceUnavailable {
			if r.Errors["shutdown"] != role.ErrShuttingDown.Error() {
				t.Fatalf("unready for another reason: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still ready after the stop: %s", body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-deps.Context().Done():
		if d := time.Since(stopped); d < cfg.Shutdown.DrainDelay {
			t.Fatalf("the role's context ended %v after the stop, before shutdown.drain_delay", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the role's context did not end after the drain")
	}
}

// TestContextEndsOnClose: a role closed without a stop (it failed) does not leave its
// Context running.
func TestContextEndsOnClose(t *testing.T) {
	s := newStack(t)
	deps, err := role.Open(context.Background(), s.config(keySpec(t, "k1")), config.RoleWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	deps.Close()
	select {
	case <-deps.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Context still running after Close")
	}
}
