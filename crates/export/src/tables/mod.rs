//! The warehouse's tables, declared once: BigQuery's table definitions
//! (created or widened at start), the protobuf row type the Storage Write API
//! is sent (field number = column position + 1), and `docs/warehouse.md` all
//! follow this module. The rule it keeps: a change is additive only — a new
//! table, or a new NULLABLE column at the end of a table; a column is never
//! renamed, retyped or removed (rows already written keep their meaning).
//!
//! The billing facts are here; credit notes and refunds are in [`credits`].

mod credits;

pub use credits::{CREDIT_NOTES, REFUNDS};

/// A column's BigQuery type, and how a staged value is sent for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `STRING`: a protobuf `string`.
    String,
    /// `JSON`: a protobuf `string` holding JSON text.
    Json,
    /// `NUMERIC` (scale 9): a protobuf `string` holding the decimal.
    Numeric,
    /// `TIMESTAMP`: a protobuf `int64`, microseconds since the epoch (UTC).
    Timestamp,
    /// `INT64`: a protobuf `int64`.
    Int64,
    /// `BOOL`: a protobuf `bool`.
    Bool,
}

impl ColumnType {
    /// BigQuery's name for the type.
    pub fn bigquery_name(self) -> &'static str {
        match self {
            ColumnType::String => "STRING",
            ColumnType::Json => "JSON",
            ColumnType::Numeric => "NUMERIC",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Int64 => "INT64",
            ColumnType::Bool => "BOOL",
        }
    }
}

/// A column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The column's name (also the row message's field name).
    pub name: &'static str,
    /// Its type.
    pub kind: ColumnType,
    /// `REQUIRED` when true, else `NULLABLE`; a column added later is never required.
    pub required: bool,
    /// BigQuery's column description (the same words as `docs/warehouse.md`).
    pub description: &'static str,
}

/// A table of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table's name in the dataset.
    pub name: &'static str,
    /// BigQuery's table description.
    pub description: &'static str,
    /// The `TIMESTAMP` column the table is day-partitioned on (business time).
    pub partition_by: &'static str,
    /// The clustering columns.
    pub cluster_by: &'static [&'static str],
    /// The columns, in field-number order.
    pub columns: &'static [Column],
}

impl Table {
    /// The column named `name`, with its field number.
    pub fn column(&self, name: &str) -> Option<(u32, &Column)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, column)| column.name == name)
            .map(|(index, column)| (field_number(index), column))
    }
}

/// The protobuf field number of the column at `index`.
pub fn field_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

pub(crate) const fn required(
    name: &'static str,
    kind: ColumnType,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        required: true,
        description,
    }
}

pub(crate) const fn nullable(
    name: &'static str,
    kind: ColumnType,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        required: false,
        description,
    }
}

use ColumnType::{Int64, Json, Numeric, String, Timestamp};

/// `usage_events`: one row per accepted usage event.
pub const USAGE_EVENTS: Table = Table {
    name: "usage_events",
    description: "Every usage event Tally accepted, once, as accepted.",
    partition_by: "event_time",
    cluster_by: &["customer_id", "event_type"],
    columns: &[
        required("customer_id", String, "The customer, cus_…."),
        required("event_id", String, "The event's id, unique per customer."),
        required(
            "event_type",
            String,
            "The event type (a meter reads one type).",
        ),
        required(
            "event_time",
            Timestamp,
            "When the usage happened (the event's timestamp).",
        ),
        required(
            "properties",
            Json,
            "The event's properties: an object of strings.",
        ),
        nullable(
            "source",
            String,
            "Where the event came from, as the sender said.",
        ),
        required("sequence_number", Int64, "Position in ingest's event log."),
        required("ingested_at", Timestamp, "When ingest committed the event."),
        nullable("intake", String, "How it arrived: grpc, pubsub or replay."),
        required(
            "exported_at",
            Timestamp,
            "When the export service staged the row.",
        ),
    ],
};

/// `invoices`: one row per change of an invoice after finalization.
pub const INVOICES: Table = Table {
    name: "invoices",
    description: "One row per invoice event (finalized, voided, paid, uncollectible, \
                  credit note issued) with the invoice as it was after the event; the \
                  current state of an invoice is its row with the highest version \
                  (view invoices_current).",
    partition_by: "finalized_at",
    cluster_by: &["customer_id"],
    columns: &[
        required(
            "event_id",
            String,
            "The invoice event, ievt_… (unique per row).",
        ),
        required(
            "event_kind",
            String,
            "finalized, voided, paid, marked_uncollectible or credit_note_issued.",
        ),
        required("occurred_at", Timestamp, "When the change happened."),
        required("invoice_id", String, "The invoice, inv_…."),
        nullable(
            "number",
            String,
            "The invoice number (gapless per sequence).",
        ),
        required("customer_id", String, "The customer, cus_…."),
        nullable(
            "subscription_id",
            String,
            "The subscription billed, sub_… (empty for one-off invoices).",
        ),
        required(
            "status",
            String,
            "The invoice's status after the change: finalized, paid, void, uncollectible.",
        ),
        nullable(
            "billing_reason",
            String,
            "Why it was issued (period end, plan change, …).",
        ),
        nullable(
            "collection_mode",
            String,
            "charge_automatically or send_invoice.",
        ),
        required("currency", String, "ISO 4217 code."),
        nullable("period_start", Timestamp, "The billed period's start."),
        nullable(
            "period_end",
            Timestamp,
            "The billed period's end (exclusive).",
        ),
        nullable("subtotal", Numeric, "Sum of the lines."),
        nullable("credits_applied", Numeric, "Prepaid credits applied."),
        nullable("total", Numeric, "subtotal − credits_applied."),
        nullable("amount_paid", Numeric, "Paid so far."),
        nullable(
            "amount_credited",
            Numeric,
            "Credited by credit notes so far.",
        ),
        nullable("amount_due", Numeric, "Left to collect."),
        nullable(
            "finalized_at",
            Timestamp,
            "When it was finalized (the partition).",
        ),
        nullable("due_at", Timestamp, "When payment is due."),
        nullable("paid_at", Timestamp, "When it was paid."),
        nullable("voided_at", Timestamp, "When it was voided."),
        nullable("void_reason", String, "Why it was voided."),
        required("version", Int64, "The invoice's version: higher is newer."),
        required(
            "exported_at",
            Timestamp,
            "When the export service staged the row.",
        ),
    ],
};

/// `invoice_lines`: the lines of each finalized invoice, once.
pub const INVOICE_LINES: Table = Table {
    name: "invoice_lines",
    description: "The lines of every finalized invoice, written once at finalization \
                  (a finalized invoice's lines never change; a void is a new invoices row).",
    partition_by: "finalized_at",
    cluster_by: &["customer_id"],
    columns: &[
        required("invoice_id", String, "The invoice, inv_…."),
        required("line_id", String, "The line, il_…."),
        required("customer_id", String, "The customer, cus_…."),
        nullable("subscription_id", String, "The subscription billed, sub_…."),
        required(
            "kind",
            String,
            "recurring, usage, proration_charge, proration_credit, minimum_true_up, credits_applied or adjustment.",
        ),
        nullable("description", String, "The line's text on the invoice."),
        nullable(
            "period_start",
            Timestamp,
            "The period the line charges for.",
        ),
        nullable("period_end", Timestamp, "The period's end (exclusive)."),
        // Exact decimal text: rates and quantities may carry more than
        // NUMERIC's 9 decimal places (CAST(… AS BIGNUMERIC) to compute).
        nullable("quantity", String, "Quantity billed, exact decimal text."),
        nullable(
            "unit_price",
            String,
            "Unit price when one applies, exact decimal text.",
        ),
        nullable(
            "precise_amount",
            String,
            "The amount before rounding to the cent, exact decimal text.",
        ),
        required(
            "amount",
            Numeric,
            "The line's amount, rounded once to the cent.",
        ),
        required("currency", String, "ISO 4217 code."),
        nullable(
            "explanation",
            Json,
            "Where the amount comes from: the line's detail (meter, tiers, proration factor, …).",
        ),
        nullable(
            "finalized_at",
            Timestamp,
            "When the invoice was finalized (the partition).",
        ),
        required(
            "exported_at",
            Timestamp,
            "When the export service staged the row.",
        ),
    ],
};

/// `payment_events`: one row per collection outcome.
pub const PAYMENT_EVENTS: Table = Table {
    name: "payment_events",
    description: "One row per collection outcome published by payments (succeeded, failed, \
                  refunded, refund failed, uncollectible, dispute created, dunning step).",
    partition_by: "occurred_at",
    cluster_by: &["customer_id"],
    columns: &[
        required("event_id", String, "The payment event (unique per row)."),
        required(
            "event_kind",
            String,
            "succeeded, failed, refunded, refund_failed, uncollectible, dispute_created or dunning_step.",
        ),
        required(
            "occurred_at",
            Timestamp,
            "When it happened (the partition).",
        ),
        required("invoice_id", String, "The invoice collected, inv_…."),
        required("customer_id", String, "The customer, cus_…."),
        nullable("payment_id", String, "The payment, pay_…."),
        nullable(
            "payment_status",
            String,
            "The payment's status after the event: pending, succeeded, failed, partially_refunded, refunded.",
        ),
        nullable(
            "amount",
            Numeric,
            "The event's amount: collected, attempted, refunded, written off or disputed.",
        ),
        nullable("currency", String, "ISO 4217 code of amount."),
        nullable(
            "amount_refunded",
            Numeric,
            "The payment's refunded total after the event.",
        ),
        nullable(
            "attempt_number",
            Int64,
            "Which collection attempt (succeeded, failed, dunning step).",
        ),
        nullable(
            "failure_code",
            String,
            "Why an attempt or a refund failed (the processor's code).",
        ),
        nullable(
            "failure_message",
            String,
            "The processor's message for a failure.",
        ),
        nullable(
            "refund_id",
            String,
            "The refund, for refunded and refund_failed.",
        ),
        nullable(
            "refund_reason",
            String,
            "duplicate, fraudulent, requested_by_customer or billing_error.",
        ),
        nullable(
            "credit_note_id",
            String,
            "The credit note a refund pays out.",
        ),
        nullable(
            "stripe_payment_intent_id",
            String,
            "Stripe's PaymentIntent.",
        ),
        nullable("stripe_charge_id", String, "Stripe's charge."),
        nullable("dunning_step", Int64, "The dunning step reached."),
        required(
            "exported_at",
            Timestamp,
            "When the export service staged the row.",
        ),
    ],
};

/// `subscriptions`: one row per version of a subscription.
pub const SUBSCRIPTIONS: Table = Table {
    name: "subscriptions",
    description: "One row per version of a subscription (created, plan changed, canceled, \
                  paused, resumed, trial ended, state changed) with the subscription after \
                  the change; the current state is its highest version (view \
                  subscriptions_current).",
    partition_by: "effective_at",
    cluster_by: &["customer_id"],
    columns: &[
        required("subscription_id", String, "The subscription, sub_…."),
        required(
            "version",
            Int64,
            "The subscription's version: higher is newer (unique per subscription).",
        ),
        required(
            "event_kind",
            String,
            "created, plan_changed, canceled, paused, resumed, trial_ended or state_changed.",
        ),
        required(
            "effective_at",
            Timestamp,
            "When the change takes effect in billing (the partition).",
        ),
        required("occurred_at", Timestamp, "When the change was made."),
        required("customer_id", String, "The customer, cus_…."),
        nullable("plan_id", String, "The plan after the change."),
        nullable(
            "plan_version_id",
            String,
            "The plan version after the change, pv_….",
        ),
        nullable(
            "status",
            String,
            "After the change: trialing, active, paused, canceled, ….",
        ),
        nullable("currency", String, "ISO 4217 code."),
        nullable("start_at", Timestamp, "When the subscription started."),
        nullable("trial_end_at", Timestamp, "When its trial ends or ended."),
        nullable(
            "current_period_start",
            Timestamp,
            "The current billing period's start.",
        ),
        nullable(
            "current_period_end",
            Timestamp,
            "The current billing period's end (exclusive).",
        ),
        nullable("cancel_at", Timestamp, "When it is set to end."),
        nullable("canceled_at", Timestamp, "When it was canceled."),
        nullable("ended_at", Timestamp, "When it ended."),
        nullable(
            "from_plan_version_id",
            String,
            "A plan change's previous plan version.",
        ),
        nullable(
            "reason",
            String,
            "A cancellation's or a state change's reason.",
        ),
        nullable(
            "metadata",
            Json,
            "The subscription's metadata: an object of strings.",
        ),
        required(
            "exported_at",
            Timestamp,
            "When the export service staged the row.",
        ),
    ],
};

/// Every table, in the order they are created.
pub const ALL: [Table; 7] = [
    USAGE_EVENTS,
    INVOICES,
    INVOICE_LINES,
    PAYMENT_EVENTS,
    SUBSCRIPTIONS,
    CREDIT_NOTES,
    REFUNDS,
];

/// The table named `name`.
pub fn by_name(name: &str) -> Option<Table> {
    ALL.into_iter().find(|table| table.name == name)
}

/// A view giving the current state of an entity from its append-only rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The view's name in the dataset.
    pub name: &'static str,
    /// Its query, with `{dataset}` for the fully qualified dataset.
    pub query: &'static str,
}

/// The current-state views.
pub const VIEWS: [View; 3] = [
    View {
        name: "invoices_current",
        query: "SELECT * EXCEPT (row_rank) FROM (SELECT *, ROW_NUMBER() OVER \
                (PARTITION BY invoice_id ORDER BY version DESC, occurred_at DESC) AS row_rank \
                FROM `{dataset}.invoices`) WHERE row_rank = 1",
    },
    View {
        name: "subscriptions_current",
        query: "SELECT * EXCEPT (row_rank) FROM (SELECT *, ROW_NUMBER() OVER \
                (PARTITION BY subscription_id ORDER BY version DESC) AS row_rank \
                FROM `{dataset}.subscriptions`) WHERE row_rank = 1",
    },
    View {
        name: "refunds_current",
        query: "SELECT * EXCEPT (row_rank) FROM (SELECT *, ROW_NUMBER() OVER \
                (PARTITION BY refund_id ORDER BY occurred_at DESC, status ASC) AS row_rank \
                FROM `{dataset}.refunds`) WHERE row_rank = 1",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_partitions_and_clusters_on_its_own_columns() {
        for table in ALL {
            let (_, partition) = table.column(table.partition_by).expect("partition column");
            assert_eq!(partition.kind, ColumnType::Timestamp, "{}", table.name);
            for cluster in table.cluster_by {
                assert!(table.column(cluster).is_some(), "{}.{cluster}", table.name);
            }
            let mut names: Vec<_> = table.columns.iter().map(|column| column.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.columns.len(), "{}", table.name);
        }
    }
}
