-- Quotes (docs/architecture.md, "Invoicing: quotes"): a contract offered to a new or an
-- existing customer, which becomes a subscription when it is signed.
--
--   * one row per revision: a change to an open quote is a new row (`from_quote_id`,
--     `revision` + 1) in the same chain (`chain_id`, the first revision's id);
--   * the number (`Q-2027-0001`) is given when a chain's first revision is finalized, from
--     `invoicing.number_counters` (prefix `Q-<year>`), in the finalizing transaction: gapless
--     per year; later revisions keep it;
--   * `status` is stored as text with a CHECK; `expired` is read from `expires_at` (an open
--     quote past it), so no job has to flip it;
--   * a chain is accepted at most once (`quotes_one_acceptance_per_chain`): accepting is
--     keyed by the revision, and a second accept returns the first one's subscription.
CREATE TABLE invoicing.quotes (
    id                      text PRIMARY KEY,
    chain_id                text NOT NULL,
    revision                integer NOT NULL CHECK (revision >= 1),
    from_quote_id           text REFERENCES invoicing.quotes (id),
    number                  text,
    status                  text NOT NULL
        CHECK (status IN ('draft', 'open', 'accepted', 'declined', 'expired', 'canceled')),
    -- Who it is for: an existing customer, or the customer to create on acceptance
    -- (invoicing's own model of a new customer, JSON).
    customer_id             text REFERENCES invoicing.customers (id),
    new_customer            jsonb,
    -- An amendment of this subscription (co-terminating with its current term).
    amends_subscription_id  text REFERENCES invoicing.subscriptions (id),
    plan_version_id         text NOT NULL,
    currency                text NOT NULL,
    -- The terms: the domain's SubscriptionTermsSpec, JSON.
    terms                   jsonb NOT NULL,
    starts_at               timestamptz NOT NULL,
    term_months             integer NOT NULL CHECK (term_months BETWEEN 1 AND 120),
    ends_at                 timestamptz NOT NULL CHECK (ends_at > starts_at),
    expires_at              timestamptz NOT NULL,
    -- The preview as the domain priced it (JSON of tally_domain::quote::QuotePreview).
    preview                 jsonb NOT NULL,
    memo                    text NOT NULL DEFAULT '',
    status_reason           text NOT NULL DEFAULT '',
    signed_by               text,
    signed_at               timestamptz,
    document_sha256         text CHECK (document_sha256 ~ '^[0-9a-f]{64}$'),
    -- What acceptance made: the customer (new or existing) and the subscription.
    accepted_customer_id    text REFERENCES invoicing.customers (id),
    subscription_id         text REFERENCES invoicing.subscriptions (id),
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    finalized_at            timestamptz,
    accepted_at             timestamptz,
    UNIQUE (chain_id, revision),
    CONSTRAINT quotes_customer_xor_new CHECK ((customer_id IS NULL) <> (new_customer IS NULL)),
    CONSTRAINT quotes_amendment_has_customer
        CHECK (amends_subscription_id IS NULL OR customer_id IS NOT NULL),
    CONSTRAINT quotes_numbered_once_open
        CHECK (status = 'draft' OR status = 'canceled' OR number IS NOT NULL),
    CONSTRAINT quotes_accepted_is_signed
        CHECK (status <> 'accepted'
               OR (signed_by IS NOT NULL AND signed_at IS NOT NULL AND accepted_at IS NOT NULL
                   AND subscription_id IS NOT NULL AND accepted_customer_id IS NOT NULL))
);

CREATE UNIQUE INDEX quotes_one_acceptance_per_chain
    ON invoicing.quotes (chain_id) WHERE status = 'accepted';
CREATE INDEX quotes_by_customer ON invoicing.quotes (customer_id, id);
CREATE INDEX quotes_by_subscription ON invoicing.quotes (subscription_id, accepted_at)
    WHERE status = 'accepted';
