// Package role is what every aerogate process does before its own work, in one place:
// check the configuration keys the role reads, build every component that can refuse a
// value (so a bad value fails at start, naming its key), open the Postgres pool, the
// token key ring and the account resolver kept fresh by LISTEN/NOTIFY, check the brokers
// and the stored tokens' keys, and answer /metrics, /healthz and /readyz.
//
// A role's Run calls Open, uses what it returns, and calls Close when it is done:
//
//	deps, err := role.Open(ctx, cfg, config.RoleSender)
//	if err != nil {
//		return fmt.Errorf("sender: %w", err)
//	}
//	defer deps.Close()
package role

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store"
)

// startCheckTimeout bounds each check Open makes of a dependency that may be down at
// start without stopping the process (the brokers, the stored tokens' keys): what it
// finds shows on /readyz.
const startCheckTimeout = 5 * time.Second

// listenWait bounds how long Open waits for the account listener to connect.
const listenWait = 3 * time.Second

// usesGraph are the roles that call the Graph API, so Open builds a client for them.
var usesGraph = []config.Role{config.RoleSender, config.RoleGateway, config.RoleRefresher}

// noKafka are the roles that neither produce nor consume (the refresher): Open neither
// checks the brokers for them nor reports them on /readyz.
var noKafka = []config.Role{config.RoleRefresher}

// noDatabase are the roles that use Kafka only (the standalone webhook edge): Open opens
// no pool, no key ring and no account resolver for them, and checks only the brokers.
var noDatabase = []config.Role{config.RoleWebhooks}

// Deps is what Open built for a role. Fields a role does not use are nil.
type Deps struct {
	Config   config.Config
	Log      *slog.Logger // slog.Default() with role=<name>
	Pool     *pgxpool.Pool
	Keys     *secret.KeyRing
	Accounts *account.Live
	Kafka    queue.Cluster // brokers, client id, TLS and SASL (zero for a role without Kafka)
	Graph    *graph.Client // for roles that call Graph (the sender)
	Health   *Health       // postgres, kafka, account_listener, token_keys

	admin       *Admin
	stopped     chan struct{}
	stop        context.CancelFunc
	draining    atomic.Bool
	serving     context.Context
	stopServing context.CancelFunc
}

// Open validates the keys role reads (config.ValidateFor), builds the components that
// can refuse a value, opens the pool and the live account resolver, checks the brokers
// and the stored tokens' keys (failures there make the process unready, not fail), and
// starts the admin listener when admin.addr is set. Errors name the key at fault where
// one is. Close releases everything.
func Open(ctx context.Context, cfg config.Config, role config.Role) (_ *Deps, err error) {
	if err := cfg.ValidateFor(role); err != nil {
		return nil, err
	}
	log := slog.Default().With("role", string(role))
	LogStart(log, cfg, string(role))
	kafka := !slices.Contains(noKafka, role)
	var cluster queue.Cluster
	if kafka {
		if cluster, err = queue.NewCluster(cfg.Kafka); err != nil {
			return nil, err
		}
	}
	if slices.Contains(noDatabase, role) {
		return openKafkaOnly(ctx, cfg, cluster, log)
	}
	keys, err := secret.ParseKeyRing(cfg.Secrets.TokenKeys)
	if err != nil {
		return nil, &config.KeyError{Key: "secrets.token_keys", Err: err}
	}
	var gc *graph.Client
	if slices.Contains(usesGraph, role) {
		if gc, err = NewGraphClient(cfg.Graph, cfg.Meta); err != nil {
			return nil, err
		}
	}

	d := &Deps{Config: cfg, Log: log, Keys: keys, Kafka: cluster, Graph: gc, stopped: make(chan struct{})}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.Pool, err = store.Open(ctx, cfg.Database.URL, cfg.Database.MaxConns); err != nil {
		return nil, err
	}
	d.Accounts, err = account.OpenLive(d.Pool, keys, cfg.Database.URL, account.ResolverOptions{
		TTL:         cfg.Accounts.CacheTTL,
		NegativeTTL: cfg.Accounts.NegativeCacheTTL,
		MaxEntries:  cfg.Accounts.CacheMaxEntries,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("building account resolver: %w", err)
	}

	// Serve from caches that invalidations reach: give the listener a moment to connect
	// (it keeps trying in the background, and /readyz shows it until it does).
	waitListening(ctx, d.Accounts.Resolver, listenWait)

	if kafka {
		pctx, cancel := context.WithTimeout(ctx, startCheckTimeout)
		if err := cluster.Ping(pctx); err != nil {
			log.Warn("kafka brokers do not answer; not ready until they do", "brokers", cluster.Brokers, "error", err.Error())
		}
		cancel()
	}

	tokens := &tokenKeyCheck{repo: d.Accounts.Repository, log: log}
	kctx, cancel := context.WithTimeout(ctx, startCheckTimeout)
	_ = tokens.check(kctx) // logs what it finds; /readyz reports it
	cancel()

	resolver := d.Accounts.Resolver
	checks := []Check{{Name: "postgres", Check: d.Pool.Ping}}
	if kafka {
		checks = append(checks, Check{Name: "kafka", Check: cluster.Ping})
	}
	if err := d.serve(ctx, append(checks,
		Check{Name: "account_listener", Check: func(context.Context) error {
			if !resolver.Listening() {
				return errors.New("not listening for account changes")
			}
			return nil
		}},
		Check{Name: "token_keys", Check: tokens.check, Public: true},
	)...); err != nil {
		return nil, err
	}
	return d, nil
}

// openKafkaOnly is Open for the roles in noDatabase.
func openKafkaOnly(ctx context.Context, cfg config.Config, cluster queue.Cluster, log *slog.Logger) (_ *Deps, err error) {
	d := &Deps{Config: cfg, Log: log, Kafka: cluster, stopped: make(chan struct{})}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, startCheckTimeout)
	if err := cluster.Ping(pctx); err != nil {
		log.Warn("kafka brokers do not answer; not ready until they do", "brokers", cluster.Brokers, "error", err.Error())
	}
	cancel()
	if err := d.serve(ctx, Check{Name: "kafka", Check: cluster.Ping}); err != nil {
		return nil, err
	}
	return d, nil
}

// ErrShuttingDown is the shutdown readiness check's error once the process was asked to
// stop.
var ErrShuttingDown = errors.New("shutting down")

// serve builds the readiness checks (checks, then shutdown), keeps them current, starts
// the admin listener when admin.addr is set, and starts the drain: when ctx ends,
// readiness turns false at once, and Context ends shutdown.drain_delay later.
func (d *Deps) serve(ctx context.Context, checks ...Check) error {
	d.Health = NewHealth(d.Log, append(checks, Check{Name: "shutdown", Public: true,
		Check: func(context.Context) error {
			if d.draining.Load() {
				return ErrShuttingDown
			}
			return nil
		}})...)
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	d.stop = stop
	d.serving, d.stopServing = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(d.stopped)
		go d.drain(ctx, lctx)
		d.Health.Watch(lctx, watchInterval)
	}()
	if d.Config.Admin.Addr != "" {
		var err error
		if d.admin, err = ServeAdmin(d.Config.Admin.Addr, d.Health, d.Log); err != nil {
			return &config.KeyError{Key: "admin.addr", Err: err}
		}
	}
	return nil
}

// drain waits for ctx (the process's: a signal) to end, turns readiness false, waits
// shutdown.drain_delay for load balancers to notice, then ends Context. It returns
// early when the Deps close first.
func (d *Deps) drain(ctx, closed context.Context) {
	select {
	case <-ctx.Done():
	case <-closed.Done():
		d.stopServing()
		return
	}
	d.draining.Store(true)
	d.Health.Ready(closed) // the aerogate_ready gauge says so at once
	delay := d.Config.Shutdown.DrainDelay
	d.Log.Info("stopping: not ready any more", "drain_delay", delay, "grace", d.Config.Shutdown.Grace)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-closed.Done():
		}
		t.Stop()
	}
	d.stopServing()
}

// Context is the context a role serves under: it ends shutdown.drain_delay after the
// context given to Open ended (readiness turned false at that moment). Roles stop taking
// work when it ends, then finish what is in flight.
func (d *Deps) Context() context.Context { return d.serving }

// Close stops the admin listener and the readiness watch, then releases the account
// resolver and the pool. It is safe on a partly opened Deps.
func (d *Deps) Close() {
	if d.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.admin.Shutdown(ctx); err != nil {
			d.Log.Warn("admin listener shutdown", "error", err.Error())
		}
		cancel()
	}
	if d.stop != nil {
		d.stop()
		<-d.stopped
	}
	if d.Accounts != nil {
		d.Accounts.Close()
	}
	if d.Pool != nil {
		d.Pool.Close()
	}
}

// AdminAddr is the admin listener's address, or "" when admin.addr is not set.
func (d *Deps) AdminAddr() string {
	if d.admin == nil {
		return ""
	}
	return d.admin.Addr()
}

// NewGraphClient builds the Graph client from the graph section and the Meta app (whose
// secret makes every call carry appsecret_proof), naming the key at fault when graph.New
// refuses a value.
func NewGraphClient(c config.Graph, app config.Meta) (*graph.Client, error) {
	gc, err := graph.New(graph.Config{
		BaseURL:         c.BaseURL,
		Version:         c.Version,
		Timeout:         c.Timeout,
		MaxConnsPerHost: c.MaxConnsPerHost,
		AppID:           app.AppID,
		AppSecret:       app.AppSecret,
		MediaTimeout:    c.MediaTimeout,
		MediaHosts:      c.MediaHosts,
	})
	switch {
	case errors.Is(err, graph.ErrBaseURL):
		return nil, &config.KeyError{Key: "graph.base_url", Err: err}
	case errors.Is(err, graph.ErrVersion):
		return nil, &config.KeyError{Key: "graph.version", Err: err}
	case err != nil:
		return nil, fmt.Errorf("building graph client: %w", err)
	}
	return gc, nil
}

// tokenKeyCheck is the token_keys readiness check: at start it test-decrypts one stored
// token per key id, and the process is not ready while any key id's token cannot be
// decrypted by secrets.token_keys. Keys change only with a restart, so the answer is
// kept; only a failure to read the table is tried again.
type tokenKeyCheck struct {
	repo *account.Repository
	log  *slog.Logger

	mu     sync.Mutex
	done   bool
	result error
}

func (t *tokenKeyCheck) check(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.done {
		t.run(ctx)
	}
	return t.result
}

func (t *tokenKeyCheck) run(ctx context.Context) {
	checks, err := t.repo.CheckTokenKeys(ctx)
	if err != nil {
		t.result = errors.New("could not read the stored tokens' key ids")
		t.log.Warn("checking token keys against stored tokens", "error", err.Error())
		return
	}
	t.done = true
	var bad []string
	for _, c := range checks {
		if c.Err == nil {
			continue
		}
		bad = append(bad, strconv.Quote(c.KeyID))
		why := "no key with this id in secrets.token_keys"
		if !errors.Is(c.Err, secret.ErrUnknownKey) {
			why = "the key with this id in secrets.token_keys does not decrypt it"
		}
		t.log.Error("stored access tokens cannot be decrypted; not ready", "key_id", c.KeyID,
			"account_id", c.AccountID, "reason", why)
	}
	t.result = nil
	if len(bad) > 0 {
		t.result = fmt.Errorf("no configured token key decrypts the stored tokens of key id %s", strings.Join(bad, ", "))
	}
}

// waitListening returns once r listens for account changes, or after d, or when ctx ends.
func waitListening(ctx context.Context, r *account.Resolver, d time.Duration) {
	deadline := time.Now().Add(d)
	for !r.Listening() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}
