//! Rows of `payments.payments`, their attempts and refunds, and their wire form;
//! the inbox of the `invoice-events` consumer.

pub mod credit_notes;
pub mod ledger;
pub mod reads;
pub mod refunds;
pub mod retries;
pub mod webhooks;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, Row};
use tally_bus::inbox::{self, ServiceSchema};
use tally_domain::money::{Currency, Money};
use tally_proto::payments as proto;

use crate::INVOICE_EVENTS_SUBSCRIPTION;
use crate::wire::{money, timestamp};

/// Payments' status of a payment (`payments.payments.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// Awaiting an outcome.
    Pending,
    /// Collected.
    Succeeded,
    /// The last attempt failed.
    Failed,
    /// Collected, then refunded in part.
    PartiallyRefunded,
    /// Collected, then refunded in full.
    Refunded,
    /// Disputed by the customer.
    Disputed,
    /// Dunning gave up.
    Uncollectible,
    /// The invoice was voided.
    Canceled,
}

impl PaymentState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Pending => "pending",
            PaymentState::Succeeded => "succeeded",
            PaymentState::Failed => "failed",
            PaymentState::PartiallyRefunded => "partially_refunded",
            PaymentState::Refunded => "refunded",
            PaymentState::Disputed => "disputed",
            PaymentState::Uncollectible => "uncollectible",
            PaymentState::Canceled => "canceled",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        Ok(match text {
            "pending" => PaymentState::Pending,
            "succeeded" => PaymentState::Succeeded,
            "failed" => PaymentState::Failed,
            "partially_refunded" => PaymentState::PartiallyRefunded,
            "refunded" => PaymentState::Refunded,
            "disputed" => PaymentState::Disputed,
            "uncollectible" => PaymentState::Uncollectible,
            "canceled" => PaymentState::Canceled,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("payment status {other}").into(),
                ));
            }
        })
    }

    /// Whether money was collected (refunds and disputes start from here).
    pub fn was_collected(self) -> bool {
        matches!(
            self,
            PaymentState::Succeeded
                | PaymentState::PartiallyRefunded
                | PaymentState::Refunded
                | PaymentState::Disputed
        )
    }

    /// Whether collection is still open (a success or failure can still come).
    pub fn is_collectible(self) -> bool {
        matches!(self, PaymentState::Pending | PaymentState::Failed)
    }

    fn to_proto(self) -> proto::PaymentStatus {
        match self {
            PaymentState::Pending => proto::PaymentStatus::Pending,
            PaymentState::Succeeded => proto::PaymentStatus::Succeeded,
            PaymentState::Failed => proto::PaymentStatus::Failed,
            PaymentState::PartiallyRefunded => proto::PaymentStatus::PartiallyRefunded,
            PaymentState::Refunded => proto::PaymentStatus::Refunded,
            PaymentState::Disputed => proto::PaymentStatus::Disputed,
            PaymentState::Uncollectible => proto::PaymentStatus::Uncollectible,
            PaymentState::Canceled => proto::PaymentStatus::Canceled,
        }
    }
}

/// One payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// `pay_…`.
    pub id: String,
    /// `inv_…`.
    pub invoice_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// Amount to collect.
    pub amount: Money,
    /// Refunded so far.
    pub amount_refunded: Money,
    /// Status.
    pub status: PaymentState,
    /// `in_…`.
    pub stripe_invoice_id: Option<String>,
    /// `pi_…` of the latest attempt.
    pub stripe_payment_intent_id: Option<String>,
    /// `ch_…` that succeeded.
    pub stripe_charge_id: Option<String>,
    /// Attempts made.
    pub attempt_count: u32,
    /// When the first attempt failed (dunning counts from it).
    pub first_failed_at: Option<DateTime<Utc>>,
    /// Next dunning step.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Dunning steps taken.
    pub dunning_step: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const PAYMENT_COLUMNS: &str = "id, invoice_id, customer_id, currency, amount, amount_refunded, status, \
     stripe_invoice_id, stripe_payment_intent_id, stripe_charge_id, attempt_count, first_failed_at, \
     next_retry_at, dunning_step, created_at, updated_at";

fn currency(code: &str) -> Result<Currency, sqlx::Error> {
    Currency::from_code(code).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn payment_from_row(row: &sqlx::postgres::PgRow) -> Result<PaymentRow, sqlx::Error> {
    let currency = currency(row.try_get("currency")?)?;
    Ok(PaymentRow {
        id: row.try_get("id")?,
        invoice_id: row.try_get("invoice_id")?,
        customer_id: row.try_get("customer_id")?,
        amount: Money::new(row.try_get("amount")?, currency),
        amount_refunded: Money::new(row.try_get("amount_refunded")?, currency),
        status: PaymentState::parse(row.try_get("status")?)?,
        stripe_invoice_id: row.try_get("stripe_invoice_id")?,
        stripe_payment_intent_id: row.try_get("stripe_payment_intent_id")?,
        stripe_charge_id: row.try_get("stripe_charge_id")?,
        attempt_count: count(row.try_get("attempt_count")?),
        first_failed_at: row.try_get("first_failed_at")?,
        next_retry_at: row.try_get("next_retry_at")?,
        dunning_step: count(row.try_get("dunning_step")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Which payment to load.
#[derive(Debug, Clone, Copy)]
pub enum PaymentKey<'a> {
    /// By `pay_…`.
    Id(&'a str),
    /// By `inv_…`.
    Invoice(&'a str),
    /// By Stripe invoice.
    StripeInvoice(&'a str),
    /// By Stripe charge.
    StripeCharge(&'a str),
    /// By Stripe PaymentIntent.
    StripePaymentIntent(&'a str),
}

/// Loads a payment, locking its row (`FOR UPDATE`) when `lock`.
pub async fn payment(
    connection: &mut PgConnection,
    key: PaymentKey<'_>,
    lock: bool,
) -> Result<Option<PaymentRow>, sqlx::Error> {
    let (column, value) = match key {
        PaymentKey::Id(value) => ("id", value),
        PaymentKey::Invoice(value) => ("invoice_id", value),
        PaymentKey::StripeInvoice(value) => ("stripe_invoice_id", value),
        PaymentKey::StripeCharge(value) => ("stripe_charge_id", value),
        PaymentKey::StripePaymentIntent(value) => ("stripe_payment_intent_id", value),
    };
    let suffix = if lock { " FOR UPDATE" } else { "" };
    let sql =
        format!("SELECT {PAYMENT_COLUMNS} FROM payments.payments WHERE {column} = $1{suffix}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_optional(connection)
        .await?;
    row.as_ref().map(payment_from_row).transpose()
}

/// Inserts a new payment.
pub async fn insert_payment(
    connection: &mut PgConnection,
    payment: &PaymentRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments.payments (id, invoice_id, customer_id, currency, amount, amount_refunded, status, \
         stripe_invoice_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&payment.id)
    .bind(&payment.invoice_id)
    .bind(&payment.customer_id)
    .bind(payment.amount.currency().code())
    .bind(payment.amount.amount())
    .bind(payment.amount_refunded.amount())
    .bind(payment.status.as_str())
    .bind(&payment.stripe_invoice_id)
    .bind(payment.created_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Writes the mutable fields of a payment.
pub async fn update_payment(
    connection: &mut PgConnection,
    payment: &PaymentRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments.payments SET amount_refunded = $2, status = $3, stripe_invoice_id = $4, \
         stripe_payment_intent_id = $5, stripe_charge_id = $6, attempt_count = $7, first_failed_at = $8, \
         next_retry_at = $9, dunning_step = $10, updated_at = $11 WHERE id = $1",
    )
    .bind(&payment.id)
    .bind(payment.amount_refunded.amount())
    .bind(payment.status.as_str())
    .bind(&payment.stripe_invoice_id)
    .bind(&payment.stripe_payment_intent_id)
    .bind(&payment.stripe_charge_id)
    .bind(i32::try_from(payment.attempt_count).unwrap_or(i32::MAX))
    .bind(payment.first_failed_at)
    .bind(payment.next_retry_at)
    .bind(i32::try_from(payment.dunning_step).unwrap_or(i32::MAX))
    .bind(payment.updated_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// One collection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// From 1.
    pub number: u32,
    /// When.
    pub attempted_at: DateTime<Utc>,
    /// Collected?
    pub succeeded: bool,
    /// Failure code (empty on success).
    pub failure_code: String,
    /// Failure message (empty on success).
    pub failure_message: String,
    /// `pi_…`.
    pub stripe_payment_intent_id: String,
    /// `ch_…`.
    pub stripe_charge_id: String,
}

/// Records an attempt (a replay of the same number is ignored).
pub async fn insert_attempt(
    connection: &mut PgConnection,
    payment_id: &str,
    attempt: &Attempt,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments.payment_attempts (payment_id, attempt_number, attempted_at, succeeded, \
         failure_code, failure_message, stripe_payment_intent_id, stripe_charge_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(payment_id)
    .bind(i32::try_from(attempt.number).unwrap_or(i32::MAX))
    .bind(attempt.attempted_at)
    .bind(attempt.succeeded)
    .bind(&attempt.failure_code)
    .bind(&attempt.failure_message)
    .bind(&attempt.stripe_payment_intent_id)
    .bind(&attempt.stripe_charge_id)
    .execute(connection)
    .await?;
    Ok(())
}

/// Total of a payment's refunds that are not failed.
pub async fn refunds_total(
    connection: &mut PgConnection,
    payment_id: &str,
) -> Result<Decimal, sqlx::Error> {
    let total: Option<Decimal> = sqlx::query_scalar(
        "SELECT sum(amount) FROM payments.refunds WHERE payment_id = $1 AND status <> 'failed'",
    )
    .bind(payment_id)
    .fetch_one(connection)
    .await?;
    Ok(total.unwrap_or_default())
}

/// The wire form of a payment, with its attempts and refunds.
pub async fn payment_to_proto(
    connection: &mut PgConnection,
    payment: &PaymentRow,
) -> Result<proto::Payment, sqlx::Error> {
    let attempts = sqlx::query(
        "SELECT attempt_number, attempted_at, succeeded, failure_code, failure_message, \
         stripe_payment_intent_id, stripe_charge_id FROM payments.payment_attempts \
         WHERE payment_id = $1 ORDER BY attempt_number",
    )
    .bind(&payment.id)
    .fetch_all(&mut *connection)
    .await?
    .iter()
    .map(|row| {
        Ok(proto::PaymentAttempt {
            attempt_number: count(row.try_get("attempt_number")?),
            attempted_at: Some(timestamp(row.try_get("attempted_at")?)),
            succeeded: row.try_get("succeeded")?,
            failure_code: row.try_get("failure_code")?,
            failure_message: row.try_get("failure_message")?,
            stripe_payment_intent_id: row.try_get("stripe_payment_intent_id")?,
            stripe_charge_id: row.try_get("stripe_charge_id")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let refunds = refunds_of(connection, &payment.id).await?;
    Ok(proto::Payment {
        id: payment.id.clone(),
        invoice_id: payment.invoice_id.clone(),
        customer_id: payment.customer_id.clone(),
        amount: Some(money(&payment.amount)),
        amount_refunded: Some(money(&payment.amount_refunded)),
        status: payment.status.to_proto().into(),
        stripe_invoice_id: payment.stripe_invoice_id.clone().unwrap_or_default(),
        stripe_payment_intent_id: payment.stripe_payment_intent_id.clone().unwrap_or_default(),
        stripe_charge_id: payment.stripe_charge_id.clone().unwrap_or_default(),
        attempts,
        refunds,
        next_retry_at: payment.next_retry_at.map(timestamp),
        dunning_step: payment.dunning_step,
        created_at: Some(timestamp(payment.created_at)),
        updated_at: Some(timestamp(payment.updated_at)),
    })
}

/// A refund's stored reason name and its wire value.
pub fn refund_reason_from_name(name: &str) -> proto::RefundReason {
    match name {
        "duplicate" => proto::RefundReason::Duplicate,
        "fraudulent" => proto::RefundReason::Fraudulent,
        "billing_error" => proto::RefundReason::BillingError,
        _ => proto::RefundReason::RequestedByCustomer,
    }
}

/// The stored name of a wire refund reason.
pub fn refund_reason_name(reason: proto::RefundReason) -> &'static str {
    match reason {
        proto::RefundReason::Duplicate => "duplicate",
        proto::RefundReason::Fraudulent => "fraudulent",
        proto::RefundReason::BillingError => "billing_error",
        proto::RefundReason::RequestedByCustomer | proto::RefundReason::Unspecified => {
            "requested_by_customer"
        }
    }
}

/// A payment's refunds on the wire, oldest first.
pub async fn refunds_of(
    connection: &mut PgConnection,
    payment_id: &str,
) -> Result<Vec<proto::Refund>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, payment_id, invoice_id, amount, currency, reason, memo, status, stripe_refund_id, \
         failure_reason, created_at, credit_note_id FROM payments.refunds WHERE payment_id = $1 ORDER BY created_at, id",
    )
    .bind(payment_id)
    .fetch_all(connection)
    .await?;
    rows.iter().map(refund_from_row).collect()
}

/// One refund on the wire.
pub async fn refund(
    connection: &mut PgConnection,
    refund_id: &str,
) -> Result<Option<proto::Refund>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, payment_id, invoice_id, amount, currency, reason, memo, status, stripe_refund_id, \
         failure_reason, created_at, credit_note_id FROM payments.refunds WHERE id = $1",
    )
    .bind(refund_id)
    .fetch_optional(connection)
    .await?;
    row.as_ref().map(refund_from_row).transpose()
}

fn refund_from_row(row: &sqlx::postgres::PgRow) -> Result<proto::Refund, sqlx::Error> {
    let currency = currency(row.try_get("currency")?)?;
    let status = match row.try_get::<&str, _>("status")? {
        "pending" => proto::RefundStatus::Pending,
        "succeeded" => proto::RefundStatus::Succeeded,
        _ => proto::RefundStatus::Failed,
    };
    Ok(proto::Refund {
        id: row.try_get("id")?,
        payment_id: row.try_get("payment_id")?,
        invoice_id: row.try_get("invoice_id")?,
        amount: Some(money(&Money::new(row.try_get("amount")?, currency))),
        reason: refund_reason_from_name(row.try_get("reason")?).into(),
        memo: row.try_get("memo")?,
        status: status.into(),
        stripe_refund_id: row
            .try_get::<Option<String>, _>("stripe_refund_id")?
            .unwrap_or_default(),
        failure_reason: row.try_get("failure_reason")?,
        created_at: Some(timestamp(row.try_get("created_at")?)),
        credit_note_id: row
            .try_get::<Option<String>, _>("credit_note_id")?
            .unwrap_or_default(),
    })
}

/// Records the message in the inbox of `payments-invoice-events` (the
/// consumer of `collect` and `credit_notes`); `false` when it already was.
pub(crate) async fn record_inbox(
    connection: &mut PgConnection,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    inbox::record_once(
        connection,
        ServiceSchema::Payments,
        INVOICE_EVENTS_SUBSCRIPTION,
        message_id,
    )
    .await
}

/// Sets invoice `invoice_id`'s status.
pub async fn set_invoice_status(
    connection: &mut PgConnection,
    invoice_id: &str,
    status: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payments.invoices SET status = $2, updated_at = $3 WHERE invoice_id = $1")
        .bind(invoice_id)
        .bind(status)
        .bind(now)
        .execute(connection)
        .await?;
    Ok(())
}
