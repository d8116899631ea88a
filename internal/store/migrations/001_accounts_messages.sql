-- whatsapp_accounts holds every tenant's own WhatsApp Business Account and its token.
-- There is no global token table: each row's token is used for that row's tenant only.
CREATE TABLE whatsapp_accounts (
    id                   uuid PRIMARY KEY,
    tenant_id            text NOT NULL CHECK (tenant_id <> ''),
    waba_id              text NOT NULL CHECK (waba_id <> ''),
    phone_number_id      text NOT NULL UNIQUE CHECK (phone_number_id <> ''),
    display_phone_number text NOT NULL DEFAULT '',
    -- AES-256-GCM ciphertext (internal/secret), bound to tenant_id and id as additional data.
    access_token         bytea NOT NULL,
    token_key_id         text NOT NULL,
    token_expires_at     timestamptz,
    token_status         text NOT NULL DEFAULT 'active'
                         CHECK (token_status IN ('active', 'expired', 'invalid', 'needs_reconnect')),
    refresh_attempts     integer NOT NULL DEFAULT 0,
    next_refresh_at      timestamptz,
    last_refresh_error   text NOT NULL DEFAULT '',
    is_default           boolean NOT NULL DEFAULT false,
    throughput_mps       integer NOT NULL DEFAULT 80 CHECK (throughput_mps BETWEEN 1 AND 1000),
    paused_until         timestamptz,
    paused_reason        text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX whatsapp_accounts_tenant_idx ON whatsapp_accounts (tenant_id);
-- At most one default account per tenant.
CREATE UNIQUE INDEX whatsapp_accounts_one_default_idx ON whatsapp_accounts (tenant_id) WHERE is_default;
CREATE INDEX whatsapp_accounts_refresh_idx ON whatsapp_accounts (token_expires_at) WHERE token_expires_at IS NOT NULL;

-- Every change to an account tells every gateway and sender instance to drop its cached copy.
-- The payload names the account, never its token.
CREATE FUNCTION whatsapp_accounts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('whatsapp_accounts_changed',
            json_build_object('tenant_id', OLD.tenant_id, 'phone_number_id', OLD.phone_number_id)::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('whatsapp_accounts_changed',
        json_build_object('tenant_id', NEW.tenant_id, 'phone_number_id', NEW.phone_number_id)::text);
    IF TG_OP = 'UPDATE' AND (OLD.tenant_id, OLD.phone_number_id) IS DISTINCT FROM (NEW.tenant_id, NEW.phone_number_id) THEN
        PERFORM pg_notify('whatsapp_accounts_changed',
            json_build_object('tenant_id', OLD.tenant_id, 'phone_number_id', OLD.phone_number_id)::text);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER whatsapp_accounts_notify
    AFTER INSERT OR UPDATE OR DELETE ON whatsapp_accounts
    FOR EACH ROW EXECUTE FUNCTION whatsapp_accounts_notify();

-- messages is the life of every send the gateway accepted. Status only moves forward
-- (accepted → sending → sent → delivered → read); failed is final.
CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    account_id       uuid NOT NULL,
    phone_number_id  text NOT NULL,
    recipient        text NOT NULL,
    idempotency_key  text,
    status           text NOT NULL DEFAULT 'accepted'
                     CHECK (status IN ('accepted', 'sending', 'sent', 'delivered', 'read', 'failed')),
    wamid            text UNIQUE,
    attempts         integer NOT NULL DEFAULT 0,
    error_code       integer,
    error_title      text,
    accepted_at      timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX messages_tenant_idx ON messages (tenant_id, accepted_at DESC);
