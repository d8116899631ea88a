package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	secret      = []byte("0123456789abcdef0123456789abcdef")
	otherSecret = []byte("fedcba9876543210fedcba9876543210")
	t0          = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// clock is a time source a test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testKeys are generated once per test binary: RSA generation is slow.
type testKeys struct {
	rsaA, rsaB *rsa.PrivateKey
	ec         *ecdsa.PrivateKey
	ed         ed25519.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	a, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	b, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return testKeys{rsaA: a, rsaB: b, ec: ec, ed: ed}
})

func pemPublic(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// writeJWKS writes the public halves of the test keys as a JWK Set.
func writeJWKS(t testing.TB, dir string) string {
	t.Helper()
	k := keys()
	ecb, err := k.ec.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "rsa-a", "use": "sig", "alg": "RS256", "n": b64u(k.rsaA.N.Bytes()), "e": b64u(big.NewInt(int64(k.rsaA.E)).Bytes())},
		{"kty": "RSA", "kid": "rsa-b", "n": b64u(k.rsaB.N.Bytes()), "e": "AQAB"},
		{"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64u(ecb[1:33]), "y": b64u(ecb[33:])},
		{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64u(k.ed.Public().(ed25519.PublicKey))},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "jwks.json", b)
}

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims returns valid claims at t0 for tenant t-1, changed by edits (a nil value deletes).
func claims(edits map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"tenantId": "t-1",
		"sub":      "backend",
		"iss":      "aerogate",
		"aud":      "api",
		"iat":      t0.Add(-time.Minute).Unix(),
		"exp":      t0.Add(time.Hour).Unix(),
	}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func newVerifier(t testing.TB, cfg Config) (*Verifier, *clock) {
	t.Helper()
	c := &clock{now: t0}
	cfg.Now = c.Now
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v, c
}

func hsConfig() Config {
	return Config{HMACSecret: secret, Issuer: "aerogate", Audience: "api", Leeway: 30 * time.Second}
}

// checkRefusal asserts err is the wanted reason, wraps ErrUnauthorized and hides the token.
func checkRefusal(t *testing.T, err, want error, token string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err %v does not wrap ErrUnauthorized", err)
	}
	if token != "" && strings.Contains(err.Error(), token) {
		t.Fatalf("error %q contains the token", err)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) > 8 && strings.Contains(err.Error(), part) {
			t.Fatalf("error %q contains part of the token", err)
		}
	}
}

func TestVerifyHS256(t *testing.T) {
	hs := jwt.SigningMethodHS256
	long := strings.Repeat("x", MaxTenantIDBytes+1)
	none := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	valid := sign(t, hs, secret, "", claims(nil))
	parts := strings.Split(valid, ".")
	otherPayload := strings.Split(sign(t, hs, secret, "", claims(map[string]any{"tenantId": "t-2"})), ".")[1]

	tests := []struct {
		name  string
		token string
		want  error // nil: accepted
	}{
		{"valid", valid, nil},
		{"expired", sign(t, hs, secret, "", claims(map[string]any{"exp": t0.Add(-time.Minute).Unix()})), ErrTokenExpired},
		{"expired within leeway", sign(t, hs, secret, "", claims(map[string]any{"exp": t0.Add(-10 * time.Second).Unix()})), nil},
		{"not yet valid", sign(t, hs, secret, "", claims(map[string]any{"nbf": t0.Add(time.Minute).Unix()})), ErrTokenNotValidYet},
		{"nbf within leeway", sign(t, hs, secret, "", claims(map[string]any{"nbf": t0.Add(10 * time.Second).Unix()})), nil},
		{"issued in the future", sign(t, hs, secret, "", claims(map[string]any{"iat": t0.Add(time.Hour).Unix()})), ErrTokenIssuedInFuture},
		{"missing exp", sign(t, hs, secret, "", claims(map[string]any{"exp": nil})), ErrExpiryMissing},
		{"exp not a number", sign(t, hs, secret, "", claims(map[string]any{"exp": "tomorrow"})), ErrClaimsInvalid},
		{"wrong secret", sign(t, hs, otherSecret, "", claims(nil)), ErrSignatureInvalid},
		{"payload swapped", parts[0] + "." + otherPayload + "." + parts[2], ErrSignatureInvalid},
		{"signature stripped", parts[0] + "." + parts[1] + ".", ErrSignatureInvalid},
		{"alg none", none, ErrAlgorithmNotAllowed},
		{"alg none with signature", strings.Join([]string{strings.Split(none, ".")[0], parts[1], parts[2]}, "."), ErrAlgorithmNotAllowed},
		{"HS512 not allowed", sign(t, jwt.SigningMethodHS512, secret, "", claims(nil)), ErrAlgorithmNotAllowed},
		{"alg missing", b64u([]byte(`{"typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], ErrAlgorithmNotAllowed},
		{"alg unknown", b64u([]byte(`{"alg":"XX999"}`)) + "." + parts[1] + "." + parts[2], ErrAlgorithmNotAllowed},
		{"wrong issuer", sign(t, hs, secret, "", claims(map[string]any{"iss": "someone"})), ErrIssuerInvalid},
		{"missing issuer", sign(t, hs, secret, "", claims(map[string]any{"iss": nil})), ErrIssuerInvalid},
		{"wrong audience", sign(t, hs, secret, "", claims(map[string]any{"aud": "other"})), ErrAudienceInvalid},
		{"missing audience", sign(t, hs, secret, "", claims(map[string]any{"aud": nil})), ErrAudienceInvalid},
		{"expired and missing issuer", sign(t, hs, secret, "", claims(map[string]any{"iss": nil, "exp": t0.Add(-time.Hour).Unix()})), ErrIssuerInvalid},
		{"audience list", sign(t, hs, secret, "", claims(map[string]any{"aud": []string{"x", "api"}})), nil},
		{"tenant missing", sign(t, hs, secret, "", claims(map[string]any{"tenantId": nil})), ErrTenantClaimMissing},
		{"tenant empty", sign(t, hs, secret, "", claims(map[string]any{"tenantId": ""})), ErrTenantClaimMissing},
		{"tenant null", sign(t, hs, secret, "", jwt.MapClaims{"tenantId": nil, "iss": "aerogate", "aud": "api", "exp": t0.Add(time.Hour).Unix()}), ErrTenantClaimMissing},
		{"tenant number", sign(t, hs, secret, "", claims(map[string]any{"tenantId": 42})), ErrTenantClaimInvalid},
		{"tenant list", sign(t, hs, secret, "", claims(map[string]any{"tenantId": []string{"t-1"}})), ErrTenantClaimInvalid},
		{"tenant too long", sign(t, hs, secret, "", claims(map[string]any{"tenantId": long})), ErrTenantClaimInvalid},
		{"tenant control char", sign(t, hs, secret, "", claims(map[string]any{"tenantId": "t-1\n"})), ErrTenantClaimInvalid},
		{"tenant under another name", sign(t, hs, secret, "", claims(map[string]any{"tenantId": nil, "tenant": "t-1"})), ErrTenantClaimMissing},
		{"empty", "", ErrTokenMissing},
		{"one segment", "abc", ErrTokenMalformed},
		{"bad base64", "a.b.c", ErrTokenMalformed},
		{"header not JSON", b64u([]byte("nope")) + "." + parts[1] + "." + parts[2], ErrTokenMalformed},
		{"too large", parts[0] + "." + strings.Repeat("A", MaxTokenBytes) + "." + parts[2], ErrTokenTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := newVerifier(t, hsConfig())
			got, err := v.Verify([]byte(tc.token))
			if tc.want != nil {
				checkRefusal(t, err, tc.want, tc.token)
				if v.cache.len() != 0 {
					t.Fatal("a refused token was cached")
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.TenantID != "t-1" || got.Subject != "backend" {
				t.Fatalf("claims = %+v", got)
			}
		})
	}
}

func TestVerifyClaims(t *testing.T) {
	v, _ := newVerifier(t, hsConfig())
	exp := t0.Add(time.Hour).Truncate(time.Second)
	got, err := v.Verify([]byte(sign(t, jwt.SigningMethodHS256, secret, "", claims(nil))))
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{TenantID: "t-1", Subject: "backend", ExpiresAt: exp}
	if got.TenantID != want.TenantID || got.Subject != want.Subject || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("claims = %+v, want %+v", got, want)
	}
}

func TestCustomTenantClaim(t *testing.T) {
	cfg := hsConfig()
	cfg.TenantClaim = "org_id"
	v, _ := newVerifier(t, cfg)
	tests := []struct {
		name   string
		claims jwt.MapClaims
		tenant string
		want   error
	}{
		{"custom claim", claims(map[string]any{"tenantId": nil, "org_id": "acme"}), "acme", nil},
		{"default claim ignored", claims(nil), "", ErrTenantClaimMissing},
		{"custom claim number", claims(map[string]any{"org_id": 7}), "", ErrTenantClaimInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(t, jwt.SigningMethodHS256, secret, "", tc.claims)
			got, err := v.Verify([]byte(tok))
			if tc.want != nil {
				checkRefusal(t, err, tc.want, tok)
				return
			}
			if err != nil || got.TenantID != tc.tenant {
				t.Fatalf("Verify = %+v, %v", got, err)
			}
		})
	}
}

func TestNoIssuerOrAudienceConfigured(t *testing.T) {
	v, _ := newVerifier(t, Config{HMACSecret: secret})
	tok := sign(t, jwt.SigningMethodHS256, secret, "", claims(map[string]any{"iss": "anyone", "aud": nil}))
	if _, err := v.Verify([]byte(tok)); err != nil {
		t.Fatalf("iss/aud not configured, yet: %v", err)
	}
}

// TestAlgorithmSwap is the classic attack: the server allows RS256, and the attacker
// signs an HS256 token using the RSA public key's PEM bytes as the HMAC secret.
func TestAlgorithmSwap(t *testing.T) {
	k := keys()
	dir := t.TempDir()
	pubPEM := pemPublic(t, &k.rsaA.PublicKey)
	path := writeFile(t, dir, "rsa.pem", pubPEM)
	forged := sign(t, jwt.SigningMethodHS256, pubPEM, "", claims(nil))
	forgedKid := sign(t, jwt.SigningMethodHS256, pubPEM, "a", claims(nil))

	tests := []struct {
		name  string
		cfg   Config
		token string
		want  error
	}{
		{"RS256 only", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{path}}, forged, ErrAlgorithmNotAllowed},
		{"RS256 only, kid", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{"a=" + path}}, forgedKid, ErrAlgorithmNotAllowed},
		{"RS256 and HS256", Config{Algorithms: []string{"RS256", "HS256"}, HMACSecret: secret, PublicKeyFiles: []string{"a=" + path}}, forgedKid, ErrSignatureInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := newVerifier(t, tc.cfg)
			_, err := v.Verify([]byte(tc.token))
			checkRefusal(t, err, tc.want, tc.token)
			// The genuine RS256 token still passes.
			if _, err := v.Verify([]byte(sign(t, jwt.SigningMethodRS256, k.rsaA, "a", claims(nil)))); err != nil {
				t.Fatalf("genuine RS256 token: %v", err)
			}
		})
	}
}

func TestPublicKeys(t *testing.T) {
	k := keys()
	dir := t.TempDir()
	rsaA := writeFile(t, dir, "rsa-a.pem", pemPublic(t, &k.rsaA.PublicKey))
	rsaB := writeFile(t, dir, "rsa-b.pem", pemPublic(t, &k.rsaB.PublicKey))
	ecPath := writeFile(t, dir, "ec.pem", pemPublic(t, &k.ec.PublicKey))
	edPath := writeFile(t, dir, "ed.pem", pemPublic(t, k.ed.Public()))
	pkcs1 := writeFile(t, dir, "rsa-pkcs1.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsaA.PublicKey)}))
	jwks := writeJWKS(t, dir)
	all := []string{"RS256", "ES256", "EdDSA"}
	pems := Config{Algorithms: all, PublicKeyFiles: []string{"rsa-a=" + rsaA, "rsa-b=" + rsaB, "ec=" + ecPath, "ed=" + edPath}}
	set := Config{Algorithms: all, JWKSFile: jwks}

	rs, es, ed := jwt.SigningMethodRS256, jwt.SigningMethodES256, jwt.SigningMethodEdDSA
	tests := []struct {
		name  string
		cfg   Config
		token string
		want  error
	}{
		{"PEM RS256", pems, sign(t, rs, k.rsaA, "rsa-a", claims(nil)), nil},
		{"PEM RS256 second kid", pems, sign(t, rs, k.rsaB, "rsa-b", claims(nil)), nil},
		{"PEM ES256", pems, sign(t, es, k.ec, "ec", claims(nil)), nil},
		{"PEM EdDSA", pems, sign(t, ed, k.ed, "ed", claims(nil)), nil},
		{"PEM kid names another key", pems, sign(t, rs, k.rsaB, "rsa-a", claims(nil)), ErrSignatureInvalid},
		{"PEM unknown kid", pems, sign(t, rs, k.rsaA, "nope", claims(nil)), ErrUnknownKeyID},
		{"PEM no kid, many keys", pems, sign(t, rs, k.rsaA, "", claims(nil)), ErrKeyIDMissing},
		{"PEM kid of another key type", pems, sign(t, es, k.ec, "rsa-a", claims(nil)), ErrKeyMismatch},
		{"PEM expired", pems, sign(t, es, k.ec, "ec", claims(map[string]any{"exp": t0.Add(-time.Hour).Unix()})), ErrTokenExpired},
		{"PEM tenant missing", pems, sign(t, ed, k.ed, "ed", claims(map[string]any{"tenantId": nil})), ErrTenantClaimMissing},
		{"JWKS RS256", set, sign(t, rs, k.rsaA, "rsa-a", claims(nil)), nil},
		{"JWKS RS256 key without alg", set, sign(t, rs, k.rsaB, "rsa-b", claims(nil)), nil},
		{"JWKS ES256", set, sign(t, es, k.ec, "ec", claims(nil)), nil},
		{"JWKS EdDSA", set, sign(t, ed, k.ed, "ed", claims(nil)), nil},
		{"JWKS wrong key", set, sign(t, ed, k.ed, "ec", claims(nil)), ErrKeyMismatch},
		{"JWKS unknown kid", set, sign(t, ed, k.ed, "ed2", claims(nil)), ErrUnknownKeyID},
		{"JWKS HS256 not allowed", set, sign(t, jwt.SigningMethodHS256, secret, "rsa-a", claims(nil)), ErrAlgorithmNotAllowed},
		{"single PEM, no kid", Config{Algorithms: []string{"ES256"}, PublicKeyFiles: []string{ecPath}}, sign(t, es, k.ec, "", claims(nil)), nil},
		{"single PEM without kid, token with kid", Config{Algorithms: []string{"ES256"}, PublicKeyFiles: []string{ecPath}}, sign(t, es, k.ec, "whatever", claims(nil)), nil},
		{"single PEM with kid, token without", Config{Algorithms: []string{"EdDSA"}, PublicKeyFiles: []string{"ed=" + edPath}}, sign(t, ed, k.ed, "", claims(nil)), nil},
		{"single PEM with kid, other kid", Config{Algorithms: []string{"EdDSA"}, PublicKeyFiles: []string{"ed=" + edPath}}, sign(t, ed, k.ed, "other", claims(nil)), ErrUnknownKeyID},
		{"PKCS1 PEM", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{pkcs1}}, sign(t, rs, k.rsaA, "", claims(nil)), nil},
		{"ES256 not allowed", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{rsaA}}, sign(t, es, k.ec, "", claims(nil)), ErrAlgorithmNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := newVerifier(t, tc.cfg)
			got, err := v.Verify([]byte(tc.token))
			if tc.want != nil {
				checkRefusal(t, err, tc.want, tc.token)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.TenantID != "t-1" {
				t.Fatalf("tenant = %q", got.TenantID)
			}
		})
	}
}

func TestNewVerifierRejects(t *testing.T) {
	k := keys()
	dir := t.TempDir()
	rsaPath := writeFile(t, dir, "rsa.pem", pemPublic(t, &k.rsaA.PublicKey))
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallPath := writeFile(t, dir, "small.pem", pemPublic(t, &small.PublicKey))
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ec)
	if err != nil {
		t.Fatal(err)
	}
	privPath := writeFile(t, dir, "priv.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384Path := writeFile(t, dir, "p384.pem", pemPublic(t, &p384.PublicKey))
	junk := writeFile(t, dir, "junk.pem", []byte("not pem"))

	tests := []struct {
		name    string
		cfg     Config
		mention string
	}{
		{"no secret", Config{}, "at least 32 bytes"},
		{"short secret", Config{HMACSecret: []byte("short")}, "at least 32 bytes"},
		{"alg none", Config{Algorithms: []string{"none"}, HMACSecret: secret}, `"none" not supported`},
		{"alg unknown", Config{Algorithms: []string{"RS512"}, HMACSecret: secret}, `"RS512" not supported`},
		{"RS256 without keys", Config{Algorithms: []string{"RS256"}}, "no public key"},
		{"keys without RS256", Config{HMACSecret: secret, PublicKeyFiles: []string{rsaPath}}, "no RS256"},
		{"duplicate kid", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{"a=" + rsaPath, "a=" + rsaPath}}, `"a" given twice`},
		{"missing file", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{filepath.Join(dir, "absent.pem")}}, "absent.pem"},
		{"empty path", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{"a="}}, "no path"},
		{"small RSA", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{smallPath}}, "shorter than 2048"},
		{"private key", Config{Algorithms: []string{"ES256"}, PublicKeyFiles: []string{privPath}}, "private key"},
		{"P-384", Config{Algorithms: []string{"ES256"}, PublicKeyFiles: []string{p384Path}}, "P-256"},
		{"not PEM", Config{Algorithms: []string{"ES256"}, PublicKeyFiles: []string{junk}}, "no PEM block"},
		{"JWKS missing", Config{Algorithms: []string{"ES256"}, JWKSFile: filepath.Join(dir, "none.json")}, "none.json"},
		{"negative leeway", Config{HMACSecret: secret, Leeway: -time.Second}, "leeway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("NewVerifier error = %v, want one mentioning %q", err, tc.mention)
			}
		})
	}
}

func TestParseJWKS(t *testing.T) {
	mixed, err := os.ReadFile("testdata/jwks_mixed.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		kids    []string // accepted keys in order
		mention string
	}{
		{"mixed set keeps signature keys it can use", string(mixed), []string{"rsa-1", "ec-1", "ed-1"}, ""},
		{"not JSON", "{", nil, "not a JSON object"},
		{"no keys array", `{"kty":"RSA"}`, nil, "no keys array"},
		{"only unusable keys", `{"keys":[{"kty":"oct","k":"AA"}]}`, nil, "no RSA"},
		{"private EC key", `{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}]}`, nil, "private key"},
		{"EC point off curve", `{"keys":[{"kty":"EC","crv":"P-256","x":"` + b64u(make([]byte, 32)) + `","y":"` + b64u(append(make([]byte, 31), 1)) + `"}]}`, nil, "not on P-256"},
		{"EC short coordinates", `{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`, nil, "coordinates"},
		{"Ed25519 short", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}`, nil, "Ed25519"},
		{"RSA no modulus", `{"keys":[{"kty":"RSA","e":"AQAB"}]}`, nil, "modulus"},
		{"RSA even exponent", `{"keys":[{"kty":"RSA","n":"` + b64u(keys().rsaA.N.Bytes()) + `","e":"Ag"}]}`, nil, "exponent"},
		{"RSA small modulus", `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`, nil, "shorter than 2048"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseJWKS([]byte(tc.in))
			if tc.mention != "" {
				if err == nil || !strings.Contains(err.Error(), tc.mention) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.mention)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kids []string
			for _, k := range got {
				kids = append(kids, k.kid)
			}
			if fmt.Sprint(kids) != fmt.Sprint(tc.kids) {
				t.Fatalf("kids = %v, want %v", kids, tc.kids)
			}
		})
	}
}

func TestCache(t *testing.T) {
	cfg := hsConfig()
	cfg.Leeway = 0
	v, clk := newVerifier(t, cfg)
	tok := []byte(sign(t, jwt.SigningMethodHS256, secret, "", claims(map[string]any{"exp": t0.Add(time.Minute).Unix()})))

	first, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if v.cache.len() != 1 {
		t.Fatalf("cache holds %d entries after one verified token, want 1", v.cache.len())
	}
	clk.Add(59 * time.Second)
	second, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("cached token refused before exp: %v", err)
	}
	if !reflect.DeepEqual(second, first) {
		t.Fatalf("cached claims %+v differ from %+v", second, first)
	}
	clk.Add(time.Second) // now == exp
	if _, err := v.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("cached token at exp: err = %v, want %v", err, ErrTokenExpired)
	}
	if v.cache.len() != 0 {
		t.Fatal("expired token still cached")
	}
}

func TestCacheNeverServesPastExpWithLeeway(t *testing.T) {
	v, clk := newVerifier(t, hsConfig()) // 30 s leeway
	tok := []byte(sign(t, jwt.SigningMethodHS256, secret, "", claims(map[string]any{"exp": t0.Add(time.Minute).Unix()})))
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute + 10*time.Second) // past exp, within leeway: full verification accepts
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	if v.cache.len() != 0 {
		t.Fatal("token past its exp put back in the cache")
	}
	clk.Add(time.Minute)
	if _, err := v.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("past leeway: err = %v", err)
	}
}

func TestCacheDoesNotConfuseTokens(t *testing.T) {
	v, _ := newVerifier(t, hsConfig())
	a := []byte(sign(t, jwt.SigningMethodHS256, secret, "", claims(nil)))
	b := []byte(sign(t, jwt.SigningMethodHS256, secret, "", claims(map[string]any{"tenantId": "t-2"})))
	forged := []byte(sign(t, jwt.SigningMethodHS256, otherSecret, "", claims(nil)))
	for range 3 {
		ca, errA := v.Verify(a)
		cb, errB := v.Verify(b)
		_, errF := v.Verify(forged)
		if errA != nil || errB != nil || ca.TenantID != "t-1" || cb.TenantID != "t-2" {
			t.Fatalf("a=%+v,%v b=%+v,%v", ca, errA, cb, errB)
		}
		checkRefusal(t, errF, ErrSignatureInvalid, string(forged))
	}
}

func TestCacheBounded(t *testing.T) {
	cfg := hsConfig()
	cfg.CacheSize = 4
	v, _ := newVerifier(t, cfg)
	for i := range 50 {
		tok := sign(t, jwt.SigningMethodHS256, secret, "", claims(map[string]any{"tenantId": fmt.Sprintf("t-%d", i)}))
		c, err := v.Verify([]byte(tok))
		if err != nil || c.TenantID != fmt.Sprintf("t-%d", i) {
			t.Fatalf("Verify = %+v, %v", c, err)
		}
		if n := v.cache.len(); n > 4 {
			t.Fatalf("cache holds %d entries, bound is 4", n)
		}
	}
	big := newTokenCache(DefaultCacheSize)
	if got := len(big.shards) * big.perShard; got < DefaultCacheSize || got > DefaultCacheSize+len(big.shards) {
		t.Fatalf("capacity %d for size %d", got, DefaultCacheSize)
	}
}

func TestCacheDisabled(t *testing.T) {
	cfg := hsConfig()
	cfg.CacheSize = -1
	v, _ := newVerifier(t, cfg)
	tok := []byte(sign(t, jwt.SigningMethodHS256, secret, "", claims(nil)))
	for range 2 {
		if _, err := v.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if v.cache != nil {
		t.Fatal("cache present with CacheSize < 0")
	}
}

func TestConcurrentVerify(t *testing.T) {
	cfg := hsConfig()
	cfg.CacheSize = 8
	v, _ := newVerifier(t, cfg)
	toks := make([][]byte, 16)
	for i := range toks {
		toks[i] = []byte(sign(t, jwt.SigningMethodHS256, secret, "", claims(map[string]any{"tenantId": fmt.Sprintf("t-%d", i)})))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := (g + i) % len(toks)
				c, err := v.Verify(toks[n])
				if err != nil || c.TenantID != fmt.Sprintf("t-%d", n) {
					errs <- fmt.Errorf("token %d: %+v, %v", n, c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestIssueHS256(t *testing.T) {
	tests := []struct {
		name                     string
		secret                   []byte
		claim, tenant, iss, aud  string
		ttl                      time.Duration
		verifyClaim, vIss, vAud  string
		wantIssueErr, wantVerify bool
	}{
		{name: "default claim", secret: secret, tenant: "acme", ttl: time.Hour, wantVerify: true},
		{name: "custom claim, iss and aud", secret: secret, claim: "org", tenant: "acme", iss: "aerogate", aud: "api", ttl: time.Hour, verifyClaim: "org", vIss: "aerogate", vAud: "api", wantVerify: true},
		{name: "aud mismatch", secret: secret, tenant: "acme", aud: "web", ttl: time.Hour, vAud: "api"},
		{name: "short secret", secret: []byte("short"), tenant: "acme", ttl: time.Hour, wantIssueErr: true},
		{name: "empty tenant", secret: secret, tenant: "", ttl: time.Hour, wantIssueErr: true},
		{name: "control char tenant", secret: secret, tenant: "a\x00b", ttl: time.Hour, wantIssueErr: true},
		{name: "zero ttl", secret: secret, tenant: "acme", wantIssueErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := IssueHS256(tc.secret, tc.claim, tc.tenant, tc.ttl, tc.iss, tc.aud)
			if tc.wantIssueErr {
				if err == nil {
					t.Fatal("IssueHS256 accepted bad input")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier(Config{HMACSecret: tc.secret, TenantClaim: tc.verifyClaim, Issuer: tc.vIss, Audience: tc.vAud})
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify([]byte(tok))
			if !tc.wantVerify {
				if err == nil {
					t.Fatal("token verified but should not")
				}
				return
			}
			if err != nil || c.TenantID != tc.tenant {
				t.Fatalf("Verify = %+v, %v", c, err)
			}
			if d := time.Until(c.ExpiresAt); d < tc.ttl-2*time.Second || d > tc.ttl {
				t.Fatalf("expires in %v, want about %v", d, tc.ttl)
			}
		})
	}
}

func TestHeaderClaims(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, err := NewVerifier(Config{HMACSecret: secret, HeaderClaims: []string{"sub", "roles", "n", "obj", "bad", "missing", "nul"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"tenantId": "acme", "sub": "u1", "roles": []any{"admin", "ops"}, "n": 42.5,
		"obj": map[string]any{"a": 1}, "bad": "x\r\nX-Tenant-Id: other", "nul": nil,
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify([]byte(tok))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"sub": "u1", "roles": "admin,ops", "n": "42.5", "obj": `{"a":1}`}
	if !reflect.DeepEqual(c.Values, want) {
		t.Fatalf("values %q, want %q", c.Values, want)
	}
}
