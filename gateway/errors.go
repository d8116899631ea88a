package gateway

import (
	"net/http"

	"github.com/valyala/fasthttp"
)

// apiError is an answer with a stable machine-readable code. The values below are
// package variables so the hot path returns them without allocating.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

var (
	errMissingToken        = &apiError{http.StatusUnauthorized, "unauthorized", "missing bearer token in the Authorization header"}
	errInvalidToken        = &apiError{http.StatusUnauthorized, "unauthorized", "invalid or expired token"}
	errTenantMismatch      = &apiError{http.StatusForbidden, "tenant_mismatch", "tenantId does not match the token's tenant"}
	errNotFound            = &apiError{http.StatusNotFound, "not_found", "no such route"}
	errMethodNotAllowed    = &apiError{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route"}
	errAccountNotFound     = &apiError{http.StatusNotFound, "account_not_found", "no WhatsApp account with that phone_number_id for this tenant"}
	errNoDefaultAccount    = &apiError{http.StatusNotFound, "account_not_found", "this tenant has no default WhatsApp account; name a phone_number_id"}
	errMessageNotFound     = &apiError{http.StatusNotFound, "message_not_found", "no message with that id for this tenant"}
	errTokenExpired        = &apiError{http.StatusConflict, "account_token_expired", "the WhatsApp account's access token has expired; reconnect or refresh it"}
	errNeedsReconnect      = &apiError{http.StatusConflict, "account_needs_reconnect", "the WhatsApp account must be reconnected"}
	errAccountDisconnected = &apiError{http.StatusConflict, "account_disconnected", "the WhatsApp account was disconnected; connect it again with Embedded Signup"}
	errBodyTooLarge        = &apiError{http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the size limit"}
	errQueueUnavailable    = &apiError{http.StatusServiceUnavailable, "queue_unavailable", "the message was not queued; nothing was sent: retry"}
	errQueueTimeout        = &apiError{http.StatusGatewayTimeout, "queue_timeout", "the queue did not confirm the message in time: it may have been accepted and may still be sent; check GET /v1/messages/{id}, or retry with the same Idempotency-Key (a retry without one may send twice)"}
	errKeyReused           = &apiError{http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was first used with another request (path, phone_number_id or body); nothing was sent"}
	errUnavailable         = &apiError{http.StatusServiceUnavailable, "unavailable", "a dependency is unavailable; retry"}
	errInternal            = &apiError{http.StatusInternalServerError, "internal_error", "internal error"}
	errBadRequest          = &apiError{http.StatusBadRequest, "bad_request", "malformed request"}
	errRequestTimeout      = &apiError{http.StatusRequestTimeout, "request_timeout", "timed out reading the request"}
	errHeaderTooLarge      = &apiError{http.StatusRequestHeaderFieldsTooLarge, "headers_too_large", "request headers are too large"}

	errInvalidJSON            = &apiError{http.StatusBadRequest, "invalid_json", "body must be a JSON object"}
	errJSONTooDeep            = &apiError{http.StatusBadRequest, "json_too_deep", "body nests arrays and objects deeper than the limit"}
	errDuplicateAuthorization = &apiError{http.StatusBadRequest, "duplicate_authorization", "more than one Authorization header"}
	errDuplicateField         = &apiError{http.StatusBadRequest, "duplicate_field", "body names a top-level field twice"}
	errInvalidProduct         = &apiError{http.StatusBadRequest, "invalid_messaging_product", `messaging_product must be "whatsapp"`}
	errInvalidTo              = &apiError{http.StatusBadRequest, "invalid_to", "to must be the recipient's phone number: digits with an optional leading +"}
	errInvalidType            = &apiError{http.StatusBadRequest, "invalid_type", "type must be one of text, image, audio, video, document, sticker, location, contacts, interactive, template, reaction"}
	errInvalidMessageObject   = &apiError{http.StatusBadRequest, "invalid_message_object", "the object named by type is missing or has the wrong shape (contacts is an array, every other type an object)"}
	errInvalidPhoneNumberID   = &apiError{http.StatusBadRequest, "invalid_phone_number_id", "phone_number_id must be 1 to 64 letters, digits, '-', '_' or '.'"}
	errPhoneNumberIDMismatch  = &apiError{http.StatusBadRequest, "phone_number_id_mismatch", "phone_number_id in the body differs from the one in the path"}
	errInvalidPriority        = &apiError{http.StatusBadRequest, "invalid_priority", `priority (body field or X-Aerogate-Priority header) must be "urgent" or "normal"`}
	errInvalidIdempotencyKey  = &apiError{http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters"}
	errInvalidGraphAPIVersion = &apiError{http.StatusBadRequest, "invalid_version", "the Graph API version in the path must look like v22.0"}
)

const headerRequestID = "X-Request-Id"

// writeError answers with {"error":{"code","message","request_id"}}. The request id is
// read back from the response header the middleware set.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) { writeErrorWithID(ctx, e, nil) }

// writeErrorWithID answers like writeError, adding the message id ("id") the error is
// about when id is not empty.
func writeErrorWithID(ctx *fasthttp.RequestCtx, e *apiError, id []byte) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("application/json")
	var buf [256]byte
	b := append(buf[:0], `{"error":{"code":`...)
	b = appendJSONString(b, e.code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, e.message)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, ctx.Response.Header.Peek(headerRequestID))
	if len(id) > 0 {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, "}}"...)
	ctx.SetBody(b)
}
