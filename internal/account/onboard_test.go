package account_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/account"
)

func TestDisconnectAndReconnect(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.upsert(t, account.UpsertInput{TenantID: "acme", WABAID: "2000", PhoneNumberID: "1", AccessToken: "tok-1", IsDefault: true})

	if _, err := e.repo.Disconnect(ctx, "globex", "1"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("another tenant's disconnect: %v", err)
	}
	s, err := e.repo.Disconnect(ctx, "acme", "1")
	if err != nil || s.TokenStatus != account.StatusDisconnected || s.TokenExpiresAt != nil || !s.IsDefault {
		t.Fatalf("Disconnect = %+v, %v", s, err)
	}
	var ct []byte
	if err := e.pool.QueryRow(ctx, `SELECT access_token FROM whatsapp_accounts WHERE id = $1`, a.ID).Scan(&ct); err != nil || len(ct) != 0 {
		t.Fatalf("token after disconnect: %d bytes, %v", len(ct), err)
	}
	// Loading it needs no key and gives no token; it cannot send.
	got, err := e.repo.Get(ctx, "acme", "1")
	if err != nil || got.AccessToken != "" || !errors.Is(got.Usable(time.Now()), account.ErrDisconnected) {
		t.Fatalf("Get after disconnect = %+v, %v", got, err)
	}
	// A late 190 from a sender does not turn it into an invalid account without a token.
	if err := e.repo.SetTokenStatus(ctx, a.ID, account.StatusInvalid, "late"); !errors.Is(err, account.ErrDisconnected) {
		t.Fatalf("SetTokenStatus on a disconnected account: %v", err)
	}
	// Disconnecting twice changes nothing.
	if s2, err := e.repo.Disconnect(ctx, "acme", "1"); err != nil || !s2.UpdatedAt.Equal(s.UpdatedAt) {
		t.Fatalf("second Disconnect = %+v, %v", s2, err)
	}
	// Connecting again brings a token and status active back.
	e.upsert(t, account.UpsertInput{TenantID: "acme", WABAID: "2000", PhoneNumberID: "1", AccessToken: "tok-2"})
	if got, err := e.repo.Get(ctx, "acme", "1"); err != nil || got.AccessToken.Reveal() != "tok-2" || got.Usable(time.Now()) != nil {
		t.Fatalf("after reconnecting: %+v, %v", got, err)
	}
}
