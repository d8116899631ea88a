package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"hash"
	"sync"
)

// SignatureHeader is the header Meta signs every webhook POST with.
const SignatureHeader = "X-Hub-Signature-256"

var (
	// ErrNoSecret means no app secret is configured, so no signature can be checked.
	ErrNoSecret = errors.New("no meta app secret configured")
	// ErrSignatureMissing means the request has no X-Hub-Signature-256 header, or one
	// that is not "sha256=" and 64 hex digits.
	ErrSignatureMissing = errors.New("missing or malformed X-Hub-Signature-256")
	// ErrSignatureInvalid means the signature matches none of the app secrets.
	ErrSignatureInvalid = errors.New("X-Hub-Signature-256 matches no app secret")
)

// Verifier checks X-Hub-Signature-256 against every configured app secret, so a secret
// can be rotated without refusing webhooks signed with the old one in the meantime.
type Verifier struct {
	pools []*sync.Pool // one HMAC-SHA256 per secret, reused across requests
}

// NewVerifier returns a verifier for the given app secrets (empty ones are skipped);
// ErrNoSecret when none is left.
func NewVerifier(secrets ...string) (*Verifier, error) {
	v := &Verifier{}
	seen := map[string]bool{}
	for _, s := range secrets {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		key := []byte(s)
		v.pools = append(v.pools, &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }})
	}
	if len(v.pools) == 0 {
		return nil, ErrNoSecret
	}
	return v, nil
}

const signaturePrefix = "sha256="

// Verify checks header (the value of X-Hub-Signature-256) over the raw body. Every
// secret is tried and each comparison is constant-time; the answer does not depend on
// which secret matched.
func (v *Verifier) Verify(body, header []byte) error {
	var want [sha256.Size]byte
	if len(header) != len(signaturePrefix)+2*sha256.Size || string(header[:len(signaturePrefix)]) != signaturePrefix {
		return ErrSignatureMissing
	}
	if _, err := hex.Decode(want[:], header[len(signaturePrefix):]); err != nil {
		return ErrSignatureMissing
	}
	match := 0
	var sum [sha256.Size]byte
	for _, p := range v.pools {
		h := p.Get().(hash.Hash)
		h.Reset()
		h.Write(body)
		match |= subtle.ConstantTimeCompare(h.Sum(sum[:0]), want[:])
		p.Put(h)
	}
	if match != 1 {
		return ErrSignatureInvalid
	}
	return nil
}

// Sign returns the X-Hub-Signature-256 value Meta would send for body with secret: for
// the fake Graph API, tests and the bench.
func Sign(secret string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write(body)
	return signaturePrefix + hex.EncodeToString(h.Sum(nil))
}
