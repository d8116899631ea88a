// Command aerogate is the multi-tenant edge gateway for the WhatsApp Business Cloud API.
// It holds subcommand wiring only: every role lives in its own package.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/aerostic/aerogate/config"
)

type command struct {
	name    string
	summary string
	flags   func(fs *pflag.FlagSet) // extra flags beyond the configuration's
	run     func(ctx context.Context, cfg config.Config, fs *pflag.FlagSet, stdout io.Writer) error
}

var commands = []command{
	{name: "dev", summary: "run every role in one process with an embedded Kafka broker and a fake Graph API", run: runDev},
	{name: "gateway", summary: "run the HTTP edge: tenant JWT auth, send API", run: runGateway},
	{name: "sender", summary: "drain wa.sends to the Graph API with each tenant's own token", run: runSender},
	{name: "refresher", summary: "renew tenants' expiring Meta tokens and check the ones that never expire (--once, --dry-run)", flags: refresherFlags, run: runRefresher},
	{name: "webhooks", summary: "run Meta's webhook edge alone: signed POSTs published to wa.webhooks", run: runWebhooks},
	{name: "ingest", summary: "store Meta's webhooks: inbound messages, statuses and account updates, published to wa.events", run: runIngest},
	{name: "migrate", summary: "apply the database migrations and create the Kafka topics, waiting for both (--wait)", flags: migrateFlags, run: runMigrate},
	{name: "broker", summary: "run dev's embedded Kafka-protocol broker alone (dev.kafka_addr, log under dev.data_dir)", run: runBroker},
	{name: "fake-graph", summary: "run dev's fake Graph API alone (dev.fake_graph_addr), for running without a Meta app", flags: fakeGraphFlags, run: runFakeGraph},
	{name: "healthcheck", summary: "exit 0 when /readyz on admin.addr (or --url) answers 200: a container health check", flags: healthcheckFlags, run: runHealthcheck},
	{name: "version", summary: "print the version and the VCS revision of this binary", run: runVersion},
	{name: "token", summary: "print a tenant JWT that the configured (or dev) key accepts", flags: tokenFlags, run: runToken},
	{name: "accounts", summary: "add, list or remove tenants' WhatsApp accounts, or re-encrypt their tokens with the first key (accounts add|list|remove|rotate-keys)", flags: accountsFlags, run: runAccounts},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	cmd := lookupCommand(args[0])
	if cmd == nil {
		fmt.Fprintf(stderr, "aerogate: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}

	out := stderr
	if slices.Contains(args[1:], "-h") || slices.Contains(args[1:], "--help") {
		out = stdout // asked for: help goes to stdout; after a mistake, to stderr
	}
	fs := cmd.flagSet(out)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "aerogate %s: %v (see aerogate %s --help)\n", cmd.name, err, cmd.name)
		return 2
	}
	cfg, err := config.Load(fs)
	if err != nil {
		fmt.Fprintf(stderr, "aerogate %s: %v\n", cmd.name, err)
		return 2
	}
	slog.SetDefault(newLogger(cfg.Log, stderr))
	for _, name := range config.UnknownEnv(os.Environ()) {
		slog.Warn("ignoring unknown environment variable " + name)
	}

	ctx, stop := stopOnSignal(cfg.Shutdown.Grace, osExit)
	defer stop()
	if err := cmd.run(ctx, cfg, fs, stdout); err != nil {
		fmt.Fprintf(stderr, "aerogate %s: %v\n", cmd.name, err)
		return 1
	}
	return 0
}

// lookupCommand returns the command named name, or nil.
func lookupCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// flagSet returns the command's flags (its own, then every configuration key's),
// writing errors and help to out.
func (c *command) flagSet(out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("aerogate "+c.name, pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	if c.flags != nil {
		c.flags(fs)
	}
	config.Flags(fs)
	return fs
}

// osExit ends the process; tests replace it.
var osExit = os.Exit

// stopOnSignal returns a context that ends at the first SIGTERM or SIGINT, so the command
// stops gracefully. From then on the process exits at once, with status 1, if the stop
// takes longer than grace, or with status 130 at a second signal. stop releases the
// signals.
func stopOnSignal(grace time.Duration, exit func(int)) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case <-done:
			return
		}
		slog.Info("stopping gracefully; a second signal exits at once", "signal", sig.String(), "grace", grace)
		cancel()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case sig = <-sigs:
			slog.Warn("second signal: exiting now", "signal", sig.String())
			exit(130)
		case <-t.C:
			slog.Error("graceful stop took longer than shutdown.grace: exiting now", "grace", grace)
			exit(1)
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: aerogate <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'aerogate <command> --help' for the command's flags. Secrets (jwt.secret,")
	fmt.Fprintln(w, "secrets.token_keys, meta.app_secret, database.url) come from --config or AEROGATE_* only.")
}

// attrNames maps the attribute names some packages use to the one name every role's
// logs use for the thing.
var attrNames = map[string]string{"err": "error", "tenant_id": "tenant"}

// sameNames gives every log attribute its one name (attrNames), whichever package wrote it.
func sameNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 {
		if name, ok := attrNames[a.Key]; ok {
			a.Key = name
		}
	}
	return a
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: sameNames}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
