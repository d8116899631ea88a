package graph

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// Scopes of a business token that Embedded Signup needs.
const (
	ScopeMessaging  = "whatsapp_business_messaging"
	ScopeManagement = "whatsapp_business_management"
)

// ErrNotConfigured means a call needs meta.app_id and meta.app_secret and the client has
// neither (or one of them).
var ErrNotConfigured = errors.New("graph: meta.app_id and meta.app_secret are not configured")

// appCredentials is the Meta app: its id, and its secret for the code exchange, the app
// token and appsecret_proof.
type appCredentials struct {
	id, secret string
	macs       *sync.Pool // of *prover; nil without a secret
}

// prover is one pooled HMAC keyed with the app secret, with scratch space so that a
// proof allocates nothing.
type prover struct {
	mac hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

func newAppCredentials(id, secret string) appCredentials {
	a := appCredentials{id: id, secret: secret}
	if secret != "" {
		key := []byte(secret)
		a.macs = &sync.Pool{New: func() any { return &prover{mac: hmac.New(sha256.New, key)} }}
	}
	return a
}

// appendProofQuery appends sep, "appsecret_proof=" and the proof of token to b, or
// nothing without an app secret. The keyed HMACs are pooled: a send computes one with no
// allocation.
func (a *appCredentials) appendProofQuery(b []byte, sep byte, token string) []byte {
	if a.macs == nil {
		return b
	}
	b = append(b, sep)
	b = append(b, "appsecret_proof="...)
	return a.appendProof(b, token)
}

func (a *appCredentials) appendProof(b []byte, token string) []byte {
	p := a.macs.Get().(*prover)
	p.mac.Reset()
	p.in = append(p.in[:0], token...)
	_, _ = p.mac.Write(p.in)
	p.mac.Sum(p.sum[:0])
	b = hex.AppendEncode(b, p.sum[:])
	if cap(p.in) <= 4096 {
		a.macs.Put(p)
	}
	return b
}

// AppSecretProof is Meta's appsecret_proof of token: the hex HMAC-SHA256 of the token
// keyed with the app secret.
func AppSecretProof(appSecret, token string) string {
	m := hmac.New(sha256.New, []byte(appSecret))
	_, _ = m.Write([]byte(token))
	return hex.EncodeToString(m.Sum(nil))
}

// urlBufs hold request URLs being built.
var urlBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// TokenInfo is what debug_token says about a token.
type TokenInfo struct {
	AppID   string
	IsValid bool
	// ExpiresAt is when the token expires; zero when it never does.
	ExpiresAt time.Time
	Scopes    []string
	// Targets lists, per granular scope, the ids the scope is granted on (WABA ids
	// for the WhatsApp scopes).
	Targets map[string][]string
}

// HasScope reports whether the token was granted scope.
func (t *TokenInfo) HasScope(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope {
			return true
		}
	}
	_, ok := t.Targets[scope]
	return ok
}

// PhoneNumber is one phone number of a WABA.
type PhoneNumber struct {
	ID                 string `json:"id"`
	DisplayPhoneNumber string `json:"display_phone_number"`
	VerifiedName       string `json:"verified_name"`
	QualityRating      string `json:"quality_rating"`
	// PlatformType is CLOUD_API once the number is registered for the Cloud API.
	PlatformType string `json:"platform_type"`
	Status       string `json:"status"`
	Throughput   struct {
		Level string `json:"level"` // STANDARD (80/s) or HIGH (1000/s)
	} `json:"throughput"`
}

// maxPhoneNumberPages bounds the pages of one WABA's phone number listing.
const maxPhoneNumberPages = 10

// ExchangeCode exchanges an Embedded Signup authorization code for the business token.
// redirectURI is the one the dialog was opened with (redirect flow), or "" for a code
// from the JavaScript SDK. The token is returned as it is: the caller keeps it out of
// logs.
func (c *Client) ExchangeCode(ctx context.Context, code, redirectURI string) (string, error) {
	if err := c.needApp(); err != nil {
		return "", err
	}
	q := []string{"client_id", c.app.id, "client_secret", c.app.secret, "code", code}
	if redirectURI != "" {
		q = append(q, "redirect_uri", redirectURI)
	}
	body, err := c.call(ctx, "exchange_code", fasthttp.MethodGet, "oauth/access_token", q, "", nil, code, c.app.secret)
	if err != nil {
		return "", err
	}
	var ans struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || !validToken(ans.AccessToken) {
		return "", &Error{HTTPStatus: fasthttp.StatusOK, Title: "code exchange answered without a usable access_token"}
	}
	return ans.AccessToken, nil
}

// maxExpiresIn bounds a renewed token's expires_in (ten years, in seconds): a larger
// one is not a usable answer.
const maxExpiresIn = 10 * 366 * 24 * 3600

// ExchangedToken is a renewed token and its life.
type ExchangedToken struct {
	AccessToken string
	// ExpiresIn is how long it lives; 0 when Meta gave no expiry (it never expires).
	ExpiresIn time.Duration
}

// ExchangeToken renews a token that expires (a 60-day token) for a new one that lives
// 60 days: GET oauth/access_token with grant_type=fb_exchange_token. The answer is a
// different string that replaces token. An expired or revoked token cannot be renewed:
// Meta answers code 190, and the tenant must connect the account again. Neither token
// appears in an error.
func (c *Client) ExchangeToken(ctx context.Context, token string) (ExchangedToken, error) {
	if err := c.needApp(); err != nil {
		return ExchangedToken{}, err
	}
	if !validToken(token) {
		return ExchangedToken{}, &Error{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken, Title: "missing or malformed access token (not sent)"}
	}
	q := []string{"grant_type", "fb_exchange_token", "client_id", c.app.id, "client_secret", c.app.secret,
		"set_token_expires_in_60_days", "true", "fb_exchange_token", token}
	body, err := c.call(ctx, "exchange_token", fasthttp.MethodGet, "oauth/access_token", q, "", nil, token, c.app.secret)
	if err != nil {
		return ExchangedToken{}, err
	}
	var ans struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || !validToken(ans.AccessToken) || ans.ExpiresIn < 0 || ans.ExpiresIn > maxExpiresIn {
		return ExchangedToken{}, &Error{HTTPStatus: fasthttp.StatusOK, Title: "token exchange answered without a usable access_token"}
	}
	return ExchangedToken{AccessToken: ans.AccessToken, ExpiresIn: time.Duration(ans.ExpiresIn) * time.Second}, nil
}

// DebugToken asks debug_token, with the app token, what token is: its app, validity,
// expiry and granted scopes.
func (c *Client) DebugToken(ctx context.Context, token string) (TokenInfo, error) {
	if err := c.needApp(); err != nil {
		return TokenInfo{}, err
	}
	appToken := c.app.id + "|" + c.app.secret
	body, err := c.call(ctx, "debug_token", fasthttp.MethodGet, "debug_token", []string{"input_token", token}, appToken, nil, token, c.app.secret)
	if err != nil {
		return TokenInfo{}, err
	}
	var ans struct {
		Data *struct {
			AppID          string   `json:"app_id"`
			IsValid        bool     `json:"is_valid"`
			ExpiresAt      int64    `json:"expires_at"`
			Scopes         []string `json:"scopes"`
			GranularScopes []struct {
				Scope     string   `json:"scope"`
				TargetIDs []string `json:"target_ids"`
			} `json:"granular_scopes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || ans.Data == nil {
		return TokenInfo{}, &Error{HTTPStatus: fasthttp.StatusOK, Title: "debug_token answered without data"}
	}
	d := ans.Data
	info := TokenInfo{AppID: d.AppID, IsValid: d.IsValid, Scopes: d.Scopes, Targets: map[string][]string{}}
	if d.ExpiresAt > 0 {
		info.ExpiresAt = time.Unix(d.ExpiresAt, 0).UTC()
	}
	for _, g := range d.GranularScopes {
		info.Targets[g.Scope] = append(info.Targets[g.Scope], g.TargetIDs...)
	}
	return info, nil
}

// PhoneNumbers lists the WABA's phone numbers.
func (c *Client) PhoneNumbers(ctx context.Context, token, wabaID string) ([]PhoneNumber, error) {
	if whatsapp.CheckWABAID(wabaID) != nil {
		return nil, &Error{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter, Title: "invalid WABA id (not sent)"}
	}
	var out []PhoneNumber
	after := ""
	for range maxPhoneNumberPages {
		q := []string{"fields", "id,display_phone_number,verified_name,quality_rating,platform_type,status,throughput", "limit", "100"}
		if after != "" {
			q = append(q, "after", after)
		}
		body, err := c.call(ctx, "phone_numbers", fasthttp.MethodGet, wabaID+"/phone_numbers", q, token, nil, token)
		if err != nil {
			return nil, err
		}
		var page struct {
			Data   []PhoneNumber `json:"data"`
			Paging struct {
				Cursors struct {
					After string `json:"after"`
				} `json:"cursors"`
				Next string `json:"next"`
			} `json:"paging"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, &Error{HTTPStatus: fasthttp.StatusOK, Title: "phone_numbers answered with invalid JSON"}
		}
		for _, p := range page.Data {
			if whatsapp.CheckPhoneNumberID(p.ID) != nil {
				return nil, &Error{HTTPStatus: fasthttp.StatusOK, Title: "phone_numbers listed an invalid id"}
			}
			p.DisplayPhoneNumber = truncate(p.DisplayPhoneNumber)
			p.VerifiedName = truncate(p.VerifiedName)
			p.QualityRating = truncate(p.QualityRating)
			out = append(out, p)
		}
		if page.Paging.Next == "" || page.Paging.Cursors.After == "" {
			return out, nil
		}
		after = page.Paging.Cursors.After
	}
	return out, nil
}

// SubscribeApp subscribes the app to the WABA's webhooks.
func (c *Client) SubscribeApp(ctx context.Context, token, wabaID string) error {
	if whatsapp.CheckWABAID(wabaID) != nil {
		return &Error{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter, Title: "invalid WABA id (not sent)"}
	}
	body, err := c.call(ctx, "subscribed_apps", fasthttp.MethodPost, wabaID+"/subscribed_apps", nil, token, nil, token)
	if err != nil {
		return err
	}
	return checkSuccess(body, "subscribed_apps")
}

// Register registers the phone number for the Cloud API with a two-step verification
// PIN of 6 digits.
func (c *Client) Register(ctx context.Context, token, phoneNumberID, pin string) error {
	if whatsapp.CheckPhoneNumberID(phoneNumberID) != nil {
		return &Error{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter, Title: "invalid phone number id (not sent)"}
	}
	payload, _ := json.Marshal(map[string]string{"messaging_product": "whatsapp", "pin": pin})
	body, err := c.call(ctx, "register", fasthttp.MethodPost, phoneNumberID+"/register", nil, token, payload, token, pin)
	if err != nil {
		return err
	}
	return checkSuccess(body, "register")
}

func checkSuccess(body []byte, what string) error {
	var ans struct {
		Success bool `json:"success"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || !ans.Success {
		return &Error{HTTPStatus: fasthttp.StatusOK, Title: what + " did not answer success"}
	}
	return nil
}

func (c *Client) needApp() error {
	if c.app.id == "" || c.app.secret == "" {
		return ErrNotConfigured
	}
	return nil
}

// call makes one Graph request (op labels its duration): path under the version, query as name/value pairs, an
// optional bearer token (with its appsecret_proof) and JSON body. secrets are removed
// from any answer before a byte of it is kept. Errors are *Error.
func (c *Client) call(ctx context.Context, op, method, path string, query []string, bearer string, body []byte, secrets ...string) ([]byte, error) {
	if bearer != "" && !validToken(bearer) {
		return nil, &Error{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken, Title: "missing or malformed access token (not sent)"}
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Temporary: true, Title: "not sent: " + err.Error(), cause: err}
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	args := fasthttp.AcquireArgs()
	defer fasthttp.ReleaseArgs(args)
	for i := 0; i+1 < len(query); i += 2 {
		args.Add(query[i], query[i+1])
	}
	if bearer != "" && c.app.macs != nil {
		args.Add("appsecret_proof", string(c.app.appendProof(nil, bearer)))
	}
	u := c.prefix + path
	if args.Len() > 0 {
		u += "?" + args.String()
	}
	req.SetRequestURI(u)
	req.Header.SetMethod(method)
	if bearer != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+bearer)
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	}
	start := time.Now()
	err := c.hc.DoDeadline(req, resp, deadline)
	metrics.GraphDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, transportError(ctx, err)
	}
	out := resp.Body()
	for _, s := range secrets {
		// A PIN is 6 digits: shorter than what redact looks for.
		if len(s) >= 6 && bytes.Contains(out, []byte(s)) {
			out = bytes.ReplaceAll(out, []byte(s), []byte("[redacted]"))
		}
	}
	status := resp.StatusCode()
	if status < 200 || status >= 300 {
		return nil, ParseError(status, out)
	}
	return append([]byte(nil), out...), nil
}

// ThroughputMPS is the messages per second Meta allows a number of that throughput level.
func ThroughputMPS(level string) int {
	if level == "HIGH" {
		return 1000
	}
	return 80
}
