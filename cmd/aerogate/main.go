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
	"strings"
	"syscall"

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
	{name: "webhooks", summary: "run Meta's webhook edge alone: signed POSTs published to wa.webhooks", run: runWebhooks},
	{name: "ingest", summary: "store Meta's webhooks: inbound messages, statuses and account updates, published to wa.events", run: runIngest},
	{name: "migrate", summary: "apply the embedded database migrations", run: runMigrate},
	{name: "token", summary: "print a tenant JWT that the configured (or dev) key accepts", flags: tokenFlags, run: runToken},
	{name: "accounts", summary: "add, list or remove tenants' WhatsApp accounts (accounts add|list|remove)", flags: accountsFlags, run: runAccounts},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == args[0] {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "aerogate: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}

	fs := pflag.NewFlagSet("aerogate "+cmd.name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	config.Flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
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

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, cfg, fs, stdout); err != nil {
		fmt.Fprintf(stderr, "aerogate %s: %v\n", cmd.name, err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: aerogate <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'aerogate <command> --help' for the command's flags. Secrets (jwt.secret,")
	fmt.Fprintln(w, "secrets.token_keys, meta.app_secret, database.url) come from --config or AEROGATE_* only.")
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
