package refresher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/retry"
	"github.com/aerostic/aerogate/internal/role"
)

// statsInterval is how often the long-running refresher updates the account gauges
// between passes.
const statsInterval = 30 * time.Second

// ErrFailed is returned by Once when at least one account failed.
var ErrFailed = errors.New("some accounts failed")

// Run is the refresher role of `aerogate refresher` and `aerogate dev`: role.Open checks
// the keys it reads and builds the pool, key ring and Graph client, and serves /metrics,
// /healthz and /readyz on admin.addr; Run makes a pass at once and then every
// refresher.interval until ctx is cancelled, and returns nil then.
func Run(ctx context.Context, cfg config.Config) error {
	deps, err := role.Open(ctx, cfg, config.RoleRefresher)
	if err != nil {
		return fmt.Errorf("refresher: %w", err)
	}
	defer deps.Close()
	r, err := New(Options{Accounts: deps.Accounts.Repository, Graph: deps.Graph, Config: cfg.Refresher, Logger: deps.Log})
	if err != nil {
		return err
	}
	// Work until the drain that follows a signal: readiness is false by then, and a pass
	// in flight finishes its Graph calls and records them (leases bound the rest).
	return r.Loop(deps.Context())
}

// Loop makes a pass now and every refresher.interval, updating the account gauges after
// each pass and every 30 seconds between, until ctx ends.
func (r *Refresher) Loop(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		sum, err := r.Pass(ctx)
		wait := r.opts.Config.Interval
		if err != nil {
			// The database is unreachable: try again sooner than the next interval.
			failures++
			wait = min(wait, retry.Backoff(failures, time.Second, time.Minute, nil))
			r.log.Warn("refresher pass stopped", "error", err.Error(), "retry_in", wait)
		} else {
			failures = 0
		}
		if len(sum.Results) > 0 {
			r.log.Info("refresher pass done", "refreshed", sum.Count(OutcomeRefreshed), "failed", sum.Count(OutcomeFailed),
				"checked", sum.Count(OutcomeChecked), "skipped", sum.Count(OutcomeSkipped), "duration", time.Since(start).Round(time.Millisecond))
		}
		next := time.Now().Add(wait)
		for ctx.Err() == nil {
			if err := r.UpdateStats(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("updating account gauges", "error", err.Error())
			}
			left := time.Until(next)
			if left <= 0 || !retry.Sleep(ctx, min(left, statsInterval)) || time.Until(next) <= 0 {
				break
			}
		}
	}
	return nil
}

// Once is `aerogate refresher --once` (and with dryRun `--dry-run`): one pass, or with
// dryRun a listing of what a pass would do, written to w as one line per account and a
// summary (refreshed, failed, checked, skipped). No token is ever written. It returns
// ErrFailed when an account failed, so the process exits 1.
func Once(ctx context.Context, cfg config.Config, w io.Writer, dryRun bool) error {
	cfg.Admin.Addr = "" // a one-off run next to a running refresher must not take its port
	deps, err := role.Open(ctx, cfg, config.RoleRefresher)
	if err != nil {
		return fmt.Errorf("refresher: %w", err)
	}
	defer deps.Close()
	r, err := New(Options{Accounts: deps.Accounts.Repository, Graph: deps.Graph, Config: cfg.Refresher, Logger: deps.Log})
	if err != nil {
		return err
	}
	var sum Summary
	if dryRun {
		if sum, err = r.DryRun(ctx); err != nil {
			return err
		}
	} else {
		sum, err = r.Pass(ctx)
		if err != nil {
			_ = sum.Write(w)
			return err
		}
		if err := r.AddSkipped(ctx, &sum); err != nil {
			return err
		}
		if err := r.UpdateStats(ctx); err != nil {
			r.log.Warn("updating account gauges", "error", err.Error())
		}
	}
	if err := sum.Write(w); err != nil {
		return err
	}
	if !dryRun && sum.Failed() {
		return fmt.Errorf("%w: %d", ErrFailed, sum.Count(OutcomeFailed))
	}
	return nil
}

// Write prints one line per account (outcome, tenant, phone number id, account id, token
// expiry, detail) and then the counts. It never prints a token.
func (s *Summary) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "OUTCOME"
	if s.DryRun {
		head = "WOULD"
	}
	fmt.Fprintf(tw, "%s\tTENANT\tPHONE_NUMBER_ID\tACCOUNT_ID\tTOKEN_EXPIRES_AT\tDETAIL\n", head)
	order := []Outcome{OutcomeRefreshed, OutcomeFailed, OutcomeChecked, OutcomeSkipped}
	for _, o := range order {
		for _, r := range s.Results {
			if r.Outcome != o {
				continue
			}
			out := string(r.Outcome)
			if s.DryRun {
				out = map[Outcome]string{OutcomeRefreshed: "refresh", OutcomeFailed: "fail", OutcomeChecked: "check", OutcomeSkipped: "skip"}[o]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", out, oneLine(r.TenantID), r.PhoneNumberID, r.AccountID,
				timeAttr(r.TokenExpiresAt), oneLine(r.Detail))
		}
	}
	if s.Unlisted > 0 {
		fmt.Fprintf(tw, "skip\t…\t\t\t\t%d more accounts not listed\n", s.Unlisted)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verb := ""
	if s.DryRun {
		verb = "dry run: would have "
	}
	_, err := fmt.Fprintf(w, "%srefreshed %d, failed %d, checked %d, skipped %d\n", verb,
		s.Count(OutcomeRefreshed), s.Count(OutcomeFailed), s.Count(OutcomeChecked), s.Count(OutcomeSkipped))
	return err
}

// oneLine keeps a field on its line and in its column.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}
