-- The audit log of ingest: who changed what, when and why (issue 21;
-- docs/architecture.md, "Audit log"). Written by `tally_audit::record` in the
-- same transaction as the change it records.
--
-- Tamper evidence: each entry's `hash` is SHA-256(previous hash || canonical
-- entry), `previous_hash` the hash of the entry before it (32 zero bytes for
-- sequence 1). `audit_chain_head` is the one row every writer locks
-- (`SELECT ... FOR UPDATE`), so concurrent transactions append one after the
-- other and the chain never forks. The log is append-only: triggers refuse
-- UPDATE, DELETE and TRUNCATE; the head only moves forward, onto an entry that
-- exists. A superuser can still disable the triggers: `tally audit verify`
-- against an exported head is what catches a rewritten history.

CREATE TABLE ingest.audit_log (
    sequence       bigint PRIMARY KEY CHECK (sequence > 0),
    id             text NOT NULL UNIQUE CHECK (id LIKE 'aud\_%'),
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
    -- Canonical JSON (sorted keys, no whitespace) kept as text: the hash
    -- covers these exact bytes, which jsonb would not keep.
    before_state   text,
    after_state    text,
    previous_hash  bytea NOT NULL CHECK (octet_length(previous_hash) = 32),
    hash           bytea NOT NULL UNIQUE CHECK (octet_length(hash) = 32)
);
CREATE INDEX audit_log_resource ON ingest.audit_log (resource_id, recorded_at, sequence);
CREATE INDEX audit_log_actor ON ingest.audit_log (actor_id, recorded_at, sequence);
CREATE INDEX audit_log_action ON ingest.audit_log (action, recorded_at, sequence);
CREATE INDEX audit_log_recorded_at ON ingest.audit_log (recorded_at, sequence);

CREATE TABLE ingest.audit_chain_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    sequence   bigint NOT NULL CHECK (sequence >= 0),
    hash       bytea NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO ingest.audit_chain_head (singleton, sequence, hash)
VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION ingest.audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused on %.%', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON ingest.audit_log
    FOR EACH ROW EXECUTE FUNCTION ingest.audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ingest.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ingest.audit_log_refuse_change();

-- The head moves one entry forward at a time, onto an entry that exists.
CREATE FUNCTION ingest.audit_chain_head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_chain_head: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.sequence <> OLD.sequence + 1 OR NOT EXISTS (
        SELECT 1 FROM ingest.audit_log WHERE sequence = NEW.sequence AND hash = NEW.hash
    ) THEN
        RAISE EXCEPTION 'audit_chain_head moves one entry forward, onto an entry that exists'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_chain_head_forward_only BEFORE UPDATE OR DELETE ON ingest.audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION ingest.audit_chain_head_forward_only();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON ingest.audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION ingest.audit_log_refuse_change();
