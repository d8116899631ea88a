package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/aerostic/aerogate/internal/jsonguard"
)

// signedWith reports, independently of golang-jwt, whether tok is an HS256 JWS whose
// signature is the HMAC of its first two segments under key.
func signedWith(tok, key []byte) bool {
	parts := bytes.Split(tok, []byte("."))
	if len(parts) != 3 {
		return false
	}
	hdr, err := base64.RawURLEncoding.DecodeString(string(parts[0]))
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "HS256" {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(string(parts[2]))
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write(tok[:len(parts[0])+1+len(parts[1])])
	return hmac.Equal(sig, m.Sum(nil))
}

func FuzzVerify(f *testing.F) {
	hs := jwt.SigningMethodHS256
	seeds := []string{
		sign(f, hs, secret, "", claims(nil)),
		sign(f, hs, secret, "k", claims(map[string]any{"tenantId": 5})),
		sign(f, hs, otherSecret, "", claims(nil)),
		sign(f, jwt.SigningMethodHS512, secret, "", claims(nil)),
		sign(f, hs, secret, "", claims(map[string]any{"exp": nil})),
		sign(f, hs, secret, "", claims(map[string]any{"exp": 1e300})),
		"eyJhbGciOiJub25lIn0.eyJ0ZW5hbnRJZCI6InQifQ.",
		"", ".", "..", "a.b.c", "e30.e30.", "\x00\xff",
		signRaw(`{"alg":"HS256","crit":["exp"]}`, body, secret),
		signRaw(hdr, `{"tenantId":"t-2","tenantId":"t-1","exp":1893557045}`, secret),
		signRaw(`{"alg":"HS256","alg":"HS256"}`, body, secret),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	v, _ := newVerifier(f, hsConfig())
	f.Fuzz(func(t *testing.T, tok []byte) {
		for range 2 { // the second pass goes through the cache
			c, err := v.Verify(tok)
			if err != nil {
				if !errors.Is(err, ErrUnauthorized) {
					t.Fatalf("error %v does not wrap ErrUnauthorized", err)
				}
				if len(tok) > 16 && bytes.Contains([]byte(err.Error()), tok) {
					t.Fatalf("error %q contains the token", err)
				}
				continue
			}
			if !signedWith(tok, secret) {
				t.Fatalf("verified a token not signed with the secret: %q", tok)
			}
			// One spelling per token: every segment is canonical base64url, and header
			// and claims are strict JSON without a repeated key or crit.
			for i, seg := range bytes.Split(tok, []byte(".")) {
				dec, err := base64.RawURLEncoding.DecodeString(string(seg))
				if err != nil || base64.RawURLEncoding.EncodeToString(dec) != string(seg) {
					t.Fatalf("verified a token with a non-canonical segment %q", seg)
				}
				if i < 2 && jsonguard.CheckUnique(dec, 64) != nil {
					t.Fatalf("verified a token with segment %q: %v", dec, jsonguard.CheckUnique(dec, 64))
				}
				if i == 0 {
					var h map[string]any
					if err := json.Unmarshal(dec, &h); err != nil {
						t.Fatalf("verified a token whose header does not decode: %v", err)
					}
					if _, crit := h["crit"]; crit {
						t.Fatalf("verified a token with crit: %s", dec)
					}
				}
			}
			if checkTenantID(c.TenantID) != nil {
				t.Fatalf("verified token with bad tenant %q", c.TenantID)
			}
			if !t0.Before(c.ExpiresAt.Add(30 * time.Second)) {
				t.Fatalf("verified token expired at %v", c.ExpiresAt)
			}
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseJWKS(b)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			if !k.fits("RS256") && !k.fits("ES256") && !k.fits("EdDSA") {
				t.Fatalf("key %q fits no algorithm", k.kid)
			}
		}
	})
}

func BenchmarkVerifyCached(b *testing.B) {
	v, _ := newVerifier(b, hsConfig())
	tok := []byte(sign(b, jwt.SigningMethodHS256, secret, "", claims(nil)))
	if _, err := v.Verify(tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkVerifyUncached(b *testing.B) {
	cfg := hsConfig()
	cfg.CacheSize = -1
	v, _ := newVerifier(b, cfg)
	tok := []byte(sign(b, jwt.SigningMethodHS256, secret, "", claims(nil)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
