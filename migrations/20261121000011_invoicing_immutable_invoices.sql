-- Invoicing: a finalized invoice is immutable (correctness rule 4), enforced
-- by the database as well as the code. Once an invoice leaves `draft`, its
-- lines cannot be added, changed or removed, and its number, period and
-- amounts billed cannot change; what may still change is how it is settled
-- (status, amounts paid and credited, payment and void instants).
--
-- `refreshed_at`: when the bill run last composed a draft again, so drafts
-- are refreshed every `invoicing.draft_refresh_minutes`, not on every tick.

ALTER TABLE invoicing.invoices ADD COLUMN refreshed_at timestamptz;

CREATE FUNCTION invoicing.refuse_line_change_after_draft() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    invoice_status text;
BEGIN
    SELECT status INTO invoice_status FROM invoicing.invoices
        WHERE id = COALESCE(NEW.invoice_id, OLD.invoice_id);
    IF invoice_status IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'invoice % is %: its lines are immutable', COALESCE(NEW.invoice_id, OLD.invoice_id), invoice_status;
    END IF;
    RETURN COALESCE(NEW, OLD);
END
$$;
CREATE TRIGGER invoice_lines_immutable_after_draft
    BEFORE INSERT OR UPDATE OR DELETE ON invoicing.invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoicing.refuse_line_change_after_draft();

CREATE FUNCTION invoicing.refuse_invoice_change_after_draft() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'invoices are never deleted (%)', OLD.id;
    END IF;
    IF OLD.status <> 'draft' AND (
        NEW.number IS DISTINCT FROM OLD.number
        OR NEW.subscription_id <> OLD.subscription_id
        OR NEW.customer_id <> OLD.customer_id
        OR NEW.boundary_at <> OLD.boundary_at
        OR NEW.period_start <> OLD.period_start
        OR NEW.period_end <> OLD.period_end
        OR NEW.currency <> OLD.currency
        OR NEW.subtotal <> OLD.subtotal
        OR NEW.credits_applied <> OLD.credits_applied
        OR NEW.total <> OLD.total
        OR NEW.finalized_at IS DISTINCT FROM OLD.finalized_at
        OR NEW.status = 'draft'
    ) THEN
        RAISE EXCEPTION 'invoice % is %: what it billed is immutable', OLD.id, OLD.status;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER invoices_immutable_after_draft
    BEFORE UPDATE OR DELETE ON invoicing.invoices
    FOR EACH ROW EXECUTE FUNCTION invoicing.refuse_invoice_change_after_draft();
