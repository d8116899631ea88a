package onboarding

import (
	"errors"
	"net/http"

	"github.com/aerostic/aerogate/internal/graph"
)

// Error is a refused or failed onboarding step, with the HTTP status and the stable code
// the API answers with (the redirect flow puts Code in the browser's redirect as its
// reason). Its message never holds a token, code, state, PIN or secret.
type Error struct {
	Status  int
	Code    string
	Message string
	// Step is the Graph step that failed ("exchange", "debug_token", ...), if any.
	Step string
	// Graph is Meta's error behind it, if any.
	Graph *graph.Error
	cause error
}

func (e *Error) Error() string {
	s := "onboarding: " + e.Code + ": " + e.Message
	if e.Step != "" {
		s += " (step " + e.Step + ")"
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.cause }

// Is matches errors of the same code, so errors.Is(err, ErrInvalidState) holds for a
// wrapped copy too.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// with returns a copy of e naming the step and the cause.
func (e *Error) with(step string, cause error) *Error {
	c := *e
	c.Step = step
	c.cause = cause
	var ge *graph.Error
	if errors.As(cause, &ge) {
		c.Graph = ge
	}
	return &c
}

// The errors onboarding answers with; callers branch on them with errors.Is.
var (
	ErrNotConfigured = &Error{Status: http.StatusServiceUnavailable, Code: "onboarding_not_configured",
		Message: "Embedded Signup is not configured: meta.app_id, meta.app_secret and meta.config_id are required"}
	ErrInvalidRequest = &Error{Status: http.StatusBadRequest, Code: "invalid_request",
		Message: "code and state are required strings (waba_id and phone_number_id, when given, are numeric ids)"}
	ErrInvalidState = &Error{Status: http.StatusBadRequest, Code: "invalid_state",
		Message: "the state is unknown, altered, already used, or was issued to another tenant or user; start Embedded Signup again"}
	ErrStateExpired = &Error{Status: http.StatusBadRequest, Code: "state_expired",
		Message: "the state has expired; start Embedded Signup again"}
	ErrAccessDenied = &Error{Status: http.StatusBadRequest, Code: "access_denied",
		Message: "the person cancelled Embedded Signup or did not grant the permissions"}
	ErrCodeRejected = &Error{Status: http.StatusBadRequest, Code: "code_rejected",
		Message: "Meta refused the authorization code: it lives 30 seconds, exchanges once, and a redirect-flow code must come back to the same redirect_uri"}
	ErrTokenInvalid = &Error{Status: http.StatusBadRequest, Code: "token_invalid",
		Message: "Meta says the business token is not valid for this app"}
	ErrMissingMessagingScope = &Error{Status: http.StatusBadRequest, Code: "missing_messaging_scope",
		Message: "the whatsapp_business_messaging permission was not granted; run Embedded Signup again and keep it selected"}
	ErrNoWABA = &Error{Status: http.StatusBadRequest, Code: "no_waba",
		Message: "no WhatsApp Business Account was shared with the app"}
	ErrWABANotGranted = &Error{Status: http.StatusBadRequest, Code: "waba_not_granted",
		Message: "waba_id is not among the WhatsApp Business Accounts the token was granted"}
	ErrNoPhoneNumbers = &Error{Status: http.StatusBadRequest, Code: "no_phone_numbers",
		Message: "the WhatsApp Business Account has no phone numbers; add one in WhatsApp Manager and connect again"}
	ErrPhoneNumberNotInWABA = &Error{Status: http.StatusBadRequest, Code: "phone_number_not_in_waba",
		Message: "phone_number_id is not a phone number of the shared WhatsApp Business Account"}
	ErrPhoneNumberTaken = &Error{Status: http.StatusConflict, Code: "phone_number_taken",
		Message: "a phone number of this WhatsApp Business Account is connected to another tenant"}
	ErrGraphUnavailable = &Error{Status: http.StatusServiceUnavailable, Code: "graph_unavailable",
		Message: "the Graph API did not answer in time or failed; nothing was changed, start again"}
	ErrGraph = &Error{Status: http.StatusBadGateway, Code: "graph_error",
		Message: "the Graph API refused a step of the onboarding; nothing was changed"}
	ErrUnavailable = &Error{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the database is unavailable; nothing was changed, retry"}
	ErrInvalidRecipient = &Error{Status: http.StatusBadRequest, Code: "invalid_to",
		Message: "to must be the recipient's phone number with its country code: 7 to 15 digits, an optional leading +, spaces, hyphens and parentheses"}
	ErrAccountTokenInvalid = &Error{Status: http.StatusConflict, Code: "account_token_invalid",
		Message: "Meta refused the account's token (code 190); the account is marked invalid: reconnect it"}
)

// graphStepError classifies a Graph failure at step: no answer or a retriable one is
// ErrGraphUnavailable, anything else ErrGraph (or what the step makes of it).
func graphStepError(step string, err error, refused *Error) *Error {
	var ge *graph.Error
	if errors.As(err, &ge) && !ge.Temporary && ge.HTTPStatus >= 400 && ge.HTTPStatus < 500 && ge.Code != 0 &&
		ge.Action() != graph.ActionRetry {
		if refused != nil {
			return refused.with(step, err)
		}
		return ErrGraph.with(step, err)
	}
	if errors.As(err, &ge) && !ge.Temporary && !ge.Retriable() {
		return ErrGraph.with(step, err)
	}
	return ErrGraphUnavailable.with(step, err)
}
