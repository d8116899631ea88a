package account_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

type env struct {
	url  string
	pool *pgxpool.Pool
	keys *secret.KeyRing
	repo *account.Repository
}

func newKeys(t testing.TB, kids ...string) *secret.KeyRing {
	t.Helper()
	var specs []string
	for _, kid := range kids {
		s, err := secret.GenerateKeySpec(kid)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s)
	}
	k, err := secret.ParseKeyRing(specs)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEnv(t testing.TB) *env {
	t.Helper()
	url, pool := storetest.New(t)
	keys := newKeys(t, "k1")
	return &env{url: url, pool: pool, keys: keys, repo: account.NewRepository(pool, keys)}
}

func (e *env) upsert(t testing.TB, in account.UpsertInput) *account.Account {
	t.Helper()
	if in.WABAID == "" {
		in.WABAID = "102290129340398"
	}
	a, err := e.repo.Upsert(context.Background(), in)
	if err != nil {
		t.Fatalf("upsert %s/%s: %v", in.TenantID, in.PhoneNumberID, err)
	}
	return a
}

func TestUpsertGetListRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	exp := time.Now().Add(60 * 24 * time.Hour).UTC().Truncate(time.Microsecond)

	a1 := e.upsert(t, account.UpsertInput{TenantID: "t1", WABAID: "2001", PhoneNumberID: "1002",
		DisplayPhoneNumber: "+1 555 0102", AccessToken: "EAAtoken-one", TokenExpiresAt: &exp})
	a2 := e.upsert(t, account.UpsertInput{TenantID: "t1", WABAID: "2001", PhoneNumberID: "1001",
		AccessToken: "EAAtoken-two", ThroughputMPS: 250})
	e.upsert(t, account.UpsertInput{TenantID: "t2", PhoneNumberID: "2001", AccessToken: "EAAtoken-three"})

	if a1.ID == "" || a1.ID == a2.ID {
		t.Fatalf("account ids %q and %q", a1.ID, a2.ID)
	}
	if !a1.IsDefault || a2.IsDefault {
		t.Fatalf("defaults: first %v, second %v; want only the first", a1.IsDefault, a2.IsDefault)
	}
	if a1.AccessToken.Reveal() != "EAAtoken-one" {
		t.Fatal("Upsert did not return the token")
	}

	got, err := e.repo.Get(ctx, "t1", "1002")
	if err != nil {
		t.Fatal(err)
	}
	want := account.Account{ID: a1.ID, TenantID: "t1", WABAID: "2001", PhoneNumberID: "1002",
		DisplayPhoneNumber: "+1 555 0102", AccessToken: "EAAtoken-one", TokenStatus: account.StatusActive,
		IsDefault: true, ThroughputMPS: int(whatsapp.DefaultThroughput)}
	if got.ID != want.ID || got.TenantID != want.TenantID || got.WABAID != want.WABAID ||
		got.PhoneNumberID != want.PhoneNumberID || got.DisplayPhoneNumber != want.DisplayPhoneNumber ||
		got.AccessToken.Reveal() != want.AccessToken.Reveal() || got.TokenStatus != want.TokenStatus ||
		got.IsDefault != want.IsDefault || got.ThroughputMPS != want.ThroughputMPS {
		t.Fatalf("Get = %+v\nwant %+v", *got, want)
	}
	if got.TokenExpiresAt == nil || !got.TokenExpiresAt.Equal(exp) {
		t.Fatalf("expiry %v, want %v", got.TokenExpiresAt, exp)
	}
	if got.CreatedAt.IsZero() || got.UpdatedAt.IsZero() {
		t.Fatal("timestamps not set")
	}

	def, err := e.repo.Get(ctx, "t1", "")
	if err != nil {
		t.Fatal(err)
	}
	if def.ID != a1.ID {
		t.Fatalf("default is %s, want the first account %s", def.PhoneNumberID, a1.PhoneNumberID)
	}
	g2, err := e.repo.Get(ctx, "t1", "1001")
	if err != nil || g2.ThroughputMPS != 250 || g2.TokenExpiresAt != nil || g2.AccessToken.Reveal() != "EAAtoken-two" {
		t.Fatalf("second account: %+v, %v", g2, err)
	}

	list, err := e.repo.List(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].PhoneNumberID != "1001" || list[1].PhoneNumberID != "1002" {
		t.Fatalf("list = %+v", list)
	}
	for _, a := range list {
		if a.AccessToken != "" {
			t.Fatalf("List exposed a token for %s", a.PhoneNumberID)
		}
		if a.TenantID != "t1" {
			t.Fatalf("List of t1 returned tenant %s", a.TenantID)
		}
	}
	if l, err := e.repo.List(ctx, "nobody"); err != nil || len(l) != 0 {
		t.Fatalf("List of unknown tenant = %v, %v", l, err)
	}
}

func TestUpsertDefaults(t *testing.T) {
	t.Parallel()
	type step struct {
		pnid      string
		isDefault bool
	}
	tests := []struct {
		name        string
		steps       []step
		wantDefault string
	}{
		{"first becomes default", []step{{"1", false}}, "1"},
		{"second stays non-default", []step{{"1", false}, {"2", false}}, "1"},
		{"explicit default moves it", []step{{"1", false}, {"2", true}}, "2"},
		{"re-upsert keeps default", []step{{"1", false}, {"2", true}, {"2", false}}, "2"},
		{"re-upsert of old default does not take it back", []step{{"1", false}, {"2", true}, {"1", false}}, "2"},
		{"default moves back", []step{{"1", false}, {"2", true}, {"1", true}}, "1"},
	}
	e := newEnv(t)
	ctx := context.Background()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant := fmt.Sprintf("tenant-%d", i)
			prefix := fmt.Sprintf("4%02d0", i) // phone number ids are digits
			for _, s := range tt.steps {
				e.upsert(t, account.UpsertInput{TenantID: tenant, PhoneNumberID: prefix + s.pnid,
					AccessToken: "tok", IsDefault: s.isDefault})
			}
			list, err := e.repo.List(ctx, tenant)
			if err != nil {
				t.Fatal(err)
			}
			var defaults []string
			for _, a := range list {
				if a.IsDefault {
					defaults = append(defaults, strings.TrimPrefix(a.PhoneNumberID, prefix))
				}
			}
			if len(defaults) != 1 || defaults[0] != tt.wantDefault {
				t.Fatalf("defaults %v, want [%s]", defaults, tt.wantDefault)
			}
			def, err := e.repo.Get(ctx, tenant, "")
			if err != nil || def.PhoneNumberID != prefix+tt.wantDefault {
				t.Fatalf("Get default = %v, %v", def, err)
			}
		})
	}
}

func TestUpsertNewTokenResetsState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", DisplayPhoneNumber: "+1 555",
		AccessToken: "old", ThroughputMPS: 300})
	if err := e.repo.SetTokenStatus(ctx, a.ID, account.StatusInvalid, "Graph error 190"); err != nil {
		t.Fatal(err)
	}
	if err := e.repo.Pause(ctx, a.ID, time.Now().Add(time.Hour), "spam restriction"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE whatsapp_accounts SET refresh_attempts = 3, next_refresh_at = now() WHERE id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	before, err := e.repo.Get(ctx, "t1", "1001")
	if err != nil {
		t.Fatal(err)
	}
	if before.TokenStatus != account.StatusInvalid || before.LastRefreshError != "Graph error 190" ||
		before.PausedUntil == nil || before.PausedReason != "spam restriction" || before.RefreshAttempts != 3 {
		t.Fatalf("status and pause not stored: %+v", before)
	}

	e.upsert(t, account.UpsertInput{TenantID: "t1", WABAID: "2002", PhoneNumberID: "1001", AccessToken: "new"})
	after, err := e.repo.Get(ctx, "t1", "1001")
	if err != nil {
		t.Fatal(err)
	}
	if after.ID != a.ID {
		t.Fatalf("upsert changed the account id from %s to %s", a.ID, after.ID)
	}
	if after.AccessToken.Reveal() != "new" || after.TokenStatus != account.StatusActive ||
		after.RefreshAttempts != 0 || after.LastRefreshError != "" || after.PausedUntil != nil ||
		after.PausedReason != "" || after.NextRefreshAt != nil {
		t.Fatalf("new token did not reset the token state: %+v", after)
	}
	if after.WABAID != "2002" {
		t.Fatalf("waba id %q, want w2", after.WABAID)
	}
	if after.ThroughputMPS != 300 || after.DisplayPhoneNumber != "+1 555" {
		t.Fatalf("zero-valued inputs overwrote: mps %d, display %q", after.ThroughputMPS, after.DisplayPhoneNumber)
	}
	if err := after.Usable(time.Now()); err != nil {
		t.Fatalf("refreshed account not usable: %v", err)
	}
}

func TestPhoneNumberTaken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "t1-token"})
	_, err := e.repo.Upsert(ctx, account.UpsertInput{TenantID: "t2", WABAID: "2000", PhoneNumberID: "1001", AccessToken: "t2-token"})
	if !errors.Is(err, account.ErrPhoneNumberTaken) {
		t.Fatalf("err = %v, want ErrPhoneNumberTaken", err)
	}
	got, err := e.repo.Get(ctx, "t1", "1001")
	if err != nil || got.AccessToken.Reveal() != "t1-token" || got.TenantID != "t1" {
		t.Fatalf("owner's account changed: %+v, %v", got, err)
	}
	if l, _ := e.repo.List(ctx, "t2"); len(l) != 0 {
		t.Fatalf("t2 got %d accounts", len(l))
	}
}

func TestConcurrentUpserts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const n = 8

	// Many numbers of one tenant at once: exactly one default.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.repo.Upsert(ctx, account.UpsertInput{TenantID: "t1", WABAID: "2000",
				PhoneNumberID: fmt.Sprintf("30%02d", i), AccessToken: "tok"})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var defaults int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM whatsapp_accounts WHERE tenant_id = 't1' AND is_default`).Scan(&defaults); err != nil {
		t.Fatal(err)
	}
	if defaults != 1 {
		t.Fatalf("%d defaults, want 1", defaults)
	}

	// One number claimed by many tenants at once: exactly one wins.
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.repo.Upsert(ctx, account.UpsertInput{TenantID: fmt.Sprintf("tenant-%d", i), WABAID: "2000",
				PhoneNumberID: "1999", AccessToken: "tok"})
		})
	}
	wg.Wait()
	var ok int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, account.ErrPhoneNumberTaken):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d tenants got the number, want 1", ok)
	}
}

func TestCrossTenantGetIsNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok"})
	tests := []struct{ tenant, pnid string }{
		{"t2", "1001"},
		{"t2", ""},
		{"t1", "1002"},
		{"T1", "1001"},
		{"t1\x00", "1001"},
		{"t1", "p1\x00"},
	}
	for _, tt := range tests {
		if a, err := e.repo.Get(ctx, tt.tenant, tt.pnid); !errors.Is(err, account.ErrNotFound) {
			t.Errorf("Get(%q, %q) = %v, %v; want ErrNotFound", tt.tenant, tt.pnid, a, err)
		}
	}
}

func TestTokenNotStoredInClear(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const token = "EAAGsecretTOKENvalue1234567890"
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: token})

	for _, q := range []string{
		`SELECT access_token::text FROM whatsapp_accounts`,
		`SELECT encode(access_token, 'escape') FROM whatsapp_accounts`,
		`SELECT row_to_json(w)::text FROM whatsapp_accounts w`,
	} {
		var s string
		if err := e.pool.QueryRow(ctx, q).Scan(&s); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, token) || strings.Contains(s, token[:12]) {
			t.Fatalf("%s shows the token: %s", q, s)
		}
	}
	var kid string
	if err := e.pool.QueryRow(ctx, `SELECT token_key_id FROM whatsapp_accounts`).Scan(&kid); err != nil {
		t.Fatal(err)
	}
	if kid != "k1" {
		t.Fatalf("token_key_id %q, want k1", kid)
	}
}

func TestCiphertextBoundToRow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "token-of-t1"})
	e.upsert(t, account.UpsertInput{TenantID: "t2", PhoneNumberID: "1002", AccessToken: "token-of-t2"})
	e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1003", AccessToken: "token-of-t1-p3"})

	// An attacker with write access to the table copies t1's ciphertext into other rows.
	if _, err := e.pool.Exec(ctx, `UPDATE whatsapp_accounts SET (access_token, token_key_id) =
		(SELECT access_token, token_key_id FROM whatsapp_accounts WHERE id = $1)
		WHERE id <> $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ tenant, pnid string }{{"t2", "1002"}, {"t1", "1003"}} {
		got, err := e.repo.Get(ctx, k.tenant, k.pnid)
		if !errors.Is(err, secret.ErrDecrypt) {
			t.Fatalf("Get(%s, %s) = %v, %v; want ErrDecrypt", k.tenant, k.pnid, got, err)
		}
		if strings.Contains(err.Error(), "token-of") {
			t.Fatalf("error shows a token: %v", err)
		}
	}
	// The original row still reads.
	if got, err := e.repo.Get(ctx, "t1", "1001"); err != nil || got.AccessToken.Reveal() != "token-of-t1" {
		t.Fatalf("original row: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	oldSpec, err := secret.GenerateKeySpec("old")
	if err != nil {
		t.Fatal(err)
	}
	newSpec, err := secret.GenerateKeySpec("new")
	if err != nil {
		t.Fatal(err)
	}
	oldRing, _ := secret.ParseKeyRing([]string{oldSpec})
	rotated, _ := secret.ParseKeyRing([]string{newSpec, oldSpec})
	onlyNew, _ := secret.ParseKeyRing([]string{newSpec})

	if _, err := account.NewRepository(e.pool, oldRing).Upsert(ctx, account.UpsertInput{
		TenantID: "t1", WABAID: "2000", PhoneNumberID: "1001", AccessToken: "tok-old"}); err != nil {
		t.Fatal(err)
	}
	repo := account.NewRepository(e.pool, rotated)
	if got, err := repo.Get(ctx, "t1", "1001"); err != nil || got.AccessToken.Reveal() != "tok-old" {
		t.Fatalf("rotated ring reading the old key: %v", err)
	}
	if _, err := account.NewRepository(e.pool, onlyNew).Get(ctx, "t1", "1001"); !errors.Is(err, secret.ErrUnknownKey) {
		t.Fatalf("ring without the old key: err = %v, want ErrUnknownKey", err)
	}
	if _, err := repo.Upsert(ctx, account.UpsertInput{TenantID: "t1", WABAID: "2000", PhoneNumberID: "1001", AccessToken: "tok-new"}); err != nil {
		t.Fatal(err)
	}
	var kid string
	if err := e.pool.QueryRow(ctx, `SELECT token_key_id FROM whatsapp_accounts`).Scan(&kid); err != nil {
		t.Fatal(err)
	}
	if kid != "new" {
		t.Fatalf("re-upsert sealed under %q, want the current key", kid)
	}
	if got, err := account.NewRepository(e.pool, onlyNew).Get(ctx, "t1", "1001"); err != nil || got.AccessToken.Reveal() != "tok-new" {
		t.Fatalf("after re-upsert: %v", err)
	}
}

func TestUpsertValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ok := account.UpsertInput{TenantID: "t", WABAID: "2000", PhoneNumberID: "1000", AccessToken: "tok"}
	tests := []struct {
		name   string
		mutate func(*account.UpsertInput)
	}{
		{"no tenant", func(in *account.UpsertInput) { in.TenantID = "" }},
		{"blank tenant", func(in *account.UpsertInput) { in.TenantID = "  " }},
		{"no waba", func(in *account.UpsertInput) { in.WABAID = "" }},
		{"no phone number", func(in *account.UpsertInput) { in.PhoneNumberID = "" }},
		{"no token", func(in *account.UpsertInput) { in.AccessToken = "" }},
		{"NUL in tenant", func(in *account.UpsertInput) { in.TenantID = "a\x00b" }},
		{"negative mps", func(in *account.UpsertInput) { in.ThroughputMPS = -1 }},
		{"mps over 1000", func(in *account.UpsertInput) { in.ThroughputMPS = 1001 }},
		{"dev phone number id", func(in *account.UpsertInput) { in.PhoneNumberID = "dev-1" }},
		{"phone number id of 33 digits", func(in *account.UpsertInput) { in.PhoneNumberID = strings.Repeat("1", 33) }},
		{"waba id with letters", func(in *account.UpsertInput) { in.WABAID = "waba-a" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := ok
			tt.mutate(&in)
			if _, err := e.repo.Upsert(context.Background(), in); !errors.Is(err, account.ErrInvalidInput) {
				t.Fatalf("err = %v, want ErrInvalidInput", err)
			}
		})
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM whatsapp_accounts`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rejected inputs wrote %d rows (%v)", n, err)
	}
}

func TestSetTokenStatusAndPauseErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.upsert(t, account.UpsertInput{TenantID: "t1", PhoneNumberID: "1001", AccessToken: "tok"})
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"unknown id", func() error {
			return e.repo.SetTokenStatus(ctx, "00000000-0000-0000-0000-000000000000", account.StatusInvalid, "")
		}, account.ErrNotFound},
		{"not a uuid", func() error { return e.repo.SetTokenStatus(ctx, "nope", account.StatusInvalid, "") }, account.ErrNotFound},
		{"bad status", func() error { return e.repo.SetTokenStatus(ctx, a.ID, "revoked", "") }, account.ErrInvalidInput},
		{"pause unknown", func() error {
			return e.repo.Pause(ctx, "00000000-0000-0000-0000-000000000000", time.Now(), "x")
		}, account.ErrNotFound},
		{"pause not a uuid", func() error { return e.repo.Pause(ctx, "'; DROP TABLE x", time.Now(), "x") }, account.ErrNotFound},
		{"status ok", func() error { return e.repo.SetTokenStatus(ctx, a.ID, account.StatusNeedsReconnect, "bad\x00byte") }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) && (tt.want != nil || err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	got, err := e.repo.Get(ctx, "t1", "1001")
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(got.Usable(time.Now()), account.ErrNeedsReconnect) {
		t.Fatalf("status %s: Usable = %v", got.TokenStatus, got.Usable(time.Now()))
	}
}

func TestUsable(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	tests := []struct {
		name    string
		status  account.TokenStatus
		expires *time.Time
		want    error
	}{
		{"active, no expiry", account.StatusActive, nil, nil},
		{"active, future expiry", account.StatusActive, &future, nil},
		{"active, expired by time", account.StatusActive, &past, account.ErrTokenExpired},
		{"active, expires now", account.StatusActive, &now, account.ErrTokenExpired},
		{"expired status", account.StatusExpired, &future, account.ErrTokenExpired},
		{"invalid", account.StatusInvalid, nil, account.ErrNeedsReconnect},
		{"needs reconnect", account.StatusNeedsReconnect, &future, account.ErrNeedsReconnect},
		{"unknown status", "weird", nil, account.ErrNeedsReconnect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := account.Account{TokenStatus: tt.status, TokenExpiresAt: tt.expires}
			if err := a.Usable(now); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Usable = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTokenRedaction(t *testing.T) {
	t.Parallel()
	const secretTok = "EAAGzzTOPSECRET"
	exp := time.Now()
	a := account.Account{ID: "id", TenantID: "t1", AccessToken: secretTok, TokenExpiresAt: &exp}
	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		outputs["token "+verb] = fmt.Sprintf(verb, a.AccessToken)
		outputs["account "+verb] = fmt.Sprintf(verb, a)
		outputs["*account "+verb] = fmt.Sprintf(verb, &a)
	}
	outputs["error"] = fmt.Errorf("sending with %v: %w", a.AccessToken, errors.New("x")).Error()
	j, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)

	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("x", "token", a.AccessToken, "account", a, "ptr", &a)
		l.Info("y", slog.Any("token", a.AccessToken), slog.String("s", a.AccessToken.String()))
	}
	outputs["slog"] = buf.String()

	for name, out := range outputs {
		if strings.Contains(out, "TOPSECRET") || strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", "TOPSECRET")) {
			t.Errorf("%s shows the token: %s", name, out)
		}
	}
	if !strings.Contains(outputs["token %v"], "[redacted]") {
		t.Errorf("token prints as %q, want [redacted]", outputs["token %v"])
	}
	if a.AccessToken.Reveal() != secretTok {
		t.Fatal("Reveal lost the token")
	}
}
