//! The `invoice-events` consumer (`payments-invoice-events`): a finalized
//! invoice is mirrored to Stripe and collected; a voided one is voided there;
//! a credit note is mirrored by [`crate::credit_notes`].
//!
//! Stripe calls cannot join a database transaction, so a finalization goes
//! through checkpoints that make every step safe to repeat after a crash or a
//! redelivery: the invoice and payment rows (with the receivable entry) are
//! written first; the Stripe customer mapping, the Stripe invoice id and each
//! created invoice item are stored as soon as Stripe returns them; the
//! invoice status moves to `open` once finalized; and the first attempt's
//! outcome is committed together with the inbox record. Every Stripe call
//! carries a key derived from Tally ids, so a repeated step is answered from
//! Stripe's idempotency cache instead of acting twice.

use async_trait::async_trait;
use prost::Message as _;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_bus::inbox::{self, ServiceSchema};
use tally_domain::ledger::Posted;
use tally_domain::money::{Currency, Money};
use tally_proto::events::InvoiceEvent;
use tally_proto::events::invoice_event::Kind;
use tally_proto::invoicing::{CollectionMode, Customer, Invoice};

use crate::core::{AttemptOutcome, Core, failed_attempt};
use crate::credit_notes;
use crate::error::PaymentsError;
use crate::ledger::{self, Book};
use crate::store::{self, PaymentKey, PaymentRow, PaymentState};
use crate::stripe::{Collection, CustomerDetails, InvoiceItem, StripeError};
use crate::{INVOICE_EVENTS_SUBSCRIPTION, metrics};
use tally_proto::convert::money as parse_money;

/// The full protobuf name of invoice events.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";

/// Handles `invoice-events`.
#[derive(Debug, Clone)]
pub struct InvoiceEventsHandler {
    core: Core,
}

/// An invoice to collect, validated from the snapshot.
#[derive(Debug, Clone)]
struct Collectible {
    invoice_id: String,
    number: String,
    customer: CustomerDetails,
    currency: Currency,
    amount_due: Money,
    items: Vec<InvoiceItem>,
    collection: Collection,
    net_terms_days: u32,
    version: i64,
}

#[derive(Debug, Clone)]
struct InvoiceRow {
    status: String,
    stripe_invoice_id: Option<String>,
}

impl InvoiceEventsHandler {
    /// A handler over `core`.
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    async fn already_applied(&self, message_id: &str) -> Result<bool, PaymentsError> {
        let applied: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM payments.inbox WHERE subscription = $1 AND message_id = $2",
        )
        .bind(INVOICE_EVENTS_SUBSCRIPTION)
        .bind(message_id)
        .fetch_optional(&self.core.pool)
        .await?;
        Ok(applied.is_some())
    }

    async fn record_only(&self, message_id: &str) -> Result<(), PaymentsError> {
        let mut transaction = self.core.pool.begin().await?;
        record_inbox(&mut transaction, message_id).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Mirrors and collects a finalized invoice.
    async fn finalized(
        &self,
        message_id: &str,
        event: &InvoiceEvent,
        amount_due: Money,
    ) -> Result<(), HandlerError> {
        let collectible = collectible(event, amount_due).map_err(HandlerError::Poison)?;
        let Some(row) = self
            .checkpoint_invoice(&collectible, event)
            .await
            .map_err(retry)?
        else {
            // An older snapshot, or nothing to collect: recorded, done.
            return self.record_only(message_id).await.map_err(retry);
        };
        let mut stripe_invoice_id = row.stripe_invoice_id.clone();
        if row.status == "syncing" {
            match self.mirror(&collectible, stripe_invoice_id.clone()).await {
                Ok(id) => stripe_invoice_id = Some(id),
                Err(PaymentsError::Stripe(error)) if !error.is_transient() => {
                    self.sync_failed(message_id, &collectible, &error)
                        .await
                        .map_err(retry)?;
                    return Ok(());
                }
                Err(error) => return Err(retry(error)),
            }
        } else if row.status != "open" {
            // Paid, void, uncollectible or failed already: nothing to collect.
            return self.record_only(message_id).await.map_err(retry);
        }
        let Some(stripe_invoice_id) = stripe_invoice_id else {
            return Err(HandlerError::Retry(
                "the Stripe invoice id is missing".into(),
            ));
        };
        self.collect_first_time(message_id, &collectible, &stripe_invoice_id)
            .await
            .map_err(retry)
    }

    /// Writes the invoice and payment rows (once) and returns the invoice
    /// row, or `None` when the snapshot is older than the one held or there is
    /// nothing to collect.
    async fn checkpoint_invoice(
        &self,
        collectible: &Collectible,
        event: &InvoiceEvent,
    ) -> Result<Option<InvoiceRow>, PaymentsError> {
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        let existing = sqlx::query(
            "SELECT version, status, stripe_invoice_id FROM payments.invoices WHERE invoice_id = $1 FOR UPDATE",
        )
        .bind(&collectible.invoice_id)
        .fetch_optional(&mut *transaction)
        .await?;
        if let Some(existing) = existing {
            let version: i64 = existing.try_get("version")?;
            if version > collectible.version {
                return Ok(None);
            }
            return Ok(Some(InvoiceRow {
                status: existing.try_get("status")?,
                stripe_invoice_id: existing.try_get("stripe_invoice_id")?,
            }));
        }
        let nothing_due = collectible.amount_due.is_zero();
        let snapshot = event.invoice.as_ref().map(prost::Message::encode_to_vec);
        sqlx::query(
            "INSERT INTO payments.invoices (invoice_id, customer_id, currency, amount_due, collection_mode, \
             net_terms_days, version, status, snapshot, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&collectible.invoice_id)
        .bind(&collectible.customer.tally_customer_id)
        .bind(collectible.currency.code())
        .bind(collectible.amount_due.amount())
        .bind(match collectible.collection {
            Collection::ChargeAutomatically => "charge_automatically",
            Collection::SendInvoice { .. } => "send_invoice",
        })
        .bind(i32::try_from(collectible.net_terms_days).unwrap_or(i32::MAX))
        .bind(collectible.version)
        .bind(if nothing_due { "nothing_due" } else { "syncing" })
        .bind(snapshot.unwrap_or_default())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if nothing_due {
            transaction.commit().await?;
            return Ok(None);
        }
        let payment = PaymentRow {
            id: self.core.ids.new_id("pay"),
            invoice_id: collectible.invoice_id.clone(),
            customer_id: collectible.customer.tally_customer_id.clone(),
            amount: collectible.amount_due,
            amount_refunded: Money::zero(collectible.currency),
            status: PaymentState::Pending,
            stripe_invoice_id: None,
            stripe_payment_intent_id: None,
            stripe_charge_id: None,
            attempt_count: 0,
            first_failed_at: None,
            next_retry_at: None,
            dunning_step: 0,
            created_at: now,
            updated_at: now,
        };
        store::insert_payment(&mut transaction, &payment).await?;
        let receivable = ledger::transfer(
            &format!("invoice:{}:finalized", collectible.invoice_id),
            now,
            Book::Receivable,
            Book::Invoiced,
            collectible.amount_due,
        )?;
        ledger::post(&mut transaction, &receivable, now).await?;
        transaction.commit().await?;
        Ok(Some(InvoiceRow {
            status: "syncing".into(),
            stripe_invoice_id: None,
        }))
    }

    /// Customer, invoice, items, finalization; returns the Stripe invoice id.
    async fn mirror(
        &self,
        collectible: &Collectible,
        stripe_invoice_id: Option<String>,
    ) -> Result<String, PaymentsError> {
        let stripe_customer_id = self.ensure_customer(&collectible.customer).await?;
        let stripe_invoice_id = match stripe_invoice_id {
            Some(id) => id,
            None => {
                let created = self
                    .core
                    .stripe
                    .create_invoice(
                        &collectible.invoice_id,
                        &collectible.number,
                        &stripe_customer_id,
                        collectible.currency,
                        collectible.collection,
                    )
                    .await?;
                let mut transaction = self.core.pool.begin().await?;
                sqlx::query(
                    "UPDATE payments.invoices SET stripe_invoice_id = $2 WHERE invoice_id = $1",
                )
                .bind(&collectible.invoice_id)
                .bind(&created.id)
                .execute(&mut *transaction)
                .await?;
                sqlx::query(
                    "UPDATE payments.payments SET stripe_invoice_id = $2 WHERE invoice_id = $1",
                )
                .bind(&collectible.invoice_id)
                .bind(&created.id)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                created.id
            }
        };
        let created_lines: Vec<String> =
            sqlx::query_scalar("SELECT line_id FROM payments.invoice_items WHERE invoice_id = $1")
                .bind(&collectible.invoice_id)
                .fetch_all(&self.core.pool)
                .await?;
        for item in &collectible.items {
            if created_lines.contains(&item.tally_line_id) {
                continue;
            }
            let item_id = self
                .core
                .stripe
                .create_invoice_item(&stripe_customer_id, &stripe_invoice_id, item)
                .await?;
            sqlx::query(
                "INSERT INTO payments.invoice_items (line_id, invoice_id, stripe_invoice_item_id) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(&item.tally_line_id)
            .bind(&collectible.invoice_id)
            .bind(&item_id)
            .execute(&self.core.pool)
            .await?;
        }
        let finalized = self
            .core
            .stripe
            .finalize_invoice(&collectible.invoice_id, &stripe_invoice_id)
            .await?;
        if finalized.amount_due != collectible.amount_due {
            // Never leave a wrong invoice collectible in Stripe: void it
            // first (best effort; reconciliation shows it if this fails).
            if let Err(error) = self
                .core
                .stripe
                .void_invoice(&collectible.invoice_id, &stripe_invoice_id)
                .await
            {
                tracing::error!(invoice_id = %collectible.invoice_id, %error, "could not void the mismatched Stripe invoice");
            }
            return Err(StripeError::Malformed(format!(
                "Stripe invoice {} is due {}, Tally invoice {} is due {}",
                finalized.id, finalized.amount_due, collectible.invoice_id, collectible.amount_due
            ))
            .into());
        }
        let now = self.core.clock.now();
        sqlx::query("UPDATE payments.invoices SET status = $2, updated_at = $3 WHERE invoice_id = $1 AND status = 'syncing'")
            .bind(&collectible.invoice_id)
            .bind("open")
            .bind(now)
            .execute(&self.core.pool)
            .await?;
        Ok(stripe_invoice_id)
    }

    /// The Stripe customer of a Tally customer, created or updated as needed.
    async fn ensure_customer(&self, details: &CustomerDetails) -> Result<String, PaymentsError> {
        let hash = customer_hash(details);
        let now = self.core.clock.now();
        let mapped: Option<(String, String)> = sqlx::query_as(
            "SELECT stripe_customer_id, synced_hash FROM payments.stripe_customers WHERE customer_id = $1",
        )
        .bind(&details.tally_customer_id)
        .fetch_optional(&self.core.pool)
        .await?;
        if let Some((stripe_customer_id, synced_hash)) = mapped {
            if synced_hash != hash {
                let updated = self
                    .core
                    .stripe
                    .update_customer(&stripe_customer_id, details, &hash[..16])
                    .await?;
                sqlx::query(
                    "UPDATE payments.stripe_customers SET synced_hash = $2, synced_at = $3, \
                     has_default_payment_method = $4 WHERE customer_id = $1",
                )
                .bind(&details.tally_customer_id)
                .bind(&hash)
                .bind(now)
                .bind(updated.has_default_payment_method)
                .execute(&self.core.pool)
                .await?;
            }
            return Ok(stripe_customer_id);
        }
        let created = self.core.stripe.create_customer(details).await?;
        sqlx::query(
            "INSERT INTO payments.stripe_customers (customer_id, stripe_customer_id, livemode, \
             has_default_payment_method, synced_hash, created_at, synced_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(&details.tally_customer_id)
        .bind(&created.id)
        .bind(created.livemode)
        .bind(created.has_default_payment_method)
        .bind(&hash)
        .bind(now)
        .execute(&self.core.pool)
        .await?;
        let stripe_customer_id: String = sqlx::query_scalar(
            "SELECT stripe_customer_id FROM payments.stripe_customers WHERE customer_id = $1",
        )
        .bind(&details.tally_customer_id)
        .fetch_one(&self.core.pool)
        .await?;
        Ok(stripe_customer_id)
    }

    /// Charges (or sends) the invoice the first time and records the
    /// outcome with the inbox entry.
    async fn collect_first_time(
        &self,
        message_id: &str,
        collectible: &Collectible,
        stripe_invoice_id: &str,
    ) -> Result<(), PaymentsError> {
        let current = {
            let mut connection = self.core.pool.acquire().await?;
            store::payment(
                &mut connection,
                PaymentKey::Invoice(&collectible.invoice_id),
                false,
            )
            .await?
        };
        let Some(current) = current else {
            return Err(PaymentsError::NotFound(format!(
                "payment of {}",
                collectible.invoice_id
            )));
        };
        let outcome = if current.attempt_count > 0 || !current.status.is_collectible() {
            None
        } else {
            match collectible.collection {
                Collection::ChargeAutomatically => Some(
                    self.core
                        .attempt_payment(&collectible.invoice_id, stripe_invoice_id, 1)
                        .await?,
                ),
                Collection::SendInvoice { .. } => {
                    let sent = self
                        .core
                        .stripe
                        .send_invoice(&collectible.invoice_id, stripe_invoice_id)
                        .await;
                    match sent {
                        Ok(_) => None,
                        Err(error) if error.is_transient() => return Err(error.into()),
                        // E.g. no email address: recorded, not retried.
                        Err(error) => {
                            return self.sync_failed(message_id, collectible, &error).await;
                        }
                    }
                }
            }
        };
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        if !record_inbox(&mut transaction, message_id).await? {
            return Ok(());
        }
        if let Some(outcome) = outcome {
            let Some(mut payment) = store::payment(
                &mut transaction,
                PaymentKey::Invoice(&collectible.invoice_id),
                true,
            )
            .await?
            else {
                return Err(PaymentsError::NotFound(collectible.invoice_id.clone()));
            };
            if payment.attempt_count == 0 {
                self.core
                    .apply_attempt(&mut transaction, &mut payment, 1, &outcome, now)
                    .await?;
            }
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Stripe refused the mirror for good: the payment fails (no dunning:
    /// retrying the same request cannot help) and the reason is kept.
    async fn sync_failed(
        &self,
        message_id: &str,
        collectible: &Collectible,
        error: &StripeError,
    ) -> Result<(), PaymentsError> {
        metrics::sync_failed();
        tracing::error!(invoice_id = %collectible.invoice_id, %error, "Stripe refused to mirror the invoice");
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        if !record_inbox(&mut transaction, message_id).await? {
            return Ok(());
        }
        sqlx::query(
            "UPDATE payments.invoices SET status = 'sync_failed', sync_error = $2, updated_at = $3 WHERE invoice_id = $1",
        )
        .bind(&collectible.invoice_id)
        .bind(error.to_string())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if let Some(mut payment) = store::payment(
            &mut transaction,
            PaymentKey::Invoice(&collectible.invoice_id),
            true,
        )
        .await?
        {
            let number = payment.attempt_count + 1;
            let mut outcome = failed_attempt(error);
            if let AttemptOutcome::Failed { code, .. } = &mut outcome {
                *code = format!("sync_failed:{code}");
            }
            self.core
                .apply_attempt(&mut transaction, &mut payment, number, &outcome, now)
                .await?;
            // No dunning for a refused mirror: the same request would be refused again.
            payment.next_retry_at = None;
            store::update_payment(&mut transaction, &payment).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Voids the Stripe invoice and cancels the payment.
    async fn voided(&self, message_id: &str, event: &InvoiceEvent) -> Result<(), PaymentsError> {
        let version = event.invoice.as_ref().map_or(0, |invoice| {
            i64::try_from(invoice.version).unwrap_or(i64::MAX)
        });
        let row: Option<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT version, status, stripe_invoice_id FROM payments.invoices WHERE invoice_id = $1",
        )
        .bind(&event.invoice_id)
        .fetch_optional(&self.core.pool)
        .await?;
        let Some((held_version, status, stripe_invoice_id)) = row else {
            // Never finalized here: nothing was sent to Stripe.
            return self.record_only(message_id).await;
        };
        if held_version > version {
            return self.record_only(message_id).await;
        }
        if let Some(stripe_invoice_id) = &stripe_invoice_id
            && matches!(status.as_str(), "open" | "syncing")
        {
            match self
                .core
                .stripe
                .void_invoice(&event.invoice_id, stripe_invoice_id)
                .await
            {
                Ok(_) => {}
                Err(error) if error.is_transient() => return Err(error.into()),
                Err(error) => {
                    tracing::error!(invoice_id = %event.invoice_id, %error, "Stripe refused to void the invoice");
                }
            }
        }
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        if !record_inbox(&mut transaction, message_id).await? {
            return Ok(());
        }
        let Some(mut payment) = store::payment(
            &mut transaction,
            PaymentKey::Invoice(&event.invoice_id),
            true,
        )
        .await?
        else {
            transaction.commit().await?;
            return Ok(());
        };
        if !payment.status.is_collectible() {
            tracing::warn!(invoice_id = %event.invoice_id, status = payment.status.as_str(), "voided invoice was already settled; left as is");
            transaction.commit().await?;
            return Ok(());
        }
        payment.status = PaymentState::Canceled;
        payment.next_retry_at = None;
        payment.updated_at = now;
        store::update_payment(&mut transaction, &payment).await?;
        sqlx::query(
            "UPDATE payments.invoices SET status = 'void', version = $2, updated_at = $3 WHERE invoice_id = $1",
        )
        .bind(&event.invoice_id)
        .bind(version)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        let finalized_id =
            ledger::transaction_id(&format!("invoice:{}:finalized", event.invoice_id));
        if let Some(finalized) = ledger::find(&mut transaction, &finalized_id).await? {
            let reversal = finalized.reversal(
                ledger::transaction_id(&format!("invoice:{}:voided", event.invoice_id)),
                now,
            );
            let posted = ledger::post(&mut transaction, &reversal, now).await?;
            debug_assert!(matches!(posted, Posted::Recorded | Posted::AlreadyRecorded));
        }
        transaction.commit().await?;
        Ok(())
    }
}

/// Records the message in the inbox; `false` when it already was.
pub(crate) async fn record_inbox(
    connection: &mut sqlx::PgConnection,
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

fn retry(error: PaymentsError) -> HandlerError {
    HandlerError::Retry(error.to_string())
}

fn customer_hash(details: &CustomerDetails) -> String {
    let mut hasher = Sha256::new();
    for part in [&details.name, &details.email] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for part in details.address.iter().flatten() {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Validates a finalized snapshot into what Stripe needs.
fn collectible(event: &InvoiceEvent, amount_due: Money) -> Result<Collectible, String> {
    let invoice: &Invoice = event.invoice.as_ref().ok_or("invoice: required")?;
    let customer: &Customer = event.customer.as_ref().ok_or("customer: required")?;
    if invoice.id != event.invoice_id || invoice.id.is_empty() {
        return Err(format!(
            "invoice.id: `{}` differs from invoice_id `{}`",
            invoice.id, event.invoice_id
        ));
    }
    if customer.id != invoice.customer_id || customer.id.is_empty() {
        return Err(format!(
            "customer.id: `{}` differs from invoice.customer_id `{}`",
            customer.id, invoice.customer_id
        ));
    }
    let currency = Currency::from_code(&invoice.currency)
        .map_err(|_| format!("invoice.currency: unknown currency `{}`", invoice.currency))?;
    if amount_due.currency() != currency {
        return Err(format!(
            "finalized.amount_due: currency {} differs from the invoice's {currency}",
            amount_due.currency()
        ));
    }
    if !amount_due.is_rounded() || amount_due.is_negative() {
        return Err(format!(
            "finalized.amount_due: {amount_due} is not a non-negative amount in whole minor units"
        ));
    }
    let mut items = Vec::with_capacity(invoice.lines.len());
    let mut lines_total = Money::zero(currency);
    for (index, line) in invoice.lines.iter().enumerate() {
        let amount = parse_money(
            line.amount.as_ref(),
            &format!("invoice.lines[{index}].amount"),
        )
        .map_err(|error| error.to_string())?;
        if amount.currency() != currency {
            return Err(format!(
                "invoice.lines[{index}].amount: currency {} differs from the invoice's {currency}",
                amount.currency()
            ));
        }
        if !amount.is_rounded() {
            return Err(format!(
                "invoice.lines[{index}].amount: {amount} is not in whole minor units of {currency}"
            ));
        }
        if line.id.is_empty() {
            return Err(format!("invoice.lines[{index}].id: required"));
        }
        lines_total = lines_total
            .checked_add(&amount)
            .map_err(|error| format!("invoice.lines: {error}"))?;
        if amount.is_zero() {
            continue;
        }
        items.push(InvoiceItem {
            tally_line_id: line.id.clone(),
            description: line.description.clone(),
            amount,
        });
    }
    // What was paid or credited before finalization is not a line: one
    // adjustment item makes Stripe's total equal the amount due exactly.
    let difference = amount_due
        .checked_sub(&lines_total)
        .map_err(|error| format!("invoice.lines: {error}"))?;
    if !difference.is_zero() {
        items.push(InvoiceItem {
            tally_line_id: format!("{}_settled_before_finalization", invoice.id),
            description: "Paid or credited before finalization".into(),
            amount: difference,
        });
    }
    let collection = match CollectionMode::try_from(invoice.collection_mode)
        .unwrap_or(CollectionMode::Unspecified)
    {
        CollectionMode::SendInvoice => Collection::SendInvoice {
            days_until_due: if customer.net_terms_days == 0 {
                30
            } else {
                customer.net_terms_days
            },
        },
        CollectionMode::ChargeAutomatically | CollectionMode::Unspecified => {
            Collection::ChargeAutomatically
        }
    };
    let address = customer.billing_address.as_ref().map(|address| {
        [
            address.line1.clone(),
            address.line2.clone(),
            address.city.clone(),
            address.region.clone(),
            address.postal_code.clone(),
            address.country.clone(),
        ]
    });
    let net_terms_days = match collection {
        Collection::SendInvoice { days_until_due } => days_until_due,
        Collection::ChargeAutomatically => 0,
    };
    Ok(Collectible {
        invoice_id: invoice.id.clone(),
        number: invoice.number.clone(),
        customer: CustomerDetails {
            tally_customer_id: customer.id.clone(),
            name: customer.name.clone(),
            email: customer.billing_email.clone(),
            address,
            tax_id: customer
                .tax_id
                .as_ref()
                .filter(|tax_id| !tax_id.kind.is_empty() && !tax_id.value.is_empty())
                .map(|tax_id| (tax_id.kind.clone(), tax_id.value.clone())),
        },
        currency,
        amount_due,
        items,
        collection,
        net_terms_days,
        version: i64::try_from(invoice.version).unwrap_or(i64::MAX),
    })
}

#[async_trait]
impl MessageHandler for InvoiceEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        if message.message_type != INVOICE_EVENT_TYPE {
            return Err(HandlerError::Poison(format!(
                "expected {INVOICE_EVENT_TYPE}, got `{}`",
                message.message_type
            )));
        }
        if message.type_version != 1 {
            return Err(HandlerError::Poison(format!(
                "unknown version {} of {INVOICE_EVENT_TYPE}",
                message.type_version
            )));
        }
        let event = InvoiceEvent::decode(message.payload.as_slice())
            .map_err(|error| HandlerError::Poison(format!("undecodable InvoiceEvent: {error}")))?;
        if self.already_applied(&message.id).await.map_err(retry)? {
            return Ok(());
        }
        match &event.kind {
            Some(Kind::Finalized(finalized)) => {
                let amount_due = parse_money(finalized.amount_due.as_ref(), "finalized.amount_due")
                    .map_err(|error| HandlerError::Poison(error.to_string()))?;
                self.finalized(&message.id, &event, amount_due).await
            }
            Some(Kind::Voided(_)) => self.voided(&message.id, &event).await.map_err(retry),
            Some(Kind::CreditNoteIssued(issued)) => {
                credit_notes::issued(&self.core, &message.id, &event, issued).await
            }
            // Paid and uncollectible are invoicing's own bookkeeping (caused
            // by payments' own events).
            Some(_) => self.record_only(&message.id).await.map_err(retry),
            None => Err(HandlerError::Poison("InvoiceEvent without a kind".into())),
        }
    }
}
