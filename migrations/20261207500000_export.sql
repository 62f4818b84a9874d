-- Export: Tally's facts streamed into BigQuery exactly once
-- (docs/architecture.md, "Export"; the tables: docs/warehouse.md). Export
-- reads and writes only this schema; it learns the facts from the bus,
-- recorded once in its inbox.

CREATE SCHEMA IF NOT EXISTS export;

CREATE TABLE export.inbox (
    subscription  text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, message_id)
);

-- One row per warehouse row, staged in the transaction that records its
-- bus message in the inbox. `row_key` is the fact's own identity in its
-- table (an event id, an invoice line id): a fact staged twice under two
-- message ids is still one row.
--
-- The exporter claims a batch by giving its rows consecutive offsets of the
-- table's write stream (`stream_name`, `stream_offset`), appends exactly
-- that batch at its first offset, and sets `exported_at` in the transaction
-- that moves `export.streams.next_offset` past it. A claimed batch never
-- changes, so an append repeated after a crash is the same rows at the same
-- offset (BigQuery answers ALREADY_EXISTS).
CREATE TABLE export.rows (
    table_name     text NOT NULL,
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    row_key        text NOT NULL,
    row_data       jsonb NOT NULL,
    staged_at      timestamptz NOT NULL,
    stream_name    text,
    stream_offset  bigint CHECK (stream_offset >= 0),
    exported_at    timestamptz,
    PRIMARY KEY (table_name, seq),
    UNIQUE (table_name, row_key),
    CHECK ((stream_name IS NULL) = (stream_offset IS NULL)),
    CHECK (exported_at IS NULL OR stream_offset IS NOT NULL)
);

-- What the next claim takes, in staging order.
CREATE INDEX rows_unclaimed ON export.rows (table_name, seq) WHERE stream_offset IS NULL;
-- The claimed batch waiting for its append, and no offset given twice.
CREATE UNIQUE INDEX rows_by_offset ON export.rows (table_name, stream_name, stream_offset)
    WHERE stream_offset IS NOT NULL;
CREATE INDEX rows_pending ON export.rows (table_name, stream_offset)
    WHERE stream_offset IS NOT NULL AND exported_at IS NULL;

-- Per table: its committed write stream and how far it is known written.
-- Every row of the stream below `next_offset` is in BigQuery and has
-- `exported_at` set. `stopped` is set on OUT_OF_RANGE (a bug: the stream
-- ends before what was recorded) or a row BigQuery refuses: that table
-- waits for an operator, the others go on.
CREATE TABLE export.streams (
    table_name        text PRIMARY KEY,
    stream_name       text,
    next_offset       bigint NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
    rows_exported     bigint NOT NULL DEFAULT 0 CHECK (rows_exported >= 0),
    last_exported_at  timestamptz,
    last_error        text NOT NULL DEFAULT '',
    last_error_at     timestamptz,
    stopped           boolean NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
