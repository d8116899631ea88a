package account_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/account"
)

// TestOpenLiveFollowsChanges: a token refreshed through another repository (another
// process) reaches a Live resolver without waiting for the TTL, and Close stops it.
func TestOpenLiveFollowsChanges(t *testing.T) {
	e := newEnv(t)
	e.upsert(t, account.UpsertInput{TenantID: "acme", PhoneNumberID: "5550001", AccessToken: "old-token"})

	live, err := account.OpenLive(e.pool, e.keys, e.url, account.ResolverOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	eventually(t, 5*time.Second, "listening", func() error {
		if !live.Resolver.Listening() {
			return fmt.Errorf("not listening")
		}
		return nil
	})
	if tok, err := resolveToken(live.Resolver, "acme", "5550001"); err != nil || tok != "old-token" {
		t.Fatalf("first resolve = %q, %v", tok, err)
	}

	other := account.NewRepository(e.pool, e.keys)
	if _, err := other.Upsert(context.Background(), account.UpsertInput{TenantID: "acme", WABAID: "2003", PhoneNumberID: "5550001", AccessToken: "new-token"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "refreshed token", func() error {
		tok, err := resolveToken(live.Resolver, "acme", "5550001")
		if err != nil {
			return err
		}
		if tok != "new-token" {
			return fmt.Errorf("still %q", tok)
		}
		return nil
	})
}

// Watch wakes whoever waits on an account (the sender's queue of a stopped account) when
// a change notification names it, and not for another account's change.
func TestWatchWakesOnTheAccountsChange(t *testing.T) {
	e := newEnv(t)
	e.upsert(t, account.UpsertInput{TenantID: "acme", PhoneNumberID: "5550011", AccessToken: "old-token"})
	e.upsert(t, account.UpsertInput{TenantID: "zeta", PhoneNumberID: "5550012", AccessToken: "zeta-token"})
	live, err := account.OpenLive(e.pool, e.keys, e.url, account.ResolverOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	eventually(t, 5*time.Second, "listening", func() error {
		if !live.Resolver.Listening() {
			return fmt.Errorf("not listening")
		}
		return nil
	})
	changed := live.Resolver.Watch("acme", "5550011")
	if live.Resolver.Watch("acme", "5550011") != changed {
		t.Error("two watchers of one account got different channels")
	}
	other := account.NewRepository(e.pool, e.keys)
	if _, err := other.Upsert(context.Background(), account.UpsertInput{TenantID: "zeta", WABAID: "102290129340399", PhoneNumberID: "5550012", AccessToken: "zeta-new"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
		t.Fatal("another account's change woke the watcher")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := other.Upsert(context.Background(), account.UpsertInput{TenantID: "acme", WABAID: "102290129340398", PhoneNumberID: "5550011", AccessToken: "new-token"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the account's change did not wake its watcher")
	}
	if next := live.Resolver.Watch("acme", "5550011"); next == changed {
		t.Error("a fired watch is handed out again")
	}
}
