package account

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/aerostic/aerogate/internal/secret"
)

// Rotation is what RotateKeys did.
type Rotation struct {
	KeyID     string // the key everything is encrypted with now
	Accounts  int    // accounts looked at
	Tokens    int    // access tokens re-encrypted
	PINs      int    // registration PINs re-encrypted
	Unchanged int    // accounts already under KeyID (or with nothing encrypted)
}

// rotateBatch is how many account ids one read of RotateKeys takes.
const rotateBatch = 500

// RotateKeys re-encrypts every stored access token and registration PIN that is not
// under the ring's first key (secrets.token_keys' first entry) with it, one account per
// short transaction with the row locked, so that an old key can then be removed from the
// configuration. Running it again changes nothing; it may run while aerogate serves. It
// stops at the first ciphertext no key of the ring decrypts, naming the account (never
// the token).
func (r *Repository) RotateKeys(ctx context.Context) (Rotation, error) {
	res := Rotation{KeyID: r.keys.CurrentKeyID()}
	after := "00000000-0000-0000-0000-000000000000"
	for {
		rows, err := r.pool.Query(ctx, `SELECT id::text FROM whatsapp_accounts WHERE id > $1::uuid ORDER BY id LIMIT $2`,
			after, rotateBatch)
		if err != nil {
			return res, fmt.Errorf("listing accounts: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return res, fmt.Errorf("listing accounts: %w", err)
		}
		for _, id := range ids {
			tok, pin, err := r.rotateOne(ctx, id)
			if err != nil {
				return res, err
			}
			res.Accounts++
			if tok {
				res.Tokens++
			}
			if pin {
				res.PINs++
			}
			if !tok && !pin {
				res.Unchanged++
			}
		}
		if len(ids) < rotateBatch {
			return res, nil
		}
		after = ids[len(ids)-1]
	}
}

// rotateOne re-encrypts one account's token and PIN under the current key when they are
// under another one.
func (r *Repository) rotateOne(ctx context.Context, id string) (token, pin bool, err error) {
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var tenant string
		var tokCT, pinCT []byte
		err := tx.QueryRow(ctx, `SELECT tenant_id, access_token, registration_pin FROM whatsapp_accounts
			WHERE id = $1::uuid FOR UPDATE`, id).Scan(&tenant, &tokCT, &pinCT)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("reading account %s: %w", id, err)
		}
		newTok, err := r.reencrypt(tokCT, tokenAAD(tenant, id))
		if err != nil {
			return fmt.Errorf("access token of account %s: %w", id, err)
		}
		newPIN, err := r.reencrypt(pinCT, pinAAD(tenant, id))
		if err != nil {
			return fmt.Errorf("registration pin of account %s: %w", id, err)
		}
		token, pin = newTok != nil, newPIN != nil
		if !token && !pin {
			return nil
		}
		// updated_at stays: the account did not change, only how its secrets are kept.
		_, err = tx.Exec(ctx, `UPDATE whatsapp_accounts SET
				access_token = COALESCE($2, access_token),
				token_key_id = CASE WHEN $2::bytea IS NULL THEN token_key_id ELSE $3 END,
				registration_pin = COALESCE($4, registration_pin)
			WHERE id = $1::uuid`, id, newTok, r.keys.CurrentKeyID(), newPIN)
		if err != nil {
			return fmt.Errorf("writing account %s: %w", id, err)
		}
		return nil
	})
	return token, pin, err
}

// reencrypt returns ct sealed under the current key, or nil when there is nothing to do
// (empty: no secret stored, or already under the current key).
func (r *Repository) reencrypt(ct, aad []byte) ([]byte, error) {
	if len(ct) == 0 {
		return nil, nil
	}
	kid, err := secret.KeyID(ct)
	if err != nil {
		return nil, err
	}
	if kid == r.keys.CurrentKeyID() {
		return nil, nil
	}
	plain, err := r.keys.Decrypt(ct, aad)
	if err != nil {
		return nil, err
	}
	out, _, err := r.keys.Encrypt(plain, aad)
	clear(plain)
	return out, err
}
