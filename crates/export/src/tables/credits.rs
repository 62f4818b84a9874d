//! The money going back: credit notes (from `invoice-events`) and refunds
//! (from `payment-events`).

use super::ColumnType::{Bool, Json, Numeric, String, Timestamp};
use super::{Table, nullable, required};

/// `credit_notes`: one row per credit note, written once when issued.
pub const CREDIT_NOTES: Table = Table {
    name: "credit_notes",
    description: "One row per credit note, written once when it is issued (a credit note \
                  never changes; a note against an invoice is also an invoices row of kind \
                  credit_note_issued).",
    partition_by: "created_at",
    cluster_by: &["customer_id"],
    columns: &[
        required("credit_note_id", String, "The credit note, cn_…."),
        nullable(
            "number",
            String,
            "The credit note number (gapless per prefix).",
        ),
        required("invoice_id", String, "The invoice credited, inv_…."),
        required("customer_id", String, "The customer, cus_…."),
        nullable(
            "reason",
            String,
            "duplicate, fraudulent, order_change, product_unsatisfactory, billing_error or refund.",
        ),
        nullable("memo", String, "Free text printed on the note."),
        nullable("total", Numeric, "Sum of the credited lines."),
        required("currency", String, "ISO 4217 code."),
        required(
            "credited_to_balance",
            Bool,
            "True when the total (less refund_amount) became a credit grant.",
        ),
        nullable(
            "credit_grant_id",
            String,
            "The grant created on the customer's balance, grant_….",
        ),
        nullable(
            "refund_amount",
            Numeric,
            "The part returned to the customer's payment method because of this note.",
        ),
        nullable(
            "refund_id",
            String,
            "The payments refund this note mirrors, ref_….",
        ),
        nullable(
            "lines",
            Json,
            "The credited lines: [{invoice_line_id, description, amount}].",
        ),
        required(
            "created_at",
            Timestamp,
            "When it was issued (the partition).",
        ),
        required(
            "event_id",
            String,
            "The invoice event that carried it, ievt_….",
        ),
        required(
            "exported_at",
            Timestamp,
            "When the export service staged the row.",
        ),
    ],
};

/// `refunds`: one row per refund outcome.
pub const REFUNDS: Table = Table {
    name: "refunds",
    description: "One row per refund outcome published by payments: a refund made \
                  (succeeded) and a refund that failed (failed), at most one of each per \
                  refund; the current state is its latest row (view refunds_current).",
    partition_by: "occurred_at",
    cluster_by: &["customer_id"],
    columns: &[
        required("refund_id", String, "The refund, ref_…."),
        required(
            "status",
            String,
            "succeeded (money returned) or failed (not returned).",
        ),
        required(
            "occurred_at",
            Timestamp,
            "When it happened (the partition).",
        ),
        required("event_id", String, "The payment event, pevt_…."),
        required("invoice_id", String, "The invoice the payment paid, inv_…."),
        required("customer_id", String, "The customer, cus_…."),
        nullable("payment_id", String, "The payment refunded, pay_…."),
        nullable(
            "amount",
            Numeric,
            "The refund's amount (returned, or not returned when failed).",
        ),
        nullable("currency", String, "ISO 4217 code of amount."),
        nullable(
            "payment_refunded_total",
            Numeric,
            "The payment's refunded total after a succeeded refund.",
        ),
        nullable(
            "reason",
            String,
            "duplicate, fraudulent, requested_by_customer or billing_error.",
        ),
        nullable(
            "failure_reason",
            String,
            "Why a failed refund failed (Stripe's reason).",
        ),
        nullable(
            "credit_note_id",
            String,
            "The credit note whose refund_amount it pays out, cn_….",
        ),
        nullable("stripe_refund_id", String, "Stripe's refund, re_…."),
        required(
            "exported_at",
            Timestamp,
            "When the export service staged the row.",
        ),
    ],
};
