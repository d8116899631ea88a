package account

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ErrLeaseLost means a refresher's claim on an account is no longer its own: the lease
// lapsed and another refresher took the account, or the account's token was replaced
// (reconnected, disconnected) since the claim. Nothing was written.
var ErrLeaseLost = errors.New("refresh lease lost")

// LeaseKind says why an account was claimed.
type LeaseKind string

const (
	// LeaseRefresh: an active token that expires within the window, to be renewed.
	LeaseRefresh LeaseKind = "refresh"
	// LeaseCheck: an active token that never expires, to be checked with debug_token.
	LeaseCheck LeaseKind = "check"
)

// Lease is one account a refresher claimed, with its decrypted token. The claim is the
// refresher's until Until, and its outcome is written only while Holder is still the
// account's lease holder and the token is still the one read here.
type Lease struct {
	Kind           LeaseKind
	AccountID      string
	TenantID       string
	WABAID         string
	PhoneNumberID  string
	AccessToken    Token
	TokenExpiresAt *time.Time // nil: never expires
	Attempts       int        // failed refreshes or checks before this one
	Holder         string
	Until          time.Time // by the database's clock
	// DecryptErr is set when the stored token could not be decrypted (AccessToken is
	// then empty): the lease is the refresher's to record as a failure.
	DecryptErr error

	ciphertext []byte
}

// ClaimOptions selects the accounts a claim takes.
type ClaimOptions struct {
	Window        time.Duration // LeaseRefresh: tokens expiring within it
	CheckInterval time.Duration // LeaseCheck: tokens not checked within it
	Lease         time.Duration // how long the claim is held
	Limit         int
}

func micros(d time.Duration) int64 { return d.Microseconds() }

// dueRefresh and dueCheck are the conditions of an account due for a renewal or a check
// ($1 the window or check interval in microseconds), the lease included: a lapsed lease
// (a crashed refresher's) no longer holds the account.
const (
	dueRefresh = `token_status = 'active' AND token_expires_at IS NOT NULL
		AND token_expires_at < now() + $1 * interval '1 microsecond'
		AND (next_refresh_at IS NULL OR next_refresh_at <= now())`
	dueCheck = `token_status = 'active' AND token_expires_at IS NULL
		AND (last_checked_at IS NULL OR last_checked_at <= now() - $1 * interval '1 microsecond')
		AND (next_refresh_at IS NULL OR next_refresh_at <= now())`
	leaseFree = `(refresh_lease_until IS NULL OR refresh_lease_until < now())`
)

// Claim leases up to opts.Limit accounts due for kind, in one short transaction that is
// committed before it returns, so that no transaction stays open while the refresher
// calls Graph. Rows another refresher is claiming at the same moment are skipped (FOR
// UPDATE SKIP LOCKED), and rows it holds a live lease on are not due: two refreshers never
// hold one account at once. The soonest-expiring (or longest-unchecked) accounts come
// first. A claim changes nothing a cache holds, so it notifies no one.
func (r *Repository) Claim(ctx context.Context, kind LeaseKind, opts ClaimOptions) ([]Lease, error) {
	due, order, span := dueRefresh, "token_expires_at", opts.Window
	if kind == LeaseCheck {
		due, order, span = dueCheck, "last_checked_at NULLS FIRST", opts.CheckInterval
	}
	holder := uuid.NewString()
	rows, err := r.pool.Query(ctx, `UPDATE whatsapp_accounts SET
			refresh_lease_until = now() + $2 * interval '1 microsecond', refresh_lease_holder = $3::uuid
		WHERE id IN (SELECT id FROM whatsapp_accounts WHERE `+due+` AND `+leaseFree+`
			ORDER BY `+order+` LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING id::text, tenant_id, waba_id, phone_number_id, access_token, token_expires_at,
			refresh_attempts, refresh_lease_until`,
		micros(span), micros(opts.Lease), holder, opts.Limit)
	if err != nil {
		return nil, fmt.Errorf("claiming accounts to %s: %w", kind, err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		l := Lease{Kind: kind, Holder: holder}
		if err := rows.Scan(&l.AccountID, &l.TenantID, &l.WABAID, &l.PhoneNumberID, &l.ciphertext,
			&l.TokenExpiresAt, &l.Attempts, &l.Until); err != nil {
			return nil, fmt.Errorf("claiming accounts to %s: %w", kind, err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming accounts to %s: %w", kind, err)
	}
	for i := range out {
		l := &out[i]
		plain, err := r.keys.Decrypt(l.ciphertext, tokenAAD(l.TenantID, l.AccountID))
		if err != nil {
			l.DecryptErr = fmt.Errorf("decrypting token of account %s: %w", l.AccountID, err)
			continue
		}
		l.AccessToken = Token(plain)
	}
	return out, nil
}

// ours is the condition of a write of a lease's outcome: the lease is still this claim's
// and the token is still the one it read ($1 id, $2 holder, $3 ciphertext).
const ours = `id = $1::uuid AND refresh_lease_holder = $2::uuid AND access_token = $3`

// StoreRefreshed stores the renewed token (encrypted, bound to the row) and its expiry,
// sets the status active, resets the failure bookkeeping, records last_refreshed_at and
// releases the lease. The change notifies every cache. ErrLeaseLost when the lease is no
// longer this claim's.
func (r *Repository) StoreRefreshed(ctx context.Context, l *Lease, token string, expiresAt *time.Time) error {
	if strings.TrimSpace(token) == "" || strings.IndexByte(token, 0) >= 0 {
		return fmt.Errorf("%w: renewed access token is empty or contains a NUL byte", ErrInvalidInput)
	}
	ct, kid, err := r.keys.Encrypt([]byte(token), tokenAAD(l.TenantID, l.AccountID))
	if err != nil {
		return fmt.Errorf("encrypting token: %w", err)
	}
	tag, err := r.pool.Exec(ctx, `UPDATE whatsapp_accounts SET
			access_token = $4, token_key_id = $5, token_expires_at = $6, token_status = 'active',
			refresh_attempts = 0, next_refresh_at = NULL, last_refresh_error = '',
			last_refreshed_at = now(), refresh_lease_until = NULL, refresh_lease_holder = NULL,
			updated_at = now()
		WHERE `+ours, l.AccountID, l.Holder, l.ciphertext, ct, kid, expiresAt)
	if err != nil {
		return fmt.Errorf("storing renewed token of account %s: %w", l.AccountID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	l.ciphertext = ct
	return nil
}

// Failure is the outcome of a failed renewal or check.
type Failure struct {
	// Error is what went wrong: Meta's code and message, never a token.
	Error string
	// NextAttempt is when the account is due again.
	NextAttempt time.Time
	// NeedsReconnect sets the status needs_reconnect: the token was refused (190),
	// expired, or debug_token calls it invalid; only the tenant can fix it, by
	// connecting the account again.
	NeedsReconnect bool
}

// RecordFailure counts a failed renewal or check: attempts + 1, the error kept, the next
// attempt pushed back, the status needs_reconnect when f says so, the lease released.
// ErrLeaseLost when the lease is no longer this claim's.
func (r *Repository) RecordFailure(ctx context.Context, l *Lease, f Failure) error {
	tag, err := r.pool.Exec(ctx, `UPDATE whatsapp_accounts SET
			refresh_attempts = refresh_attempts + 1, last_refresh_error = $4, next_refresh_at = $5,
			token_status = CASE WHEN $6::boolean THEN 'needs_reconnect' ELSE token_status END,
			last_checked_at = CASE WHEN $7::boolean THEN now() ELSE last_checked_at END,
			refresh_lease_until = NULL, refresh_lease_holder = NULL, updated_at = now()
		WHERE `+ours, l.AccountID, l.Holder, l.ciphertext, cleanText(f.Error), f.NextAttempt,
		f.NeedsReconnect, l.Kind == LeaseCheck)
	if err != nil {
		return fmt.Errorf("recording failed %s of account %s: %w", l.Kind, l.AccountID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// RecordChecked records a passed check: last_checked_at, the failure bookkeeping reset
// (which notifies only when there was some), and the lease released. expiresAt, when
// Meta now reports one, becomes the token's expiry, so the token is renewed in time.
// ErrLeaseLost when the lease is no longer this claim's.
func (r *Repository) RecordChecked(ctx context.Context, l *Lease, expiresAt *time.Time) error {
	tag, err := r.pool.Exec(ctx, `UPDATE whatsapp_accounts SET
			last_checked_at = now(), refresh_lease_until = NULL, refresh_lease_holder = NULL,
			refresh_attempts = 0, next_refresh_at = NULL, last_refresh_error = '',
			token_expires_at = COALESCE($4::timestamptz, token_expires_at)
		WHERE `+ours, l.AccountID, l.Holder, l.ciphertext, expiresAt)
	if err != nil {
		return fmt.Errorf("recording check of account %s: %w", l.AccountID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// ReleaseLease gives a claim back without recording anything (the refresher is stopping),
// so the account is due again at once rather than when the lease lapses.
func (r *Repository) ReleaseLease(ctx context.Context, l *Lease) error {
	_, err := r.pool.Exec(ctx, `UPDATE whatsapp_accounts SET refresh_lease_until = NULL, refresh_lease_holder = NULL
		WHERE id = $1::uuid AND refresh_lease_holder = $2::uuid`, l.AccountID, l.Holder)
	if err != nil {
		return fmt.Errorf("releasing lease of account %s: %w", l.AccountID, err)
	}
	return nil
}

// Pending is an active account as the refresher sees it, without its token: for the
// dry run and the skipped lines of a pass's summary.
type Pending struct {
	AccountID       string
	TenantID        string
	PhoneNumberID   string
	TokenExpiresAt  *time.Time
	NextRefreshAt   *time.Time
	RefreshAttempts int
	LastCheckedAt   *time.Time
	LeaseUntil      *time.Time
	// Due is the lease kind the account is due for now, or "" when it is not due.
	Due LeaseKind
}

// ListActive lists up to limit active accounts, the soonest-expiring first and those that
// never expire last, marking the ones due now (as Claim would take them), and counts them
// all. It leases nothing.
func (r *Repository) ListActive(ctx context.Context, opts ClaimOptions, limit int) ([]Pending, int, error) {
	var total int
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_accounts WHERE token_status = 'active'`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("counting active accounts: %w", err)
	}
	rows, err := r.pool.Query(ctx, `SELECT id::text, tenant_id, phone_number_id, token_expires_at, next_refresh_at,
			refresh_attempts, last_checked_at, refresh_lease_until,
			CASE WHEN (`+dueRefresh+`) AND `+leaseFree+` THEN 'refresh'
			     WHEN (`+strings.ReplaceAll(dueCheck, "$1", "$2")+`) AND `+leaseFree+` THEN 'check'
			     ELSE '' END
		FROM whatsapp_accounts WHERE token_status = 'active'
		ORDER BY token_expires_at NULLS LAST, last_checked_at NULLS FIRST, id LIMIT $3`,
		micros(opts.Window), micros(opts.CheckInterval), limit)
	if err != nil {
		return nil, 0, fmt.Errorf("listing active accounts: %w", err)
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var p Pending
		var due string
		if err := rows.Scan(&p.AccountID, &p.TenantID, &p.PhoneNumberID, &p.TokenExpiresAt, &p.NextRefreshAt,
			&p.RefreshAttempts, &p.LastCheckedAt, &p.LeaseUntil, &due); err != nil {
			return nil, 0, fmt.Errorf("listing active accounts: %w", err)
		}
		p.Due = LeaseKind(due)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("listing active accounts: %w", err)
	}
	return out, total, nil
}

// TokenStats is what the refresher's gauges show.
type TokenStats struct {
	ByStatus map[TokenStatus]int
	// Expiring counts active accounts whose token expires within the window.
	Expiring int
	// EarliestExpiry is the soonest expiry among active accounts; nil when none expires.
	EarliestExpiry *time.Time
}

// Stats counts accounts by token status, the active ones expiring within window, and
// finds the soonest expiry among active accounts.
func (r *Repository) Stats(ctx context.Context, window time.Duration) (TokenStats, error) {
	st := TokenStats{ByStatus: map[TokenStatus]int{}}
	rows, err := r.pool.Query(ctx, `SELECT token_status, count(*) FROM whatsapp_accounts GROUP BY token_status`)
	if err != nil {
		return st, fmt.Errorf("counting accounts by token status: %w", err)
	}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return st, fmt.Errorf("counting accounts by token status: %w", err)
		}
		st.ByStatus[TokenStatus(s)] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("counting accounts by token status: %w", err)
	}
	err = r.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE token_expires_at < now() + $1 * interval '1 microsecond'),
			min(token_expires_at)
		FROM whatsapp_accounts WHERE token_status = 'active' AND token_expires_at IS NOT NULL`,
		micros(window)).Scan(&st.Expiring, &st.EarliestExpiry)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("counting expiring accounts: %w", err)
	}
	return st, nil
}

// cleanText makes an error text storable: valid UTF-8 without NUL, at most 500 bytes.
func cleanText(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "?")
	if len(s) > 500 {
		s = s[:500]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
