package auth

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// maxHeaderValue bounds a claim rendered as a header value.
const maxHeaderValue = 4 << 10

// headerValues renders the named claims of mc as HTTP header values: a string as it is,
// a number or boolean as JSON writes it, an array as its elements so rendered and
// joined with ",", an object as compact JSON. A claim that is absent or null, renders
// longer than 4 KiB, or holds a control character (which could split a header) is left
// out: no header is better than a forged one.
func headerValues(mc jwt.MapClaims, names []string) map[string]string {
	if len(names) == 0 {
		return nil
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		raw, ok := mc[name]
		if !ok || raw == nil {
			continue
		}
		s, ok := renderClaim(raw)
		if !ok || len(s) > maxHeaderValue || !headerSafe(s) {
			continue
		}
		out[name] = s
	}
	return out
}

func renderClaim(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := renderScalar(e)
			if !ok {
				return "", false
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), true
	default:
		return renderScalar(v)
	}
}

func renderScalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	b, err := json.Marshal(v)
	return string(b), err == nil
}

func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
