package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/gateway"
)

// gatewayReport compares POST /v1/messages (real JWT verification, warm account cache,
// acks=all publish to the embedded broker) with a bare fasthttp handler that only
// answers 202, on the same machine and load generator.
type gatewayReport struct {
	Bare       result   `json:"bare"`
	Gateway    result   `json:"gateway"`
	Ratio      float64  `json:"ratio"`
	Peak       float64  `json:"peak"`
	BareAtLoad result   `json:"bare_open_loop"`    // the bare handler at the top open-loop rate
	AtLoad     []result `json:"gateway_open_loop"` // at fractions of the gateway's peak
	Tenants    int      `json:"tenants"`
	BodySize   int      `json:"body_bytes"`
}

func runGateway(ctx context.Context, o options) (*gatewayReport, error) {
	e, err := newEnv(ctx, o.partitions)
	if err != nil {
		return nil, err
	}
	defer e.close()
	accts, err := e.seed(ctx, o.tenants, 1, 80)
	if err != nil {
		return nil, err
	}
	e.start("gateway", gateway.Run)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.waitReady(rctx); err != nil {
		return nil, err
	}

	bareAddr, stopBare, err := startBare()
	if err != nil {
		return nil, err
	}
	defer stopBare()

	body := []byte(`{"messaging_product":"whatsapp","to":"919876543210","type":"text","text":{"body":"Your order #12345 has shipped and will arrive tomorrow"}}`)
	// Headers built once: the load generator shares the process (and its garbage
	// collector) with the gateway, so it should not allocate per request.
	auths := make([][]byte, len(accts))
	for i, a := range accts {
		auths[i] = []byte("Bearer " + a.jwt)
	}
	fill := func(req *fasthttp.Request, seq uint64) {
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI("/v1/messages")
		req.Header.SetContentType("application/json")
		req.Header.SetBytesV("Authorization", auths[seq%uint64(len(auths))])
		req.SetBody(body)
	}
	gw := target{name: "gateway", addr: e.cfg.HTTP.Addr, fill: fill, accept: fasthttp.StatusAccepted}
	bare := target{name: "bare", addr: bareAddr, fill: fill, accept: fasthttp.StatusAccepted}

	// Warm the account cache, the verified-token cache and the producer's connections.
	closedLoop(gw, o.conns, o.warmup)
	closedLoop(bare, o.conns, o.warmup)

	rep := &gatewayReport{Tenants: o.tenants, BodySize: len(body)}
	peak := o.peak
	if peak <= 0 {
		rep.Bare = closedLoop(bare, o.conns, o.duration)
		logf("%v", rep.Bare)
		stop, err := startCPUProfile(o.cpuprofile)
		if err != nil {
			return nil, err
		}
		rep.Gateway = closedLoop(gw, o.conns, o.duration)
		stop()
		logf("%v", rep.Gateway)
		if rep.Bare.RPS == 0 || rep.Gateway.RPS == 0 {
			return nil, fmt.Errorf("no accepted requests: bare %v, gateway %v", rep.Bare.Statuses, rep.Gateway.Statuses)
		}
		rep.Ratio = rep.Gateway.RPS / rep.Bare.RPS
		peak = rep.Gateway.RPS
	}
	rep.Peak = peak
	fracs, err := parseFractions(o.fractions)
	if err != nil {
		return nil, err
	}
	if o.trace != "" {
		f, err := os.Create(o.trace)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return nil, err
		}
		defer trace.Stop()
	}
	if o.allocs != "" {
		if err := writeProfile("allocs", o.allocs+".before"); err != nil {
			return nil, err
		}
		defer func() { _ = writeProfile("allocs", o.allocs) }()
	}
	open := func(t target, rate float64) result {
		r := openLoop(t, rate, o.conns*4, o.duration)
		logf("%v (target %.0f/s)", r, rate)
		if s := stalls(r.Timeline, 10*time.Millisecond); s != "" {
			logf("  100 ms windows over 10 ms:%s", s)
		}
		return r
	}
	// The bare handler at the highest gateway rate shows what the load generator and
	// the machine add by themselves.
	if o.baseline {
		rep.BareAtLoad = open(bare, fracs[len(fracs)-1]*peak)
	}
	for _, frac := range fracs {
		rep.AtLoad = append(rep.AtLoad, open(gw, frac*peak))
	}
	return rep, nil
}

// startCPUProfile profiles until the returned function is called; an empty path does nothing.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup(name).WriteTo(f, 0)
}

func parseFractions(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad -fractions %q: want positive numbers separated by commas", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// startBare serves the baseline: a fasthttp handler that answers what the gateway answers
// and does nothing else.
func startBare() (string, func(), error) {
	return startBareWith(func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusAccepted)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"0192f0c4-6d1e-7b3a-9c5e-1f2a3b4c5d6e","status":"accepted"}`)
	})
}

// startBareWith serves h on a fasthttp server of its own, for the baselines.
func startBareWith(h fasthttp.RequestHandler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &fasthttp.Server{Handler: h, NoDefaultServerHeader: true}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Shutdown() }, nil
}

func (r *gatewayReport) markdown() string {
	row := func(name string, x result) string {
		return fmt.Sprintf("| %s | %s | %d | %.0f | %s | %s | %d |\n", name, x.Mode, x.Conns, x.RPS,
			ms(x.P50), ms(x.P99), x.Failed)
	}
	s := "| target | load | conns | accepted/s | p50 | p99 | non-202 |\n|---|---|---|---|---|---|---|\n"
	if r.Bare.OK > 0 {
		s += row("bare fasthttp 202", r.Bare)
		s += row("POST /v1/messages", r.Gateway)
	}
	if r.BareAtLoad.OK > 0 {
		s += row(fmt.Sprintf("bare fasthttp 202 at %s/s", strconv.Itoa(int(r.BareAtLoad.TargetRate))), r.BareAtLoad)
	}
	for _, x := range r.AtLoad {
		s += row(fmt.Sprintf("POST /v1/messages at %.0f%% of peak (%s/s)", 100*x.TargetRate/r.Peak, strconv.Itoa(int(x.TargetRate))), x)
	}
	if r.Ratio > 0 {
		s += fmt.Sprintf("\nratio gateway/bare: **%.2f** (%d tenants, %d-byte body)\n", r.Ratio, r.Tenants, r.BodySize)
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
