package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

// env is a production-like aerogate on this machine: a database of its own on the local
// Postgres, the embedded broker, the fake Graph API, and roles started through the same
// Run functions `aerogate gateway|sender|dev` use.
type env struct {
	cfg    config.Config
	broker *queue.Embedded
	fake   *fakemeta.Server
	pool   *pgxpool.Pool
	repo   *account.Repository
	dbName string
	server string
	roles  []func()
	kdir   string
}

type tenantAccount struct {
	tenant, phoneNumberID, jwt string
}

func newEnv(ctx context.Context, partitions int) (*env, error) {
	e := &env{server: storetest.ServerURL()}
	var b [6]byte
	_, _ = rand.Read(b[:])
	e.dbName = "aerogate_bench_" + hex.EncodeToString(b[:])
	benchDatabase = e.dbName
	onInterrupt(e.dropStorage)
	admin, err := pgx.Connect(ctx, e.server)
	if err != nil {
		return nil, fmt.Errorf("connecting to postgres: %w", err)
	}
	err = store.CreateDatabase(ctx, admin, e.dbName)
	admin.Close(ctx)
	if err != nil {
		return nil, err
	}
	dbURL, err := storetest.WithDatabase(e.server, e.dbName)
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx, dbURL); err != nil {
		e.close()
		return nil, err
	}

	cfg := config.Default()
	cfg.DevMode = true
	cfg.Database.URL = dbURL
	cfg.Database.MaxConns = 16
	cfg.Kafka.Partitions = partitions
	cfg.HTTP.Addr = freeAddr()
	cfg.Log.Level = "warn"
	cfg.JWT.Secret = "bench-secret-bench-secret-bench-secret-0123456789"
	spec, err := secret.GenerateKeySpec("bench1")
	if err != nil {
		e.close()
		return nil, err
	}
	cfg.Secrets.TokenKeys = []string{spec}

	// The broker keeps its log on disk as `aerogate dev` does (kfake's in-memory log
	// grows by copying, which is not what a deployment pays).
	if e.kdir, err = os.MkdirTemp("", "aerogate-bench-kafka-"); err != nil {
		e.close()
		return nil, err
	}
	e.broker, err = queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: partitions, DataDir: e.kdir})
	if err != nil {
		e.close()
		return nil, err
	}
	cfg.Kafka.Brokers = e.broker.Addrs()
	e.fake = fakemeta.New(fakemeta.Options{})
	if err := e.fake.Start("127.0.0.1:0"); err != nil {
		e.close()
		return nil, err
	}
	cfg.Graph.BaseURL = e.fake.URL()
	e.cfg = cfg

	keys, err := secret.ParseKeyRing(cfg.Secrets.TokenKeys)
	if err != nil {
		e.close()
		return nil, err
	}
	e.pool, err = store.Open(ctx, dbURL, 4)
	if err != nil {
		e.close()
		return nil, err
	}
	e.repo = account.NewRepository(e.pool, keys)
	return e, nil
}

// seed connects one account per tenant (numbers per tenant > 1 adds more) with its own
// Meta token, registered with the fake, and issues each tenant a JWT.
func (e *env) seed(ctx context.Context, tenants, numbersPerTenant, mps int) ([]tenantAccount, error) {
	var out []tenantAccount
	for i := range tenants {
		tenant := fmt.Sprintf("tenant-%04d", i)
		jwt, err := auth.IssueHS256([]byte(e.cfg.JWT.Secret), e.cfg.JWT.TenantClaim, tenant, 2*time.Hour, "", "")
		if err != nil {
			return nil, err
		}
		for n := range numbersPerTenant {
			pnid := strconv.Itoa(100000000 + i*100 + n)
			token := "EAAG-bench-" + tenant + "-" + pnid
			if _, err := e.repo.Upsert(ctx, account.UpsertInput{
				TenantID: tenant, WABAID: strconv.Itoa(900000 + i), PhoneNumberID: pnid,
				AccessToken: token, IsDefault: n == 0, ThroughputMPS: mps,
			}); err != nil {
				return nil, err
			}
			e.fake.SetToken(pnid, token)
			out = append(out, tenantAccount{tenant: tenant, phoneNumberID: pnid, jwt: jwt})
		}
	}
	return out, nil
}

// start runs a role's Run in the background until close.
func (e *env) start(name string, run func(context.Context, config.Config) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(ctx, e.cfg); err != nil {
			slog.Error("role stopped", "role", name, "error", err)
		}
	}()
	e.roles = append(e.roles, func() { cancel(); <-done })
}

func (e *env) waitReady(ctx context.Context) error {
	for {
		resp, err := http.Get("http://" + e.cfg.HTTP.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("gateway not ready")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *env) close() {
	for i := len(e.roles) - 1; i >= 0; i-- {
		e.roles[i]()
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.fake != nil {
		_ = e.fake.Close()
	}
	if e.broker != nil {
		e.broker.Close()
	}
	e.dropStorage()
}

// dropStorage removes what the run created outside the process: its database and the
// broker's log. It also runs on Ctrl-C or SIGTERM, so an interrupted run leaves nothing.
func (e *env) dropStorage() {
	if e.kdir != "" {
		_ = os.RemoveAll(e.kdir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if admin, err := pgx.Connect(ctx, e.server); err == nil {
		_ = store.DropDatabase(ctx, admin, e.dbName)
		admin.Close(ctx)
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
