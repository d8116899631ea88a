// Package refresher renews tenants' Meta access tokens before they expire and checks the
// ones that never expire, so that a lapsed or revoked token is found before a customer's
// message fails.
//
// Every pass claims due accounts with a lease (one short transaction, FOR UPDATE SKIP
// LOCKED, committed before any Graph call), so replicas never work on one account at once
// and a crashed replica's accounts are taken over once its leases lapse. A renewal is
// Meta's fb_exchange_token exchange; its new token is stored encrypted only while the
// lease is still the claim's, and reaches every gateway and sender cache at once through
// the account change notification. A failure is counted and retried later with
// exponential backoff and full jitter; a refused (code 190) or expired token, or one that
// debug_token calls invalid, makes the account needs_reconnect.
package refresher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/retry"
)

// Graph is what the refresher asks Meta: *graph.Client.
type Graph interface {
	ExchangeToken(ctx context.Context, token string) (graph.ExchangedToken, error)
	DebugToken(ctx context.Context, token string) (graph.TokenInfo, error)
}

// Options configure a Refresher.
type Options struct {
	Accounts *account.Repository
	Graph    Graph
	Config   config.Refresher
	Logger   *slog.Logger // nil: slog.Default()
}

// Refresher runs passes over whatsapp_accounts.
type Refresher struct {
	opts Options
	log  *slog.Logger
}

// New returns a refresher.
func New(opts Options) (*Refresher, error) {
	if opts.Accounts == nil || opts.Graph == nil {
		return nil, errors.New("refresher: accounts and graph are required")
	}
	c := opts.Config
	if c.BatchSize <= 0 || c.Concurrency <= 0 || c.Lease <= 0 || c.Window <= 0 || c.CheckInterval <= 0 {
		return nil, errors.New("refresher: batch size, concurrency, lease, window and check interval must be positive")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Refresher{opts: opts, log: log}, nil
}

// Outcome is what a pass did with one account.
type Outcome string

const (
	// OutcomeRefreshed: the token was renewed and the new one stored.
	OutcomeRefreshed Outcome = "refreshed"
	// OutcomeChecked: debug_token says the token that never expires is valid.
	OutcomeChecked Outcome = "checked"
	// OutcomeFailed: the renewal or check failed; the account is tried again later, or
	// (NeedsReconnect) waits for its tenant to connect it again.
	OutcomeFailed Outcome = "failed"
	// OutcomeSkipped: not due, held by another refresher, or its claim was lost.
	OutcomeSkipped Outcome = "skipped"
)

// Result is one account's line in a pass's summary. It never holds a token.
type Result struct {
	Outcome        Outcome
	Kind           account.LeaseKind // what it was claimed for; "" when not claimed
	AccountID      string
	TenantID       string
	PhoneNumberID  string
	TokenExpiresAt *time.Time // after the pass; nil: never expires
	// NeedsReconnect: the failure made the account needs_reconnect.
	NeedsReconnect bool
	// NextAttempt is when a failed account is tried again.
	NextAttempt time.Time
	// Detail says why, in words (Meta's code and message for a failure).
	Detail string
}

// Summary is what one pass did.
type Summary struct {
	Results []Result
	// DryRun: nothing was claimed or changed; Results say what a pass would do.
	DryRun bool
	// Unlisted counts skipped accounts left out of Results (ListLimit).
	Unlisted int
}

// Count returns how many results have outcome o, plus Unlisted for skipped.
func (s *Summary) Count(o Outcome) int {
	n := 0
	for _, r := range s.Results {
		if r.Outcome == o {
			n++
		}
	}
	if o == OutcomeSkipped {
		n += s.Unlisted
	}
	return n
}

// Curried children of the refresher's counters.
var (
	refreshesOK        = metrics.TokenRefreshes.WithLabelValues("refreshed")
	refreshesFailed    = metrics.TokenRefreshes.WithLabelValues("failed")
	refreshesReconnect = metrics.TokenRefreshes.WithLabelValues("needs_reconnect")
	refreshesLost      = metrics.TokenRefreshes.WithLabelValues("lost")
	checksValid        = metrics.TokenChecks.WithLabelValues("valid")
	checksFailed       = metrics.TokenChecks.WithLabelValues("failed")
	checksReconnect    = metrics.TokenChecks.WithLabelValues("needs_reconnect")
	checksLost         = metrics.TokenChecks.WithLabelValues("lost")
)

func (r *Refresher) claimOptions() account.ClaimOptions {
	c := r.opts.Config
	return account.ClaimOptions{Window: c.Window, CheckInterval: c.CheckInterval, Lease: c.Lease, Limit: c.BatchSize}
}

// Pass claims every account due now, renewals first (soonest expiry first), then checks,
// batch by batch, and works on refresher.concurrency accounts at once. It returns when no
// due account is left unclaimed, or when ctx ends (claims not started are given back).
// An error means the database could not be reached for a claim; the summary holds what
// was done before.
func (r *Refresher) Pass(ctx context.Context) (Summary, error) {
	var sum Summary
	var mu sync.Mutex
	for _, kind := range []account.LeaseKind{account.LeaseRefresh, account.LeaseCheck} {
		for ctx.Err() == nil {
			claimed := time.Now()
			leases, err := r.opts.Accounts.Claim(ctx, kind, r.claimOptions())
			if err != nil {
				if ctx.Err() != nil {
					return sum, nil
				}
				return sum, err
			}
			if len(leases) == 0 {
				break
			}
			sem := make(chan struct{}, r.opts.Config.Concurrency)
			var wg sync.WaitGroup
			for i := range leases {
				l := &leases[i]
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					res, ok := r.work(ctx, l, claimed)
					if ok {
						mu.Lock()
						sum.Results = append(sum.Results, res)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
		}
	}
	return sum, nil
}

// work renews or checks one claimed account and records the outcome. ok is false when
// ctx ended first: the lease was given back and nothing is reported.
func (r *Refresher) work(ctx context.Context, l *account.Lease, claimed time.Time) (Result, bool) {
	res := Result{Kind: l.Kind, AccountID: l.AccountID, TenantID: l.TenantID, PhoneNumberID: l.PhoneNumberID,
		TokenExpiresAt: l.TokenExpiresAt}
	log := r.log.With("account_id", l.AccountID, "tenant", l.TenantID, "phone_number_id", l.PhoneNumberID, "kind", string(l.Kind))
	if ctx.Err() != nil {
		r.release(l, log)
		return res, false
	}
	// The Graph call must end well before the lease lapses: past it another refresher may
	// claim the account and renew the same token again.
	lease := r.opts.Config.Lease
	gctx, cancel := context.WithDeadline(ctx, claimed.Add(lease-max(lease/4, 500*time.Millisecond)))
	defer cancel()
	// The outcome is written even when ctx ends after the call: Meta's answer is known.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()

	now := time.Now()
	var fail *account.Failure
	switch {
	case l.DecryptErr != nil:
		fail = &account.Failure{Error: "the stored token cannot be decrypted with secrets.token_keys"}
		log.Error("stored token cannot be decrypted", "error", l.DecryptErr.Error())
	case l.Kind == account.LeaseRefresh && l.TokenExpiresAt != nil && !now.Before(*l.TokenExpiresAt):
		fail = &account.Failure{NeedsReconnect: true, Error: "token expired at " +
			l.TokenExpiresAt.UTC().Format(time.RFC3339) + "; an expired token cannot be renewed: the tenant must connect the account again"}
	case l.Kind == account.LeaseRefresh:
		ex, err := r.opts.Graph.ExchangeToken(gctx, l.AccessToken.Reveal())
		if err != nil {
			if ctx.Err() != nil {
				r.release(l, log)
				return res, false
			}
			fail = graphFailure(err, "renewing the token")
			break
		}
		var exp *time.Time
		if ex.ExpiresIn > 0 {
			t := now.Add(ex.ExpiresIn).UTC().Truncate(time.Second)
			exp = &t
		}
		err = r.opts.Accounts.StoreRefreshed(wctx, l, ex.AccessToken, exp)
		switch {
		case errors.Is(err, account.ErrLeaseLost):
			// Another claim holds it now, or the account was reconnected meanwhile.
			refreshesLost.Inc()
			log.Warn("renewed token not stored: the account's lease or token changed meanwhile")
			res.Outcome, res.Detail = OutcomeSkipped, "lease lost: another refresher holds the account, or it was reconnected"
			return res, true
		case err != nil:
			// The lease lapses and a later pass renews again; the token Meta just gave
			// is lost, the old one stays valid until it expires.
			refreshesFailed.Inc()
			log.Error("storing renewed token", "error", err.Error())
			res.Outcome, res.Detail = OutcomeFailed, "renewed, but storing the new token failed: "+err.Error()
			return res, true
		}
		refreshesOK.Inc()
		res.Outcome, res.TokenExpiresAt = OutcomeRefreshed, exp
		res.Detail = "renewed"
		if l.TokenExpiresAt != nil {
			res.Detail += "; was expiring " + l.TokenExpiresAt.UTC().Format(time.RFC3339)
		}
		log.Info("token renewed", "token_expires_at", timeAttr(exp))
		return res, true
	default: // LeaseCheck
		info, err := r.opts.Graph.DebugToken(gctx, l.AccessToken.Reveal())
		switch {
		case err != nil && ctx.Err() != nil:
			r.release(l, log)
			return res, false
		case err != nil:
			// debug_token is called with the app's token: a 190 there is about the
			// app, not the tenant's token.
			fail = graphFailure(err, "debug_token")
			fail.NeedsReconnect = false
		case !info.IsValid:
			fail = &account.Failure{NeedsReconnect: true,
				Error: "debug_token: the token is no longer valid (revoked or expired): the tenant must connect the account again"}
		default:
			var exp *time.Time
			if !info.ExpiresAt.IsZero() {
				exp = &info.ExpiresAt
			}
			err := r.opts.Accounts.RecordChecked(wctx, l, exp)
			switch {
			case errors.Is(err, account.ErrLeaseLost):
				checksLost.Inc()
				res.Outcome, res.Detail = OutcomeSkipped, "lease lost: another refresher holds the account, or it was reconnected"
				return res, true
			case err != nil:
				checksFailed.Inc()
				log.Error("recording check", "error", err.Error())
				res.Outcome, res.Detail = OutcomeFailed, "valid, but recording the check failed: "+err.Error()
				return res, true
			}
			checksValid.Inc()
			res.Outcome, res.Detail = OutcomeChecked, "debug_token: valid"
			if exp != nil {
				res.TokenExpiresAt = exp
				res.Detail += "; Meta now reports an expiry"
			}
			log.Debug("token checked: valid")
			return res, true
		}
	}

	c := r.opts.Config
	fail.NextAttempt = now.Add(retry.Backoff(l.Attempts+1, c.RetryBaseDelay, c.RetryMaxDelay, nil))
	err := r.opts.Accounts.RecordFailure(wctx, l, *fail)
	res.Outcome, res.NeedsReconnect, res.NextAttempt = OutcomeFailed, fail.NeedsReconnect, fail.NextAttempt
	if fail.NeedsReconnect {
		res.Detail = "needs_reconnect: " + fail.Error
	} else {
		res.Detail = "next attempt " + fail.NextAttempt.UTC().Format(time.RFC3339) + ": " + fail.Error
	}
	switch {
	case errors.Is(err, account.ErrLeaseLost):
		countLost(l.Kind)
		res.Outcome, res.NeedsReconnect = OutcomeSkipped, false
		res.Detail = "lease lost: another refresher holds the account, or it was reconnected"
		return res, true
	case err != nil:
		log.Error("recording failure", "error", err.Error(), "failure", fail.Error)
		res.Detail += " (not recorded: " + err.Error() + ")"
	}
	countFailure(l.Kind, fail.NeedsReconnect)
	if fail.NeedsReconnect {
		log.Warn("token cannot be used any more; account needs reconnecting", "reason", fail.Error)
	} else {
		log.Warn("token "+string(l.Kind)+" failed; trying again later", "reason", fail.Error,
			"attempts", l.Attempts+1, "next_attempt", fail.NextAttempt.UTC())
	}
	return res, true
}

func countLost(kind account.LeaseKind) {
	if kind == account.LeaseCheck {
		checksLost.Inc()
	} else {
		refreshesLost.Inc()
	}
}

func countFailure(kind account.LeaseKind, reconnect bool) {
	switch {
	case kind == account.LeaseCheck && reconnect:
		checksReconnect.Inc()
	case kind == account.LeaseCheck:
		checksFailed.Inc()
	case reconnect:
		refreshesReconnect.Inc()
	default:
		refreshesFailed.Inc()
	}
}

// graphFailure turns a Graph error into a Failure: code 190 (the token was refused:
// revoked, expired, or otherwise invalid) needs the tenant to reconnect; anything else is
// tried again later. The text is Meta's code and message, which never hold the token.
func graphFailure(err error, what string) *account.Failure {
	var ge *graph.Error
	if errors.As(err, &ge) {
		return &account.Failure{NeedsReconnect: ge.Code == graph.CodeAccessToken, Error: what + ": " + ge.Error()}
	}
	return &account.Failure{Error: what + ": " + err.Error()}
}

func (r *Refresher) release(l *account.Lease, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.opts.Accounts.ReleaseLease(ctx, l); err != nil {
		log.Warn("giving back a claim; it lapses by itself", "error", err.Error())
	}
}

func timeAttr(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// UpdateStats sets the account gauges: accounts by token status, active accounts
// expiring within the window, and the time until the soonest expiry.
func (r *Refresher) UpdateStats(ctx context.Context) error {
	st, err := r.opts.Accounts.Stats(ctx, r.opts.Config.Window)
	if err != nil {
		return err
	}
	for _, s := range []account.TokenStatus{account.StatusActive, account.StatusExpired, account.StatusInvalid,
		account.StatusNeedsReconnect, account.StatusDisconnected} {
		metrics.Accounts.WithLabelValues(string(s)).Set(float64(st.ByStatus[s]))
	}
	metrics.AccountsExpiring.Set(float64(st.Expiring))
	if st.EarliestExpiry == nil {
		metrics.TokenEarliestExpiry.Set(math.Inf(1))
	} else {
		metrics.TokenEarliestExpiry.Set(time.Until(*st.EarliestExpiry).Seconds())
	}
	return nil
}

// ListLimit bounds the skipped accounts a summary lists one by one.
const ListLimit = 1000

// AddSkipped adds to sum a skipped line for every active account the pass did not
// report (not due, backing off, or held by another refresher), up to ListLimit.
func (r *Refresher) AddSkipped(ctx context.Context, sum *Summary) error {
	pending, total, err := r.opts.Accounts.ListActive(ctx, r.claimOptions(), ListLimit+len(sum.Results))
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, res := range sum.Results {
		seen[res.AccountID] = true
	}
	now := time.Now()
	notListed := total - len(pending) // active accounts past the query's limit
	listed := 0
	for _, p := range pending {
		if seen[p.AccountID] {
			continue
		}
		if listed == ListLimit {
			notListed++
			continue
		}
		listed++
		sum.Results = append(sum.Results, Result{Outcome: OutcomeSkipped, AccountID: p.AccountID, TenantID: p.TenantID,
			PhoneNumberID: p.PhoneNumberID, TokenExpiresAt: p.TokenExpiresAt, Detail: r.whyNotDue(p, now)})
	}
	sum.Unlisted = max(0, notListed)
	return nil
}

// DryRun lists what a pass would do now, changing nothing.
func (r *Refresher) DryRun(ctx context.Context) (Summary, error) {
	sum := Summary{DryRun: true}
	pending, total, err := r.opts.Accounts.ListActive(ctx, r.claimOptions(), ListLimit)
	if err != nil {
		return sum, err
	}
	now := time.Now()
	for _, p := range pending {
		res := Result{Kind: p.Due, AccountID: p.AccountID, TenantID: p.TenantID, PhoneNumberID: p.PhoneNumberID,
			TokenExpiresAt: p.TokenExpiresAt}
		switch {
		case p.Due == account.LeaseRefresh && p.TokenExpiresAt != nil && !now.Before(*p.TokenExpiresAt):
			res.Outcome, res.NeedsReconnect = OutcomeFailed, true
			res.Detail = "would mark needs_reconnect: the token expired at " + p.TokenExpiresAt.UTC().Format(time.RFC3339)
		case p.Due == account.LeaseRefresh:
			res.Outcome, res.Detail = OutcomeRefreshed, "would renew: expires in "+roundDuration(p.TokenExpiresAt.Sub(now))
		case p.Due == account.LeaseCheck:
			res.Outcome, res.Detail = OutcomeChecked, "would check with debug_token"
		default:
			res.Outcome, res.Detail = OutcomeSkipped, r.whyNotDue(p, now)
		}
		sum.Results = append(sum.Results, res)
	}
	sum.Unlisted = max(0, total-len(pending))
	return sum, nil
}

func (r *Refresher) whyNotDue(p account.Pending, now time.Time) string {
	c := r.opts.Config
	switch {
	case p.LeaseUntil != nil && p.LeaseUntil.After(now):
		return "held by another refresher until " + p.LeaseUntil.UTC().Format(time.RFC3339)
	case p.NextRefreshAt != nil && p.NextRefreshAt.After(now):
		return fmt.Sprintf("backing off after %d failed attempts; next at %s", p.RefreshAttempts, p.NextRefreshAt.UTC().Format(time.RFC3339))
	case p.TokenExpiresAt != nil:
		return "expires in " + roundDuration(p.TokenExpiresAt.Sub(now)) + ", outside the " + roundDuration(c.Window) + " window"
	case p.LastCheckedAt != nil:
		return "never expires; checked " + roundDuration(now.Sub(*p.LastCheckedAt)) + " ago, next check after " +
			p.LastCheckedAt.Add(c.CheckInterval).UTC().Format(time.RFC3339)
	}
	return "never expires"
}

// roundDuration prints d in days and hours when it is that long.
func roundDuration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 48*time.Hour:
		d = d.Round(time.Hour)
		days := d / (24 * time.Hour)
		hours := d % (24 * time.Hour) / time.Hour
		s = fmt.Sprintf("%dd", days)
		if hours > 0 {
			s += fmt.Sprintf("%dh", hours)
		}
	case d >= time.Hour:
		s = d.Round(time.Minute).String()
	default:
		s = d.Round(time.Second).String()
	}
	if neg {
		return "-" + s
	}
	return s
}

// Failed reports whether any account failed in the pass.
func (s *Summary) Failed() bool {
	return slices.ContainsFunc(s.Results, func(r Result) bool { return r.Outcome == OutcomeFailed })
}
