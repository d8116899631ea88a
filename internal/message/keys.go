package message

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/uuid"
)

// KeyBinding is what a tenant's Idempotency-Key is bound to: the fingerprint of the
// request that first used it and the message id derived from it.
type KeyBinding struct {
	// First is true when this call bound the key (its first use).
	First bool
	// Same is true when the key's recorded fingerprint equals the one given (always on
	// first use). A reuse with another fingerprint must be refused and send nothing.
	Same bool
	// MessageID is the id recorded with the key.
	MessageID string
	// Status is the message's current status, or "" when it has no row yet (its send
	// was not acknowledged, or it was and the row is not written yet).
	Status Status
}

// bindKeySQL records the key on first use; a reuse locks the existing row (the no-op
// update) and returns it, so concurrent first uses of one key wait for each other and
// exactly one of them is First. xmax is 0 only for a freshly inserted row version.
const bindKeySQL = `
INSERT INTO idempotency_keys AS k (tenant_id, idempotency_key, fingerprint, message_id)
VALUES ($1, $2, $3, $4::uuid)
ON CONFLICT (tenant_id, idempotency_key) DO UPDATE SET tenant_id = k.tenant_id
RETURNING k.xmax = 0, k.fingerprint, k.message_id::text,
          coalesce((SELECT m.status FROM messages m WHERE m.id = k.message_id AND m.tenant_id = k.tenant_id), '')`

// BindKey binds the tenant's key to fingerprint (a SHA-256) and messageID on first use,
// and otherwise says what the key is bound to.
func (r *Repository) BindKey(ctx context.Context, tenantID, key string, fingerprint []byte, messageID string) (KeyBinding, error) {
	id, err := uuid.Parse(messageID)
	if err != nil {
		return KeyBinding{}, fmt.Errorf("binding idempotency key: %w", ErrInvalidID)
	}
	var b KeyBinding
	var fp []byte
	var status string
	err = r.pool.QueryRow(ctx, bindKeySQL, tenantID, key, fingerprint, id.String()).
		Scan(&b.First, &fp, &b.MessageID, &status)
	if err != nil {
		return KeyBinding{}, fmt.Errorf("binding idempotency key: %w", err)
	}
	b.Same = bytes.Equal(fp, fingerprint)
	b.Status = Status(status)
	return b, nil
}
