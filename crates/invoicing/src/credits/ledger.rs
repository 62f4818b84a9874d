//! The credit ledger: grants, burns, expiries, voids and reversals, each a
//! balanced double-entry transaction (see the `credits` module).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::credit::{CreditGrant as DomainGrant, apply_credits};
use tally_domain::ids::{AccountId, CreditGrantId, CreditLedgerEntryId, CustomerId, TransactionId};
use tally_domain::ledger::TransactionBuilder;
use tally_domain::money::Money;
use tally_proto::invoicing::{self as proto, CreditGrantStatus};

use super::mapping::grant_kind_to_wire;
use super::model::{Closure, EntryKind, GrantKind};
use super::store::{self, GrantRow, NewLedgerEntry, ReturnableBurn};
use crate::error::{InvoicingError, Result};
use crate::wire::{maybe_timestamp, money, stored_currency, timestamp};

fn account(name: &str) -> Result<AccountId> {
    AccountId::parse(&format!("acct_{name}")).map_err(InvoicingError::internal)
}

/// The body of a prefixed id (letters and digits only).
fn body(id: &str) -> String {
    id.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// One posting on a customer's credit balance.
#[derive(Debug)]
pub struct Posting<'a> {
    pub customer_id: &'a str,
    pub grant_id: &'a str,
    pub kind: EntryKind,
    /// Change of the balance (positive increases it), in whole minor units.
    pub amount: Money,
    pub invoice_id: &'a str,
    /// The other account: its display name and ledger id body.
    pub counter: (&'a str, String),
    pub description: String,
    pub effective_at: DateTime<Utc>,
}

/// Posts a balanced transaction and its entry on the customer's credit account.
pub async fn post(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    posting: Posting<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    store::lock_customer_ledger(&mut *connection, posting.customer_id).await?;
    let transaction_id = ids.mint::<TransactionId>();
    let balance_account = account(&format!("credit{}", body(posting.customer_id)))?;
    let counter_account = account(&posting.counter.1)?;
    let magnitude = Money::new(posting.amount.amount().abs(), posting.amount.currency());
    let builder = TransactionBuilder::new(
        transaction_id.clone(),
        posting.effective_at,
        posting.description.clone(),
    );
    let builder = if posting.amount.is_positive() {
        builder
            .debit(counter_account, magnitude)
            .credit(balance_account, magnitude)
    } else {
        builder
            .debit(balance_account, magnitude)
            .credit(counter_account, magnitude)
    };
    let transaction = builder.build().map_err(InvoicingError::internal)?;
    let body = serde_json::to_value(&transaction).map_err(InvoicingError::internal)?;
    store::insert_ledger_transaction(
        &mut *connection,
        transaction_id.as_str(),
        posting.customer_id,
        &body,
        now,
    )
    .await?;
    let currency = posting.amount.currency().code();
    let previous = store::latest_balance(&mut *connection, posting.customer_id, currency).await?;
    let entry_id = String::from(ids.mint::<CreditLedgerEntryId>());
    let entry = NewLedgerEntry {
        id: &entry_id,
        transaction_id: transaction_id.as_str(),
        customer_id: posting.customer_id,
        credit_grant_id: posting.grant_id,
        kind: posting.kind,
        amount: posting.amount.amount(),
        currency,
        balance_after: previous.unwrap_or(Decimal::ZERO) + posting.amount.amount(),
        invoice_id: posting.invoice_id,
        counter_account: posting.counter.0,
        description: &posting.description,
        effective_at: posting.effective_at,
    };
    store::insert_ledger_entry(connection, entry).await
}

impl GrantRow {
    pub(super) fn counter(&self) -> (&'static str, String) {
        match self.kind {
            GrantKind::Prepaid => ("deferred_revenue", "deferredrevenue".into()),
            GrantKind::Promotional => ("promotional_expense", "promotionalexpense".into()),
        }
    }

    /// The wire grant with its status at `now`.
    pub fn to_proto(&self, now: DateTime<Utc>) -> Result<proto::CreditGrant> {
        let currency = stored_currency(&self.currency)?;
        let status = match self.closed {
            Some(Closure::Void) => CreditGrantStatus::Void,
            Some(Closure::Expired) => CreditGrantStatus::Expired,
            None if self.expires_at.is_some_and(|end| end <= now) => CreditGrantStatus::Expired,
            None if self.remaining.is_zero() => CreditGrantStatus::Depleted,
            None if self.effective_at > now => CreditGrantStatus::Pending,
            None => CreditGrantStatus::Active,
        };
        Ok(proto::CreditGrant {
            id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            kind: grant_kind_to_wire(self.kind) as i32,
            amount: Some(money(self.amount, currency)),
            remaining: Some(money(self.remaining, currency)),
            priority: u32::try_from(self.priority).unwrap_or(0),
            effective_at: Some(timestamp(self.effective_at)),
            expires_at: maybe_timestamp(self.expires_at),
            status: status as i32,
            description: self.description.clone(),
            credit_note_id: self.credit_note_id.clone(),
            created_at: Some(timestamp(self.created_at)),
        })
    }
}

/// A new grant (and its GRANT entry).
#[allow(clippy::too_many_arguments)]
pub async fn insert_grant(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    customer_id: &str,
    prepaid: bool,
    amount: Money,
    priority: u32,
    effective_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    description: &str,
    credit_note_id: &str,
    now: DateTime<Utc>,
) -> Result<GrantRow> {
    let id = ids.mint::<CreditGrantId>();
    // The domain constructor is the authority on a grant's rules.
    DomainGrant::new(
        id.clone(),
        CustomerId::parse(customer_id).map_err(InvoicingError::internal)?,
        amount,
        priority,
        effective_at,
        expires_at,
    )
    .map_err(|error| InvoicingError::invalid("amount", error.to_string()))?;
    let row = GrantRow {
        id: id.into(),
        customer_id: customer_id.to_owned(),
        kind: if prepaid {
            GrantKind::Prepaid
        } else {
            GrantKind::Promotional
        },
        currency: amount.currency().code().to_owned(),
        amount: amount.amount(),
        remaining: amount.amount(),
        priority: i32::try_from(priority).unwrap_or(i32::MAX),
        effective_at,
        expires_at,
        closed: None,
        description: description.to_owned(),
        credit_note_id: credit_note_id.to_owned(),
        created_at: now,
    };
    store::insert_grant(&mut *connection, &row).await?;
    let counter = row.counter();
    post(
        connection,
        ids,
        Posting {
            customer_id,
            grant_id: &row.id,
            kind: EntryKind::Grant,
            amount,
            invoice_id: "",
            counter: (counter.0, counter.1),
            description: format!("grant {}", row.id),
            effective_at,
        },
        now,
    )
    .await?;
    Ok(row)
}

/// Burns the customer's usable grants against `due`, in burn-down order;
/// returns `(grant, amount)` per grant burned.
pub async fn burn(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    customer_id: &str,
    due: Money,
    invoice_id: &str,
    usable_from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, Money)>> {
    if !due.is_positive() {
        return Ok(Vec::new());
    }
    let rows = store::lock_usable_grants(
        &mut *connection,
        customer_id,
        due.currency().code(),
        usable_from,
        now,
    )
    .await?;
    let customer = CustomerId::parse(customer_id).map_err(InvoicingError::internal)?;
    let mut grants = rows
        .iter()
        .map(|row| {
            // The domain burns the remaining amount; the original is on the row.
            DomainGrant::new(
                CreditGrantId::parse(&row.id).map_err(InvoicingError::internal)?,
                customer.clone(),
                Money::new(row.remaining, due.currency()),
                u32::try_from(row.priority).unwrap_or(u32::MAX),
                row.effective_at.min(now),
                row.expires_at,
            )
            .map_err(InvoicingError::internal)
        })
        .collect::<Result<Vec<_>>>()?;
    let application = apply_credits(&mut grants, due, now).map_err(InvoicingError::internal)?;
    let receivable = format!("accounts_receivable:{customer_id}");
    let mut burned = Vec::new();
    for (grant_id, amount) in application.applied {
        store::reduce_remaining(&mut *connection, grant_id.as_str(), amount.amount()).await?;
        post(
            &mut *connection,
            ids,
            Posting {
                customer_id,
                grant_id: grant_id.as_str(),
                kind: EntryKind::Burn,
                amount: amount.negated(),
                invoice_id,
                counter: (&receivable, format!("receivable{}", body(customer_id))),
                description: format!("applied to invoice {invoice_id}"),
                effective_at: now,
            },
            now,
        )
        .await?;
        burned.push((grant_id.as_str().to_owned(), amount));
    }
    Ok(burned)
}

/// Gives back credits burned on an invoice (REVERSAL entries), all of them or
/// at most `up_to`, the latest burn first; what was already given back is
/// never given twice. Returns the amount given back.
pub async fn return_burns(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    invoice_id: &str,
    up_to: Option<Decimal>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Decimal> {
    let returnable = store::returnable_burns(&mut *connection, invoice_id).await?;
    let mut left = up_to;
    let mut given = Decimal::ZERO;
    for ReturnableBurn {
        customer_id,
        credit_grant_id: grant_id,
        currency,
        amount,
    } in returnable
    {
        let amount = left.map_or(amount, |left| amount.min(left));
        if amount <= Decimal::ZERO {
            break;
        }
        left = left.map(|left| left - amount);
        given += amount;
        let receivable = format!("accounts_receivable:{customer_id}");
        let returned = Money::new(amount, stored_currency(&currency)?);
        // An expired grant reopens; the next expiry pass writes it off again.
        store::give_back(&mut *connection, &grant_id, returned.amount()).await?;
        post(
            &mut *connection,
            ids,
            Posting {
                customer_id: &customer_id,
                grant_id: &grant_id,
                kind: EntryKind::Reversal,
                amount: returned,
                invoice_id,
                counter: (&receivable, format!("receivable{}", body(&customer_id))),
                description: format!("invoice {invoice_id}: {reason}"),
                effective_at: now,
            },
            now,
        )
        .await?;
    }
    Ok(given)
}

/// Writes off the remaining balance of every grant expired by `now`.
pub async fn expire(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    now: DateTime<Utc>,
) -> Result<usize> {
    let rows = store::lock_expired_grants(&mut *connection, now).await?;
    for row in &rows {
        let currency = stored_currency(&row.currency)?;
        store::close_expired(&mut *connection, &row.id).await?;
        post(
            &mut *connection,
            ids,
            Posting {
                customer_id: &row.customer_id,
                grant_id: &row.id,
                kind: EntryKind::Expiry,
                amount: Money::new(-row.remaining, currency),
                invoice_id: "",
                counter: ("breakage", "breakage".into()),
                description: format!("grant {} expired", row.id),
                effective_at: row.expires_at.unwrap_or(now),
            },
            now,
        )
        .await?;
    }
    Ok(rows.len())
}
