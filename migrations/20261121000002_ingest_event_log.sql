-- Ingest: the durable usage event log, its uniqueness keys, rejected events,
-- backfills, and the batch outbox towards `usage-accepted`.
--
-- Layout and why (see docs/architecture.md, "The event log"):
--
-- * `events` is partitioned by month of event time, so an old month can be
--   detached and archived (`ALTER TABLE ingest.events DETACH PARTITION …`).
--   A partitioned table's unique index must contain the partition key, which
--   would make (customer, event id) unique only per month. So uniqueness lives
--   in `event_keys`, a plain table that is never partitioned or archived: an
--   event id is accepted once per customer, forever.
-- * Identifiers use the "C" collation: byte order is all that is needed, and
--   it keeps the uniqueness index fast whatever the database's locale is.
-- * `accepted_batches` is the outbox of accepted events: one row per committed
--   ingest transaction (not per event) naming the batch's sequence range. The
--   relay reads those events back, publishes each on `usage-accepted` exactly
--   as committed, and deletes the row. Rejections go through the generic
--   `ingest.outbox`.

-- Sequence numbers are handed out in blocks of 100,000, one block per batch
-- (a batch holds at most 100,000 events): event i of the batch with block b
-- gets b * 100000 + i. So a batch's events are one contiguous range, which the
-- relay reads back through an index on seq instead of a second copy of the data.
CREATE SEQUENCE ingest.batch_block AS bigint;

CREATE TABLE ingest.event_keys (
    customer_id      text COLLATE "C" NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    seq              bigint NOT NULL,
    event_time       timestamptz NOT NULL,
    -- SHA-256 of the canonical payload (id, customer, type, timestamp, properties):
    -- equal hash = duplicate, different hash = conflict.
    payload_hash     bytea NOT NULL,
    duplicate_count  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, event_id)
) WITH (fillfactor = 90);

CREATE TABLE ingest.events (
    seq          bigint NOT NULL,
    customer_id  text COLLATE "C" NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    event_type   text COLLATE "C" NOT NULL,
    event_time   timestamptz NOT NULL,
    -- The tally.events.v1.UsageEvent as committed, protobuf-encoded: byte-exact,
    -- cheap to write (no JSON parsing on the hot path) and published as is.
    payload      bytea NOT NULL,
    -- tally.events.v1.Intake: 1 gRPC, 2 Pub/Sub, 3 replay.
    intake       smallint NOT NULL,
    ingested_at  timestamptz NOT NULL
) PARTITION BY RANGE (event_time);

-- Replay (`ReadEvents`) reads one customer's time range in (time, seq) order.
CREATE INDEX events_customer_time ON ingest.events (customer_id, event_time);
-- The relay reads a batch's contiguous sequence range. A btree, not BRIN: BRIN
-- only narrows ranges that VACUUM has summarized, and the relay reads exactly
-- the newest, unsummarized rows. Sequence numbers grow with insertion, so these
-- inserts land on the rightmost leaf pages and stay cheap.
CREATE INDEX events_seq ON ingest.events (seq);

-- Creates the partition holding `month` (any instant in it) unless it exists.
-- Safe to call concurrently.
CREATE FUNCTION ingest.ensure_event_partition(month timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    start_at timestamptz := date_trunc('month', month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name     text := format('events_y%sm%s', to_char(start_at AT TIME ZONE 'UTC', 'YYYY'),
                                            to_char(start_at AT TIME ZONE 'UTC', 'MM'));
BEGIN
    IF to_regclass(format('ingest.%I', name)) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE ingest.%I PARTITION OF ingest.events FOR VALUES FROM (%L) TO (%L)',
                name, start_at, start_at + interval '1 month');
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL; -- another session created it first
        END;
    END IF;
    RETURN name;
END
$$;

CREATE TABLE ingest.rejected_events (
    id                text PRIMARY KEY,
    -- As sent (NUL characters replaced), for lookups; NULL when undecodable.
    customer_id       text COLLATE "C",
    event_id          text COLLATE "C",
    -- tally.events.v1.RejectionKind: 1 invalid, 2 conflict, 3 undecodable.
    kind              smallint NOT NULL,
    -- The event as received, protobuf-encoded (byte-exact, NUL-safe).
    event             bytea,
    -- [{"field": …, "rule": …, "description": …}, …]
    violations        jsonb NOT NULL,
    raw_payload       bytea,
    raw_content_type  text,
    intake            smallint NOT NULL,
    rejected_at       timestamptz NOT NULL,
    -- tally.ingest.v1.RejectedEventState: 1 open, 2 resolved, 3 dismissed.
    state             smallint NOT NULL DEFAULT 1,
    replay_count      integer NOT NULL DEFAULT 0,
    resolved_at       timestamptz
);
CREATE INDEX rejected_events_event ON ingest.rejected_events (customer_id, event_id);
CREATE INDEX rejected_events_newest ON ingest.rejected_events (rejected_at DESC, id DESC);

CREATE TABLE ingest.backfills (
    id               text PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    request_hash     bytea NOT NULL,
    customer_id      text COLLATE "C" NOT NULL,
    start_time       timestamptz NOT NULL,
    end_time         timestamptz NOT NULL CHECK (end_time > start_time),
    reason           text NOT NULL DEFAULT '',
    opened_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    closed_at        timestamptz
);
CREATE INDEX backfills_customer ON ingest.backfills (customer_id, opened_at DESC);

CREATE TABLE ingest.accepted_batches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The batch's events are the accepted ones with seq in [first_seq, last_seq].
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL,
    event_count integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The highest sequence number the relay has published (one row).
CREATE TABLE ingest.relay_state (
    singleton              boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    published_high_water   bigint NOT NULL DEFAULT 0
);
INSERT INTO ingest.relay_state DEFAULT VALUES;
