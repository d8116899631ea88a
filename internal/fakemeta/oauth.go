package fakemeta

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Embedded Signup steps, for FailStep and SlowStep.
const (
	StepExchange     = "exchange"        // GET /{version}/oauth/access_token
	StepDebugToken   = "debug_token"     // GET /{version}/debug_token
	StepPhoneNumbers = "phone_numbers"   // GET /{version}/{waba_id}/phone_numbers
	StepSubscribe    = "subscribed_apps" // POST /{version}/{waba_id}/subscribed_apps
	StepRegister     = "register"        // POST /{version}/{phone_number_id}/register
	// StepRenew is GET /{version}/oauth/access_token?grant_type=fb_exchange_token, the
	// renewal of a 60-day token; StepRenew+":"+token names one token's renewals.
	StepRenew = "fb_exchange_token"
)

// RenewedLifetime is the life of a token renewed with fb_exchange_token: 60 days, less
// the few minutes Meta takes off (its expires_in is 5183944 seconds).
const RenewedLifetime = 5183944 * time.Second

// CodeLifetime is how long an authorization code can be exchanged, as at Meta.
const CodeLifetime = 30 * time.Second

// The set a code grants when none is named: what the dialog grants in `aerogate dev`.
const (
	DefaultWABAID        = "102290129340398"
	DefaultPhoneNumberID = "106540352242922"
)

// Phone is a phone number of a WABA at the fake.
type Phone struct {
	ID                 string `json:"id"`
	DisplayPhoneNumber string `json:"display_phone_number,omitempty"`
	VerifiedName       string `json:"verified_name,omitempty"`
	QualityRating      string `json:"quality_rating,omitempty"`   // GREEN when empty
	ThroughputLevel    string `json:"throughput_level,omitempty"` // STANDARD when empty
	Registered         bool   `json:"registered,omitempty"`       // registered for the Cloud API already
}

// Grant is what a person grants the app in Embedded Signup: a code for it comes from
// the dialog or from MintCode.
type Grant struct {
	// WABAID is the WhatsApp Business Account shared; DefaultWABAID when empty.
	WABAID string `json:"waba_id,omitempty"`
	// PhoneNumbers become the WABA's numbers. Empty keeps the numbers the WABA has at the
	// fake; for DefaultWABAID seen for the first time, one default number.
	PhoneNumbers []Phone `json:"phone_numbers,omitempty"`
	// TokenExpiresIn is the business token's life; 0 means it never expires (Meta's
	// default for business integration system user tokens).
	TokenExpiresIn time.Duration `json:"-"`
	// Scopes granted; empty means both WhatsApp scopes.
	Scopes []string `json:"scopes,omitempty"`
	// RedirectURI is the one the dialog was opened with; the exchange must repeat it.
	// Empty for the JavaScript SDK flow.
	RedirectURI string `json:"redirect_uri,omitempty"`
}

type code struct {
	grant  Grant
	issued time.Time
	used   bool
}

type issuedToken struct {
	grant     Grant
	expiresAt time.Time // zero: never
	revoked   bool
	exchanges int    // times it was renewed with fb_exchange_token
	from      string // the token it was renewed from, if any
}

// usable reports whether the token is neither revoked nor expired at now.
func (it *issuedToken) usable(now time.Time) bool {
	return !it.revoked && (it.expiresAt.IsZero() || now.Before(it.expiresAt))
}

// Registration is one successful POST /{phone_number_id}/register the fake saw.
type Registration struct {
	PhoneNumberID string
	PIN           string
	Token         string
}

type fault struct {
	n     int // remaining; < 0 until ClearFaults
	spec  *ErrorSpec
	delay time.Duration
}

// metaSide is the fake's model of Meta beyond sends: the app, WABAs, codes, tokens.
type metaSide struct {
	mu            sync.Mutex
	wabas         map[string][]Phone
	codes         map[string]*code
	issued        map[string]*issuedToken
	subscribed    map[string]int // WABA → subscribe calls
	registrations []Registration
	faults        map[string]*fault
	dialogGrant   Grant
}

func newMetaSide() *metaSide {
	return &metaSide{
		wabas:      map[string][]Phone{},
		codes:      map[string]*code{},
		issued:     map[string]*issuedToken{},
		subscribed: map[string]int{},
		faults:     map[string]*fault{},
	}
}

func (s *Server) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// MintCode records the grant and returns a fresh authorization code for it, as the
// Embedded Signup dialog would hand one to the JavaScript SDK. It lives CodeLifetime
// and exchanges once.
func (s *Server) MintCode(g Grant) string {
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	if g.WABAID == "" {
		g.WABAID = DefaultWABAID
	}
	if len(g.Scopes) == 0 {
		g.Scopes = []string{"whatsapp_business_management", "whatsapp_business_messaging"}
	}
	switch {
	case len(g.PhoneNumbers) > 0:
		m.wabas[g.WABAID] = append([]Phone(nil), g.PhoneNumbers...)
	case g.WABAID == DefaultWABAID:
		if _, ok := m.wabas[g.WABAID]; !ok {
			m.wabas[g.WABAID] = []Phone{{ID: DefaultPhoneNumberID, DisplayPhoneNumber: "+1 555-010-0100", VerifiedName: "Aerogate Dev"}}
		}
	}
	c := "AQ" + randomHex(24)
	m.codes[c] = &code{grant: g, issued: s.now()}
	return c
}

// SetDialogGrant sets what the dialog (GET /{version}/dialog/oauth) grants from now on.
func (s *Server) SetDialogGrant(g Grant) {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	s.meta.dialogGrant = g
}

// FailStep makes the next n calls of an Embedded Signup step (StepExchange, ...) answer
// with spec (n < 0: every call until ClearFaults). The step may name one object, as
// StepRegister+":"+phoneNumberID or StepPhoneNumbers+":"+wabaID, to fail only its calls.
func (s *Server) FailStep(step string, n int, spec ErrorSpec) {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	s.meta.faults[step] = &fault{n: n, spec: &spec}
}

// SlowStep delays the next n answers of a step by d (n < 0: until ClearFaults).
func (s *Server) SlowStep(step string, n int, d time.Duration) {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	s.meta.faults[step] = &fault{n: n, delay: d}
}

// ClearFaults removes every FailStep and SlowStep.
func (s *Server) ClearFaults() {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	clear(s.meta.faults)
}

// Registrations lists the successful register calls, oldest first.
func (s *Server) Registrations() []Registration {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	return slices.Clone(s.meta.registrations)
}

// Subscriptions returns how many times the app subscribed to the WABA.
func (s *Server) Subscriptions(wabaID string) int {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	return s.meta.subscribed[wabaID]
}

// IssuedTokens lists the business tokens the fake issued in code exchanges.
func (s *Server) IssuedTokens() []string {
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	out := make([]string, 0, len(s.meta.issued))
	for t := range s.meta.issued {
		out = append(out, t)
	}
	return out
}

// KnownToken is a token the fake did not issue itself but must know, as Meta would: one
// an operator added with `aerogate accounts add` against `aerogate dev`.
type KnownToken struct {
	WABAID        string
	PhoneNumberID string    // added to the WABA's numbers when it is not there yet
	ExpiresAt     time.Time // zero: never expires
}

// KnowToken makes token known, granted on the WABA with its expiry, so that sends,
// debug_token and fb_exchange_token treat it as a token Meta issued. A token the fake
// knows already keeps what it has; KnowToken reports whether it added it.
func (s *Server) KnowToken(token string, k KnownToken) bool {
	if token == "" || k.WABAID == "" {
		return false
	}
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.issued[token]; ok {
		return false
	}
	m.issued[token] = &issuedToken{grant: Grant{WABAID: k.WABAID,
		Scopes: []string{"whatsapp_business_management", "whatsapp_business_messaging"}}, expiresAt: k.ExpiresAt}
	if k.PhoneNumberID != "" && !slices.ContainsFunc(m.wabas[k.WABAID], func(p Phone) bool { return p.ID == k.PhoneNumberID }) {
		m.wabas[k.WABAID] = append(m.wabas[k.WABAID], Phone{ID: k.PhoneNumberID, Registered: true})
	}
	return true
}

// RevokeToken revokes a token, as a customer removing the app in Business Settings does:
// from now on Graph answers its calls with code 190, debug_token says is_valid false, and
// it cannot be renewed. It reports whether the fake knew the token.
func (s *Server) RevokeToken(token string) bool {
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	it := m.issued[token]
	if it != nil {
		it.revoked = true
	}
	return it != nil
}

// TokenState is what the fake knows of a token.
type TokenState struct {
	Known     bool      `json:"known"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: never
	Revoked   bool      `json:"revoked"`
	// Exchanges counts the token's renewals with fb_exchange_token.
	Exchanges int `json:"exchanges"`
	// RenewedFrom is the token this one was renewed from, if any.
	RenewedFrom string `json:"renewed_from,omitempty"`
}

// Token tells what the fake knows of token.
func (s *Server) Token(token string) TokenState {
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	it := m.issued[token]
	if it == nil {
		return TokenState{}
	}
	return TokenState{Known: true, ExpiresAt: it.expiresAt, Revoked: it.revoked, Exchanges: it.exchanges, RenewedFrom: it.from}
}

// Exchanges returns how many times token was renewed with fb_exchange_token.
func (s *Server) Exchanges(token string) int { return s.Token(token).Exchanges }

// TotalExchanges returns how many renewals with fb_exchange_token the fake granted.
func (s *Server) TotalExchanges() int {
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, it := range m.issued {
		n += it.exchanges
	}
	return n
}

// takeFault applies the step's fault, if any: it sleeps out a delay and reports an error
// to answer with.
func (s *Server) takeFault(step, object string) (ErrorSpec, bool) {
	m := s.meta
	m.mu.Lock()
	f := m.faults[step+":"+object]
	if f != nil {
		step += ":" + object
	} else {
		f = m.faults[step]
	}
	var spec *ErrorSpec
	var delay time.Duration
	if f != nil {
		spec, delay = f.spec, f.delay
		if f.n > 0 {
			f.n--
			if f.n == 0 {
				delete(m.faults, step)
			}
		}
	}
	m.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if spec == nil {
		return ErrorSpec{}, false
	}
	return *spec, true
}

// proofError checks appsecret_proof for a call made with token, as Meta does when the
// app has an app secret: a wrong proof is refused; a missing one too when
// RequireAppSecretProof is set.
func (s *Server) proofError(ctx *fasthttp.RequestCtx, token string) (ErrorSpec, bool) {
	if s.opts.AppSecret == "" {
		return ErrorSpec{}, false
	}
	proof := ctx.QueryArgs().Peek("appsecret_proof")
	if len(proof) == 0 {
		if s.opts.RequireAppSecretProof {
			return ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
				Title: "API calls from the server require an appsecret_proof argument"}, true
		}
		return ErrorSpec{}, false
	}
	if !validProof(s.opts.AppSecret, token, proof) {
		return ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
			Title: "Invalid appsecret_proof provided in the API argument"}, true
	}
	return ErrorSpec{}, false
}

func validProof(secret, token string, proof []byte) bool {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(token))
	want := m.Sum(nil)
	got := make([]byte, len(want))
	if n, err := hex.Decode(got, proof); err != nil || n != len(want) {
		return false
	}
	return subtle.ConstantTimeCompare(want, got) == 1
}

func bearerOf(ctx *fasthttp.RequestCtx) string {
	auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	if len(auth) > len(bearer) && string(auth[:len(bearer)]) == string(bearer) {
		return string(auth[len(bearer):])
	}
	return string(ctx.QueryArgs().Peek("access_token"))
}

func oauthError(code, subcode int, title string) ErrorSpec {
	return ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: code, Subcode: subcode, Title: title}
}

var errBadToken = ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeAccessToken,
	Title: "Invalid OAuth access token - Cannot parse access token"}

// handleExchange is GET /{version}/oauth/access_token: the code exchange, or with
// grant_type=fb_exchange_token the renewal of a token.
func (s *Server) handleExchange(ctx *fasthttp.RequestCtx) {
	if string(ctx.QueryArgs().Peek("grant_type")) == "fb_exchange_token" {
		s.handleRenew(ctx)
		return
	}
	if spec, ok := s.takeFault(StepExchange, ""); ok {
		writeError(ctx, spec, "")
		return
	}
	q := ctx.QueryArgs()
	if s.opts.AppID == "" || string(q.Peek("client_id")) != s.opts.AppID {
		writeError(ctx, oauthError(101, 0, "Error validating application. Invalid application ID."), "")
		return
	}
	if subtle.ConstantTimeCompare(q.Peek("client_secret"), []byte(s.opts.AppSecret)) != 1 {
		writeError(ctx, oauthError(1, 0, "Error validating client secret."), "")
		return
	}
	m := s.meta
	m.mu.Lock()
	c := m.codes[string(q.Peek("code"))]
	now := s.now()
	var spec *ErrorSpec
	switch {
	case c == nil:
		e := oauthError(CodeInvalidParameter, 0, "Invalid verification code format.")
		spec = &e
	case c.used:
		e := oauthError(CodeInvalidParameter, 36009, "This authorization code has been used.")
		spec = &e
	case now.Sub(c.issued) > CodeLifetime:
		e := oauthError(CodeInvalidParameter, 36007, "This authorization code has expired.")
		spec = &e
	case string(q.Peek("redirect_uri")) != c.grant.RedirectURI:
		e := oauthError(CodeInvalidParameter, 36008, "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request")
		spec = &e
	}
	if spec != nil {
		m.mu.Unlock()
		writeError(ctx, *spec, "")
		return
	}
	c.used = true
	tok := "EAAG" + randomHex(32)
	it := &issuedToken{grant: c.grant}
	if c.grant.TokenExpiresIn > 0 {
		it.expiresAt = now.Add(c.grant.TokenExpiresIn)
	}
	m.issued[tok] = it
	m.mu.Unlock()
	ans := map[string]any{"access_token": tok, "token_type": "bearer"}
	if !it.expiresAt.IsZero() {
		ans["expires_in"] = int64(c.grant.TokenExpiresIn / time.Second)
	}
	writeJSON(ctx, fasthttp.StatusOK, ans)
}

// errRevoked and errExpired are Meta's answers to a call made with a revoked or an
// expired token.
var (
	errRevoked = ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeAccessToken, Subcode: 458,
		Title: "Error validating access token: The user has not authorized application."}
	errExpired = ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeAccessToken, Subcode: 463,
		Title: "Error validating access token: Session has expired."}
)

// handleRenew is GET /{version}/oauth/access_token?grant_type=fb_exchange_token: a token
// the fake knows, neither expired nor revoked, is renewed for a new one that lives
// RenewedLifetime; the fake counts the renewals of each token.
func (s *Server) handleRenew(ctx *fasthttp.RequestCtx) {
	q := ctx.QueryArgs()
	old := string(q.Peek("fb_exchange_token"))
	if spec, ok := s.takeFault(StepRenew, old); ok {
		writeError(ctx, spec, "")
		return
	}
	if s.opts.AppID == "" || string(q.Peek("client_id")) != s.opts.AppID {
		writeError(ctx, oauthError(101, 0, "Error validating application. Invalid application ID."), "")
		return
	}
	if subtle.ConstantTimeCompare(q.Peek("client_secret"), []byte(s.opts.AppSecret)) != 1 {
		writeError(ctx, oauthError(1, 0, "Error validating client secret."), "")
		return
	}
	m := s.meta
	m.mu.Lock()
	it := m.issued[old]
	now := s.now()
	var spec *ErrorSpec
	switch {
	case it == nil:
		spec = &errBadToken
	case it.revoked:
		spec = &errRevoked
	case !it.usable(now):
		spec = &errExpired
	}
	if spec != nil {
		m.mu.Unlock()
		writeError(ctx, *spec, "")
		return
	}
	it.exchanges++
	tok := "EAAG" + randomHex(32)
	m.issued[tok] = &issuedToken{grant: it.grant, expiresAt: now.Add(RenewedLifetime), from: old}
	m.mu.Unlock()
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"access_token": tok, "token_type": "bearer",
		"expires_in": int64(RenewedLifetime / time.Second)})
}

// handleDebugToken is GET /{version}/debug_token?input_token=, with the app token.
func (s *Server) handleDebugToken(ctx *fasthttp.RequestCtx) {
	if spec, ok := s.takeFault(StepDebugToken, ""); ok {
		writeError(ctx, spec, "")
		return
	}
	appToken := bearerOf(ctx)
	if s.opts.AppID == "" || subtle.ConstantTimeCompare([]byte(appToken), []byte(s.opts.AppID+"|"+s.opts.AppSecret)) != 1 {
		writeError(ctx, errBadToken, "")
		return
	}
	if spec, bad := s.proofError(ctx, appToken); bad {
		writeError(ctx, spec, "")
		return
	}
	m := s.meta
	m.mu.Lock()
	it := m.issued[string(ctx.QueryArgs().Peek("input_token"))]
	m.mu.Unlock()
	if it == nil {
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"data": map[string]any{
			"is_valid": false, "scopes": []string{},
			"error": map[string]any{"code": 190, "message": "Invalid OAuth access token."},
		}})
		return
	}
	now := s.now()
	var exp int64
	if !it.expiresAt.IsZero() {
		exp = it.expiresAt.Unix()
	}
	if it.revoked {
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"data": map[string]any{
			"app_id": s.opts.AppID, "type": "SYSTEM_USER", "application": "aerogate fake",
			"expires_at": exp, "is_valid": false, "scopes": it.grant.Scopes,
			"error": map[string]any{"code": errRevoked.Code, "subcode": errRevoked.Subcode, "message": errRevoked.Title},
		}})
		return
	}
	var granular []map[string]any
	for _, sc := range it.grant.Scopes {
		if strings.HasPrefix(sc, "whatsapp_business_") {
			granular = append(granular, map[string]any{"scope": sc, "target_ids": []string{it.grant.WABAID}})
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"data": map[string]any{
		"app_id":                 s.opts.AppID,
		"type":                   "SYSTEM_USER",
		"application":            "aerogate fake",
		"data_access_expires_at": 0,
		"expires_at":             exp,
		"is_valid":               it.expiresAt.IsZero() || now.Before(it.expiresAt),
		"issued_at":              now.Unix(),
		"scopes":                 it.grant.Scopes,
		"granular_scopes":        granular,
		"user_id":                "1000" + strconv.Itoa(len(it.grant.WABAID)),
	}})
}

// refused reports whether token is one the fake knows and that is revoked or expired: it
// is refused even where unknown tokens are accepted (Options.AcceptAnyToken).
func (s *Server) refused(token string) bool {
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	it := m.issued[token]
	return it != nil && !it.usable(s.now())
}

// grantsNumber reports whether token is a business token the fake issued, not expired,
// whose WABA has the phone number: such a token may send from it, as at Meta (several
// tokens can be valid for one number at once).
func (s *Server) grantsNumber(token, phone string) bool {
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	it := m.issued[token]
	if it == nil || !it.usable(s.now()) {
		return false
	}
	return slices.ContainsFunc(m.wabas[it.grant.WABAID], func(p Phone) bool { return p.ID == phone })
}

// grantFor checks the bearer of a call on a WABA's object: issued, not expired, with
// the proof, and granted that WABA.
func (s *Server) grantFor(ctx *fasthttp.RequestCtx, wabaID string) (*issuedToken, bool) {
	tok := bearerOf(ctx)
	m := s.meta
	m.mu.Lock()
	it := m.issued[tok]
	m.mu.Unlock()
	if it == nil || !it.usable(s.now()) {
		writeError(ctx, ErrorSpec{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken, Subcode: 463,
			Title: "Error validating access token: Session has expired or the token is invalid."}, "")
		return nil, false
	}
	if spec, bad := s.proofError(ctx, tok); bad {
		writeError(ctx, spec, "")
		return nil, false
	}
	if wabaID != "" && it.grant.WABAID != wabaID {
		writeError(ctx, oauthError(CodeInvalidParameter, 33, "Unsupported request - method type: get"), "")
		return nil, false
	}
	return it, true
}

// handlePhoneNumbers is GET /{version}/{waba_id}/phone_numbers.
func (s *Server) handlePhoneNumbers(ctx *fasthttp.RequestCtx) {
	waba, _ := ctx.UserValue("waba_id").(string)
	if spec, ok := s.takeFault(StepPhoneNumbers, waba); ok {
		writeError(ctx, spec, "")
		return
	}
	// A business token issued for the WABA, or (the passthrough's calls) a token the
	// fake knows for one of its numbers.
	tok := bearerOf(ctx)
	s.meta.mu.Lock()
	issued := s.meta.issued[tok] != nil
	s.meta.mu.Unlock()
	if !issued && s.wabaToken(waba, tok) {
		_, done, _ := s.graphCallRecord(ctx)
		defer done()
		if !s.authorize(ctx, tok, true) {
			return
		}
	} else if _, ok := s.grantFor(ctx, waba); !ok {
		return
	}
	s.meta.mu.Lock()
	phones := slices.Clone(s.meta.wabas[waba])
	s.meta.mu.Unlock()
	data := make([]map[string]any, 0, len(phones))
	for _, p := range phones {
		q, lvl, platform := p.QualityRating, p.ThroughputLevel, "NOT_APPLICABLE"
		if q == "" {
			q = "GREEN"
		}
		if lvl == "" {
			lvl = "STANDARD"
		}
		if p.Registered {
			platform = "CLOUD_API"
		}
		data = append(data, map[string]any{
			"id": p.ID, "display_phone_number": p.DisplayPhoneNumber, "verified_name": p.VerifiedName,
			"quality_rating": q, "platform_type": platform, "status": "CONNECTED",
			"throughput": map[string]string{"level": lvl},
		})
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"data": data})
}

// handleSubscribe is POST /{version}/{waba_id}/subscribed_apps.
func (s *Server) handleSubscribe(ctx *fasthttp.RequestCtx) {
	waba, _ := ctx.UserValue("waba_id").(string)
	if spec, ok := s.takeFault(StepSubscribe, waba); ok {
		writeError(ctx, spec, "")
		return
	}
	if _, ok := s.grantFor(ctx, waba); !ok {
		return
	}
	s.meta.mu.Lock()
	s.meta.subscribed[waba]++
	s.meta.mu.Unlock()
	writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"success": true})
}

// handleRegister is POST /{version}/{phone_number_id}/register.
func (s *Server) handleRegister(ctx *fasthttp.RequestCtx) {
	phone, _ := ctx.UserValue("phone_number_id").(string)
	if spec, ok := s.takeFault(StepRegister, phone); ok {
		writeError(ctx, spec, "")
		return
	}
	it, ok := s.grantFor(ctx, "")
	if !ok {
		return
	}
	var req struct {
		MessagingProduct string `json:"messaging_product"`
		PIN              string `json:"pin"`
	}
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil || req.MessagingProduct != "whatsapp" {
		writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) The parameter messaging_product is required."), "")
		return
	}
	if len(req.PIN) != 6 || strings.Trim(req.PIN, "0123456789") != "" {
		writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) Param pin must be 6 digits."), "")
		return
	}
	m := s.meta
	m.mu.Lock()
	phones := m.wabas[it.grant.WABAID]
	i := slices.IndexFunc(phones, func(p Phone) bool { return p.ID == phone })
	if i >= 0 {
		phones[i].Registered = true
		m.registrations = append(m.registrations, Registration{PhoneNumberID: phone, PIN: req.PIN, Token: bearerOf(ctx)})
	}
	m.mu.Unlock()
	if i < 0 {
		writeError(ctx, oauthError(CodeInvalidParameter, 33, "Unsupported post request."), "")
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"success": true})
}

// handleDialog is GET /{version}/dialog/oauth: the person consents at once, and the
// browser goes back to redirect_uri with a fresh code and the state.
func (s *Server) handleDialog(ctx *fasthttp.RequestCtx) {
	q := ctx.QueryArgs()
	redirect := string(q.Peek("redirect_uri"))
	u, err := url.Parse(redirect)
	switch {
	case s.opts.AppID == "" || string(q.Peek("client_id")) != s.opts.AppID:
		controlError(ctx, "client_id is not this app's")
		return
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		controlError(ctx, "redirect_uri must be an absolute http(s) URL")
		return
	case string(q.Peek("response_type")) != "code":
		controlError(ctx, "response_type must be code")
		return
	}
	s.meta.mu.Lock()
	g := s.meta.dialogGrant
	s.meta.mu.Unlock()
	g.RedirectURI = redirect
	c := s.MintCode(g)
	v := u.Query()
	v.Set("code", c)
	v.Set("state", string(q.Peek("state")))
	u.RawQuery = v.Encode()
	ctx.Redirect(u.String(), fasthttp.StatusFound)
}

// handleCodes is POST /_fake/codes: a Grant as JSON (plus "token_expires_in_days"),
// answered with {"code","waba_id","phone_number_ids"}.
func (s *Server) handleCodes(ctx *fasthttp.RequestCtx) {
	var req struct {
		Grant
		TokenExpiresInDays int `json:"token_expires_in_days"`
	}
	if len(ctx.PostBody()) > 0 && !decodeControl(ctx, &req) {
		return
	}
	if req.TokenExpiresInDays < 0 {
		controlError(ctx, "token_expires_in_days must not be negative")
		return
	}
	for _, p := range req.PhoneNumbers {
		if p.ID == "" || strings.Trim(p.ID, "0123456789") != "" {
			controlError(ctx, "every phone number needs a numeric id")
			return
		}
	}
	g := req.Grant
	g.TokenExpiresIn = time.Duration(req.TokenExpiresInDays) * 24 * time.Hour
	c := s.MintCode(g)
	s.meta.mu.Lock()
	waba := s.meta.codes[c].grant.WABAID
	ids := []string{}
	for _, p := range s.meta.wabas[waba] {
		ids = append(ids, p.ID)
	}
	s.meta.mu.Unlock()
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"code": c, "waba_id": waba, "phone_number_ids": ids,
		"expires_in": int(CodeLifetime / time.Second)})
}

// handleRevoke is POST /_fake/tokens/revoke: {"token"}, RevokeToken.
func (s *Server) handleRevoke(ctx *fasthttp.RequestCtx) {
	var req struct {
		Token string `json:"token"`
	}
	if !decodeControl(ctx, &req) {
		return
	}
	if req.Token == "" {
		controlError(ctx, "token is required")
		return
	}
	if !s.RevokeToken(req.Token) {
		writeJSON(ctx, fasthttp.StatusNotFound, map[string]string{"error": "the fake does not know this token"})
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// handleTokenState is POST /_fake/tokens/state: {"token"}, answered with its TokenState.
func (s *Server) handleTokenState(ctx *fasthttp.RequestCtx) {
	var req struct {
		Token string `json:"token"`
	}
	if !decodeControl(ctx, &req) {
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, s.Token(req.Token))
}
