package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/sender"
)

// fairReport is a campaign on one number and the one-off sends of other tenants whose
// sends share the campaign's partition of wa.sends, end to end through the gateway, the
// sender and the fake Graph API.
type fairReport struct {
	Partitions   int           `json:"partitions"`
	GraphLatency time.Duration `json:"graph_latency_ns"`

	Campaign         int     `json:"campaign"`
	CampaignMPS      int     `json:"campaign_mps"`
	CampaignRate     float64 `json:"campaign_submit_rate"` // requests/s the campaign was sent to the gateway at
	CampaignAccepted int64   `json:"campaign_accepted"`
	CampaignSent     int     `json:"campaign_sent"`
	CampaignDups     int     `json:"campaign_duplicates"`
	// The campaign number's pace at Graph over its steady part (the first and last two
	// seconds left out): mean, and the least and most sends in a one-second window.
	CampaignMeanRate float64       `json:"campaign_mean_rate"`
	CampaignMinWin   int           `json:"campaign_min_1s_window"`
	CampaignMaxWin   int           `json:"campaign_max_1s_window"`
	CampaignSpan     time.Duration `json:"campaign_span_ns"`

	Others         int           `json:"other_tenants"`
	OtherInterval  time.Duration `json:"other_interval_ns"`
	OthersAccepted int64         `json:"others_accepted"`
	OthersSent     int           `json:"others_sent"`
	OthersDups     int           `json:"others_duplicates"`
	OthersP50      time.Duration `json:"others_accept_to_sent_p50_ns"`
	OthersP99      time.Duration `json:"others_accept_to_sent_p99_ns"`
	OthersMax      time.Duration `json:"others_accept_to_sent_max_ns"`

	// CPU per message delivered (campaign and others), from the first accept to the last
	// receipt: this process (every role and the load generator) and Postgres.
	CPUSelfUS     float64 `json:"cpu_self_us_per_msg"`
	CPUPostgresUS float64 `json:"cpu_postgres_us_per_msg"`
}

// runFair: tenant-0000 sends a campaign of -campaign messages (to as many recipients)
// at -campaign-rate requests/s to its number limited to -campaign-mps; meanwhile
// -others tenants whose sends land in the same wa.sends partition send one message
// each every -other-interval (each at its own phase), until the campaign is delivered.
func runFair(ctx context.Context, o options) (*fairReport, error) {
	e, err := newEnv(ctx, o.partitions)
	if err != nil {
		return nil, err
	}
	defer e.close()
	// Enough tenants that -others of them share the campaign tenant's partition.
	accts, err := e.seed(ctx, (o.others+1)*o.partitions*2, 1, o.campaignMPS)
	if err != nil {
		return nil, err
	}
	parts := make([]int, o.partitions)
	for i := range parts {
		parts[i] = i
	}
	partitionOf := func(tenant string) int {
		return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(tenant)}, parts...)
	}
	campaign := accts[0]
	var others []tenantAccount
	for _, a := range accts[1:] {
		if len(others) < o.others && partitionOf(a.tenant) == partitionOf(campaign.tenant) {
			others = append(others, a)
		}
	}
	if len(others) < o.others {
		return nil, fmt.Errorf("only %d tenants share partition %d", len(others), partitionOf(campaign.tenant))
	}
	logf("campaign of %s (number %s) and %d other tenants in partition %d of %d", campaign.tenant, campaign.phoneNumberID,
		len(others), partitionOf(campaign.tenant), o.partitions)

	e.fake.SetLatency(o.latency)
	e.start("gateway", gateway.Run)
	e.start("sender", func(ctx context.Context, cfg config.Config) error { return sender.Run(ctx, cfg) })
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.waitReady(rctx); err != nil {
		return nil, err
	}

	body := func(b []byte, a tenantAccount, to, seq uint64) []byte {
		b = append(b, `{"messaging_product":"whatsapp","phone_number_id":"`...)
		b = append(b, a.phoneNumberID...)
		b = append(b, `","to":"9198`...)
		b = strconv.AppendUint(b, to, 10)
		b = append(b, `","type":"text","text":{"body":"bench `...)
		b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, seq, 10)
		return append(b, `"}}`...)
	}
	rep := &fairReport{Partitions: o.partitions, GraphLatency: o.latency, Campaign: o.campaign, CampaignMPS: o.campaignMPS,
		CampaignRate: o.campaignRate, Others: len(others), OtherInterval: o.otherInterval}
	cpu0, start := readCPU(), time.Now()

	// The other tenants: one send each every interval, until the campaign is delivered.
	stopOthers := make(chan struct{})
	var othersDone sync.WaitGroup
	var othersAccepted atomic.Int64
	oc := newClient(e.cfg.HTTP.Addr, len(others))
	for i, a := range others {
		othersDone.Add(1)
		go func() {
			defer othersDone.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			t := time.NewTimer(time.Duration(rand.Int64N(int64(o.otherInterval))))
			defer t.Stop()
			for n := uint64(0); ; n++ {
				select {
				case <-stopOthers:
					return
				case <-t.C:
				}
				t.Reset(o.otherInterval)
				req.Reset()
				req.Header.SetHost(e.cfg.HTTP.Addr)
				req.Header.SetMethod(fasthttp.MethodPost)
				req.SetRequestURI("/v1/messages")
				req.Header.SetContentType("application/json")
				req.Header.Set("Authorization", "Bearer "+a.jwt)
				req.SetBodyRaw(body(nil, a, 20000000+uint64(i), 1<<40+uint64(i)<<20+n))
				if err := oc.Do(req, resp); err == nil && resp.StatusCode() == fasthttp.StatusAccepted {
					othersAccepted.Add(1)
				}
			}
		}()
	}

	// The campaign, at its submit rate, one recipient per message: exactly -campaign
	// requests, each due at start + seq/rate (an open loop over -conns connections).
	cc := newClient(e.cfg.HTTP.Addr, o.conns)
	var next, campaignAccepted atomic.Int64
	var submitted sync.WaitGroup
	submitStart := time.Now()
	for range o.conns {
		submitted.Add(1)
		go func() {
			defer submitted.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				seq := next.Add(1) - 1
				if seq >= int64(o.campaign) {
					return
				}
				if wait := time.Until(submitStart.Add(time.Duration(float64(seq) / o.campaignRate * float64(time.Second)))); wait > 0 {
					time.Sleep(wait)
				}
				req.Reset()
				req.Header.SetHost(e.cfg.HTTP.Addr)
				req.Header.SetMethod(fasthttp.MethodPost)
				req.SetRequestURI("/v1/messages")
				req.Header.SetContentType("application/json")
				req.Header.Set("Authorization", "Bearer "+campaign.jwt)
				req.SetBodyRaw(body(make([]byte, 0, 192), campaign, 10000000+uint64(seq), uint64(seq)))
				if err := cc.Do(req, resp); err == nil && resp.StatusCode() == fasthttp.StatusAccepted {
					campaignAccepted.Add(1)
				}
			}
		}()
	}
	submitted.Wait()
	rep.CampaignAccepted = campaignAccepted.Load()
	logf("campaign submitted: %d of %d accepted in %v", rep.CampaignAccepted, o.campaign, time.Since(submitStart).Round(time.Millisecond))
	submit := struct{ OK int64 }{rep.CampaignAccepted}

	drain := time.Duration(float64(o.campaign)/float64(o.campaignMPS)*float64(time.Second))*2 + time.Minute
	countCampaign := func() int {
		n := 0
		for _, r := range e.fake.Received() {
			if r.PhoneNumberID == campaign.phoneNumberID && r.WAMID != "" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(drain)
	for last := -1; ; {
		n := countCampaign()
		if n >= int(submit.OK) || time.Now().After(deadline) {
			break
		}
		if n/1000 != last/1000 {
			logf("campaign: %d of %d sent", n, submit.OK)
		}
		last = n
		time.Sleep(time.Second)
	}
	close(stopOthers)
	othersDone.Wait()
	rep.OthersAccepted = othersAccepted.Load()
	// The last other sends' way through.
	time.Sleep(2*o.latency + time.Second)
	used := readCPU().Sub(cpu0)
	rep.analyse(e.fake.Received(), start, campaign.phoneNumberID)
	if n := rep.CampaignSent + rep.OthersSent; n > 0 {
		rep.CPUSelfUS = float64(used.Process.Microseconds()) / float64(n)
		rep.CPUPostgresUS = float64(used.Postgres.Microseconds()) / float64(n)
	}
	logf("campaign: %d accepted, %d sent, %d duplicates, %.1f/s mean (1 s windows %d–%d) over %v; others: %d accepted, %d sent, %d duplicates, accept→sent p50 %v p99 %v max %v",
		rep.CampaignAccepted, rep.CampaignSent, rep.CampaignDups, rep.CampaignMeanRate, rep.CampaignMinWin, rep.CampaignMaxWin,
		rep.CampaignSpan.Round(time.Millisecond), rep.OthersAccepted, rep.OthersSent, rep.OthersDups, rep.OthersP50, rep.OthersP99, rep.OthersMax)
	return rep, nil
}

func (r *fairReport) analyse(received []fakemeta.Received, start time.Time, campaignNumber string) {
	seen := map[string]bool{}
	var campaignAt []time.Time
	var lat []time.Duration
	for _, m := range received {
		if m.WAMID == "" {
			continue
		}
		sentAt, key, ok := parseBenchBody(m.Body)
		if !ok || sentAt.Before(start) {
			continue
		}
		campaign := m.PhoneNumberID == campaignNumber
		if seen[key] {
			if campaign {
				r.CampaignDups++
			} else {
				r.OthersDups++
			}
			continue
		}
		seen[key] = true
		if campaign {
			r.CampaignSent++
			campaignAt = append(campaignAt, m.At)
		} else {
			r.OthersSent++
			lat = append(lat, m.At.Sub(sentAt))
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.OthersP50, r.OthersP99, r.OthersMax = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1]
	}
	if len(campaignAt) < 2 {
		return
	}
	slices.SortFunc(campaignAt, func(a, b time.Time) int { return a.Compare(b) })
	first, last := campaignAt[0], campaignAt[len(campaignAt)-1]
	r.CampaignSpan = last.Sub(first)
	// Steady part: whole seconds from 2 s after the first send to 2 s before the last.
	lo, hi := first.Add(2*time.Second), last.Add(-2*time.Second)
	if !hi.After(lo.Add(time.Second)) {
		return
	}
	secs := int(hi.Sub(lo) / time.Second)
	counts := make([]int, secs)
	n := 0
	for _, t := range campaignAt {
		if i := int(t.Sub(lo) / time.Second); !t.Before(lo) && i < secs {
			counts[i]++
			n++
		}
	}
	r.CampaignMeanRate = float64(n) / float64(secs)
	r.CampaignMinWin, r.CampaignMaxWin = slices.Min(counts), slices.Max(counts)
}

func (r *fairReport) markdown() string {
	s := "| campaign | number mps | submitted at | graph latency | sent | lost | duplicates | number rate (mean, 1 s min–max) | other tenants | their sends | lost | duplicates | accept→sent p50 | p99 | max | CPU/msg (process + Postgres) |\n"
	s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
	s += fmt.Sprintf("| %d | %d | %.0f/s | %v | %d | %d | %d | %.1f/s (%d–%d) | %d every %v | %d | %d | %d | %s | %s | %s | %.0f µs + %.0f µs |\n",
		r.Campaign, r.CampaignMPS, r.CampaignRate, r.GraphLatency, r.CampaignSent, r.CampaignAccepted-int64(r.CampaignSent), r.CampaignDups,
		r.CampaignMeanRate, r.CampaignMinWin, r.CampaignMaxWin, r.Others, r.OtherInterval, r.OthersSent,
		r.OthersAccepted-int64(r.OthersSent), r.OthersDups, ms(r.OthersP50), ms(r.OthersP99), ms(r.OthersMax), r.CPUSelfUS, r.CPUPostgresUS)
	return s
}
