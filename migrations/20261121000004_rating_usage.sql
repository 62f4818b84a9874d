-- Rating: usage. The replica of subscriptions rating prices against, the
-- exactly-once record of rated events, the running aggregates per
-- (subscription, period, plan-version segment, charge, group), and the usage
-- that cannot be rated yet. See docs/architecture.md, "Rating: usage".
--
-- Identifier columns use COLLATE "C" like the catalog: byte order is all we
-- compare by, and it keeps the key indexes fast whatever the database locale.

-- The latest snapshot of each subscription invoicing published. `version` is
-- `Subscription.version`: a snapshot is applied only when it is higher than
-- the stored one, so redelivered and reordered `subscription-events` are
-- harmless. `snapshot` is the protobuf `tally.invoicing.v1.Subscription` as
-- received (bytes: exact, and what a re-rate or an operator can read back).
CREATE TABLE rating.subscriptions (
    subscription_id  text COLLATE "C" PRIMARY KEY CHECK (subscription_id LIKE 'sub\_%'),
    customer_id      text COLLATE "C" NOT NULL,
    version          bigint NOT NULL CHECK (version >= 1),
    snapshot         bytea NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX subscriptions_by_customer ON rating.subscriptions (customer_id);

-- The phases of the stored snapshot, one row each, rewritten whole with every
-- applied snapshot: the question usage asks is "which plan version covers
-- this customer at this instant", answered by the (customer_id, start_at)
-- index. `billing_anchor_at` is the subscription's, copied per phase so the
-- period of an event follows from one row. `end_at` NULL is open-ended.
CREATE TABLE rating.subscription_phases (
    subscription_id    text COLLATE "C" NOT NULL
                       REFERENCES rating.subscriptions (subscription_id) ON DELETE CASCADE,
    customer_id        text COLLATE "C" NOT NULL,
    phase_index        integer NOT NULL CHECK (phase_index >= 0),
    plan_version_id    text COLLATE "C" NOT NULL,
    billing_anchor_at  timestamptz NOT NULL,
    start_at           timestamptz NOT NULL,
    end_at             timestamptz CHECK (end_at IS NULL OR end_at > start_at),
    PRIMARY KEY (subscription_id, phase_index)
);
CREATE INDEX subscription_phases_by_customer
    ON rating.subscription_phases (customer_id, start_at);

-- Exactly-once: an event is absorbed into aggregates in the same transaction
-- that inserts its key here; a redelivery finds the key and changes nothing.
-- Keyed like ingest's de-duplication, (customer, event id), forever. Unrated
-- events get no row here (they are in `unrated_events`), so they can still
-- be rated when their reason goes away. `seq` is ingest's sequence number.
CREATE TABLE rating.rated_events (
    customer_id  text COLLATE "C" NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    seq          bigint NOT NULL,
    PRIMARY KEY (customer_id, event_id)
);

-- One running aggregate per subscription, billing period, segment (the part
-- of the period one phase covers), charge and group. `state` is the serde
-- JSON of the domain `AggregateState` (absorbing is commutative, so arrival
-- order does not matter; the value for a time-weighted sum is computed over
-- the segment when priced). `segment_start` is in the key, not only
-- `plan_version_id`: a subscription that goes A → B → A within one period has
-- two A segments, each priced on its own. `group_key` is the serde JSON of
-- the domain `GroupKey` (`{}` without group-by); jsonb compares it by value.
-- `max_seq` is the highest ingest sequence number absorbed (as_of).
CREATE TABLE rating.aggregates (
    subscription_id  text COLLATE "C" NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL CHECK (period_end > period_start),
    plan_version_id  text COLLATE "C" NOT NULL,
    segment_start    timestamptz NOT NULL CHECK (segment_start >= period_start),
    segment_end      timestamptz NOT NULL
                     CHECK (segment_end > segment_start AND segment_end <= period_end),
    charge_code      text COLLATE "C" NOT NULL,
    group_key        jsonb NOT NULL,
    state            jsonb NOT NULL,
    event_count      bigint NOT NULL CHECK (event_count >= 0),
    max_seq          bigint NOT NULL,
    PRIMARY KEY (subscription_id, period_start, segment_start, plan_version_id,
                 charge_code, group_key)
);

-- Accepted usage rating could not rate yet, kept with the reason (the
-- `UnratedReason` enum number of rating.proto) and never dropped. `accepted`
-- is the `tally.events.v1.UsageAccepted` protobuf exactly as delivered, so a
-- retry (e.g. when a backdated subscription arrives) runs the very same
-- rating path. The row is deleted by the transaction that rates the event.
CREATE TABLE rating.unrated_events (
    customer_id    text COLLATE "C" NOT NULL,
    event_id       text COLLATE "C" NOT NULL,
    seq            bigint NOT NULL,
    accepted       bytea NOT NULL,
    reason         smallint NOT NULL CHECK (reason BETWEEN 1 AND 5),
    detail         text NOT NULL DEFAULT '',
    first_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, event_id)
);
-- ListUnratedUsage pages oldest first.
CREATE INDEX unrated_events_by_first_seen
    ON rating.unrated_events (first_seen_at, customer_id, event_id);
