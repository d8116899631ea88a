-- Meta's webhooks: inbound messages, delivery statuses and account events, stored once
-- each, with every stored change published to wa.events through an outbox.

-- The time of each delivery status Meta reported (its own timestamp).
ALTER TABLE messages ADD COLUMN delivered_at timestamptz, ADD COLUMN read_at timestamptz;

-- message_statuses is every status Meta reported for a message, once per status: the row
-- is what makes a duplicate or replayed status a no-op (and publishes nothing).
CREATE TABLE message_statuses (
    message_id   uuid NOT NULL,
    status       text NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
    at           timestamptz NOT NULL,
    error_code   integer,
    error_title  text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, status)
);

-- pending_statuses holds statuses whose wamid no message has yet: Meta's webhook can
-- arrive before the sender recorded the wamid of its Graph call. They are applied when
-- the wamid is recorded (the messages trigger below), or by ingest's sweep when the two
-- crossed, and dropped after ingest.pending_status_ttl (statuses of messages sent by
-- something other than aerogate never find a message).
CREATE TABLE pending_statuses (
    wamid           text NOT NULL,
    status          text NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
    phone_number_id text NOT NULL,
    at              timestamptz NOT NULL,
    error_code      integer,
    error_title     text,
    data            jsonb NOT NULL DEFAULT '{}',
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (wamid, status)
);
CREATE INDEX pending_statuses_received_idx ON pending_statuses (received_at);

-- inbound_messages is every message a customer sent to a tenant's number, once per wamid.
-- seq is the arrival order GET /v1/inbound pages by: ingest takes a per-tenant lock
-- before it inserts, so a tenant's rows commit in seq order and a reader never passes a
-- row that commits later.
CREATE TABLE inbound_messages (
    seq             bigserial PRIMARY KEY,
    id              uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    tenant_id       text NOT NULL,
    account_id      uuid NOT NULL,
    phone_number_id text NOT NULL,
    wamid           text NOT NULL UNIQUE,
    from_wa_id      text NOT NULL,
    type            text NOT NULL,
    sent_at         timestamptz NOT NULL,  -- Meta's timestamp
    received_at     timestamptz NOT NULL,  -- when the webhook edge received it
    stored_at       timestamptz NOT NULL DEFAULT now(),
    contact         jsonb,
    message         jsonb NOT NULL
);
CREATE INDEX inbound_messages_tenant_idx ON inbound_messages (tenant_id, seq);

-- event_outbox holds wa.events records written in the same transaction as the change
-- they describe; ingest publishes them (acks=all) and then deletes them, so a crash
-- between the two loses none.
CREATE TABLE event_outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id       text NOT NULL,
    type            text NOT NULL,
    phone_number_id text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    data            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- webhook_status_rank orders statuses: a status applies only over a lower rank. read and
-- failed are both final.
CREATE FUNCTION webhook_status_rank(s text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE s WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 WHEN 'failed' THEN 3 ELSE 0 END
$$;

-- webhook_record_status records one status Meta reported for a message: once per
-- (message, status), moving the message's status forward only, keeping the status's
-- time, and writing its wa.events record. It returns false for a status already recorded.
CREATE FUNCTION webhook_record_status(p_message uuid, p_status text, p_at timestamptz,
                                      p_code integer, p_title text, p_data jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    m record;
BEGIN
    INSERT INTO message_statuses (message_id, status, at, error_code, error_title)
    VALUES (p_message, p_status, p_at, p_code, p_title)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE messages AS x SET
        status       = CASE WHEN webhook_status_rank(p_status) > webhook_status_rank(x.status) THEN p_status ELSE x.status END,
        error_code   = CASE WHEN p_status = 'failed' AND webhook_status_rank(x.status) < 3 THEN p_code ELSE x.error_code END,
        error_title  = CASE WHEN p_status = 'failed' AND webhook_status_rank(x.status) < 3 THEN p_title ELSE x.error_title END,
        delivered_at = CASE WHEN p_status = 'delivered' THEN coalesce(x.delivered_at, p_at) ELSE x.delivered_at END,
        read_at      = CASE WHEN p_status = 'read' THEN coalesce(x.read_at, p_at) ELSE x.read_at END,
        updated_at   = now()
     WHERE x.id = p_message
    RETURNING x.tenant_id, x.phone_number_id, x.wamid, x.status, x.recipient INTO m;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO event_outbox (tenant_id, type, phone_number_id, occurred_at, data)
    VALUES (m.tenant_id, 'message.status', m.phone_number_id, p_at, jsonb_strip_nulls(jsonb_build_object(
        'message_id', p_message, 'wamid', m.wamid, 'to', m.recipient, 'status', p_status,
        'message_status', m.status,
        'error', CASE WHEN p_status = 'failed' THEN jsonb_build_object('code', p_code, 'title', p_title) END,
        'meta', CASE WHEN p_data <> '{}'::jsonb THEN p_data END)));
    RETURN true;
END;
$$;

-- webhook_apply_pending applies the pending statuses of a message's wamid, in Meta's
-- time order, and removes them. The message row is locked first: the sender's write
-- holds it already, and every other caller takes the locks in the same order.
CREATE FUNCTION webhook_apply_pending(p_message uuid, p_wamid text, p_phone text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    p record;
    n integer := 0;
BEGIN
    -- The common case, every sent message's wamid: nothing waits for it.
    IF NOT EXISTS (SELECT 1 FROM pending_statuses WHERE wamid = p_wamid) THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM messages WHERE id = p_message FOR UPDATE;
    FOR p IN
        WITH d AS (DELETE FROM pending_statuses WHERE wamid = p_wamid RETURNING *)
        SELECT * FROM d ORDER BY at, webhook_status_rank(status)
    LOOP
        -- A status reported for another number's wamid does not belong to this message.
        IF p.phone_number_id = p_phone
           AND webhook_record_status(p_message, p.status, p.at, p.error_code, p.error_title, p.data) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END;
$$;

CREATE FUNCTION messages_apply_pending_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_apply_pending(NEW.id, NEW.wamid, NEW.phone_number_id);
    RETURN NULL;
END;
$$;

-- When the sender records a message's wamid, statuses that arrived before it apply at
-- once, in the sender's own transaction. The WHEN clauses keep every other write to
-- messages (accepted inserts, claims) from calling the function at all.
CREATE TRIGGER messages_pending_statuses_insert
    AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.wamid IS NOT NULL)
    EXECUTE FUNCTION messages_apply_pending_statuses();
CREATE TRIGGER messages_pending_statuses_update
    AFTER UPDATE OF wamid ON messages
    FOR EACH ROW WHEN (OLD.wamid IS NULL AND NEW.wamid IS NOT NULL)
    EXECUTE FUNCTION messages_apply_pending_statuses();
