-- Finance: what revenue analytics (MRR) is computed from (docs/architecture.md,
-- "Finance"; crates/finance/src/analytics). Two inputs, both from the bus:
-- each subscription's latest snapshot (`subscription-events`) for its timing,
-- and the recurring fees invoicing invoiced (`invoice-events`). MRR at an
-- instant, and every customer's MRR history, are computed from these rows at
-- query time: nothing derived is stored, so no stored total can disagree
-- with its inputs when a late or out-of-order fact arrives.

-- A subscription as its highest-version snapshot says (applied only when the
-- version is higher than the stored one). The instants that decide when it
-- contributes to MRR: not before `start_at`, not before `trial_end_at`, not
-- inside a pause, not from `ends_at` (ended, or scheduled to end) on.
CREATE TABLE finance.subscriptions (
    subscription_id  text PRIMARY KEY,
    customer_id      text NOT NULL,
    currency         text NOT NULL,
    -- `SubscriptionStatus` of the snapshot, e.g. `active` (for operators; the
    -- instants above decide MRR at any instant).
    status           text NOT NULL,
    version          bigint NOT NULL CHECK (version > 0),
    start_at         timestamptz,
    trial_end_at     timestamptz,
    ends_at          timestamptz,
    -- Every pause window: [{"pause_at": …, "resume_at": … | null}].
    pauses           jsonb NOT NULL DEFAULT '[]'
);

-- Recurring fees as invoiced: one row per subscription, plan version and
-- charge from the start of each billed period or prorated part. `mrr` is the
-- full-period fee normalised to a month at full precision (never rounded).
-- A later invoice for the same key (a re-issue after a void) replaces it; a
-- voided invoice's rows are deleted.
CREATE TABLE finance.subscription_fees (
    subscription_id  text NOT NULL,
    plan_version_id  text NOT NULL,
    charge_key       text NOT NULL,
    effective_from   timestamptz NOT NULL,
    customer_id      text NOT NULL,
    currency         text NOT NULL,
    -- The full-period fee and its period, as invoiced (`RecurringLineDetail`
    -- or `ProrationLineDetail`), e.g. 1200.00 every `{"unit":"months","count":12}`.
    period_amount    numeric NOT NULL,
    billing_interval jsonb NOT NULL,
    mrr              numeric NOT NULL CHECK (mrr >= 0),
    invoice_id       text NOT NULL,
    line_id          text NOT NULL,
    PRIMARY KEY (subscription_id, plan_version_id, charge_key, effective_from)
);
CREATE INDEX subscription_fees_by_currency ON finance.subscription_fees (currency, customer_id);
CREATE INDEX subscription_fees_by_invoice ON finance.subscription_fees (invoice_id);
