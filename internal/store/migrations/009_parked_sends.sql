-- Fair sending: sends that cannot go soon (their number's pace is spent, their account is
-- stopped, their number paused) wait here, off Kafka's partition path, until the drain of
-- their number releases them in order.

-- queued: the message waits in parked_sends; expected_send_at is the estimate made when
-- it was parked (NULL while its account cannot send). Status still only moves forward:
-- accepted → queued → sending → sent.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('unknown', 'accepted', 'queued', 'sending', 'sent', 'delivered', 'read', 'failed'));
ALTER TABLE messages ADD COLUMN expected_send_at timestamptz;

-- One row per parked send. partition is the wa.sends partition the send came from (its
-- tenant's): the sender instance that owns that partition drains the rows. seq is the
-- send's offset in that partition, so it orders a number's sends as they were accepted,
-- and a send redelivered after a crash parks onto its own row (ON CONFLICT DO NOTHING).
-- priority 0 is urgent, drained before the number's other rows (1).
CREATE TABLE parked_sends (
    partition        integer NOT NULL,
    phone_number_id  text NOT NULL,
    seq              bigint NOT NULL,
    priority         smallint NOT NULL DEFAULT 1 CHECK (priority IN (0, 1)),
    message_id       uuid NOT NULL,
    tenant_id        text NOT NULL,
    recipient        text NOT NULL,
    -- the wa.sends envelope (JSON) as the sender will send it; never an access token
    envelope         bytea NOT NULL,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition, phone_number_id, seq)
);

-- The urgent rows of a number, in order: few, so a small index.
CREATE INDEX parked_sends_urgent_idx ON parked_sends (partition, phone_number_id, seq) WHERE priority = 0;
-- Whether a recipient already has rows waiting: an urgent send never overtakes them.
CREATE INDEX parked_sends_recipient_idx ON parked_sends (partition, phone_number_id, recipient) WHERE priority = 1;
