// Package account holds tenants' WhatsApp Business Accounts: the model, the pgx repository
// (tokens encrypted at rest through internal/secret) and the ristretto-backed Resolver that
// every gateway and sender instance reads them through, invalidated by LISTEN/NOTIFY.
package account

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/secret"
)

// TokenStatus is the state of an account's access token.
type TokenStatus string

const (
	StatusActive         TokenStatus = "active"
	StatusExpired        TokenStatus = "expired"
	StatusInvalid        TokenStatus = "invalid"
	StatusNeedsReconnect TokenStatus = "needs_reconnect"
)

var (
	// ErrNotFound means no account matches for that tenant; another tenant's account
	// is not found either.
	ErrNotFound = errors.New("account not found")
	// ErrTokenExpired means the account's token has expired (by status or by time).
	ErrTokenExpired = errors.New("account token expired")
	// ErrNeedsReconnect means the tenant must reconnect the account (status invalid or
	// needs_reconnect).
	ErrNeedsReconnect = errors.New("account needs reconnecting")
)

// DefaultThroughputMPS is Meta's default per-number throughput.
const DefaultThroughputMPS = 80

// Token is an access token in memory. Its String and GoString never show it, so a token
// that reaches a log line or an error by mistake prints as [redacted].
type Token string

func (Token) String() string   { return "[redacted]" }
func (Token) GoString() string { return "[redacted]" }

// Reveal returns the token itself, for the Authorization header and nothing else.
func (t Token) Reveal() string { return string(t) }

// Account is one tenant's WhatsApp Business Account with its decrypted token.
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
// needs_reconnect.
func (a *Account) Usable(now time.Time) error { panic("unimplemented") }

// UpsertInput is what `aerogate accounts add` and Embedded Signup store.
type UpsertInput struct {
	TenantID           string
	WABAID             string
	PhoneNumberID      string
	DisplayPhoneNumber string
	AccessToken        string
	TokenExpiresAt     *time.Time
	IsDefault          bool
	ThroughputMPS      int // 0: keep the current value, or the default for a new row
}

// Repository reads and writes whatsapp_accounts, encrypting tokens with the key ring and
// binding each ciphertext to its tenant and account id.
type Repository struct{}

// NewRepository returns a repository over pool.
func NewRepository(pool *pgxpool.Pool, keys *secret.KeyRing) *Repository { panic("unimplemented") }

// Upsert inserts the account or, when its phone number id exists for the same tenant,
// updates it (new token: status active, refresh bookkeeping reset). A phone number id
// that belongs to another tenant returns ErrPhoneNumberTaken. IsDefault true clears the tenant's other default; the tenant's
// first account becomes its default.
func (r *Repository) Upsert(ctx context.Context, in UpsertInput) (*Account, error) {
	panic("unimplemented")
}

// ErrPhoneNumberTaken means the phone number id is connected to another tenant.
var ErrPhoneNumberTaken = errors.New("phone number id belongs to another tenant")

// Get loads the tenant's account with that phone number id, or the tenant's default
// account when phoneNumberID is empty.
func (r *Repository) Get(ctx context.Context, tenantID, phoneNumberID string) (*Account, error) {
	panic("unimplemented")
}

// List returns the tenant's accounts ordered by phone number id.
func (r *Repository) List(ctx context.Context, tenantID string) ([]Account, error) {
	panic("unimplemented")
}

// SetTokenStatus sets an account's token status and last error (e.g. the sender marks a
// token invalid on Graph error 190).
func (r *Repository) SetTokenStatus(ctx context.Context, accountID string, status TokenStatus, lastError string) error {
	panic("unimplemented")
}

// Pause stops sends from the account until the given time, with a reason.
func (r *Repository) Pause(ctx context.Context, accountID string, until time.Time, reason string) error {
	panic("unimplemented")
}

// ResolverOptions tunes the cache.
type ResolverOptions struct {
	TTL         time.Duration // positive entries; default 5m
	NegativeTTL time.Duration // unknown ids; default 10s
	MaxEntries  int           // default 100,000
}

// Resolver answers "which account does this tenant send from" from memory, loading from
// the repository on a miss (single-flight per key) and caching unknown ids negatively.
type Resolver struct{}

// NewResolver builds a resolver over repo.
func NewResolver(repo *Repository, opts ResolverOptions) (*Resolver, error) { panic("unimplemented") }

// Resolve returns the tenant's account with phoneNumberID (empty: the default account),
// or ErrNotFound. It does not check Usable: callers decide.
func (r *Resolver) Resolve(ctx context.Context, tenantID, phoneNumberID string) (*Account, error) {
	panic("unimplemented")
}

// Invalidate drops the cached entries for that tenant and phone number id, and the
// tenant's default-account entry.
func (r *Resolver) Invalidate(tenantID, phoneNumberID string) { panic("unimplemented") }

// Listen holds a dedicated connection to databaseURL, LISTENs on
// whatsapp_accounts_changed and invalidates on every notification, reconnecting with
// backoff (and dropping the whole cache after a reconnect, since notifications may have
// been missed) until ctx is cancelled. It returns nil on cancellation.
func (r *Resolver) Listen(ctx context.Context, databaseURL string) error { panic("unimplemented") }

// Close releases the cache.
func (r *Resolver) Close() { panic("unimplemented") }
