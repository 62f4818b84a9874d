-- Contract terms on subscriptions (docs/architecture.md, "Invoicing: contract terms").
--
-- `terms` is the domain's SubscriptionTermsSpec as JSON, checked against the
-- subscription's plan version when it was written; `terms_format` names the
-- JSON's format (1 today), so a later format is read beside this one. NULL
-- in both: the subscription bills its plan version's list price.
--
-- Rollback-safe: both columns are nullable and the previous release's writes
-- (INSERT … ON CONFLICT DO UPDATE of a listed set of columns) leave them as
-- they are.
ALTER TABLE invoicing.subscriptions
    ADD COLUMN terms JSONB,
    ADD COLUMN terms_format SMALLINT,
    ADD CONSTRAINT subscriptions_terms_format CHECK (
        (terms IS NULL) = (terms_format IS NULL) AND (terms_format IS NULL OR terms_format = 1)
    );
