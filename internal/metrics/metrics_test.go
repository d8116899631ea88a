package metrics

import (
	"bytes"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"
)

func TestHandlerServesParsableFamilies(t *testing.T) {
	HTTPRequests.WithLabelValues("test", "/v1/messages", "202").Inc()
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/metrics")
	Handler()(&ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d", ctx.Response.StatusCode())
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(ctx.Response.Body()))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	f := families["aerogate_http_requests_total"]
	if f == nil || len(f.GetMetric()) == 0 || f.GetMetric()[0].GetCounter().GetValue() < 1 {
		t.Fatalf("aerogate_http_requests_total missing or zero: %v", f)
	}
	if families["go_goroutines"] == nil {
		t.Fatal("Go runtime collector missing")
	}
}
