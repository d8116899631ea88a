package sender_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/message"
)

// TestOneIDNeverRunsTwiceAcrossLanes: two envelopes with one message id and different
// recipients (a key reused with another body, or a copy with another "to") fall into
// different recipient lanes, which run in parallel; the sender still calls Graph once.
func TestOneIDNeverRunsTwiceAcrossLanes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	// Slow enough that the two copies would overlap if both ran.
	e.fake.SetLatency(300 * time.Millisecond)
	a := e.addAccount("tenant-one-id", "9601", "token-one-id", 1000)
	first := newEnvelope(a, "15558880001", "one id, first recipient")
	second := newEnvelope(a, "15558880002", "one id, second recipient")
	second.ID = first.ID
	s := e.startSender(testSenderConfig(), e.graphConfig())
	e.produce(first, second)
	e.waitStatus(10*time.Second, message.StatusSent, first)
	eventually(t, 10*time.Second, "both copies handled", func() error {
		if st := s.Stats(); st.Sent+st.Skipped != 2 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if n := len(e.fake.Received()); n != 1 {
		t.Fatalf("fake received %d sends of one message id, want 1", n)
	}
	if st := s.Stats(); st.GraphCalls != 1 || st.Sent != 1 || st.Skipped != 1 {
		t.Fatalf("stats %+v, want one Graph call, one sent, one skipped", st)
	}
}

// TestClaimHeldByAnotherSender: a message another sender holds (a live claim) is neither
// sent nor skipped while the claim lives: when its holder records the outcome, the
// message is skipped; when the holder died and its lease lapses, it is sent, once.
func TestClaimHeldByAnotherSender(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	a := e.addAccount("tenant-held", "9602", "token-held", 1000)
	finishes := newEnvelope(a, "15558880003", "holder finishes")
	crashed := newEnvelope(a, "15558880004", "holder crashed")
	other := message.NewHolder()
	hold := func(id string, d time.Duration) {
		t.Helper()
		if _, err := e.pool.Exec(context.Background(), `
			INSERT INTO messages (id, tenant_id, account_id, phone_number_id, recipient, status, attempts,
			                      claim_holder, claim_expires_at)
			VALUES ($1, $2, $3, $4, $5, 'sending', 1, $6::uuid, now() + $7::bigint * interval '1 millisecond')`,
			id, a.TenantID, a.ID, a.PhoneNumberID, "15558880000", other, d.Milliseconds()); err != nil {
			t.Fatal(err)
		}
	}
	hold(finishes.ID, time.Minute)
	hold(crashed.ID, 2*time.Second)
	s := e.startSender(testSenderConfig(), e.graphConfig())
	start := time.Now()
	e.produce(finishes, crashed)

	eventually(t, 5*time.Second, "both claims seen held", func() error {
		if st := s.Stats(); st.Held < 2 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if n := e.fake.Count(); n != 0 {
		t.Fatalf("%d sends while another sender holds the claims", n)
	}
	// The other sender records its outcome.
	if _, err := e.pool.Exec(context.Background(), `UPDATE messages SET status = 'sent', wamid = 'wamid.other' WHERE id = $1`, finishes.ID); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(10*time.Second, message.StatusSent, crashed)
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("the crashed holder's message was sent %v after it was produced, before its lease lapsed (2s)", took)
	}
	eventually(t, 10*time.Second, "the finished one skipped", func() error {
		if st := s.Stats(); st.Skipped != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	got := acceptedByBody(e.fake)
	if len(got["holder crashed"]) != 1 || len(got["holder finishes"]) != 0 || e.fake.Count() != 1 {
		t.Fatalf("fake received %v, want only the crashed holder's message, once", got)
	}
	if m := e.message(finishes.TenantID, finishes.ID); m.WAMID != "wamid.other" {
		t.Fatalf("the held message changed: %+v", m)
	}
}
