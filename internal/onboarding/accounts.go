package onboarding

import (
	"context"
	"errors"
	"time"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// Accounts lists the tenant's accounts, never their tokens.
func (s *Service) Accounts(ctx context.Context, tenantID string) ([]account.Summary, error) {
	out, err := s.repo.Summaries(ctx, tenantID)
	if err != nil {
		return nil, ErrUnavailable.with("", err)
	}
	return out, nil
}

// Disconnect erases the token of the tenant's account with that phone number id; its
// sends are refused from then on. Another tenant's number is account.ErrNotFound.
func (s *Service) Disconnect(ctx context.Context, tenantID, phoneNumberID string) (account.Summary, error) {
	a, err := s.repo.Disconnect(ctx, tenantID, phoneNumberID)
	if errors.Is(err, account.ErrNotFound) {
		return a, err
	}
	if err != nil {
		return a, ErrUnavailable.with("", err)
	}
	s.log.Info("whatsapp account disconnected", "tenant", tenantID, "phone_number_id", phoneNumberID, "account_id", a.ID)
	return a, nil
}

// HelloWorld is the Cloud API body of Meta's sample template, which every WABA has.
func helloWorld(to string) []byte {
	return []byte(`{"messaging_product":"whatsapp","to":"` + to +
		`","type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}`)
}

// TestMessage sends Meta's hello_world template (en_US) to `to` from the tenant's account
// with that phone number id (its default account when empty), synchronously, with the
// account's own token. Account problems are the account package's errors (ErrNotFound,
// ErrDisconnected, ...); Meta's refusals are *Error with Graph set, and a refused token
// (190) also marks the account invalid, as the sender does.
func (s *Service) TestMessage(ctx context.Context, tenantID, phoneNumberID, to string) (graph.SendResult, error) {
	digits, err := whatsapp.ParseRecipient(to)
	if err != nil {
		return graph.SendResult{}, ErrInvalidRecipient
	}
	if phoneNumberID != "" && whatsapp.CheckPhoneNumberID(phoneNumberID) != nil {
		return graph.SendResult{}, account.ErrNotFound
	}
	a, err := s.repo.Get(ctx, tenantID, phoneNumberID)
	if err != nil {
		if errors.Is(err, account.ErrNotFound) {
			return graph.SendResult{}, err
		}
		return graph.SendResult{}, ErrUnavailable.with("", err)
	}
	if err := a.Usable(time.Now()); err != nil {
		return graph.SendResult{}, err
	}
	res, err := s.graph.SendMessage(ctx, a.PhoneNumberID, a.AccessToken.Reveal(), helloWorld(string(digits)))
	if err == nil {
		s.log.Info("test message sent", "tenant", tenantID, "phone_number_id", a.PhoneNumberID, "wamid", res.WAMID)
		return res, nil
	}
	var ge *graph.Error
	if !errors.As(err, &ge) {
		return graph.SendResult{}, ErrGraphUnavailable.with("messages", err)
	}
	s.log.Warn("test message refused", "tenant", tenantID, "phone_number_id", a.PhoneNumberID,
		"graph_code", ge.Code, "graph_title", ge.Title, "fbtrace_id", ge.FBTraceID)
	switch ge.Action() {
	case graph.ActionStopAccount:
		if serr := s.repo.SetTokenStatus(ctx, a.ID, account.StatusInvalid, ge.Title); serr != nil {
			s.log.Error("marking account invalid", "account_id", a.ID, "error", serr.Error())
		}
		return graph.SendResult{}, ErrAccountTokenInvalid.with("messages", err)
	case graph.ActionRetry:
		return graph.SendResult{}, ErrGraphUnavailable.with("messages", err)
	default:
		e := ErrGraph.with("messages", err)
		e.Status = 400
		e.Message = "Meta refused the test message (see graph_code and graph_title)"
		if ge.Action() == graph.ActionRetryRecipient || ge.Action() == graph.ActionPauseNumber {
			e.Status = 429
		}
		return graph.SendResult{}, e
	}
}
