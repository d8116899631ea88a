package secret_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/aerostic/aerogate/internal/secret"
)

func spec(t testing.TB, kid string) string {
	t.Helper()
	s, err := secret.GenerateKeySpec(kid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ring(t testing.TB, specs ...string) *secret.KeyRing {
	t.Helper()
	r, err := secret.ParseKeyRing(specs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRoundTrip(t *testing.T) {
	r := ring(t, spec(t, "k1"))
	tests := []struct {
		name  string
		plain []byte
		aad   []byte
	}{
		{"token", []byte("EAAG-some-meta-token"), []byte("aerogate/token/v1\x00t1\x00id")},
		{"empty plaintext", []byte{}, []byte("x")},
		{"no aad", []byte("tok"), nil},
		{"large", bytes.Repeat([]byte("a"), 1<<16), []byte("aad")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, kid, err := r.Encrypt(tt.plain, tt.aad)
			if err != nil {
				t.Fatal(err)
			}
			if kid != "k1" {
				t.Fatalf("key id %q, want k1", kid)
			}
			if len(tt.plain) > 4 && bytes.Contains(ct, tt.plain) {
				t.Fatal("ciphertext contains the plaintext")
			}
			if got, _ := secret.KeyID(ct); got != "k1" {
				t.Fatalf("KeyID = %q", got)
			}
			got, err := r.Decrypt(ct, tt.aad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.plain) {
				t.Fatal("round trip changed the plaintext")
			}
		})
	}
}

func TestNonceIsRandom(t *testing.T) {
	r := ring(t, spec(t, "k1"))
	a, _, _ := r.Encrypt([]byte("same"), []byte("aad"))
	b, _, _ := r.Encrypt([]byte("same"), []byte("aad"))
	if bytes.Equal(a, b) {
		t.Fatal("two encryptions of the same plaintext are equal")
	}
}

func TestWrongAAD(t *testing.T) {
	r := ring(t, spec(t, "k1"))
	ct, _, err := r.Encrypt([]byte("tok"), []byte("aerogate/token/v1\x00tenantA\x00id1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, aad := range []string{"aerogate/token/v1\x00tenantB\x00id1", "aerogate/token/v1\x00tenantA\x00id2", ""} {
		if _, err := r.Decrypt(ct, []byte(aad)); !errors.Is(err, secret.ErrDecrypt) {
			t.Errorf("aad %q: err = %v, want ErrDecrypt", aad, err)
		}
	}
}

func TestRotation(t *testing.T) {
	oldSpec, newSpec := spec(t, "2024"), spec(t, "2025")
	old := ring(t, oldSpec)
	ct, _, err := old.Encrypt([]byte("old-token"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}

	rotated := ring(t, newSpec, oldSpec)
	if rotated.CurrentKeyID() != "2025" {
		t.Fatalf("current key %q, want the first one", rotated.CurrentKeyID())
	}
	got, err := rotated.Decrypt(ct, []byte("aad"))
	if err != nil || string(got) != "old-token" {
		t.Fatalf("old ciphertext after rotation: %q, %v", got, err)
	}
	ct2, kid, err := rotated.Encrypt([]byte("new-token"), []byte("aad"))
	if err != nil || kid != "2025" {
		t.Fatalf("encrypt after rotation: kid %q, %v", kid, err)
	}
	// A ring that dropped the new key cannot read what it sealed.
	if _, err := old.Decrypt(ct2, []byte("aad")); !errors.Is(err, secret.ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
}

func TestSameKidDifferentKey(t *testing.T) {
	a, b := ring(t, spec(t, "k")), ring(t, spec(t, "k"))
	ct, _, _ := a.Encrypt([]byte("tok"), nil)
	if _, err := b.Decrypt(ct, nil); !errors.Is(err, secret.ErrDecrypt) {
		t.Fatalf("err = %v, want ErrDecrypt", err)
	}
}

func TestTampering(t *testing.T) {
	r := ring(t, spec(t, "k1"), spec(t, "k2"))
	ct, _, err := r.Encrypt([]byte("a-token-value"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		if _, err := r.Decrypt(bad, []byte("aad")); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	// Relabelling the ciphertext with the other key id fails too.
	relabelled := bytes.Clone(ct)
	relabelled[2] = '2'
	if _, err := r.Decrypt(relabelled, []byte("aad")); !errors.Is(err, secret.ErrDecrypt) {
		t.Fatalf("relabelled: err = %v, want ErrDecrypt", err)
	}
	for _, n := range []int{0, 1, 3, 3 + 12, 3 + 12 + 15} {
		if _, err := r.Decrypt(ct[:n], []byte("aad")); !errors.Is(err, secret.ErrDecrypt) {
			t.Errorf("truncated to %d: err = %v, want ErrDecrypt", n, err)
		}
	}
	if _, err := r.Decrypt(append(bytes.Clone(ct), 0), []byte("aad")); !errors.Is(err, secret.ErrDecrypt) {
		t.Errorf("extended: err = %v, want ErrDecrypt", err)
	}
}

func TestUnknownKey(t *testing.T) {
	a := ring(t, spec(t, "a"))
	b := ring(t, spec(t, "b"))
	ct, _, _ := a.Encrypt([]byte("tok"), nil)
	_, err := b.Decrypt(ct, nil)
	if !errors.Is(err, secret.ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
}

func TestParseKeyRingErrors(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	short := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 16))
	long := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 33))
	urlKey := base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))
	tests := []struct {
		name    string
		specs   []string
		wantErr string // substring of the error; "" means success
	}{
		{"ok", []string{"k1:" + key}, ""},
		{"ok with spaces", []string{" k1:" + key + " "}, ""},
		{"none", nil, "at least one"},
		{"no colon", []string{"k1" + key}, "kid:base64key"},
		{"empty kid", []string{":" + key}, "empty key id"},
		{"kid with comma", []string{"a,b:" + key}, "key id"},
		{"kid with space", []string{"a b:" + key}, "key id"},
		{"kid too long", []string{strings.Repeat("k", 65) + ":" + key}, "longer"},
		{"not base64", []string{"k1:!!!" + key[3:]}, "base64"},
		{"url base64", []string{"k1:" + urlKey}, "base64"},
		{"short key", []string{"k1:" + short}, "16 bytes"},
		{"long key", []string{"k1:" + long}, "33 bytes"},
		{"empty key", []string{"k1:"}, "0 bytes"},
		{"duplicate", []string{"k1:" + key, "k1:" + key}, "duplicate"},
		{"colon in key part", []string{"k1:" + key + ":x"}, "base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := secret.ParseKeyRing(tt.specs)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if r.CurrentKeyID() != "k1" {
					t.Fatalf("current key %q", r.CurrentKeyID())
				}
				return
			}
			if err == nil {
				t.Fatal("accepted a bad spec")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tt.wantErr)
			}
			for _, s := range tt.specs {
				_, k, _ := strings.Cut(s, ":")
				if len(k) > 8 && strings.Contains(err.Error(), strings.TrimSpace(k)[:8]) {
					t.Fatalf("error %q shows key material", err)
				}
			}
		})
	}
}

func TestGenerateKeySpec(t *testing.T) {
	if _, err := secret.GenerateKeySpec("bad:kid"); err == nil {
		t.Fatal("accepted a kid with ':'")
	}
	a, b := spec(t, "dev"), spec(t, "dev")
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	if !strings.HasPrefix(a, "dev:") {
		t.Fatalf("spec %q lacks the kid", a)
	}
}

func FuzzDecrypt(f *testing.F) {
	r, err := secret.ParseKeyRing([]string{"k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))})
	if err != nil {
		f.Fatal(err)
	}
	ct, _, _ := r.Encrypt([]byte("token"), []byte("aad"))
	f.Add(ct, []byte("aad"))
	f.Add([]byte{}, []byte{})
	f.Add([]byte{2, 'k', '1'}, []byte("aad"))
	f.Add([]byte{255}, []byte(nil))
	f.Fuzz(func(t *testing.T, ct, aad []byte) {
		plain, err := r.Decrypt(ct, aad)
		if err == nil && (string(plain) != "token" || string(aad) != "aad") {
			t.Fatalf("forged ciphertext decrypted to %q", plain)
		}
		if err != nil && !errors.Is(err, secret.ErrDecrypt) && !errors.Is(err, secret.ErrUnknownKey) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

func FuzzParseKeyRing(f *testing.F) {
	f.Add("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)))
	f.Add(":")
	f.Add("k1:AAAA")
	f.Add("k:" + strings.Repeat("A", 44))
	f.Fuzz(func(t *testing.T, s string) {
		r, err := secret.ParseKeyRing([]string{s})
		if err != nil {
			kid, k, _ := strings.Cut(strings.TrimSpace(s), ":")
			// The key id is printed on purpose; the key must not be.
			if len(k) >= 16 && !strings.Contains(kid, k) && strings.Contains(err.Error(), k) {
				t.Fatalf("error %q shows the key", err)
			}
			return
		}
		ct, _, err := r.Encrypt([]byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := r.Decrypt(ct, nil); err != nil || string(p) != "x" {
			t.Fatalf("round trip: %q %v", p, err)
		}
	})
}
