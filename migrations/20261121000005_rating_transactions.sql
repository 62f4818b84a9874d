-- Rating: the individual transactions of percentage charges. A percentage
-- price (e.g. 2.9 % + 0.30 per payment, with per-transaction limits and free
-- allowances given in (timestamp, event id) order) is not a function of one
-- aggregated quantity, so each rated event of such a charge is kept here, in
-- the same transaction that records it in `rating.rated_events` (exactly
-- once). The key is the aggregate row's key plus the event id; `amount` is the
-- meter's property value (catalog rule: a percentage charge needs a sum meter).
CREATE TABLE rating.transactions (
    subscription_id  text COLLATE "C" NOT NULL,
    period_start     timestamptz NOT NULL,
    segment_start    timestamptz NOT NULL,
    plan_version_id  text COLLATE "C" NOT NULL,
    charge_code      text COLLATE "C" NOT NULL,
    group_key        jsonb NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    occurred_at      timestamptz NOT NULL,
    amount           numeric NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (subscription_id, period_start, segment_start, plan_version_id,
                 charge_code, group_key, event_id)
);
