package account

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Connection is one phone number Embedded Signup connects to a tenant: the account row and
// what Meta says about the number.
type Connection struct {
	UpsertInput
	VerifiedName  string
	QualityRating string
	// RegistrationPIN is the PIN aerogate has just registered the number with, stored
	// encrypted; "" keeps the PIN stored before (if any).
	RegistrationPIN string
}

// Summary is an account as the accounts API shows it: never its token.
type Summary struct {
	Account       // AccessToken is always empty
	VerifiedName  string
	QualityRating string
}

func (c *Connection) validate() error {
	if err := c.UpsertInput.validate(); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"verified name", c.VerifiedName}, {"quality rating", c.QualityRating}, {"registration pin", c.RegistrationPIN},
	} {
		if strings.IndexByte(f.v, 0) >= 0 || !utf8.ValidString(f.v) {
			return fmt.Errorf("%w: %s is not valid text", ErrInvalidInput, f.name)
		}
	}
	return nil
}

// pinAAD binds a registration PIN ciphertext to its row, as tokenAAD does for tokens, and
// keeps a PIN ciphertext from ever decrypting as a token (or the reverse).
func pinAAD(tenantID, accountID string) []byte {
	return append([]byte("aerogate/pin/v1\x00"+tenantID+"\x00"), accountID...)
}

// ConnectTx upserts every connection in tx, a transaction the caller owns, so that they
// are stored all together or not at all (with whatever else the caller does in tx). Each
// row gets its new token, status active, and the tenant's first account becomes its
// default, as Upsert does. A phone number id owned by another tenant returns
// ErrPhoneNumberTaken; the caller must then roll tx back. Each changed row notifies
// every resolver at commit.
func (r *Repository) ConnectTx(ctx context.Context, tx pgx.Tx, conns []Connection) ([]Summary, error) {
	out := make([]Summary, 0, len(conns))
	for i := range conns {
		c := &conns[i]
		if err := c.validate(); err != nil {
			return nil, err
		}
		a, err := r.upsertTx(ctx, tx, c.UpsertInput)
		if err != nil {
			if errors.Is(err, ErrPhoneNumberTaken) {
				return nil, err
			}
			return nil, fmt.Errorf("connecting %s for tenant %s: %w", c.PhoneNumberID, c.TenantID, err)
		}
		var pin []byte
		if c.RegistrationPIN != "" {
			if pin, _, err = r.keys.Encrypt([]byte(c.RegistrationPIN), pinAAD(a.TenantID, a.ID)); err != nil {
				return nil, fmt.Errorf("encrypting registration pin: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE whatsapp_accounts SET verified_name = $2, quality_rating = $3,
			registration_pin = COALESCE($4, registration_pin) WHERE id = $1::uuid`,
			a.ID, c.VerifiedName, c.QualityRating, pin); err != nil {
			return nil, fmt.Errorf("connecting %s for tenant %s: %w", c.PhoneNumberID, c.TenantID, err)
		}
		a.AccessToken = ""
		out = append(out, Summary{Account: *a, VerifiedName: c.VerifiedName, QualityRating: c.QualityRating})
	}
	return out, nil
}

// Owners returns the tenant owning each of the phone number ids that has an account.
func (r *Repository) Owners(ctx context.Context, phoneNumberIDs []string) (map[string]string, error) {
	rows, err := r.pool.Query(ctx, `SELECT phone_number_id, tenant_id FROM whatsapp_accounts
		WHERE phone_number_id = ANY($1)`, phoneNumberIDs)
	if err != nil {
		return nil, fmt.Errorf("looking up phone number owners: %w", err)
	}
	out := map[string]string{}
	var pn, tenant string
	_, err = pgx.ForEachRow(rows, []any{&pn, &tenant}, func() error {
		out[pn] = tenant
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("looking up phone number owners: %w", err)
	}
	return out, nil
}

// Summaries returns the tenant's accounts ordered by phone number id, without tokens.
func (r *Repository) Summaries(ctx context.Context, tenantID string) ([]Summary, error) {
	if strings.IndexByte(tenantID, 0) >= 0 {
		return nil, nil
	}
	rows, err := r.pool.Query(ctx, `SELECT `+columns+`, verified_name, quality_rating FROM whatsapp_accounts
		WHERE tenant_id = $1 ORDER BY phone_number_id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("listing accounts of tenant %q: %w", tenantID, err)
	}
	defer rows.Close()
	var out []Summary
	for rows.Next() {
		s, err := scanSummary(rows)
		if err != nil {
			return nil, fmt.Errorf("listing accounts of tenant %q: %w", tenantID, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing accounts of tenant %q: %w", tenantID, err)
	}
	return out, nil
}

func scanSummary(row pgx.Row) (Summary, error) {
	var s Summary
	a := &s.Account
	var ct []byte
	var status string
	err := row.Scan(&a.ID, &a.TenantID, &a.WABAID, &a.PhoneNumberID, &a.DisplayPhoneNumber,
		&ct, &a.TokenExpiresAt, &status, &a.RefreshAttempts, &a.NextRefreshAt,
		&a.LastRefreshError, &a.IsDefault, &a.ThroughputMPS, &a.PausedUntil, &a.PausedReason,
		&a.CreatedAt, &a.UpdatedAt, &s.VerifiedName, &s.QualityRating)
	a.TokenStatus = TokenStatus(status)
	return s, err
}

// Disconnect erases the token of the tenant's account with that phone number id and marks
// it disconnected: its sends are refused (ErrDisconnected) until Embedded Signup or
// Upsert connects it again. Another tenant's number is ErrNotFound. Disconnecting a
// disconnected account changes nothing and returns it.
func (r *Repository) Disconnect(ctx context.Context, tenantID, phoneNumberID string) (Summary, error) {
	if strings.IndexByte(tenantID, 0) >= 0 || strings.IndexByte(phoneNumberID, 0) >= 0 || phoneNumberID == "" {
		return Summary{}, ErrNotFound
	}
	// The WHERE on token_status keeps a second disconnect from touching the row (and
	// notifying every instance for nothing).
	s, err := scanSummary(r.pool.QueryRow(ctx, `UPDATE whatsapp_accounts SET
			access_token = ''::bytea, token_key_id = '', token_status = 'disconnected',
			token_expires_at = NULL, refresh_attempts = 0, next_refresh_at = NULL,
			last_refresh_error = '', updated_at = now()
		WHERE tenant_id = $1 AND phone_number_id = $2 AND token_status <> 'disconnected'
		RETURNING `+columns+`, verified_name, quality_rating`, tenantID, phoneNumberID))
	if errors.Is(err, pgx.ErrNoRows) {
		s, err = scanSummary(r.pool.QueryRow(ctx, `SELECT `+columns+`, verified_name, quality_rating
			FROM whatsapp_accounts WHERE tenant_id = $1 AND phone_number_id = $2`, tenantID, phoneNumberID))
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return Summary{}, ErrNotFound
	}
	if err != nil {
		return Summary{}, fmt.Errorf("disconnecting account %s of tenant %s: %w", phoneNumberID, tenantID, err)
	}
	return s, nil
}

// RegistrationPIN returns the decrypted PIN aerogate registered the account's number with,
// or "" when it never registered it. It is for re-registering the number and nothing else.
func (r *Repository) RegistrationPIN(ctx context.Context, tenantID, phoneNumberID string) (string, error) {
	var id string
	var ct []byte
	err := r.pool.QueryRow(ctx, `SELECT id::text, registration_pin FROM whatsapp_accounts
		WHERE tenant_id = $1 AND phone_number_id = $2`, tenantID, phoneNumberID).Scan(&id, &ct)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading registration pin: %w", err)
	}
	if ct == nil {
		return "", nil
	}
	pin, err := r.keys.Decrypt(ct, pinAAD(tenantID, id))
	if err != nil {
		return "", fmt.Errorf("decrypting registration pin of account %s: %w", id, err)
	}
	return string(pin), nil
}

// WABANumber returns the phone number id through which the tenant reaches the WABA:
// one of the tenant's accounts on it, an active one first, then the default, then the
// oldest. ErrNotFound when the tenant has no account on that WABA (another tenant's
// WABA is not found either).
func (r *Repository) WABANumber(ctx context.Context, tenantID, wabaID string) (string, error) {
	if strings.IndexByte(tenantID, 0) >= 0 || strings.IndexByte(wabaID, 0) >= 0 {
		return "", ErrNotFound
	}
	var pnid string
	err := r.pool.QueryRow(ctx, `SELECT phone_number_id FROM whatsapp_accounts
		WHERE tenant_id = $1 AND waba_id = $2
		ORDER BY token_status = 'active' DESC, is_default DESC, created_at, phone_number_id LIMIT 1`,
		tenantID, wabaID).Scan(&pnid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", ErrNotFound
	case err != nil:
		return "", fmt.Errorf("finding the tenant's account on WABA %q: %w", wabaID, err)
	}
	return pnid, nil
}
