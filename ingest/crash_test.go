package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/events"
	"github.com/aerostic/aerogate/internal/fakemeta"
)

// The crash test runs ingest in a child process (this test binary again, running only
// TestIngestChildProcess) so it can be killed with SIGKILL: no deferred cleanup, no final
// commit or publish, transactions and produce requests cut off mid-flight.
const (
	childEnv        = "AEROGATE_INGEST_CHILD"
	childBrokersEnv = "AEROGATE_INGEST_CHILD_BROKERS"
	childDBEnv      = "AEROGATE_INGEST_CHILD_DATABASE_URL"
	childKeysEnv    = "AEROGATE_INGEST_CHILD_TOKEN_KEYS"
	crashBodies     = 1500
	crashSent       = 300 // messages the sender sent, whose statuses arrive
)

// TestIngestChildProcess is the ingest process of TestIngestCrashLosesNothing. It does
// nothing unless started by it.
func TestIngestChildProcess(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("helper process of TestIngestCrashLosesNothing")
	}
	cfg := config.Default()
	cfg.Database.URL = os.Getenv(childDBEnv)
	cfg.Kafka.Brokers = strings.Split(os.Getenv(childBrokersEnv), ",")
	cfg.Kafka.Partitions = testPartitions
	cfg.Secrets.TokenKeys = []string{os.Getenv(childKeysEnv)}
	cfg.Admin.Addr = ""
	cfg.Ingest.GroupID = "crash-ingest"
	cfg.Ingest.BatchMax = 16
	cfg.Ingest.MaxInFlight = 64
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := ingest.Run(ctx, cfg, tuneForTests); err != nil {
		t.Fatalf("ingest.Run: %v", err)
	}
}

type child struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func startChild(t *testing.T, e *testEnv) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIngestChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1",
		childBrokersEnv+"="+strings.Join(e.broker.Addrs(), ","),
		childDBEnv+"="+e.dbURL,
		childKeysEnv+"="+e.keySpec)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
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

// TestIngestCrashLosesNothing: ingest killed with SIGKILL twice mid-stream and restarted
// loses nothing and stores nothing twice: every inbound message is stored once, every
// message ends read with each status recorded once, and every stored change has exactly
// one wa.events record id (a record may be repeated with the same id only if the kill
// fell between the broker's acknowledgement and the outbox delete).
func TestIngestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: slow")
	}
	e := newTestEnv(t)
	var accts []*account.Account
	for i := range 4 {
		accts = append(accts, e.addAccount(fmt.Sprintf("tenant-crash-%d", i%2), fmt.Sprintf("3000%d", i), fmt.Sprintf("4000000000%d", i), "", 80))
	}
	type sent struct {
		a     *account.Account
		id    string
		wamid string
	}
	var sents []sent
	for i := range crashSent {
		a := accts[i%len(accts)]
		w := fmt.Sprintf("wamid.crash.out.%04d", i)
		sents = append(sents, sent{a, e.sentMessage(a, "919800000000", w), w})
	}
	// Each body: two inbound messages and, for some, a status; every tenth body is a
	// repeat of an earlier one (Meta's at-least-once).
	var bodies [][]byte
	inbound := 0
	statusOf := []string{"delivered", "read"}
	for i := range crashBodies {
		if i%10 == 9 {
			bodies = append(bodies, bodies[rand.IntN(len(bodies))])
			continue
		}
		a := accts[i%len(accts)]
		c := fakemeta.WebhookChange{PhoneNumberID: a.PhoneNumberID, Messages: []fakemeta.WebhookMessage{
			{ID: fmt.Sprintf("wamid.crash.in.%05d.a", i), From: "919811111111", Text: "a", Timestamp: t0},
			{ID: fmt.Sprintf("wamid.crash.in.%05d.b", i), From: "919811111111", Text: "b", Timestamp: t0},
		}}
		inbound += 2
		if k := i / 2; i%2 == 0 && k < 2*crashSent {
			// A second entry: a status of a sent message, in its own WABA's entry.
			s := sents[k%crashSent]
			c2 := fakemeta.WebhookChange{PhoneNumberID: s.a.PhoneNumberID,
				Statuses: []fakemeta.WebhookStatus{status(s.wamid, statusOf[k/crashSent], t0.Add(time.Duration(k)*time.Second))}}
			bodies = append(bodies, fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: a.WABAID, Changes: []fakemeta.WebhookChange{c}},
				fakemeta.WebhookEntry{WABAID: s.a.WABAID, Changes: []fakemeta.WebhookChange{c2}}))
			continue
		}
		bodies = append(bodies, fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: a.WABAID, Changes: []fakemeta.WebhookChange{c}}))
	}

	var produced sync.WaitGroup
	produced.Add(1)
	go func() {
		defer produced.Done()
		for i := 0; i < len(bodies); i += 50 {
			e.publish(bodies[i:min(i+50, len(bodies))]...)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	stored := func() int { return e.count(`SELECT count(*) FROM inbound_messages`) }
	c := startChild(t, e)
	for kill := range 2 {
		threshold := (kill*2 + 1) * inbound / 6
		threshold += rand.IntN(inbound / 6)
		eventually(t, 60*time.Second, fmt.Sprintf("%d stored before kill %d", threshold, kill+1), atLeast(threshold, "inbound", stored))
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		at := stored()
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.cmd.Wait()
		t.Logf("kill %d: SIGKILL with %d inbound messages stored", kill+1, at)
		c = startChild(t, e)
	}
	produced.Wait()
	eventually(t, 90*time.Second, "every inbound message stored", atLeast(inbound, "inbound", stored))
	eventually(t, 30*time.Second, "every message read", func() error {
		if n := e.count(`SELECT count(*) FROM messages WHERE status = 'read'`); n != crashSent {
			return fmt.Errorf("%d of %d read", n, crashSent)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the outbox drained", func() error {
		if n := e.count(`SELECT count(*) FROM event_outbox`); n != 0 {
			return fmt.Errorf("%d records in the outbox", n)
		}
		return nil
	})
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ingest process after SIGTERM: %v\n%s", err, c.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("ingest process did not stop within 30s of SIGTERM")
	}

	if n := stored(); n != inbound {
		t.Errorf("%d inbound rows, want %d", n, inbound)
	}
	if n := e.count(`SELECT count(*) FROM message_statuses`); n != 2*crashSent {
		t.Errorf("%d recorded statuses, want %d (delivered and read of each)", n, 2*crashSent)
	}
	// One record id per stored change; a repeated record keeps its id.
	idOf := map[string]string{}
	seen := map[string]int{}
	for _, ev := range e.events() {
		var d struct {
			WAMID  string `json:"wamid"`
			Status string `json:"status"`
		}
		_ = json.Unmarshal(ev.Data, &d)
		change := ev.Type + "/" + d.WAMID + "/" + d.Status
		if prev, ok := idOf[change]; ok && prev != ev.ID {
			t.Errorf("%s published as two records %s and %s", change, prev, ev.ID)
		}
		idOf[change] = ev.ID
		seen[ev.ID]++
	}
	repeats := 0
	for _, n := range seen {
		repeats += n - 1
	}
	want := inbound + 2*crashSent
	t.Logf("%d bodies (%d inbound, %d statuses), %d event records, %d distinct, %d repeated", len(bodies), inbound, 2*crashSent,
		len(seen)+repeats, len(seen), repeats)
	if len(seen) != want {
		t.Errorf("%d distinct event records, want %d", len(seen), want)
	}
	byType := map[string]int{}
	for change := range idOf {
		byType[strings.SplitN(change, "/", 2)[0]]++
	}
	if byType[events.TypeMessageReceived] != inbound || byType[events.TypeMessageStatus] != 2*crashSent {
		t.Errorf("events by type %v", byType)
	}
	// A repeat needs a kill between an acknowledged publish and its delete: at most one
	// relay batch (500) per kill.
	if repeats > 2*500 {
		t.Errorf("%d repeated records, more than two relay batches", repeats)
	}
}
