package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

// TestAccountsRotateKeys: tokens written by `aerogate accounts add` under k1 are read
// with only k2 configured after `aerogate accounts rotate-keys` ran with k2,k1.
func TestAccountsRotateKeys(t *testing.T) {
	dbURL, pool := storetest.New(t)
	k1, _ := secret.GenerateKeySpec("k1")
	k2, _ := secret.GenerateKeySpec("k2")
	t.Setenv("AEROGATE_DATABASE_URL", dbURL)
	t.Setenv("AEROGATE_DEV_DATA_DIR", t.TempDir()) // no dev keys to fall back on
	t.Setenv("AEROGATE_JWT_SECRET", "")
	cli := func(keys string, args ...string) string {
		t.Helper()
		t.Setenv("AEROGATE_SECRETS_TOKEN_KEYS", keys)
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("aerogate %s = %d\n%s", strings.Join(args, " "), code, stderr.String())
		}
		return stdout.String()
	}
	tokens := map[string]string{"106540352242922": "EAAG-token-one-k1", "106540352242923": "EAAG-token-two-k1"}
	for number, tok := range tokens {
		t.Setenv("AEROGATE_ACCESS_TOKEN", tok)
		cli(k1, "accounts", "add", "--tenant", "acme", "--waba-id", "102290129340398", "--phone-number-id", number)
	}

	out := cli(k2+","+k1, "accounts", "rotate-keys")
	if want := "key k2: 2 accounts, 2 tokens and 0 PINs re-encrypted, 0 already under it"; strings.TrimSpace(out) != want {
		t.Fatalf("rotate-keys printed %q, want %q", out, want)
	}
	for _, tok := range tokens {
		if strings.Contains(out, tok) {
			t.Fatal("rotate-keys printed a token")
		}
	}

	only2, err := secret.ParseKeyRing([]string{k2})
	if err != nil {
		t.Fatal(err)
	}
	repo := account.NewRepository(pool, only2)
	for number, tok := range tokens {
		a, err := repo.Get(context.Background(), "acme", number)
		if err != nil || a.AccessToken.Reveal() != tok {
			t.Fatalf("account %s with only k2 configured: %v", number, err)
		}
	}
	if listed := cli(k2, "accounts", "list", "--tenant", "acme"); strings.Count(listed, "acme") != 2 {
		t.Fatalf("accounts list with only k2:\n%s", listed)
	}
}
