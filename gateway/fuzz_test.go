package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

func FuzzParseSendRequest(f *testing.F) {
	for _, seed := range []string{
		`{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"hi"}}`,
		`{"messaging_product":"whatsapp","phone_number_id":"123","tenantId":"t1","to":"+15551234567","type":"contacts","contacts":[{}]}`,
		`{"messaging_product":"whatsapp","to":"15551234567","type":"template","template":{"name":"x","components":[{"type":"body","parameters":[{"type":"text","text":"\u00e9\n"}]}]}}`,
		`{"messaging_product":"whatsapp","to":"15551234567","t\u0079pe":"image","image":{"id":"1"}}`,
		`{"tenantId":"t2"}`, `[]`, `"x"`, `{"a":NaN}`, `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":1e999}}`,
		strings.Repeat("[", 300), strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70),
		`{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat(`\u00e9`, 50) + `"}}`,
	} {
		f.Add([]byte(seed))
	}
	var p fastjson.Parser
	var a fastjson.Arena
	f.Fuzz(func(t *testing.T, body []byte) {
		// The work budget: allocations and allocated bytes at most linear in the body.
		allocs, allocated := workOf(2, func() { _, _, _ = parseSendRequest(&p, &a, body, "t1", tenantFields, nil, 0) })
		if n := float64(len(body)); allocs > 16+n/4 || allocated > 64<<10+256*n {
			t.Fatalf("%d-byte body cost %.0f allocations and %.0f bytes", len(body), allocs, allocated)
		}
		req, buf, err := parseSendRequest(&p, &a, body, "t1", tenantFields, nil, 0)
		if err != nil {
			return
		}
		// Anything accepted is strict JSON for every consumer, names a valid recipient
		// and type, and holds no aerogate-only field.
		payload := append([]byte(nil), req.payload...)
		if !json.Valid(body) || !json.Valid(payload) || len(payload) == 0 || payload[0] != '{' {
			t.Fatalf("accepted invalid JSON: body %q payload %q", body, payload)
		}
		wa, err2 := whatsapp.ParseRecipient(string(req.to))
		if err2 != nil || string(wa) != string(req.recipient()) {
			t.Fatalf("accepted to %q as %q", req.to, req.recipient())
		}
		if req.phoneNumberID != nil && whatsapp.CheckPhoneNumberID(req.phoneNumberID) != nil {
			t.Fatalf("accepted phone_number_id %q", req.phoneNumberID)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(payload, &top); err != nil {
			t.Fatalf("payload is not an object: %v", err)
		}
		for _, field := range append([]string{"phone_number_id"}, tenantFields...) {
			if _, ok := top[field]; ok {
				t.Fatalf("payload kept %s: %s", field, payload)
			}
		}
		// The forwarded payload re-validates, to the same message, with `to` as its digits.
		var p2 fastjson.Parser
		var a2 fastjson.Arena
		req2, _, err := parseSendRequest(&p2, &a2, payload, "t1", tenantFields, buf[len(buf):], 0)
		if err != nil {
			t.Fatalf("accepted payload does not re-validate: %v: %q", err, payload)
		}
		if !bytes.Equal(req2.to, req.recipient()) || !bytes.Equal(req2.recipient(), req.recipient()) || req2.msgType != req.msgType || req2.phoneNumberID != nil {
			t.Fatalf("re-validation differs: %+v vs %+v", req2, req)
		}
	})
}

func FuzzParseBearer(f *testing.F) {
	for _, seed := range []string{"Bearer a.b.c", "bearer  x", "Basic x", "", "Bearer", "Bearer a b", "BeArEr\t\tz "} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		tok, ok := parseBearer(h)
		if !ok {
			if tok != nil {
				t.Fatalf("rejected header returned token %q", tok)
			}
			return
		}
		if len(tok) == 0 || !bytes.Contains(h, tok) || bytes.ContainsAny(tok, " \t\r\n") {
			t.Fatalf("parseBearer(%q) = %q", h, tok)
		}
		if !bytes.HasPrefix(bytes.ToLower(bytes.TrimSpace(h)), []byte("bearer")) {
			t.Fatalf("accepted a non-Bearer scheme: %q", h)
		}
	})
}

// captureSink keeps the last published message.
type captureSink struct{ last kafka.Message }

func (c *captureSink) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	m := msgs[0]
	c.last = kafka.Message{Key: append([]byte(nil), m.Key...), Value: append([]byte(nil), m.Value...)}
	return nil
}

// FuzzSendHandler drives the whole handler: no input gets a 500, and every accepted
// send publishes an envelope that queue.Decode reads back with the tenant as key.
func FuzzSendHandler(f *testing.F) {
	f.Add([]byte(benchBody), []byte("k1"), []byte("/v1/messages"))
	f.Add([]byte(`{"messaging_product":"whatsapp","phone_number_id":"1001","tenantId":"t1","to":"15551234567","type":"contacts","contacts":[{"a":"\u00e9"}]}`), []byte(""), []byte("/v22.0/1001/messages"))
	f.Add([]byte(`{}`), []byte("\x00"), []byte("/v1/messages?tenantId=t2"))
	sink := &captureSink{}
	s, tok := unitServer(f, &fixedResolver{acct: testAccount()}, sink)
	h := s.Handler()
	f.Add([]byte(strings.Repeat("[", 5000)), []byte(""), []byte("/v22.0/1001/messages"))
	f.Fuzz(func(t *testing.T, body, key, uri []byte) {
		ctx := sendCtx(tok, string(body))
		ctx.Request.SetRequestURIBytes(uri)
		if len(key) > 0 {
			ctx.Request.Header.SetBytesV("Idempotency-Key", key)
		}
		// The work budget of the whole request: linear in the body.
		allocs, allocated := workOf(2, func() { ctx.Response.Reset(); h(ctx) })
		if n := float64(len(body)); allocs > 64+n/4 || allocated > 64<<10+256*n {
			t.Fatalf("%d-byte body cost %.0f allocations and %.0f bytes", len(body), allocs, allocated)
		}
		ctx.Response.Reset()
		sink.last = kafka.Message{}
		h(ctx)
		status := ctx.Response.StatusCode()
		if status >= 500 {
			t.Fatalf("status %d for body %q: %s", status, body, ctx.Response.Body())
		}
		if status != 200 && status != 202 {
			if sink.last.Value != nil {
				t.Fatalf("published although answered %d", status)
			}
			return
		}
		env, err := queue.Decode(sink.last.Value)
		if err != nil {
			t.Fatalf("published envelope does not decode: %v: %s", err, sink.last.Value)
		}
		if string(sink.last.Key) != "t1" || env.TenantID != "t1" || env.PhoneNumberID != "1001" {
			t.Fatalf("envelope %+v key %q", env, sink.last.Key)
		}
		if bytes.Contains(sink.last.Value, []byte("secret-meta-token")) || bytes.Contains(sink.last.Value, []byte(tok)) {
			t.Fatal("token in envelope")
		}
	})
}
