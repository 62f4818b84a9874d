//! What finalizing invoices would burn, without burning anything: the
//! upcoming invoice's preview shows the credits it will get.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::credit::{CreditGrant as DomainGrant, apply_credits};
use tally_domain::ids::{CreditGrantId, CustomerId};
use tally_domain::money::{Currency, Money};

use crate::error::{InvoicingError, Result};

/// An invoice still to be finalized, for [`preview_burns`].
#[derive(Clone, Copy, Debug)]
pub struct Due {
    /// Its subtotal; below zero it is carried to a credit grant.
    pub subtotal: Decimal,
    /// The end of its period: a grant effective later does not pay it.
    pub period_end: DateTime<Utc>,
    /// When it will be finalized: a grant expired by then does not pay it.
    pub finalized_at: DateTime<Utc>,
}

/// A grant with what would remain of it.
struct Open {
    /// Empty for a grant a negative invoice would carry (not created yet).
    id: String,
    priority: u32,
    effective_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    remaining: Decimal,
}

/// What the customer's credits would pay of each of `invoices`, finalized in
/// that order, burned as finalization burns them (the domain's
/// `apply_credits`: priority, soonest expiry, oldest), without writing
/// anything: per invoice, `(grant, amount)`. A negative subtotal is carried
/// to a grant that the later invoices may burn; what they would take from it
/// is named with an empty grant id (that grant does not exist yet).
pub async fn preview_burns(
    connection: &mut PgConnection,
    customer_id: &str,
    currency: Currency,
    invoices: &[Due],
) -> Result<Vec<Vec<(String, Money)>>> {
    let rows = super::store::open_grants(&mut *connection, customer_id, currency.code()).await?;
    let mut open: Vec<Open> = rows
        .into_iter()
        .map(|row| Open {
            id: row.id,
            priority: u32::try_from(row.priority).unwrap_or(u32::MAX),
            effective_at: row.effective_at,
            expires_at: row.expires_at,
            remaining: row.remaining,
        })
        .collect();
    let customer = CustomerId::parse(customer_id).map_err(InvoicingError::internal)?;
    let mut applied_per_invoice = Vec::with_capacity(invoices.len());
    for due in invoices {
        if due.subtotal < Decimal::ZERO {
            open.push(Open {
                id: String::new(),
                priority: 0,
                effective_at: due.finalized_at,
                expires_at: None,
                remaining: -due.subtotal,
            });
            applied_per_invoice.push(Vec::new());
            continue;
        }
        // The grants that may pay it, as the burn's query selects them, named
        // by their index in `open`, zero-padded: ties in the burn-down order
        // fall to the id, and the indexes sort as the real ids do (a carried
        // grant, created later, last).
        let usable: Vec<usize> = (0..open.len())
            .filter(|index| {
                let grant = &open[*index];
                grant.remaining > Decimal::ZERO
                    && grant.effective_at <= due.period_end
                    && grant
                        .expires_at
                        .is_none_or(|expiry| expiry > due.finalized_at)
            })
            .collect();
        let mut grants = usable
            .iter()
            .map(|index| {
                let grant = &open[*index];
                DomainGrant::new(
                    CreditGrantId::parse(&format!("grant_{index:08}"))
                        .map_err(InvoicingError::internal)?,
                    customer.clone(),
                    Money::new(grant.remaining, currency),
                    grant.priority,
                    grant.effective_at.min(due.finalized_at),
                    grant.expires_at,
                )
                .map_err(InvoicingError::internal)
            })
            .collect::<Result<Vec<_>>>()?;
        let application = apply_credits(
            &mut grants,
            Money::new(due.subtotal, currency),
            due.finalized_at,
        )
        .map_err(InvoicingError::internal)?;
        let mut applied = Vec::new();
        for (name, amount) in application.applied {
            let index: usize = name
                .as_str()
                .trim_start_matches("grant_")
                .parse()
                .map_err(InvoicingError::internal)?;
            let grant = &mut open[index];
            grant.remaining -= amount.amount();
            applied.push((grant.id.clone(), amount));
        }
        applied_per_invoice.push(applied);
    }
    Ok(applied_per_invoice)
}
