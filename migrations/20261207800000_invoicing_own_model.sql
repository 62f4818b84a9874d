-- Invoicing stores its own model, not protobuf (docs/architecture.md,
-- "Invoicing: stored model").
--
-- Before: `customers.snapshot`, `credit_notes.snapshot` and
-- `invoice_lines.detail` held encoded protobuf messages, and every reader
-- decoded them. After:
--   * customers.document      JSON of invoicing's `Customer` model;
--   * credit_notes            explicit columns (reason, memo, currency,
--                             credited_to_balance, refund_amount) and the
--                             lines as JSON;
--   * invoice_lines           explicit columns (description, quantity,
--                             unit_price, precise_amount) and the line's
--                             explanation as JSON (tagged by `type`).
--
-- SQL cannot decode protobuf, so this migration only adds the new columns
-- and lets the old ones be NULL. Converting the rows that exist is a Rust
-- step, `tally_invoicing::upgrade`, which `tally migrate` (and `tally dev`)
-- runs right after the migrations: under an advisory lock, in batches, each
-- batch one transaction, idempotent (it converts only rows still in the old
-- format, and a converted row has its protobuf set to NULL). Until a row is
-- converted — or when a pod of the previous release writes one during a
-- rolling upgrade — readers decode its old bytes through the same mapping,
-- so nothing is unreadable at any point. A later migration drops the old
-- columns once a release has run this conversion everywhere.
--
-- Enums are stored as text and checked here; the code refuses a name it
-- does not know when it reads one (never a silent default).

ALTER TABLE invoicing.customers
    ADD COLUMN document jsonb,
    ALTER COLUMN snapshot DROP NOT NULL,
    ADD CONSTRAINT customers_stored CHECK (document IS NOT NULL OR snapshot IS NOT NULL),
    ADD CONSTRAINT customers_document_collection_mode CHECK (
        document IS NULL OR document->>'collection_mode' IN ('charge_automatically', 'send_invoice')),
    ADD CONSTRAINT customers_document_status CHECK (
        document IS NULL OR document->>'status' = status);

-- A pod of the previous release updating a converted customer writes only
-- the snapshot: the document would go stale, so it is dropped and the
-- snapshot is read (and converted again by the next `tally migrate`).
CREATE FUNCTION invoicing.customers_snapshot_wins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.snapshot IS NOT NULL AND NEW.snapshot IS DISTINCT FROM OLD.snapshot THEN
        NEW.document := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER customers_snapshot_wins BEFORE UPDATE ON invoicing.customers
    FOR EACH ROW EXECUTE FUNCTION invoicing.customers_snapshot_wins();

ALTER TABLE invoicing.credit_notes
    ADD COLUMN reason text CHECK (reason IN (
        'duplicate', 'fraudulent', 'order_change', 'product_unsatisfactory', 'billing_error', 'refund')),
    ADD COLUMN memo text,
    ADD COLUMN lines jsonb,
    ADD COLUMN currency text,
    ADD COLUMN credited_to_balance boolean,
    ADD COLUMN refund_amount numeric CHECK (refund_amount > 0),
    ALTER COLUMN snapshot DROP NOT NULL,
    ADD CONSTRAINT credit_notes_stored CHECK (
        (reason IS NOT NULL AND memo IS NOT NULL AND lines IS NOT NULL AND currency IS NOT NULL
            AND credited_to_balance IS NOT NULL)
        OR snapshot IS NOT NULL);

ALTER TABLE invoicing.invoice_lines
    ADD COLUMN description text,
    ADD COLUMN quantity numeric,
    ADD COLUMN unit_price numeric,
    ADD COLUMN precise_amount numeric,
    ADD COLUMN explanation jsonb,
    ALTER COLUMN detail DROP NOT NULL,
    ADD CONSTRAINT invoice_lines_kind CHECK (kind IN (
        'recurring', 'usage', 'proration_credit', 'proration_charge', 'minimum_true_up',
        'credits_applied', 'adjustment')),
    ADD CONSTRAINT invoice_lines_stored CHECK (
        (description IS NOT NULL AND quantity IS NOT NULL AND precise_amount IS NOT NULL)
        OR detail IS NOT NULL),
    ADD CONSTRAINT invoice_lines_explanation_type CHECK (
        explanation IS NULL OR explanation->>'type' IN (
            'recurring', 'usage', 'proration', 'minimum_true_up', 'credits_applied', 'adjustment'));

ALTER TABLE invoicing.invoices
    ADD CONSTRAINT invoices_billing_reason CHECK (billing_reason IN (
        'subscription_cycle', 'subscription_create', 'subscription_update', 'subscription_end')),
    -- The wire enum's numbers (0 until finalization copies the customer's).
    ADD CONSTRAINT invoices_collection_mode CHECK (collection_mode IN (0, 1, 2));

-- A finalized invoice's lines stay immutable; the one change allowed is the
-- conversion above: filling the new columns of a line stored as protobuf
-- and dropping its bytes, with what it billed (kind, period, amount,
-- position, invoice) untouched.
CREATE OR REPLACE FUNCTION invoicing.refuse_line_change_after_draft() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    invoice_status text;
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.detail IS NOT NULL AND OLD.quantity IS NULL
        AND NEW.detail IS NULL AND NEW.quantity IS NOT NULL
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

-- What the conversion looks for.
CREATE INDEX customers_to_convert ON invoicing.customers (id) WHERE document IS NULL;
CREATE INDEX credit_notes_to_convert ON invoicing.credit_notes (id) WHERE reason IS NULL;
CREATE INDEX invoice_lines_to_convert ON invoicing.invoice_lines (id) WHERE quantity IS NULL;
