//! Accepting a signed quote: one transaction keyed by the quote revision.
//!
//! The quote row is locked first, so two acceptances of one revision run one after the
//! other and the second finds it accepted: with the same signature it returns the first
//! result and creates nothing (`accepted_now = false`), with another it is refused. A
//! chain is accepted at most once (a partial unique index). In the transaction: the
//! customer for a new one (or the existing one with the same external id and name), the
//! subscription on the quote's plan version from its start — or, for an amendment, the
//! plan change at its start —, the quote's signature and result, the idempotency key, and
//! last the audit entries (`customer.created`, `subscription.created` or
//! `subscription.plan_changed`, `quote.accepted`).

use chrono::{DateTime, Utc};
use prost::Message as _;
use tally_domain::quote::QuoteStatus;
use tally_proto::invoicing as proto;

use crate::audit::customer_state;
use crate::error::{InvoicingError, Result};
use crate::idempotency::request_hash;
use crate::wire::optional_instant;

use super::lifecycle::quote_state;
use super::mapping::{MAX_TEXT_CHARS, quote_value};
use super::model::{Party, Quote, Signature};
use super::{Quotes, precondition, store};

/// The signature a request carries, checked.
fn signature(request: &proto::AcceptQuoteRequest, now: DateTime<Utc>) -> Result<Signature> {
    let signed_at = optional_instant(request.signed_at.as_ref(), "signed_at")?
        .ok_or_else(|| InvoicingError::invalid("signed_at", "is required"))?;
    let length = request.signed_by.chars().count();
    if request.signed_by.trim().is_empty() || length > MAX_TEXT_CHARS {
        return Err(InvoicingError::invalid(
            "signed_by",
            format!("must be 1-{MAX_TEXT_CHARS} characters"),
        ));
    }
    if signed_at > now {
        return Err(InvoicingError::invalid(
            "signed_at",
            format!("{signed_at} is in the future (now is {now})"),
        ));
    }
    let hash = &request.document_sha256;
    let is_hex = hash.len() == 64
        && hash
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if !hash.is_empty() && !is_hex {
        return Err(InvoicingError::invalid(
            "document_sha256",
            "must be 64 lowercase hexadecimal digits (a SHA-256)",
        ));
    }
    Ok(Signature {
        signed_by: request.signed_by.clone(),
        signed_at,
        document_sha256: (!hash.is_empty()).then(|| hash.clone()),
    })
}

impl Quotes<'_> {
    pub(super) async fn accept_quote(
        &self,
        request: proto::AcceptQuoteRequest,
        origin: &tally_audit::Origin,
    ) -> Result<(proto::Quote, bool)> {
        const METHOD: &str = "AcceptQuote";
        let signature = signature(&request, self.clock.now())?;
        // Rating is asked before the transaction (the plan version must still be published
        // and invoicing keeps its copy); the quote is read again, locked, inside it.
        let plan = {
            let mut violations = crate::error::Violations::default();
            violations.id::<tally_domain::ids::QuoteId>(&request.quote_id, "quote_id");
            violations.into_result()?;
            let mut connection = self.pool.acquire().await?;
            let quote = store::load(&mut connection, &request.quote_id, false).await?;
            crate::plans::published(
                &mut connection,
                &self.rating,
                &quote.offer.plan_version_id,
                "quote.plan_version_id",
                self.clock.now(),
            )
            .await?
        };
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let (mut transaction, idem, mut quote, now) = match self
            .begin(METHOD, &request.idempotency_key, &request.quote_id, hash)
            .await?
        {
            Ok(begun) => begun,
            Err(replay) => return Ok((replay, false)),
        };
        match quote.status_at(now) {
            QuoteStatus::Open => {}
            QuoteStatus::Accepted => {
                let first = accepted_again(&quote, &signature, now)?;
                idem.record(&mut transaction, &quote.id, now).await?;
                transaction.commit().await?;
                return Ok((first, false));
            }
            QuoteStatus::Expired => {
                return Err(precondition(format!(
                    "quote {} (revision {}) expired at {}; it can no longer be accepted: make a revision with a later expiry",
                    quote.number.as_deref().unwrap_or(&quote.id),
                    quote.revision,
                    quote.offer.expires_at
                )));
            }
            status @ (QuoteStatus::Draft | QuoteStatus::Declined | QuoteStatus::Canceled) => {
                let hint = if status == QuoteStatus::Draft {
                    ": finalize it first"
                } else {
                    ""
                };
                return Err(precondition(format!(
                    "quote {} is {status}; only an open quote is accepted{hint}",
                    quote.id
                )));
            }
        }
        if signature.signed_at >= quote.offer.expires_at {
            return Err(InvoicingError::invalid(
                "signed_at",
                format!(
                    "{} is not before the quote's expiry {}",
                    signature.signed_at, quote.offer.expires_at
                ),
            ));
        }
        let before = quote_state(&quote, now);
        let (customer, customer_created) = match &quote.offer.party {
            Party::Customer(id) => (
                crate::customers::load(&mut transaction, id, true).await?,
                false,
            ),
            Party::New(new_customer) => {
                self.customers()
                    .create_in(
                        &mut transaction,
                        proto::CreateCustomerRequest {
                            external_id: new_customer.external_id.clone(),
                            name: new_customer.name.clone(),
                            billing_email: new_customer.billing_email.clone(),
                            currency: quote.offer.currency.code().to_owned(),
                            ..Default::default()
                        },
                        now,
                    )
                    .await?
            }
        };
        let subscriptions = self.subscriptions();
        let (action, subscription_before, subscription) = match &quote.offer.amends_subscription_id
        {
            Some(subscription_id) => {
                let (before, after) = subscriptions
                    .amend_for_quote(&mut transaction, subscription_id, &plan, &quote.offer, now)
                    .await?;
                ("plan_changed", Some(before), after)
            }
            None => {
                let created = subscriptions
                    .create_for_quote(&mut transaction, &customer, &plan, &quote, now)
                    .await?;
                ("created", None, created)
            }
        };
        quote.status = QuoteStatus::Accepted;
        quote.signature = Some(signature);
        quote.accepted_customer_id = Some(customer.id.clone());
        quote.subscription_id = Some(subscription.id.clone());
        quote.accepted_at = Some(now);
        quote.updated_at = now;
        store::update(&mut transaction, &quote).await?;
        // The audit entries come last: the chain head's lock is taken after every other.
        if customer_created {
            let entry = self
                .audit_entry(now, "customer.created", ("customer", &customer.id), origin)
                .reason(format!("quote {}", quote.id))
                .after(customer_state(&customer));
            self.audit(&mut transaction, entry).await?;
        }
        let reason = format!("quote {}", quote.id);
        self.audit_subscription(
            &mut transaction,
            (action, &reason),
            subscription_before.as_ref(),
            &subscription,
            (origin, now),
        )
        .await?;
        let accepted = self
            .finish(
                transaction,
                &idem,
                ("quote.accepted", ""),
                before,
                &quote,
                (origin, now),
            )
            .await?;
        Ok((accepted, true))
    }
}

/// An accepted quote accepted again: the first result when the signature is the same,
/// refused otherwise.
fn accepted_again(
    quote: &Quote,
    signature: &Signature,
    now: DateTime<Utc>,
) -> Result<proto::Quote> {
    match &quote.signature {
        Some(first) if first == signature => Ok(quote_value(quote, now)),
        Some(first) => Err(precondition(format!(
            "quote {} was already accepted, signed by {} at {}",
            quote.id, first.signed_by, first.signed_at
        ))),
        None => Err(InvoicingError::internal(format!(
            "accepted quote {} has no signature",
            quote.id
        ))),
    }
}
