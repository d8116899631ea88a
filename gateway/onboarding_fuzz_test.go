package gateway

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fastjson"
)

func FuzzParseSignupBody(f *testing.F) {
	f.Add([]byte(`{"code":"AQ1","state":"s","waba_id":"1","phone_number_id":"2"}`))
	f.Add([]byte(`{"code":"AQ1","state":"s","tenantId":"acme"}`))
	f.Add([]byte(`{"code":"AQ1","state":"s","tenantId":"other"}`))
	f.Add([]byte(`{"code":1,"state":"s"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"code":"a","state":"s","tenantId":"acme","tenantId":"other"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var p fastjson.Parser
		got, apiErr := parseSignupBody(&p, body, "acme", []string{"tenantId"}, 0)
		if apiErr != nil {
			return
		}
		// Accepted: a JSON object whose code and state are strings, and whose tenantId,
		// if any, is the token's.
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("accepted %q, which is not JSON", body)
		}
		if c, ok := v["code"].(string); !ok || c != got.code {
			t.Fatalf("code %q from %s", got.code, body)
		}
		if tid, ok := v["tenantId"]; ok && tid != "acme" {
			t.Fatalf("tenantId %v accepted from %s", tid, body)
		}
	})
}
