package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// signRaw is an HS256 token over the given header and claims JSON, byte for byte, so a
// test can write what no JWT library would: duplicate keys, crit, odd spellings.
func signRaw(header, claimsJSON string, key []byte) string {
	input := b64u([]byte(header)) + "." + b64u([]byte(claimsJSON))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(input))
	return input + "." + b64u(m.Sum(nil))
}

// respellings are the other spellings of a base64url segment that a lenient decoder
// reads as the same bytes: its last character with the unused low bits set.
func respellings(seg string) []string {
	spare := map[int]int{2: 4, 3: 2}[len(seg)%4] // unused bits in the last character
	if spare == 0 {
		return nil
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	var out []string
	for low := 1; low < 1<<spare; low++ {
		out = append(out, seg[:len(seg)-1]+string(alphabet[last|low]))
	}
	return out
}

const (
	hdr = `{"alg":"HS256","typ":"JWT"}`
	// exp is t0 + 1h.
	body = `{"tenantId":"t-1","sub":"backend","iss":"aerogate","aud":"api","exp":1893557045}`
)

func TestRespellingsDecodeAlike(t *testing.T) {
	sig := strings.Split(signRaw(hdr, body, secret), ".")[2]
	want, _ := base64.RawURLEncoding.DecodeString(sig)
	rs := respellings(sig)
	if len(rs) != 3 { // 32 bytes: 43 characters, 2 spare bits
		t.Fatalf("%d respellings of a %d-character signature", len(rs), len(sig))
	}
	for _, r := range rs {
		got, err := base64.RawURLEncoding.DecodeString(r)
		if err != nil || string(got) != string(want) {
			t.Fatalf("respelling %q decodes to %x, %v", r, got, err)
		}
	}
}

// TestOneSpellingPerToken: a signature (or header, or claims) whose last base64url
// character has non-zero unused bits is refused, so a token has one verified spelling
// and one cache entry.
func TestOneSpellingPerToken(t *testing.T) {
	valid := signRaw(hdr, body, secret)
	parts := strings.Split(valid, ".")
	var respelled []string
	for _, r := range respellings(parts[2]) {
		respelled = append(respelled, parts[0]+"."+parts[1]+"."+r)
	}
	// A header and claims of lengths with spare bits, re-signed over the respelling.
	const oddHdr = `{"alg":"HS256","typ":"JWT","x":"abc"}` // 37 bytes: 50 characters, 4 spare bits
	odd := signRaw(oddHdr, body, secret)
	for _, r := range respellings(strings.Split(odd, ".")[0]) {
		input := r + "." + strings.Split(odd, ".")[1]
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		respelled = append(respelled, input+"."+b64u(m.Sum(nil)))
	}
	if len(respelled) != 3+15 {
		t.Fatalf("only %d respellings", len(respelled))
	}

	v, _ := newVerifier(t, hsConfig())
	if _, err := v.Verify([]byte(valid)); err != nil {
		t.Fatalf("canonical token: %v", err)
	}
	if _, err := v.Verify([]byte(odd)); err != nil {
		t.Fatalf("canonical odd-header token: %v", err)
	}
	for i, tok := range respelled {
		t.Run(fmt.Sprintf("respelled-%d", i), func(t *testing.T) {
			_, err := v.Verify([]byte(tok))
			checkRefusal(t, err, ErrTokenMalformed, tok)
		})
	}
	if n := v.cache.len(); n != 2 {
		t.Fatalf("cache holds %d entries for 2 tokens and %d respellings", n, len(respelled))
	}
}

// TestStrictTokenJSON: crit is refused (RFC 7515 §4.1.11: no extension is understood
// here), and so is a header or claims set that names a key twice, at any depth and
// however the key is escaped; the JSON itself is checked strictly.
func TestStrictTokenJSON(t *testing.T) {
	for _, tc := range []struct {
		name, header, claims string
		want                 error
	}{
		{"crit", `{"alg":"HS256","typ":"JWT","crit":["exp"]}`, body, ErrCriticalHeader},
		{"crit empty", `{"alg":"HS256","crit":[]}`, body, ErrCriticalHeader},
		{"crit null", `{"alg":"HS256","crit":null}`, body, ErrCriticalHeader},
		{"duplicate alg", `{"alg":"none","alg":"HS256"}`, body, ErrDuplicateKey},
		{"duplicate kid", `{"alg":"HS256","kid":"a","kid":"b"}`, body, ErrDuplicateKey},
		{"duplicate tenant", hdr, `{"tenantId":"t-2","tenantId":"t-1","iss":"aerogate","aud":"api","exp":1893557045}`, ErrDuplicateKey},
		{"duplicate tenant escaped", hdr, `{"tenant\u0049d":"t-2","tenantId":"t-1","iss":"aerogate","aud":"api","exp":1893557045}`, ErrDuplicateKey},
		{"duplicate exp", hdr, `{"tenantId":"t-1","iss":"aerogate","aud":"api","exp":1,"exp":1893557045}`, ErrDuplicateKey},
		{"duplicate nested", hdr, `{"tenantId":"t-1","iss":"aerogate","aud":"api","exp":1893557045,"x":{"a":1,"a":2}}`, ErrDuplicateKey},
		{"header with trailing data", `{"alg":"HS256"} {}`, body, ErrTokenMalformed},
		{"claims nested too deep", hdr, `{"tenantId":"t-1","iss":"aerogate","aud":"api","exp":1893557045,"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, ErrTokenMalformed},
		{"claims invalid utf-8", hdr, "{\"tenantId\":\"t-1\",\"iss\":\"aerogate\",\"aud\":\"api\",\"exp\":1893557045,\"x\":\"\xff\"}", ErrTokenMalformed},
		{"keys differing in case are two keys", hdr, `{"tenantId":"t-1","TenantId":"t-2","iss":"aerogate","aud":"api","exp":1893557045}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := newVerifier(t, hsConfig())
			tok := signRaw(tc.header, tc.claims, secret)
			c, err := v.Verify([]byte(tok))
			if tc.want == nil {
				if err != nil || c.TenantID != "t-1" {
					t.Fatalf("Verify = %+v, %v", c, err)
				}
				return
			}
			checkRefusal(t, err, tc.want, tok)
			if v.cache.len() != 0 {
				t.Fatal("a refused token was cached")
			}
		})
	}
}

// TestMaxTokenBytes: the limit is configurable, and a token at the limit verifies.
func TestMaxTokenBytes(t *testing.T) {
	cfg := hsConfig()
	cfg.MaxTokenBytes = 2048
	v, _ := newVerifier(t, cfg)
	pad := func(n int) string {
		return signRaw(hdr, `{"tenantId":"t-1","iss":"aerogate","aud":"api","exp":1893557045,"pad":"`+strings.Repeat("p", n)+`"}`, secret)
	}
	n := 0
	for len(pad(n+1)) <= 2048 {
		n++
	}
	if tok := pad(n); len(tok) > 2048 || len(tok) < 2040 {
		t.Fatalf("token of %d bytes", len(tok))
	} else if _, err := v.Verify([]byte(tok)); err != nil {
		t.Fatalf("token of %d bytes at a 2048-byte limit: %v", len(tok), err)
	}
	checkRefusal(t, func() error { _, err := v.Verify([]byte(pad(n + 4))); return err }(), ErrTokenTooLarge, "")
	if _, err := NewVerifier(Config{HMACSecret: secret, MaxTokenBytes: -1}); err == nil {
		t.Fatal("negative MaxTokenBytes accepted")
	}
}
