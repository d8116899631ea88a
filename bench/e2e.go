package main

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/sender"
)

func numCPU() int { return runtime.NumCPU() }

// e2eReport is sends from the gateway's accept to the fake Graph API's receipt, with
// every role running as in production (gateway and sender through their Run functions).
type e2eReport struct {
	Tenants      int           `json:"tenants"`
	Numbers      int           `json:"numbers"`
	GraphLatency time.Duration `json:"graph_latency_ns"`
	MPS          int           `json:"throughput_mps"`
	Accept       result        `json:"accept"`
	Delivered    int           `json:"delivered"`
	Duplicates   int           `json:"duplicates"`
	Refused      int           `json:"refused"` // answered with an error by the fake (e.g. 130429)
	E2ERate      float64       `json:"e2e_per_sec"`
	P50, P99     time.Duration `json:"-"`
	P50ns        int64         `json:"accept_to_delivery_p50_ns"`
	P99ns        int64         `json:"accept_to_delivery_p99_ns"`
	// Per-number pacing: the busiest one-second window of any number, and the mean rate
	// of the numbers over the steady part of the run.
	MaxNumberWindow int     `json:"max_number_1s_window"`
	MeanNumberRate  float64 `json:"mean_number_rate"`
	// CPU per delivered message from the first accept to the last receipt, in
	// microseconds: this process (every role and the load generator) and Postgres.
	CPUSelfUS     float64 `json:"cpu_self_us_per_msg"`
	CPUPostgresUS float64 `json:"cpu_postgres_us_per_msg"`
}

func runE2E(ctx context.Context, o options) (*e2eReport, error) {
	e, err := newEnv(ctx, o.partitions)
	if err != nil {
		return nil, err
	}
	defer e.close()
	accts, err := e.seed(ctx, o.tenants, o.numbers, o.mps)
	if err != nil {
		return nil, err
	}
	e.fake.SetLatency(o.latency)
	if o.latency > 0 {
		// Enough connections for every number to have its whole allowance in flight.
		e.cfg.Graph.MaxConnsPerHost = max(e.cfg.Graph.MaxConnsPerHost, int(float64(o.mps*len(accts))*o.latency.Seconds()*2))
	}
	e.start("gateway", gateway.Run)
	e.start("sender", func(ctx context.Context, cfg config.Config) error { return sender.Run(ctx, cfg) })
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.waitReady(rctx); err != nil {
		return nil, err
	}

	fill := func(req *fasthttp.Request, seq uint64) {
		a := accts[seq%uint64(len(accts))]
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI("/v1/messages")
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", "Bearer "+a.jwt)
		b := make([]byte, 0, 192)
		b = append(b, `{"messaging_product":"whatsapp","phone_number_id":"`...)
		b = append(b, a.phoneNumberID...)
		b = append(b, `","to":"9198`...)
		b = strconv.AppendUint(b, 10000000+seq%1000, 10)
		b = append(b, `","type":"text","text":{"body":"bench `...)
		b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
		b = append(b, ` `...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `"}}`...)
		req.SetBodyRaw(b)
	}
	gw := target{name: "gateway", addr: e.cfg.HTTP.Addr, fill: fill, accept: fasthttp.StatusAccepted}

	rep := &e2eReport{Tenants: o.tenants, Numbers: len(accts), GraphLatency: o.latency, MPS: o.mps}
	if o.warmup > 0 {
		warm := closedLoop(gw, o.conns, o.warmup)
		if err := waitDelivered(e.fake, int(warm.OK), 10*time.Second, 2*time.Minute); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		e.fake.Reset()
	}
	cpu0, start := readCPU(), time.Now()
	if o.rate > 0 {
		// At a fixed rate the roles share the machine as in production: the gateway takes
		// only what the rate needs, and a sender that keeps up shows a flat latency.
		rep.Accept = openLoop(gw, o.rate, o.conns, o.duration)
	} else {
		rep.Accept = closedLoop(gw, o.conns, o.duration)
	}
	logf("%v", rep.Accept)
	// Wait for what was accepted to drain: with a Graph latency and per-number limits the
	// sender may be well behind the gateway.
	drain := 2*o.duration + time.Minute
	if o.mps > 0 {
		drain += time.Duration(float64(rep.Accept.OK)/float64(o.mps*len(accts))*float64(time.Second)) * 2
	}
	if err := waitDelivered(e.fake, int(rep.Accept.OK), 5*time.Second, drain); err != nil {
		logf("%v", err)
	}
	used := readCPU().Sub(cpu0)
	rep.analyse(e.fake.Received(), start)
	if rep.Delivered > 0 {
		rep.CPUSelfUS = float64(used.Process.Microseconds()) / float64(rep.Delivered)
		rep.CPUPostgresUS = float64(used.Postgres.Microseconds()) / float64(rep.Delivered)
	}
	logf("delivered %d of %d accepted, %d duplicates, %d refused, %.0f/s end to end, p50 %v p99 %v, cpu/msg %.0fµs+%.0fµs pg",
		rep.Delivered, rep.Accept.OK, rep.Duplicates, rep.Refused, rep.E2ERate, rep.P50, rep.P99, rep.CPUSelfUS, rep.CPUPostgresUS)
	return rep, nil
}

// waitDelivered waits until the fake accepted want sends, or nothing new arrived for
// idle (when idle > 0), or limit passed.
func waitDelivered(f *fakemeta.Server, want int, idle, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last, lastChange := f.Count(), time.Now()
	for f.Count() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d delivered after %v", f.Count(), want, limit)
		}
		if n := f.Count(); n != last {
			last, lastChange = n, time.Now()
		} else if idle > 0 && time.Since(lastChange) > idle {
			return fmt.Errorf("only %d of %d delivered; nothing new for %v", n, want, idle)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// analyse counts the sends made since start; stragglers of the warm-up are left out.
func (r *e2eReport) analyse(received []fakemeta.Received, start time.Time) {
	seen := make(map[string]bool, len(received))
	var lat []time.Duration
	var first, last time.Time
	perNumber := map[string][]time.Time{}
	for _, m := range received {
		if m.WAMID == "" {
			r.Refused++
			continue
		}
		sentAt, key, ok := parseBenchBody(m.Body)
		if !ok || sentAt.Before(start) {
			continue
		}
		if seen[key] {
			r.Duplicates++
			continue
		}
		seen[key] = true
		lat = append(lat, m.At.Sub(sentAt))
		if first.IsZero() || sentAt.Before(first) {
			first = sentAt
		}
		if m.At.After(last) {
			last = m.At
		}
		perNumber[m.PhoneNumberID] = append(perNumber[m.PhoneNumberID], m.At)
	}
	r.Delivered = len(seen)
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	r.P50, r.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	r.P50ns, r.P99ns = int64(r.P50), int64(r.P99)
	r.E2ERate = float64(r.Delivered) / last.Sub(first).Seconds()

	// Pacing: sliding one-second windows over each number's receipts, ignoring the first
	// and last second (start-up and tail).
	var rates []float64
	for _, ts := range perNumber {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		if len(ts) < 2 || ts[len(ts)-1].Sub(ts[0]) < 3*time.Second {
			continue
		}
		lo, hi := ts[0].Add(time.Second), ts[len(ts)-1].Add(-time.Second)
		j, n := 0, 0
		for i, t := range ts {
			if t.Before(lo) || t.After(hi) {
				continue
			}
			n++
			for ts[j].Before(t.Add(-time.Second)) || ts[j].Equal(t.Add(-time.Second)) {
				j++
			}
			if w := i - j + 1; w > r.MaxNumberWindow {
				r.MaxNumberWindow = w
			}
		}
		rates = append(rates, float64(n)/hi.Sub(lo).Seconds())
	}
	for _, x := range rates {
		r.MeanNumberRate += x / float64(len(rates))
	}
}

// parseBenchBody reads a load generator's text body, "bench <send time in ns> <seq>":
// when the client sent it, and a key unique per request (time and sequence number).
func parseBenchBody(body []byte) (sentAt time.Time, key string, ok bool) {
	i := bytes.Index(body, []byte(`"bench `))
	if i < 0 {
		return time.Time{}, "", false
	}
	rest := body[i+len(`"bench `):]
	sp := bytes.IndexByte(rest, ' ')
	end := bytes.IndexByte(rest, '"')
	if sp < 0 || end < sp {
		return time.Time{}, "", false
	}
	nanos, err := strconv.ParseInt(string(rest[:sp]), 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(0, nanos), string(rest[:end]), true
}

func (r *e2eReport) markdown() string {
	load := "closed"
	if r.Accept.TargetRate > 0 {
		load = fmt.Sprintf("open %.0f/s", r.Accept.TargetRate)
	}
	s := "| tenants | numbers | graph latency | mps/number | load | accepted/s | delivered | duplicates | end-to-end/s | accept→delivery p50 | p99 | busiest number 1 s window | mean number rate | CPU/msg (process + Postgres) |\n"
	s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
	s += fmt.Sprintf("| %d | %d | %v | %d | %s | %.0f | %d | %d | %.0f | %s | %s | %d | %.1f/s | %.0f µs + %.0f µs |\n",
		r.Tenants, r.Numbers, r.GraphLatency, r.MPS, load, r.Accept.RPS, r.Delivered, r.Duplicates, r.E2ERate,
		ms(r.P50), ms(r.P99), r.MaxNumberWindow, r.MeanNumberRate, r.CPUSelfUS, r.CPUPostgresUS)
	return s
}
