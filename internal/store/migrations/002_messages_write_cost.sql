-- Cheaper writes on messages, the busiest table (an insert and two updates per send).

-- wamid is NULL until a send succeeds. A partial unique index leaves the accepted and
-- sending row versions out of the index altogether and still finds a message by wamid.
ALTER TABLE messages DROP CONSTRAINT messages_wamid_key;
CREATE UNIQUE INDEX messages_wamid_idx ON messages (wamid) WHERE wamid IS NOT NULL;

-- Free space on every page for the claim's new row version: the claim changes no indexed
-- column, so when its page has room it is a HOT update and writes no index entries.
ALTER TABLE messages SET (fillfactor = 80);
