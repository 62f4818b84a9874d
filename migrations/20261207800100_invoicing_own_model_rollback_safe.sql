-- Invoicing's own model, rollback-safe (follows 20261207800000_invoicing_own_model.sql).
--
-- Expand/contract (docs/operations.md, "Upgrades and migrations"): in this
-- release invoicing reads its model and still writes the protobuf beside it
-- (`customers.snapshot`, `credit_notes.snapshot`, `invoice_lines.detail`),
-- and the conversion of old rows fills the new columns without dropping
-- the bytes, so the previous release — during the rolling upgrade, or after
-- `helm rollback` — reads every row. The next release stops writing the
-- bytes and drops the columns.

-- A customer rewritten by a pod of the previous release (snapshot only)
-- loses its now stale document, so it is read from the snapshot until the
-- next conversion; a write of this release changes both and keeps both.
CREATE OR REPLACE FUNCTION invoicing.customers_snapshot_wins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.snapshot IS DISTINCT FROM OLD.snapshot AND NEW.document IS NOT DISTINCT FROM OLD.document THEN
        NEW.document := NULL;
    END IF;
    RETURN NEW;
END
$$;

-- A finalized invoice's lines stay immutable; the one change allowed is the
-- conversion: filling the new columns of a line stored as protobuf only,
-- with everything it already had (its protobuf included) untouched.
CREATE OR REPLACE FUNCTION invoicing.refuse_line_change_after_draft() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    invoice_status text;
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.quantity IS NULL AND NEW.quantity IS NOT NULL
        AND NEW.detail IS NOT DISTINCT FROM OLD.detail
        AND NEW.id = OLD.id AND NEW.invoice_id = OLD.invoice_id AND NEW.position = OLD.position
        AND NEW.kind = OLD.kind AND NEW.plan_version_id = OLD.plan_version_id
        AND NEW.charge_key = OLD.charge_key AND NEW.in_advance = OLD.in_advance
        AND NEW.service_start = OLD.service_start AND NEW.service_end = OLD.service_end
        AND NEW.amount = OLD.amount
        AND NEW.usage_period_start IS NOT DISTINCT FROM OLD.usage_period_start
        AND NEW.original_invoice_id IS NOT DISTINCT FROM OLD.original_invoice_id THEN
        RETURN NEW;
    END IF;
    SELECT status INTO invoice_status FROM invoicing.invoices
        WHERE id = COALESCE(NEW.invoice_id, OLD.invoice_id);
    IF invoice_status IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'invoice % is %: its lines are immutable', COALESCE(NEW.invoice_id, OLD.invoice_id), invoice_status;
    END IF;
    RETURN COALESCE(NEW, OLD);
END
$$;
