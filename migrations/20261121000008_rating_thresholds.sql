-- Rating: spend and usage thresholds per subscription, evaluated per billing
-- period (see docs/architecture.md, "Rating: thresholds").
--
-- A threshold has exactly one limit: a spend amount in the plan currency, or
-- a quantity of one meter. `key` is the client's name for it, unique per
-- subscription (SetThreshold with the same key replaces the limit).
CREATE TABLE rating.thresholds (
    threshold_id     text COLLATE "C" PRIMARY KEY CHECK (threshold_id LIKE 'thr\_%'),
    subscription_id  text COLLATE "C" NOT NULL CHECK (subscription_id LIKE 'sub\_%'),
    customer_id      text COLLATE "C" NOT NULL,
    key              text COLLATE "C" NOT NULL,
    spend_currency   text,
    spend_amount     numeric CHECK (spend_amount > 0),
    meter_code       text COLLATE "C",
    usage_quantity   numeric CHECK (usage_quantity > 0),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (subscription_id, key),
    CHECK ((spend_amount IS NOT NULL AND spend_currency IS NOT NULL
            AND meter_code IS NULL AND usage_quantity IS NULL)
        OR (spend_amount IS NULL AND spend_currency IS NULL
            AND meter_code IS NOT NULL AND usage_quantity IS NOT NULL))
);
CREATE INDEX thresholds_by_customer ON rating.thresholds (customer_id);

-- At most one crossing per threshold and billing period: the insert that
-- wins this key is the one that publishes `ThresholdCrossed` (through the
-- outbox, in the same transaction), so the event is emitted exactly once
-- however many consumers evaluate concurrently. Replacing a threshold's limit
-- deletes its crossings, so the new limit can be crossed in the open period.
CREATE TABLE rating.threshold_crossings (
    threshold_id         text COLLATE "C" NOT NULL
                         REFERENCES rating.thresholds (threshold_id) ON DELETE CASCADE,
    period_start         timestamptz NOT NULL,
    period_end           timestamptz NOT NULL CHECK (period_end > period_start),
    value                numeric NOT NULL,
    crossed_at           timestamptz NOT NULL,
    triggering_event_id  text NOT NULL,
    detected_at          timestamptz NOT NULL,
    PRIMARY KEY (threshold_id, period_start)
);
