-- Payments: `RetryPayment` requests by idempotency key. A replay returns the
-- payment without charging again; the key names the attempt it made.
CREATE TABLE payments.retry_requests (
    idempotency_key  text PRIMARY KEY,
    payment_id       text COLLATE "C" NOT NULL REFERENCES payments.payments (id),
    attempt_number   integer NOT NULL CHECK (attempt_number >= 1),
    created_at       timestamptz NOT NULL
);
