-- Payments: reconciliation reports and their findings (see docs/architecture.md,
-- "Payments: reconciliation"). A report covers the Stripe and Tally objects
-- created in [window_start, window_end). Findings are written once, when the
-- run completes; counts are kept on the report for listing and metrics.
CREATE TABLE payments.reconciliation_reports (
    id                 text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'rec\_%'),
    idempotency_key    text NOT NULL UNIQUE,
    request_hash       text NOT NULL,
    window_start       timestamptz NOT NULL,
    window_end         timestamptz NOT NULL CHECK (window_end > window_start),
    state              text NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed')),
    scheduled          boolean NOT NULL,
    matched            bigint NOT NULL DEFAULT 0,
    missing_in_tally   bigint NOT NULL DEFAULT 0,
    missing_in_stripe  bigint NOT NULL DEFAULT 0,
    amount_mismatch    bigint NOT NULL DEFAULT 0,
    status_mismatch    bigint NOT NULL DEFAULT 0,
    error              text NOT NULL DEFAULT '',
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz
);

CREATE TABLE payments.reconciliation_findings (
    id               text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'rcf\_%'),
    report_id        text COLLATE "C" NOT NULL REFERENCES payments.reconciliation_reports (id),
    position         integer NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('missing_in_tally', 'missing_in_stripe', 'amount_mismatch', 'status_mismatch')),
    object           text NOT NULL CHECK (object IN ('invoice', 'payment', 'refund', 'balance_transaction')),
    tally_id         text NOT NULL,
    stripe_id        text NOT NULL,
    tally_amount     numeric,
    tally_currency   text NOT NULL,
    stripe_amount    numeric,
    stripe_currency  text NOT NULL,
    tally_status     text NOT NULL,
    stripe_status    text NOT NULL,
    description      text NOT NULL,
    UNIQUE (report_id, position)
);
