//! Quotes at the edge: the wire `QuoteContent` read into what the logic checks further
//! (every shape violation at once, each naming its field under `quote.`), and the stored
//! [`Quote`] written as the wire `Quote`.

use chrono::{DateTime, Utc};
use tally_domain::ids::{CustomerId, PlanVersionId, SubscriptionId};
use tally_domain::quote::{MAX_TERM_MONTHS, QuotePreview, QuoteStatus};
use tally_proto::convert::terms::subscription_terms_value;
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result, Violations};
use crate::wire::{maybe_timestamp, money_of, optional_instant, time_range, timestamp};

use super::model::{NewCustomer, Party, Quote};

/// The most characters of a memo.
const MAX_MEMO_CHARS: usize = 2000;
/// The most characters of a reason or a signer.
pub(super) const MAX_TEXT_CHARS: usize = 500;

/// A `QuoteContent` whose shapes are right (ids, instants, party, term, memo); the terms,
/// the plan version and the customer are checked by the logic.
pub(super) struct Content {
    pub party: Party,
    pub amends_subscription_id: Option<String>,
    pub plan_version_id: String,
    pub terms: proto::SubscriptionTerms,
    pub starts_at: DateTime<Utc>,
    pub term_months: u32,
    pub expires_at: DateTime<Utc>,
    pub memo: String,
}

/// Reads `quote` (field prefix `quote.`), reporting every violation at once.
pub(super) fn content(quote: Option<&proto::QuoteContent>) -> Result<Content> {
    let Some(quote) = quote else {
        return Err(InvoicingError::invalid("quote", "is required"));
    };
    // A malformed instant is reported alone (as every service's readers do).
    let starts_at = optional_instant(quote.start_at.as_ref(), "quote.start_at")?;
    let expires_at = optional_instant(quote.expires_at.as_ref(), "quote.expires_at")?;
    let mut violations = Violations::default();
    let party = match &quote.party {
        Some(proto::quote_content::Party::CustomerId(id)) => {
            violations.id::<CustomerId>(id, "quote.customer_id");
            Party::Customer(id.clone())
        }
        Some(proto::quote_content::Party::NewCustomer(customer)) => {
            new_customer(customer, &mut violations)
        }
        None => {
            violations.add(
                "quote.customer_id",
                "one of customer_id or new_customer is required",
            );
            Party::Customer(String::new())
        }
    };
    let amends = (!quote.amends_subscription_id.is_empty()).then(|| {
        violations.id::<SubscriptionId>(
            &quote.amends_subscription_id,
            "quote.amends_subscription_id",
        );
        quote.amends_subscription_id.clone()
    });
    if amends.is_some() && matches!(party, Party::New(_)) {
        violations.add(
            "quote.amends_subscription_id",
            "an amendment is for an existing customer: set customer_id",
        );
    }
    violations.id::<PlanVersionId>(&quote.plan_version_id, "quote.plan_version_id");
    for (value, field) in [
        (starts_at, "quote.start_at"),
        (expires_at, "quote.expires_at"),
    ] {
        if value.is_none() {
            violations.add(field, "is required");
        }
    }
    if quote.term_months == 0 || quote.term_months > MAX_TERM_MONTHS {
        violations.add(
            "quote.term_months",
            format!("must be 1–{MAX_TERM_MONTHS} months"),
        );
    }
    if quote.memo.chars().count() > MAX_MEMO_CHARS {
        violations.add(
            "quote.memo",
            format!("must be at most {MAX_MEMO_CHARS} characters"),
        );
    }
    violations.into_result()?;
    Ok(Content {
        party,
        amends_subscription_id: amends,
        plan_version_id: quote.plan_version_id.clone(),
        terms: quote.terms.clone().unwrap_or_default(),
        starts_at: starts_at.unwrap_or_default(),
        term_months: quote.term_months,
        expires_at: expires_at.unwrap_or_default(),
        memo: quote.memo.clone(),
    })
}

fn new_customer(customer: &proto::NewCustomer, violations: &mut Violations) -> Party {
    if customer.external_id.is_empty() || customer.external_id.chars().count() > 255 {
        violations.add("quote.new_customer.external_id", "must be 1-255 characters");
    }
    if customer.name.trim().is_empty() || customer.name.chars().count() > MAX_TEXT_CHARS {
        violations.add(
            "quote.new_customer.name",
            format!("must be 1-{MAX_TEXT_CHARS} characters"),
        );
    }
    if !customer.billing_email.is_empty() && !customer.billing_email.contains('@') {
        violations.add(
            "quote.new_customer.billing_email",
            "is not an email address",
        );
    }
    Party::New(NewCustomer {
        external_id: customer.external_id.clone(),
        name: customer.name.clone(),
        billing_email: customer.billing_email.clone(),
    })
}

/// A status on the wire.
pub(super) fn status_value(status: QuoteStatus) -> proto::QuoteStatus {
    match status {
        QuoteStatus::Draft => proto::QuoteStatus::Draft,
        QuoteStatus::Open => proto::QuoteStatus::Open,
        QuoteStatus::Accepted => proto::QuoteStatus::Accepted,
        QuoteStatus::Declined => proto::QuoteStatus::Declined,
        QuoteStatus::Expired => proto::QuoteStatus::Expired,
        QuoteStatus::Canceled => proto::QuoteStatus::Canceled,
    }
}

/// A wire status filter, at `field`.
pub(super) fn status_filter(value: i32, field: &str) -> Result<QuoteStatus> {
    Ok(match proto::QuoteStatus::try_from(value) {
        Ok(proto::QuoteStatus::Draft) => QuoteStatus::Draft,
        Ok(proto::QuoteStatus::Open) => QuoteStatus::Open,
        Ok(proto::QuoteStatus::Accepted) => QuoteStatus::Accepted,
        Ok(proto::QuoteStatus::Declined) => QuoteStatus::Declined,
        Ok(proto::QuoteStatus::Expired) => QuoteStatus::Expired,
        Ok(proto::QuoteStatus::Canceled) => QuoteStatus::Canceled,
        Ok(proto::QuoteStatus::Unspecified) | Err(_) => {
            return Err(InvoicingError::invalid(
                field,
                format!("{value} is not a quote status"),
            ));
        }
    })
}

/// A preview on the wire.
pub(super) fn preview_value(preview: &QuotePreview) -> proto::QuotePreview {
    proto::QuotePreview {
        first_period: Some(money_of(&preview.first_period)),
        recurring: preview.recurring.as_ref().map(money_of),
        total_contract_value: Some(money_of(&preview.total_contract_value)),
        periods: preview
            .periods
            .iter()
            .map(|period| proto::QuotePreviewPeriod {
                period: Some(time_range(period.period.start(), period.period.end())),
                phase: period.phase.clone().unwrap_or_default(),
                amount: Some(money_of(&period.amount)),
            })
            .collect(),
    }
}

/// The wire form of `quote` at `now`.
pub(super) fn quote_value(quote: &Quote, now: DateTime<Utc>) -> proto::Quote {
    let offer = &quote.offer;
    let party = match &offer.party {
        Party::Customer(id) => proto::quote_content::Party::CustomerId(id.clone()),
        Party::New(customer) => proto::quote_content::Party::NewCustomer(proto::NewCustomer {
            external_id: customer.external_id.clone(),
            name: customer.name.clone(),
            billing_email: customer.billing_email.clone(),
        }),
    };
    let signature = quote.signature.as_ref();
    proto::Quote {
        id: quote.id.clone(),
        number: quote.number.clone().unwrap_or_default(),
        revision: quote.revision,
        from_quote_id: quote.from_quote_id.clone().unwrap_or_default(),
        status: status_value(quote.status_at(now)) as i32,
        content: Some(proto::QuoteContent {
            party: Some(party),
            amends_subscription_id: offer.amends_subscription_id.clone().unwrap_or_default(),
            plan_version_id: offer.plan_version_id.clone(),
            terms: Some(subscription_terms_value(&offer.terms)),
            start_at: Some(timestamp(offer.starts_at)),
            term_months: offer.term_months,
            expires_at: Some(timestamp(offer.expires_at)),
            memo: offer.memo.clone(),
        }),
        currency: offer.currency.code().to_owned(),
        ends_at: Some(timestamp(offer.ends_at)),
        preview: Some(preview_value(&offer.preview)),
        signed_by: signature.map(|s| s.signed_by.clone()).unwrap_or_default(),
        signed_at: maybe_timestamp(signature.map(|s| s.signed_at)),
        document_sha256: signature
            .and_then(|s| s.document_sha256.clone())
            .unwrap_or_default(),
        customer_id: quote
            .accepted_customer_id
            .clone()
            .or_else(|| quote.customer_id().map(str::to_owned))
            .unwrap_or_default(),
        subscription_id: quote.subscription_id.clone().unwrap_or_default(),
        status_reason: quote.status_reason.clone(),
        created_at: Some(timestamp(quote.created_at)),
        finalized_at: maybe_timestamp(quote.finalized_at),
        accepted_at: maybe_timestamp(quote.accepted_at),
    }
}
