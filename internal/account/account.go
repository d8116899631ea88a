// Package account holds tenants' WhatsApp Business Accounts: the model, the pgx repository
// (tokens encrypted at rest through internal/secret) and the ristretto-backed Resolver that
// every gateway and sender instance reads them through, invalidated by LISTEN/NOTIFY.
package account

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// TokenStatus is the state of an account's access token.
type TokenStatus string

const (
	StatusActive         TokenStatus = "active"
	StatusExpired        TokenStatus = "expired"
	StatusInvalid        TokenStatus = "invalid"
	StatusNeedsReconnect TokenStatus = "needs_reconnect"
	// StatusDisconnected: the tenant disconnected the account; its token is erased.
	StatusDisconnected TokenStatus = "disconnected"
)

// Valid reports whether s is one of the statuses.
func (s TokenStatus) Valid() bool {
	switch s {
	case StatusActive, StatusExpired, StatusInvalid, StatusNeedsReconnect, StatusDisconnected:
		return true
	}
	return false
}

var (
	// ErrNotFound means no account matches for that tenant; another tenant's account
	// is not found either.
	ErrNotFound = errors.New("account not found")
	// ErrTokenExpired means the account's token has expired (by status or by time).
	ErrTokenExpired = errors.New("account token expired")
	// ErrNeedsReconnect means the tenant must reconnect the account (status invalid or
	// needs_reconnect).
	ErrNeedsReconnect = errors.New("account needs reconnecting")
	// ErrDisconnected means the tenant disconnected the account: it has no token until
	// it is connected again.
	ErrDisconnected = errors.New("account disconnected")
	// ErrInvalidInput means an Upsert or status change was given a missing or
	// out-of-range value; the message names the field.
	ErrInvalidInput = errors.New("invalid account input")
)

const redacted = "[redacted]"

// Token is an access token in memory. Its String and GoString never show it, so a token
// that reaches a log line or an error by mistake prints as [redacted]. The same holds for
// every fmt verb, slog (LogValue) and encoding/json (MarshalText).
type Token string

func (Token) String() string   { return redacted }
func (Token) GoString() string { return redacted }

// Format makes every fmt verb (%x and %q included) print [redacted].
func (Token) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue keeps the token out of slog output.
func (Token) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText keeps the token out of JSON, YAML and text encodings.
func (Token) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Reveal returns the token itself, for the Authorization header and nothing else.
func (t Token) Reveal() string { return string(t) }

// Account is one tenant's WhatsApp Business Account with its decrypted token.
//
// Accounts returned by a Resolver are shared by every caller and must not be modified.
type Account struct {
	ID                 string
	TenantID           string
	WABAID             string
	PhoneNumberID      string
	DisplayPhoneNumber string
	AccessToken        Token
	TokenExpiresAt     *time.Time // nil: does not expire
	TokenStatus        TokenStatus
	RefreshAttempts    int
	NextRefreshAt      *time.Time
	LastRefreshError   string
	IsDefault          bool
	ThroughputMPS      int
	PausedUntil        *time.Time // sends paused (spam restriction, blocked) until then
	PausedReason       string
	CreatedAt          time.Time
	UpdatedAt          time.Time
}

// Usable reports why the account cannot send now, or nil: ErrTokenExpired for an
// expired status or a token_expires_at in the past, ErrNeedsReconnect for invalid or
// needs_reconnect. It does not look at PausedUntil.
func (a *Account) Usable(now time.Time) error {
	switch a.TokenStatus {
	case StatusExpired:
		return ErrTokenExpired
	case StatusInvalid, StatusNeedsReconnect:
		return ErrNeedsReconnect
	case StatusDisconnected:
		return ErrDisconnected
	case StatusActive:
	default:
		// A status this code does not know cannot be trusted to send.
		return ErrNeedsReconnect
	}
	if a.TokenExpiresAt != nil && !now.Before(*a.TokenExpiresAt) {
		return ErrTokenExpired
	}
	return nil
}

// UpsertInput is what `aerogate accounts add` and Embedded Signup store.
type UpsertInput struct {
	TenantID           string
	WABAID             string
	PhoneNumberID      string
	DisplayPhoneNumber string // empty: keep the current value on update
	AccessToken        string
	TokenExpiresAt     *time.Time
	IsDefault          bool
	ThroughputMPS      int // 0: keep the current value, or Meta's default (80) for a new row
}

func (in *UpsertInput) validate() error {
	for _, f := range []struct{ name, v string }{
		{"tenant id", in.TenantID},
		{"waba id", in.WABAID},
		{"phone number id", in.PhoneNumberID},
		{"access token", in.AccessToken},
	} {
		if strings.TrimSpace(f.v) == "" {
			return fmt.Errorf("%w: %s is required", ErrInvalidInput, f.name)
		}
		if strings.IndexByte(f.v, 0) >= 0 {
			return fmt.Errorf("%w: %s contains a NUL byte", ErrInvalidInput, f.name)
		}
	}
	if strings.IndexByte(in.DisplayPhoneNumber, 0) >= 0 {
		return fmt.Errorf("%w: display phone number contains a NUL byte", ErrInvalidInput)
	}
	// The ids must be Meta's, or no send through this account could ever succeed.
	if _, err := whatsapp.ParseWABAID(in.WABAID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	if _, err := whatsapp.ParsePhoneNumberID(in.PhoneNumberID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	if in.ThroughputMPS != 0 {
		if _, err := whatsapp.ParseThroughput(in.ThroughputMPS); err != nil {
			return fmt.Errorf("%w: throughput %d: %w", ErrInvalidInput, in.ThroughputMPS, err)
		}
	}
	return nil
}

// Repository reads and writes whatsapp_accounts, encrypting tokens with the key ring and
// binding each ciphertext to its tenant and account id.
type Repository struct {
	pool *pgxpool.Pool
	keys *secret.KeyRing
}

// NewRepository returns a repository over pool.
func NewRepository(pool *pgxpool.Pool, keys *secret.KeyRing) *Repository {
	return &Repository{pool: pool, keys: keys}
}

// tokenAAD binds a token ciphertext to its row: copied into another tenant's or
// another account's row, it no longer decrypts.
func tokenAAD(tenantID, accountID string) []byte {
	b := make([]byte, 0, len("aerogate/token/v1\x00")+len(tenantID)+1+len(accountID))
	b = append(b, "aerogate/token/v1\x00"...)
	b = append(b, tenantID...)
	b = append(b, 0)
	return append(b, accountID...)
}

const columns = `id::text, tenant_id, waba_id, phone_number_id, display_phone_number,
	access_token, token_expires_at, token_status, refresh_attempts, next_refresh_at,
	last_refresh_error, is_default, throughput_mps, paused_until, paused_reason,
	created_at, updated_at`

// scanAccount reads one row of columns; the token ciphertext is returned, not decrypted.
func scanAccount(row pgx.Row) (*Account, []byte, error) {
	var a Account
	var ct []byte
	var status string
	err := row.Scan(&a.ID, &a.TenantID, &a.WABAID, &a.PhoneNumberID, &a.DisplayPhoneNumber,
		&ct, &a.TokenExpiresAt, &status, &a.RefreshAttempts, &a.NextRefreshAt,
		&a.LastRefreshError, &a.IsDefault, &a.ThroughputMPS, &a.PausedUntil, &a.PausedReason,
		&a.CreatedAt, &a.UpdatedAt)
	if err != nil {
		return nil, nil, err
	}
	a.TokenStatus = TokenStatus(status)
	return &a, ct, nil
}

// Upsert inserts the account or, when its phone number id exists for the same tenant,
// updates it (new token: status active, refresh bookkeeping reset). A phone number id
// that belongs to another tenant returns ErrPhoneNumberTaken. IsDefault true clears the tenant's other default; the tenant's
// first account becomes its default.
//
// An account that is already the tenant's default stays so, and an upsert into a
// tenant that has no default (its default was deleted) makes this account the default.
func (r *Repository) Upsert(ctx context.Context, in UpsertInput) (*Account, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	var out *Account
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var err error
		out, err = r.upsertTx(ctx, tx, in)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrPhoneNumberTaken) {
			return nil, err
		}
		return nil, fmt.Errorf("upserting account %s of tenant %s: %w", in.PhoneNumberID, in.TenantID, err)
	}
	return out, nil
}

func (r *Repository) upsertTx(ctx context.Context, tx pgx.Tx, in UpsertInput) (*Account, error) {
	// Serialize upserts of one tenant, so "first account" and "only one default" hold
	// without a retry loop. Other tenants are not blocked.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('aerogate/accounts/' || $1, 0))", in.TenantID); err != nil {
		return nil, err
	}

	var id, owner string
	var wasDefault bool
	err := tx.QueryRow(ctx, `SELECT id::text, tenant_id, is_default FROM whatsapp_accounts
		WHERE phone_number_id = $1 FOR UPDATE`, in.PhoneNumberID).Scan(&id, &owner, &wasDefault)
	exists := err == nil
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		id = uuid.NewString()
	case err != nil:
		return nil, err
	case owner != in.TenantID:
		return nil, ErrPhoneNumberTaken
	}

	makeDefault := in.IsDefault || wasDefault
	if !makeDefault {
		var hasDefault bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM whatsapp_accounts
			WHERE tenant_id = $1 AND is_default)`, in.TenantID).Scan(&hasDefault); err != nil {
			return nil, err
		}
		makeDefault = !hasDefault
	}
	if makeDefault {
		if _, err := tx.Exec(ctx, `UPDATE whatsapp_accounts SET is_default = false, updated_at = now()
			WHERE tenant_id = $1 AND is_default AND id <> $2::uuid`, in.TenantID, id); err != nil {
			return nil, err
		}
	}

	ct, kid, err := r.keys.Encrypt([]byte(in.AccessToken), tokenAAD(in.TenantID, id))
	if err != nil {
		return nil, fmt.Errorf("encrypting token: %w", err)
	}

	var row pgx.Row
	if exists {
		row = tx.QueryRow(ctx, `UPDATE whatsapp_accounts SET
			waba_id = $2,
			display_phone_number = CASE WHEN $3 = '' THEN display_phone_number ELSE $3 END,
			access_token = $4, token_key_id = $5, token_expires_at = $6,
			token_status = 'active', refresh_attempts = 0, next_refresh_at = NULL,
			last_refresh_error = '', paused_until = NULL, paused_reason = '',
			is_default = $7,
			throughput_mps = CASE WHEN $8 > 0 THEN $8 ELSE throughput_mps END,
			updated_at = now()
			WHERE id = $1::uuid RETURNING `+columns,
			id, in.WABAID, in.DisplayPhoneNumber, ct, kid, in.TokenExpiresAt, makeDefault, in.ThroughputMPS)
	} else {
		mps := in.ThroughputMPS
		if mps == 0 {
			mps = int(whatsapp.DefaultThroughput)
		}
		// ON CONFLICT: another tenant may have inserted this phone number id since our
		// SELECT (the tenant lock does not cover other tenants).
		row = tx.QueryRow(ctx, `INSERT INTO whatsapp_accounts
			(id, tenant_id, waba_id, phone_number_id, display_phone_number, access_token,
			 token_key_id, token_expires_at, is_default, throughput_mps)
			VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (phone_number_id) DO NOTHING
			RETURNING `+columns,
			id, in.TenantID, in.WABAID, in.PhoneNumberID, in.DisplayPhoneNumber, ct, kid,
			in.TokenExpiresAt, makeDefault, mps)
	}
	a, _, err := scanAccount(row)
	if errors.Is(err, pgx.ErrNoRows) && !exists {
		return nil, ErrPhoneNumberTaken
	}
	if err != nil {
		return nil, err
	}
	a.AccessToken = Token(in.AccessToken)
	return a, nil
}

// ErrPhoneNumberTaken means the phone number id is connected to another tenant.
var ErrPhoneNumberTaken = errors.New("phone number id belongs to another tenant")

// Get loads the tenant's account with that phone number id, or the tenant's default
// account when phoneNumberID is empty. A token that fails to decrypt (missing key,
// ciphertext moved from another row) is an error wrapping secret.ErrDecrypt or
// secret.ErrUnknownKey.
func (r *Repository) Get(ctx context.Context, tenantID, phoneNumberID string) (*Account, error) {
	if strings.IndexByte(tenantID, 0) >= 0 || strings.IndexByte(phoneNumberID, 0) >= 0 {
		// Postgres text cannot hold NUL, so no row can match.
		return nil, ErrNotFound
	}
	var row pgx.Row
	if phoneNumberID == "" {
		row = r.pool.QueryRow(ctx, `SELECT `+columns+` FROM whatsapp_accounts
			WHERE tenant_id = $1 AND is_default`, tenantID)
	} else {
		row = r.pool.QueryRow(ctx, `SELECT `+columns+` FROM whatsapp_accounts
			WHERE tenant_id = $1 AND phone_number_id = $2`, tenantID, phoneNumberID)
	}
	a, ct, err := scanAccount(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading account %q of tenant %q: %w", phoneNumberID, tenantID, err)
	}
	if a.TokenStatus == StatusDisconnected {
		return a, nil // its token was erased: nothing to decrypt, and Usable refuses it
	}
	plain, err := r.keys.Decrypt(ct, tokenAAD(a.TenantID, a.ID))
	if err != nil {
		return nil, fmt.Errorf("decrypting token of account %s: %w", a.ID, err)
	}
	a.AccessToken = Token(plain)
	return a, nil
}

// List returns the tenant's accounts ordered by phone number id. Tokens are not
// decrypted: AccessToken is empty in every listed account.
func (r *Repository) List(ctx context.Context, tenantID string) ([]Account, error) {
	if strings.IndexByte(tenantID, 0) >= 0 {
		return nil, nil
	}
	rows, err := r.pool.Query(ctx, `SELECT `+columns+` FROM whatsapp_accounts
		WHERE tenant_id = $1 ORDER BY phone_number_id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("listing accounts of tenant %q: %w", tenantID, err)
	}
	defer rows.Close()
	var out []Account
	for rows.Next() {
		a, _, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("listing accounts of tenant %q: %w", tenantID, err)
		}
		out = append(out, *a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing accounts of tenant %q: %w", tenantID, err)
	}
	return out, nil
}

// SetTokenStatus sets an account's token status and last error (e.g. the sender marks a
// token invalid on Graph error 190).
func (r *Repository) SetTokenStatus(ctx context.Context, accountID string, status TokenStatus, lastError string) error {
	if !status.Valid() {
		return fmt.Errorf("%w: token status %q", ErrInvalidInput, status)
	}
	if _, err := uuid.Parse(accountID); err != nil {
		return ErrNotFound
	}
	// A disconnected account has no token: no status but disconnected fits it until it is
	// connected again (a sender's late 190 must not mark it invalid, or active).
	tag, err := r.pool.Exec(ctx, `UPDATE whatsapp_accounts
		SET token_status = $2, last_refresh_error = $3, updated_at = now()
		WHERE id = $1::uuid AND (token_status <> 'disconnected' OR $2 = 'disconnected')`,
		accountID, string(status), strings.ToValidUTF8(strings.ReplaceAll(lastError, "\x00", ""), "?"))
	if err != nil {
		return fmt.Errorf("setting token status of account %s: %w", accountID, err)
	}
	if tag.RowsAffected() == 0 {
		var exists bool
		if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM whatsapp_accounts WHERE id = $1::uuid)`, accountID).Scan(&exists); err == nil && exists {
			return ErrDisconnected
		}
		return ErrNotFound
	}
	return nil
}

// Pause stops sends from the account until the given time, with a reason.
func (r *Repository) Pause(ctx context.Context, accountID string, until time.Time, reason string) error {
	if _, err := uuid.Parse(accountID); err != nil {
		return ErrNotFound
	}
	tag, err := r.pool.Exec(ctx, `UPDATE whatsapp_accounts
		SET paused_until = $2, paused_reason = $3, updated_at = now()
		WHERE id = $1::uuid`, accountID, until, strings.ToValidUTF8(strings.ReplaceAll(reason, "\x00", ""), "?"))
	if err != nil {
		return fmt.Errorf("pausing account %s: %w", accountID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// KeyCheck is the result of test-decrypting one stored token under one key id.
type KeyCheck struct {
	KeyID     string
	AccountID string // the account whose token was tried
	Err       error  // nil: the key ring decrypts it; else wraps secret.ErrUnknownKey or secret.ErrDecrypt
}

// CheckTokenKeys test-decrypts one stored token per key id found in whatsapp_accounts,
// so a process learns at start that its secrets.token_keys cannot read the tokens (keys
// deleted or regenerated, database kept) instead of when traffic fails. It returns one
// KeyCheck per key id, ordered by key id; an error only when the table cannot be read.
func (r *Repository) CheckTokenKeys(ctx context.Context) ([]KeyCheck, error) {
	// A disconnected account has no token (and no key id) to check.
	rows, err := r.pool.Query(ctx, `SELECT DISTINCT ON (token_key_id) token_key_id, id::text, tenant_id, access_token
		FROM whatsapp_accounts WHERE token_key_id <> '' ORDER BY token_key_id, updated_at DESC`)
	if err != nil {
		return nil, fmt.Errorf("reading token key ids: %w", err)
	}
	defer rows.Close()
	var out []KeyCheck
	for rows.Next() {
		var kid, id, tenant string
		var ct []byte
		if err := rows.Scan(&kid, &id, &tenant, &ct); err != nil {
			return nil, fmt.Errorf("reading token key ids: %w", err)
		}
		_, err := r.keys.Decrypt(ct, tokenAAD(tenant, id))
		out = append(out, KeyCheck{KeyID: kid, AccountID: id, Err: err})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading token key ids: %w", err)
	}
	return out, nil
}
