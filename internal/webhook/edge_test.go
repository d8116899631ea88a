package webhook_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/queue/queuetest"
	"github.com/aerostic/aerogate/internal/webhook"
)

const secret = "app-secret"

func newEdge(t *testing.T, pub webhook.Publisher) *webhook.Edge {
	t.Helper()
	v, err := webhook.NewVerifier(secret, "rotated-out-secret")
	if err != nil {
		t.Fatal(err)
	}
	e, err := webhook.NewEdge(webhook.EdgeOptions{Verifier: v, VerifyToken: "verify-me", Publisher: pub,
		MaxBodyBytes: 1 << 10, PublishTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func post(e *webhook.Edge, body []byte, signature string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI(webhook.Path)
	if signature != "" {
		ctx.Request.Header.Set(webhook.SignatureHeader, signature)
	}
	ctx.Request.SetBody(body)
	e.Receive(&ctx)
	resp := &fasthttp.Response{}
	ctx.Response.CopyTo(resp)
	return resp
}

// TestEdgePublishesOnlySignedBodies: a valid (or rotated-secret) signature is published
// whole with its WABA key and receive time before the 200; a forged, missing or oversized
// one is refused and publishes nothing.
func TestEdgePublishesOnlySignedBodies(t *testing.T) {
	broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	p, err := queue.NewProducer(queue.ProducerConfig{Cluster: broker.Cluster(), Topic: queue.TopicWebhooks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	e := newEdge(t, p)

	body := []byte(`{"object":"whatsapp_business_account","entry":[{"id":"555","changes":[]}]}`)
	other := []byte(`{"object":"whatsapp_business_account","entry":[{"id":"777","changes":[]}]}`)
	tests := []struct {
		name      string
		body      []byte
		signature string
		status    int
		code      string
	}{
		{"valid", body, webhook.Sign(secret, body), 200, ""},
		{"rotated secret", other, webhook.Sign("rotated-out-secret", other), 200, ""},
		{"forged", body, webhook.Sign("not-the-secret", body), 401, "invalid_signature"},
		{"signature of another body", other, webhook.Sign(secret, body), 401, "invalid_signature"},
		{"missing", body, "", 401, "invalid_signature"},
		{"too large", []byte(strings.Repeat(" ", 2<<10)), webhook.Sign(secret, []byte(strings.Repeat(" ", 2<<10))), 413, "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(e, tt.body, tt.signature)
			if resp.StatusCode() != tt.status || !strings.Contains(string(resp.Body()), tt.code) {
				t.Fatalf("answer %d %s, want %d %s", resp.StatusCode(), resp.Body(), tt.status, tt.code)
			}
		})
	}
	got := queuetest.ReadAll(t, broker.Cluster(), queue.TopicWebhooks)
	if len(got) != 2 {
		t.Fatalf("%d records on wa.webhooks, want the 2 signed ones", len(got))
	}
	keys := map[string]string{}
	for _, m := range got {
		keys[string(m.Key)] = string(m.Value)
		var at time.Time
		for _, h := range m.Headers {
			if h.Key == webhook.HeaderReceivedAt {
				at, _ = time.Parse(time.RFC3339Nano, string(h.Value))
			}
		}
		if time.Since(at) > time.Minute {
			t.Errorf("record %s has receive time %v", m.Key, at)
		}
	}
	if keys["555"] != string(body) || keys["777"] != string(other) {
		t.Errorf("records by key = %v, want the raw bodies under their WABA ids", keys)
	}
}

// TestEdgeBrokerDown: a body the broker did not acknowledge gets 503 (Meta delivers it
// again), not 200.
func TestEdgeBrokerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p, err := queue.NewProducer(queue.ProducerConfig{Cluster: queue.Cluster{Brokers: []string{addr}}, Topic: queue.TopicWebhooks,
		Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	e := newEdge(t, p)
	body := []byte(`{"object":"whatsapp_business_account","entry":[]}`)
	resp := post(e, body, webhook.Sign(secret, body))
	if resp.StatusCode() != 503 || string(resp.Header.Peek("Retry-After")) == "" {
		t.Fatalf("answer %d %s, want 503 with Retry-After", resp.StatusCode(), resp.Body())
	}
}

func TestHandshake(t *testing.T) {
	e := newEdge(t, nopPublisher{})
	tests := []struct {
		query  string
		status int
		body   string
	}{
		{"hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444", 200, "1158201444"},
		{"hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444", 403, ""},
		{"hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1", 403, ""},
		{"hub.mode=subscribe&hub.verify_token=verify-me", 403, ""},
		{"", 403, ""},
	}
	for _, tt := range tests {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI(webhook.Path + "?" + tt.query)
		e.Handshake(&ctx)
		if ctx.Response.StatusCode() != tt.status || (tt.body != "" && string(ctx.Response.Body()) != tt.body) {
			t.Errorf("GET ?%s = %d %q, want %d %q", tt.query, ctx.Response.StatusCode(), ctx.Response.Body(), tt.status, tt.body)
		}
		if tt.status == 200 && !strings.HasPrefix(string(ctx.Response.Header.ContentType()), "text/plain") {
			t.Errorf("challenge answered as %s", ctx.Response.Header.ContentType())
		}
	}
	// No verify token configured: every handshake is refused.
	e2, _ := webhook.NewEdge(webhook.EdgeOptions{Publisher: nopPublisher{}})
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI(webhook.Path + "?hub.mode=subscribe&hub.verify_token=&hub.challenge=1")
	e2.Handshake(&ctx)
	if ctx.Response.StatusCode() != 403 {
		t.Errorf("handshake without a configured token = %d", ctx.Response.StatusCode())
	}
}

type nopPublisher struct{}

func (nopPublisher) WriteMessages(context.Context, ...kafka.Message) error { return nil }
