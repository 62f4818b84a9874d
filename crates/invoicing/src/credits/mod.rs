//! `CreditService` and the credit ledger.
//!
//! A grant's remaining amount lives on its row; every change of a customer's
//! credit balance is also a balanced double-entry transaction built with the
//! domain ledger (`TransactionBuilder::build` refuses an unbalanced one),
//! stored append-only (a trigger refuses updates and deletes) with the entry
//! on the customer's credit account and the balance after it. Accounts: the
//! customer's credit balance (a liability), and the other side by cause —
//! `deferred_revenue` for prepaid grants, `promotional_expense` for
//! promotional ones, `accounts_receivable:<customer>` for credits burned on
//! invoices, `breakage` for expiries and voids.
//!
//! Burn-down (at finalization) is the domain's `apply_credits`: priority,
//! then soonest expiry, then oldest.

use rust_decimal::Decimal;
use tally_domain::ids::CustomerId;
use tally_domain::money::{Currency, Money};
use tally_proto::invoicing::credit_service_server::CreditService;
use tally_proto::invoicing::{self as proto, CreditGrantKind, CreditGrantStatus};
use tonic::{Request, Response, Status};

use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::wire::{money, optional_instant, parse_money, stored_currency, timestamp};
use crate::{customers, paging};

pub use ledger::{Posting, burn, expire, insert_grant, post, return_burns};
pub use model::EntryKind;
pub use store::GrantRow;
use store::load_grant;

mod ledger;
mod mapping;
pub mod model;
pub mod preview;
mod store;

/// The customers among `customers` with a grant that may still be burned.
/// A bill-run batch asks once, and skips the burn (a locking read per
/// invoice) for everyone else. A grant committed after this question is
/// burned by the customer's next invoice, as if it had come a moment later.
pub async fn customers_with_open_grants(
    connection: &mut sqlx::PgConnection,
    customers: &[&str],
) -> Result<std::collections::HashSet<String>> {
    let customers = store::customers_with_open_grants(connection, customers).await?;
    Ok(customers.into_iter().collect())
}

fn grant_kind(value: i32) -> Result<bool> {
    match CreditGrantKind::try_from(value) {
        Ok(CreditGrantKind::Prepaid) => Ok(true),
        Ok(CreditGrantKind::Promotional) => Ok(false),
        _ => Err(InvoicingError::invalid(
            "kind",
            "must be PREPAID or PROMOTIONAL",
        )),
    }
}

crate::feature_service!(
    /// `CreditService`'s logic: granting and voiding credits, balances and
    /// the ledger.
    Credits,
    credits
);

impl Credits<'_> {
    async fn grant_credit(
        &self,
        request: proto::GrantCreditRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::CreditGrant> {
        const METHOD: &str = "GrantCredit";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        violations.id::<CustomerId>(&request.customer_id, "customer_id");
        if request.description.chars().count() > 500 {
            violations.add("description", "must be at most 500 characters");
        }
        violations.into_result()?;
        let prepaid = grant_kind(request.kind)?;
        let effective_at = optional_instant(request.effective_at.as_ref(), "effective_at")?;
        let expires_at = optional_instant(request.expires_at.as_ref(), "expires_at")?;
        let hash = request_hash(&prost::Message::encode_to_vec(&request), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        if let Some(id) = idem.claim(&mut transaction).await? {
            return load_grant(&mut transaction, &id, false)
                .await?
                .to_proto(now);
        }
        let customer = customers::load(&mut transaction, &request.customer_id, false).await?;
        if customers::is_archived(&customer) {
            return Err(InvoicingError::FailedPrecondition(format!(
                "customer {} is archived",
                customer.id
            )));
        }
        let currency = customers::currency_of(&customer)?;
        let amount = parse_money(request.amount.as_ref(), currency, "amount")?;
        if !amount.is_positive() || !amount.is_rounded() {
            return Err(InvoicingError::invalid(
                "amount.amount",
                format!(
                    "must be positive in whole minor units of {}",
                    currency.code()
                ),
            ));
        }
        let effective_at = effective_at.unwrap_or(now);
        if expires_at.is_some_and(|expiry| expiry <= effective_at) {
            return Err(InvoicingError::invalid(
                "expires_at",
                "must be after effective_at",
            ));
        }
        let grant = insert_grant(
            &mut transaction,
            &*self.ids,
            &customer.id,
            prepaid,
            amount,
            request.priority,
            effective_at,
            expires_at,
            &request.description,
            "",
            now,
        )
        .await?;
        idem.record(&mut transaction, &grant.id, now).await?;
        let granted = grant.to_proto(now)?;
        let entry = self
            .audit_entry(
                now,
                "credit_grant.granted",
                ("credit_grant", &grant.id),
                origin,
            )
            .comment(request.description.clone())
            .after(crate::audit::credit_grant_state(&granted));
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(granted)
    }

    async fn void_credit_grant(
        &self,
        request: proto::VoidCreditGrantRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::CreditGrant> {
        const METHOD: &str = "VoidCreditGrant";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        if request.credit_grant_id.is_empty() {
            violations.add("credit_grant_id", "is required");
        }
        violations.into_result()?;
        let hash = request_hash(&prost::Message::encode_to_vec(&request), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        if let Some(id) = idem.claim(&mut transaction).await? {
            return load_grant(&mut transaction, &id, false)
                .await?
                .to_proto(now);
        }
        let grant = load_grant(&mut transaction, &request.credit_grant_id, true).await?;
        let status = grant.to_proto(now)?.status;
        if grant.closed.is_some()
            || grant.remaining.is_zero()
            || status == CreditGrantStatus::Expired as i32
        {
            return Err(InvoicingError::FailedPrecondition(format!(
                "credit grant {} is already used, expired or void",
                grant.id
            )));
        }
        let currency = stored_currency(&grant.currency)?;
        store::close_void(&mut transaction, &grant.id).await?;
        let counter = grant.counter();
        post(
            &mut transaction,
            &*self.ids,
            Posting {
                customer_id: &grant.customer_id,
                grant_id: &grant.id,
                kind: EntryKind::Void,
                amount: Money::new(-grant.remaining, currency),
                invoice_id: "",
                counter: (counter.0, counter.1),
                description: if request.reason.is_empty() {
                    format!("grant {} voided", grant.id)
                } else {
                    request.reason.clone()
                },
                effective_at: now,
            },
            now,
        )
        .await?;
        idem.record(&mut transaction, &grant.id, now).await?;
        let before = crate::audit::credit_grant_state(&grant.to_proto(now)?);
        let grant = load_grant(&mut transaction, &grant.id, false).await?;
        let voided = grant.to_proto(now)?;
        let entry = self
            .audit_entry(
                now,
                "credit_grant.voided",
                ("credit_grant", &grant.id),
                origin,
            )
            .reason(request.reason.clone())
            .before(before)
            .after(crate::audit::credit_grant_state(&voided));
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(voided)
    }

    async fn credit_balance(
        &self,
        request: proto::GetCreditBalanceRequest,
    ) -> Result<proto::GetCreditBalanceResponse> {
        tally_proto::convert::id::<CustomerId>(&request.customer_id, "customer_id")?;
        let as_of =
            optional_instant(request.as_of.as_ref(), "as_of")?.unwrap_or_else(|| self.clock.now());
        let mut connection = self.pool.acquire().await?;
        let customer = customers::load(&mut connection, &request.customer_id, false).await?;
        let currency: Currency = customers::currency_of(&customer)?;
        // What each grant held at `as_of`, from the ledger: its amount plus
        // every later entry (burns, expiries, voids, reversals) effective by then.
        let mut rows = store::grants_as_of(&mut connection, &customer.id, as_of).await?;
        rows.retain(|row| row.remaining > Decimal::ZERO);
        for row in &mut rows {
            // Expired or voided later than `as_of`: still open then.
            row.closed = None;
        }
        rows.sort_by(|left, right| {
            (
                left.priority,
                left.expires_at.is_none(),
                left.expires_at,
                left.effective_at,
                &left.id,
            )
                .cmp(&(
                    right.priority,
                    right.expires_at.is_none(),
                    right.expires_at,
                    right.effective_at,
                    &right.id,
                ))
        });
        let available: Decimal = rows
            .iter()
            .filter(|row| row.effective_at <= as_of)
            .map(|row| row.remaining)
            .sum();
        let pending: Decimal = rows
            .iter()
            .filter(|row| row.effective_at > as_of)
            .map(|row| row.remaining)
            .sum();
        Ok(proto::GetCreditBalanceResponse {
            available: Some(money(available, currency)),
            pending: Some(money(pending, currency)),
            grants: rows
                .iter()
                .map(|row| row.to_proto(as_of))
                .collect::<Result<_>>()?,
            as_of: Some(timestamp(as_of)),
        })
    }

    async fn ledger_entries(
        &self,
        request: proto::ListCreditLedgerEntriesRequest,
    ) -> Result<proto::ListCreditLedgerEntriesResponse> {
        tally_proto::convert::id::<CustomerId>(&request.customer_id, "customer_id")?;
        let limit = paging::page_size(request.page_size);
        let after = paging::after(&request.page_token, "ledger")?
            .map(|seq| {
                seq.parse::<i64>().map_err(|_| {
                    InvoicingError::invalid("page_token", "is not a token of this listing")
                })
            })
            .transpose()?;
        let mut connection = self.pool.acquire().await?;
        customers::load(&mut connection, &request.customer_id, false).await?;
        let rows = store::ledger_entries_page(
            &mut connection,
            &request.customer_id,
            &request.credit_grant_id,
            after,
            limit + 1,
        )
        .await?;
        let sequence: Vec<String> = rows.iter().map(|row| row.seq.to_string()).collect();
        let (rows, _) = paging::finish(rows, limit, "ledger", |row| &row.id);
        let next_page_token = if sequence.len() > rows.len() {
            rows.last()
                .map(|row| format!("ledger.{}", row.seq))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let entries = rows
            .into_iter()
            .map(|entry| {
                let currency = stored_currency(&entry.currency)?;
                Ok(proto::CreditLedgerEntry {
                    id: entry.id,
                    transaction_id: entry.transaction_id,
                    kind: mapping::entry_kind_to_wire(entry.kind) as i32,
                    amount: Some(money(entry.amount, currency)),
                    balance_after: Some(money(entry.balance_after, currency)),
                    credit_grant_id: entry.credit_grant_id,
                    invoice_id: entry.invoice_id,
                    counter_account: entry.counter_account,
                    description: entry.description,
                    effective_at: Some(timestamp(entry.effective_at)),
                })
            })
            .collect::<Result<_>>()?;
        Ok(proto::ListCreditLedgerEntriesResponse {
            entries,
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl CreditService for crate::InvoicingApi {
    async fn grant_credit(
        &self,
        request: Request<proto::GrantCreditRequest>,
    ) -> Result<Response<proto::GrantCreditResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let grant = self
            .ctx
            .credits()
            .grant_credit(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::GrantCreditResponse {
            credit_grant: Some(grant),
        }))
    }

    async fn void_credit_grant(
        &self,
        request: Request<proto::VoidCreditGrantRequest>,
    ) -> Result<Response<proto::VoidCreditGrantResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let grant = self
            .ctx
            .credits()
            .void_credit_grant(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::VoidCreditGrantResponse {
            credit_grant: Some(grant),
        }))
    }

    async fn get_credit_balance(
        &self,
        request: Request<proto::GetCreditBalanceRequest>,
    ) -> Result<Response<proto::GetCreditBalanceResponse>, Status> {
        tally_runtime::portal::ensure_customer(
            request.extensions(),
            &request.get_ref().customer_id,
        )?;
        Ok(Response::new(
            self.ctx
                .credits()
                .credit_balance(request.into_inner())
                .await?,
        ))
    }

    async fn list_credit_ledger_entries(
        &self,
        request: Request<proto::ListCreditLedgerEntriesRequest>,
    ) -> Result<Response<proto::ListCreditLedgerEntriesResponse>, Status> {
        Ok(Response::new(
            self.ctx
                .credits()
                .ledger_entries(request.into_inner())
                .await?,
        ))
    }
}
