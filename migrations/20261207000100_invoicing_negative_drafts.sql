-- A draft may add up to less than zero: a cancellation or a downgrade with
-- proration credits more than its boundary bills. Finalization carries the
-- negative subtotal to a credit grant and brings the invoice to zero (see
-- docs/architecture.md, "Finalization"); until then the draft must be storable.
-- The old CHECK (amount_credited <= total) refused it, so the bill run failed
-- at every run and the subscription was never invoiced again.
--
-- What can be credited is never more than the positive part of the total.
DO $$
DECLARE
    name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
     WHERE conrelid = 'invoicing.invoices'::regclass AND contype = 'c'
       AND pg_get_constraintdef(oid) = 'CHECK ((amount_credited <= total))';
    IF name IS NOT NULL THEN
        EXECUTE format('ALTER TABLE invoicing.invoices DROP CONSTRAINT %I', name);
    END IF;
END $$;

ALTER TABLE invoicing.invoices
    ADD CONSTRAINT invoices_credited_within_total CHECK (amount_credited <= GREATEST(total, 0)),
    -- Only a draft is ever negative: a finalized invoice carried its credit away.
    ADD CONSTRAINT invoices_negative_only_as_draft CHECK (total >= 0 OR status = 'draft');
