package sender_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/sender"
)

// The crash test runs the sender in a child process (this test binary again, running
// only TestSenderChildProcess) so it can be killed with SIGKILL: no deferred cleanup, no
// final commit, Graph calls cut off mid-flight, outcomes unrecorded.
const (
	childEnv          = "AEROGATE_SENDER_CHILD"
	childBrokersEnv   = "AEROGATE_SENDER_CHILD_BROKERS"
	childDBEnv        = "AEROGATE_SENDER_CHILD_DATABASE_URL"
	childGraphEnv     = "AEROGATE_SENDER_CHILD_GRAPH_URL"
	childKeysEnv      = "AEROGATE_SENDER_CHILD_TOKEN_KEYS"
	childInFlightEnv  = "AEROGATE_SENDER_CHILD_MAX_IN_FLIGHT"
	crashMaxInFlight  = 64
	crashMessages     = 4000
	crashNumbers      = 8
	crashNumberMPS    = 250
	crashRecipientsPN = 40
	// A campaign on one more number, paced far below what arrives: it parks in the
	// number's queue in Postgres and drains from there while the sender is killed.
	crashCampaign    = 1200
	crashCampaignMPS = 120
)

// TestSenderChildProcess is the sender process of TestSenderCrashLosesNothing. It does
// nothing unless started by it.
func TestSenderChildProcess(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("helper process of TestSenderCrashLosesNothing")
	}
	cfg := config.Default()
	cfg.Database.URL = os.Getenv(childDBEnv)
	cfg.Kafka.Brokers = strings.Split(os.Getenv(childBrokersEnv), ",")
	cfg.Kafka.Partitions = testPartitions
	cfg.Graph.BaseURL = os.Getenv(childGraphEnv)
	cfg.Graph.Timeout = 5 * time.Second
	cfg.Secrets.TokenKeys = []string{os.Getenv(childKeysEnv)}
	cfg.Sender = testSenderConfig()
	cfg.Sender.GroupID = "crash-sender"
	cfg.Sender.MaxInFlight, _ = strconv.Atoi(os.Getenv(childInFlightEnv))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := sender.Run(ctx, cfg, tuneForTests); err != nil {
		t.Fatalf("sender.Run: %v", err)
	}
}

type child struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func startChild(t *testing.T, e *testEnv) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSenderChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		childBrokersEnv+"="+strings.Join(e.broker.Addrs(), ","),
		childDBEnv+"="+e.dbURL,
		childGraphEnv+"="+e.fake.URL(),
		childKeysEnv+"="+e.keySpec,
		childInFlightEnv+"="+strconv.Itoa(crashMaxInFlight),
	)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sender process: %v", err)
	}
	c := &child{cmd: cmd, out: out}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})
	return c
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("killing sender process: %v", err)
	}
	_ = c.cmd.Wait()
}

func TestSenderCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: slow")
	}
	e := newTestEnv(t)
	e.fake.SetLatency(3 * time.Millisecond)
	var accts []*account.Account
	for i := range crashNumbers {
		number := strconv.Itoa(70000 + i)
		accts = append(accts, e.addAccount(fmt.Sprintf("tenant-crash-%d", i%4), number, "token-"+number, crashNumberMPS))
	}
	campaign := e.addAccount("tenant-crash-campaign", "79999", "token-79999", crashCampaignMPS)
	envs := make([]*queue.Envelope, 0, crashMessages+crashCampaign)
	for i := range crashMessages {
		a := accts[i%len(accts)]
		to := fmt.Sprintf("1558%03d%04d", i%len(accts), (i/len(accts))%crashRecipientsPN)
		envs = append(envs, newEnvelope(a, to, fmt.Sprintf("crash-%05d", i)))
		if i%(crashMessages/crashCampaign) == 0 && i/(crashMessages/crashCampaign) < crashCampaign {
			// Campaign sends arrive among the others, each to its own recipient.
			c := len(envs)
			envs = append(envs, newEnvelope(campaign, fmt.Sprintf("1559%07d", c), fmt.Sprintf("campaign-%05d", c)))
		}
	}
	campaignReceived := func() int {
		n := 0
		for _, r := range e.fake.Received() {
			if r.WAMID != "" && r.PhoneNumberID == "79999" {
				n++
			}
		}
		return n
	}

	// The gateway's side: sends keep arriving while the sender is killed and restarted.
	var produced sync.WaitGroup
	produced.Add(1)
	go func() {
		defer produced.Done()
		for i := 0; i < len(envs); i += 200 {
			e.produce(envs[i:min(i+200, len(envs))]...)
			time.Sleep(50 * time.Millisecond)
		}
	}()

	c := startChild(t, e)
	var kills []time.Time
	killAt := func(what string, ready func() error) {
		eventually(t, 30*time.Second, fmt.Sprintf("%s before kill %d", what, len(kills)+1), ready)
		time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond)
		at, parked := e.fake.Count(), e.parkedRows("79999")
		kills = append(kills, time.Now())
		c.kill(t)
		t.Logf("kill %d at %s: SIGKILL after %d accepted sends, %d campaign sends parked", len(kills),
			kills[len(kills)-1].Format(time.StampMicro), at, parked)
		c = startChild(t, e)
	}
	// While the campaign parks (the gateway's side is still producing it)...
	killAt("campaign sends parking", func() error {
		if n := e.parkedRows("79999"); n < 100 {
			return fmt.Errorf("%d parked", n)
		}
		return nil
	})
	// ...about halfway through the other numbers' sends...
	threshold := crashMessages/2 + rand.IntN(crashMessages/6)
	killAt(fmt.Sprintf("%d sends", threshold), func() error {
		if n := e.fake.Count(); n < threshold {
			return fmt.Errorf("%d sent", n)
		}
		return nil
	})
	// ...and while the campaign drains.
	drained := crashCampaign/2 + rand.IntN(crashCampaign/4)
	killAt(fmt.Sprintf("%d campaign sends", drained), func() error {
		if n := campaignReceived(); n < drained {
			return fmt.Errorf("%d campaign sends", n)
		}
		return nil
	})
	produced.Wait()
	ids := make([]string, len(envs))
	for i, env := range envs {
		ids[i] = env.ID
	}
	eventually(t, 60*time.Second, "every message sent", func() error {
		st := e.statuses(ids)
		n := 0
		for _, id := range ids {
			if st[id] == message.StatusSent {
				n++
			}
		}
		if n != len(ids) {
			return fmt.Errorf("%d of %d sent", n, len(ids))
		}
		return nil
	})
	// A clean stop: SIGTERM, the child finishes and exits 0.
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("sender process after SIGTERM: %v\n%s", err, c.out.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("sender process did not stop within 20s of SIGTERM")
	}

	got := acceptedByBody(e.fake)
	duplicates := 0
	for _, env := range envs {
		body := bodyText(env.Payload)
		n := len(got[body])
		if n == 0 {
			t.Errorf("message %s (%s) is sent in Postgres but never reached Graph", env.ID, body)
			continue
		}
		duplicates += n - 1
		for _, r := range got[body] {
			if r.Token != "token-"+env.PhoneNumberID {
				t.Errorf("%s was sent with another number's token", body)
			}
		}
		// A repeat is only ever caused by a kill: the earlier receipt is shortly before a
		// kill (its call was in flight, or its outcome not yet recorded) and the later one
		// after it. The fake stamps a send when it reads it, so a request the killed
		// process had already written may be stamped a little after the kill.
		for i := 1; i < n; i++ {
			prev, next := got[body][i-1].At, got[body][i].At
			if !slices.ContainsFunc(kills, func(k time.Time) bool {
				return prev.Before(k.Add(time.Second)) && k.Sub(prev) < 5*time.Second && next.After(k)
			}) {
				t.Errorf("%s sent at %v and again at %v with no kill in between", body, prev.Format(time.StampMicro), next.Format(time.StampMicro))
			}
		}
	}
	// Each kill can repeat at most the sends in flight at that moment: at most
	// MaxInFlight per partition the process owned, and the campaign's drain window.
	bound := len(kills) * (testPartitions*crashMaxInFlight + 2*crashCampaignMPS)
	t.Logf("%d messages (%d of a campaign), %d Graph receipts, %d duplicates (bound %d)", len(envs), crashCampaign,
		e.fake.Count(), duplicates, bound)
	if n := e.parkedRows(""); n != 0 {
		t.Errorf("%d parked rows left after every message was sent", n)
	}
	if duplicates > bound {
		t.Errorf("%d duplicate sends, more than the in-flight window %d", duplicates, bound)
	}
}
