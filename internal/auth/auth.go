// Package auth verifies tenant JWTs (golang-jwt v5): an algorithm allow-list, keys chosen
// by kid, exp required, iss/aud when configured, and a cache of verified tokens keyed by a
// hash of the whole token so a repeated token skips signature work until it expires.
package auth

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/aerostic/aerogate/internal/jsonguard"
)

// ErrUnauthorized is wrapped by every verification failure. Its message never contains
// the token.
var ErrUnauthorized = errors.New("unauthorized")

// Reasons a token is refused. Each wraps ErrUnauthorized, so callers that only care
// whether a token was accepted test for ErrUnauthorized, and callers that tell the client
// why test for one of these. They are package values, so a refusal allocates nothing.
var (
	ErrTokenMissing        = reason("token missing")
	ErrTokenTooLarge       = reason("token too large")
	ErrTokenMalformed      = reason("token malformed")
	ErrAlgorithmNotAllowed = reason("algorithm not allowed")
	ErrKeyIDMissing        = reason("key id missing")
	ErrUnknownKeyID        = reason("unknown key id")
	ErrKeyMismatch         = reason("key does not match algorithm")
	ErrSignatureInvalid    = reason("signature invalid")
	ErrTokenExpired        = reason("token expired")
	ErrTokenNotValidYet    = reason("token not yet valid")
	ErrTokenIssuedInFuture = reason("token used before issued")
	ErrExpiryMissing       = reason("expiry missing")
	ErrIssuerInvalid       = reason("issuer invalid")
	ErrAudienceInvalid     = reason("audience invalid")
	ErrClaimsInvalid       = reason("claims invalid")
	ErrTenantClaimMissing  = reason("tenant claim missing")
	ErrTenantClaimInvalid  = reason("tenant claim invalid")
	ErrCriticalHeader      = reason("critical header extension not supported")
	ErrDuplicateKey        = reason("token JSON names a key twice")
)

// refusal is a verification failure: a fixed reason that unwraps to ErrUnauthorized.
type refusal struct{ reason string }

func reason(s string) error { return &refusal{reason: s} }

func (r *refusal) Error() string { return "unauthorized: " + r.reason }
func (r *refusal) Unwrap() error { return ErrUnauthorized }

const (
	// DefaultTenantClaim is the claim holding the tenant id when Config.TenantClaim is empty.
	DefaultTenantClaim = "tenantId"
	// DefaultCacheSize is the verified-token cache size when Config.CacheSize is 0.
	DefaultCacheSize = 100_000
	// MaxTokenBytes is the default bound on the tokens Verify looks at (Config.MaxTokenBytes);
	// a tenant JWT is a few hundred bytes.
	MaxTokenBytes = 8 << 10
	// maxTokenJSONDepth bounds the nesting of a token's header and claims.
	maxTokenJSONDepth = 16
	// MaxTenantIDBytes bounds the tenant claim.
	MaxTenantIDBytes = 128
	// MinHMACSecretBytes is the shortest HS256/384/512 secret accepted.
	MinHMACSecretBytes = 32
)

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
	CacheSize   int // verified-token cache entries; default 100,000; negative disables the cache
	// HeaderClaims are claims copied into Claims.Values, rendered for an HTTP header.
	HeaderClaims []string
	// MaxTokenBytes is the largest token looked at; default MaxTokenBytes. The gateway
	// sets it to its header buffer size, so the two limits agree.
	MaxTokenBytes int

	// Now is the clock tokens are checked against; nil means time.Now. Tests move it.
	Now func() time.Time
}

// Claims is what a verified token says.
type Claims struct {
	TenantID  string
	Subject   string
	ExpiresAt time.Time
	// Values holds the Config.HeaderClaims the token has, rendered as header values
	// (see headerValue); nil when none are configured.
	Values map[string]string
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	parser   *jwt.Parser
	maxToken int
	allowed  []string
	hmac     []byte
	keys     map[string]*publicKey
	// only is the key a token without kid uses: set when exactly one public key is loaded.
	only   *publicKey
	claim  string
	cache  *tokenCache
	now    func() time.Time
	keyfn  jwt.Keyfunc
	issuer string
	// headerClaims are the claims copied into Claims.Values.
	headerClaims []string
}

// SupportedAlgorithms are the algorithms a Config may allow; config validates
// jwt.algorithms against this list.
var SupportedAlgorithms = []string{"HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"}

func isHMAC(alg string) bool { return strings.HasPrefix(alg, "HS") }

// NewVerifier validates cfg, loads keys and returns a verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []string{"HS256"}
	}
	var wantHMAC, wantPublic bool
	for _, a := range algs {
		if !slices.Contains(SupportedAlgorithms, a) {
			return nil, fmt.Errorf("auth: algorithm %q not supported (use %s)", a, strings.Join(SupportedAlgorithms, ", "))
		}
		if isHMAC(a) {
			wantHMAC = true
		} else {
			wantPublic = true
		}
	}
	if wantHMAC && len(cfg.HMACSecret) < MinHMACSecretBytes {
		return nil, fmt.Errorf("auth: HMAC secret must be at least %d bytes, got %d", MinHMACSecretBytes, len(cfg.HMACSecret))
	}
	if cfg.Leeway < 0 {
		return nil, errors.New("auth: leeway must not be negative")
	}
	if cfg.MaxTokenBytes < 0 {
		return nil, errors.New("auth: max token bytes must not be negative")
	}
	claim := cfg.TenantClaim
	if claim == "" {
		claim = DefaultTenantClaim
	}

	v := &Verifier{
		maxToken: cmp.Or(cfg.MaxTokenBytes, MaxTokenBytes),
		allowed:  slices.Clone(algs),
		claim:    claim,
		now:      cfg.Now,
		keys:     make(map[string]*publicKey),
		issuer:   cfg.Issuer,
	}
	v.headerClaims = slices.Clone(cfg.HeaderClaims)
	if v.now == nil {
		v.now = time.Now
	}
	if wantHMAC {
		v.hmac = slices.Clone(cfg.HMACSecret)
	}

	var loaded []*publicKey
	for _, spec := range cfg.PublicKeyFiles {
		k, err := loadPEMFile(spec)
		if err != nil {
			return nil, err
		}
		loaded = append(loaded, k)
	}
	if cfg.JWKSFile != "" {
		ks, err := loadJWKSFile(cfg.JWKSFile)
		if err != nil {
			return nil, err
		}
		loaded = append(loaded, ks...)
	}
	if wantPublic && len(loaded) == 0 {
		return nil, errors.New("auth: RS256/ES256/EdDSA allowed but no public key files or JWKS file given")
	}
	if !wantPublic && len(loaded) > 0 {
		return nil, errors.New("auth: public keys given but no RS256/ES256/EdDSA algorithm allowed")
	}
	for _, k := range loaded {
		if _, dup := v.keys[k.kid]; dup {
			return nil, fmt.Errorf("auth: key id %q given twice", k.kid)
		}
		v.keys[k.kid] = k
	}
	if len(loaded) == 1 {
		v.only = loaded[0]
	}

	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	if size > 0 {
		v.cache = newTokenCache(size)
	}

	opts := []jwt.ParserOption{
		// Canonical base64url only: a last character with non-zero unused bits would
		// give every token several spellings (and cache entries) with one signature.
		jwt.WithStrictDecoding(),
		jwt.WithValidMethods(v.allowed),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		// A closure so that a test that swaps v.now moves the parser's clock too.
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	v.keyfn = v.key
	return v, nil
}

// Verify checks a compact JWS token and returns its claims, or an error wrapping
// ErrUnauthorized. The tenant claim must be a non-empty string. Decoding is strict:
// canonical base64url in every segment, header and claims strict JSON (no duplicate
// keys, nesting bounded), and no crit header. So a token has exactly one spelling that
// verifies, and the cache, keyed by a hash of the verified bytes, holds one entry per
// token however many spellings are tried.
func (v *Verifier) Verify(token []byte) (Claims, error) {
	if len(token) == 0 {
		return Claims{}, ErrTokenMissing
	}
	if len(token) > v.maxToken {
		return Claims{}, ErrTokenTooLarge
	}
	var sum [sha256.Size]byte
	if v.cache != nil {
		sum = sha256.Sum256(token)
		if c, ok := v.cache.get(&sum, v.now()); ok {
			return c, nil
		}
	}
	c, err := v.verify(string(token))
	if err != nil {
		return Claims{}, err
	}
	if v.cache != nil {
		v.cache.put(&sum, c, v.now())
	}
	return c, nil
}

func (v *Verifier) verify(token string) (Claims, error) {
	if err := checkJSONSegments(token); err != nil {
		return Claims{}, err
	}
	mc := jwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(token, mc, v.keyfn)
	if err != nil {
		return Claims{}, v.classify(tok, mc, err)
	}
	exp, err := mc.GetExpirationTime()
	if err != nil || exp == nil {
		return Claims{}, ErrExpiryMissing
	}
	tenant, err := tenantClaim(mc, v.claim)
	if err != nil {
		return Claims{}, err
	}
	sub, _ := mc["sub"].(string)
	return Claims{TenantID: tenant, Subject: sub, ExpiresAt: exp.Time, Values: headerValues(mc, v.headerClaims)}, nil
}

// strictSegment is the decoding of a token's segments: unpadded base64url whose last
// character carries no stray bits.
var strictSegment = base64.RawURLEncoding.Strict()

// checkJSONSegments decodes the header and claims of a compact JWS strictly and checks
// their JSON before golang-jwt reads it: encoding/json lets the last of two equal keys
// win, so {"tenantId":"a","tenantId":"b"} would otherwise be read as tenant b by this
// code and perhaps as tenant a by another.
func checkJSONSegments(token string) error {
	header, rest, ok := strings.Cut(token, ".")
	claims, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sig, ".") {
		return ErrTokenMalformed
	}
	var buf []byte
	for _, seg := range [2]string{header, claims} {
		var err error
		buf, err = strictSegment.AppendDecode(buf[:0], []byte(seg))
		if err != nil {
			return ErrTokenMalformed
		}
		switch jsonguard.CheckUnique(buf, maxTokenJSONDepth) {
		case nil:
		case jsonguard.ErrDuplicateKey:
			return ErrDuplicateKey
		default:
			return ErrTokenMalformed
		}
	}
	return nil
}

// tenantClaim takes the tenant id out of the claims: a non-empty string of printable
// characters, so it is safe as a Kafka key, a log field and a SQL parameter.
func tenantClaim(mc jwt.MapClaims, name string) (string, error) {
	raw, ok := mc[name]
	if !ok || raw == nil {
		return "", ErrTenantClaimMissing
	}
	s, ok := raw.(string)
	if !ok {
		return "", ErrTenantClaimInvalid
	}
	if s == "" {
		return "", ErrTenantClaimMissing
	}
	if err := checkTenantID(s); err != nil {
		return "", err
	}
	return s, nil
}

func checkTenantID(s string) error {
	if s == "" {
		return ErrTenantClaimMissing
	}
	if len(s) > MaxTenantIDBytes || !utf8.ValidString(s) {
		return ErrTenantClaimInvalid
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ErrTenantClaimInvalid
		}
	}
	return nil
}

// key picks the verification key for a token whose alg is already on the allow-list.
// golang-jwt calls it before checking the signature.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 §4.1.11: a recipient that does not understand every listed extension
		// must refuse the token, and this one understands none.
		return nil, ErrCriticalHeader
	}
	alg := t.Method.Alg()
	if !slices.Contains(v.allowed, alg) {
		return nil, ErrAlgorithmNotAllowed
	}
	if isHMAC(alg) {
		// Never a public key's bytes: that is the classic RS256 → HS256 swap.
		return v.hmac, nil
	}
	var k *publicKey
	switch kid := t.Header["kid"].(type) {
	case nil:
		if v.only == nil {
			return nil, ErrKeyIDMissing
		}
		k = v.only
	case string:
		k = v.keys[kid]
		if k == nil && v.only != nil && v.only.kid == "" {
			// A single key configured without a kid serves every token.
			k = v.only
		}
		if k == nil {
			return nil, ErrUnknownKeyID
		}
	default:
		return nil, ErrTokenMalformed
	}
	if !k.fits(alg) {
		return nil, ErrKeyMismatch
	}
	return k.key, nil
}

// classify turns a golang-jwt error into one of this package's reasons. The order
// matters when several apply: the first that a client can act on wins.
func (v *Verifier) classify(tok *jwt.Token, mc jwt.MapClaims, err error) error {
	for _, r := range []error{ErrCriticalHeader, ErrAlgorithmNotAllowed, ErrKeyIDMissing, ErrUnknownKeyID, ErrKeyMismatch, ErrTokenMalformed} {
		if errors.Is(err, r) {
			return r
		}
	}
	if tok != nil && tok.Method != nil && !slices.Contains(v.allowed, tok.Method.Alg()) {
		// WithValidMethods refused it; golang-jwt reports that as a bad signature.
		return ErrAlgorithmNotAllowed
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ErrTokenMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// alg missing or unknown to golang-jwt.
		return ErrAlgorithmNotAllowed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ErrSignatureInvalid
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// golang-jwt does not say which claim; exp, iss and aud can be required.
		if exp, _ := mc.GetExpirationTime(); exp == nil {
			return ErrExpiryMissing
		}
		if _, ok := mc["iss"]; !ok && v.issuer != "" {
			return ErrIssuerInvalid
		}
		return ErrAudienceInvalid
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return ErrTokenNotValidYet
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrTokenIssuedInFuture
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ErrIssuerInvalid
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ErrAudienceInvalid
	}
	return ErrClaimsInvalid
}

// IssueHS256 signs a token for tenant that expires after ttl, under claim name
// tenantClaim (default "tenantId"), with iss and aud when non-empty. `aerogate token`
// uses it in dev.
func IssueHS256(secret []byte, tenantClaim, tenantID string, ttl time.Duration, issuer, audience string) (string, error) {
	if len(secret) < MinHMACSecretBytes {
		return "", fmt.Errorf("issuing token: secret must be at least %d bytes", MinHMACSecretBytes)
	}
	if ttl <= 0 {
		return "", errors.New("issuing token: ttl must be positive")
	}
	if err := checkTenantID(tenantID); err != nil {
		return "", fmt.Errorf("issuing token: tenant id must be 1-%d printable bytes", MaxTenantIDBytes)
	}
	if tenantClaim == "" {
		tenantClaim = DefaultTenantClaim
	}
	now := time.Now()
	claims := jwt.MapClaims{
		tenantClaim: tenantID,
		"iat":       now.Unix(),
		"exp":       now.Add(ttl).Unix(),
	}
	if issuer != "" {
		claims["iss"] = issuer
	}
	if audience != "" {
		claims["aud"] = audience
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("issuing token: %w", err)
	}
	return s, nil
}
