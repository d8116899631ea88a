package account_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/secret"
)

// TestRotateKeys: tokens and PINs written under k1 are re-encrypted with k2 by
// RotateKeys run with k2,k1, and are then read with only k2 configured; a second run
// changes nothing; a disconnected account (no token) is left alone.
func TestRotateKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k1, _ := secret.GenerateKeySpec("k1")
	k2, _ := secret.GenerateKeySpec("k2")
	only1, _ := secret.ParseKeyRing([]string{k1})
	both, _ := secret.ParseKeyRing([]string{k2, k1})
	only2, _ := secret.ParseKeyRing([]string{k2})

	old := account.NewRepository(e.pool, only1)
	const n = 7 // more than one account, fewer than a batch: the batch edge is below
	for i := range n {
		if _, err := old.Upsert(ctx, account.UpsertInput{TenantID: fmt.Sprintf("t%d", i%3), WABAID: "100",
			PhoneNumberID: fmt.Sprintf("20%d", i), AccessToken: fmt.Sprintf("tok-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A PIN, as Embedded Signup stores it.
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		_, err := old.ConnectTx(ctx, tx, []account.Connection{{UpsertInput: account.UpsertInput{TenantID: "t0",
			WABAID: "100", PhoneNumberID: "200", AccessToken: "tok-0"}, RegistrationPIN: "123456"}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Disconnect(ctx, "t1", "201"); err != nil {
		t.Fatal(err)
	}
	if _, err := account.NewRepository(e.pool, only2).Get(ctx, "t0", "200"); !errors.Is(err, secret.ErrUnknownKey) {
		t.Fatalf("before rotation, k2 alone read a k1 token: %v", err)
	}

	got, err := account.NewRepository(e.pool, both).RotateKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := account.Rotation{KeyID: "k2", Accounts: n, Tokens: n - 1, PINs: 1, Unchanged: 1}
	if got != want {
		t.Fatalf("RotateKeys = %+v, want %+v", got, want)
	}

	repo := account.NewRepository(e.pool, only2)
	for i := range n {
		if i == 1 {
			continue // disconnected
		}
		a, err := repo.Get(ctx, fmt.Sprintf("t%d", i%3), fmt.Sprintf("20%d", i))
		if err != nil || a.AccessToken.Reveal() != fmt.Sprintf("tok-%d", i) {
			t.Fatalf("account 20%d with only k2: %v", i, err)
		}
	}
	if pin, err := repo.RegistrationPIN(ctx, "t0", "200"); err != nil || pin != "123456" {
		t.Fatalf("registration pin with only k2: %q, %v", pin, err)
	}
	var stale int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_accounts WHERE token_key_id NOT IN ('k2', '')`).Scan(&stale); err != nil || stale != 0 {
		t.Fatalf("%d rows still name another key id (%v)", stale, err)
	}
	if checks, err := repo.CheckTokenKeys(ctx); err != nil {
		t.Fatal(err)
	} else {
		for _, c := range checks {
			if c.Err != nil {
				t.Fatalf("token_keys readiness with only k2 fails for key id %q: %v", c.KeyID, c.Err)
			}
		}
	}

	again, err := account.NewRepository(e.pool, both).RotateKeys(ctx)
	if err != nil || again.Tokens != 0 || again.PINs != 0 || again.Unchanged != n {
		t.Fatalf("second RotateKeys = %+v, %v; want nothing changed", again, err)
	}

	// A ciphertext no configured key opens stops the rotation and names the account.
	if _, err := account.NewRepository(e.pool, newKeys(t, "k3")).RotateKeys(ctx); !errors.Is(err, secret.ErrUnknownKey) {
		t.Fatalf("RotateKeys without the stored tokens' key: %v, want ErrUnknownKey", err)
	}
}
