-- Finance: the general ledger built from billing facts (docs/architecture.md,
-- "Finance"). Finance reads and writes only this schema; it learns facts from
-- the bus (`invoice-events`, `payment-events`), recorded once in its inbox.

CREATE SCHEMA IF NOT EXISTS finance;

CREATE TABLE finance.inbox (
    subscription  text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, message_id)
);

-- The chart of accounts, per currency, opened as postings need them.
CREATE TABLE finance.accounts (
    id        text PRIMARY KEY,
    code      text NOT NULL,
    name      text NOT NULL,
    -- 1 asset, 2 liability, 3 equity, 4 revenue, 5 expense (AccountKind).
    kind      smallint NOT NULL CHECK (kind BETWEEN 1 AND 5),
    currency  text NOT NULL CHECK (currency ~ '^[A-Z]{3}$')
);

-- Journal transactions: one per (fact, rule), with the deterministic id the
-- domain derives from the fact, so a redelivered or replayed fact inserts
-- nothing. `body` is the domain transaction as built (canonical JSON); a
-- replay must build the same body, which is checked. `effective_at` is the
-- body's, unless a close moved a late fact into the open period: then the
-- body's time is kept in `original_effective_at`.
CREATE TABLE finance.transactions (
    seq                    bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                     text PRIMARY KEY,
    effective_at           timestamptz NOT NULL,
    original_effective_at  timestamptz,
    posted_at              timestamptz NOT NULL,
    description            text NOT NULL,
    reverses               text REFERENCES finance.transactions (id),
    -- `invoice`, `payment`, `refund`, `credit_note`, `recognition`.
    source_kind            text NOT NULL,
    -- The fact's object: inv_…, pay_…, ref_…, cn_….
    source_id              text NOT NULL,
    body                   jsonb NOT NULL
);
CREATE INDEX transactions_by_source ON finance.transactions (source_id, seq);
CREATE INDEX transactions_by_effective ON finance.transactions (effective_at, seq);

CREATE TABLE finance.entries (
    transaction_id  text NOT NULL REFERENCES finance.transactions (id),
    line            smallint NOT NULL,
    account_id      text NOT NULL REFERENCES finance.accounts (id),
    currency        text NOT NULL,
    -- 1 debit, 2 credit.
    side            smallint NOT NULL CHECK (side IN (1, 2)),
    amount          numeric NOT NULL CHECK (amount > 0),
    -- The transaction's (for the trial balance at an instant).
    effective_at    timestamptz NOT NULL,
    PRIMARY KEY (transaction_id, line)
);
CREATE INDEX entries_by_account ON finance.entries (currency, account_id, effective_at);

CREATE FUNCTION finance.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'finance.% is append-only: correct with a reversing transaction', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER transactions_append_only BEFORE UPDATE OR DELETE ON finance.transactions
    FOR EACH ROW EXECUTE FUNCTION finance.refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON finance.entries
    FOR EACH ROW EXECUTE FUNCTION finance.refuse_change();

-- Finalized invoices as finance received them (the domain fact, JSON): a void
-- reverses what was posted for them, and their deferred lines' schedules are
-- built from them.
CREATE TABLE finance.invoices (
    invoice_id    text PRIMARY KEY,
    customer_id   text NOT NULL,
    currency      text NOT NULL,
    finalized_at  timestamptz NOT NULL,
    voided_at     timestamptz,
    fact          jsonb NOT NULL
);

-- Each deferred line's recognition schedule, one row per UTC day with an
-- amount; `recognised` once the day's transaction is posted (the recognition
-- job posts every day before the service clock's current day).
CREATE TABLE finance.schedule_days (
    invoice_id  text NOT NULL REFERENCES finance.invoices (invoice_id),
    line_id     text NOT NULL,
    day         date NOT NULL,
    amount      numeric NOT NULL,
    currency    text NOT NULL,
    recognised  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (invoice_id, line_id, day)
);
CREATE INDEX schedule_days_to_recognise ON finance.schedule_days (day) WHERE NOT recognised;

-- Period closes: nothing is posted before the latest `close_through`.
CREATE TABLE finance.closes (
    close_through  timestamptz PRIMARY KEY,
    closed_at      timestamptz NOT NULL,
    memo           text NOT NULL DEFAULT ''
);
