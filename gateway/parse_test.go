package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fastjson"
)

var tenantFields = []string{"tenantId", "org"}

func TestParseSendRequest(t *testing.T) {
	text := `"text":{"body":"hi"}`
	tests := []struct {
		name    string
		body    string
		want    *apiError
		to      string
		wa      string // the normalized recipient; "" means to itself
		pnid    string
		typ     string
		payload string // expected payload when fields were stripped; "" means the body
		urgent  bool
	}{
		{name: "text", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`, to: "15551234567", typ: "text"},
		{name: "plus prefix", body: `{"messaging_product":"whatsapp","to":"+15551234567","type":"text",` + text + `}`, to: "+15551234567", wa: "15551234567", typ: "text",
			payload: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`},
		{name: "to with spaces", body: `{"messaging_product":"whatsapp","to":"+91 98765 43210","type":"text",` + text + `}`, to: "+91 98765 43210", wa: "919876543210", typ: "text",
			payload: `{"messaging_product":"whatsapp","to":"919876543210","type":"text",` + text + `}`},
		{name: "to with parentheses, hyphens and an escape", body: `{"messaging_product":"whatsapp","phone_number_id":"106540352242922","to":"+1 (650) 555\u002d1234","type":"text",` + text + `}`,
			to: "+1 (650) 555-1234", wa: "16505551234", pnid: "106540352242922", typ: "text",
			payload: `{"messaging_product":"whatsapp","to":"16505551234","type":"text",` + text + `}`},
		{name: "text of 4096 characters", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat("👍", 4096) + `"}}`,
			to: "15551234567", typ: "text"},
		{name: "text of 4096 characters, escaped", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat(`\n`, 4096) + `"}}`,
			to: "15551234567", typ: "text"},
		{name: "surrounding whitespace", body: " \n{\"messaging_product\":\"whatsapp\",\"to\":\"15551234567\",\"type\":\"text\"," + text + "}\n",
			to: "15551234567", typ: "text", payload: "{\"messaging_product\":\"whatsapp\",\"to\":\"15551234567\",\"type\":\"text\"," + text + "}"},
		{name: "image", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"image","image":{"link":"https://x/y.png"}}`, to: "15551234567", typ: "image"},
		{name: "contacts array", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"contacts","contacts":[{"name":{"formatted_name":"A"}}]}`, to: "15551234567", typ: "contacts"},
		{name: "template", body: `{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}`, to: "15551234567", typ: "template"},
		{name: "phone_number_id stripped", body: `{"messaging_product":"whatsapp","phone_number_id":"106540352242922","to":"15551234567","type":"text",` + text + `}`,
			to: "15551234567", typ: "text", pnid: "106540352242922", payload: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`},
		{name: "equal tenantId stripped", body: `{"tenantId":"t1","org":"t1","messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`,
			to: "15551234567", typ: "text", payload: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`},
		{name: "urgent priority stripped", body: `{"priority":"urgent","messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`,
			to: "15551234567", typ: "text", urgent: true, payload: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`},
		{name: "normal priority stripped", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `,"priority":"normal"}`,
			to: "15551234567", typ: "text", payload: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`},

		{name: "unknown priority", body: `{"priority":"high","messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`, want: errInvalidPriority},
		{name: "numeric priority", body: `{"priority":1,"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`, want: errInvalidPriority},
		{name: "empty", body: ``, want: errInvalidJSON},
		{name: "not json", body: `hello`, want: errInvalidJSON},
		{name: "array", body: `[1,2]`, want: errInvalidJSON},
		{name: "truncated", body: `{"messaging_product":"whatsapp"`, want: errInvalidJSON},
		{name: "NaN", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":NaN}}`, want: errInvalidJSON},
		{name: "bad escape", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"\q"}}`, want: errInvalidJSON},
		{name: "invalid utf8", body: "{\"messaging_product\":\"whatsapp\",\"to\":\"15551234567\",\"type\":\"text\",\"text\":{\"body\":\"\xff\"}}", want: errInvalidJSON},
		{name: "trailing data", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `} {}`, want: errInvalidJSON},
		{name: "duplicate to", body: `{"messaging_product":"whatsapp","to":"15551234567","to":"abc","type":"text",` + text + `}`, want: errDuplicateField},
		{name: "duplicate to by case", body: `{"messaging_product":"whatsapp","to":"15551234567","TO":"abc","type":"text",` + text + `}`, want: errDuplicateField},
		{name: "duplicate to by escape", body: `{"messaging_product":"whatsapp","to":"15551234567","t\u006f":"abc","type":"text",` + text + `}`, want: errDuplicateField},
		{name: "missing messaging_product", body: `{"to":"15551234567","type":"text",` + text + `}`, want: errInvalidProduct},
		{name: "wrong messaging_product", body: `{"messaging_product":"sms","to":"15551234567","type":"text",` + text + `}`, want: errInvalidProduct},
		{name: "numeric messaging_product", body: `{"messaging_product":1,"to":"15551234567","type":"text",` + text + `}`, want: errInvalidProduct},
		{name: "missing to", body: `{"messaging_product":"whatsapp","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "empty to", body: `{"messaging_product":"whatsapp","to":"","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "non-numeric to", body: `{"messaging_product":"whatsapp","to":"555-abc","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "to as number", body: `{"messaging_product":"whatsapp","to":15551234567,"type":"text",` + text + `}`, want: errInvalidTo},
		{name: "only plus", body: `{"messaging_product":"whatsapp","to":"+","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "to too long", body: `{"messaging_product":"whatsapp","to":"123456789012345678901","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "to of six digits", body: `{"messaging_product":"whatsapp","to":"123456","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "to with a dot", body: `{"messaging_product":"whatsapp","to":"+91.98765.43210","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "to with + inside", body: `{"messaging_product":"whatsapp","to":"91+9876543210","type":"text",` + text + `}`, want: errInvalidTo},
		{name: "text of 4097 characters", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat("a", 4097) + `"}}`, want: errInvalidTextBody},
		{name: "text of 4097 emoji", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat("👍", 4097) + `"}}`, want: errInvalidTextBody},
		{name: "text without body", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"preview_url":true}}`, want: errInvalidTextBody},
		{name: "text with empty body", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":""}}`, want: errInvalidTextBody},
		{name: "text with numeric body", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":42}}`, want: errInvalidTextBody},
		{name: "dev phone_number_id", body: `{"messaging_product":"whatsapp","phone_number_id":"dev-1","to":"15551234567","type":"text",` + text + `}`, want: errInvalidPhoneNumberID},
		{name: "missing type", body: `{"messaging_product":"whatsapp","to":"15551234567",` + text + `}`, want: errInvalidType},
		{name: "unknown type", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"fax","fax":{}}`, want: errInvalidType},
		{name: "type object missing", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"image","text":{"body":"x"}}`, want: errInvalidMessageObject},
		{name: "type object a string", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":"hi"}`, want: errInvalidMessageObject},
		{name: "contacts not array", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"contacts","contacts":{}}`, want: errInvalidMessageObject},
		{name: "contacts empty", body: `{"messaging_product":"whatsapp","to":"15551234567","type":"contacts","contacts":[]}`, want: errInvalidMessageObject},
		{name: "bad phone_number_id", body: `{"messaging_product":"whatsapp","phone_number_id":"1 2","to":"15551234567","type":"text",` + text + `}`, want: errInvalidPhoneNumberID},
		{name: "numeric phone_number_id", body: `{"messaging_product":"whatsapp","phone_number_id":123,"to":"15551234567","type":"text",` + text + `}`, want: errInvalidPhoneNumberID},
		{name: "other tenantId", body: `{"tenantId":"t2","messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`, want: errTenantMismatch},
		{name: "other tenant in claim field", body: `{"org":"t2","messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`, want: errTenantMismatch},
		{name: "non-string tenantId", body: `{"tenantId":1,"messaging_product":"whatsapp","to":"15551234567","type":"text",` + text + `}`, want: errTenantMismatch},
	}
	var p fastjson.Parser
	var a fastjson.Arena
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _, err := parseSendRequest(&p, &a, []byte(tc.body), "t1", tenantFields, nil, 0)
			if err != tc.want {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				return
			}
			if req.urgent != tc.urgent {
				t.Errorf("urgent = %v, want %v", req.urgent, tc.urgent)
			}
			if string(req.to) != tc.to || string(req.phoneNumberID) != tc.pnid || req.msgType != tc.typ {
				t.Errorf("got to=%q pnid=%q type=%q, want %q %q %q", req.to, req.phoneNumberID, req.msgType, tc.to, tc.pnid, tc.typ)
			}
			wa := tc.wa
			if wa == "" {
				wa = tc.to
			}
			if string(req.recipient()) != wa {
				t.Errorf("recipient = %q, want %q", req.recipient(), wa)
			}
			want := tc.payload
			if want == "" {
				want = tc.body
			}
			if !jsonEqual(t, req.payload, []byte(want)) {
				t.Errorf("payload = %s, want %s", req.payload, want)
			}
			for _, field := range append([]string{"phone_number_id", "priority"}, tenantFields...) {
				if bytes.Contains(req.payload, []byte(`"`+field+`"`)) {
					t.Errorf("payload still holds %s: %s", field, req.payload)
				}
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("payload is not JSON: %v: %s", err, a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("want is not JSON: %v", err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func TestParseBearer(t *testing.T) {
	tests := []struct {
		header string
		token  string
		ok     bool
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer abc.def.ghi", "abc.def.ghi", true},
		{"BEARER   abc.def.ghi  ", "abc.def.ghi", true},
		{"Bearer\tabc", "abc", true},
		{"", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic dXNlcjpwYXNz", "", false},
		{"Bearerabc", "", false},
		{"Bearer abc def", "", false},
		{"Bearer abc\x00", "", false},
		{"Bearer abc\xff", "", false},
		{"Bearer " + strings.Repeat("a", 16<<10+1), "", false},
	}
	for _, tc := range tests {
		tok, ok := parseBearer([]byte(tc.header))
		if ok != tc.ok || string(tok) != tc.token {
			t.Errorf("parseBearer(%.40q) = %q, %v; want %q, %v", tc.header, tok, ok, tc.token, tc.ok)
		}
	}
}

func TestValidators(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(string) bool
		in   string
		want bool
	}{
		{"idempotency key", bs(validIdempotencyKey), "order-42:retry", true},
		{"idempotency key", bs(validIdempotencyKey), strings.Repeat("k", 255), true},
		{"idempotency key", bs(validIdempotencyKey), strings.Repeat("k", 256), false},
		{"idempotency key", bs(validIdempotencyKey), "", false},
		{"idempotency key", bs(validIdempotencyKey), "a\tb", false},
		{"idempotency key", bs(validIdempotencyKey), "é", false},
		{"request id", bs(validRequestID), "req-1.2:3_x", true},
		{"request id", bs(validRequestID), "a b", false},
		{"request id", bs(validRequestID), "a\r\nX-Evil: 1", false},
		{"request id", bs(validRequestID), strings.Repeat("r", 129), false},
	} {
		if got := tc.f(tc.in); got != tc.want {
			t.Errorf("%s(%.40q) = %v, want %v", tc.name, tc.in, got, tc.want)
		}
	}
}

func bs(f func([]byte) bool) func(string) bool { return func(s string) bool { return f([]byte(s)) } }

func TestIdempotentIDMatchesUUIDv5(t *testing.T) {
	for _, tc := range []struct{ tenant, key string }{{"t1", "k"}, {"", ""}, {"tenant-é", "order:42"}} {
		got := idempotentID(nil, tc.tenant, []byte(tc.key))
		want := uuid.NewSHA1(idempotencyNamespace, idempotencyData(tc.tenant, []byte(tc.key)))
		if got != want {
			t.Errorf("idempotentID(%q, %q) = %s, want uuid.NewSHA1 %s", tc.tenant, tc.key, got, want)
		}
	}
	if idempotentID(nil, "ab", []byte("c")) == idempotentID(nil, "a", []byte("bc")) {
		t.Error("tenant/key split collides")
	}
	if a, b := randomID(), randomID(); a == b || a.Version() != 4 || a.Variant() != uuid.RFC4122 {
		t.Errorf("randomID: %s %s", a, b)
	}
	now := time.Now()
	a, b := timeOrderedID(now), timeOrderedID(now.Add(time.Millisecond))
	if a == b || a.Version() != 7 || a.Variant() != uuid.RFC4122 || a.String() >= b.String() {
		t.Errorf("timeOrderedID: %s then %s", a, b)
	}
	if sec, nsec := a.Time().UnixTime(); time.Unix(sec, nsec).UnixMilli() != now.UnixMilli() {
		t.Errorf("timeOrderedID(%v) carries %v", now, time.Unix(sec, nsec))
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, in := range []string{"", "plain", `q"b\s`, "ctl\x00\x1f\n\t\r", "é✓😀", "bad\xffutf8\xc3", "<html>&"} {
		out := appendJSONString(nil, in)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: not JSON: %v", in, out, err)
		}
		if want := strings.ToValidUTF8(in, "\uFFFD"); got != want && !strings.Contains(in, "\xc3") {
			t.Errorf("round trip of %q = %q", in, got)
		}
	}
	if got := string(appendUUID(nil, uuid.MustParse("3f0d8c1e-6a59-4c1b-9b7e-2f4a1d6c8e90"))); got != "3f0d8c1e-6a59-4c1b-9b7e-2f4a1d6c8e90" {
		t.Errorf("appendUUID = %s", got)
	}
}
