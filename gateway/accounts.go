package gateway

import (
	"errors"
	"net/http"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/onboarding"
)

// testMessage is POST /v1/whatsapp/test-message: Meta's hello_world template sent at once
// with the account's own token, answered with Meta's answer or its error.
func (s *Server) testMessage(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Onboarding == nil {
		writeError(ctx, errOnboardingNotConfigured)
		return
	}
	body := ctx.Request.Body()
	if len(body) > s.opts.MaxBodyBytes {
		writeError(ctx, errBodyTooLarge)
		return
	}
	if apiErr := checkJSON(body, s.opts.MaxJSONDepth); apiErr != nil {
		writeError(ctx, apiErr)
		return
	}
	var p fastjson.Parser
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		writeError(ctx, errTestMessageBody)
		return
	}
	if o, _ := v.Object(); hasDuplicateKey(o) {
		writeError(ctx, errDuplicateField)
		return
	}
	tv := v.Get("to")
	if tv == nil {
		writeError(ctx, errTestMessageBody)
		return
	}
	to, err := tv.StringBytes()
	if err != nil {
		writeError(ctx, errTestMessageBody)
		return
	}
	var pnid []byte
	if fv := v.Get("phone_number_id"); fv != nil && fv.Type() != fastjson.TypeNull {
		if pnid, err = fv.StringBytes(); err != nil {
			writeError(ctx, errTestMessageBody)
			return
		}
	}
	if bad := tenantFieldMismatch(v, claims.TenantID, s.tenantField); bad != nil {
		writeError(ctx, bad)
		return
	}
	c, cancel := onboardingContext()
	defer cancel()
	res, err := s.opts.Onboarding.TestMessage(c, claims.TenantID, string(pnid), string(to))
	if err != nil {
		var oe *onboarding.Error
		if errors.As(err, &oe) {
			s.writeOnboardingError(ctx, err)
		} else {
			s.writeAccountError(ctx, err, len(pnid) == 0)
		}
		return
	}
	writeJSONAnswer(ctx, http.StatusOK, map[string]any{
		"messaging_product": "whatsapp",
		"contacts":          []map[string]string{{"input": string(to), "wa_id": res.WAID}},
		"messages":          []map[string]string{{"id": res.WAMID}},
	})
}

// listAccounts is GET /v1/whatsapp/accounts: the tenant's accounts, never their tokens.
func (s *Server) listAccounts(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Onboarding == nil {
		writeError(ctx, errOnboardingNotConfigured)
		return
	}
	c, cancel := onboardingContext()
	defer cancel()
	accts, err := s.opts.Onboarding.Accounts(c, claims.TenantID)
	if err != nil {
		s.writeOnboardingError(ctx, err)
		return
	}
	writeJSONAnswer(ctx, http.StatusOK, map[string]any{"accounts": accountsJSON(accts)})
}

// disconnectAccount is DELETE /v1/whatsapp/accounts/{phone_number_id}: the token is
// erased and the account's sends answer 409 account_disconnected.
func (s *Server) disconnectAccount(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Onboarding == nil {
		writeError(ctx, errOnboardingNotConfigured)
		return
	}
	pnid, _ := ctx.UserValue("phone_number_id").(string)
	c, cancel := onboardingContext()
	defer cancel()
	a, err := s.opts.Onboarding.Disconnect(c, claims.TenantID, pnid)
	if errors.Is(err, account.ErrNotFound) {
		writeError(ctx, errAccountNotFound)
		return
	}
	if err != nil {
		s.writeOnboardingError(ctx, err)
		return
	}
	writeJSONAnswer(ctx, http.StatusOK, map[string]any{"account": accountsJSON([]account.Summary{a})[0]})
}
