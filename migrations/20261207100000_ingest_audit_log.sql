-- The audit log (issue 21; docs/architecture.md, "Audit log"): one chain per
-- service schema, each created by `tally_audit.create_chain(<schema>)`
-- below, one migration per schema. This first one defines the function and
-- creates ingest's chain.
--
-- A chain is `<schema>.audit_log`, written by `tally_audit::record` in the
-- same transaction as the change it records, and `<schema>.audit_chain_head`.
-- Tamper evidence: each entry's `hash` is SHA-256(previous hash || canonical
-- entry), `previous_hash` the hash of the entry before it (32 zero bytes for
-- sequence 1). The head is the one row every writer locks (`SELECT ... FOR
-- UPDATE`), so concurrent transactions append one after the other and the
-- chain never forks. The log is append-only: triggers refuse UPDATE, DELETE
-- and TRUNCATE; the head only moves forward, one entry at a time, onto an
-- entry that exists. A table owner or superuser can still disable the
-- triggers: `tally audit verify` against an exported head is what catches a
-- rewritten history.

CREATE SCHEMA IF NOT EXISTS tally_audit;

CREATE FUNCTION tally_audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused on %.%', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The head moves one entry forward at a time, onto an entry that exists.
CREATE FUNCTION tally_audit.head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    exists_there boolean;
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_chain_head: % refused on %', TG_OP, TG_TABLE_SCHEMA
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.audit_log WHERE sequence = $1 AND hash = $2)', TG_TABLE_SCHEMA)
        INTO exists_there USING NEW.sequence, NEW.hash;
    IF NEW.sequence <> OLD.sequence + 1 OR NOT exists_there THEN
        RAISE EXCEPTION 'audit_chain_head moves one entry forward, onto an entry that exists (%)', TG_TABLE_SCHEMA
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION tally_audit.create_chain(chain_schema text) RETURNS void
LANGUAGE plpgsql AS $outer$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE %1$I.audit_log (
            sequence       bigint PRIMARY KEY CHECK (sequence > 0),
            id             text NOT NULL UNIQUE CHECK (id LIKE 'aud\_%%'),
            recorded_at    timestamptz NOT NULL,
            action         text NOT NULL,
            resource_type  text NOT NULL,
            resource_id    text NOT NULL,
            actor_kind     text NOT NULL CHECK (actor_kind IN ('api_key', 'system', 'anonymous')),
            actor_id       text NOT NULL,
            actor_name     text NOT NULL,
            request_id     text,
            trace_id       text,
            reason         text,
            comment        text,
            -- Canonical JSON (sorted keys, no whitespace) kept as text: the
            -- hash covers these exact bytes, which jsonb would not keep.
            before_state   text,
            after_state    text,
            previous_hash  bytea NOT NULL CHECK (octet_length(previous_hash) = 32),
            hash           bytea NOT NULL UNIQUE CHECK (octet_length(hash) = 32)
        );
        CREATE INDEX audit_log_resource ON %1$I.audit_log (resource_id, recorded_at, sequence);
        CREATE INDEX audit_log_actor ON %1$I.audit_log (actor_id, recorded_at, sequence);
        CREATE INDEX audit_log_action ON %1$I.audit_log (action, recorded_at, sequence);
        CREATE INDEX audit_log_recorded_at ON %1$I.audit_log (recorded_at, sequence);

        CREATE TABLE %1$I.audit_chain_head (
            singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            sequence   bigint NOT NULL CHECK (sequence >= 0),
            hash       bytea NOT NULL CHECK (octet_length(hash) = 32)
        );
        INSERT INTO %1$I.audit_chain_head (singleton, sequence, hash)
        VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON %1$I.audit_log
            FOR EACH ROW EXECUTE FUNCTION tally_audit.refuse_change();
        CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON %1$I.audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION tally_audit.refuse_change();
        CREATE TRIGGER audit_chain_head_forward_only BEFORE UPDATE OR DELETE ON %1$I.audit_chain_head
            FOR EACH ROW EXECUTE FUNCTION tally_audit.head_forward_only();
        CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON %1$I.audit_chain_head
            FOR EACH STATEMENT EXECUTE FUNCTION tally_audit.refuse_change();
    $ddl$, chain_schema);
END
$outer$;

SELECT tally_audit.create_chain('ingest');
