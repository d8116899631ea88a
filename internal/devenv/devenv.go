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
	// MetaAppSecret is the secret of the Meta app dev plays against its fake Graph API,
	// kept so that a command run beside dev (`aerogate refresher --once`) can call it.
	MetaAppSecret string `json:"meta_app_secret,omitempty"`
}

func newMetaAppSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// LoadOrCreateKeys reads the keys kept in dataDir, generating and saving them (mode 0600)
// the first time.
func LoadOrCreateKeys(dataDir string) (Keys, error) {
	k, err := LoadKeys(dataDir)
	if err == nil {
		if k.MetaAppSecret == "" {
			// Kept by an older dev: add the Meta app secret.
			k.MetaAppSecret = newMetaAppSecret()
			if err := replaceKeys(dataDir, k); err != nil {
				return Keys{}, err
			}
			return LoadKeys(dataDir)
		}
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
	k = Keys{JWTSecret: base64.RawURLEncoding.EncodeToString(raw), TokenKeys: []string{spec}, MetaAppSecret: newMetaAppSecret()}
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

// replaceKeys writes k over the keys file: whole to a temporary file, then renamed into
// place, so a reader sees the old file or the new one.
func replaceKeys(dataDir string, k Keys) error {
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dataDir, keysFile+".*")
	if err != nil {
		return fmt.Errorf("writing dev keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing dev keys: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing dev keys: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dataDir, keysFile)); err != nil {
		return fmt.Errorf("writing dev keys: %w", err)
	}
	return nil
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
	k, err := LoadKeys(FindDataDir(cfg.Dev.DataDir))
	if err != nil {
		return false, err
	}
	fill(cfg, k)
	return true, nil
}

// FindDataDir locates a dev data directory given relative to where dev ran: when dir is
// relative and holds no keys here, it is looked for in each parent of the working
// directory, as git finds .git, so the CLI works from any directory below the one dev
// runs in. It returns dir itself when no parent has it.
func FindDataDir(dir string) string {
	if filepath.IsAbs(dir) {
		return dir
	}
	if _, err := os.Stat(filepath.Join(dir, keysFile)); err == nil {
		return dir
	}
	wd, err := os.Getwd()
	if err != nil {
		return dir
	}
	for {
		candidate := filepath.Join(wd, dir)
		if _, err := os.Stat(filepath.Join(candidate, keysFile)); err == nil {
			return candidate
		}
		parent := filepath.Dir(wd)
		if parent == wd {
			return dir
		}
		wd = parent
	}
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

	mirror *mirror
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
		b, err := StartBroker(*cfg, log)
		if err != nil {
			return nil, err
		}
		env.Broker = b
		cfg.Kafka.Brokers = b.Addrs()
	}
	if cfg.Meta.VerifyToken == "" {
		cfg.Meta.VerifyToken = DevVerifyToken
	}
	if cfg.Graph.BaseURL == config.Default().Graph.BaseURL {
		devMetaApp(cfg, k)
		// Like Meta, the fake posts sent, delivered and read of every send to the
		// gateway's webhook route, signed with the app secret, so a send made in dev
		// ends read.
		g, err := StartFakeGraph(*cfg, "http://"+LocalAddr(cfg.HTTP.Addr)+webhook.Path, log)
		if err != nil {
			env.Close()
			return nil, err
		}
		env.Graph = g
		cfg.Graph.BaseURL = g.URL()
		if cfg.Meta.DialogBaseURL == config.Default().Meta.DialogBaseURL {
			cfg.Meta.DialogBaseURL = g.URL()
		}
		if cfg.PublicBaseURL == config.Default().PublicBaseURL {
			cfg.PublicBaseURL = "http://" + LocalAddr(cfg.HTTP.Addr)
		}
		if env.mirror, err = startMirror(ctx, *cfg, g, log); err != nil {
			env.Close()
			return nil, err
		}
	}
	return env, nil
}

// StartBroker starts the embedded Kafka-protocol broker of dev and `aerogate broker`: on
// dev.kafka_addr, its log under dev.data_dir, every aerogate topic created with
// kafka.partitions partitions. Close it when done.
func StartBroker(cfg config.Config, log *slog.Logger) (*queue.Embedded, error) {
	dir := filepath.Join(cfg.Dev.DataDir, "kafka")
	b, err := queue.StartEmbedded(queue.EmbeddedConfig{
		Addr:       cfg.Dev.KafkaAddr,
		DataDir:    dir,
		Partitions: cfg.Kafka.Partitions,
	})
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker on %s: %w", cfg.Dev.KafkaAddr, err)
	}
	log.Info("embedded kafka broker started", "addr", b.Addrs(), "data_dir", dir, "partitions", cfg.Kafka.Partitions)
	return b, nil
}

// StartFakeGraph starts the fake Graph API of dev and `aerogate fake-graph` on
// dev.fake_graph_addr. It plays cfg's Meta app (meta.app_id, and with meta.app_secret it
// requires appsecret_proof, as Meta does with "Require App Secret" on) and accepts any
// non-empty token for a number it was not told about. With statusURL, it posts sent,
// delivered and read of every send there, signed with the app secret, like Meta's
// webhooks. Close it when done.
func StartFakeGraph(cfg config.Config, statusURL string, log *slog.Logger) (*fakemeta.Server, error) {
	g := fakemeta.New(fakemeta.Options{AcceptAnyToken: true, AppID: cfg.Meta.AppID, AppSecret: cfg.Meta.AppSecret,
		RequireAppSecretProof: cfg.Meta.AppSecret != "", Logger: log})
	if statusURL != "" {
		secrets := cfg.Meta.WebhookSecrets()
		if len(secrets) == 0 {
			return nil, errors.New("status webhooks need meta.app_secret to sign them")
		}
		g.EnableStatusWebhooks(fakemeta.StatusWebhooks{URL: statusURL, Secret: secrets[0]})
	}
	if err := g.Start(cfg.Dev.FakeGraphAddr); err != nil {
		return nil, fmt.Errorf("starting fake graph api on %s: %w", cfg.Dev.FakeGraphAddr, err)
	}
	log.Info("fake graph api started", "url", g.URL(), "meta_app_id", cfg.Meta.AppID, "status_webhooks", statusURL != "")
	return g, nil
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
// Embedded Signup configuration id, and the app secret kept in the data directory (the
// fake requires appsecret_proof with it, as Meta does with "Require App Secret" on).
func devMetaApp(cfg *config.Config, k Keys) {
	if cfg.Meta.AppID == "" {
		cfg.Meta.AppID = DevAppID
	}
	if cfg.Meta.ConfigID == "" {
		cfg.Meta.ConfigID = DevConfigID
	}
	if cfg.Meta.AppSecret == "" {
		cfg.Meta.AppSecret = k.MetaAppSecret
	}
}

// ApplyFakeGraph points a command run beside `aerogate dev` (`aerogate refresher`) at
// dev's fake Graph API and Meta app, when the configuration names neither a Graph API nor
// a Meta app and dev has run in dev.data_dir. It reports whether it did.
func ApplyFakeGraph(cfg *config.Config) (bool, error) {
	if cfg.Graph.BaseURL != config.Default().Graph.BaseURL || cfg.Meta.AppID != "" || cfg.Meta.AppSecret != "" {
		return false, nil
	}
	k, err := LoadKeys(FindDataDir(cfg.Dev.DataDir))
	if err != nil {
		return false, err
	}
	if k.MetaAppSecret == "" {
		return false, nil
	}
	devMetaApp(cfg, k)
	cfg.Graph.BaseURL = "http://" + LocalAddr(cfg.Dev.FakeGraphAddr)
	return true, nil
}

// LocalAddr makes a listen address dialable: ":8080" becomes "127.0.0.1:8080".
func LocalAddr(addr string) string {
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
	if e.mirror != nil {
		e.mirror.close()
	}
	if e.Graph != nil {
		_ = e.Graph.Close()
	}
	if e.Broker != nil {
		e.Broker.Close()
	}
}
