package gateway

import (
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
)

const headerIdempotencyKey = "Idempotency-Key"

// sendState is the per-request scratch memory of a send, pooled. It goes back to the
// pool only when the publisher no longer holds its bytes (after a successful write, or
// when nothing was written).
type sendState struct {
	parser  fastjson.Parser
	payload []byte // the payload when aerogate-only fields were removed
	msg     []byte // key + envelope: one buffer, two slices
	hashBuf []byte
	out     []byte
	msgs    [1]kafka.Message
}

var sendStates = sync.Pool{New: func() any { return new(sendState) }}

// pooled buffers larger than this are dropped instead of kept.
const maxPooledBuffer = 256 << 10

func (st *sendState) release() {
	if cap(st.payload) > maxPooledBuffer || cap(st.msg) > maxPooledBuffer {
		return
	}
	st.msgs[0] = kafka.Message{}
	sendStates.Put(st)
}

// sendV1 is POST /v1/messages: answers 202 {"id","status":"accepted"}.
func (s *Server) sendV1(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	s.send(ctx, claims, "", false)
}

// sendGraph is POST /{version}/{phone_number_id}/messages, drop-in for the Cloud API:
// the same send, answered with Meta's response shape and status (200).
func (s *Server) sendGraph(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	version, _ := ctx.UserValue("version").(string)
	if !validGraphVersion(version) {
		writeError(ctx, errInvalidGraphAPIVersion)
		return
	}
	pnid, _ := ctx.UserValue("phone_number_id").(string)
	if !validPhoneNumberID([]byte(pnid)) {
		writeError(ctx, errInvalidPhoneNumberID)
		return
	}
	s.send(ctx, claims, pnid, true)
}

// send answers a send; pathPNID is the phone number id from a Cloud API path, or "".
func (s *Server) send(ctx *fasthttp.RequestCtx, claims auth.Claims, pathPNID string, graph bool) {
	body := ctx.Request.Body()
	if len(body) > s.opts.MaxSendBodyBytes {
		writeError(ctx, errBodyTooLarge)
		return
	}
	key := ctx.Request.Header.Peek(headerIdempotencyKey)
	if key != nil && !validIdempotencyKey(key) {
		writeError(ctx, errInvalidIdempotencyKey)
		return
	}

	st := sendStates.Get().(*sendState)
	req, payload, apiErr := parseSendRequest(&st.parser, body, claims.TenantID, s.tenantField, st.payload)
	st.payload = payload
	if apiErr != nil {
		st.release()
		writeError(ctx, apiErr)
		return
	}
	pnid := pathPNID
	if pathPNID != "" {
		if req.phoneNumberID != nil && string(req.phoneNumberID) != pathPNID {
			st.release()
			writeError(ctx, errPhoneNumberIDMismatch)
			return
		}
	} else if req.phoneNumberID != nil {
		pnid = string(req.phoneNumberID)
	}

	// One bounded context for the account lookup (a cache miss reads Postgres) and the
	// publish. Not derived from ctx: a RequestCtx is not a cancelCtx, so deriving from
	// it would start a goroutine per request to watch it.
	clock := time.Now()
	bounded := s.deadline.get(clock)
	acct, err := s.opts.Resolver.Resolve(bounded, claims.TenantID, pnid)
	if err != nil {
		st.release()
		s.writeAccountError(ctx, err, pnid == "")
		return
	}
	now := clock
	if !s.realClock {
		now = s.now()
	}
	if err := acct.Usable(now); err != nil {
		st.release()
		s.writeAccountError(ctx, err, false)
		return
	}

	var id uuid.UUID
	if key != nil {
		st.hashBuf = st.hashBuf[:0]
		id = idempotentID(st.hashBuf, claims.TenantID, key)
	} else {
		id = timeOrderedID(now)
	}

	// One buffer holds the key (the tenant id, so all of a tenant's sends share a
	// partition) and the envelope.
	b := append(st.msg[:0], claims.TenantID...)
	keyLen := len(b)
	b = appendEnvelope(b, id, claims.TenantID, acct, req.recipient(), key, req.payload, now)
	st.msg = b
	st.msgs[0] = kafka.Message{Key: b[:keyLen:keyLen], Value: b[keyLen:]}

	err = s.opts.Sends.WriteMessages(bounded, st.msgs[:]...)
	if err != nil {
		// The writer may still hold st's bytes: leave st to the garbage collector.
		n := s.publishErrors.Add(1)
		if s.publishErrLog.allow() {
			s.log.Warn("publishing send failed: answering 503", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
				"tenant", claims.TenantID, "publish_errors_total", n, "error", err.Error())
		}
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, errQueueUnavailable)
		return
	}
	s.accepted.Add(1)

	if s.rec != nil {
		s.rec.add(acceptedRecord{
			id:        id,
			tenantID:  claims.TenantID,
			accountID: acct.ID,
			phone:     acct.PhoneNumberID,
			recipient: newDigits(req.recipient()),
			key:       string(key),
			at:        now,
		})
	}

	out := st.out[:0]
	if graph {
		out = append(out, `{"messaging_product":"whatsapp","contacts":[{"input":`...)
		out = appendJSONString(out, req.to)
		out = append(out, `,"wa_id":`...)
		out = appendJSONString(out, req.recipient())
		out = append(out, `}],"messages":[{"id":"`...)
		out = appendUUID(out, id)
		out = append(out, `","message_status":"accepted"}]}`...)
		ctx.SetStatusCode(fasthttp.StatusOK)
	} else {
		out = append(out, `{"id":"`...)
		out = appendUUID(out, id)
		out = append(out, `","status":"accepted"}`...)
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(out)
	st.out = out
	st.release()
}

// writeAccountError maps the resolver's and Usable's errors. Another tenant's number
// and a number that does not exist get the same answer.
func (s *Server) writeAccountError(ctx *fasthttp.RequestCtx, err error, defaultAccount bool) {
	switch {
	case errors.Is(err, account.ErrNotFound):
		if defaultAccount {
			writeError(ctx, errNoDefaultAccount)
		} else {
			writeError(ctx, errAccountNotFound)
		}
	case errors.Is(err, account.ErrTokenExpired):
		writeError(ctx, errTokenExpired)
	case errors.Is(err, account.ErrNeedsReconnect):
		writeError(ctx, errNeedsReconnect)
	case errors.Is(err, account.ErrDisconnected):
		writeError(ctx, errAccountDisconnected)
	default:
		s.log.Error("resolving account", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
			"error", err.Error())
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, errUnavailable)
	}
}

// appendEnvelope appends the queue.Envelope JSON of a send. It is written by hand so
// the payload is copied once, never re-encoded; queue.Envelope decodes it (a test
// checks the two agree). It never holds an access token.
func appendEnvelope(b []byte, id uuid.UUID, tenant string, acct *account.Account, recipient, key, payload []byte, at time.Time) []byte {
	b = append(b, `{"id":"`...)
	b = appendUUID(b, id)
	b = append(b, `","tenant_id":`...)
	b = appendJSONString(b, tenant)
	b = append(b, `,"account_id":`...)
	b = appendJSONString(b, acct.ID)
	b = append(b, `,"phone_number_id":`...)
	b = appendJSONString(b, acct.PhoneNumberID)
	b = append(b, `,"to":`...)
	b = appendJSONString(b, recipient)
	if len(key) > 0 {
		b = append(b, `,"idempotency_key":`...)
		b = appendJSONString(b, key)
	}
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	b = append(b, `,"accepted_at":"`...)
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}
