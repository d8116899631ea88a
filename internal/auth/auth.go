// Package auth verifies tenant JWTs (golang-jwt v5): an algorithm allow-list, keys chosen
// by kid, exp required, iss/aud when configured, and a cache of verified tokens keyed by a
// hash of the whole token so a repeated token skips signature work until it expires.
package auth

import (
	"errors"
	"time"
)

// ErrUnauthorized is wrapped by every verification failure. Its message never contains
// the token.
var ErrUnauthorized = errors.New("unauthorized")

// Config says which tokens are accepted.
type Config struct {
	// Algorithms allowed, e.g. HS256, HS384, HS512, RS256, ES256, EdDSA. Default HS256.
	Algorithms []string
	// HMACSecret is the key for HS* (≥ 32 bytes).
	HMACSecret []byte
	// PublicKeyFiles are "kid=path.pem" (or a bare path, kid "") PEM public keys.
	PublicKeyFiles []string
	// JWKSFile is a JSON Web Key Set file of public keys, chosen by kid.
	JWKSFile    string
	Issuer      string // checked when set
	Audience    string // checked when set
	TenantClaim string // default "tenantId"
	Leeway      time.Duration
	CacheSize   int // verified-token cache entries; default 100,000
}

// Claims is what a verified token says.
type Claims struct {
	TenantID  string
	Subject   string
	ExpiresAt time.Time
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct{}

// NewVerifier validates cfg, loads keys and returns a verifier.
func NewVerifier(cfg Config) (*Verifier, error) { panic("unimplemented") }

// Verify checks a compact JWS token and returns its claims, or an error wrapping
// ErrUnauthorized. The tenant claim must be a non-empty string.
func (v *Verifier) Verify(token []byte) (Claims, error) { panic("unimplemented") }

// IssueHS256 signs a token for tenant that expires after ttl, under claim name
// tenantClaim (default "tenantId"), with iss and aud when non-empty. `aerogate token`
// uses it in dev.
func IssueHS256(secret []byte, tenantClaim, tenantID string, ttl time.Duration, issuer, audience string) (string, error) {
	panic("unimplemented")
}
