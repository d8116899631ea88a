package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/queue"
)

var benchSecret = []byte("bench-secret-that-is-at-least-32-bytes!!")

// fixedResolver is a unit-test stand-in for the account cache: one account per tenant.
type fixedResolver struct {
	acct  *account.Account
	panic bool
}

func (f *fixedResolver) Resolve(_ context.Context, tenantID, pnid string) (*account.Account, error) {
	if f.panic {
		panic("resolver exploded")
	}
	if tenantID != f.acct.TenantID || (pnid != "" && pnid != f.acct.PhoneNumberID) {
		return nil, account.ErrNotFound
	}
	return f.acct, nil
}

type nopSink struct{}

func (nopSink) WriteMessages(context.Context, ...kafka.Message) error { return nil }

type failingSink struct{ err error }

func (f failingSink) WriteMessages(context.Context, ...kafka.Message) error {
	if f.err == nil {
		return errors.New("broker gone")
	}
	return f.err
}

func unitServer(t testing.TB, res AccountResolver, sink Publisher, edits ...func(*Options)) (*Server, string) {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: benchSecret})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Verifier: v, Resolver: res, Sends: sink, Logger: slog.New(slog.DiscardHandler)}
	for _, edit := range edits {
		edit(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.IssueHS256(benchSecret, "tenantId", "t1", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

func testAccount() *account.Account {
	return &account.Account{ID: "0b4e6f57-6a0e-4f58-9d55-3f4f3d7b8a11", TenantID: "t1", PhoneNumberID: "1001",
		TokenStatus: account.StatusActive, IsDefault: true, AccessToken: "secret-meta-token"}
}

func TestPanicRecovery(t *testing.T) {
	s, tok := unitServer(t, &fixedResolver{acct: testAccount(), panic: true}, nopSink{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })

	c := &fasthttp.Client{}
	for range 2 { // the second request proves the server lives on
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + ln.Addr().String() + "/v1/messages")
		req.Header.SetMethod("POST")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.SetBodyString(`{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"x"}}`)
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		var v struct{ Error struct{ Code string } }
		if err := json.Unmarshal(resp.Body(), &v); err != nil || resp.StatusCode() != 500 || v.Error.Code != "internal_error" {
			t.Fatalf("panic answered %d %s", resp.StatusCode(), resp.Body())
		}
		if strings.Contains(string(resp.Body()), "exploded") {
			t.Errorf("panic value leaked: %s", resp.Body())
		}
	}
	if got := s.Metrics().PanicsRecovered; got != 2 {
		t.Errorf("PanicsRecovered = %d", got)
	}
}

// TestPublishFailureNeverAccepts: a send Kafka did not acknowledge is never 202: 503
// queue_unavailable only when the write provably reached no broker, else 504
// queue_timeout with the message id (an unclassified error counts as maybe written).
func TestPublishFailureNeverAccepts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"not written", fmt.Errorf("publishing: %w: %w", queue.ErrUnavailable, queue.ErrNotWritten), 503, "queue_unavailable"},
		{"outcome unknown", fmt.Errorf("publishing: %w: %w", queue.ErrUnavailable, queue.ErrOutcomeUnknown), 504, "queue_timeout"},
		{"unclassified", errors.New("broker gone"), 504, "queue_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, tok := unitServer(t, &fixedResolver{acct: testAccount()}, failingSink{tc.err})
			ctx := sendCtx(tok, `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"x"}}`)
			s.Handler()(ctx)
			var v struct{ Error struct{ Code, ID string } }
			if err := json.Unmarshal(ctx.Response.Body(), &v); err != nil || ctx.Response.StatusCode() != tc.status ||
				v.Error.Code != tc.code || string(ctx.Response.Header.Peek("Retry-After")) != "1" {
				t.Fatalf("got %d %s, want %d %s", ctx.Response.StatusCode(), ctx.Response.Body(), tc.status, tc.code)
			}
			if _, err := uuid.Parse(v.Error.ID); (err == nil) != (tc.status == 504) {
				t.Fatalf("error id %q: a 504 must name the message, a 503 need not", v.Error.ID)
			}
		})
	}
}

func TestRecorderDropsWhenFull(t *testing.T) {
	// No workers: the buffer of one fills at once.
	r := &recorder{ch: make(chan acceptedRecord, 1), log: slog.New(slog.DiscardHandler)}
	for range 3 {
		r.add(acceptedRecord{tenantID: "t1"})
	}
	if got := r.dropped.Load(); got != 2 {
		t.Errorf("dropped = %d, want 2", got)
	}
	rec := acceptedRecord{recipient: newDigits([]byte("15551230000")), key: "k"}
	if m := rec.message(); m.Recipient != "15551230000" || m.IdempotencyKey != "k" || m.Status != "accepted" {
		t.Errorf("message() = %+v", m)
	}
}

func sendCtx(tok, body string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	// Init gives the context the fake server that Done and Err need.
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/messages")
	ctx.Request.Header.Set("Authorization", "Bearer "+tok)
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBodyString(body)
	return &ctx
}

const benchBody = `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+15551234567","type":"text","text":{"preview_url":false,"body":"Your order 4711 has shipped and arrives on Tuesday."}}`

// BenchmarkSendHandler drives the full handler (request id, JWT verification through
// the verified-token cache, validation, account lookup, envelope, publish to a no-op
// sink, 202) against a bare handler that only answers 202.
func BenchmarkSendHandler(b *testing.B) {
	s, tok := unitServer(b, &fixedResolver{acct: testAccount()}, nopSink{})
	h := s.Handler()
	run := func(b *testing.B, h fasthttp.RequestHandler, body string, key string) {
		ctx := sendCtx(tok, body)
		if key != "" {
			ctx.Request.Header.Set("Idempotency-Key", key)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			ctx.Response.Reset()
			h(ctx)
			if ctx.Response.StatusCode() != fasthttp.StatusAccepted {
				b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	}
	b.Run("bare", func(b *testing.B) {
		run(b, func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusAccepted)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"id":"00000000-0000-0000-0000-000000000000","status":"accepted"}`)
		}, benchBody, "")
	})
	b.Run("send", func(b *testing.B) { run(b, h, benchBody, "") })
	// `to` as bare digits is forwarded as it came; "+15551234567" (benchBody) and
	// "+1 555 123 4567" are re-marshalled once with `to` as digits.
	b.Run("send-to-digits", func(b *testing.B) { run(b, h, strings.Replace(benchBody, `"+15551234567"`, `"15551234567"`, 1), "") })
	b.Run("send-to-spaces", func(b *testing.B) {
		run(b, h, strings.Replace(benchBody, `"+15551234567"`, `"+1 555 123 4567"`, 1), "")
	})
	b.Run("send-idempotency-key", func(b *testing.B) { run(b, h, benchBody, "order-4711") })
	b.Run("send-strip-phone_number_id", func(b *testing.B) {
		run(b, h, strings.Replace(benchBody, `"to"`, `"phone_number_id":"1001","to"`, 1), "")
	})
	// The same handler publishing for real (acks=all) to the embedded broker, from 64
	// concurrent requests: what one accepted send costs with the producer and broker.
	b.Run("send-embedded-broker-parallel", func(b *testing.B) {
		broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 12, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer broker.Close()
		p, err := queue.NewProducer(queue.ProducerConfig{Cluster: broker.Cluster(), Topic: queue.TopicSends})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		s, tok := unitServer(b, &fixedResolver{acct: testAccount()}, p)
		h := s.Handler()
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			ctx := sendCtx(tok, benchBody)
			for pb.Next() {
				ctx.Response.Reset()
				h(ctx)
				if ctx.Response.StatusCode() != fasthttp.StatusAccepted {
					b.Errorf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
					return
				}
			}
		})
	})
}

// TestFingerprint: an Idempotency-Key's request is its route, the phone number id it
// goes from and its body; whitespace between JSON tokens is not part of it.
func TestFingerprint(t *testing.T) {
	const body = `{"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"a b"}}`
	base := appendFingerprint(nil, false, "1001", []byte(body))
	if len(base) != 32 {
		t.Fatalf("fingerprint is %d bytes, want a SHA-256", len(base))
	}
	for _, tc := range []struct {
		name  string
		graph bool
		pnid  string
		body  string
		same  bool
	}{
		{"same request", false, "1001", body, true},
		{"whitespace between tokens", false, "1001", " {\n\"messaging_product\": \"whatsapp\", \"to\":\"1\",\t\"type\":\"text\",\"text\":{ \"body\":\"a b\" } }", true},
		{"whitespace inside a string", false, "1001", `{"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"a  b"}}`, false},
		{"another recipient", false, "1001", `{"messaging_product":"whatsapp","to":"2","type":"text","text":{"body":"a b"}}`, false},
		{"another number", false, "1002", body, false},
		{"the Cloud API route", true, "1001", body, false},
		{"keys in another order", false, "1001", `{"to":"1","messaging_product":"whatsapp","type":"text","text":{"body":"a b"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendFingerprint(nil, tc.graph, tc.pnid, []byte(tc.body))
			if same := string(got) == string(base); same != tc.same {
				t.Fatalf("same fingerprint = %v, want %v", same, tc.same)
			}
		})
	}
}
