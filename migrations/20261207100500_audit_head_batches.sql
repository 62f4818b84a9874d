-- A transaction that appends several audit entries at once (a bill run's
-- batch of finalizations, `tally_audit::record_many`) moves its chain's head
-- past all of them in one update: the head still only moves forward, and
-- only onto an entry that exists with that hash (it was one entry at a time).

CREATE OR REPLACE FUNCTION tally_audit.head_forward_only() RETURNS trigger
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
    IF NEW.sequence <= OLD.sequence OR NOT exists_there THEN
        RAISE EXCEPTION 'audit_chain_head moves forward, onto an entry that exists (%)', TG_TABLE_SCHEMA
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
