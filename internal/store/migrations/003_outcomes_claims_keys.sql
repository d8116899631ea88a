-- Truthful outcomes, exclusive claims, and idempotency keys bound to their request.

-- unknown: the gateway answered 504 queue_timeout: Kafka did not acknowledge the send in
-- time, so it may or may not be on wa.sends. It moves to accepted when a retry of it is
-- acknowledged, to sending when a sender claims it (it was on wa.sends after all), and
-- otherwise stays unknown. Status still only moves forward; failed is final.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('unknown', 'accepted', 'sending', 'sent', 'delivered', 'read', 'failed'));

-- A claim (sending) is exclusive: claim_holder, a random id of the sender process that
-- holds it, until claim_expires_at. Another sender may take it over only once it lapsed
-- (its holder crashed). Neither column is indexed: a claim stays a HOT update.
ALTER TABLE messages ADD COLUMN claim_holder uuid, ADD COLUMN claim_expires_at timestamptz;

-- idempotency_keys binds a tenant's Idempotency-Key to the first request that used it:
-- a SHA-256 of the path kind, the phone number id and the body (without whitespace).
-- A reuse with another fingerprint is refused; the message id is derived from the key.
CREATE TABLE idempotency_keys (
    tenant_id       text NOT NULL,
    idempotency_key text NOT NULL,
    fingerprint     bytea NOT NULL CHECK (length(fingerprint) = 32),
    message_id      uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);
