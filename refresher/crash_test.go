package refresher_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/refresher"
)

// The crash test runs a refresher in a child process (this test binary again, running
// only TestRefresherChildProcess) so that it can be killed with SIGKILL mid-pass: leases
// held, Graph calls cut off, outcomes unrecorded.
const (
	childEnv      = "AEROGATE_REFRESHER_CHILD"
	childDBEnv    = "AEROGATE_REFRESHER_CHILD_DATABASE_URL"
	childGraphEnv = "AEROGATE_REFRESHER_CHILD_GRAPH_URL"
	childKeysEnv  = "AEROGATE_REFRESHER_CHILD_TOKEN_KEYS"
	crashLease    = 3 * time.Second
)

func crashConfig() config.Config {
	cfg := config.Default()
	cfg.Graph.Timeout = time.Second
	cfg.Meta.AppID, cfg.Meta.AppSecret = appID, appSecret
	cfg.Refresher.Lease = crashLease
	cfg.Refresher.BatchSize = 10
	cfg.Refresher.Concurrency = 2
	return cfg
}

// TestRefresherChildProcess is the refresher process of TestKilledRefresherLeavesNothingStuck.
func TestRefresherChildProcess(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("helper process of TestKilledRefresherLeavesNothingStuck")
	}
	cfg := crashConfig()
	cfg.Database.URL = os.Getenv(childDBEnv)
	cfg.Graph.BaseURL = os.Getenv(childGraphEnv)
	cfg.Secrets.TokenKeys = []string{os.Getenv(childKeysEnv)}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := refresher.Run(ctx, cfg); err != nil {
		t.Fatalf("refresher.Run: %v", err)
	}
}

// TestKilledRefresherLeavesNothingStuck kills a refresher with SIGKILL in the middle of a
// pass. The accounts it held stay reserved until their leases lapse (no one renews them
// twice meanwhile), and right after that a pass of another refresher renews every one of
// them: none is stuck, and only the calls in flight at the kill were made twice.
func TestKilledRefresherLeavesNothingStuck(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: runs a child process")
	}
	e := newEnv(t)
	ctx := context.Background()
	const n = 60
	accts := make([]*account.Account, n)
	for i := range accts {
		accts[i] = e.addAccount(t, fmt.Sprintf("tenant-%d", i%5), fmt.Sprintf("6%04d", i), in(time.Duration(1+i%9)*day))
	}
	e.fake.SlowStep(fakemeta.StepRenew, -1, 150*time.Millisecond)

	cmd := exec.Command(os.Args[0], "-test.run=^TestRefresherChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1", childDBEnv+"="+e.dbURL, childGraphEnv+"="+e.fake.URL(),
		childKeysEnv+"="+e.keySpec)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// Kill it once it has renewed a few accounts and holds leases on others.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var renewed, held int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE last_refreshed_at IS NOT NULL),
				count(*) FILTER (WHERE refresh_lease_until > now() AND last_refreshed_at IS NULL)
			FROM whatsapp_accounts`).Scan(&renewed, &held); err != nil {
			t.Fatal(err)
		}
		if renewed >= 6 && held > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child renewed %d, holds %d after 30s:\n%s", renewed, held, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	rows, err := e.pool.Query(ctx, `SELECT id::text, refresh_lease_until FROM whatsapp_accounts
		WHERE refresh_lease_until > now() AND last_refreshed_at IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	var lapse time.Time
	for rows.Next() {
		var id string
		var until time.Time
		if err := rows.Scan(&id, &until); err != nil {
			t.Fatal(err)
		}
		held[id] = true
		if until.After(lapse) {
			lapse = until
		}
	}
	rows.Close()
	if len(held) == 0 {
		t.Fatal("the killed refresher held no lease")
	}
	t.Logf("killed with %d accounts leased until %s", len(held), lapse.Format(time.StampMilli))

	// Another refresher's pass right away renews the rest, and leaves the held ones alone
	// while their leases are live.
	e.fake.ClearFaults()
	c := crashConfig().Refresher
	childConcurrency := c.Concurrency
	c.Concurrency = 8
	r := e.refresher(t, c)
	sum, err := r.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(lapse) {
		for _, res := range sum.Results {
			if held[res.AccountID] {
				t.Errorf("account %s renewed while the dead refresher's lease on it was live", res.AccountID)
			}
		}
	} else {
		t.Logf("the first pass ended after the leases lapsed: not checking that it left them alone")
	}

	time.Sleep(time.Until(lapse) + 50*time.Millisecond)
	sum, err = r.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stuck int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_accounts
		WHERE refresh_lease_until IS NOT NULL OR last_refreshed_at IS NULL OR token_expires_at < now() + interval '10 days'`).Scan(&stuck); err != nil {
		t.Fatal(err)
	}
	if stuck != 0 {
		t.Errorf("%d accounts not renewed or still leased one pass after the leases lapsed", stuck)
	}
	// Every account renewed; a renewal the killed process got from Meta but never stored
	// is made again, so at most its calls in flight (refresher.concurrency) count twice.
	total := e.fake.TotalExchanges()
	if total < n || total > n+childConcurrency {
		t.Errorf("fake granted %d exchanges for %d accounts, want %d to %d", total, n, n, n+childConcurrency)
	}
	for _, a := range accts {
		if got := e.fake.Exchanges(a.AccessToken.Reveal()); got < 1 {
			t.Errorf("account %s never renewed", a.PhoneNumberID)
		}
	}
	e.noTokens(t, "child output", out.String())
}
