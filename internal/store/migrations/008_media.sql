-- media is every media id a tenant owns, so the Graph passthrough answers a media id of
-- another tenant as it answers one that does not exist: uploaded through the gateway
-- (source 'uploaded'), or received in one of the tenant's inbound messages ('inbound').
CREATE TABLE media (
    tenant_id       text NOT NULL,
    media_id        text NOT NULL,
    phone_number_id text NOT NULL,
    source          text NOT NULL CHECK (source IN ('uploaded', 'inbound')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, media_id)
);


-- An inbound message with media (image, audio, video, document, sticker) makes its
-- media id the tenant's, in the transaction that stores the message: ingest needs no
-- code of its own for it. One statement-level trigger per insert, however many rows.
CREATE FUNCTION inbound_messages_record_media() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media (tenant_id, media_id, phone_number_id, source)
    SELECT n.tenant_id, n.message -> n.type ->> 'id', n.phone_number_id, 'inbound'
      FROM new_rows AS n
     WHERE n.type IN ('image', 'audio', 'video', 'document', 'sticker')
       AND jsonb_typeof(n.message -> n.type -> 'id') = 'string'
       AND length(n.message -> n.type ->> 'id') BETWEEN 1 AND 64
    ON CONFLICT (tenant_id, media_id) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER inbound_messages_media AFTER INSERT ON inbound_messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION inbound_messages_record_media();
