package gateway

import (
	"context"
	"errors"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/inbound"
)

var (
	errInvalidCursor = &apiError{400, "invalid_cursor", "after must be a cursor this API returned"}
	errInvalidLimit  = &apiError{400, "invalid_limit", "limit must be a number from 1 to 500"}
)

// inboundPage is the body of GET /v1/inbound.
type inboundPage struct {
	Messages []inbound.Message `json:"messages"`
	// Next is the cursor to pass as after for the messages that follow; it stays the same
	// while nothing new arrived, so a client polls with it.
	Next string `json:"next"`
}

// listInbound is GET /v1/inbound?after=<cursor>&limit=: the tenant's inbound messages in
// arrival order. The tenant is the token's; nothing in the query names another.
func (s *Server) listInbound(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Inbound == nil {
		writeError(ctx, errUnavailable)
		return
	}
	args := ctx.QueryArgs()
	after, err := inbound.ParseCursor(string(args.Peek("after")))
	if err != nil {
		writeError(ctx, errInvalidCursor)
		return
	}
	limit := 0
	if v := args.Peek("limit"); len(v) > 0 {
		if limit, err = strconv.Atoi(string(v)); err != nil || limit < 1 || limit > inbound.MaxLimit {
			writeError(ctx, errInvalidLimit)
			return
		}
	}
	qctx, cancel := context.WithTimeout(context.Background(), getTimeout)
	defer cancel()
	msgs, next, err := s.opts.Inbound.List(qctx, claims.TenantID, after, limit)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Error("listing inbound messages", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
				"error", err.Error())
		}
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, errUnavailable)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, inboundPage{Messages: msgs, Next: next.String()})
}
