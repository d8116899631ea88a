-- Retention: ingest removes rows past their age in small batches. BRIN indexes find the
-- old rows of these append-mostly tables without a scan of the whole table, and cost
-- almost nothing on insert (one summary per range of pages, not an entry per row).
CREATE INDEX messages_accepted_brin ON messages USING brin (accepted_at);
CREATE INDEX inbound_messages_stored_brin ON inbound_messages USING brin (stored_at);
CREATE INDEX idempotency_keys_created_brin ON idempotency_keys USING brin (created_at);
