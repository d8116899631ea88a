package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
)

// minRSABits is the smallest RSA modulus accepted for RS256.
const minRSABits = 2048

// maxKeyFileBytes bounds a PEM or JWKS file; real ones are a few KiB.
const maxKeyFileBytes = 1 << 20

// publicKey is a verification key for RS256, ES256 or EdDSA.
type publicKey struct {
	kid string
	// alg, when the JWK named one, is the only algorithm this key verifies.
	alg string
	key any // *rsa.PublicKey, *ecdsa.PublicKey (P-256) or ed25519.PublicKey
}

// fits reports whether k may verify a token signed with alg, so that a key of one
// kind is never handed to another algorithm's verifier.
func (k *publicKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		return alg == "RS256"
	case *ecdsa.PublicKey:
		return alg == "ES256" && key.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFileBytes)
	}
	return b, nil
}

// loadPEMFile loads a "kid=path" (or bare path) PEM public key.
func loadPEMFile(spec string) (*publicKey, error) {
	kid, path := "", spec
	if i := strings.IndexByte(spec, '='); i >= 0 {
		kid, path = spec[:i], spec[i+1:]
	}
	if path == "" {
		return nil, fmt.Errorf("auth: public key spec %q has no path", spec)
	}
	b, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: reading public key %s: %w", path, err)
	}
	key, err := parsePEMPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("auth: public key %s: %w", path, err)
	}
	return &publicKey{kid: kid, key: key}, nil
}

// parsePEMPublicKey accepts a PKIX "PUBLIC KEY", a PKCS#1 "RSA PUBLIC KEY" or a
// "CERTIFICATE" block holding an RSA, P-256 or Ed25519 key.
func parsePEMPublicKey(b []byte) (any, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return nil, errors.New("is a private key; give the public key")
		}
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
	}
	return checkKey(key)
}

func checkKey(key any) (any, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits is shorter than %d", k.N.BitLen(), minRSABits)
		}
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("EC curve %s not supported (ES256 needs P-256)", k.Curve.Params().Name)
		}
		return k, nil
	case ed25519.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("key type %T not supported", key)
}

// jwk is the subset of RFC 7517/7518/8037 members this package reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

func loadJWKSFile(path string) ([]*publicKey, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: reading JWKS %s: %w", path, err)
	}
	keys, err := parseJWKS(b)
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS %s: %w", path, err)
	}
	return keys, nil
}

// parseJWKS reads the signature keys of a JWK Set: RSA, EC P-256 and OKP Ed25519.
// Keys for encryption or for algorithms this package does not verify are skipped;
// a malformed key of a supported kind is an error, as is private key material.
func parseJWKS(b []byte) ([]*publicKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, errors.New("not a JSON object with a keys array")
	}
	if set.Keys == nil {
		return nil, errors.New("no keys array")
	}
	var out []*publicKey
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		key, err := k.publicKey()
		if errors.Is(err, errSkipKey) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
		}
		out = append(out, &publicKey{kid: k.Kid, alg: k.Alg, key: key})
	}
	if len(out) == 0 {
		return nil, errors.New("no RSA, EC P-256 or Ed25519 signature keys")
	}
	return out, nil
}

var errSkipKey = errors.New("key not for this verifier")

func (k *jwk) publicKey() (any, error) {
	if k.D != "" {
		return nil, errors.New("holds private key material; give public keys only")
	}
	switch k.Kty {
	case "RSA":
		if k.Alg != "" && k.Alg != "RS256" {
			return nil, errSkipKey
		}
		n, err := b64(k.N)
		if err != nil || len(n) == 0 {
			return nil, errors.New("bad modulus n")
		}
		e, err := b64(k.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad exponent e")
		}
		ei := int(new(big.Int).SetBytes(e).Int64())
		if ei < 3 || ei%2 == 0 {
			return nil, errors.New("bad exponent e")
		}
		return checkKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ei})
	case "EC":
		if k.Crv != "P-256" || (k.Alg != "" && k.Alg != "ES256") {
			return nil, errSkipKey
		}
		x, errX := b64(k.X)
		y, errY := b64(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return nil, errors.New("bad P-256 coordinates")
		}
		pt := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
		if err != nil {
			return nil, errors.New("point is not on P-256")
		}
		return pub, nil
	case "OKP":
		if k.Crv != "Ed25519" || (k.Alg != "" && k.Alg != "EdDSA") {
			return nil, errSkipKey
		}
		x, err := b64(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key x")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, errSkipKey
}

// b64 decodes base64url, tolerating the padding some JWKS writers leave in.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
