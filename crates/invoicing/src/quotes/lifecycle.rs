//! Writing and moving quotes: create (a new chain or a revision), preview, finalize
//! (number it and supersede the chain's open revision), decline, cancel, read and list.
//! Every change is one transaction: claim the idempotency key, lock the quote, check the
//! move with the domain's machine, write, record the key, write the audit entry last.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use prost::Message as _;
use serde_json::{Value, json};
use tally_domain::ids::{CustomerId, QuoteId};
use tally_domain::quote::QuoteStatus;
use tally_proto::convert::optional_id;
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::paging;

use super::mapping::{self, MAX_TEXT_CHARS, content, quote_value, status_filter};
use super::model::Quote;
use super::{Quotes, precondition, store};

/// What the audit log keeps of a quote: its number, status, party and money, not the
/// terms (they are in the quote, which never changes once open).
pub(super) fn quote_state(quote: &Quote, now: DateTime<Utc>) -> Value {
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let offer = &quote.offer;
    let preview = &offer.preview;
    json!({
        "id": quote.id,
        "number": quote.number,
        "revision": quote.revision,
        "status": quote.status_at(now).name(),
        "customer_id": quote.accepted_customer_id.as_deref().or(quote.customer_id()),
        "amends_subscription_id": offer.amends_subscription_id,
        "plan_version_id": offer.plan_version_id,
        "starts_at": time(offer.starts_at),
        "ends_at": time(offer.ends_at),
        "expires_at": time(offer.expires_at),
        "first_period": preview.first_period.amount().to_string(),
        "total_contract_value": preview.total_contract_value.amount().to_string(),
        "currency": offer.currency.code(),
        "signed_by": quote.signature.as_ref().map(|signature| signature.signed_by.clone()),
        "signed_at": quote.signature.as_ref().map(|signature| time(signature.signed_at)),
        "document_sha256": quote.signature.as_ref().and_then(|s| s.document_sha256.clone()),
        "subscription_id": quote.subscription_id,
    })
}

/// A change begun: its transaction, its claimed key, the locked quote and the clock's now.
pub(super) type Begun<'k> = (
    sqlx::Transaction<'static, sqlx::Postgres>,
    idempotency::Key<'k>,
    Quote,
    DateTime<Utc>,
);

impl Quotes<'_> {
    pub(super) async fn create_quote(
        &self,
        request: proto::CreateQuoteRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Quote> {
        const METHOD: &str = "CreateQuote";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        if !request.from_quote_id.is_empty() {
            violations.id::<QuoteId>(&request.from_quote_id, "from_quote_id");
        }
        violations.into_result()?;
        let content = content(request.quote.as_ref())?;
        let now = self.clock.now();
        let plan = self.quoted_plan(&content.plan_version_id).await?;
        let offer = {
            let mut connection = self.pool.acquire().await?;
            self.offer(&mut connection, content, &plan, now).await?
        };
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash: request_hash(&request.encode_to_vec(), &[]),
        };
        let mut transaction = self.pool.begin().await?;
        if let Some(id) = idem.claim(&mut transaction).await? {
            return Ok(quote_value(
                &store::load(&mut transaction, &id, false).await?,
                now,
            ));
        }
        let id: String = self.ids.mint::<QuoteId>().into();
        let (chain_id, revision, number) = if request.from_quote_id.is_empty() {
            (id.clone(), 1, None)
        } else {
            let source = store::load(&mut transaction, &request.from_quote_id, true).await?;
            let status = source.status_at(now);
            if !matches!(
                status,
                QuoteStatus::Draft | QuoteStatus::Open | QuoteStatus::Expired
            ) {
                return Err(precondition(format!(
                    "quote {} is {status}: only a draft, open or expired quote has revisions",
                    source.id
                )));
            }
            if let Some(accepted) =
                store::accepted_in_chain(&mut transaction, &source.chain_id).await?
            {
                return Err(precondition(format!(
                    "quote {accepted} of this chain is accepted; quote the change as an amendment"
                )));
            }
            let latest = store::latest_revision(&mut transaction, &source.chain_id).await?;
            (source.chain_id, latest + 1, source.number)
        };
        let quote = Quote {
            id,
            chain_id,
            revision,
            from_quote_id: (!request.from_quote_id.is_empty()).then_some(request.from_quote_id),
            number,
            status: QuoteStatus::Draft,
            offer,
            status_reason: String::new(),
            signature: None,
            accepted_customer_id: None,
            subscription_id: None,
            created_at: now,
            updated_at: now,
            finalized_at: None,
            accepted_at: None,
        };
        store::insert(&mut transaction, &quote).await?;
        idem.record(&mut transaction, &quote.id, now).await?;
        let entry = self
            .audit_entry(now, "quote.created", ("quote", &quote.id), origin)
            .after(quote_state(&quote, now));
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(quote_value(&quote, now))
    }

    pub(super) async fn preview_quote(
        &self,
        request: proto::PreviewQuoteRequest,
    ) -> Result<proto::PreviewQuoteResponse> {
        let content = content(request.quote.as_ref())?;
        let now = self.clock.now();
        let plan = self.quoted_plan(&content.plan_version_id).await?;
        let mut connection = self.pool.acquire().await?;
        let offer = self.offer(&mut connection, content, &plan, now).await?;
        Ok(proto::PreviewQuoteResponse {
            preview: Some(mapping::preview_value(&offer.preview)),
            ends_at: Some(crate::wire::timestamp(offer.ends_at)),
        })
    }

    pub(super) async fn get_quote(&self, quote_id: &str) -> Result<proto::Quote> {
        tally_proto::convert::id::<QuoteId>(quote_id, "quote_id")?;
        let mut connection = self.pool.acquire().await?;
        let quote = store::load(&mut connection, quote_id, false).await?;
        Ok(quote_value(&quote, self.clock.now()))
    }

    pub(super) async fn list_quotes(
        &self,
        request: proto::ListQuotesRequest,
    ) -> Result<proto::ListQuotesResponse> {
        optional_id::<CustomerId>(&request.customer_id, "customer_id")?;
        let statuses = request
            .statuses
            .iter()
            .enumerate()
            .map(|(index, value)| status_filter(*value, &format!("statuses[{index}]")))
            .collect::<Result<Vec<_>>>()?;
        let limit = paging::page_size(request.page_size);
        let before = paging::after(&request.page_token, "quotes")?;
        let customer = (!request.customer_id.is_empty()).then_some(request.customer_id.as_str());
        let now = self.clock.now();
        let mut connection = self.pool.acquire().await?;
        let rows = store::list(
            &mut connection,
            customer,
            &statuses,
            now,
            before.as_deref(),
            limit + 1,
        )
        .await?;
        let (page, next_page_token) = paging::finish(rows, limit, "quotes", |quote| &quote.id);
        Ok(proto::ListQuotesResponse {
            quotes: page.iter().map(|quote| quote_value(quote, now)).collect(),
            next_page_token,
        })
    }

    /// Draft → open: the chain's number (or the year's next), and the chain's earlier
    /// open revision canceled as superseded.
    pub(super) async fn finalize_quote(
        &self,
        request: proto::FinalizeQuoteRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Quote> {
        const METHOD: &str = "FinalizeQuote";
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let (mut transaction, idem, mut quote, now) = match self
            .begin(METHOD, &request.idempotency_key, &request.quote_id, hash)
            .await?
        {
            Ok(begun) => begun,
            Err(replay) => return Ok(replay),
        };
        let before = quote_state(&quote, now);
        quote.status = quote
            .status_at(now)
            .transition(QuoteStatus::Open)
            .map_err(|error| precondition(format!("quote {}: {error}", quote.id)))?;
        if quote.offer.expires_at <= now {
            return Err(precondition(format!(
                "quote {} expires at {}, which has passed; make a revision with a later expiry",
                quote.id, quote.offer.expires_at
            )));
        }
        let superseded = store::chain_in_status(
            &mut transaction,
            &quote.chain_id,
            QuoteStatus::Open,
            &quote.id,
        )
        .await?;
        for mut earlier in superseded {
            earlier.status = QuoteStatus::Canceled;
            earlier.status_reason = format!("superseded by revision {}", quote.revision);
            earlier.updated_at = now;
            store::update(&mut transaction, &earlier).await?;
        }
        if quote.number.is_none() {
            quote.number = match store::chain_number(&mut transaction, &quote.chain_id).await? {
                Some(number) => Some(number),
                None => {
                    let prefix = format!("Q-{}", now.year());
                    crate::billing::store::next_numbers(&mut transaction, &prefix, 1)
                        .await?
                        .pop()
                }
            };
        }
        quote.finalized_at = Some(now);
        quote.updated_at = now;
        store::update(&mut transaction, &quote).await?;
        self.finish(
            transaction,
            &idem,
            ("quote.finalized", ""),
            before,
            &quote,
            (origin, now),
        )
        .await
    }

    /// Open → declined, or draft/open → canceled, with a reason.
    pub(super) async fn close_quote(
        &self,
        (method, key, quote_id): (&'static str, &str, &str),
        (to, reason): (QuoteStatus, &str),
        hash: idempotency::RequestHash,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Quote> {
        if reason.chars().count() > MAX_TEXT_CHARS {
            return Err(InvoicingError::invalid(
                "reason",
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            ));
        }
        let (transaction, idem, mut quote, now) =
            match self.begin(method, key, quote_id, hash).await? {
                Ok(begun) => begun,
                Err(replay) => return Ok(replay),
            };
        let before = quote_state(&quote, now);
        quote.status = quote
            .status_at(now)
            .transition(to)
            .map_err(|error| precondition(format!("quote {}: {error}", quote.id)))?;
        quote.status_reason = reason.to_owned();
        quote.updated_at = now;
        let mut transaction = transaction;
        store::update(&mut transaction, &quote).await?;
        let action = match to {
            QuoteStatus::Declined => "quote.declined",
            _ => "quote.canceled",
        };
        self.finish(
            transaction,
            &idem,
            (action, reason),
            before,
            &quote,
            (origin, now),
        )
        .await
    }

    /// The start of every change: the key and id checked, the key claimed (a replay is
    /// `Err` with the quote as it is now), the quote locked.
    pub(super) async fn begin<'k>(
        &self,
        method: &'static str,
        key: &'k str,
        quote_id: &str,
        hash: idempotency::RequestHash,
    ) -> Result<std::result::Result<Begun<'k>, proto::Quote>> {
        let mut violations = Violations::default();
        idempotency::check_key(key, &mut violations);
        violations.id::<QuoteId>(quote_id, "quote_id");
        violations.into_result()?;
        let idem = idempotency::Key { method, key, hash };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        if let Some(id) = idem.claim(&mut transaction).await? {
            let quote = store::load(&mut transaction, &id, false).await?;
            return Ok(Err(quote_value(&quote, now)));
        }
        let quote = store::load(&mut transaction, quote_id, true).await?;
        Ok(Ok((transaction, idem, quote, now)))
    }

    /// The end of every change: the key recorded, the audit entry (last), the commit.
    pub(super) async fn finish(
        &self,
        mut transaction: sqlx::Transaction<'static, sqlx::Postgres>,
        idem: &idempotency::Key<'_>,
        (action, reason): (&str, &str),
        before: Value,
        quote: &Quote,
        (origin, now): (&tally_audit::Origin, DateTime<Utc>),
    ) -> Result<proto::Quote> {
        idem.record(&mut transaction, &quote.id, now).await?;
        let entry = self
            .audit_entry(now, action, ("quote", &quote.id), origin)
            .reason(reason)
            .before(before)
            .after(quote_state(quote, now));
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(quote_value(quote, now))
    }
}
