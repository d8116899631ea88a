// Package accesslog is the one access line per HTTP request of every aerogate listener
// (the gateway, the webhook edge): the same message and attribute names in every role,
// at info, with failures always logged and successes sampled (log.access_sample). A
// line never holds a header value, a query string or a body.
package accesslog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
)

// Message is the message of every access line.
const Message = "http request"

// Line is one request's access line. Its attribute names are request_id, method, route
// (the route pattern, or "unmatched"), path, status, tenant (when a token named one),
// bytes_in, bytes_out, remote and duration.
type Line struct {
	RequestID string
	Method    string
	Route     string
	Path      string
	Status    int
	Tenant    string
	BytesIn   int
	BytesOut  int
	Remote    string
	Duration  time.Duration
}

// Logger writes access lines: every 4xx at info or above, every 5xx at error, and one in
// every Sample successful answers at info (Sample 1: each one; 0: none).
type Logger struct {
	log    *slog.Logger
	sample uint64
	n      atomic.Uint64
}

// New returns a Logger writing to log (nil: slog.Default()) that keeps one in sample
// successful requests.
func New(log *slog.Logger, sample int) *Logger {
	if log == nil {
		log = slog.Default()
	}
	return &Logger{log: log, sample: uint64(max(sample, 0))}
}

// Level is the level of a line for status, and whether it is written at all.
func (l *Logger) Level(ctx context.Context, status int) (slog.Level, bool) {
	switch {
	case status >= 500:
		return slog.LevelError, l.log.Enabled(ctx, slog.LevelError)
	case status >= 400:
		return slog.LevelInfo, l.log.Enabled(ctx, slog.LevelInfo)
	case l.sample == 0:
		return slog.LevelInfo, false
	}
	if l.sample > 1 && l.n.Add(1)%l.sample != 0 {
		return slog.LevelInfo, false
	}
	return slog.LevelInfo, l.log.Enabled(ctx, slog.LevelInfo)
}

// Write logs line at level.
func (l *Logger) Write(ctx context.Context, level slog.Level, line Line) {
	attrs := [...]slog.Attr{
		slog.String("request_id", line.RequestID),
		slog.String("method", line.Method),
		slog.String("route", line.Route),
		slog.String("path", line.Path),
		slog.Int("status", line.Status),
		slog.Int("bytes_in", line.BytesIn),
		slog.Int("bytes_out", line.BytesOut),
		slog.String("remote", line.Remote),
		slog.Duration("duration", line.Duration),
		slog.String("tenant", line.Tenant),
	}
	n := len(attrs)
	if line.Tenant == "" {
		n--
	}
	l.log.LogAttrs(ctx, level, Message, attrs[:n]...)
}

// Handler wraps next, a fasthttp/router handler with SaveMatchedRoutePath on, with
// the access line: a request id (X-Request-Id, new for each request, echoed on the
// answer) and the matched route pattern. The gateway writes its own lines (it knows the
// tenant); the other listeners use this.
func (l *Logger) Handler(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	var prefix [8]byte
	_, _ = rand.Read(prefix[:])
	idPrefix := hex.EncodeToString(prefix[:4]) + "-"
	var seq atomic.Uint64
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		rid := idPrefix + strconv.FormatUint(seq.Add(1), 16)
		ctx.Response.Header.Set("X-Request-Id", rid)
		next(ctx)
		status := ctx.Response.StatusCode()
		level, ok := l.Level(ctx, status)
		if !ok {
			return
		}
		route, _ := ctx.UserValue(router.MatchedRoutePathParam).(string)
		if route == "" {
			route = "unmatched"
		}
		l.Write(context.Background(), level, Line{
			RequestID: rid,
			Method:    string(ctx.Method()),
			Route:     route,
			Path:      string(ctx.Path()),
			Status:    status,
			BytesIn:   len(ctx.Request.Body()),
			BytesOut:  len(ctx.Response.Body()),
			Remote:    ctx.RemoteIP().String(),
			Duration:  time.Since(start),
		})
	}
}
