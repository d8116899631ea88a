package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/accesslog"
	"github.com/aerostic/aerogate/internal/auth"
)

// middleware wraps next with, in order: a request id (a sane incoming X-Request-Id, or a
// new one) echoed on the answer, panic recovery (500 JSON, the process lives on), the
// HTTP metrics (by route pattern and status) and the access log. The log never holds the Authorization header or the body.
func (s *Server) middleware(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		// One clock read serves the latency histogram and the access log.
		start := time.Now()
		s.setRequestID(ctx)
		defer func() {
			if p := recover(); p != nil {
				s.panics.Add(1)
				s.log.Error("panic serving request",
					"request_id", string(ctx.Response.Header.Peek(headerRequestID)),
					"method", string(ctx.Method()), "path", string(ctx.Path()),
					"panic", p, "stack", string(debug.Stack()))
				writeError(ctx, errInternal)
			}
			s.routeOf(ctx).observe(ctx.Response.StatusCode(), time.Since(start))
			s.accessLog(ctx, start)
		}()
		if !s.boundBody(ctx) {
			return
		}
		next(ctx)
	}
}

func (s *Server) setRequestID(ctx *fasthttp.RequestCtx) {
	if in := ctx.Request.Header.Peek(headerRequestID); validRequestID(in) {
		ctx.Response.Header.SetBytesV(headerRequestID, in)
		return
	}
	// A per-process random prefix and a counter: unique, cheap, and no allocation.
	var buf [9 + 16]byte
	copy(buf[:], s.ridPrefix[:])
	n := s.ridCounter.Add(1)
	for i := len(buf) - 1; i >= 9; i-- {
		buf[i] = hexDigits[n&0xf]
		n >>= 4
	}
	ctx.Response.Header.SetBytesV(headerRequestID, buf[:])
}

// tenantKey is the request user value under which authed leaves the verified tenant id
// for the access log.
type tenantKey struct{}

// accessLog logs the request's access line (internal/accesslog): 5xx at error, 4xx at
// info, successes at info as sampled. The path is logged without its query string.
func (s *Server) accessLog(ctx *fasthttp.RequestCtx, start time.Time) {
	status := ctx.Response.StatusCode()
	level, ok := s.access.Level(ctx, status)
	if !ok {
		return
	}
	tenant, _ := ctx.UserValue(tenantKey{}).(string)
	s.access.Write(context.Background(), level, accesslog.Line{
		RequestID: string(ctx.Response.Header.Peek(headerRequestID)),
		Method:    string(ctx.Method()),
		Route:     s.routeOf(ctx).route,
		Path:      string(ctx.Path()),
		Status:    status,
		Tenant:    tenant,
		BytesIn:   bytesIn(ctx),
		BytesOut:  bytesOut(ctx),
		Remote:    ctx.RemoteIP().String(),
		Duration:  since(start),
	})
}

// bytesOut is the answer's size for the access log: a streamed answer (a proxied
// response, a media download) by its Content-Length (0 when unknown), never by reading
// it, which would hold the whole stream in memory before it is sent.
func bytesOut(ctx *fasthttp.RequestCtx) int {
	if ctx.Response.IsBodyStream() {
		return max(ctx.Response.Header.ContentLength(), 0)
	}
	return len(ctx.Response.Body())
}

// drainRequest reads and discards what is left of a streamed request body, at most
// maxDrainBytes within maxDrainTime, and closes the connection after the answer.
func (s *Server) drainRequest(ctx *fasthttp.RequestCtx) {
	ctx.SetConnectionClose()
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return
	}
	if c := ctx.Conn(); c != nil {
		_ = c.SetReadDeadline(time.Now().Add(maxDrainTime))
	}
	_, _ = io.CopyN(io.Discard, stream, maxDrainBytes)
}

// authed verifies the bearer token and hands the tenant's claims to h. The tenant is
// what the verified token says and nothing else.
func (s *Server) authed(h func(ctx *fasthttp.RequestCtx, claims auth.Claims)) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if len(ctx.Request.Header.PeekAll(fasthttp.HeaderAuthorization)) > 1 {
			// Which one wins differs between proxies and servers; refuse rather than pick.
			writeError(ctx, errDuplicateAuthorization)
			return
		}
		tok, ok := parseBearer(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization))
		if !ok {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="aerogate"`)
			writeError(ctx, errMissingToken)
			return
		}
		claims, err := s.opts.Verifier.Verify(tok)
		if err != nil {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="aerogate", error="invalid_token"`)
			writeError(ctx, errInvalidToken)
			return
		}
		if apiErr := s.checkTenantQuery(ctx, claims.TenantID); apiErr != nil {
			writeError(ctx, apiErr)
			return
		}
		ctx.SetUserValue(tenantKey{}, claims.TenantID)
		h(ctx, claims)
	}
}

// readError answers requests fasthttp could not read (it closes the connection after).
func (s *Server) readError(ctx *fasthttp.RequestCtx, err error) {
	s.setRequestID(ctx)
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		// Read what the client is still sending before answering: closing a socket with
		// unread data resets it, and the client would see a reset instead of the 413.
		drainBody(ctx.Conn(), ctx.Request.Header.ContentLength(), s.opts.MaxHeaderBytes)
		writeError(ctx, errBodyTooLarge)
	case errors.As(err, &small):
		// The request line and headers outgrew the read buffer (Options.MaxHeaderBytes).
		writeError(ctx, errHeaderTooLarge)
	case errors.As(err, &netErr) && netErr.Timeout():
		writeError(ctx, errRequestTimeout)
	default:
		writeError(ctx, errBadRequest)
	}
	s.log.Info("unreadable request", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
		"status", ctx.Response.StatusCode(), "error", err.Error())
}

const (
	maxDrainBytes = 16 << 20
	maxDrainTime  = 2 * time.Second
)

// drainBody reads and discards the rest of an oversized body, bounded in bytes and time.
// contentLength is -1 for chunked bodies; readBufferSize is the server's read buffer,
// which may hold part of the body already.
func drainBody(c net.Conn, contentLength, readBufferSize int) {
	if c == nil || contentLength > maxDrainBytes {
		return
	}
	end := time.Now().Add(maxDrainTime)
	var buf [16 << 10]byte
	total := 0
	for total < maxDrainBytes {
		// fasthttp's reader buffered part of the body already (up to readBufferSize),
		// so near the end wait only briefly for more.
		deadline := end
		if contentLength < 0 || total >= contentLength-readBufferSize {
			if soon := time.Now().Add(50 * time.Millisecond); soon.Before(end) {
				deadline = soon
			}
		}
		if err := c.SetReadDeadline(deadline); err != nil {
			return
		}
		n, err := c.Read(buf[:])
		total += n
		if err != nil || (contentLength >= 0 && total >= contentLength) {
			return
		}
	}
}

// since is the time since start, or 0 when start was not taken.
func since(start time.Time) time.Duration {
	if start.IsZero() {
		return 0
	}
	return time.Since(start)
}
