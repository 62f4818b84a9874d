-- `ListForwardedEvents` and `GetForwardingStats` by customer read a customer's
-- events in `seq` order without scanning every customer's.
CREATE INDEX forwarded_events_by_customer ON connectors.forwarded_events (customer_id, seq);
