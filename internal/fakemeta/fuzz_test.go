package fakemeta

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzSendHandler feeds arbitrary bodies and Authorization headers to the send route:
// the fake answers 200 with Meta's success shape or one of its error statuses with
// Meta's error shape, and never panics.
func FuzzSendHandler(f *testing.F) {
	f.Add("Bearer "+token, []byte(body))
	f.Add("Bearer "+token, []byte(`{"messaging_product":"whatsapp","to":"\u0000\"<>"}`))
	f.Add("", []byte(`{}`))
	f.Add("Bearer ", []byte(`[`))
	f.Add("bearer x", []byte("\xff\xfe"))
	s := New(Options{AcceptAnyToken: true})
	s.SetToken(phone, token)
	s.FailRecipient("666", -1, ErrorSpec{Code: 131026})
	h := s.Handler()
	f.Fuzz(func(t *testing.T, auth string, b []byte) {
		var req fasthttp.Request
		req.Header.SetMethod("POST")
		req.SetRequestURI("/v22.0/" + phone + "/messages")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.SetBody(b)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, nil, nil)
		h(&ctx)
		status := ctx.Response.StatusCode()
		out := ctx.Response.Body()
		switch status {
		case 200:
			var ok metaOK
			if err := json.Unmarshal(out, &ok); err != nil || len(ok.Messages) != 1 || ok.Messages[0].ID == "" {
				t.Fatalf("200 with %q", out)
			}
		case 400, 401, 429:
			var e metaError
			if err := json.Unmarshal(out, &e); err != nil || e.Error.Code == 0 {
				t.Fatalf("%d with %q", status, out)
			}
		default:
			t.Fatalf("status %d", status)
		}
		if len(s.Received()) > 1000 {
			s.Reset()
		}
	})
}
