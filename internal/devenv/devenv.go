// Package devenv prepares what `aerogate dev` runs on instead of production infrastructure:
// a data directory with generated keys, the embedded Kafka broker, the fake Graph API and a
// migrated local database.
package devenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/internal/webhook"
)

const keysFile = "keys.json"

// AdminAddr is where `aerogate dev` serves the sender's /metrics, /healthz and /readyz
// when admin.addr is not set (the gateway answers them on http.addr).
const AdminAddr = "127.0.0.1:8081"

// Keys are the secrets dev generates once and keeps in its data directory, so that
// `aerogate token` and `aerogate accounts` agree with the running dev server.
type Keys struct {
	JWTSecret string   `json:"jwt_secret"`
	TokenKeys []string `json:"token_keys"`
}

// LoadOrCreateKeys reads the keys kept in dataDir, generating and saving them (mode 0600)
// the first time.
func LoadOrCreateKeys(dataDir string) (Keys, error) {
	k, err := LoadKeys(dataDir)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Keys{}, err
	}
	raw := make([]byte, 48)
	if _, err := rand.Read(raw); err != nil {
		return Keys{}, fmt.Errorf("generating jwt secret: %w", err)
	}
	spec, err := secret.GenerateKeySpec("dev1")
	if err != nil {
		return Keys{}, fmt.Errorf("generating token key: %w", err)
	}
	k = Keys{JWTSecret: base64.RawURLEncoding.EncodeToString(raw), TokenKeys: []string{spec}}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return Keys{}, fmt.Errorf("creating data dir: %w", err)
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return Keys{}, err
	}
	path := filepath.Join(dataDir, keysFile)
	// Written whole to a temporary file, then linked into place: link fails if the file
	// exists, so two dev commands started at once agree on the first keys, and a reader
	// never sees a half-written file.
	tmp, err := os.CreateTemp(dataDir, keysFile+".*")
	if err != nil {
		return Keys{}, fmt.Errorf("writing dev keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return Keys{}, fmt.Errorf("writing dev keys: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Keys{}, fmt.Errorf("writing dev keys: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return LoadKeys(dataDir)
	} else if err != nil {
		return Keys{}, fmt.Errorf("writing %s: %w", path, err)
	}
	return k, nil
}

// LoadKeys reads the keys kept in dataDir; fs.ErrNotExist when dev never ran there.
func LoadKeys(dataDir string) (Keys, error) {
	path := filepath.Join(dataDir, keysFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return Keys{}, fmt.Errorf("reading dev keys: %w", err)
	}
	var k Keys
	if err := json.Unmarshal(b, &k); err != nil {
		return Keys{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if k.JWTSecret == "" || len(k.TokenKeys) == 0 {
		return Keys{}, fmt.Errorf("reading %s: keys missing", path)
	}
	return k, nil
}

// ApplyKeys fills jwt.secret and secrets.token_keys from the dev data directory where the
// configuration leaves them empty, so the CLI commands work against a dev server with no
// configuration. It reports whether anything was filled.
func ApplyKeys(cfg *config.Config) (bool, error) {
	if cfg.JWT.Secret != "" && len(cfg.Secrets.TokenKeys) > 0 {
		return false, nil
	}
	k, err := LoadKeys(cfg.Dev.DataDir)
	if err != nil {
		return false, err
	}
	fill(cfg, k)
	return true, nil
}

func fill(cfg *config.Config, k Keys) {
	if cfg.JWT.Secret == "" {
		cfg.JWT.Secret = k.JWTSecret
	}
	if len(cfg.Secrets.TokenKeys) == 0 {
		cfg.Secrets.TokenKeys = k.TokenKeys
	}
}

// Env is a running dev environment.
type Env struct {
	Broker *queue.Embedded  // nil when kafka.brokers names real brokers
	Graph  *fakemeta.Server // nil when graph.base_url names a real Graph API
}

// Start prepares cfg for dev: keys, database, embedded broker and fake Graph API. It
// rewrites cfg to point at what it started. Close the Env when done.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Env, error) {
	cfg.DevMode = true
	if cfg.Admin.Addr == "" {
		cfg.Admin.Addr = AdminAddr
	}
	k, err := LoadOrCreateKeys(cfg.Dev.DataDir)
	if err != nil {
		return nil, err
	}
	fill(cfg, k)

	if err := store.EnsureDatabase(ctx, cfg.Database.URL); err != nil {
		return nil, fmt.Errorf("creating dev database: %w", err)
	}
	if err := store.Migrate(ctx, cfg.Database.URL); err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}

	env := &Env{}
	if len(cfg.Kafka.Brokers) == 0 {
		b, err := queue.StartEmbedded(queue.EmbeddedConfig{
			Addr:       cfg.Dev.KafkaAddr,
			DataDir:    filepath.Join(cfg.Dev.DataDir, "kafka"),
			Partitions: cfg.Kafka.Partitions,
		})
		if err != nil {
			return nil, fmt.Errorf("starting embedded broker on %s: %w", cfg.Dev.KafkaAddr, err)
		}
		env.Broker = b
		cfg.Kafka.Brokers = b.Addrs()
		log.Info("embedded kafka broker started", "addr", b.Addrs(), "data_dir", filepath.Join(cfg.Dev.DataDir, "kafka"))
	}
	if cfg.Meta.VerifyToken == "" {
		cfg.Meta.VerifyToken = DevVerifyToken
	}
	if cfg.Graph.BaseURL == config.Default().Graph.BaseURL {
		devMetaApp(cfg)
		g := fakemeta.New(fakemeta.Options{AcceptAnyToken: true, AppID: cfg.Meta.AppID, AppSecret: cfg.Meta.AppSecret,
			RequireAppSecretProof: true})
		// Like Meta, the fake posts sent, delivered and read of every send to the
		// gateway's webhook route, signed with the app secret, so a send made in dev
		// ends read.
		g.EnableStatusWebhooks(fakemeta.StatusWebhooks{
			URL:    "http://" + localAddr(cfg.HTTP.Addr) + webhook.Path,
			Secret: cfg.Meta.WebhookSecrets()[0],
		})
		if err := g.Start(cfg.Dev.FakeGraphAddr); err != nil {
			env.Close()
			return nil, fmt.Errorf("starting fake graph api on %s: %w", cfg.Dev.FakeGraphAddr, err)
		}
		env.Graph = g
		cfg.Graph.BaseURL = g.URL()
		if cfg.Meta.DialogBaseURL == config.Default().Meta.DialogBaseURL {
			cfg.Meta.DialogBaseURL = g.URL()
		}
		if cfg.PublicBaseURL == config.Default().PublicBaseURL {
			cfg.PublicBaseURL = "http://" + localAddr(cfg.HTTP.Addr)
		}
		log.Info("fake graph api started", "url", g.URL(), "meta_app_id", cfg.Meta.AppID)
	}
	return env, nil
}

// DevVerifyToken is dev's webhook verify token unless meta.verify_token is set; it is
// not a secret: dev is on a laptop.
const DevVerifyToken = "aerogate-dev-verify-token"

// The Meta app dev plays with the fake Graph API when none is configured.
const (
	DevAppID    = "900000000000001"
	DevConfigID = "900000000000002"
)

// devMetaApp fills the Meta app keys the configuration leaves empty: a dev app id and
// Embedded Signup configuration id, and an app secret made for this run (the fake
// requires appsecret_proof with it, as Meta does with "Require App Secret" on).
func devMetaApp(cfg *config.Config) {
	if cfg.Meta.AppID == "" {
		cfg.Meta.AppID = DevAppID
	}
	if cfg.Meta.ConfigID == "" {
		cfg.Meta.ConfigID = DevConfigID
	}
	if cfg.Meta.AppSecret == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		cfg.Meta.AppSecret = hex.EncodeToString(b[:])
	}
}

// localAddr makes a listen address dialable: ":8080" becomes "127.0.0.1:8080".
func localAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Close stops what Start started.
func (e *Env) Close() {
	if e.Graph != nil {
		_ = e.Graph.Close()
	}
	if e.Broker != nil {
		e.Broker.Close()
	}
}
