-- Credit notes issued in invoicing that payments mirrored to Stripe. One row
-- per Tally credit note, written in the transaction that lowers the payment
-- and posts the ledger entries: a redelivered `CreditNoteIssued` (even under
-- another message id) finds it and changes nothing.
CREATE TABLE payments.credit_notes (
    credit_note_id         text COLLATE "C" PRIMARY KEY CHECK (credit_note_id LIKE 'cn\_%'),
    invoice_id             text COLLATE "C" NOT NULL REFERENCES payments.invoices (invoice_id),
    currency               text NOT NULL,
    amount                 numeric NOT NULL CHECK (amount > 0),
    -- What it took off the open invoice's amount due (Stripe's pre-payment
    -- part), and what was credited outside Stripe on a paid invoice
    -- (`out_of_band_amount`). Their sum is the Stripe credit note; the rest
    -- of `amount` credits what was settled before finalization (wallet
    -- credits), which never reached Stripe.
    reduced_amount_due     numeric NOT NULL CHECK (reduced_amount_due >= 0),
    out_of_band_amount     numeric NOT NULL CHECK (out_of_band_amount >= 0),
    stripe_credit_note_id  text COLLATE "C" NOT NULL UNIQUE,
    created_at             timestamptz NOT NULL,
    CHECK (reduced_amount_due + out_of_band_amount > 0),
    CHECK (reduced_amount_due + out_of_band_amount <= amount)
);
CREATE INDEX credit_notes_by_invoice ON payments.credit_notes (invoice_id);
