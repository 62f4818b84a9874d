-- Foundation: one schema per service, the API-key table, and each service's
-- transactional outbox and consumer inbox.
--
-- Ownership rule: a service reads and writes only its own schema. `tally_auth`
-- is shared read-only configuration (API keys), written by `tally keys`.

CREATE SCHEMA IF NOT EXISTS ingest;
CREATE SCHEMA IF NOT EXISTS rating;
CREATE SCHEMA IF NOT EXISTS invoicing;
CREATE SCHEMA IF NOT EXISTS payments;
CREATE SCHEMA IF NOT EXISTS tally_auth;

-- API keys are stored as SHA-256 hashes of the full key; the key itself is
-- shown once at creation. Keys are 256-bit random tokens, so a fast hash is
-- enough (no password stretching needed) and lets every call be checked in
-- microseconds from an in-memory copy.
CREATE TABLE tally_auth.api_keys (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    key_hash    text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    scopes      text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'read', 'write', 'admin']),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

-- For each service schema:
--   outbox: messages written in the same transaction as the state they
--           describe, relayed to the bus in `seq` order by one relay at a time.
--   inbox:  ids of bus messages a consumer has applied, recorded in the same
--           transaction as their effect, so a redelivery is a no-op.
DO $$
DECLARE
    service text;
BEGIN
    FOREACH service IN ARRAY ARRAY['ingest', 'rating', 'invoicing', 'payments'] LOOP
        EXECUTE format($ddl$
            CREATE TABLE %1$I.outbox (
                seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                message_id    text NOT NULL UNIQUE,
                topic         text NOT NULL,
                message_type  text NOT NULL,
                type_version  integer NOT NULL,
                ordering_key  text,
                attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
                payload       bytea NOT NULL,
                created_at    timestamptz NOT NULL DEFAULT now(),
                published_at  timestamptz
            );
            CREATE INDEX outbox_unpublished ON %1$I.outbox (seq) WHERE published_at IS NULL;
            CREATE TABLE %1$I.inbox (
                subscription  text NOT NULL,
                message_id    text NOT NULL,
                processed_at  timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (subscription, message_id)
            );
        $ddl$, service);
    END LOOP;
END
$$;
