package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

const headerIdempotencyKey = "Idempotency-Key"

// headerPriority marks a send urgent ("urgent") or not ("normal"), like the body's
// "priority" field; either one saying urgent makes the send urgent.
const headerPriority = "X-Aerogate-Priority"

// sendState is the per-request scratch memory of a send, pooled. It goes back to the
// pool only when the publisher no longer holds its bytes (after a successful write, or
// when nothing was written).
type sendState struct {
	parser  fastjson.Parser
	payload []byte // the payload when aerogate-only fields were removed
	msg     []byte // key + envelope: one buffer, two slices
	hashBuf []byte
	fp      []byte // a keyed request's fingerprint
	out     []byte
	msgs    [1]kafka.Message

	// arena holds the normalized `to` of a re-marshalled payload.
	arena fastjson.Arena
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
	if whatsapp.CheckGraphVersion(version) != nil {
		writeError(ctx, errInvalidGraphAPIVersion)
		return
	}
	pnid, _ := ctx.UserValue("phone_number_id").(string)
	if whatsapp.CheckPhoneNumberID(pnid) != nil {
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
	req, payload, apiErr := parseSendRequest(&st.parser, &st.arena, body, claims.TenantID, s.tenantField, st.payload, s.opts.MaxJSONDepth)
	st.payload = payload
	if apiErr != nil {
		st.release()
		writeError(ctx, apiErr)
		return
	}
	if h := ctx.Request.Header.Peek(headerPriority); h != nil {
		urgent, ok := parsePriority(h)
		if !ok {
			st.release()
			writeError(ctx, errInvalidPriority)
			return
		}
		req.urgent = req.urgent || urgent
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

	// With an Idempotency-Key the id is derived from (tenant, key), so every retry of a
	// send, after any answer, names the same message, and the sender sends a message id
	// at most once: a retry after a 504 can never send twice. The key is bound to the
	// fingerprint of its first request before anything is published.
	var id uuid.UUID
	if key != nil {
		st.hashBuf = st.hashBuf[:0]
		id = idempotentID(st.hashBuf, claims.TenantID, key)
		if s.opts.Messages != nil {
			st.fp = appendFingerprint(st.fp[:0], graph, acct.PhoneNumberID, req.payload)
			b, err := s.opts.Messages.BindKey(bounded, claims.TenantID, string(key), st.fp, id.String())
			if err != nil {
				st.release()
				s.log.Error("binding idempotency key", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
					"tenant", claims.TenantID, "error", err.Error())
				ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
				writeError(ctx, errUnavailable)
				return
			}
			if !b.Same {
				st.release()
				writeError(ctx, errKeyReused)
				return
			}
			if b.Status != "" && b.Status != message.StatusUnknown {
				// The same request again, and its message is known to be queued: the
				// same answer, with the status it has now; nothing is published again.
				// Without a row (not written, or not recorded yet) or while unknown, it
				// is published again below: the sender sends the id at most once.
				s.writeSent(ctx, st, &req, id, graph, string(b.Status))
				st.release()
				return
			}
		}
	} else {
		id = timeOrderedID(now)
	}

	// One buffer holds the key (the tenant id, so all of a tenant's sends share a
	// partition) and the envelope.
	b := append(st.msg[:0], claims.TenantID...)
	keyLen := len(b)
	b = appendEnvelope(b, id, claims.TenantID, acct, req.recipient(), key, req.payload, now, req.urgent)
	st.msg = b
	st.msgs[0] = kafka.Message{Key: b[:keyLen:keyLen], Value: b[keyLen:]}

	err = s.opts.Sends.WriteMessages(bounded, st.msgs[:]...)
	if err != nil {
		// The writer may still hold st's bytes: leave st to the garbage collector.
		s.answerUnpublished(ctx, queue.ClassifyWriteError(err), claims.TenantID, id, acct, &req, key, now)
		return
	}
	s.accepted.Add(1)

	if s.rec != nil {
		s.rec.add(acceptedRecord{
			id:        id,
			tenantID:  claims.TenantID,
			accountID: acct.ID,
			phone:     acct.PhoneNumberID,
			recipient: req.waID,
			key:       string(key),
			at:        now,
		})
	}
	s.writeSent(ctx, st, &req, id, graph, string(message.StatusAccepted))
	st.release()
}

// writeSent answers a queued send: 202 {"id","status"} or, on the Cloud API path, 200
// with Meta's shape and status as message_status.
func (s *Server) writeSent(ctx *fasthttp.RequestCtx, st *sendState, req *sendRequest, id uuid.UUID, graph bool, status string) {
	out := st.out[:0]
	if graph {
		out = append(out, `{"messaging_product":"whatsapp","contacts":[{"input":`...)
		out = appendJSONString(out, req.to)
		out = append(out, `,"wa_id":`...)
		out = appendJSONString(out, req.recipient())
		out = append(out, `}],"messages":[{"id":"`...)
		out = appendUUID(out, id)
		out = append(out, `","message_status":`...)
		out = appendJSONString(out, status)
		out = append(out, `}]}`...)
		ctx.SetStatusCode(fasthttp.StatusOK)
	} else {
		out = append(out, `{"id":"`...)
		out = appendUUID(out, id)
		out = append(out, `","status":`...)
		out = appendJSONString(out, status)
		out = append(out, '}')
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(out)
	st.out = out
}

// answerUnpublished answers a send Kafka did not acknowledge, by what may have happened
// to it (err is classified by queue.ClassifyWriteError):
//
//   - queue.ErrNotWritten: it cannot be on wa.sends. 503 queue_unavailable with
//     Retry-After: nothing was accepted and nothing will be sent.
//   - anything else (queue.ErrOutcomeUnknown): the produce request may have reached the
//     broker, which may append it now or much later (a frozen broker appends what it
//     read when it wakes), and then the sender delivers it. 504 queue_timeout with the
//     message id, recorded as unknown: GET /v1/messages/{id} says unknown until a sender
//     claims it (then sending, sent or failed) or a retry with the same key is
//     acknowledged (accepted). An unknown that never moves was never appended.
func (s *Server) answerUnpublished(ctx *fasthttp.RequestCtx, err error, tenant string, id uuid.UUID, acct *account.Account,
	req *sendRequest, key []byte, now time.Time) {
	n := s.publishErrors.Add(1)
	unknown := !errors.Is(err, queue.ErrNotWritten)
	if unknown {
		s.publishUnknown.Add(1)
	}
	if s.publishErrLog.allow() {
		answer := 503
		if unknown {
			answer = 504
		}
		s.log.Warn("publishing send failed", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
			"tenant", tenant, "answer", answer, "publish_errors_total", n, "error", err.Error())
	}
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	if !unknown {
		writeError(ctx, errQueueUnavailable)
		return
	}
	if s.rec != nil {
		s.rec.add(acceptedRecord{
			id:        id,
			tenantID:  tenant,
			accountID: acct.ID,
			phone:     acct.PhoneNumberID,
			recipient: newDigits(req.recipient()),
			key:       string(key),
			at:        now,
			unknown:   true,
		})
	}
	var buf [36]byte
	writeErrorWithID(ctx, errQueueTimeout, appendUUID(buf[:0], id))
}

// Path kinds in a fingerprint: the same body to the two send routes is two requests.
const (
	fingerprintV1    = "POST /v1/messages"
	fingerprintGraph = "POST /{version}/{phone_number_id}/messages"
)

// appendFingerprint appends the SHA-256 that binds an Idempotency-Key to its request:
// the path kind, the phone number id the send goes from, and the Cloud API payload
// without insignificant whitespace (aerogate-only fields are already out of it).
func appendFingerprint(dst []byte, graph bool, phoneNumberID string, payload []byte) []byte {
	kind := fingerprintV1
	if graph {
		kind = fingerprintGraph
	}
	h := sha256.New()
	var sep = [1]byte{0}
	h.Write([]byte(kind))
	h.Write(sep[:])
	h.Write([]byte(phoneNumberID))
	h.Write(sep[:])
	var compact bytes.Buffer
	if json.Compact(&compact, payload) == nil {
		h.Write(compact.Bytes())
	} else {
		h.Write(payload) // validated JSON already; never taken
	}
	return h.Sum(dst)
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
func appendEnvelope(b []byte, id uuid.UUID, tenant string, acct *account.Account, recipient, key, payload []byte, at time.Time, urgent bool) []byte {
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
	if urgent {
		b = append(b, `","priority":"`+queue.PriorityUrgent...)
	}
	return append(b, `"}`...)
}
