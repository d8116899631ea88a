package gateway

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/valyala/fastjson"
)

func FuzzParseSendRequest(f *testing.F) {
	for _, seed := range []string{
		`{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"hi"}}`,
		`{"messaging_product":"whatsapp","phone_number_id":"123","tenantId":"t1","to":"+1","type":"contacts","contacts":[{}]}`,
		`{"messaging_product":"whatsapp","to":"1","type":"template","template":{"name":"x","components":[{"type":"body","parameters":[{"type":"text","text":"\u00e9\n"}]}]}}`,
		`{"messaging_product":"whatsapp","to":"1","t\u0079pe":"image","image":{"id":"1"}}`,
		`{"tenantId":"t2"}`, `[]`, `"x"`, `{"a":NaN}`, `{"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":1e999}}`,
	} {
		f.Add([]byte(seed))
	}
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, body []byte) {
		req, buf, err := parseSendRequest(&p, body, "t1", tenantFields, nil)
		if err != nil {
			return
		}
		// Anything accepted is strict JSON for every consumer, names a valid recipient
		// and type, and holds no aerogate-only field.
		payload := append([]byte(nil), req.payload...)
		if !json.Valid(body) || !json.Valid(payload) || len(payload) == 0 || payload[0] != '{' {
			t.Fatalf("accepted invalid JSON: body %q payload %q", body, payload)
		}
		if !validTo(req.to) {
			t.Fatalf("accepted to %q", req.to)
		}
		if req.phoneNumberID != nil && !validPhoneNumberID(req.phoneNumberID) {
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
		// The forwarded payload re-validates, to the same message.
		var p2 fastjson.Parser
		req2, _, err := parseSendRequest(&p2, payload, "t1", tenantFields, buf[len(buf):])
		if err != nil {
			t.Fatalf("accepted payload does not re-validate: %v: %q", err, payload)
		}
		if !bytes.Equal(req2.to, req.to) || req2.msgType != req.msgType || req2.phoneNumberID != nil {
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
