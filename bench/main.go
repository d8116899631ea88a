// Command bench measures aerogate on this machine: `go run ./bench gateway` compares the
// send API with a bare fasthttp handler; `go run ./bench e2e` measures sends from gateway
// accept to the fake Graph API's receipt; `go run ./bench webhooks` compares signed webhook
// POSTs at the edge with a bare fasthttp handler and measures ingest's stored items per second;
// `go run ./bench proxy` compares the /api/* proxy with its upstream hit directly, and measures
// one tenant's latency under another's flood; `go run ./bench fair` runs a campaign on one
// number while other tenants of its partition send one message at a time. Results go to
// bench/results/ as JSON and markdown.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"
)

type options struct {
	duration   time.Duration
	warmup     time.Duration
	conns      int
	tenants    int
	numbers    int
	partitions int
	latency    time.Duration
	mps        int
	rate       float64 // e2e: open-loop accept rate; 0 runs a closed loop
	out        string
	cpuprofile string
	name       string
	peak       float64 // gateway: skip the closed loops and take this as the peak
	fractions  string  // gateway: open-loop rates as fractions of the peak
	trace      string  // gateway: runtime trace of the open-loop runs
	allocs     string  // gateway: allocation profiles before and after the open-loop runs
	baseline   bool    // gateway: run the bare handler in open loop too
	// webhooks: bodies (an inbound message and a status each) in ingest's backlog
	ingestBodies int

	campaign      int           // fair: campaign size
	campaignMPS   int           // fair: the campaign number's throughput_mps
	campaignRate  float64       // fair: requests/s the campaign is submitted at
	others        int           // fair: other tenants in the campaign's partition
	otherInterval time.Duration // fair: how often each of them sends
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./bench gateway|e2e|webhooks|proxy|fair [flags]")
		os.Exit(2)
	}
	scenario := os.Args[1]
	fs := flag.NewFlagSet(scenario, flag.ExitOnError)
	var o options
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per run")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "warm-up time before measuring")
	fs.IntVar(&o.conns, "conns", 64, "concurrent connections (closed loop)")
	fs.IntVar(&o.tenants, "tenants", 100, "tenants, each with its own account and JWT")
	fs.IntVar(&o.numbers, "numbers", 1, "phone numbers per tenant (e2e)")
	fs.IntVar(&o.partitions, "partitions", 12, "partitions of each topic")
	fs.DurationVar(&o.latency, "graph-latency", 0, "latency the fake Graph API adds to each send (e2e)")
	fs.IntVar(&o.mps, "mps", 1000, "throughput_mps of every account (e2e)")
	fs.Float64Var(&o.rate, "rate", 0, "e2e: send at this many requests/s (open loop, -conns workers) instead of as fast as the gateway accepts")
	fs.StringVar(&o.out, "out", "bench/results", "directory for the JSON and markdown results")
	fs.StringVar(&o.name, "name", scenario, "base name of the result files")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile to this file: of the gateway's closed-loop run (gateway), of the measured run (e2e)")
	fs.Float64Var(&o.peak, "peak", 0, "gateway: skip the closed-loop runs and use this peak (requests/s) for the open loops")
	fs.StringVar(&o.fractions, "fractions", "0.5,0.8", "gateway: open-loop rates, as fractions of the peak")
	fs.StringVar(&o.trace, "trace", "", "gateway: write a runtime trace of the open-loop runs to this file")
	fs.StringVar(&o.allocs, "allocprofile", "", "gateway: write allocation profiles taken before (FILE.before) and after (FILE) the open-loop runs; compare with go tool pprof -diff_base")
	fs.BoolVar(&o.baseline, "baseline", true, "gateway: also run the bare handler in open loop at the highest rate")
	fs.IntVar(&o.ingestBodies, "ingest-bodies", 20000, "webhooks: webhook bodies in ingest's backlog (an inbound message and a status each)")
	fs.IntVar(&o.campaign, "campaign", 20000, "fair: messages in the campaign")
	fs.IntVar(&o.campaignMPS, "campaign-mps", 80, "fair: throughput_mps of the campaign's number (and the others')")
	fs.Float64Var(&o.campaignRate, "campaign-rate", 2000, "fair: requests/s the campaign is submitted at")
	fs.IntVar(&o.others, "others", 20, "fair: other tenants whose sends share the campaign's partition")
	fs.DurationVar(&o.otherInterval, "other-interval", time.Second, "fair: each other tenant sends one message this often")
	_ = fs.Parse(os.Args[2:])
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))

	if o.cpuprofile != "" && scenario != "gateway" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	var (
		rep interface{ markdown() string }
		err error
	)
	switch scenario {
	case "gateway":
		rep, err = runGateway(ctx, o)
	case "e2e":
		rep, err = runE2E(ctx, o)
	case "webhooks":
		rep, err = runWebhooks(ctx, o)
	case "proxy":
		rep, err = runProxy(ctx, o)
	case "fair":
		rep, err = runFair(ctx, o)
	default:
		err = fmt.Errorf("unknown scenario %q", scenario)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	md := rep.markdown()
	fmt.Println(md)
	if err := save(o.out, o.name, scenario, rep, md); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func save(dir, name, scenario string, rep any, md string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	host, _ := os.Hostname()
	doc := map[string]any{"scenario": scenario, "at": time.Now().UTC(), "host": host, "cpus": numCPU(), "result": rep}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".md"), []byte(md), 0o644)
}

var (
	interruptMu    sync.Mutex
	interruptHooks []func()
	interruptOnce  sync.Once
)

// onInterrupt runs fn when the process gets SIGINT or SIGTERM, before it exits.
func onInterrupt(fn func()) {
	interruptOnce.Do(func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() {
			<-sig
			logf("bench: interrupted, dropping the run's database")
			interruptMu.Lock()
			for _, h := range interruptHooks {
				h()
			}
			os.Exit(130)
		}()
	})
	interruptMu.Lock()
	defer interruptMu.Unlock()
	interruptHooks = append(interruptHooks, fn)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
