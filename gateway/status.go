package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/message"
)

// getTimeout bounds the Postgres read of GET /v1/messages/{id}.
const getTimeout = 5 * time.Second

// getMessage is GET /v1/messages/{id}: the tenant's own message. Another tenant's id,
// an unknown id and a malformed id all get the same 404.
func (s *Server) getMessage(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Messages == nil {
		writeError(ctx, errUnavailable)
		return
	}
	id, _ := ctx.UserValue("id").(string)
	qctx, cancel := context.WithTimeout(context.Background(), getTimeout)
	defer cancel()
	m, err := s.opts.Messages.Get(qctx, claims.TenantID, id)
	if errors.Is(err, message.ErrNotFound) {
		writeError(ctx, errMessageNotFound)
		return
	}
	if err != nil {
		s.log.Error("loading message", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
			"error", err.Error())
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, errUnavailable)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, statusOf(m))
}

// messageStatus is the body of GET /v1/messages/{id}.
type messageStatus struct {
	ID             string          `json:"id"`
	Status         message.Status  `json:"status"`
	PhoneNumberID  string          `json:"phone_number_id"`
	To             string          `json:"to"`
	WAMID          string          `json:"wamid,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Error          *messageFailure `json:"error,omitempty"`
	Attempts       int             `json:"attempts"`
	AcceptedAt     time.Time       `json:"accepted_at"`
	SentAt         *time.Time      `json:"sent_at,omitempty"`
	DeliveredAt    *time.Time      `json:"delivered_at,omitempty"`
	ReadAt         *time.Time      `json:"read_at,omitempty"`
	UpdatedAt      time.Time       `json:"updated_at"`
	// ExpectedSendAt: while queued, when the message is expected to be sent (absent
	// while its account cannot send).
	ExpectedSendAt *time.Time `json:"expected_send_at,omitempty"`
}

type messageFailure struct {
	Code  int    `json:"code"`
	Title string `json:"title"`
}

func statusOf(m *message.Message) messageStatus {
	out := messageStatus{
		ID: m.ID, Status: m.Status, PhoneNumberID: m.PhoneNumberID, To: m.Recipient,
		WAMID: m.WAMID, IdempotencyKey: m.IdempotencyKey, Attempts: m.Attempts,
		AcceptedAt: m.AcceptedAt.UTC(), UpdatedAt: m.UpdatedAt.UTC(),
	}
	if m.Status == message.StatusFailed {
		out.Error = &messageFailure{Code: m.ErrorCode, Title: m.ErrorTitle}
	}
	out.SentAt, out.DeliveredAt, out.ReadAt = utc(m.SentAt), utc(m.DeliveredAt), utc(m.ReadAt)
	if m.Status == message.StatusQueued {
		out.ExpectedSendAt = utc(m.ExpectedSendAt)
	}
	return out
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// writeJSON answers with v as JSON; for the routes off the send hot path.
func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, errInternal)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
