//! The topics and subscriptions of the system (see docs/architecture.md, "Services and flows").

/// Usage from external publishers (protobuf or JSON), read by ingest.
pub const USAGE_EVENTS: &str = "usage-events";
/// Events ingest accepted and committed, ordered by customer, read by rating.
pub const USAGE_ACCEPTED: &str = "usage-accepted";
/// Events ingest refused, with reasons (for alerting and replay tools).
pub const USAGE_REJECTED: &str = "usage-rejected";
/// Subscription lifecycle from invoicing, read by rating.
pub const SUBSCRIPTION_EVENTS: &str = "subscription-events";
/// Invoice lifecycle from invoicing, read by payments.
pub const INVOICE_EVENTS: &str = "invoice-events";
/// Payment outcomes from payments, read by invoicing.
pub const PAYMENT_EVENTS: &str = "payment-events";
/// Threshold crossings from rating.
pub const RATING_EVENTS: &str = "rating-events";

/// Every topic, for `tally dev` and cluster setup.
pub const ALL: [&str; 7] = [
    USAGE_EVENTS,
    USAGE_ACCEPTED,
    USAGE_REJECTED,
    SUBSCRIPTION_EVENTS,
    INVOICE_EVENTS,
    PAYMENT_EVENTS,
    RATING_EVENTS,
];
