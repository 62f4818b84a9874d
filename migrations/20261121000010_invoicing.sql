-- Invoicing: customers, subscriptions and their phases, bill runs, invoices,
-- credit notes, credit grants and their double-entry ledger.
--
-- Invariants the constraints carry (see docs/architecture.md, "Invoicing"):
--   * one invoice per (subscription, billing boundary): two bill-run replicas
--     or a retry after a crash cannot bill a period twice;
--   * invoice and credit-note numbers come from `number_counters`, a row per
--     prefix updated in the finalizing transaction (gapless, never a sequence);
--   * every request that moves money names an idempotency key, unique per method.

-- Idempotency of mutating RPCs: the first result per (method, key) and the
-- hash of the request that produced it.
CREATE TABLE invoicing.idempotency_keys (
    method        text NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    resource_id   text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (method, key)
);

-- Customers. `snapshot` is the protobuf `Customer` as last written; the
-- columns beside it are what queries filter and order on.
CREATE TABLE invoicing.customers (
    id            text PRIMARY KEY,
    external_id   text COLLATE "C" NOT NULL UNIQUE,
    currency      text NOT NULL,
    status        text NOT NULL CHECK (status IN ('active', 'archived')),
    request_hash  text NOT NULL,
    snapshot      bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX customers_by_creation ON invoicing.customers (created_at, id);

-- The published plan versions subscriptions use, copied from rating's catalog
-- when first used (published versions are immutable, so the copy never goes
-- stale). `recurring` is the list of recurring charges with their fee per
-- period (JSON: key, name, timing, amount).
CREATE TABLE invoicing.plan_versions (
    id                  text PRIMARY KEY,
    plan_id             text NOT NULL,
    version             integer NOT NULL,
    currency            text NOT NULL,
    billing_interval    text NOT NULL,
    trial_days          integer NOT NULL,
    minimum_commitment  numeric,
    recurring           jsonb NOT NULL,
    fetched_at          timestamptz NOT NULL
);

CREATE TABLE invoicing.subscriptions (
    id                 text PRIMARY KEY,
    customer_id        text NOT NULL REFERENCES invoicing.customers (id),
    currency           text NOT NULL,
    billing_interval   text NOT NULL,
    start_at           timestamptz NOT NULL,
    billing_anchor_at  timestamptz NOT NULL,
    trial_end_at       timestamptz,
    cancel_at          timestamptz,
    canceled_at        timestamptz,
    cancel_reason      text NOT NULL DEFAULT '',
    cancel_proration   text NOT NULL DEFAULT 'prorate',
    past_due           boolean NOT NULL DEFAULT false,
    version            bigint NOT NULL CHECK (version >= 1),
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    -- The last billing boundary invoiced (NULL before the first invoice).
    billed_through     timestamptz,
    -- The next boundary the bill run must invoice; NULL when nothing is left.
    next_bill_at       timestamptz,
    CHECK (billing_anchor_at >= start_at),
    CHECK (trial_end_at IS NULL OR trial_end_at > start_at)
);
CREATE INDEX subscriptions_by_customer ON invoicing.subscriptions (customer_id, created_at DESC);
CREATE INDEX subscriptions_due ON invoicing.subscriptions (next_bill_at) WHERE next_bill_at IS NOT NULL;

-- Which plan version covers which stretch of a subscription.
CREATE TABLE invoicing.subscription_phases (
    subscription_id   text NOT NULL REFERENCES invoicing.subscriptions (id),
    phase_index       integer NOT NULL,
    plan_id           text NOT NULL,
    plan_version_id   text NOT NULL REFERENCES invoicing.plan_versions (id),
    start_at          timestamptz NOT NULL,
    end_at            timestamptz,
    proration_policy  text NOT NULL CHECK (proration_policy IN ('none', 'prorate', 'prorate_by_day')),
    PRIMARY KEY (subscription_id, phase_index),
    CHECK (end_at IS NULL OR end_at > start_at)
);

-- Every pause window (the snapshot publishes the latest; fees skip all).
CREATE TABLE invoicing.subscription_pauses (
    subscription_id  text NOT NULL REFERENCES invoicing.subscriptions (id),
    pause_at         timestamptz NOT NULL,
    resume_at        timestamptz,
    PRIMARY KEY (subscription_id, pause_at),
    CHECK (resume_at IS NULL OR resume_at > pause_at)
);

CREATE TABLE invoicing.invoices (
    id                    text PRIMARY KEY,
    subscription_id       text NOT NULL REFERENCES invoicing.subscriptions (id),
    customer_id           text NOT NULL REFERENCES invoicing.customers (id),
    -- The boundary whose bill run created the invoice: the subscription's
    -- start (first in-advance fees) or the end of a billing period.
    boundary_at           timestamptz NOT NULL,
    period_start          timestamptz NOT NULL,
    period_end            timestamptz NOT NULL,
    status                text NOT NULL CHECK (status IN ('draft', 'finalized', 'paid', 'void', 'uncollectible')),
    billing_reason        text NOT NULL,
    currency              text NOT NULL,
    number                text UNIQUE,
    subtotal              numeric NOT NULL,
    credits_applied       numeric NOT NULL DEFAULT 0 CHECK (credits_applied <= 0),
    total                 numeric NOT NULL,
    amount_paid           numeric NOT NULL DEFAULT 0,
    amount_credited       numeric NOT NULL DEFAULT 0,
    collection_mode       integer NOT NULL DEFAULT 0,
    grace_period_ends_at  timestamptz NOT NULL,
    finalized_at          timestamptz,
    due_at                timestamptz,
    paid_at               timestamptz,
    voided_at             timestamptz,
    void_reason           text NOT NULL DEFAULT '',
    version               bigint NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    UNIQUE (subscription_id, boundary_at),
    CHECK (amount_credited <= total),
    CHECK ((number IS NULL) = (status = 'draft'))
);
CREATE INDEX invoices_drafts ON invoicing.invoices (grace_period_ends_at) WHERE status = 'draft';
CREATE INDEX invoices_by_customer ON invoicing.invoices (customer_id, period_start DESC);

-- Lines in printed order. `detail` is the protobuf `InvoiceLine`; the columns
-- are what later bill runs sum (fees billed in advance, usage billed per
-- period for late-usage adjustments).
CREATE TABLE invoicing.invoice_lines (
    id                   text PRIMARY KEY,
    invoice_id           text NOT NULL REFERENCES invoicing.invoices (id),
    position             integer NOT NULL,
    kind                 text NOT NULL,
    plan_version_id      text NOT NULL DEFAULT '',
    charge_key           text NOT NULL DEFAULT '',
    in_advance           boolean NOT NULL DEFAULT false,
    service_start        timestamptz NOT NULL,
    service_end          timestamptz NOT NULL,
    amount               numeric NOT NULL,
    -- For usage lines and usage adjustments: the billing period whose usage
    -- the line bills, and the invoice that first billed it.
    usage_period_start   timestamptz,
    original_invoice_id  text,
    detail               bytea NOT NULL,
    UNIQUE (invoice_id, position)
);
CREATE INDEX invoice_lines_by_invoice ON invoicing.invoice_lines (invoice_id, position);

-- Gapless numbering: one row per prefix, incremented in the transaction that
-- assigns the number (a rollback gives the number back).
CREATE TABLE invoicing.number_counters (
    prefix       text PRIMARY KEY,
    last_number  bigint NOT NULL CHECK (last_number >= 0)
);

CREATE TABLE invoicing.credit_notes (
    id                   text PRIMARY KEY,
    number               text NOT NULL UNIQUE,
    invoice_id           text NOT NULL REFERENCES invoicing.invoices (id),
    customer_id          text NOT NULL,
    total                numeric NOT NULL CHECK (total > 0),
    refund_id            text UNIQUE,
    snapshot             bytea NOT NULL,
    created_at           timestamptz NOT NULL
);
CREATE INDEX credit_notes_by_invoice ON invoicing.credit_notes (invoice_id, created_at DESC);
CREATE INDEX credit_notes_by_customer ON invoicing.credit_notes (customer_id, created_at DESC);

CREATE TABLE invoicing.credit_grants (
    id              text PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES invoicing.customers (id),
    kind            text NOT NULL CHECK (kind IN ('prepaid', 'promotional')),
    currency        text NOT NULL,
    amount          numeric NOT NULL CHECK (amount > 0),
    remaining       numeric NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    priority        integer NOT NULL,
    effective_at    timestamptz NOT NULL,
    expires_at      timestamptz,
    -- NULL while it can still be burned; set when expired or voided.
    closed          text CHECK (closed IN ('expired', 'void')),
    description     text NOT NULL,
    credit_note_id  text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL
);
CREATE INDEX credit_grants_by_customer ON invoicing.credit_grants (customer_id);
CREATE INDEX credit_grants_to_expire ON invoicing.credit_grants (expires_at)
    WHERE closed IS NULL AND remaining > 0 AND expires_at IS NOT NULL;

-- The credit ledger: each row is one balanced domain transaction (serde JSON
-- of `tally_domain::ledger::Transaction`, validated again on read) and the
-- entries on the customer's credit account it produced. Append-only.
CREATE TABLE invoicing.ledger_transactions (
    id           text PRIMARY KEY,
    customer_id  text NOT NULL,
    body         jsonb NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE TABLE invoicing.credit_ledger_entries (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               text NOT NULL UNIQUE,
    transaction_id   text NOT NULL REFERENCES invoicing.ledger_transactions (id),
    customer_id      text NOT NULL,
    credit_grant_id  text NOT NULL REFERENCES invoicing.credit_grants (id),
    kind             text NOT NULL CHECK (kind IN ('grant', 'burn', 'expiry', 'void', 'reversal')),
    amount           numeric NOT NULL,
    currency         text NOT NULL,
    balance_after    numeric NOT NULL,
    invoice_id       text NOT NULL DEFAULT '',
    counter_account  text NOT NULL,
    description      text NOT NULL,
    effective_at     timestamptz NOT NULL
);
CREATE INDEX credit_ledger_by_customer ON invoicing.credit_ledger_entries (customer_id, seq);

CREATE FUNCTION invoicing.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invoicing.% is append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON invoicing.ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION invoicing.refuse_change();
CREATE TRIGGER credit_ledger_entries_append_only BEFORE UPDATE OR DELETE ON invoicing.credit_ledger_entries
    FOR EACH ROW EXECUTE FUNCTION invoicing.refuse_change();
