-- An invoice's collection mode is text with a CHECK, like invoicing's other
-- enums (20261207800000_invoicing_own_model.sql), instead of the wire
-- enum's number.
--
-- Expand/contract (docs/operations.md, "Upgrades and migrations"): the
-- previous release reads and writes the integer `collection_mode`, so it
-- stays, and this release writes both. `collection_mode_name` is NULL until
-- finalization copies the customer's mode (the integer's 0). A row an old
-- pod finalizes during the rolling upgrade has only the integer: invoicing
-- reads the name when it is set and the integer otherwise
-- (`billing::store::InvoiceRow::collection_mode`), so every row reads the
-- same. The next release stops writing the integer and drops it.

ALTER TABLE invoicing.invoices
    ADD COLUMN collection_mode_name text
        CONSTRAINT invoices_collection_mode_name CHECK (
            collection_mode_name IN ('charge_automatically', 'send_invoice')),
    -- While both are written they never disagree.
    ADD CONSTRAINT invoices_collection_mode_agrees CHECK (
        collection_mode_name IS NULL
        OR collection_mode = CASE collection_mode_name WHEN 'charge_automatically' THEN 1 ELSE 2 END);

-- Existing rows get their name (what the wire numbers meant: 1 and 2; 0 is
-- "not finalized yet" and stays NULL). The trigger that keeps a finalized
-- invoice immutable does not cover this column.
UPDATE invoicing.invoices
SET collection_mode_name = CASE collection_mode
        WHEN 1 THEN 'charge_automatically'
        WHEN 2 THEN 'send_invoice'
    END
WHERE collection_mode <> 0;
