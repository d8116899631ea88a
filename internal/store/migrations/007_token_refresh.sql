-- The token refresher: leased claims of due accounts and its bookkeeping.

-- A refresher claims an account by setting a lease: refresh_lease_holder, a random id of
-- that claim, until refresh_lease_until. Another refresher skips it until the lease
-- lapsed (its holder crashed), and the holder writes its outcome only while the holder
-- id is still its own. last_refreshed_at is the last successful renewal; last_checked_at
-- the last debug_token check of a token that never expires.
ALTER TABLE whatsapp_accounts
    ADD COLUMN refresh_lease_until  timestamptz,
    ADD COLUMN refresh_lease_holder uuid,
    ADD COLUMN last_refreshed_at    timestamptz,
    ADD COLUMN last_checked_at      timestamptz;

-- Tokens that never expire, in the order they are due for a check.
CREATE INDEX whatsapp_accounts_check_idx ON whatsapp_accounts (last_checked_at NULLS FIRST)
    WHERE token_expires_at IS NULL AND token_status = 'active';

-- A claim or a check that changes nothing a gateway or sender caches (the lease, the
-- check time) notifies no one: every cache keeps the account.
CREATE OR REPLACE FUNCTION whatsapp_accounts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('whatsapp_accounts_changed',
            json_build_object('tenant_id', OLD.tenant_id, 'phone_number_id', OLD.phone_number_id)::text);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND
       (to_jsonb(OLD) - ARRAY['refresh_lease_until', 'refresh_lease_holder', 'last_checked_at'])
         = (to_jsonb(NEW) - ARRAY['refresh_lease_until', 'refresh_lease_holder', 'last_checked_at']) THEN
        RETURN NEW;
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
