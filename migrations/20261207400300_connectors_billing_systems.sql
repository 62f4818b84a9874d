-- Connectors: the per-customer billing system of record and the parity
-- reports that gate a cutover (docs/architecture.md, "Connectors: billing
-- system of record"; docs/migrations.md). Every change of state is audited in
-- connectors' own chain (`billing_system.*`).

SELECT tally_audit.create_chain('connectors');

-- Who bills a customer: `external` (the external biller; Tally may mirror),
-- `shadow` (both compute, Tally's invoices stay drafts), `cutover` (Tally
-- bills from `cutover_at`, a period boundary), `rolled_back` (back to the
-- external biller before Tally's next invoice date). `version` grows by one
-- per change and is what invoicing's billing mode is set with.
CREATE TABLE connectors.billing_systems (
    customer_id  text PRIMARY KEY CHECK (customer_id ~ '^cus_'),
    biller       text NOT NULL CHECK (biller IN ('orb', 'stripe_billing')),
    state        text NOT NULL CHECK (state IN ('external', 'shadow', 'cutover', 'rolled_back')),
    cutover_at   timestamptz,
    version      bigint NOT NULL CHECK (version >= 1),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CHECK ((state = 'cutover') = (cutover_at IS NOT NULL))
);

-- One parity report per customer and period (a comparison made again
-- replaces the period's report): Tally's shadow invoice against the external
-- biller's invoice for the same period.
CREATE TABLE connectors.parity_reports (
    customer_id          text NOT NULL CHECK (customer_id ~ '^cus_'),
    period_start         timestamptz NOT NULL,
    period_end           timestamptz NOT NULL,
    biller               text NOT NULL,
    tally_invoice_id     text NOT NULL DEFAULT '',
    external_invoice_id  text NOT NULL DEFAULT '',
    currency             text NOT NULL,
    matched              boolean NOT NULL,
    lines_not_compared   integer NOT NULL DEFAULT 0 CHECK (lines_not_compared >= 0),
    compared_at          timestamptz NOT NULL,
    PRIMARY KEY (customer_id, period_start),
    CHECK (period_end > period_start)
);
CREATE INDEX parity_reports_by_end ON connectors.parity_reports (customer_id, period_end);

-- What a report compared, one row per amount: `subtotal`, `discounts`,
-- `minimums`, `total`, `amount_due`, `line:<charge key>`, or `invoice` when
-- one side has no invoice. Both amounts and `difference` = Tally − external.
CREATE TABLE connectors.parity_findings (
    customer_id      text NOT NULL,
    period_start     timestamptz NOT NULL,
    position         integer NOT NULL CHECK (position >= 0),
    subject          text NOT NULL CHECK (length(subject) BETWEEN 1 AND 300),
    tally_amount     numeric,
    external_amount  numeric,
    difference       numeric,
    matches          boolean NOT NULL,
    note             text NOT NULL DEFAULT '',
    PRIMARY KEY (customer_id, period_start, position),
    FOREIGN KEY (customer_id, period_start)
        REFERENCES connectors.parity_reports (customer_id, period_start) ON DELETE CASCADE
);

-- Which Tally charge an Orb price bills (`plan charge key`): where a price is
-- mapped, parity compares its lines one by one.
CREATE TABLE connectors.orb_prices (
    orb_price_id  text PRIMARY KEY CHECK (length(orb_price_id) BETWEEN 1 AND 255),
    charge_key    text NOT NULL CHECK (length(charge_key) BETWEEN 1 AND 255),
    created_at    timestamptz NOT NULL
);
