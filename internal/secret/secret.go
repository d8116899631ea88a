// Package secret encrypts tenant access tokens at rest with AES-256-GCM under a key ring
// whose first key encrypts and every key decrypts, so keys can be rotated.
package secret

import "errors"

var (
	// ErrUnknownKey means a ciphertext names a key id the ring does not hold.
	ErrUnknownKey = errors.New("secret: unknown key id")
	// ErrDecrypt means a ciphertext failed authentication (wrong key, wrong
	// additional data, or tampering).
	ErrDecrypt = errors.New("secret: decryption failed")
)

// KeyRing holds the token keys. The zero value is unusable; build one with ParseKeyRing.
type KeyRing struct{}

// ParseKeyRing parses "kid:base64(32 bytes)" specs; the first one encrypts.
func ParseKeyRing(specs []string) (*KeyRing, error) { panic("unimplemented") }

// GenerateKeySpec returns a new random "kid:base64key" spec.
func GenerateKeySpec(kid string) (string, error) { panic("unimplemented") }

// Encrypt seals plaintext under the current key, binding it to aad. It returns the
// ciphertext (key id prefix, random nonce, sealed data) and the key id used.
func (k *KeyRing) Encrypt(plaintext, aad []byte) (ciphertext []byte, keyID string, err error) {
	panic("unimplemented")
}

// Decrypt opens a ciphertext made by Encrypt with the same aad.
func (k *KeyRing) Decrypt(ciphertext, aad []byte) ([]byte, error) { panic("unimplemented") }
