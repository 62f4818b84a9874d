-- Connectors: Tally's customers and subscriptions mirrored in Orb, and Orb's
-- webhooks received (docs/architecture.md, "Connectors: Orb").

-- The Orb customer connectors created for a Tally customer (its Orb id); NULL
-- for a customer mapped by hand to an Orb customer that already existed.
ALTER TABLE connectors.orb_customers ADD COLUMN orb_customer_id text;

-- Which Orb plan a Tally plan is billed under in Orb (a subscription is
-- mirrored only when its plan is mapped).
CREATE TABLE connectors.orb_plans (
    plan_id      text PRIMARY KEY CHECK (plan_id ~ '^plan_'),
    orb_plan_id  text NOT NULL CHECK (length(orb_plan_id) BETWEEN 1 AND 255),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- Every Tally subscription connectors saw, and what became of it in Orb:
-- `mirrored` (with the Orb subscription), `waiting_for_customer` (its
-- customer is not in Orb yet; mirrored when it is), `plan_not_mapped`, or
-- `refused` (with Orb's reason). A mirrored row is final: a repeat does
-- nothing.
CREATE TABLE connectors.orb_subscriptions (
    subscription_id      text PRIMARY KEY CHECK (subscription_id ~ '^sub_'),
    customer_id          text NOT NULL CHECK (customer_id ~ '^cus_'),
    plan_id              text NOT NULL,
    currency             text NOT NULL,
    start_at             timestamptz NOT NULL,
    state                text NOT NULL CHECK (state IN
                           ('mirrored', 'waiting_for_customer', 'plan_not_mapped', 'refused')),
    orb_subscription_id  text,
    orb_plan_id          text,
    reason               text NOT NULL DEFAULT '',
    attempts             integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    updated_at           timestamptz NOT NULL,
    CHECK ((state = 'mirrored') = (orb_subscription_id IS NOT NULL))
);
CREATE INDEX orb_subscriptions_waiting ON connectors.orb_subscriptions (customer_id)
    WHERE state = 'waiting_for_customer';

-- Orb webhook events received, once each (Orb redelivers until it gets a 2xx).
CREATE TABLE connectors.orb_webhook_events (
    event_id     text PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type   text NOT NULL,
    created_at   timestamptz NOT NULL,
    subjects     jsonb NOT NULL,
    received_at  timestamptz NOT NULL
);
