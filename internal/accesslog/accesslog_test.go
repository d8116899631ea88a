package accesslog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/accesslog"
)

func TestSampling(t *testing.T) {
	tests := []struct {
		name     string
		sample   int
		statuses []int
		want     int // lines written
	}{
		{"every success", 1, []int{200, 202, 200, 204}, 4},
		{"one in two", 2, []int{200, 200, 200, 200}, 2},
		{"one in three", 3, []int{200, 200, 200, 200, 200, 200}, 2},
		{"none", 0, []int{200, 202, 304}, 0},
		{"failures always", 0, []int{400, 401, 503, 500}, 4},
		{"failures outside the sample", 100, []int{200, 429, 200, 502}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := accesslog.New(slog.New(slog.NewJSONHandler(&buf, nil)), tt.sample)
			for _, st := range tt.statuses {
				if level, ok := l.Level(context.Background(), st); ok {
					l.Write(context.Background(), level, accesslog.Line{Status: st})
				}
			}
			if got := strings.Count(buf.String(), "\n"); got != tt.want {
				t.Fatalf("%d lines, want %d:\n%s", got, tt.want, buf.String())
			}
		})
	}
}

// TestHandlerLine: the line has the shared attribute names, the route pattern, the
// request id it echoed, and no query string; 5xx are errors.
func TestHandlerLine(t *testing.T) {
	var buf bytes.Buffer
	l := accesslog.New(slog.New(slog.NewJSONHandler(&buf, nil)), 1)
	r := router.New()
	r.SaveMatchedRoutePath = true
	r.GET("/things/{id}", func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(500); ctx.SetBodyString("oops") })
	h := l.Handler(r.Handler)

	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/things/42?hub.verify_token=secret-value")
	ctx.Request.Header.SetMethod("GET")
	h(&ctx)

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	for key, want := range map[string]any{"msg": accesslog.Message, "level": "ERROR", "route": "/things/{id}",
		"path": "/things/42", "status": 500.0, "bytes_out": 4.0, "method": "GET",
		"request_id": string(ctx.Response.Header.Peek("X-Request-Id"))} {
		if line[key] != want {
			t.Errorf("%s = %v, want %v", key, line[key], want)
		}
	}
	if _, ok := line["duration"]; !ok {
		t.Error("no duration")
	}
	if strings.Contains(buf.String(), "secret-value") {
		t.Error("the query string was logged")
	}
}
