//! Payments' views of Stripe objects, converted from async-stripe's types
//! (`from_stripe`). A dispute is read from a webhook event's JSON instead
//! ([`RemoteDispute::from_json`], leniently: only the fields payments uses
//! are required, in whichever API version the endpoint renders events).
//! Amounts become domain [`Money`] exactly (minor units through the
//! currency's exponent), so nothing outside this adapter sees a Stripe shape.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use tally_domain::money::{Currency, Money};

use super::StripeError;

/// A Stripe customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCustomer {
    /// `cus_…` in Stripe's namespace.
    pub id: String,
    /// Live or test mode.
    pub livemode: bool,
    /// Whether a default payment method is set.
    pub has_default_payment_method: bool,
}

/// Status of a Stripe invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteInvoiceStatus {
    /// Being built.
    Draft,
    /// Finalized, awaiting payment.
    Open,
    /// Paid.
    Paid,
    /// Voided.
    Void,
    /// Written off.
    Uncollectible,
}

impl RemoteInvoiceStatus {
    /// Stripe's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteInvoiceStatus::Draft => "draft",
            RemoteInvoiceStatus::Open => "open",
            RemoteInvoiceStatus::Paid => "paid",
            RemoteInvoiceStatus::Void => "void",
            RemoteInvoiceStatus::Uncollectible => "uncollectible",
        }
    }
}

/// A Stripe invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInvoice {
    /// `in_…`.
    pub id: String,
    /// Status.
    pub status: RemoteInvoiceStatus,
    /// Amount due.
    pub amount_due: Money,
    /// Amount paid.
    pub amount_paid: Money,
    /// Latest PaymentIntent, `pi_…`.
    pub payment_intent: Option<String>,
    /// Latest charge, `ch_…`.
    pub charge: Option<String>,
    /// Collection attempts Stripe made.
    pub attempt_count: u32,
    /// `metadata.tally_invoice_id`.
    pub tally_invoice_id: Option<String>,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// Status of a Stripe refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRefundStatus {
    /// Not settled yet (`pending`, `requires_action`).
    Pending,
    /// Done.
    Succeeded,
    /// Failed or canceled: the money was not returned.
    Failed,
}

/// A Stripe refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRefund {
    /// `re_…`.
    pub id: String,
    /// Amount refunded.
    pub amount: Money,
    /// Status.
    pub status: RemoteRefundStatus,
    /// Stripe's status name.
    pub status_name: String,
    /// The refunded charge.
    pub charge: Option<String>,
    /// `metadata.tally_refund_id` when Tally made it.
    pub tally_refund_id: Option<String>,
    /// Why it failed, when it did.
    pub failure_reason: String,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// A Stripe charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCharge {
    /// `ch_…`.
    pub id: String,
    /// Amount charged.
    pub amount: Money,
    /// Amount refunded so far.
    pub amount_refunded: Money,
    /// `succeeded`, `pending` or `failed`.
    pub status: String,
    /// The PaymentIntent, `pi_…`.
    pub payment_intent: Option<String>,
    /// The invoice, `in_…`.
    pub invoice: Option<String>,
    /// Failure code, when failed.
    pub failure_code: String,
    /// Failure message, when failed.
    pub failure_message: String,
    /// Refunds listed on the charge (when Stripe included them).
    pub refunds: Vec<RemoteRefund>,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// A Stripe PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePaymentIntent {
    /// `pi_…`.
    pub id: String,
    /// Stripe's status name (`succeeded`, `requires_payment_method`, …).
    pub status: String,
    /// The invoice it pays, `in_…`.
    pub invoice: Option<String>,
    /// The latest charge, `ch_…`.
    pub latest_charge: Option<String>,
    /// Code of the last payment error.
    pub failure_code: String,
    /// Message of the last payment error (never card data).
    pub failure_message: String,
}

/// A Stripe dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDispute {
    /// `dp_…` (or `du_…`).
    pub id: String,
    /// The disputed charge.
    pub charge: String,
    /// Amount disputed.
    pub amount: Money,
    /// Stripe's reason, e.g. `fraudulent`.
    pub reason: String,
}

/// A Stripe credit note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCreditNote {
    /// `cn_…` in Stripe's namespace.
    pub id: String,
    /// The invoice credited, `in_…`.
    pub invoice: Option<String>,
    /// Total credited.
    pub amount: Money,
    /// Part that lowered the invoice's amount due.
    pub pre_payment_amount: Money,
    /// Part credited after payment (refund, balance or out of band).
    pub post_payment_amount: Money,
    /// `metadata.tally_credit_note_id`.
    pub tally_credit_note_id: Option<String>,
}

/// A Stripe balance transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBalanceTransaction {
    /// `txn_…`.
    pub id: String,
    /// Gross amount (negative for refunds and disputes).
    pub amount: Money,
    /// `charge`, `refund`, `adjustment`, `payout`, …
    pub kind: String,
    /// The charge or refund it records.
    pub source: Option<String>,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// A typed object's amount in minor units of its currency.
fn typed_money(
    minor: i64,
    currency: &stripe_types::Currency,
    object: &str,
) -> Result<Money, StripeError> {
    let code = currency.to_string().to_ascii_uppercase();
    let currency = Currency::from_code(&code)
        .map_err(|_| StripeError::Malformed(format!("{object}: unknown currency `{code}`")))?;
    Money::from_minor_units(i128::from(minor), currency)
        .map_err(|_| StripeError::Malformed(format!("{object}: amount {minor} out of range")))
}

fn typed_created(seconds: i64, object: &str) -> Result<DateTime<Utc>, StripeError> {
    Utc.timestamp_opt(seconds, 0)
        .single()
        .ok_or_else(|| malformed(object, "created"))
}

fn typed_metadata(
    metadata: Option<&std::collections::HashMap<String, String>>,
    key: &str,
) -> Option<String> {
    metadata.and_then(|metadata| metadata.get(key)).cloned()
}

fn malformed(object: &str, field: &str) -> StripeError {
    StripeError::Malformed(format!("{object}: missing or invalid `{field}`"))
}

fn string(value: &Value, object: &str, field: &str) -> Result<String, StripeError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| malformed(object, field))
}

fn optional_string(value: &Value, field: &str) -> Option<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// An expandable field: an id, or an expanded object with an `id`.
fn expandable_id(value: &Value, field: &str) -> Option<String> {
    match value.get(field)? {
        Value::String(id) => Some(id.clone()),
        Value::Object(object) => object.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Stripe's lower-case currency code as a domain currency.
pub fn currency(value: &Value, object: &str) -> Result<Currency, StripeError> {
    let code = string(value, object, "currency")?;
    Currency::from_code(&code.to_ascii_uppercase())
        .map_err(|_| StripeError::Malformed(format!("{object}: unknown currency `{code}`")))
}

fn minor_units(
    value: &Value,
    object: &str,
    field: &str,
    currency: Currency,
) -> Result<Money, StripeError> {
    let minor = value
        .get(field)
        .and_then(Value::as_i64)
        .ok_or_else(|| malformed(object, field))?;
    Money::from_minor_units(i128::from(minor), currency).map_err(|_| malformed(object, field))
}

impl RemoteCustomer {
    /// From async-stripe's customer.
    pub fn from_stripe(customer: &stripe_core::Customer) -> Self {
        let default_payment_method = customer
            .invoice_settings
            .as_ref()
            .is_some_and(|settings| settings.default_payment_method.is_some())
            || customer.default_source.is_some();
        Self {
            id: customer.id.as_str().to_owned(),
            livemode: customer.livemode,
            has_default_payment_method: default_payment_method,
        }
    }
}

impl RemoteInvoice {
    /// From async-stripe's invoice. In its API version an invoice carries no
    /// `payment_intent` / `charge`: they are read from its default payment
    /// when `payments` is included (`expand[]=payments`), the charge from
    /// the payment or its expanded PaymentIntent's latest charge; else `None`.
    pub fn from_stripe(invoice: &stripe_billing::Invoice) -> Result<Self, StripeError> {
        let money = |minor| typed_money(minor, &invoice.currency, "invoice");
        let status = match invoice.status.as_ref() {
            Some(stripe_billing::InvoiceStatus::Draft) => RemoteInvoiceStatus::Draft,
            Some(stripe_billing::InvoiceStatus::Open) => RemoteInvoiceStatus::Open,
            Some(stripe_billing::InvoiceStatus::Paid) => RemoteInvoiceStatus::Paid,
            Some(stripe_billing::InvoiceStatus::Void) => RemoteInvoiceStatus::Void,
            Some(stripe_billing::InvoiceStatus::Uncollectible) => {
                RemoteInvoiceStatus::Uncollectible
            }
            _ => return Err(malformed("invoice", "status")),
        };
        let payment = invoice
            .payments
            .as_ref()
            .and_then(|payments| payments.data.iter().find(|payment| payment.is_default))
            .map(|payment| &payment.payment);
        Ok(Self {
            id: invoice
                .id
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .ok_or_else(|| malformed("invoice", "id"))?,
            status,
            amount_due: money(invoice.amount_due)?,
            amount_paid: money(invoice.amount_paid)?,
            payment_intent: payment
                .and_then(|payment| payment.payment_intent.as_ref())
                .map(|intent| intent.id().as_str().to_owned()),
            charge: payment.and_then(payment_charge),
            attempt_count: u32::try_from(invoice.attempt_count).unwrap_or(u32::MAX),
            tally_invoice_id: typed_metadata(invoice.metadata.as_ref(), "tally_invoice_id"),
            created: typed_created(invoice.created, "invoice")?,
        })
    }
}

/// The charge of an invoice payment: its own, or the latest charge of its
/// PaymentIntent when that is expanded.
fn payment_charge(
    payment: &stripe_billing::InvoicesPaymentsInvoicePaymentAssociatedPayment,
) -> Option<String> {
    if let Some(charge) = &payment.charge {
        return Some(charge.id().as_str().to_owned());
    }
    match payment.payment_intent.as_ref()? {
        stripe_types::Expandable::Object(intent) => intent
            .latest_charge
            .as_ref()
            .map(|charge| charge.id().as_str().to_owned()),
        stripe_types::Expandable::Id(_) => None,
    }
}

impl RemoteRefund {
    /// From async-stripe's refund.
    pub fn from_stripe(refund: &stripe_core::Refund) -> Result<Self, StripeError> {
        let status_name = refund
            .status
            .clone()
            .ok_or_else(|| malformed("refund", "status"))?;
        Ok(Self {
            id: refund.id.as_str().to_owned(),
            amount: typed_money(refund.amount, &refund.currency, "refund")?,
            status: refund_status(&status_name),
            status_name,
            charge: refund
                .charge
                .as_ref()
                .map(|charge| charge.id().as_str().to_owned()),
            tally_refund_id: typed_metadata(refund.metadata.as_ref(), "tally_refund_id"),
            failure_reason: refund.failure_reason.clone().unwrap_or_default(),
            created: typed_created(refund.created, "refund")?,
        })
    }
}

fn refund_status(name: &str) -> RemoteRefundStatus {
    match name {
        "succeeded" => RemoteRefundStatus::Succeeded,
        "failed" | "canceled" => RemoteRefundStatus::Failed,
        _ => RemoteRefundStatus::Pending,
    }
}

impl RemoteCharge {
    /// From async-stripe's charge (with its `refunds` when expanded) and the
    /// invoice found through its PaymentIntent.
    pub fn from_stripe(
        charge: &stripe_core::Charge,
        invoice: Option<String>,
    ) -> Result<Self, StripeError> {
        let money = |minor| typed_money(minor, &charge.currency, "charge");
        let refunds = match &charge.refunds {
            Some(list) => list
                .data
                .iter()
                .map(RemoteRefund::from_stripe)
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            id: charge.id.as_str().to_owned(),
            amount: money(charge.amount)?,
            amount_refunded: money(charge.amount_refunded)?,
            status: charge.status.as_str().to_owned(),
            payment_intent: charge
                .payment_intent
                .as_ref()
                .map(|intent| intent.id().as_str().to_owned()),
            invoice,
            failure_code: charge.failure_code.clone().unwrap_or_default(),
            failure_message: charge.failure_message.clone().unwrap_or_default(),
            refunds,
            created: typed_created(charge.created, "charge")?,
        })
    }
}

impl RemotePaymentIntent {
    /// From async-stripe's PaymentIntent and the invoice it pays.
    pub fn from_stripe(intent: &stripe_core::PaymentIntent, invoice: Option<String>) -> Self {
        let error = intent.last_payment_error.as_deref();
        let nonempty = |text: &Option<String>| text.clone().filter(|text| !text.is_empty());
        Self {
            id: intent.id.as_str().to_owned(),
            status: intent.status.as_str().to_owned(),
            invoice,
            latest_charge: intent
                .latest_charge
                .as_ref()
                .map(|charge| charge.id().as_str().to_owned()),
            failure_code: error
                .and_then(|error| {
                    nonempty(&error.decline_code)
                        .or_else(|| error.code.as_ref().map(|code| code.as_str().to_owned()))
                })
                .unwrap_or_default(),
            failure_message: error
                .and_then(|error| nonempty(&error.message))
                .unwrap_or_default(),
        }
    }
}

impl RemoteDispute {
    /// Reads a `dispute` object.
    pub fn from_json(value: &Value) -> Result<Self, StripeError> {
        let currency = currency(value, "dispute")?;
        Ok(Self {
            id: string(value, "dispute", "id")?,
            charge: expandable_id(value, "charge").ok_or_else(|| malformed("dispute", "charge"))?,
            amount: minor_units(value, "dispute", "amount", currency)?,
            reason: optional_string(value, "reason").unwrap_or_default(),
        })
    }
}

impl RemoteCreditNote {
    /// From async-stripe's credit note.
    pub fn from_stripe(note: &stripe_billing::CreditNote) -> Result<Self, StripeError> {
        let money = |minor| typed_money(minor, &note.currency, "credit_note");
        Ok(Self {
            id: note.id.as_str().to_owned(),
            invoice: note.invoice.id().as_ref().map(|id| id.as_str().to_owned()),
            amount: money(note.amount)?,
            pre_payment_amount: money(note.pre_payment_amount)?,
            post_payment_amount: money(note.post_payment_amount)?,
            tally_credit_note_id: typed_metadata(note.metadata.as_ref(), "tally_credit_note_id"),
        })
    }
}

impl RemoteBalanceTransaction {
    /// From async-stripe's balance transaction.
    pub fn from_stripe(transaction: &stripe_core::BalanceTransaction) -> Result<Self, StripeError> {
        Ok(Self {
            id: transaction.id.as_str().to_owned(),
            amount: typed_money(
                transaction.amount,
                &transaction.currency,
                "balance_transaction",
            )?,
            kind: transaction.type_.as_str().to_owned(),
            source: transaction
                .source
                .as_ref()
                .map(|source| source.id().as_str().to_owned()),
            created: typed_created(transaction.created, "balance_transaction")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use serde_json::json;

    #[test]
    fn minor_units_follow_the_currency_exponent() {
        let jpy: stripe_types::Currency = "jpy".parse().unwrap();
        assert_eq!(
            typed_money(1050, &jpy, "invoice").unwrap(),
            Money::new(dec!(1050), Currency::JPY)
        );
        let refund: stripe_core::Refund = miniserde::json::from_str(
            r#"{"id": "re_1", "object": "refund", "amount": 1999, "currency": "usd",
                "created": 1, "status": "pending", "charge": "ch_1",
                "metadata": {"tally_refund_id": "ref_1"}}"#,
        )
        .unwrap();
        let refund = RemoteRefund::from_stripe(&refund).unwrap();
        assert_eq!(refund.amount, Money::new(dec!(19.99), Currency::USD));
        assert_eq!(refund.status, RemoteRefundStatus::Pending);
        assert_eq!(refund.charge.as_deref(), Some("ch_1"));
        assert_eq!(refund.tally_refund_id.as_deref(), Some("ref_1"));
    }

    #[test]
    fn a_missing_field_is_named() {
        let error =
            RemoteDispute::from_json(&json!({"id": "dp_1", "currency": "usd"})).unwrap_err();
        assert!(error.to_string().contains("charge"), "{error}");
    }
}
