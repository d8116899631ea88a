package account

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ResolveNumber returns the account that owns phoneNumberID, whichever tenant it belongs
// to, or ErrNotFound: how ingest places a webhook item (which names only the business
// number) with its tenant. A phone number id belongs to one tenant at most.
//
// The account comes without its token (AccessToken is empty): nothing that resolves by
// number alone may send. It is cached like Resolve's answers and dropped by the same
// change notifications.
func (r *Resolver) ResolveNumber(ctx context.Context, phoneNumberID string) (*Account, error) {
	if phoneNumberID == "" || strings.IndexByte(phoneNumberID, 0) >= 0 {
		return nil, ErrNotFound
	}
	key := cacheKey("", phoneNumberID)
	if e, ok := r.cache.Get(key); ok && e.tenantID == "" && e.phoneNumberID == phoneNumberID {
		if e.acct == nil {
			return nil, ErrNotFound
		}
		return e.acct, nil
	}
	return r.loadShared(ctx, "", phoneNumberID, key)
}

// getByNumber loads the account with that phone number id, without decrypting its token.
func (r *Repository) getByNumber(ctx context.Context, phoneNumberID string) (*Account, error) {
	a, _, err := scanAccount(r.pool.QueryRow(ctx, `SELECT `+columns+` FROM whatsapp_accounts
		WHERE phone_number_id = $1`, phoneNumberID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading account of number %q: %w", phoneNumberID, err)
	}
	return a, nil
}
