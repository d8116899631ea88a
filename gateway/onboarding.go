package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/onboarding"
)

// onboardingTimeout bounds one Embedded Signup completion: five Graph steps and a
// transaction.
const onboardingTimeout = 60 * time.Second

var (
	errOnboardingNotConfigured = &apiError{http.StatusServiceUnavailable, onboarding.ErrNotConfigured.Code, onboarding.ErrNotConfigured.Message}
	errOnboardingBody          = &apiError{http.StatusBadRequest, onboarding.ErrInvalidRequest.Code, onboarding.ErrInvalidRequest.Message}
	errTestMessageBody         = &apiError{http.StatusBadRequest, "invalid_request", `body must be {"to": "<phone number>", "phone_number_id"?: "<id>"}`}
)

// onboardingRoutes registers Embedded Signup, the test message and the accounts API.
func (s *Server) onboardingRoutes(r *router.Router) {
	handle(r, fasthttp.MethodGet, "/v1/whatsapp/embedded-signup", s.authed(s.beginSignup))
	handle(r, fasthttp.MethodPost, "/v1/whatsapp/embedded-signup", s.authed(s.completeSignup))
	handle(r, fasthttp.MethodGet, "/meta/callback", s.metaCallback)
	handle(r, fasthttp.MethodPost, "/v1/whatsapp/test-message", s.authed(s.testMessage))
	handle(r, fasthttp.MethodGet, "/v1/whatsapp/accounts", s.authed(s.listAccounts))
	handle(r, fasthttp.MethodDelete, "/v1/whatsapp/accounts/{phone_number_id}", s.authed(s.disconnectAccount))
}

func onboardingContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), onboardingTimeout)
}

// beginSignup is GET /v1/whatsapp/embedded-signup: a fresh state and what a front end
// needs for either flow.
func (s *Server) beginSignup(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Onboarding == nil {
		writeError(ctx, errOnboardingNotConfigured)
		return
	}
	c, cancel := onboardingContext()
	defer cancel()
	st, err := s.opts.Onboarding.Begin(c, claims.TenantID, claims.Subject)
	if err != nil {
		s.writeOnboardingError(ctx, err)
		return
	}
	writeJSONAnswer(ctx, http.StatusOK, map[string]any{
		"app_id":        st.AppID,
		"config_id":     st.ConfigID,
		"graph_version": st.GraphVersion,
		"state":         st.State,
		"url":           st.URL,
		"redirect_uri":  st.RedirectURI,
		"expires_at":    st.ExpiresAt.UTC().Format(time.RFC3339),
	})
}

// signupBody is POST /v1/whatsapp/embedded-signup's body.
type signupBody struct {
	code, state, wabaID, phoneNumberID string
}

// parseSignupBody reads {"code","state","waba_id"?,"phone_number_id"?}: an object whose
// fields, when present, are strings. A tenant field that differs from the token's tenant
// is errTenantMismatch. The body passes checkJSON (one linear pass, nesting at most
// maxDepth) before fastjson parses it.
func parseSignupBody(p *fastjson.Parser, body []byte, tenant string, tenantFields []string, maxDepth int) (signupBody, *apiError) {
	var out signupBody
	if apiErr := checkJSON(body, maxDepth); apiErr != nil {
		return out, apiErr
	}
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return out, errOnboardingBody
	}
	if o, _ := v.Object(); hasDuplicateKey(o) {
		return out, errDuplicateField
	}
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{{"code", &out.code, true}, {"state", &out.state, true}, {"waba_id", &out.wabaID, false}, {"phone_number_id", &out.phoneNumberID, false}} {
		fv := v.Get(f.name)
		if fv == nil || fv.Type() == fastjson.TypeNull {
			if f.required {
				return out, errOnboardingBody
			}
			continue
		}
		b, err := fv.StringBytes()
		if err != nil {
			return out, errOnboardingBody
		}
		*f.dst = string(b)
	}
	if bad := tenantFieldMismatch(v, tenant, tenantFields); bad != nil {
		return out, bad
	}
	return out, nil
}

func tenantFieldMismatch(v *fastjson.Value, tenant string, tenantFields []string) *apiError {
	for _, name := range tenantFields {
		if fv := v.Get(name); fv != nil {
			if b, err := fv.StringBytes(); err != nil || string(b) != tenant {
				return errTenantMismatch
			}
		}
	}
	return nil
}

// completeSignup is POST /v1/whatsapp/embedded-signup, the JavaScript SDK flow: the
// tenant is the token's, and must be the state's.
func (s *Server) completeSignup(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Onboarding == nil {
		writeError(ctx, errOnboardingNotConfigured)
		return
	}
	if len(ctx.Request.Body()) > s.opts.MaxBodyBytes {
		writeError(ctx, errBodyTooLarge)
		return
	}
	var p fastjson.Parser
	b, apiErr := parseSignupBody(&p, ctx.Request.Body(), claims.TenantID, s.tenantField, s.opts.MaxJSONDepth)
	if apiErr != nil {
		writeError(ctx, apiErr)
		return
	}
	c, cancel := onboardingContext()
	defer cancel()
	res, err := s.opts.Onboarding.Complete(c, onboarding.Request{
		TenantID: claims.TenantID, Subject: claims.Subject,
		Code: b.code, State: b.state, WABAID: b.wabaID, PhoneNumberID: b.phoneNumberID,
	})
	if err != nil {
		s.writeOnboardingError(ctx, err)
		return
	}
	writeJSONAnswer(ctx, http.StatusOK, map[string]any{"status": "connected", "accounts": accountsJSON(res.Accounts)})
}

// metaCallback is GET /meta/callback, the redirect flow: Meta sends the browser here with
// code and state (or error). The tenant is the state's. The browser then goes to
// frontend.redirect_url with the outcome, or gets it as JSON when none is configured.
func (s *Server) metaCallback(ctx *fasthttp.RequestCtx) {
	// The callback's URL holds the code: no page it leads to may see it as a referrer.
	ctx.Response.Header.Set("Referrer-Policy", "no-referrer")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	if s.opts.Onboarding == nil {
		writeError(ctx, errOnboardingNotConfigured)
		return
	}
	q := ctx.QueryArgs()
	var res onboarding.Result
	var err error
	if q.Has("error") || q.Has("error_reason") {
		err = onboarding.ErrAccessDenied
		s.log.Info("embedded signup cancelled at Meta", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
			"reason", string(q.Peek("error_reason")))
	} else {
		c, cancel := onboardingContext()
		defer cancel()
		res, err = s.opts.Onboarding.Complete(c, onboarding.Request{
			Redirect: true, Code: string(q.Peek("code")), State: string(q.Peek("state")),
		})
	}
	if to, ok := s.opts.Onboarding.FrontendRedirect(err); ok {
		ctx.Redirect(to, fasthttp.StatusFound)
		return
	}
	if err != nil {
		s.writeOnboardingError(ctx, err)
		return
	}
	writeJSONAnswer(ctx, http.StatusOK, map[string]any{"status": "connected", "accounts": accountsJSON(res.Accounts)})
}

// writeOnboardingError answers an onboarding error with its stable code; Meta's code and
// title are added when a Graph call was refused.
func (s *Server) writeOnboardingError(ctx *fasthttp.RequestCtx, err error) {
	var oe *onboarding.Error
	if !errors.As(err, &oe) {
		s.log.Error("onboarding", "request_id", string(ctx.Response.Header.Peek(headerRequestID)), "error", err.Error())
		writeError(ctx, errInternal)
		return
	}
	if oe.Status == http.StatusServiceUnavailable {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	}
	if oe.Graph == nil || oe.Graph.Code == 0 {
		writeError(ctx, &apiError{oe.Status, oe.Code, oe.Message})
		return
	}
	e := map[string]any{
		"code":        oe.Code,
		"message":     oe.Message,
		"request_id":  string(ctx.Response.Header.Peek(headerRequestID)),
		"graph_code":  oe.Graph.Code,
		"graph_title": oe.Graph.Title,
	}
	if oe.Graph.Subcode != 0 {
		e["graph_subcode"] = oe.Graph.Subcode
	}
	if oe.Graph.FBTraceID != "" {
		e["fbtrace_id"] = oe.Graph.FBTraceID
	}
	writeJSONAnswer(ctx, oe.Status, map[string]any{"error": e})
}

func writeJSONAnswer(ctx *fasthttp.RequestCtx, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // URLs keep their & readable
	if err := enc.Encode(v); err != nil {
		writeError(ctx, errInternal)
		return
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// accountJSON is an account as the API shows it: never its token.
type accountJSON struct {
	ID                 string     `json:"id"`
	WABAID             string     `json:"waba_id"`
	PhoneNumberID      string     `json:"phone_number_id"`
	DisplayPhoneNumber string     `json:"display_phone_number"`
	VerifiedName       string     `json:"verified_name"`
	QualityRating      string     `json:"quality_rating"`
	ThroughputMPS      int        `json:"throughput_mps"`
	TokenStatus        string     `json:"token_status"`
	TokenExpiresAt     *time.Time `json:"token_expires_at"` // null: never expires
	IsDefault          bool       `json:"is_default"`
	CreatedAt          time.Time  `json:"created_at"`
	UpdatedAt          time.Time  `json:"updated_at"`
}

func accountsJSON(in []account.Summary) []accountJSON {
	out := make([]accountJSON, len(in))
	for i, a := range in {
		if a.TokenExpiresAt != nil {
			t := a.TokenExpiresAt.UTC()
			a.TokenExpiresAt = &t
		}
		out[i] = accountJSON{
			ID: a.ID, WABAID: a.WABAID, PhoneNumberID: a.PhoneNumberID, DisplayPhoneNumber: a.DisplayPhoneNumber,
			VerifiedName: a.VerifiedName, QualityRating: a.QualityRating, ThroughputMPS: a.ThroughputMPS,
			TokenStatus: string(a.TokenStatus), TokenExpiresAt: a.TokenExpiresAt, IsDefault: a.IsDefault,
			CreatedAt: a.CreatedAt.UTC(), UpdatedAt: a.UpdatedAt.UTC(),
		}
	}
	return out
}
