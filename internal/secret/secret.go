// Package secret encrypts tenant access tokens at rest with AES-256-GCM under a key ring
// whose first key encrypts and every key decrypts, so keys can be rotated.
//
// A ciphertext is laid out as
//
//	kidlen (1 byte) | kid | nonce (12 random bytes) | AES-GCM sealed data and tag
//
// and the header (kidlen and kid) is authenticated together with the caller's additional
// data, so neither the key id nor the row a ciphertext is bound to can be changed.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrUnknownKey means a ciphertext names a key id the ring does not hold.
	ErrUnknownKey = errors.New("secret: unknown key id")
	// ErrDecrypt means a ciphertext failed authentication (wrong key, wrong
	// additional data, or tampering).
	ErrDecrypt = errors.New("secret: decryption failed")
)

const (
	// KeySize is the size of an AES-256 key.
	KeySize = 32
	// MaxKeyIDLen bounds a key id so it fits the one-byte length prefix with room to spare.
	MaxKeyIDLen = 64

	nonceSize = 12
	tagSize   = 16
)

type key struct {
	id   string
	aead cipher.AEAD
}

// KeyRing holds the token keys. The zero value is unusable; build one with ParseKeyRing.
// A KeyRing is safe for concurrent use.
type KeyRing struct {
	current *key
	byID    map[string]*key
}

// ParseKeyRing parses "kid:base64(32 bytes)" specs; the first one encrypts.
// Surrounding spaces are ignored. Errors name the spec's position and key id, never the key.
func ParseKeyRing(specs []string) (*KeyRing, error) {
	if len(specs) == 0 {
		return nil, errors.New("no token keys: want at least one kid:base64key")
	}
	ring := &KeyRing{byID: make(map[string]*key, len(specs))}
	for i, spec := range specs {
		kid, b64, ok := strings.Cut(strings.TrimSpace(spec), ":")
		if !ok {
			return nil, fmt.Errorf("token key #%d: want kid:base64key", i+1)
		}
		if err := validKeyID(kid); err != nil {
			return nil, fmt.Errorf("token key #%d: %w", i+1, err)
		}
		if _, dup := ring.byID[kid]; dup {
			return nil, fmt.Errorf("token key #%d: duplicate key id %q", i+1, kid)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			// base64's error is dropped: it is harmless, but nothing about the key
			// should reach a log line.
			return nil, fmt.Errorf("token key %q: key is not valid standard base64", kid)
		}
		if len(raw) != KeySize {
			return nil, fmt.Errorf("token key %q: key is %d bytes, want %d", kid, len(raw), KeySize)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("token key %q: %w", kid, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("token key %q: %w", kid, err)
		}
		k := &key{id: kid, aead: aead}
		ring.byID[kid] = k
		if ring.current == nil {
			ring.current = k
		}
	}
	return ring, nil
}

func validKeyID(kid string) error {
	if kid == "" {
		return errors.New("empty key id")
	}
	if len(kid) > MaxKeyIDLen {
		return fmt.Errorf("key id longer than %d bytes", MaxKeyIDLen)
	}
	for _, c := range []byte(kid) {
		// Printable ASCII without space, ':' (the spec separator) or ',' (the list
		// separator in the environment).
		if c <= ' ' || c >= 0x7f || c == ':' || c == ',' {
			return fmt.Errorf("key id %q: use letters, digits and punctuation other than ':' and ','", kid)
		}
	}
	return nil
}

// GenerateKeySpec returns a new random "kid:base64key" spec.
func GenerateKeySpec(kid string) (string, error) {
	if err := validKeyID(kid); err != nil {
		return "", err
	}
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generating key: %w", err)
	}
	return kid + ":" + base64.StdEncoding.EncodeToString(raw), nil
}

// CurrentKeyID is the id of the key that Encrypt uses.
func (k *KeyRing) CurrentKeyID() string { return k.current.id }

// HasKey reports whether the ring holds the key id.
func (k *KeyRing) HasKey(kid string) bool { _, ok := k.byID[kid]; return ok }

// Encrypt seals plaintext under the current key, binding it to aad. It returns the
// ciphertext (key id prefix, random nonce, sealed data) and the key id used.
func (k *KeyRing) Encrypt(plaintext, aad []byte) (ciphertext []byte, keyID string, err error) {
	if k == nil || k.current == nil {
		return nil, "", errors.New("secret: empty key ring")
	}
	cur := k.current
	hdr := 1 + len(cur.id)
	out := make([]byte, hdr+nonceSize, hdr+nonceSize+len(plaintext)+tagSize)
	out[0] = byte(len(cur.id))
	copy(out[1:], cur.id)
	nonce := out[hdr : hdr+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, "", fmt.Errorf("secret: reading nonce: %w", err)
	}
	out = cur.aead.Seal(out, nonce, plaintext, additionalData(out[:hdr], aad))
	return out, cur.id, nil
}

// Decrypt opens a ciphertext made by Encrypt with the same aad. It returns an error
// wrapping ErrUnknownKey or ErrDecrypt; it never panics on malformed input.
func (k *KeyRing) Decrypt(ciphertext, aad []byte) ([]byte, error) {
	kid, nonce, sealed, err := split(ciphertext)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return nil, ErrUnknownKey
	}
	key, ok := k.byID[kid]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
	}
	hdr := ciphertext[:1+len(kid)]
	plain, err := key.aead.Open(nil, nonce, sealed, additionalData(hdr, aad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}

// KeyID returns the key id a ciphertext names, without decrypting it.
func KeyID(ciphertext []byte) (string, error) {
	kid, _, _, err := split(ciphertext)
	return kid, err
}

func split(ct []byte) (kid string, nonce, sealed []byte, err error) {
	if len(ct) < 1 {
		return "", nil, nil, fmt.Errorf("%w: empty ciphertext", ErrDecrypt)
	}
	n := int(ct[0])
	if n == 0 || len(ct) < 1+n+nonceSize+tagSize {
		return "", nil, nil, fmt.Errorf("%w: malformed ciphertext", ErrDecrypt)
	}
	kid = string(ct[1 : 1+n])
	nonce = ct[1+n : 1+n+nonceSize]
	sealed = ct[1+n+nonceSize:]
	return kid, nonce, sealed, nil
}

// additionalData authenticates the header together with the caller's data. The header
// is self-delimiting (its first byte is its length), so the concatenation is unambiguous.
func additionalData(hdr, aad []byte) []byte {
	ad := make([]byte, 0, len(hdr)+len(aad))
	ad = append(ad, hdr...)
	return append(ad, aad...)
}
