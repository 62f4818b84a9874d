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

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::credit::{CreditGrant as DomainGrant, apply_credits};
use tally_domain::ids::{AccountId, CreditGrantId, CustomerId, TransactionId};
use tally_domain::ledger::TransactionBuilder;
use tally_domain::money::{Currency, Money};
use tally_proto::invoicing::credit_service_server::CreditService;
use tally_proto::invoicing::{
    self as proto, CreditGrantKind, CreditGrantStatus, CreditLedgerEntryKind,
};
use tonic::{Request, Response, Status};

use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::wire::{
    maybe_timestamp, money, optional_instant, parse_money, stored_currency, timestamp,
};
use crate::{Context, customers, paging};

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Grant,
    Burn,
    Expiry,
    Void,
    Reversal,
}

impl EntryKind {
    fn name(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Burn => "burn",
            EntryKind::Expiry => "expiry",
            EntryKind::Void => "void",
            EntryKind::Reversal => "reversal",
        }
    }

    fn wire(name: &str) -> CreditLedgerEntryKind {
        match name {
            "grant" => CreditLedgerEntryKind::Grant,
            "burn" => CreditLedgerEntryKind::Burn,
            "expiry" => CreditLedgerEntryKind::Expiry,
            "void" => CreditLedgerEntryKind::Void,
            "reversal" => CreditLedgerEntryKind::Reversal,
            _ => CreditLedgerEntryKind::Unspecified,
        }
    }
}

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
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))")
        .bind(posting.customer_id)
        .execute(&mut *connection)
        .await?;
    let transaction_id = ids.new_id("txn");
    let balance_account = account(&format!("credit{}", body(posting.customer_id)))?;
    let counter_account = account(&posting.counter.1)?;
    let magnitude = Money::new(posting.amount.amount().abs(), posting.amount.currency());
    let builder = TransactionBuilder::new(
        TransactionId::parse(&transaction_id).map_err(InvoicingError::internal)?,
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
    sqlx::query("INSERT INTO invoicing.ledger_transactions (id, customer_id, body, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&transaction_id)
        .bind(posting.customer_id)
        .bind(serde_json::to_value(&transaction).map_err(InvoicingError::internal)?)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    let (previous,): (Option<Decimal>,) = sqlx::query_as(
        "SELECT (SELECT balance_after FROM invoicing.credit_ledger_entries WHERE customer_id = $1 AND currency = $2 \
         ORDER BY seq DESC LIMIT 1)",
    )
    .bind(posting.customer_id)
    .bind(posting.amount.currency().code())
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO invoicing.credit_ledger_entries (id, transaction_id, customer_id, credit_grant_id, kind, amount, \
           currency, balance_after, invoice_id, counter_account, description, effective_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(ids.new_id("cle"))
    .bind(&transaction_id)
    .bind(posting.customer_id)
    .bind(posting.grant_id)
    .bind(posting.kind.name())
    .bind(posting.amount.amount())
    .bind(posting.amount.currency().code())
    .bind(previous.unwrap_or(Decimal::ZERO) + posting.amount.amount())
    .bind(posting.invoice_id)
    .bind(posting.counter.0)
    .bind(&posting.description)
    .bind(posting.effective_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// A grant row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct GrantRow {
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub currency: String,
    pub amount: Decimal,
    pub remaining: Decimal,
    pub priority: i32,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub closed: Option<String>,
    pub description: String,
    pub credit_note_id: String,
    pub created_at: DateTime<Utc>,
}

const GRANT_COLUMNS: &str = "id, customer_id, kind, currency, amount, remaining, priority, effective_at, expires_at, \
    closed, description, credit_note_id, created_at";

impl GrantRow {
    fn counter(&self) -> (&'static str, String) {
        if self.kind == "prepaid" {
            ("deferred_revenue", "deferredrevenue".into())
        } else {
            ("promotional_expense", "promotionalexpense".into())
        }
    }

    /// The wire grant with its status at `now`.
    pub fn to_proto(&self, now: DateTime<Utc>) -> Result<proto::CreditGrant> {
        let currency = stored_currency(&self.currency)?;
        let status = match self.closed.as_deref() {
            Some("void") => CreditGrantStatus::Void,
            Some(_) => CreditGrantStatus::Expired,
            None if self.expires_at.is_some_and(|end| end <= now) => CreditGrantStatus::Expired,
            None if self.remaining.is_zero() => CreditGrantStatus::Depleted,
            None if self.effective_at > now => CreditGrantStatus::Pending,
            None => CreditGrantStatus::Active,
        };
        Ok(proto::CreditGrant {
            id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            kind: if self.kind == "prepaid" {
                CreditGrantKind::Prepaid
            } else {
                CreditGrantKind::Promotional
            } as i32,
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

async fn load_grant(connection: &mut PgConnection, id: &str, lock: bool) -> Result<GrantRow> {
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM invoicing.credit_grants WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(connection)
        .await?
        .ok_or_else(|| InvoicingError::NotFound(format!("credit grant {id:?} not found")))
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
    let id = ids.new_id("grant");
    // The domain constructor is the authority on a grant's rules.
    DomainGrant::new(
        CreditGrantId::parse(&id).map_err(InvoicingError::internal)?,
        CustomerId::parse(customer_id).map_err(InvoicingError::internal)?,
        amount,
        priority,
        effective_at,
        expires_at,
    )
    .map_err(|error| InvoicingError::invalid("amount", error.to_string()))?;
    let row = GrantRow {
        id,
        customer_id: customer_id.to_owned(),
        kind: if prepaid { "prepaid" } else { "promotional" }.into(),
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
    sqlx::query(
        "INSERT INTO invoicing.credit_grants (id, customer_id, kind, currency, amount, remaining, priority, effective_at, \
           expires_at, description, credit_note_id, created_at) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&row.id)
    .bind(customer_id)
    .bind(&row.kind)
    .bind(&row.currency)
    .bind(row.amount)
    .bind(row.priority)
    .bind(effective_at)
    .bind(expires_at)
    .bind(description)
    .bind(credit_note_id)
    .bind(now)
    .execute(&mut *connection)
    .await?;
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
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM invoicing.credit_grants WHERE customer_id = $1 AND currency = $2 \
         AND closed IS NULL AND remaining > 0 AND effective_at <= $3 AND (expires_at IS NULL OR expires_at > $4) \
         ORDER BY id FOR UPDATE"
    );
    let rows: Vec<GrantRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(due.currency().code())
        .bind(usable_from)
        .bind(now)
        .fetch_all(&mut *connection)
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
        sqlx::query("UPDATE invoicing.credit_grants SET remaining = remaining - $2 WHERE id = $1")
            .bind(grant_id.as_str())
            .bind(amount.amount())
            .execute(&mut *connection)
            .await?;
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
    let returnable: Vec<(String, String, String, Decimal)> = sqlx::query_as(
        "SELECT customer_id, credit_grant_id, currency, -SUM(amount) FROM invoicing.credit_ledger_entries \
         WHERE invoice_id = $1 AND kind IN ('burn', 'reversal') \
         GROUP BY customer_id, credit_grant_id, currency HAVING SUM(amount) < 0 ORDER BY MAX(seq) DESC",
    )
    .bind(invoice_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut left = up_to;
    let mut given = Decimal::ZERO;
    for (customer_id, grant_id, currency, amount) in returnable {
        let amount = left.map_or(amount, |left| amount.min(left));
        if amount <= Decimal::ZERO {
            break;
        }
        left = left.map(|left| left - amount);
        given += amount;
        let receivable = format!("accounts_receivable:{customer_id}");
        let returned = Money::new(amount, stored_currency(&currency)?);
        // An expired grant reopens; the next expiry pass writes it off again.
        sqlx::query(
            "UPDATE invoicing.credit_grants SET remaining = remaining + $2, \
               closed = CASE WHEN closed = 'expired' THEN NULL ELSE closed END WHERE id = $1",
        )
        .bind(&grant_id)
        .bind(returned.amount())
        .execute(&mut *connection)
        .await?;
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
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM invoicing.credit_grants WHERE closed IS NULL AND remaining > 0 \
         AND expires_at <= $1 ORDER BY expires_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED"
    );
    let rows: Vec<GrantRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .fetch_all(&mut *connection)
        .await?;
    for row in &rows {
        let currency = stored_currency(&row.currency)?;
        sqlx::query(
            "UPDATE invoicing.credit_grants SET remaining = 0, closed = 'expired' WHERE id = $1",
        )
        .bind(&row.id)
        .execute(&mut *connection)
        .await?;
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

impl Context {
    async fn grant_credit(&self, request: proto::GrantCreditRequest) -> Result<proto::CreditGrant> {
        const METHOD: &str = "GrantCredit";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        if request.customer_id.is_empty() {
            violations.add("customer_id", "is required");
        }
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
        transaction.commit().await?;
        grant.to_proto(now)
    }

    async fn void_credit_grant(
        &self,
        request: proto::VoidCreditGrantRequest,
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
        sqlx::query(
            "UPDATE invoicing.credit_grants SET remaining = 0, closed = 'void' WHERE id = $1",
        )
        .bind(&grant.id)
        .execute(&mut *transaction)
        .await?;
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
        let grant = load_grant(&mut transaction, &grant.id, false).await?;
        transaction.commit().await?;
        grant.to_proto(now)
    }

    async fn credit_balance(
        &self,
        request: proto::GetCreditBalanceRequest,
    ) -> Result<proto::GetCreditBalanceResponse> {
        if request.customer_id.is_empty() {
            return Err(InvoicingError::invalid("customer_id", "is required"));
        }
        let as_of =
            optional_instant(request.as_of.as_ref(), "as_of")?.unwrap_or_else(|| self.clock.now());
        let mut connection = self.pool.acquire().await?;
        let customer = customers::load(&mut connection, &request.customer_id, false).await?;
        let currency: Currency = customers::currency_of(&customer)?;
        // What each grant held at `as_of`, from the ledger: its amount plus
        // every later entry (burns, expiries, voids, reversals) effective by then.
        let sql = format!(
            "SELECT {} FROM invoicing.credit_grants g WHERE customer_id = $1 \
             AND (expires_at IS NULL OR expires_at > $2) AND created_at <= $2",
            GRANT_COLUMNS.replace(
                "remaining",
                "amount + COALESCE((SELECT sum(e.amount) FROM invoicing.credit_ledger_entries e \
                   WHERE e.credit_grant_id = g.id AND e.kind <> 'grant' AND e.effective_at <= $2), 0) AS remaining",
            )
        );
        let mut rows: Vec<GrantRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&customer.id)
            .bind(as_of)
            .fetch_all(&mut *connection)
            .await?;
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
        if request.customer_id.is_empty() {
            return Err(InvoicingError::invalid("customer_id", "is required"));
        }
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
        type EntryRow = (
            i64,
            String,
            String,
            String,
            Decimal,
            String,
            Decimal,
            String,
            String,
            String,
            String,
            DateTime<Utc>,
        );
        let rows: Vec<EntryRow> = sqlx::query_as(
            "SELECT seq, id, transaction_id, kind, amount, currency, balance_after, credit_grant_id, invoice_id, \
               counter_account, description, effective_at FROM invoicing.credit_ledger_entries \
             WHERE customer_id = $1 AND ($2 = '' OR credit_grant_id = $2) AND ($3::bigint IS NULL OR seq > $3) \
             ORDER BY seq LIMIT $4",
        )
        .bind(&request.customer_id)
        .bind(&request.credit_grant_id)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&mut *connection)
        .await?;
        let sequence: Vec<String> = rows.iter().map(|row| row.0.to_string()).collect();
        let (rows, _) = paging::finish(rows, limit, "ledger", |row| &row.1);
        let next_page_token = if sequence.len() > rows.len() {
            rows.last()
                .map(|row| format!("ledger.{}", row.0))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let entries = rows
            .into_iter()
            .map(
                |(
                    _,
                    id,
                    transaction_id,
                    kind,
                    amount,
                    currency,
                    balance_after,
                    grant,
                    invoice,
                    counter,
                    description,
                    at,
                )| {
                    let currency = stored_currency(&currency)?;
                    Ok(proto::CreditLedgerEntry {
                        id,
                        transaction_id,
                        kind: EntryKind::wire(&kind) as i32,
                        amount: Some(money(amount, currency)),
                        balance_after: Some(money(balance_after, currency)),
                        credit_grant_id: grant,
                        invoice_id: invoice,
                        counter_account: counter,
                        description,
                        effective_at: Some(timestamp(at)),
                    })
                },
            )
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
        let grant = self.ctx.grant_credit(request.into_inner()).await?;
        Ok(Response::new(proto::GrantCreditResponse {
            credit_grant: Some(grant),
        }))
    }

    async fn void_credit_grant(
        &self,
        request: Request<proto::VoidCreditGrantRequest>,
    ) -> Result<Response<proto::VoidCreditGrantResponse>, Status> {
        let grant = self.ctx.void_credit_grant(request.into_inner()).await?;
        Ok(Response::new(proto::VoidCreditGrantResponse {
            credit_grant: Some(grant),
        }))
    }

    async fn get_credit_balance(
        &self,
        request: Request<proto::GetCreditBalanceRequest>,
    ) -> Result<Response<proto::GetCreditBalanceResponse>, Status> {
        Ok(Response::new(
            self.ctx.credit_balance(request.into_inner()).await?,
        ))
    }

    async fn list_credit_ledger_entries(
        &self,
        request: Request<proto::ListCreditLedgerEntriesRequest>,
    ) -> Result<Response<proto::ListCreditLedgerEntriesResponse>, Status> {
        Ok(Response::new(
            self.ctx.ledger_entries(request.into_inner()).await?,
        ))
    }
}
