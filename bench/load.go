package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/cputime"
)

// target is one HTTP endpoint under load. fill writes request number seq into req.
type target struct {
	name   string
	addr   string // host:port
	fill   func(req *fasthttp.Request, seq uint64)
	accept int // the status code that counts as success
}

// result is what one load run measured.
type result struct {
	Target     string        `json:"target"`
	Mode       string        `json:"mode"` // closed (as fast as possible) or open (fixed rate)
	Conns      int           `json:"conns"`
	TargetRate float64       `json:"target_rate,omitempty"`
	Duration   time.Duration `json:"duration_ns"`
	OK         int64         `json:"ok"`
	Failed     int64         `json:"failed"`
	RPS        float64       `json:"rps"`
	P50        time.Duration `json:"p50_ns"`
	P90        time.Duration `json:"p90_ns"`
	P99        time.Duration `json:"p99_ns"`
	Max        time.Duration `json:"max_ns"`
	Statuses   map[int]int64 `json:"statuses"`
	// CPU per accepted request, in microseconds: this process (load generator and the
	// roles under test) and Postgres. Postgres processes that end during the run (a
	// closed connection) are not counted.
	CPUSelfUS     float64 `json:"cpu_self_us_per_req"`
	CPUPostgresUS float64 `json:"cpu_postgres_us_per_req"`
	// Timeline is the open loop's worst latency per 100 ms of due time, to tell a steady
	// tail from a few stalls.
	Timeline []slice `json:"timeline,omitempty"`
}

// slice is one 100 ms window of an open-loop run, by when its requests were due.
type slice struct {
	At    time.Duration `json:"at_ns"`
	N     int           `json:"n"`
	Max   time.Duration `json:"max_ns"`
	Worst int           `json:"over_10ms"`
}

const sliceWidth = 100 * time.Millisecond

func (r result) String() string {
	return fmt.Sprintf("%-8s %-6s conns=%-4d ok=%-8d failed=%-5d rps=%-9.0f p50=%-8v p99=%-8v max=%v cpu/req=%.0fµs+%.0fµs pg",
		r.Target, r.Mode, r.Conns, r.OK, r.Failed, r.RPS, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond),
		r.CPUSelfUS, r.CPUPostgresUS)
}

// withCPU fills in CPU per accepted request from the use measured over the run.
func (r result) withCPU(u cputime.Usage) result {
	if r.OK > 0 {
		r.CPUSelfUS = float64(u.Process.Microseconds()) / float64(r.OK)
		r.CPUPostgresUS = float64(u.Postgres.Microseconds()) / float64(r.OK)
	}
	return r
}

func newClient(addr string, conns int) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                          addr,
		MaxConns:                      conns,
		ReadTimeout:                   10 * time.Second,
		WriteTimeout:                  10 * time.Second,
		MaxIdemponentCallAttempts:     1,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
	}
}

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	statuses  map[int]int64
	ok, fail  atomic.Int64
}

// do sends request seq and records its outcome; latency counts from since. It returns
// the latency and whether the answer was the accepted status.
func (r *recorder) do(c *fasthttp.HostClient, t target, req *fasthttp.Request, resp *fasthttp.Response,
	seq uint64, since time.Time, statuses map[int]int64) (time.Duration, bool) {
	req.Reset()
	req.Header.SetHost(t.addr)
	t.fill(req, seq)
	err := c.Do(req, resp)
	el := time.Since(since)
	switch {
	case err != nil:
		statuses[-1]++
		r.fail.Add(1)
	case resp.StatusCode() == t.accept:
		statuses[resp.StatusCode()]++
		r.ok.Add(1)
		return el, true
	default:
		statuses[resp.StatusCode()]++
		r.fail.Add(1)
	}
	return el, false
}

func (r *recorder) merge(lat []time.Duration, statuses map[int]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, lat...)
	if r.statuses == nil {
		r.statuses = map[int]int64{}
	}
	for k, v := range statuses {
		r.statuses[k] += v
	}
}

func (r *recorder) result(t target, mode string, conns int, rate float64, elapsed time.Duration) result {
	slices.Sort(r.latencies)
	q := func(p float64) time.Duration {
		if len(r.latencies) == 0 {
			return 0
		}
		return r.latencies[min(len(r.latencies)-1, int(p*float64(len(r.latencies))))]
	}
	res := result{
		Target: t.name, Mode: mode, Conns: conns, TargetRate: rate, Duration: elapsed,
		OK: r.ok.Load(), Failed: r.fail.Load(), Statuses: r.statuses,
		P50: q(0.50), P90: q(0.90), P99: q(0.99),
	}
	if n := len(r.latencies); n > 0 {
		res.Max = r.latencies[n-1]
	}
	if elapsed > 0 {
		res.RPS = float64(res.OK) / elapsed.Seconds()
	}
	return res
}

// closedLoop keeps conns requests in flight for d and measures how many succeed: the
// target's peak throughput on this machine.
func closedLoop(t target, conns int, d time.Duration) result {
	c := newClient(t.addr, conns)
	var seq atomic.Uint64
	var rec recorder
	deadline := time.Now().Add(d)
	cpu0 := readCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			lat := make([]time.Duration, 0, 1<<14)
			statuses := map[int]int64{}
			for time.Now().Before(deadline) {
				if el, ok := rec.do(c, t, req, resp, seq.Add(1), time.Now(), statuses); ok {
					lat = append(lat, el)
				}
			}
			rec.merge(lat, statuses)
		}()
	}
	wg.Wait()
	return rec.result(t, "closed", conns, 0, time.Since(start)).withCPU(readCPU().Sub(cpu0))
}

// openLoop sends at a fixed rate for d whatever the answers' speed. Latency is measured
// from when each request was due, not when it was sent, so a stalled server shows up in
// the tail instead of silently lowering the rate (no coordinated omission).
func openLoop(t target, rate float64, workers int, d time.Duration) result {
	c := newClient(t.addr, workers)
	interval := time.Duration(float64(time.Second) / rate)
	total := int(d.Seconds() * rate)
	var rec recorder
	tl := newTimeline(d)
	// Every worker opens its connection with one untimed request first: a client at a
	// steady rate has its connections open, and 512 connects in the first few
	// milliseconds would put a start-up queue into the tail instead of the server.
	var warm, wg sync.WaitGroup
	warm.Add(workers)
	ready := make(chan struct{})
	var start time.Time
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			lat := make([]time.Duration, 0, total/workers+1)
			statuses := map[int]int64{}
			local := newTimeline(d)
			var warmRec recorder
			warmRec.do(c, t, req, resp, uint64(total+w), time.Now(), map[int]int64{})
			warm.Done()
			<-ready
			for k := w; k < total; k += workers {
				offset := time.Duration(k) * interval
				due := start.Add(offset)
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				if el, ok := rec.do(c, t, req, resp, uint64(k), due, statuses); ok {
					lat = append(lat, el)
					local.add(offset, el)
				}
			}
			rec.merge(lat, statuses)
			tl.merge(local)
		}()
	}
	warm.Wait()
	time.Sleep(100 * time.Millisecond) // let the warm-up's own work settle
	cpu0 := readCPU()
	start = time.Now().Add(time.Millisecond)
	close(ready)
	wg.Wait()
	res := rec.result(t, "open", workers, rate, time.Since(start)).withCPU(readCPU().Sub(cpu0))
	res.Timeline = tl.slices
	return res
}

// timeline gathers the worst latency per window of due time.
type timeline struct {
	mu     sync.Mutex
	slices []slice
}

func newTimeline(d time.Duration) *timeline {
	n := int(d/sliceWidth) + 1
	tl := &timeline{slices: make([]slice, n)}
	for i := range tl.slices {
		tl.slices[i].At = time.Duration(i) * sliceWidth
	}
	return tl
}

func (tl *timeline) add(offset, lat time.Duration) {
	s := &tl.slices[min(len(tl.slices)-1, int(offset/sliceWidth))]
	s.N++
	s.Max = max(s.Max, lat)
	if lat > 10*time.Millisecond {
		s.Worst++
	}
}

func (tl *timeline) merge(o *timeline) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := range tl.slices {
		tl.slices[i].N += o.slices[i].N
		tl.slices[i].Max = max(tl.slices[i].Max, o.slices[i].Max)
		tl.slices[i].Worst += o.slices[i].Worst
	}
}

// stalls describes the windows whose worst latency passed limit, for the log.
func stalls(tl []slice, limit time.Duration) string {
	var b strings.Builder
	for _, s := range tl {
		if s.Max > limit {
			fmt.Fprintf(&b, " %.1fs:%s(%d>10ms)", s.At.Seconds(), s.Max.Round(time.Millisecond), s.Worst)
		}
	}
	return b.String()
}
