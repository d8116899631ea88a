package ingest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/events"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/message"
)

var t0 = time.Unix(1_800_000_000, 0).UTC()

func status(wamid, st string, at time.Time) fakemeta.WebhookStatus {
	s := fakemeta.WebhookStatus{ID: wamid, Status: st, RecipientID: "919876543210", Timestamp: at}
	if st == "failed" {
		s.ErrorCode, s.ErrorTitle = 131026, "Message undeliverable"
	}
	return s
}

func statusBody(waba, phone string, sts ...fakemeta.WebhookStatus) []byte {
	return fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: waba, Changes: []fakemeta.WebhookChange{{PhoneNumberID: phone, Statuses: sts}}})
}

// TestBatchStoredWholeAndOnce: every entry, change and item of a batch is stored, and
// the same webhook delivered three times is stored once and published to wa.events once.
func TestBatchStoredWholeAndOnce(t *testing.T) {
	e := newTestEnv(t)
	a := e.addAccount("tenant-a", "102290129340398", "106540352242922", "15550001111", 80)
	b := e.addAccount("tenant-b", "204400000000001", "206540352242922", "15550002222", 80)
	ma := e.sentMessage(a, "919876543210", "wamid.out.a1")
	mb := e.sentMessage(b, "919812345678", "wamid.out.b1")

	body := fakemeta.WebhookBody(
		fakemeta.WebhookEntry{WABAID: a.WABAID, Changes: []fakemeta.WebhookChange{
			{PhoneNumberID: a.PhoneNumberID, Messages: []fakemeta.WebhookMessage{
				{ID: "wamid.in.a1", From: "919876543210", Name: "Asha", Text: "hello", Timestamp: t0},
				{ID: "wamid.in.a2", From: "919876543210", Text: "are you there?", Timestamp: t0.Add(time.Second)},
			}},
			{PhoneNumberID: a.PhoneNumberID, Statuses: []fakemeta.WebhookStatus{status("wamid.out.a1", "delivered", t0.Add(2*time.Second))}},
		}},
		fakemeta.WebhookEntry{WABAID: b.WABAID, Changes: []fakemeta.WebhookChange{
			{PhoneNumberID: b.PhoneNumberID,
				Messages: []fakemeta.WebhookMessage{{ID: "wamid.in.b1", From: "919812345678", Text: "hi b", Timestamp: t0}},
				Statuses: []fakemeta.WebhookStatus{status("wamid.out.b1", "read", t0.Add(3*time.Second))}},
			{Field: "account_update", Value: []byte(`{"event":"VERIFIED_ACCOUNT"}`)},
		}},
	)
	e.publish(body, body, body)
	in := e.start()

	eventually(t, 20*time.Second, "three bodies settled", atLeast(3, "bodies", func() int { return int(in.Stats().Bodies) }))
	eventually(t, 10*time.Second, "events published", atLeast(5, "events", func() int { return int(in.Stats().Published) }))
	if n := e.count(`SELECT count(*) FROM inbound_messages`); n != 3 {
		t.Errorf("%d inbound rows, want 3", n)
	}
	if n := e.count(`SELECT count(*) FROM inbound_messages WHERE tenant_id = 'tenant-a'`); n != 2 {
		t.Errorf("tenant-a has %d inbound rows, want 2", n)
	}
	if m := e.message("tenant-a", ma); m.Status != message.StatusDelivered || m.DeliveredAt == nil || !m.DeliveredAt.Equal(t0.Add(2*time.Second)) {
		t.Errorf("message a: %s delivered at %v", m.Status, m.DeliveredAt)
	}
	if m := e.message("tenant-b", mb); m.Status != message.StatusRead || m.ReadAt == nil || !m.ReadAt.Equal(t0.Add(3*time.Second)) {
		t.Errorf("message b: %s read at %v", m.Status, m.ReadAt)
	}
	st := in.Stats()
	if st.Stored != 5 || st.Duplicates != 10 || st.Ignored != 3 {
		t.Errorf("stats %+v, want 5 stored, 10 duplicates, 3 ignored", st)
	}

	// Nothing more arrives later: each stored change was published exactly once.
	time.Sleep(500 * time.Millisecond)
	evs := e.events()
	byType := map[string]int{}
	ids := map[string]bool{}
	for _, ev := range evs {
		byType[ev.Type]++
		if ids[ev.ID] {
			t.Errorf("event %s published twice", ev.ID)
		}
		ids[ev.ID] = true
	}
	if len(evs) != 5 || byType[events.TypeMessageReceived] != 3 || byType[events.TypeMessageStatus] != 2 {
		t.Errorf("wa.events holds %d records %v, want 3 message.received and 2 message.status", len(evs), byType)
	}
	if n := e.count(`SELECT count(*) FROM event_outbox`); n != 0 {
		t.Errorf("%d events left in the outbox", n)
	}
}

// TestStatusesOutOfOrderEndAtTheFurthest: statuses move a message forward only, keep
// each one's time, and read and failed are final, whatever order they arrive in.
func TestStatusesOutOfOrderEndAtTheFurthest(t *testing.T) {
	e := newTestEnv(t)
	a := e.addAccount("tenant-a", "102290129340398", "106540352242922", "", 80)
	m1 := e.sentMessage(a, "919876543210", "wamid.o1")
	m2 := e.sentMessage(a, "919876543211", "wamid.o2")
	m3 := e.sentMessage(a, "919876543212", "wamid.o3")
	send := func(sts ...fakemeta.WebhookStatus) { e.publish(statusBody(a.WABAID, a.PhoneNumberID, sts...)) }
	// m1: read, then sent, then delivered, each in its own webhook.
	send(status("wamid.o1", "read", t0.Add(30*time.Second)))
	send(status("wamid.o1", "sent", t0.Add(10*time.Second)))
	send(status("wamid.o1", "delivered", t0.Add(20*time.Second)))
	// m2: failed, then a late delivered.
	send(status("wamid.o2", "failed", t0.Add(5*time.Second)), status("wamid.o2", "delivered", t0.Add(4*time.Second)))
	// m3: read, then failed: read stays.
	send(status("wamid.o3", "read", t0.Add(7*time.Second)))
	send(status("wamid.o3", "failed", t0.Add(8*time.Second)))
	in := e.start()
	eventually(t, 20*time.Second, "bodies settled", atLeast(6, "bodies", func() int { return int(in.Stats().Bodies) }))

	if m := e.message("tenant-a", m1); m.Status != message.StatusRead || !m.ReadAt.Equal(t0.Add(30*time.Second)) ||
		m.DeliveredAt == nil || !m.DeliveredAt.Equal(t0.Add(20*time.Second)) {
		t.Errorf("m1 = %s delivered %v read %v; want read, with both times", m.Status, m.DeliveredAt, m.ReadAt)
	}
	if m := e.message("tenant-a", m2); m.Status != message.StatusFailed || m.ErrorCode != 131026 || m.ErrorTitle != "Message undeliverable" {
		t.Errorf("m2 = %s %d %q; want failed 131026", m.Status, m.ErrorCode, m.ErrorTitle)
	}
	if m := e.message("tenant-a", m3); m.Status != message.StatusRead || m.ErrorCode != 0 {
		t.Errorf("m3 = %s (error %d); want read", m.Status, m.ErrorCode)
	}
	if n := e.count(`SELECT count(*) FROM message_statuses WHERE message_id = $1`, m1); n != 3 {
		t.Errorf("m1 has %d recorded statuses, want sent, delivered and read", n)
	}
}

// TestStatusBeforeWamidAppliedLater: a status that outruns the sender's write of the
// wamid is kept and applied when the sender records it, then published.
func TestStatusBeforeWamidAppliedLater(t *testing.T) {
	e := newTestEnv(t)
	a := e.addAccount("tenant-a", "102290129340398", "106540352242922", "", 80)
	id := "0192f0c4-6d1e-7b3a-9c5e-1f2a3b4c5d6e"
	c := message.Claim{ID: id, TenantID: a.TenantID, AccountID: a.ID, PhoneNumberID: a.PhoneNumberID, Recipient: "919876543210", AcceptedAt: time.Now()}
	if _, err := e.messages.ClaimMany(context.Background(), message.Lease{Holder: message.NewHolder()}, []message.Claim{c}); err != nil {
		t.Fatal(err)
	}
	e.publish(statusBody(a.WABAID, a.PhoneNumberID, status("wamid.early", "delivered", t0.Add(time.Second)), status("wamid.early", "read", t0.Add(2*time.Second))))
	in := e.start()
	eventually(t, 20*time.Second, "statuses kept pending", atLeast(2, "pending", func() int { return int(in.Stats().Pending) }))
	if m := e.message("tenant-a", id); m.Status != message.StatusSending {
		t.Fatalf("message is %s before its wamid is recorded", m.Status)
	}

	// The sender records the wamid: the statuses apply in the same statement.
	if err := e.messages.MarkSentMany(context.Background(), []message.Sent{{Claim: c, WAMID: "wamid.early", SentAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if m := e.message("tenant-a", id); m.Status != message.StatusRead || m.DeliveredAt == nil || m.ReadAt == nil {
		t.Errorf("after MarkSent: %s delivered %v read %v; want read with both times", m.Status, m.DeliveredAt, m.ReadAt)
	}
	if n := e.count(`SELECT count(*) FROM pending_statuses`); n != 0 {
		t.Errorf("%d statuses still pending", n)
	}
	eventually(t, 10*time.Second, "status events published", func() error {
		n := 0
		for _, ev := range e.events() {
			if ev.Type == events.TypeMessageStatus {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d status events", n)
		}
		return nil
	})
}

// TestStatusCrossingTheSenderApplied: a status kept pending while the sender's write of
// its wamid was in flight (so the trigger did not see it) is applied by the sweep.
func TestStatusCrossingTheSenderApplied(t *testing.T) {
	e := newTestEnv(t)
	a := e.addAccount("tenant-a", "102290129340398", "106540352242922", "", 80)
	id := e.sentMessage(a, "919876543210", "wamid.crossed")
	// As if ingest had found no wamid a moment before the sender's commit.
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO pending_statuses (wamid, status, phone_number_id, at)
		VALUES ('wamid.crossed', 'delivered', $1, $2)`, a.PhoneNumberID, t0); err != nil {
		t.Fatal(err)
	}
	e.start()
	eventually(t, 10*time.Second, "the sweep applied it", func() error {
		if m := e.message("tenant-a", id); m.Status != message.StatusDelivered {
			return fmt.Errorf("status %s", m.Status)
		}
		return nil
	})
}

// TestUnknownNumberDeadLetteredRestStored: an item of an unknown number, an item
// Postgres refuses and a body that does not parse go to wa.webhooks.dlq with the reason;
// the rest of their batch and the partition are stored.
func TestUnknownNumberDeadLetteredRestStored(t *testing.T) {
	e := newTestEnv(t)
	a := e.addAccount("tenant-a", "102290129340398", "106540352242922", "", 80)
	body := fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: a.WABAID, Changes: []fakemeta.WebhookChange{
		{PhoneNumberID: a.PhoneNumberID, Messages: []fakemeta.WebhookMessage{{ID: "wamid.in.1", From: "919876543210", Text: "one", Timestamp: t0}}},
		{PhoneNumberID: "999999999999999", Messages: []fakemeta.WebhookMessage{{ID: "wamid.in.9", From: "919876543210", Text: "lost?", Timestamp: t0}},
			Statuses: []fakemeta.WebhookStatus{status("wamid.x", "sent", t0)}},
		{PhoneNumberID: a.PhoneNumberID, Messages: []fakemeta.WebhookMessage{{ID: "wamid.in.nul", From: "919876543210", Text: "nul \x00 byte", Timestamp: t0}}},
	}})
	later := fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: a.WABAID, Changes: []fakemeta.WebhookChange{
		{PhoneNumberID: a.PhoneNumberID, Messages: []fakemeta.WebhookMessage{{ID: "wamid.in.2", From: "919876543210", Text: "two", Timestamp: t0}}},
	}})
	e.publish(body, []byte("not json at all"), later)
	in := e.start()
	eventually(t, 20*time.Second, "bodies settled", atLeast(3, "bodies", func() int { return int(in.Stats().Bodies) }))

	if n := e.count(`SELECT count(*) FROM inbound_messages WHERE wamid IN ('wamid.in.1', 'wamid.in.2')`); n != 2 {
		t.Errorf("%d of the 2 good messages stored", n)
	}
	if n := e.count(`SELECT count(*) FROM inbound_messages`); n != 2 {
		t.Errorf("%d inbound rows, want 2", n)
	}
	reasons := map[string]int{}
	for _, d := range e.deadLetters() {
		reasons[d.Reason]++
		if d.Reason == ingest.ReasonUnknownNumber && d.PhoneNumberID != "999999999999999" {
			t.Errorf("unknown-number dead letter names %q", d.PhoneNumberID)
		}
		if d.Reason == ingest.ReasonUnparsable && string(d.Body) != "not json at all" {
			t.Errorf("unparsable dead letter holds %q", d.Body)
		}
	}
	want := map[string]int{ingest.ReasonUnknownNumber: 2, ingest.ReasonRejected: 1, ingest.ReasonUnparsable: 1}
	for r, n := range want {
		if reasons[r] != n {
			t.Errorf("dead letters %v, want %v", reasons, want)
			break
		}
	}
}

// TestThroughputUpgradeRaisesTheAccount: phone_number_quality_update with a throughput
// upgrade raises throughput_mps once, and every resolver hears of it.
func TestThroughputUpgradeRaisesTheAccount(t *testing.T) {
	e := newTestEnv(t)
	a := e.addAccount("tenant-a", "102290129340398", "106540352242922", "+1 555-000-1111", 80)
	e.addAccount("tenant-a", "102290129340398", "106540352242923", "+1 555-000-2222", 80)
	if _, err := e.resolver.Resolve(context.Background(), "tenant-a", a.PhoneNumberID); err != nil {
		t.Fatal(err) // cached at 80
	}
	quality := func(waba, display string) []byte {
		return fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: waba, Changes: []fakemeta.WebhookChange{{
			Field: "phone_number_quality_update",
			Value: []byte(`{"display_phone_number":"` + display + `","event":"THROUGHPUT_UPGRADE","current_limit":"TIER_UNLIMITED"}`)}}})
	}
	up := quality(a.WABAID, "15550001111")
	e.publish(up, up, quality("777", "15550009999"))
	in := e.start()
	eventually(t, 20*time.Second, "bodies settled", atLeast(3, "bodies", func() int { return int(in.Stats().Bodies) }))
	eventually(t, 10*time.Second, "the resolver sees 1000 mps", func() error {
		got, err := e.resolver.Resolve(context.Background(), "tenant-a", a.PhoneNumberID)
		if err != nil {
			return err
		}
		if got.ThroughputMPS != 1000 {
			return fmt.Errorf("throughput %d", got.ThroughputMPS)
		}
		return nil
	})
	other, _ := e.accounts.Get(context.Background(), "tenant-a", "106540352242923")
	if other.ThroughputMPS != 80 {
		t.Errorf("the WABA's other number went to %d mps", other.ThroughputMPS)
	}
	eventually(t, 10*time.Second, "one account event", func() error {
		n := 0
		for _, ev := range e.events() {
			if ev.Type == events.TypeAccountUpdate {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d account.update events", n)
		}
		return nil
	})
	if d := e.deadLetters(); len(d) != 1 || d[0].Reason != ingest.ReasonUnknownNumber || d[0].WABAID != "777" {
		t.Errorf("dead letters %+v, want the unknown WABA's update", d)
	}
}
