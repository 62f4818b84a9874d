-- Payments: refunds that pay out an invoicing credit note's `refund_amount`,
-- and refunds invoicing refused (one balance per invoice; docs/architecture.md,
-- "One balance per invoice").
--
-- `credit_note_id`: the note a refund pays out — at most one refund per note,
-- found again by a redelivered `CreditNoteIssued`.
-- `failure_code`: why a failed refund failed before Stripe was asked
-- (`exceeds_invoice_balance`: invoicing refused the reservation; a replay of
-- the same key is refused again with the stored reason). Empty otherwise.
ALTER TABLE payments.refunds
    ADD COLUMN credit_note_id text COLLATE "C" UNIQUE CHECK (credit_note_id LIKE 'cn\_%'),
    ADD COLUMN failure_code text NOT NULL DEFAULT '';

-- A mirrored credit note may now also carry a refund linked to the Stripe
-- credit note (`refunds[]`): the Stripe note is reduced_amount_due +
-- out_of_band_amount + refund_amount.
ALTER TABLE payments.credit_notes
    ADD COLUMN refund_amount numeric NOT NULL DEFAULT 0 CHECK (refund_amount >= 0),
    DROP CONSTRAINT credit_notes_check,
    DROP CONSTRAINT credit_notes_check1,
    ADD CONSTRAINT credit_notes_stripe_part_positive
        CHECK (reduced_amount_due + out_of_band_amount + refund_amount > 0),
    ADD CONSTRAINT credit_notes_stripe_part_within_amount
        CHECK (reduced_amount_due + out_of_band_amount + refund_amount <= amount);
