-- Rating: re-rate jobs. A job recomputes a subscription's aggregates for every
-- billing period ending after `from_at`, from ingest's event log
-- (`IngestService.ReadEvents`), so the result is what rating would have
-- computed had it known the subscription's current snapshot up front. The
-- replica creates one when a snapshot changes how already-rated usage is
-- rated (a backdated plan change, start, cancellation or pause);
-- `RerateSubscription` creates one on request. See docs/architecture.md,
-- "Rating: re-rating".
--
-- `state` is the `RerateJobState` enum number of rating.proto (1 pending,
-- 2 running, 3 succeeded, 4 failed). A job that cannot reach ingest stays
-- pending with `error` set and is retried after `retry_at` (database time,
-- not the service clock: a manual clock that does not move must not stop
-- retries). `periods` lists the recomputed periods as [start, end] pairs.
CREATE TABLE rating.rerate_jobs (
    job_id           text COLLATE "C" PRIMARY KEY CHECK (job_id LIKE 'rrj\_%'),
    subscription_id  text COLLATE "C" NOT NULL CHECK (subscription_id LIKE 'sub\_%'),
    from_at          timestamptz NOT NULL,
    reason           text NOT NULL,
    idempotency_key  text COLLATE "C" UNIQUE,
    state            smallint NOT NULL CHECK (state BETWEEN 1 AND 4),
    periods          jsonb NOT NULL DEFAULT '[]',
    events_replayed  bigint NOT NULL DEFAULT 0 CHECK (events_replayed >= 0),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error            text NOT NULL DEFAULT '',
    retry_at         timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    CHECK ((state IN (3, 4)) = (finished_at IS NOT NULL))
);
-- The worker's queue: unfinished jobs, oldest first.
CREATE INDEX rerate_jobs_unfinished ON rating.rerate_jobs (created_at, job_id) WHERE state IN (1, 2);
CREATE INDEX rerate_jobs_by_subscription ON rating.rerate_jobs (subscription_id, created_at);
