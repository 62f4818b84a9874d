//! The `quote.yaml` format of `tally quotes create|preview -f` (documented, with an
//! example, in docs/operations.md, "Quotes") and its translation to a `QuoteContent`.
//!
//! The quote's own fields are plain YAML; `terms` is the domain's terms spec
//! (`tally_domain::terms`: `base`, `added_charges`, `removed_charges`, `ramp`,
//! `invoicing_threshold`), read by the domain's own serde shapes and written to the wire
//! by `tally-proto`'s conversion, so the file says exactly what the service checks.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tally_domain::ids::PlanId;
use tally_domain::money::{Currency, Money};
use tally_domain::plan::PlanCharge;
use tally_domain::subscription::PlanRef;
use tally_domain::terms::{RampPhase, SubscriptionTermsSpec, TermSet};
use tally_proto::convert::terms::subscription_terms_value;
use tally_proto::invoicing::{NewCustomer, QuoteContent, quote_content};

use super::usage;

/// A quote file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteFile {
    /// Who it is for.
    pub customer: CustomerRef,
    /// A plan's code: its latest published version.
    #[serde(default)]
    pub plan: Option<String>,
    /// Or a published plan version, `pv_…`.
    #[serde(default)]
    pub plan_version: Option<String>,
    /// An amendment of this subscription, `sub_…`.
    #[serde(default)]
    pub amends_subscription: Option<String>,
    /// The plan's currency (the terms' amounts are in it).
    pub currency: Currency,
    /// When the contract starts.
    pub start_at: DateTime<Utc>,
    /// The term in months.
    pub term_months: u32,
    /// Until when it may be signed.
    pub expires_at: DateTime<Utc>,
    /// Free text.
    #[serde(default)]
    pub memo: String,
    /// The negotiated terms (the domain's spec without plan, currency and start).
    #[serde(default)]
    pub terms: TermsFile,
}

/// `customer:` — exactly one of `id: cus_…`, `external_id: …` (an existing customer) or
/// `new: {external_id, name, billing_email}` (created when the quote is accepted).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRef {
    /// An existing customer, `cus_…`.
    #[serde(default)]
    pub id: Option<String>,
    /// An existing customer by the platform's id.
    #[serde(default)]
    pub external_id: Option<String>,
    /// A customer created when the quote is accepted.
    #[serde(default)]
    pub new: Option<NewCustomerFile>,
}

/// `customer.new:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCustomerFile {
    /// The platform's id.
    pub external_id: String,
    /// Printed on invoices.
    pub name: String,
    /// Where invoices go.
    #[serde(default)]
    pub billing_email: String,
}

/// `terms:` — the domain's terms spec without what the quote gives (plan, currency,
/// start).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsFile {
    /// The terms in force for the whole contract.
    #[serde(default)]
    pub base: TermSet,
    /// Charges the contract adds.
    #[serde(default)]
    pub added_charges: Vec<PlanCharge>,
    /// Plan charges it does not bill.
    #[serde(default)]
    pub removed_charges: Vec<tally_domain::ids::ChargeCode>,
    /// Ramp phases.
    #[serde(default)]
    pub ramp: Vec<RampPhase>,
    /// Progressive billing threshold.
    #[serde(default)]
    pub invoicing_threshold: Option<Money>,
}

impl QuoteFile {
    /// Reads `text` (YAML).
    pub fn parse(text: &str, path: &str) -> anyhow::Result<QuoteFile> {
        let file: QuoteFile = serde_norway::from_str(text)
            .map_err(|error| usage(format!("{path} is not a quote file: {error}")))?;
        let customer = &file.customer;
        let named = [
            customer.id.is_some(),
            customer.external_id.is_some(),
            customer.new.is_some(),
        ];
        if named.iter().filter(|named| **named).count() != 1 {
            return Err(usage(format!(
                "{path}: customer needs exactly one of id, external_id or new"
            )));
        }
        if file.plan.is_some() == file.plan_version.is_some() {
            return Err(usage(format!(
                "{path}: give exactly one of plan or plan_version"
            )));
        }
        Ok(file)
    }

    /// The wire content, with the customer and plan version already resolved to ids
    /// (or the new customer).
    pub fn content(
        &self,
        customer_id: Option<String>,
        plan_version_id: String,
    ) -> anyhow::Result<QuoteContent> {
        let party = match (&self.customer.new, customer_id) {
            (Some(new), _) => quote_content::Party::NewCustomer(NewCustomer {
                external_id: new.external_id.clone(),
                name: new.name.clone(),
                billing_email: new.billing_email.clone(),
            }),
            (None, id) => quote_content::Party::CustomerId(id.unwrap_or_default()),
        };
        Ok(QuoteContent {
            party: Some(party),
            amends_subscription_id: self.amends_subscription.clone().unwrap_or_default(),
            plan_version_id,
            terms: Some(self.terms.wire(self.currency, self.start_at)?),
            start_at: Some(tally_proto::convert::timestamp(self.start_at)),
            term_months: self.term_months,
            expires_at: Some(tally_proto::convert::timestamp(self.expires_at)),
            memo: self.memo.clone(),
        })
    }
}

impl TermsFile {
    /// The wire terms. The plan a spec names is the service's business (the quote's plan
    /// version); the conversion writes only what the contract adds.
    pub(super) fn wire(
        &self,
        currency: Currency,
        starts_at: DateTime<Utc>,
    ) -> anyhow::Result<tally_proto::invoicing::SubscriptionTerms> {
        let placeholder = PlanRef {
            plan: PlanId::parse("plan_quote")?,
            version: 1,
        };
        let mut spec = SubscriptionTermsSpec::list_price(placeholder, currency, starts_at);
        spec.base = self.base.clone();
        spec.added_charges = self.added_charges.clone();
        spec.removed_charges = self.removed_charges.clone();
        spec.ramp = self.ramp.clone();
        spec.invoicing_threshold = self.invoicing_threshold;
        Ok(subscription_terms_value(&spec))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The example of docs/operations.md ("Quotes"), kept here so it always parses.
    const EXAMPLE: &str = include_str!("quote_example.yaml");

    #[test]
    fn the_documented_example_reads_into_the_wire_content() {
        let file = QuoteFile::parse(EXAMPLE, "quote.yaml").unwrap();
        assert_eq!(file.plan.as_deref(), Some("ai_inference"));
        let content = file.content(None, "pv_1".into()).unwrap();
        let terms = content.terms.unwrap();
        assert_eq!(terms.ramp.len(), 2);
        assert!(matches!(
            content.party,
            Some(quote_content::Party::NewCustomer(NewCustomer { ref external_id, .. }))
                if external_id == "acme-ai"
        ));
        assert_eq!(content.term_months, 12);
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let text = EXAMPLE.replace("term_months:", "term:");
        let error = QuoteFile::parse(&text, "quote.yaml").unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }
}
