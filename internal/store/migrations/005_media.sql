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

