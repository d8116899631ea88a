-- Postgres bytes per stored send and per inbound message, with their indexes: run it on a
-- throwaway database that `aerogate migrate` prepared (it inserts 100,000 of each):
--
--   createdb aerogate_sizing
--   AEROGATE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/aerogate_sizing aerogate migrate
--   psql -d aerogate_sizing -f bench/sizing.sql
--   dropdb aerogate_sizing
--
-- A send is its messages row (ended read), three message_statuses rows (sent, delivered,
-- read) and its Idempotency-Key record; an inbound message is a text with a contact.
INSERT INTO messages (id, tenant_id, account_id, phone_number_id, recipient, idempotency_key, status, wamid,
                      attempts, accepted_at, sent_at, updated_at, delivered_at, read_at)
SELECT gen_random_uuid(), 'tenant-' || lpad((g % 1000)::text, 6, '0'), gen_random_uuid(),
       '1065403522' || lpad((g % 100000)::text, 5, '0'), '9198765' || lpad((g % 100000)::text, 5, '0'),
       'order-' || g || '-confirmation-' || md5(g::text), 'read',
       'wamid.HBgLOTE5ODc2NTQzMjEwFQIAERgSN0Q' || upper(md5(g::text)), 1, now(), now(), now(), now(), now()
  FROM generate_series(1, 100000) g;
INSERT INTO message_statuses (message_id, status, at)
SELECT id, s, now() FROM messages, unnest(ARRAY['sent', 'delivered', 'read']) s;
INSERT INTO idempotency_keys (tenant_id, idempotency_key, fingerprint, message_id)
SELECT tenant_id, idempotency_key, sha256(id::text::bytea), id FROM messages;
INSERT INTO inbound_messages (tenant_id, account_id, phone_number_id, wamid, from_wa_id, type, sent_at, received_at,
                              contact, message)
SELECT 'tenant-' || lpad((g % 1000)::text, 6, '0'), gen_random_uuid(), '106540352242922',
       'wamid.HBgLOTE5ODc2NTQzMjEwFQIAEhgU' || upper(md5(g::text)), '919876543210', 'text', now(), now(),
       '{"profile":{"name":"Customer Name"},"wa_id":"919876543210"}',
       jsonb_build_object('from', '919876543210', 'id', 'wamid.x' || g, 'timestamp', '1700000000', 'type', 'text',
                          'text', jsonb_build_object('body', 'Hello, I would like to know the status of my order number ' || g))
  FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
SELECT relname AS table, pg_size_pretty(pg_total_relation_size(oid)) AS total,
       pg_total_relation_size(oid) / 100000 AS bytes_per_row
  FROM pg_class WHERE relname IN ('messages', 'message_statuses', 'idempotency_keys', 'inbound_messages')
 ORDER BY 1;
