package gateway

import (
	"bytes"
	"net/http"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/whatsapp"
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
	errInvalidTo              = &apiError{http.StatusBadRequest, "invalid_to", "to must be the recipient's phone number with its country code: 7 to 15 digits, an optional leading +, spaces, hyphens and parentheses"}
	errInvalidType            = &apiError{http.StatusBadRequest, "invalid_type", "type must be one of text, image, audio, video, document, sticker, location, contacts, interactive, template, reaction"}
	errInvalidMessageObject   = &apiError{http.StatusBadRequest, "invalid_message_object", "the object named by type is missing or has the wrong shape (contacts is an array, every other type an object)"}
	errInvalidTextBody        = &apiError{http.StatusBadRequest, "invalid_text_body", "text.body must be a string of 1 to 4096 characters"}
	errInvalidPhoneNumberID   = &apiError{http.StatusBadRequest, "invalid_phone_number_id", "phone_number_id must be Meta's numeric id: 1 to 32 digits"}
	errPhoneNumberIDMismatch  = &apiError{http.StatusBadRequest, "phone_number_id_mismatch", "phone_number_id in the body differs from the one in the path"}
	errInvalidPriority        = &apiError{http.StatusBadRequest, "invalid_priority", `priority (body field or X-Aerogate-Priority header) must be "urgent" or "normal"`}
	errInvalidIdempotencyKey  = &apiError{http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters"}
	errInvalidGraphAPIVersion = &apiError{http.StatusBadRequest, "invalid_version", "the Graph API version in the path must be vMAJOR.MINOR, such as v22.0"}
)

const headerRequestID = "X-Request-Id"

// writeError is how every error is answered. On the Cloud-API-compatible path
// (/{version}/{phone_number_id}/messages) and the Graph passthrough's paths
// (/{version}/…, /v1/media/{id}/content) it is Meta's error shape (writeMetaError);
// everywhere else {"error":{"code","message","request_id"}}. The request id is read
// back from the response header the middleware set.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) { writeErrorWithID(ctx, e, nil) }

// writeErrorWithID answers like writeError, adding the message id the error is about
// when id is not empty ("id" on /v1, error_data.message_id in Meta's shape).
func writeErrorWithID(ctx *fasthttp.RequestCtx, e *apiError, id []byte) {
	if metaShaped(ctx) {
		writeMetaError(ctx, e, id)
		return
	}
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

// Graph API error types.
const (
	typeOAuth       = "OAuthException"
	typeGraphMethod = "GraphMethodException"
)

// metaError is an apiError as Meta's Graph API would answer it.
type metaError struct {
	status  int // HTTP status
	code    int // Meta's error code
	subcode int // error_subcode; 0: none
	typ     string
}

// metaErrorOf maps a stable aerogate code to Meta's code, subcode, type and HTTP status,
// so a client written for the Cloud API handles it unchanged. A code not listed maps
// by its status: Meta answers request problems with 400 and code 100, throttling with
// code 4, its own failures with code 1 (500) or 2 (temporarily unavailable). 408, 413
// and 431 keep their status: any HTTP server in front would answer the same.
func metaErrorOf(e *apiError) metaError {
	switch e.code {
	case "unauthorized":
		return metaError{http.StatusUnauthorized, 190, 0, typeOAuth}
	case "account_token_expired":
		// What Meta answers a send with an expired token: 190, "session has expired".
		return metaError{http.StatusUnauthorized, 190, 463, typeOAuth}
	case "tenant_mismatch":
		return metaError{http.StatusForbidden, 200, 0, typeOAuth}
	case "account_needs_reconnect":
		// 131005 Access denied: the permission was removed.
		return metaError{http.StatusForbidden, 131005, 0, typeOAuth}
	case "account_not_found", "invalid_phone_number_id", "invalid_version", "not_found", "method_not_allowed",
		"object_not_found":
		// Graph's "Unsupported post request. Object with ID '…' does not exist, cannot be
		// loaded due to missing permissions, or does not support this operation."
		return metaError{http.StatusBadRequest, 100, 33, typeGraphMethod}
	case "invalid_to", "invalid_text_body":
		return metaError{http.StatusBadRequest, 131009, 0, typeOAuth} // Parameter value is not valid
	case "media_not_found":
		return metaError{http.StatusNotFound, 100, 33, typeGraphMethod}
	case "edge_not_allowed":
		// (#10) Application does not have permission for this action.
		return metaError{http.StatusForbidden, 10, 0, typeOAuth}
	case "invalid_media_upload":
		return metaError{http.StatusBadRequest, 131053, 0, typeOAuth} // Media upload error
	case "media_too_large":
		if e.status == http.StatusRequestEntityTooLarge {
			return metaError{e.status, 131053, 0, typeOAuth} // Media upload error
		}
		return metaError{e.status, 131052, 0, typeOAuth} // Media download error
	case "invalid_message_object":
		return metaError{http.StatusBadRequest, 131008, 0, typeOAuth} // Required parameter is missing
	case "invalid_type":
		return metaError{http.StatusBadRequest, 131051, 0, typeOAuth} // Unsupported message type
	}
	switch s := e.status; {
	case s == http.StatusRequestTimeout, s == http.StatusRequestEntityTooLarge, s == http.StatusRequestHeaderFieldsTooLarge:
		return metaError{s, 100, 0, typeOAuth}
	case s == http.StatusTooManyRequests:
		return metaError{s, 4, 0, typeOAuth} // API Too Many Calls
	case s == http.StatusUnauthorized:
		return metaError{s, 190, 0, typeOAuth}
	case s == http.StatusForbidden:
		return metaError{s, 200, 0, typeOAuth}
	case s < 500:
		return metaError{http.StatusBadRequest, 100, 0, typeOAuth} // Invalid parameter
	case s == http.StatusInternalServerError:
		return metaError{s, 1, 0, typeOAuth} // An unknown error occurred
	default:
		return metaError{s, 2, 0, typeOAuth} // Service temporarily unavailable
	}
}

// writeMetaError answers in Meta's error shape:
//
//	{"error":{"message","type","code","error_subcode"?,"is_transient"?,
//	          "error_data":{"messaging_product","details","aerogate_code","message_id"?},"fbtrace_id"}}
//
// fbtrace_id is the request id; error_data.aerogate_code is the stable code the /v1
// answer would carry, error_data.message_id the message the error is about, if any.
func writeMetaError(ctx *fasthttp.RequestCtx, e *apiError, id []byte) {
	m := metaErrorOf(e)
	ctx.Response.ResetBody()
	ctx.SetStatusCode(m.status)
	ctx.SetContentType("application/json")
	var buf [512]byte
	b := append(buf[:0], `{"error":{"message":`...)
	b = appendJSONString(b, e.message)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, m.typ)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(m.code), 10)
	if m.subcode != 0 {
		b = append(b, `,"error_subcode":`...)
		b = strconv.AppendInt(b, int64(m.subcode), 10)
	}
	if m.status >= 500 || m.status == http.StatusTooManyRequests {
		b = append(b, `,"is_transient":true`...)
	}
	b = append(b, `,"error_data":{"messaging_product":"whatsapp","details":`...)
	b = appendJSONString(b, e.message)
	b = append(b, `,"aerogate_code":`...)
	b = appendJSONString(b, e.code)
	if len(id) > 0 {
		b = append(b, `,"message_id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, `},"fbtrace_id":`...)
	b = appendJSONString(b, ctx.Response.Header.Peek(headerRequestID))
	b = append(b, "}}"...)
	ctx.SetBody(b)
}

// graphRoute is the Cloud-API-compatible send route, whose errors are Meta-shaped.
const graphRoute = "/{version}/{phone_number_id}/messages"

// metaShaped reports whether ctx's errors are answered in Meta's shape: a Graph
// passthrough path, or the send route graphRoute — the route that serves the request
// or, for an error answered before any route (an unreadable or oversized request, no
// route for the method), a path that looks like it.
func metaShaped(ctx *fasthttp.RequestCtx) bool {
	p := ctx.Path()
	if onPassthroughPath(p) {
		return true
	}
	if m, ok := ctx.UserValue(routeKey{}).(*routeMetrics); ok {
		return m.route == graphRoute
	}
	return onGraphPath(p)
}

// onPassthroughPath reports whether path is the Graph passthrough's: its first segment a
// Graph version (/v22.0/…), or GET /v1/media/{id}/content.
func onPassthroughPath(path []byte) bool {
	first, _, _ := bytes.Cut(bytes.TrimPrefix(path, []byte("/")), []byte("/"))
	return whatsapp.CheckGraphVersion(first) == nil || isMediaContent(path)
}

// onGraphPath reports whether path looks like /{version}/{phone_number_id}/messages:
// three non-empty segments, the last "messages", the first not one of the gateway's own
// prefixes ("v1": GET /v1/messages/messages is a status lookup; "api": the proxy).
func onGraphPath(path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte("/"))
	if !ok {
		return false
	}
	first, rest, ok := bytes.Cut(rest, []byte("/"))
	if !ok || len(first) == 0 || string(first) == "v1" || string(first) == "api" {
		return false
	}
	second, rest, ok := bytes.Cut(rest, []byte("/"))
	return ok && len(second) > 0 && string(rest) == "messages"
}
