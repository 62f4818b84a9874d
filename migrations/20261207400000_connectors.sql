-- Connectors: Tally side by side with external billing systems
-- (docs/architecture.md, "Connectors: Orb"). This first slice forwards
-- accepted usage to Orb. Connectors reads and writes only this schema; it
-- learns usage from the bus (`usage-accepted`), recorded once in its inbox.

CREATE SCHEMA IF NOT EXISTS connectors;

CREATE TABLE connectors.inbox (
    subscription  text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, message_id)
);

-- Which Tally customers are billed in Orb, and under which Orb external
-- customer id (`ConnectorService.MapOrbCustomer`). Connectors does not
-- know customers otherwise: usage of a customer not listed here is recorded
-- as `not_mapped` and never sent.
CREATE TABLE connectors.orb_customers (
    customer_id           text PRIMARY KEY CHECK (customer_id ~ '^cus_'),
    external_customer_id  text NOT NULL UNIQUE
                          CHECK (length(external_customer_id) BETWEEN 1 AND 255),
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);

-- What became of every accepted event connectors read: one row per
-- (customer, event), written in the transaction that records the message in
-- the inbox. `idempotency_key` is what Orb de-duplicates by.
CREATE TABLE connectors.forwarded_events (
    seq                   bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    customer_id           text NOT NULL,
    event_id              text NOT NULL,
    message_id            text NOT NULL,
    idempotency_key       text NOT NULL DEFAULT '',
    external_customer_id  text NOT NULL DEFAULT '',
    state                 text NOT NULL CHECK (state IN ('forwarded', 'rejected', 'not_mapped')),
    reason                text NOT NULL DEFAULT '',
    attempts              integer NOT NULL CHECK (attempts >= 0),
    event_time            timestamptz NOT NULL,
    forwarded_at          timestamptz,
    recorded_at           timestamptz NOT NULL,
    PRIMARY KEY (customer_id, event_id),
    CHECK ((state = 'forwarded') = (forwarded_at IS NOT NULL))
);
CREATE INDEX forwarded_events_by_state ON connectors.forwarded_events (state, seq);
