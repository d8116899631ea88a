-- Embedded Signup: the OAuth states it hands out, what it learns about each number, the
-- registration PIN it sets, and accounts a tenant disconnected.

-- A state is handed to one tenant's front end and comes back once, within its life. Only a
-- hash of it is kept: a copy of this table does not yield usable states.
CREATE TABLE onboarding_states (
    state_hash bytea PRIMARY KEY CHECK (length(state_hash) = 32),
    tenant_id  text NOT NULL CHECK (tenant_id <> ''),
    -- the JWT subject that asked for it ('' when the token had none)
    subject    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL CHECK (expires_at > created_at)
);
CREATE INDEX onboarding_states_expires_idx ON onboarding_states (expires_at);

ALTER TABLE whatsapp_accounts
    ADD COLUMN verified_name text NOT NULL DEFAULT '',
    ADD COLUMN quality_rating text NOT NULL DEFAULT '',
    -- The two-step verification PIN aerogate registered the number with: AES-256-GCM
    -- ciphertext (internal/secret) bound to the row like the token; NULL when aerogate never
    -- registered the number.
    ADD COLUMN registration_pin bytea;

-- A disconnected account has no token (access_token is empty) until it is connected again.
ALTER TABLE whatsapp_accounts DROP CONSTRAINT whatsapp_accounts_token_status_check;
ALTER TABLE whatsapp_accounts ADD CONSTRAINT whatsapp_accounts_token_status_check
    CHECK (token_status IN ('active', 'expired', 'invalid', 'needs_reconnect', 'disconnected'));
