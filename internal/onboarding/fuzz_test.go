package onboarding

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/aerostic/aerogate/internal/whatsapp"
)

func FuzzParseState(f *testing.F) {
	f.Add(strings.Repeat("A", 43))
	f.Add(strings.Repeat("_", 43))
	f.Add(strings.Repeat("A", 42) + "=")
	f.Add("")
	f.Add(strings.Repeat("A", 44))
	f.Fuzz(func(t *testing.T, s string) {
		raw, ok := parseState(s)
		if !ok {
			return
		}
		// Only Begin's own encoding is accepted: one spelling per state.
		if got := base64.RawURLEncoding.EncodeToString(raw[:]); got != s {
			t.Fatalf("parseState accepted %q, which encodes back as %q", s, got)
		}
	})
}

func FuzzRequestFields(f *testing.F) {
	f.Add("AQ-code_123", "+1 (555) 010-0100")
	f.Add("a code", "++1")
	f.Add("", "12")
	f.Fuzz(func(t *testing.T, code, to string) {
		if validCode(code) && (strings.ContainsAny(code, " \t\r\n\x00") || len(code) > 2048) {
			t.Fatalf("validCode(%q)", code)
		}
		r, err := whatsapp.ParseRecipient(to)
		if err != nil {
			return
		}
		digits := string(r)
		// The digits go into the hello_world body as they are.
		if body := string(helloWorld(digits)); !strings.Contains(body, `"to":"`+digits+`"`) {
			t.Fatalf("helloWorld body %s", body)
		}
	})
}
