// Package onboarding connects a tenant's WhatsApp Business Accounts through Meta's Embedded
// Signup: it hands out single-use, expiring OAuth states bound to the tenant and the JWT
// subject that asked, exchanges the code Meta returns, reads the token's expiry and granted
// WABAs, lists, subscribes and registers their phone numbers, and only then stores every
// account in one Postgres transaction, so a failure anywhere changes nothing. It also
// sends the test message and lists and disconnects accounts for the accounts API.
package onboarding

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// Defaults.
const (
	DefaultStateTTL      = 10 * time.Minute
	DefaultDialogBaseURL = "https://www.facebook.com"
	// CallbackPath is where Meta sends the browser back in the redirect flow, under the
	// public base URL.
	CallbackPath = "/meta/callback"
)

// Config configures a Service.
type Config struct {
	AppID    string // meta.app_id
	ConfigID string // meta.config_id: the Embedded Signup configuration
	// Configured is false when meta.app_id, meta.app_secret or meta.config_id is missing:
	// every onboarding call then answers ErrNotConfigured.
	Configured    bool
	GraphVersion  string // like v22.0
	PublicBaseURL string // the redirect_uri is PublicBaseURL + CallbackPath
	DialogBaseURL string // default https://www.facebook.com
	StateTTL      time.Duration
	// FrontendRedirectURL is where the redirect flow sends the browser afterwards, with
	// status=connected or status=error&reason=<code>; empty: the callback answers JSON.
	FrontendRedirectURL string
	Logger              *slog.Logger
	Now                 func() time.Time
}

// Service runs Embedded Signup and the accounts API for every tenant.
type Service struct {
	cfg   Config
	pool  *pgxpool.Pool
	repo  *account.Repository
	graph *graph.Client
	log   *slog.Logger
	now   func() time.Time
}

// New returns a service storing into pool through repo and calling Meta through g (which
// must carry meta.app_id and meta.app_secret).
func New(cfg Config, pool *pgxpool.Pool, repo *account.Repository, g *graph.Client) (*Service, error) {
	if pool == nil || repo == nil || g == nil {
		return nil, errors.New("onboarding: pool, repository and graph client are required")
	}
	if cfg.StateTTL <= 0 {
		cfg.StateTTL = DefaultStateTTL
	}
	if cfg.DialogBaseURL == "" {
		cfg.DialogBaseURL = DefaultDialogBaseURL
	}
	if cfg.GraphVersion == "" {
		cfg.GraphVersion = config.Default().Graph.Version
	}
	cfg.PublicBaseURL = strings.TrimRight(cfg.PublicBaseURL, "/")
	cfg.DialogBaseURL = strings.TrimRight(cfg.DialogBaseURL, "/")
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, pool: pool, repo: repo, graph: g, log: cfg.Logger, now: cfg.Now}, nil
}

// RedirectURI is the redirect flow's redirect_uri.
func (s *Service) RedirectURI() string { return s.cfg.PublicBaseURL + CallbackPath }

// FrontendRedirect is the URL the callback sends the browser to: frontend.redirect_url
// with status=connected, or status=error and reason=<stable code>; never a token, code,
// state or secret. ok is false when no front end is configured.
func (s *Service) FrontendRedirect(err error) (string, bool) {
	if s.cfg.FrontendRedirectURL == "" {
		return "", false
	}
	u, perr := url.Parse(s.cfg.FrontendRedirectURL)
	if perr != nil {
		return "", false
	}
	q := u.Query()
	for _, k := range []string{"status", "reason"} {
		q.Del(k)
	}
	if err == nil {
		q.Set("status", "connected")
	} else {
		q.Set("status", "error")
		q.Set("reason", errorCode(err))
	}
	u.RawQuery = q.Encode()
	return u.String(), true
}

// Start is what a front end needs to run Embedded Signup in either flow.
type Start struct {
	AppID        string
	ConfigID     string
	GraphVersion string
	State        string
	// URL is the redirect flow's dialog URL; the JavaScript SDK flow ignores it.
	URL         string
	RedirectURI string
	ExpiresAt   time.Time
}

// stateBytes is the state's random length: 256 bits.
const stateBytes = 32

// stateLen is the length of a state: unpadded base64url of stateBytes.
var stateLen = base64.RawURLEncoding.EncodedLen(stateBytes)

// Begin records a fresh state for the tenant and the JWT subject that asked, and returns
// it with the dialog URL.
func (s *Service) Begin(ctx context.Context, tenantID, subject string) (Start, error) {
	if !s.cfg.Configured {
		return Start{}, ErrNotConfigured
	}
	var raw [stateBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Start{}, fmt.Errorf("onboarding: generating state: %w", err)
	}
	state := base64.RawURLEncoding.EncodeToString(raw[:])
	hash := sha256.Sum256(raw[:])
	now := s.now().UTC()
	exp := now.Add(s.cfg.StateTTL)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Expired states are of no use to anyone: each new one sweeps them.
		if _, err := tx.Exec(ctx, `DELETE FROM onboarding_states WHERE expires_at < $1`, now.Add(-time.Hour)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO onboarding_states (state_hash, tenant_id, subject, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5)`, hash[:], tenantID, cleanText(subject, 255), now, exp)
		return err
	})
	if err != nil {
		return Start{}, ErrUnavailable.with("", err)
	}
	q := url.Values{}
	q.Set("client_id", s.cfg.AppID)
	q.Set("config_id", s.cfg.ConfigID)
	q.Set("redirect_uri", s.RedirectURI())
	q.Set("state", state)
	q.Set("response_type", "code")
	q.Set("override_default_response_type", "true")
	return Start{
		AppID:        s.cfg.AppID,
		ConfigID:     s.cfg.ConfigID,
		GraphVersion: s.cfg.GraphVersion,
		State:        state,
		URL:          s.cfg.DialogBaseURL + "/" + s.cfg.GraphVersion + "/dialog/oauth?" + q.Encode(),
		RedirectURI:  s.RedirectURI(),
		ExpiresAt:    exp,
	}, nil
}

// Request is one completed Embedded Signup coming back.
type Request struct {
	// TenantID and Subject are the JWT's in the JavaScript SDK flow; they must be the
	// state's. Both are empty in the redirect flow: the tenant is the state's.
	TenantID string
	Subject  string
	Redirect bool // the redirect flow: the exchange repeats the redirect_uri
	Code     string
	State    string
	// WABAID and PhoneNumberID, when given (the SDK's FINISH event), narrow what is
	// connected to that WABA and that number.
	WABAID        string
	PhoneNumberID string
}

// Result is what was connected.
type Result struct {
	TenantID string
	Accounts []account.Summary
}

// parseState decodes a state as Begin made it; anything else is ErrInvalidState. It reads
// the input once.
func parseState(state string) ([stateBytes]byte, bool) {
	var raw [stateBytes]byte
	if len(state) != stateLen {
		return raw, false
	}
	n, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(state))
	return raw, err == nil && n == stateBytes
}

// validCode accepts what Meta's codes look like: 1-2048 printable ASCII bytes, no spaces.
func validCode(code string) bool {
	if code == "" || len(code) > 2048 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] <= ' ' || code[i] >= 0x7f {
			return false
		}
	}
	return true
}

type stateRow struct {
	tenantID, subject string
	expiresAt         time.Time
}

// Complete runs the onboarding transaction: every Graph step first, then one database
// transaction that consumes the state and stores every account. Any failure leaves the
// database as it was (the state too: it is consumed only with the accounts it
// connected). Errors are *Error.
func (s *Service) Complete(ctx context.Context, req Request) (Result, error) {
	res, err := s.complete(ctx, req)
	if err != nil {
		attrs := []any{"tenant", res.TenantID, "flow", flowName(req.Redirect), "reason", errorCode(err)}
		var oe *Error
		if errors.As(err, &oe) {
			if oe.Step != "" {
				attrs = append(attrs, "step", oe.Step)
			}
			if oe.Graph != nil {
				attrs = append(attrs, "graph_code", oe.Graph.Code, "graph_subcode", oe.Graph.Subcode,
					"graph_title", oe.Graph.Title, "fbtrace_id", oe.Graph.FBTraceID)
			}
		}
		if cause := errors.Unwrap(err); cause != nil && (oe == nil || oe.Graph == nil) {
			attrs = append(attrs, "error", cause.Error())
		}
		s.log.Warn("embedded signup refused; nothing changed", attrs...)
		return res, err
	}
	ids := make([]string, len(res.Accounts))
	for i, a := range res.Accounts {
		ids[i] = a.PhoneNumberID
	}
	s.log.Info("embedded signup connected whatsapp accounts", "tenant", res.TenantID, "flow", flowName(req.Redirect),
		"phone_number_ids", ids)
	return res, nil
}

func flowName(redirect bool) string {
	if redirect {
		return "redirect"
	}
	return "sdk"
}

func errorCode(err error) string {
	var oe *Error
	if errors.As(err, &oe) {
		return oe.Code
	}
	return "internal_error"
}

func (s *Service) complete(ctx context.Context, req Request) (Result, error) {
	res := Result{TenantID: req.TenantID}
	if !s.cfg.Configured {
		return res, ErrNotConfigured
	}
	raw, ok := parseState(req.State)
	if !ok {
		return res, ErrInvalidState
	}
	if !validCode(req.Code) || (req.WABAID != "" && whatsapp.CheckWABAID(req.WABAID) != nil) ||
		(req.PhoneNumberID != "" && whatsapp.CheckPhoneNumberID(req.PhoneNumberID) != nil) {
		return res, ErrInvalidRequest
	}
	hash := sha256.Sum256(raw[:])

	// The state is looked at now and consumed only in the final transaction.
	var st stateRow
	err := s.pool.QueryRow(ctx, `SELECT tenant_id, subject, expires_at FROM onboarding_states WHERE state_hash = $1`,
		hash[:]).Scan(&st.tenantID, &st.subject, &st.expiresAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return res, ErrInvalidState
	case err != nil:
		return res, ErrUnavailable.with("", err)
	}
	if !req.Redirect && (st.tenantID != req.TenantID || st.subject != cleanText(req.Subject, 255)) {
		// The same answer as an unknown state: nothing tells one tenant about another's.
		return res, ErrInvalidState.with("", errors.New("state issued to another tenant or subject"))
	}
	res.TenantID = st.tenantID
	if !s.now().Before(st.expiresAt) {
		return res, ErrStateExpired
	}

	conns, err := s.graphSteps(ctx, st.tenantID, req)
	if err != nil {
		return res, err
	}

	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM onboarding_states WHERE state_hash = $1 AND tenant_id = $2 AND expires_at > $3`,
			hash[:], st.tenantID, s.now())
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			// Used by a concurrent completion meanwhile (or expired during the Graph steps).
			return ErrInvalidState
		}
		res.Accounts, err = s.repo.ConnectTx(ctx, tx, conns)
		return err
	})
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, ErrInvalidState):
		return res, ErrInvalidState.with("store", errors.New("state used meanwhile"))
	case errors.Is(err, account.ErrPhoneNumberTaken):
		res.Accounts = nil
		return res, ErrPhoneNumberTaken.with("store", nil)
	default:
		res.Accounts = nil
		return res, ErrUnavailable.with("store", err)
	}
}

// graphSteps does every Graph call of the onboarding and returns the rows to store.
func (s *Service) graphSteps(ctx context.Context, tenantID string, req Request) ([]account.Connection, error) {
	redirectURI := ""
	if req.Redirect {
		redirectURI = s.RedirectURI()
	}
	token, err := s.graph.ExchangeCode(ctx, req.Code, redirectURI)
	if errors.Is(err, graph.ErrNotConfigured) {
		return nil, ErrNotConfigured
	}
	if err != nil {
		return nil, graphStepError("exchange", err, ErrCodeRejected)
	}

	info, err := s.graph.DebugToken(ctx, token)
	if err != nil {
		return nil, graphStepError("debug_token", err, nil)
	}
	if !info.IsValid || info.AppID != s.cfg.AppID {
		return nil, ErrTokenInvalid.with("debug_token", nil)
	}
	if !info.HasScope(graph.ScopeMessaging) {
		return nil, ErrMissingMessagingScope.with("debug_token", nil)
	}
	var wabas []string
	for _, id := range info.Targets[graph.ScopeMessaging] {
		if whatsapp.CheckWABAID(id) == nil && !slices.Contains(wabas, id) {
			wabas = append(wabas, id)
		}
	}
	if req.WABAID != "" {
		if !slices.Contains(wabas, req.WABAID) {
			return nil, ErrWABANotGranted.with("debug_token", nil)
		}
		wabas = []string{req.WABAID}
	}
	if len(wabas) == 0 {
		return nil, ErrNoWABA.with("debug_token", nil)
	}
	var expiresAt *time.Time
	if !info.ExpiresAt.IsZero() {
		t := info.ExpiresAt
		expiresAt = &t
	}

	type number struct {
		waba  string
		phone graph.PhoneNumber
	}
	var numbers []number
	for _, waba := range wabas {
		phones, err := s.graph.PhoneNumbers(ctx, token, waba)
		if err != nil {
			return nil, graphStepError("phone_numbers", err, nil)
		}
		if len(phones) == 0 {
			return nil, ErrNoPhoneNumbers.with("phone_numbers", nil)
		}
		for _, p := range phones {
			if req.PhoneNumberID == "" || p.ID == req.PhoneNumberID {
				numbers = append(numbers, number{waba, p})
			}
		}
	}
	if len(numbers) == 0 {
		return nil, ErrPhoneNumberNotInWABA.with("phone_numbers", nil)
	}

	// Another tenant's number stops everything before anything changes at Meta.
	ids := make([]string, len(numbers))
	for i, n := range numbers {
		ids[i] = n.phone.ID
	}
	owners, err := s.repo.Owners(ctx, ids)
	if err != nil {
		return nil, ErrUnavailable.with("owners", err)
	}
	for _, owner := range owners {
		if owner != tenantID {
			return nil, ErrPhoneNumberTaken.with("owners", nil)
		}
	}

	for _, waba := range wabas {
		if !slices.ContainsFunc(numbers, func(n number) bool { return n.waba == waba }) {
			continue
		}
		if err := s.graph.SubscribeApp(ctx, token, waba); err != nil {
			return nil, graphStepError("subscribed_apps", err, nil)
		}
	}

	conns := make([]account.Connection, 0, len(numbers))
	for _, n := range numbers {
		c := account.Connection{
			UpsertInput: account.UpsertInput{
				TenantID:           tenantID,
				WABAID:             n.waba,
				PhoneNumberID:      n.phone.ID,
				DisplayPhoneNumber: cleanText(n.phone.DisplayPhoneNumber, 64),
				AccessToken:        token,
				TokenExpiresAt:     expiresAt,
				ThroughputMPS:      graph.ThroughputMPS(n.phone.Throughput.Level),
			},
			VerifiedName:  cleanText(n.phone.VerifiedName, 255),
			QualityRating: cleanText(n.phone.QualityRating, 32),
		}
		if n.phone.PlatformType != "CLOUD_API" {
			pin, err := newPIN()
			if err != nil {
				return nil, fmt.Errorf("onboarding: generating pin: %w", err)
			}
			if err := s.graph.Register(ctx, token, n.phone.ID, pin); err != nil {
				return nil, graphStepError("register", err, nil)
			}
			c.RegistrationPIN = pin
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// newPIN is a uniformly random 6-digit two-step verification PIN.
func newPIN() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// cleanText makes s storable and bounded: valid UTF-8 without NUL, at most max bytes.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "")
	if len(s) > max {
		s = s[:max]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
