package gateway

import (
	"bytes"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/ratelimit"
)

// proxyRoute is the pattern of the backend proxy.
const proxyRoute = "/api/{path:*}"

var proxyPrefix = []byte("/api/")

// checkTenantQuery is the one query-string tenant check of every authenticated route,
// the send API's and the proxy's: every value of every tenant parameter (tenantId,
// jwt.tenant_claim, proxy.tenant_param, in any case, with or without a [..] suffix,
// percent-encoded or not) must be the token's tenant.
func (s *Server) checkTenantQuery(ctx *fasthttp.RequestCtx, tenant string) *apiError {
	if err := s.tenantNames.Query(ctx.URI().QueryString(), tenant); err != nil {
		return errTenantMismatch
	}
	return nil
}

// boundBody reads the body of a request for any route but the proxy's and the media
// upload's whole, up to
// the server's MaxRequestBodySize (the largest any route takes), as the server did
// before bodies streamed; past the limit it
// answers 413 and closes the connection. It reports whether to go on.
func (s *Server) boundBody(ctx *fasthttp.RequestCtx) bool {
	stream := ctx.RequestBodyStream()
	if stream == nil || (s.proxy != nil && bytes.HasPrefix(ctx.Path(), proxyPrefix)) ||
		(s.opts.Graph != nil && isMediaUpload(ctx.Method(), ctx.Path())) {
		return true
	}
	limit := int(s.srv.MaxRequestBodySize) // the largest any route takes; each checks its own
	if cl := ctx.Request.Header.ContentLength(); cl > limit {
		// Read what the client is still sending before answering (bounded): closing a
		// socket with unread data resets it, and the client would miss the 413.
		if cl <= maxDrainBytes {
			_, _ = io.Copy(io.Discard, io.LimitReader(stream, maxDrainBytes))
		}
		ctx.SetConnectionClose()
		writeError(ctx, errBodyTooLarge)
		return false
	}
	b, err := io.ReadAll(io.LimitReader(stream, int64(limit)+1))
	switch {
	case err != nil:
		ctx.SetConnectionClose()
		writeError(ctx, errBadRequest)
		return false
	case len(b) > limit:
		_, _ = io.Copy(io.Discard, io.LimitReader(stream, maxDrainBytes))
		ctx.SetConnectionClose()
		writeError(ctx, errBodyTooLarge)
		return false
	}
	ctx.Request.SetBodyRaw(b)
	return true
}

// bytesIn is the request body's size for the access log, without reading a stream.
func bytesIn(ctx *fasthttp.RequestCtx) int {
	if ctx.Request.IsBodyStream() {
		return max(ctx.Request.Header.ContentLength(), 0)
	}
	return len(ctx.Request.Body())
}

var errRateLimited = &apiError{429, "rate_limited", "too many requests for this tenant; retry after the time in Retry-After"}

// limited takes one request of class c from the tenant's bucket before h runs: past the
// limit it answers 429 with Retry-After. Either way the answer carries the RateLimit
// and RateLimit-Policy headers (IETF draft-ietf-httpapi-ratelimit-headers): the policy
// is the bucket (q requests of burst per w seconds to refill it), r what remains now,
// t the seconds until the bucket is full again.
func (s *Server) limited(c ratelimit.Class, h func(*fasthttp.RequestCtx, auth.Claims)) func(*fasthttp.RequestCtx, auth.Claims) {
	if s.opts.Limits == nil {
		return h
	}
	name := c.String()
	return func(ctx *fasthttp.RequestCtx, claims auth.Claims) {
		d := s.opts.Limits.Allow(ctx, c, claims.TenantID)
		if d.Limit.RPS <= 0 {
			h(ctx, claims)
			return
		}
		if !d.Allowed {
			writeError(ctx, errRateLimited)
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(max(ceilSeconds(d.RetryAfter), 1)))
		} else {
			h(ctx, claims)
		}
		window := int(math.Ceil(float64(d.Limit.Burst) / float64(d.Limit.RPS)))
		var buf [96]byte
		b := append(buf[:0], '"')
		b = append(b, name...)
		b = append(b, `";q=`...)
		b = strconv.AppendInt(b, int64(d.Limit.Burst), 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(max(window, 1)), 10)
		ctx.Response.Header.SetBytesV("RateLimit-Policy", b)
		b = append(buf[:0], '"')
		b = append(b, name...)
		b = append(b, `";r=`...)
		b = strconv.AppendInt(b, int64(d.Remaining), 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, int64(ceilSeconds(d.Reset)), 10)
		ctx.Response.Header.SetBytesV("RateLimit", b)
	}
}

func ceilSeconds(d time.Duration) int {
	return max(int(math.Ceil(d.Seconds())), 0)
}
