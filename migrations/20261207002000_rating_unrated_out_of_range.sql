-- Rating keeps an accepted event that would take an aggregate or its usage
-- line out of range (a count or sum that overflows or cannot be held exactly,
-- an aggregate beyond ±10^18, a line that cannot be priced exactly or beyond
-- 10^12) as unrated usage with the reason UNRATED_REASON_OUT_OF_RANGE (6), an
-- operator can list it with ListUnratedUsage; before, such an event failed its
-- batch until the bus dead-lettered it, neither rated nor unrated.
ALTER TABLE rating.unrated_events DROP CONSTRAINT unrated_events_reason_check;
ALTER TABLE rating.unrated_events
    ADD CONSTRAINT unrated_events_reason_check CHECK (reason BETWEEN 1 AND 6);
