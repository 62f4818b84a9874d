-- Rating: the pause window of each subscription (`Subscription.pause`), copied
-- from the stored snapshot so usage rating can tell "paused at this instant"
-- without decoding the snapshot. Usage inside a pause is not billed: it is
-- kept as unrated usage (NO_SUBSCRIPTION, detail "paused"), and a later
-- snapshot that withdraws the pause rates it. `resume_at` NULL is an
-- indefinite pause.
ALTER TABLE rating.subscriptions
    ADD COLUMN pause_at timestamptz,
    ADD COLUMN resume_at timestamptz,
    ADD CHECK (resume_at IS NULL OR (pause_at IS NOT NULL AND resume_at > pause_at));
