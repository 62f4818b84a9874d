-- Invoicing's audit chain (finalizations, voids, credit notes): `audit_log`, `audit_chain_head` and their
-- append-only triggers, as 20261207100000_ingest_audit_log.sql describes.

SELECT tally_audit.create_chain('invoicing');
