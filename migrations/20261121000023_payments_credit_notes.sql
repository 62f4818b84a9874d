-- Credit notes issued in invoicing that payments mirrored to Stripe. One row
-- per Tally credit note, written in the transaction that lowers the payment
-- and posts the ledger entries: a redelivered `CreditNoteIssued` (even under
-- another message id) finds it and changes nothing.
CREATE TABLE payments.credit_notes (
    credit_note_id         text COLLATE "C" PRIMARY KEY CHECK (credit_note_id LIKE 'cn\_%'),
    invoice_id             text COLLATE "C" NOT NULL REFERENCES payments.invoices (invoice_id),
    currency               text NOT NULL,
    amount                 numeric NOT NULL CHECK (amount > 0),
    -- How Stripe settled it: lowered the amount due of an open invoice, or
    -- recorded a credit outside Stripe on a paid one.
    settlement             text NOT NULL CHECK (settlement IN ('reduce_amount_due', 'out_of_band')),
    stripe_credit_note_id  text COLLATE "C" NOT NULL UNIQUE,
    created_at             timestamptz NOT NULL
);
CREATE INDEX credit_notes_by_invoice ON payments.credit_notes (invoice_id);
