-- Rating: every pause window of a subscription (`Subscription.pauses`), not
-- only the latest (`Subscription.pause`): usage inside any of them is not
-- billed, so a snapshot that adds a second pause must not make the first
-- one's usage billable. `pauses` is a JSON array of [pause_at, resume_at]
-- pairs (resume_at null: indefinite), oldest first.
ALTER TABLE rating.subscriptions ADD COLUMN pauses jsonb NOT NULL DEFAULT '[]';
UPDATE rating.subscriptions
   SET pauses = jsonb_build_array(jsonb_build_array(pause_at, resume_at))
 WHERE pause_at IS NOT NULL;
ALTER TABLE rating.subscriptions DROP COLUMN pause_at, DROP COLUMN resume_at;
