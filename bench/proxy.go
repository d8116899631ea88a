package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/ratelimit"
)

// proxyReport is the proxy scenario: the backend proxy's throughput against the same
// upstream hit directly, and one tenant's flood against another tenant's latency.
type proxyReport struct {
	Direct  []result `json:"direct"`
	Proxied []result `json:"proxied"`
	Ratio   float64  `json:"ratio"`

	FloodLimit     ratelimit.Limit `json:"flood_limit"`
	VictimRate     float64         `json:"victim_rate"`
	VictimUnloaded result          `json:"victim_unloaded"`
	VictimLoaded   result          `json:"victim_loaded"`
	Flood          result          `json:"flood"`
	P99Ratio       float64         `json:"p99_ratio"`
	// The same with the flood as fast as it goes (a closed loop): the machine's cores,
	// shared by load generator and gateway, are then the limit.
	VictimSaturated result  `json:"victim_saturated"`
	FloodClosed     result  `json:"flood_closed"`
	P99RatioClosed  float64 `json:"p99_ratio_closed"`
}

var proxyBenchSecret = []byte("bench-proxy-secret-at-least-32-bytes!!")

type benchNoAccounts struct{}

func (benchNoAccounts) Resolve(context.Context, string, string) (*account.Account, error) {
	return nil, account.ErrNotFound
}

type benchNoSends struct{}

func (benchNoSends) WriteMessages(context.Context, ...kafka.Message) error { return nil }

// startProxyGateway serves a gateway whose only backend is upstream.
func startProxyGateway(upstream string, limits *ratelimit.Limiter) (string, func(), error) {
	v, err := auth.NewVerifier(auth.Config{HMACSecret: proxyBenchSecret, HeaderClaims: []string{"sub"}})
	if err != nil {
		return "", nil, err
	}
	srv, err := gateway.New(gateway.Options{
		Verifier: v, Resolver: benchNoAccounts{}, Sends: benchNoSends{},
		Proxy: gateway.ProxyOptions{
			Upstreams:    []string{"http://" + upstream},
			ClaimHeaders: []gateway.ClaimHeader{{Claim: "sub", Header: "X-User-Id"}},
		},
		Limits:       limits,
		AccessSample: -1, // failures only
		Logger:       slog.Default(),
	})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Shutdown(context.Background()) }, nil
}

func apiTarget(name, addr, tenant string, accept int) (target, error) {
	tok, err := auth.IssueHS256(proxyBenchSecret, "tenantId", tenant, time.Hour, "", "")
	if err != nil {
		return target{}, err
	}
	bearer := []byte("Bearer " + tok)
	return target{name: name, addr: addr, accept: accept, fill: func(req *fasthttp.Request, _ uint64) {
		req.Header.SetMethod(fasthttp.MethodGet)
		req.SetRequestURI("/api/campaigns?page=1")
		req.Header.SetBytesV(fasthttp.HeaderAuthorization, bearer)
	}}, nil
}

func runProxy(_ context.Context, o options) (*proxyReport, error) {
	upstream, stopUp, err := startBare()
	if err != nil {
		return nil, err
	}
	defer stopUp()
	gw, stopGW, err := startProxyGateway(upstream, nil)
	if err != nil {
		return nil, err
	}
	defer stopGW()

	direct := target{name: "direct", addr: upstream, accept: fasthttp.StatusAccepted, fill: func(req *fasthttp.Request, _ uint64) {
		req.Header.SetMethod(fasthttp.MethodGet)
		req.SetRequestURI("/api/campaigns?page=1")
	}}
	proxied, err := apiTarget("proxied", gw, "acme", fasthttp.StatusAccepted)
	if err != nil {
		return nil, err
	}
	rep := &proxyReport{}
	if o.warmup > 0 {
		closedLoop(direct, o.conns, o.warmup/2)
		closedLoop(proxied, o.conns, o.warmup/2)
	}
	// Interleaved rounds, so load from elsewhere on the machine falls on both alike.
	var dOK, pOK float64
	var dT, pT time.Duration
	for range 3 {
		d := closedLoop(direct, o.conns, o.duration)
		logf("%s", d)
		p := closedLoop(proxied, o.conns, o.duration)
		logf("%s", p)
		rep.Direct, rep.Proxied = append(rep.Direct, d), append(rep.Proxied, p)
		dOK, pOK, dT, pT = dOK+float64(d.OK), pOK+float64(p.OK), dT+d.Duration, pT+p.Duration
	}
	rep.Ratio = (pOK / pT.Seconds()) / (dOK / dT.Seconds())

	// One tenant floods a rate-limited gateway while another sends at a steady rate.
	rep.FloodLimit = ratelimit.Limit{RPS: 1000, Burst: 1000}
	lim, err := ratelimit.New(ratelimit.Config{Default: ratelimit.Limits{API: rep.FloodLimit}})
	if err != nil {
		return nil, err
	}
	lgw, stopL, err := startProxyGateway(upstream, lim)
	if err != nil {
		return nil, err
	}
	defer stopL()
	victim, err := apiTarget("victim", lgw, "victim", fasthttp.StatusAccepted)
	if err != nil {
		return nil, err
	}
	flood, err := apiTarget("flood", lgw, "flooder", fasthttp.StatusTooManyRequests)
	if err != nil {
		return nil, err
	}
	rep.VictimRate = 200
	openLoop(victim, rep.VictimRate, 16, time.Second) // connections and caches warm
	rep.VictimUnloaded = openLoop(victim, rep.VictimRate, 16, o.duration)
	logf("%s", rep.VictimUnloaded)
	// The flood: five times the tenant's limit, at a fixed rate.
	floodRate := 5 * float64(rep.FloodLimit.RPS)
	rep.Flood, rep.VictimLoaded = concurrently(
		func() result { return openLoop(flood, floodRate, o.conns, o.duration+time.Second) },
		func() result { return openLoop(victim, rep.VictimRate, 16, o.duration) })
	logf("%s", rep.VictimLoaded)
	logf("%s", rep.Flood)
	if rep.VictimUnloaded.P99 > 0 {
		rep.P99Ratio = float64(rep.VictimLoaded.P99) / float64(rep.VictimUnloaded.P99)
	}
	rep.FloodClosed, rep.VictimSaturated = concurrently(
		func() result { return closedLoop(flood, o.conns, o.duration+time.Second) },
		func() result { return openLoop(victim, rep.VictimRate, 16, o.duration) })
	logf("%s", rep.VictimSaturated)
	logf("%s", rep.FloodClosed)
	if rep.VictimUnloaded.P99 > 0 {
		rep.P99RatioClosed = float64(rep.VictimSaturated.P99) / float64(rep.VictimUnloaded.P99)
	}
	return rep, nil
}

// concurrently runs the flood, and the victim from half a second later.
func concurrently(flood, victim func() result) (result, result) {
	var wg sync.WaitGroup
	var f result
	wg.Add(1)
	go func() {
		defer wg.Done()
		f = flood()
	}()
	time.Sleep(500 * time.Millisecond)
	v := victim()
	wg.Wait()
	return f, v
}

func (r *proxyReport) markdown() string {
	s := "| target | conns | requests/s | p50 | p99 |\n|---|---|---|---|---|\n"
	for i := range r.Direct {
		for _, x := range []result{r.Direct[i], r.Proxied[i]} {
			name := "upstream directly"
			if x.Target == "proxied" {
				name = "through the gateway (`GET /api/…`, JWT, checks, identity headers)"
			}
			s += fmt.Sprintf("| %s, round %d | %d | %.0f | %s | %s |\n", name, i+1, x.Conns, x.RPS, ms(x.P50), ms(x.P99))
		}
	}
	s += fmt.Sprintf("\nratio proxied/direct: **%.2f**\n\n", r.Ratio)
	s += fmt.Sprintf("Flood: tenant `flooder` against a limit of %d/s (burst %d); tenant `victim` at %.0f/s open loop.\n\n",
		r.FloodLimit.RPS, r.FloodLimit.Burst, r.VictimRate)
	s += "| run | victim p50 | victim p99 | victim non-2xx | flood sent/s | flood 429 | flood passed (within its limit) |\n|---|---|---|---|---|---|---|\n"
	s += fmt.Sprintf("| victim alone | %s | %s | %d | | | |\n", ms(r.VictimUnloaded.P50), ms(r.VictimUnloaded.P99), r.VictimUnloaded.Failed)
	row := func(name string, v, f result) string {
		return fmt.Sprintf("| %s | %s | %s | %d | %.0f | %d | %d |\n", name, ms(v.P50), ms(v.P99), v.Failed,
			float64(f.OK+f.Failed)/f.Duration.Seconds(), f.Statuses[fasthttp.StatusTooManyRequests], f.Failed)
	}
	s += row(fmt.Sprintf("victim during a flood at %.0f/s (5× its limit)", r.Flood.TargetRate), r.VictimLoaded, r.Flood)
	s += row("victim during a flood as fast as it goes (closed loop, the cores saturated)", r.VictimSaturated, r.FloodClosed)
	s += fmt.Sprintf("\nvictim p99 during the flood / alone: **%.2f** (5× flood), %.2f (saturating flood)\n", r.P99Ratio, r.P99RatioClosed)
	return s
}
