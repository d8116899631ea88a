package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/devenv"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

func tokenFlags(fs *pflag.FlagSet) {
	fs.String("tenant", "", "tenant id to put in the token (required)")
	fs.Duration("ttl", time.Hour, "how long the token is valid")
}

// runToken prints an HS256 tenant JWT signed with jwt.secret, or with the key the dev
// server generated in dev.data_dir when jwt.secret is not configured.
func runToken(_ context.Context, cfg config.Config, fs *pflag.FlagSet, stdout io.Writer) error {
	tenant, _ := fs.GetString("tenant")
	ttl, _ := fs.GetDuration("ttl")
	if strings.TrimSpace(tenant) == "" {
		return errors.New("--tenant is required")
	}
	if ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	if err := applyDevKeys(&cfg); err != nil {
		return err
	}
	if cfg.JWT.Secret == "" {
		return errors.New("jwt.secret is not configured (set AEROGATE_JWT_SECRET, or run `aerogate dev` once to generate a dev key)")
	}
	tok, err := auth.IssueHS256([]byte(cfg.JWT.Secret), cfg.JWT.TenantClaim, tenant, ttl, cfg.JWT.Issuer, cfg.JWT.Audience)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

func accountsFlags(fs *pflag.FlagSet) {
	fs.String("tenant", "", "tenant id (required)")
	fs.String("waba-id", "", "WhatsApp Business Account id (add)")
	fs.String("phone-number-id", "", "phone number id (add, remove)")
	fs.String("display-phone-number", "", "display phone number (add)")
	fs.String("access-token", "", "the tenant's Meta access token (add; prefer AEROGATE_ACCESS_TOKEN to keep it out of the process list)")
	fs.String("expires-in", "", "token lifetime, e.g. 60d or 1440h (add)")
	fs.String("expires-at", "", "token expiry as RFC 3339 (add)")
	fs.Bool("default", false, "make this the tenant's default account (add)")
	fs.Int("throughput-mps", 0, "messages per second Meta allows this number (add; 0 keeps the current value or 80)")
}

func runAccounts(ctx context.Context, cfg config.Config, fs *pflag.FlagSet, stdout io.Writer) error {
	args := fs.Args()
	if len(args) != 1 || !slices.Contains([]string{"add", "list", "remove", "rotate-keys"}, args[0]) {
		return errors.New("usage: aerogate accounts add|list|remove --tenant T [flags], or aerogate accounts rotate-keys")
	}
	if args[0] == "rotate-keys" {
		return rotateKeys(ctx, cfg, stdout)
	}
	tenant, _ := fs.GetString("tenant")
	if strings.TrimSpace(tenant) == "" {
		return errors.New("--tenant is required")
	}
	var in account.UpsertInput
	if args[0] == "add" {
		var err error
		if in, err = addInput(fs, tenant); err != nil {
			return err
		}
	}
	if err := applyDevKeys(&cfg); err != nil {
		return err
	}
	keys, err := secret.ParseKeyRing(cfg.Secrets.TokenKeys)
	if err != nil {
		return fmt.Errorf("secrets.token_keys: %w", err)
	}
	pool, err := store.Open(ctx, cfg.Database.URL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	repo := account.NewRepository(pool, keys)

	if args[0] == "list" {
		accts, err := repo.List(ctx, tenant)
		if err != nil {
			return err
		}
		return printAccounts(stdout, accts)
	}

	if args[0] == "remove" {
		pnid, _ := fs.GetString("phone-number-id")
		if pnid == "" {
			return errors.New("--phone-number-id is required")
		}
		// Like DELETE /v1/whatsapp/accounts/{id}: the token is erased and sends answer
		// 409 account_disconnected until the number is connected again.
		s, err := repo.Disconnect(ctx, tenant, pnid)
		if errors.Is(err, account.ErrNotFound) {
			return fmt.Errorf("tenant %s has no account with phone number id %s", tenant, pnid)
		}
		if err != nil {
			return err
		}
		return printAccounts(stdout, []account.Account{s.Account})
	}

	a, err := repo.Upsert(ctx, in)
	if err != nil {
		return err
	}
	return printAccounts(stdout, []account.Account{*a})
}

// addInput reads and checks the flags of `accounts add`, before any connection is made.
func addInput(fs *pflag.FlagSet, tenant string) (account.UpsertInput, error) {
	in := account.UpsertInput{TenantID: tenant}
	in.WABAID, _ = fs.GetString("waba-id")
	in.PhoneNumberID, _ = fs.GetString("phone-number-id")
	in.DisplayPhoneNumber, _ = fs.GetString("display-phone-number")
	in.AccessToken, _ = fs.GetString("access-token")
	in.IsDefault, _ = fs.GetBool("default")
	in.ThroughputMPS, _ = fs.GetInt("throughput-mps")
	if in.AccessToken == "" {
		in.AccessToken = os.Getenv("AEROGATE_ACCESS_TOKEN")
	}
	switch {
	case in.WABAID == "":
		return in, errors.New("--waba-id is required")
	case in.PhoneNumberID == "":
		return in, errors.New("--phone-number-id is required")
	case in.AccessToken == "":
		return in, errors.New("--access-token (or AEROGATE_ACCESS_TOKEN) is required")
	}
	// The repository checks these too; here the answer names the flag.
	if _, err := whatsapp.ParseWABAID(in.WABAID); err != nil {
		return in, fmt.Errorf("--waba-id: %w", err)
	}
	if _, err := whatsapp.ParsePhoneNumberID(in.PhoneNumberID); err != nil {
		return in, fmt.Errorf("--phone-number-id: %w", err)
	}
	if in.ThroughputMPS != 0 {
		if _, err := whatsapp.ParseThroughput(in.ThroughputMPS); err != nil {
			return in, fmt.Errorf("--throughput-mps: %w", err)
		}
	}
	expiresIn, _ := fs.GetString("expires-in")
	expiresAt, _ := fs.GetString("expires-at")
	exp, err := parseExpiry(time.Now(), expiresIn, expiresAt)
	if err != nil {
		return in, err
	}
	in.TokenExpiresAt = exp
	return in, nil
}

// rotateKeys re-encrypts every stored token and PIN with the first key of
// secrets.token_keys. Rotation: put the new key first and keep the old one after it,
// roll the processes, run this, then remove the old key and roll again.
func rotateKeys(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	if err := applyDevKeys(&cfg); err != nil {
		return err
	}
	keys, err := secret.ParseKeyRing(cfg.Secrets.TokenKeys)
	if err != nil {
		return fmt.Errorf("secrets.token_keys: %w", err)
	}
	pool, err := store.Open(ctx, cfg.Database.URL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := account.NewRepository(pool, keys).RotateKeys(ctx)
	if err != nil {
		return fmt.Errorf("rotating keys (%d accounts done): %w", res.Accounts, err)
	}
	_, err = fmt.Fprintf(stdout, "key %s: %d accounts, %d tokens and %d PINs re-encrypted, %d already under it\n",
		res.KeyID, res.Accounts, res.Tokens, res.PINs, res.Unchanged)
	return err
}

// parseExpiry turns --expires-in (Go duration, or whole days as "60d") or --expires-at
// into a time; neither means the token does not expire.
func parseExpiry(now time.Time, in, at string) (*time.Time, error) {
	switch {
	case in != "" && at != "":
		return nil, errors.New("give --expires-in or --expires-at, not both")
	case at != "":
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return nil, fmt.Errorf("--expires-at: %w", err)
		}
		return &t, nil
	case in != "":
		d, err := time.ParseDuration(in)
		if days, ok := strings.CutSuffix(in, "d"); ok {
			var n int
			n, err = strconv.Atoi(days)
			d = time.Duration(n) * 24 * time.Hour
		}
		if err != nil {
			return nil, fmt.Errorf("--expires-in: want a duration like 60d or 1440h: %w", err)
		}
		if d <= 0 {
			return nil, errors.New("--expires-in must be positive")
		}
		t := now.Add(d)
		return &t, nil
	}
	return nil, nil
}

func printAccounts(w io.Writer, accts []account.Account) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tWABA_ID\tPHONE_NUMBER_ID\tDISPLAY\tDEFAULT\tTOKEN_STATUS\tTOKEN_EXPIRES_AT\tMPS")
	for _, a := range accts {
		exp := "never"
		if a.TokenExpiresAt != nil {
			exp = a.TokenExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\t%d\n",
			a.ID, a.TenantID, a.WABAID, a.PhoneNumberID, a.DisplayPhoneNumber, a.IsDefault, a.TokenStatus, exp, a.ThroughputMPS)
	}
	return tw.Flush()
}

// applyDevKeys lets the CLI work against `aerogate dev` with no configuration: missing
// keys come from the dev data directory when dev has run there.
func applyDevKeys(cfg *config.Config) error {
	if _, err := devenv.ApplyKeys(cfg); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	return nil
}
