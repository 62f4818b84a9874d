-- Every fact finance booked, in the order it was applied: the books can be
-- rebuilt from it (`tally finance rebuild`) without the bus, whose retention
-- is days. Append-only.

CREATE TABLE finance.facts (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- invoice_finalized, invoice_voided, credit_note_issued, payment_succeeded, refund_succeeded.
    kind        text NOT NULL,
    -- The fact's object: inv_…, cn_…, pay_…, ref_….
    source_id   text NOT NULL,
    -- crate::books::Booked as JSON.
    fact        jsonb NOT NULL,
    -- The service clock when it was booked (its transactions' posted_at).
    applied_at  timestamptz NOT NULL,
    -- A fact delivered again (a replay of the topic) is kept once.
    UNIQUE (kind, source_id)
);

CREATE TRIGGER facts_append_only BEFORE UPDATE OR DELETE ON finance.facts
    FOR EACH ROW EXECUTE FUNCTION finance.refuse_change();
