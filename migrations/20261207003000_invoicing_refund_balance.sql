-- Invoicing: one creditable / refundable balance per invoice, shared by credit
-- notes and refunds (DESIGN.md correctness rule 10; docs/architecture.md,
-- "One balance per invoice").
--
-- Every refund of an invoice's payment has a row here, in the invoice's
-- currency:
--   origin 'reserved'     payments reserved it (`InvoiceService.ReserveRefund`)
--                         before asking Stripe; keyed by its `ref_…` id
--   origin 'credit_note'  a credit note's `refund_amount`, which payments pays
--                         out; keyed by the note until payments names the refund
--   origin 'unreserved'   a refund invoicing learnt only from `payment-events`
--                         (made in the Stripe dashboard, or before this table)
-- status 'held'     the amount is taken while payments asks Stripe
--        'refunded' the refund succeeded; `credit_note_id` carries it (a note
--                   may be smaller, or absent, for an unreserved refund that
--                   did not fit what remained creditable)
--        'released' the refund failed; the amount is free again
--
-- The balance, read and changed only under the invoice row's lock:
--   creditable = total − amount_credited − Σ held reservations without a note
-- and a reservation or a credit note must fit in it.
CREATE TABLE invoicing.invoice_refunds (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id      text NOT NULL REFERENCES invoicing.invoices (id),
    refund_id       text UNIQUE,
    credit_note_id  text REFERENCES invoicing.credit_notes (id),
    payment_id      text NOT NULL DEFAULT '',
    origin          text NOT NULL CHECK (origin IN ('reserved', 'credit_note', 'unreserved')),
    currency        text NOT NULL,
    amount          numeric NOT NULL CHECK (amount > 0),
    status          text NOT NULL CHECK (status IN ('held', 'refunded', 'released')),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CHECK (refund_id IS NOT NULL OR credit_note_id IS NOT NULL),
    -- A note's refund is known by its note from the start.
    CHECK (origin <> 'credit_note' OR credit_note_id IS NOT NULL)
);
CREATE INDEX invoice_refunds_by_invoice ON invoicing.invoice_refunds (invoice_id);
-- One refund per credit note that asks for one.
CREATE UNIQUE INDEX invoice_refunds_one_per_note ON invoicing.invoice_refunds (credit_note_id)
    WHERE origin = 'credit_note';
