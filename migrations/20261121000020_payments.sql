-- Payments: the mapping between Tally and Stripe, the invoices payments
-- collects, their payments, attempts, refunds and disputes, the webhook
-- events already applied, and the append-only payments ledger. See
-- docs/architecture.md, "Payments".
--
-- Amounts are NUMERIC in the currency's major unit (like every Tally amount);
-- the Stripe adapter converts to and from minor units exactly.

-- Tally customer ↔ Stripe customer, both ways unique. `synced_hash` is the
-- SHA-256 of the customer snapshot last sent to Stripe: an unchanged snapshot
-- costs no call.
CREATE TABLE payments.stripe_customers (
    customer_id                 text COLLATE "C" PRIMARY KEY CHECK (customer_id LIKE 'cus\_%'),
    stripe_customer_id          text COLLATE "C" NOT NULL UNIQUE,
    livemode                    boolean NOT NULL,
    has_default_payment_method  boolean NOT NULL,
    synced_hash                 text NOT NULL,
    created_at                  timestamptz NOT NULL,
    synced_at                   timestamptz NOT NULL
);

-- The invoices invoicing asked payments to collect (or void), from
-- `invoice-events`. `version` is the highest `Invoice.version` applied: older
-- snapshots are ignored. `status` is payments' view of the collection:
--   syncing      being mirrored to Stripe
--   open         finalized in Stripe, awaiting payment
--   paid | void | uncollectible   final
--   nothing_due  amount due zero: nothing sent to Stripe
--   sync_failed  Stripe refused the mirror permanently (`sync_error` says why)
CREATE TABLE payments.invoices (
    invoice_id         text COLLATE "C" PRIMARY KEY CHECK (invoice_id LIKE 'inv\_%'),
    customer_id        text COLLATE "C" NOT NULL,
    currency           text NOT NULL,
    amount_due         numeric NOT NULL CHECK (amount_due >= 0),
    collection_mode    text NOT NULL CHECK (collection_mode IN ('charge_automatically', 'send_invoice')),
    net_terms_days     integer NOT NULL,
    version            bigint NOT NULL,
    status             text NOT NULL CHECK (status IN ('syncing', 'open', 'paid', 'void', 'uncollectible', 'nothing_due', 'sync_failed')),
    stripe_invoice_id  text COLLATE "C" UNIQUE,
    sync_error         text,
    snapshot           bytea NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX invoices_by_customer ON payments.invoices (customer_id);

-- Stripe invoice items already created for a Tally line: a redelivered
-- finalization never adds a line twice, even after Stripe forgot the
-- idempotency key (24 hours).
CREATE TABLE payments.invoice_items (
    line_id                 text COLLATE "C" PRIMARY KEY,
    invoice_id              text COLLATE "C" NOT NULL REFERENCES payments.invoices (invoice_id),
    stripe_invoice_item_id  text COLLATE "C" NOT NULL UNIQUE
);

-- One payment per collected invoice.
CREATE TABLE payments.payments (
    id                        text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'pay\_%'),
    invoice_id                text COLLATE "C" NOT NULL UNIQUE REFERENCES payments.invoices (invoice_id),
    customer_id               text COLLATE "C" NOT NULL,
    currency                  text NOT NULL,
    amount                    numeric NOT NULL CHECK (amount > 0),
    amount_refunded           numeric NOT NULL DEFAULT 0,
    status                    text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'partially_refunded', 'refunded', 'disputed', 'uncollectible', 'canceled')),
    stripe_invoice_id         text COLLATE "C",
    stripe_payment_intent_id  text COLLATE "C",
    stripe_charge_id          text COLLATE "C" UNIQUE,
    attempt_count             integer NOT NULL DEFAULT 0,
    first_failed_at           timestamptz,
    next_retry_at             timestamptz,
    dunning_step              integer NOT NULL DEFAULT 0,
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    CHECK (amount_refunded >= 0 AND amount_refunded <= amount)
);
CREATE INDEX payments_due_for_dunning ON payments.payments (next_retry_at) WHERE next_retry_at IS NOT NULL;
CREATE INDEX payments_by_customer ON payments.payments (customer_id, id);

-- Each collection attempt, numbered from 1 per payment.
CREATE TABLE payments.payment_attempts (
    payment_id                text COLLATE "C" NOT NULL REFERENCES payments.payments (id),
    attempt_number            integer NOT NULL CHECK (attempt_number >= 1),
    attempted_at              timestamptz NOT NULL,
    succeeded                 boolean NOT NULL,
    failure_code              text NOT NULL DEFAULT '',
    failure_message           text NOT NULL DEFAULT '',
    stripe_payment_intent_id  text NOT NULL DEFAULT '',
    stripe_charge_id          text NOT NULL DEFAULT '',
    PRIMARY KEY (payment_id, attempt_number)
);

-- Refunds. `idempotency_key` and `request_hash` come from `Refund` calls; a
-- refund made in the Stripe dashboard (learnt from `charge.refunded`) has
-- neither. The payment row's CHECK keeps the refunded total within the amount.
CREATE TABLE payments.refunds (
    id                text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'ref\_%'),
    payment_id        text COLLATE "C" NOT NULL REFERENCES payments.payments (id),
    invoice_id        text COLLATE "C" NOT NULL,
    idempotency_key   text UNIQUE,
    request_hash      text,
    amount            numeric NOT NULL CHECK (amount > 0),
    currency          text NOT NULL,
    reason            text NOT NULL,
    memo              text NOT NULL DEFAULT '',
    status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    stripe_refund_id  text COLLATE "C" UNIQUE,
    failure_reason    text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX refunds_by_payment ON payments.refunds (payment_id, created_at);

-- Disputes Stripe told us about.
CREATE TABLE payments.disputes (
    stripe_dispute_id  text COLLATE "C" PRIMARY KEY,
    payment_id         text COLLATE "C" NOT NULL REFERENCES payments.payments (id),
    stripe_charge_id   text COLLATE "C" NOT NULL,
    amount             numeric NOT NULL CHECK (amount > 0),
    currency           text NOT NULL,
    reason             text NOT NULL,
    created_at         timestamptz NOT NULL
);

-- Stripe webhook events applied, by Stripe's event id: a redelivered event
-- changes nothing.
CREATE TABLE payments.webhook_events (
    stripe_event_id    text COLLATE "C" PRIMARY KEY,
    event_type         text NOT NULL,
    stripe_created_at  timestamptz NOT NULL,
    received_at        timestamptz NOT NULL,
    outcome            text NOT NULL
);

-- The payments ledger: double-entry, append-only. A transaction's id is its
-- idempotency key; `body` is the serde JSON of the domain `Transaction`
-- (validated again when read), so a replay is compared exactly.
CREATE TABLE payments.ledger_accounts (
    id        text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'acct\_%'),
    name      text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
    currency  text NOT NULL
);

CREATE TABLE payments.ledger_transactions (
    id            text COLLATE "C" PRIMARY KEY CHECK (id LIKE 'txn\_%'),
    effective_at  timestamptz NOT NULL,
    description   text NOT NULL,
    reverses      text COLLATE "C" UNIQUE REFERENCES payments.ledger_transactions (id),
    body          jsonb NOT NULL,
    recorded_at   timestamptz NOT NULL
);

CREATE TABLE payments.ledger_entries (
    transaction_id  text COLLATE "C" NOT NULL REFERENCES payments.ledger_transactions (id),
    position        integer NOT NULL,
    account_id      text COLLATE "C" NOT NULL REFERENCES payments.ledger_accounts (id),
    side            text NOT NULL CHECK (side IN ('debit', 'credit')),
    amount          numeric NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    PRIMARY KEY (transaction_id, position)
);
CREATE INDEX ledger_entries_by_account ON payments.ledger_entries (account_id);

CREATE FUNCTION payments.refuse_ledger_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the payments ledger is append-only: post a reversing transaction instead';
END;
$$;

CREATE TRIGGER ledger_transactions_append_only
    BEFORE UPDATE OR DELETE ON payments.ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION payments.refuse_ledger_change();
CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON payments.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION payments.refuse_ledger_change();
