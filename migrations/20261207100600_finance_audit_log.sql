-- Finance's audit chain (period closes and ledger rebuilds): `audit_log`,
-- `audit_chain_head` and their append-only triggers, as
-- 20261207100000_ingest_audit_log.sql describes. The schema is created here if
-- the finance migration (20261207200000, later in the stream) has not run yet.

CREATE SCHEMA IF NOT EXISTS finance;

SELECT tally_audit.create_chain('finance');
