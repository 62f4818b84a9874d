-- Ingest: a rejection is stored whatever the size of the event it rejects.
--
-- `rejected_events` indexed (customer_id, event_id) as sent, so rejecting an
-- event whose id or customer was ~9,000 characters failed on PostgreSQL's
-- btree row limit (about 2.7 kB per index entry) and, with it, the whole
-- batch — on every retry. Now (see docs/architecture.md, "Ingest"):
--
-- * `customer_id` and `event_id` keep the first 256 characters (at most 1 KiB
--   of UTF-8), readable for operators; the full event stays in `event`;
-- * `key_hash` is the SHA-256 of the full pair, each part prefixed with its
--   length in bytes (big-endian int8), as `log::rejection_key_hash` computes it;
--   lookups by (customer, event id) use (customer_id, key_hash), exact for ids
--   of any length;
-- * `event_summarized` marks a rejection whose event was too large to keep and
--   is stored as a summary (ids, type, timestamp, no properties); it is never
--   replayed.

ALTER TABLE ingest.rejected_events
    ADD COLUMN key_hash bytea,
    ADD COLUMN event_summarized boolean NOT NULL DEFAULT false;

UPDATE ingest.rejected_events
SET key_hash = sha256(
        int8send(octet_length(convert_to(customer_id, 'UTF8'))::int8) || convert_to(customer_id, 'UTF8')
        || int8send(octet_length(convert_to(event_id, 'UTF8'))::int8) || convert_to(event_id, 'UTF8')),
    customer_id = left(customer_id, 256),
    event_id = left(event_id, 256)
WHERE customer_id IS NOT NULL AND event_id IS NOT NULL;

DROP INDEX ingest.rejected_events_event;
CREATE INDEX rejected_events_key ON ingest.rejected_events (customer_id, key_hash);

ALTER TABLE ingest.rejected_events
    ADD CONSTRAINT rejected_events_lookup_prefixes
        CHECK (char_length(customer_id) <= 256 AND char_length(event_id) <= 256),
    ADD CONSTRAINT rejected_events_key_hash
        CHECK ((key_hash IS NULL) = (customer_id IS NULL OR event_id IS NULL));
