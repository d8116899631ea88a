package message_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/aerostic/aerogate/internal/cputime"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

func parkOf(c message.Claim, partition int, seq int64, urgent bool) message.Park {
	return message.Park{
		Key:      message.ParkedKey{Partition: partition, PhoneNumberID: c.PhoneNumberID, Seq: seq},
		Claim:    c,
		Urgent:   urgent,
		Envelope: []byte(`{"id":"` + c.ID + `","tenant_id":"` + c.TenantID + `","payload":{}}`),
	}
}

func TestParkedQueueOrderAndStatus(t *testing.T) {
	t.Parallel()
	url, pool := storetest.New(t)
	_ = url
	ctx := context.Background()
	repo := message.NewRepository(pool)

	// Number n1 of partition 2: a campaign to recipients a, b; urgent sends to c (first
	// for it: urgent) and to a (a has a campaign send waiting: stays behind it).
	mk := func(to string) message.Claim {
		c := newClaim("tenant-park")
		c.PhoneNumberID, c.Recipient = "n1", to
		return c
	}
	a1, b1, a2 := mk("a"), mk("b"), mk("a")
	expected := time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)
	p := parkOf(a1, 2, 10, false)
	p.ExpectedSendAt = &expected
	res, err := repo.ParkMany(ctx, []message.Park{p, parkOf(b1, 2, 11, false), parkOf(a2, 2, 12, false)})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.Inserted || r.Urgent {
			t.Errorf("park %d: %+v, want inserted, not urgent", i, r)
		}
	}
	m, err := repo.Get(ctx, a1.TenantID, a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != message.StatusQueued || m.ExpectedSendAt == nil || !m.ExpectedSendAt.Equal(expected) {
		t.Errorf("parked message: %s expected %v, want queued expected %v", m.Status, m.ExpectedSendAt, expected)
	}
	uc, ua := mk("c"), mk("a")
	res, err = repo.ParkMany(ctx, []message.Park{parkOf(uc, 2, 20, true), parkOf(ua, 2, 21, true)})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Urgent || res[1].Urgent {
		t.Errorf("urgent parks: %+v; want c urgent, a behind its waiting campaign send", res)
	}
	// The same send parked again (a redelivery) keeps its one row.
	if res, err := repo.ParkMany(ctx, []message.Park{parkOf(a1, 2, 10, false)}); err != nil || res[0].Inserted {
		t.Errorf("parking seq 10 again: %+v, %v; want not inserted", res, err)
	}
	// Another partition's rows are another queue.
	if _, err := repo.ParkMany(ctx, []message.Park{parkOf(mk("d"), 1, 5, false)}); err != nil {
		t.Fatal(err)
	}

	page, err := repo.ParkedPage(ctx, 2, "n1", nil, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range page {
		got = append(got, r.Seq)
	}
	if fmt.Sprint(got) != "[20 10 11 12 21]" {
		t.Errorf("page = %v, want the urgent row first, then the rest in order", got)
	}
	page, err = repo.ParkedPage(ctx, 2, "n1", []int64{20, 10}, 0, 2)
	if err != nil || len(page) != 2 || page[0].Seq != 11 || page[1].Seq != 12 {
		t.Errorf("page without the held rows, limit 2: %+v, %v", page, err)
	}
	page, err = repo.ParkedPage(ctx, 2, "n1", nil, 12, 10)
	if err != nil || len(page) != 3 || page[0].Seq != 20 || page[1].Seq != 12 || page[2].Seq != 21 {
		t.Errorf("page from seq 12: %+v, %v; want the urgent row and the ordinary ones from 12", page, err)
	}

	// Status only moves forward: a claimed message is not queued again.
	if _, err := repo.ClaimMany(ctx, testLease, []message.Claim{b1}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.ParkMany(ctx, []message.Park{parkOf(b1, 2, 11, false)}); err != nil {
		t.Fatal(err)
	}
	if m, _ := repo.Get(ctx, b1.TenantID, b1.ID); m.Status != message.StatusSending {
		t.Errorf("claimed then parked again: %s, want sending", m.Status)
	}

	nums, err := repo.ParkedNumbers(ctx, 2)
	if err != nil || len(nums) != 1 || nums[0].PhoneNumberID != "n1" || nums[0].Rows != 5 || nums[0].TenantID != "tenant-park" {
		t.Errorf("parked numbers of partition 2: %+v, %v", nums, err)
	}
	if err := repo.UnparkMany(ctx, []message.ParkedKey{{2, "n1", 10}, {2, "n1", 20}, {1, "n1", 10}}); err != nil {
		t.Fatal(err)
	}
	if nums, _ := repo.ParkedNumbers(ctx, 2); len(nums) != 1 || nums[0].Rows != 3 {
		t.Errorf("after deleting two rows: %+v", nums)
	}
}

// BenchmarkParkedWrites measures what parking adds to a send in Postgres: the parked row
// with the message's queued status (park), and deleting the row once it was sent
// (unpark), besides the claim and sent record every send pays; and the drain's page
// read, per row.
func BenchmarkParkedWrites(b *testing.B) {
	url, _ := storetest.New(b)
	ctx := context.Background()
	pool, err := store.Open(ctx, url, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	database := pool.Config().ConnConfig.Database
	repo := message.NewRepository(pool)
	// A standing backlog of 20,000 rows on another number, as a campaign leaves.
	var seq int64
	for range 100 {
		ps := make([]message.Park, 200)
		for i := range ps {
			c := newClaim("tenant-backlog")
			c.ID = uuid.Must(uuid.NewV7()).String()
			seq++
			ps[i] = parkOf(c, 0, seq, false)
		}
		if _, err := repo.ParkMany(ctx, ps); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{50, 200} {
		b.Run(fmt.Sprint("rows=", n), func(b *testing.B) {
			var park, page, claim, sent, unpark time.Duration
			postgresCPU := func() time.Duration {
				b.StopTimer()
				defer b.StartTimer()
				return cputime.Read(database).Postgres
			}
			for b.Loop() {
				b.StopTimer()
				parks := make([]message.Park, n)
				claims := make([]message.Claim, n)
				outcomes := make([]message.Sent, n)
				keys := make([]message.ParkedKey, n)
				for i := range parks {
					c := newClaim(fmt.Sprint("tenant-", i%7))
					c.ID = uuid.Must(uuid.NewV7()).String()
					c.PhoneNumberID = "pn-campaign"
					c.Recipient = fmt.Sprint("1555", seq)
					seq++
					parks[i] = parkOf(c, 1, seq, false)
					claims[i] = c
					keys[i] = parks[i].Key
					outcomes[i] = message.Sent{Claim: c, WAMID: "wamid.HBgLMTU1NTAwMDExMTEVAgARGBI" + c.ID, SentAt: time.Now()}
				}
				pg0 := postgresCPU()
				if _, err := repo.ParkMany(ctx, parks); err != nil {
					b.Fatal(err)
				}
				pg1 := postgresCPU()
				if _, err := repo.ParkedPage(ctx, 1, "pn-campaign", nil, 0, n); err != nil {
					b.Fatal(err)
				}
				pg2 := postgresCPU()
				if _, err := repo.ClaimMany(ctx, testLease, claims); err != nil {
					b.Fatal(err)
				}
				pg3 := postgresCPU()
				if err := repo.MarkSentMany(ctx, outcomes); err != nil {
					b.Fatal(err)
				}
				pg4 := postgresCPU()
				if err := repo.UnparkMany(ctx, keys); err != nil {
					b.Fatal(err)
				}
				pg5 := postgresCPU()
				park, page, claim = park+pg1-pg0, page+pg2-pg1, claim+pg3-pg2
				sent, unpark = sent+pg4-pg3, unpark+pg5-pg4
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N*n) }
			b.ReportMetric(per(park), "pg-µs/park")
			b.ReportMetric(per(page), "pg-µs/page-row")
			b.ReportMetric(per(unpark), "pg-µs/unpark")
			b.ReportMetric(per(park+page+unpark), "pg-µs/parked-extra")
			b.ReportMetric(per(claim+sent), "pg-µs/claim+sent")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/msg")
		})
	}
}
