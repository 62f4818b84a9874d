-- Invoicing: the bill run asks, for every subscription it bills, whether a
-- change of that customer is still waiting in the outbox (rating must have
-- seen it before usage is priced). Without this index the question scans
-- every unpublished message, and a bill run that publishes an event per
-- invoice would slow down as it goes.
CREATE INDEX outbox_unpublished_by_key ON invoicing.outbox (topic, ordering_key)
    WHERE published_at IS NULL;
