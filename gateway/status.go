package gateway

import (
	"context"
	"errors"
	"strconv"
	"sync"
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
	b := make([]byte, 0, 512)
	b = append(b, `{"id":`...)
	b = appendJSONString(b, m.ID)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, string(m.Status))
	b = append(b, `,"phone_number_id":`...)
	b = appendJSONString(b, m.PhoneNumberID)
	b = append(b, `,"to":`...)
	b = appendJSONString(b, m.Recipient)
	if m.WAMID != "" {
		b = append(b, `,"wamid":`...)
		b = appendJSONString(b, m.WAMID)
	}
	if m.IdempotencyKey != "" {
		b = append(b, `,"idempotency_key":`...)
		b = appendJSONString(b, m.IdempotencyKey)
	}
	if m.Status == message.StatusFailed {
		b = append(b, `,"error":{"code":`...)
		b = appendInt(b, m.ErrorCode)
		b = append(b, `,"title":`...)
		b = appendJSONString(b, m.ErrorTitle)
		b = append(b, '}')
	}
	b = append(b, `,"attempts":`...)
	b = appendInt(b, m.Attempts)
	b = append(b, `,"accepted_at":`...)
	b = appendTime(b, m.AcceptedAt)
	if m.SentAt != nil {
		b = append(b, `,"sent_at":`...)
		b = appendTime(b, *m.SentAt)
	}
	b = append(b, `,"updated_at":`...)
	b = appendTime(b, m.UpdatedAt)
	b = append(b, '}')
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func appendInt(b []byte, n int) []byte {
	return strconv.AppendInt(b, int64(n), 10)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// healthz answers 200 while the process serves.
func (s *Server) healthz(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ok"}`)
}

// readyz runs every ready check concurrently within ReadyTimeout: 200 when all pass,
// else 503 naming what is down.
func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	checks := s.opts.ReadyChecks
	results := make([]error, len(checks))
	cctx, cancel := context.WithTimeout(context.Background(), s.opts.ReadyTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					results[i] = errors.New("check panicked")
				}
			}()
			results[i] = c.Check(cctx)
		}()
	}
	wg.Wait()

	ok := true
	b := append([]byte(nil), `{"status":`...)
	for _, err := range results {
		if err != nil {
			ok = false
		}
	}
	if ok {
		b = append(b, `"ready"`...)
	} else {
		b = append(b, `"unavailable"`...)
	}
	b = append(b, `,"checks":{`...)
	var down []string
	for i, c := range checks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, c.Name)
		b = append(b, ':')
		if results[i] != nil {
			b = append(b, `"down"`...)
			down = append(down, c.Name)
			s.log.Warn("readiness check failed", "check", c.Name, "error", results[i].Error())
		} else {
			b = append(b, `"ok"`...)
		}
	}
	b = append(b, '}')
	if !ok {
		b = append(b, `,"down":[`...)
		for i, name := range down {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, name)
		}
		b = append(b, ']')
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
	} else {
		ctx.SetStatusCode(fasthttp.StatusOK)
	}
	b = append(b, '}')
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
