//! `LedgerService`: the trial balance, the journal, revenue schedules and
//! period closes, over the tables `journal::store` writes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tally_audit::Origin;
use tally_domain::finance::RecognitionPolicy;
use tally_domain::finance::facts::InvoiceFinalized;
use tally_domain::ids::InvoiceId;
use tally_domain::money::Currency;
use tally_proto::common::Money as WireMoney;
use tally_proto::convert;
use tally_proto::finance::ledger_service_server::LedgerService;
use tally_proto::finance::{
    AccountBalance, ClosePeriodRequest, ClosePeriodResponse, ClosedPeriod,
    GetRevenueScheduleRequest, GetRevenueScheduleResponse, GetTrialBalanceRequest,
    GetTrialBalanceResponse, JournalEntry, JournalTransaction, LineSchedule,
    ListClosedPeriodsRequest, ListClosedPeriodsResponse, ListJournalTransactionsRequest,
    ListJournalTransactionsResponse, RebuildLedgerRequest, RebuildLedgerResponse, RecognitionDay,
    TrialBalance,
};
use tally_runtime::SharedClock;
use tally_runtime::error::FieldViolation;
use tally_runtime::ids::SharedIdGenerator;
use tonic::{Request, Response, Status};

use super::store::closes::{self, Close};
use super::store::reads::{self as queries, AccountTotals, JournalFilter};
use crate::error::FinanceServiceError;

/// Default and largest journal page.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// The ledger's read side and closes.
#[derive(Debug, Clone)]
pub struct LedgerApi {
    pool: PgPool,
    clock: SharedClock,
    /// Mints the audit entries' ids.
    ids: SharedIdGenerator,
    /// How a rebuild spreads deferred fees (the consumers' policy).
    policy: RecognitionPolicy,
}

impl LedgerApi {
    /// Serves the ledger in `pool`, minting audit entries' ids with `ids`.
    pub fn new(pool: PgPool, clock: SharedClock, ids: SharedIdGenerator) -> Self {
        Self {
            pool,
            clock,
            ids,
            policy: RecognitionPolicy::ByDay,
        }
    }

    /// Rebuilds with `policy` (the one the consumers book with).
    pub fn with_policy(mut self, policy: RecognitionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Rebuilds the books from the kept facts (see `journal::rebuild`) for
    /// `origin`.
    pub async fn rebuild(
        &self,
        origin: &Origin,
    ) -> Result<super::rebuild::Rebuilt, FinanceServiceError> {
        let now = self.clock.now();
        super::rebuild::rebuild(&self.pool, self.policy, now, (&*self.ids, origin)).await
    }
}

/// An amount on the wire with at least its currency's minor units (the
/// ledger's amounts are whole minor units; sums keep that scale).
fn money(amount: Decimal, currency: &str) -> WireMoney {
    let mut amount = amount;
    if let Ok(code) = Currency::from_code(currency)
        && amount.scale() < code.minor_units()
    {
        amount.rescale(code.minor_units());
    }
    WireMoney {
        amount: amount.to_string(),
        currency: currency.to_owned(),
    }
}

/// A currency filter: empty, or an ISO 4217 code.
fn currency_filter(code: &str, field: &str) -> Result<String, FinanceServiceError> {
    if code.is_empty() {
        return Ok(String::new());
    }
    Currency::from_code(code)
        .map(|currency| currency.code().to_owned())
        .map_err(|_| {
            FieldViolation::new(
                field,
                "unknown_currency",
                format!("{code:?} is not an ISO 4217 currency code"),
            )
            .into()
        })
}

fn trial_balances(totals: Vec<AccountTotals>) -> Vec<TrialBalance> {
    let mut balances: Vec<TrialBalance> = Vec::new();
    let mut sums: Vec<(Decimal, Decimal)> = Vec::new();
    for account in totals {
        if balances
            .last()
            .is_none_or(|last| last.currency != account.currency)
        {
            balances.push(TrialBalance {
                currency: account.currency.clone(),
                ..TrialBalance::default()
            });
            sums.push((Decimal::ZERO, Decimal::ZERO));
        }
        if let (Some(balance), Some(sum)) = (balances.last_mut(), sums.last_mut()) {
            sum.0 += account.debits;
            sum.1 += account.credits;
            balance.accounts.push(AccountBalance {
                account_id: account.account_id.clone(),
                code: account.code.clone(),
                name: account.name.clone(),
                kind: i32::from(account.kind),
                debits: Some(money(account.debits, &account.currency)),
                credits: Some(money(account.credits, &account.currency)),
                balance: Some(money(account.balance(), &account.currency)),
            });
        }
    }
    for (balance, (debits, credits)) in balances.iter_mut().zip(sums) {
        balance.total_debits = Some(money(debits, &balance.currency));
        balance.total_credits = Some(money(credits, &balance.currency));
    }
    balances
}

fn journal_transaction(stored: queries::StoredTransaction) -> JournalTransaction {
    JournalTransaction {
        id: stored.id,
        effective_at: Some(convert::timestamp(stored.effective_at)),
        posted_at: Some(convert::timestamp(stored.posted_at)),
        description: stored.description,
        reverses: stored.reverses.unwrap_or_default(),
        entries: stored
            .entries
            .into_iter()
            .map(|(account_id, currency, side, amount)| JournalEntry {
                account_id,
                side: i32::from(side),
                amount: Some(money(amount, &currency)),
            })
            .collect(),
        source_kind: stored.source_kind,
        source_id: stored.source_id,
        original_effective_at: convert::maybe_timestamp(stored.original_effective_at),
    }
}

fn line_schedules(invoice: &InvoiceFinalized, days: &[queries::ScheduleDay]) -> Vec<LineSchedule> {
    let currency = invoice.currency.code();
    invoice
        .lines
        .iter()
        .filter_map(|line| {
            let period = line.kind.deferred_service_period()?;
            let line_days: Vec<&queries::ScheduleDay> = days
                .iter()
                .filter(|day| day.0 == line.line_id.as_str())
                .collect();
            let recognised: Decimal = line_days.iter().filter(|day| day.4).map(|day| day.2).sum();
            Some(LineSchedule {
                line_id: line.line_id.as_str().to_owned(),
                amount: Some(money(line.amount.amount(), currency)),
                service_period: Some(convert::period_range(period)),
                days: line_days
                    .iter()
                    .map(|day| RecognitionDay {
                        day: day.1.format("%Y-%m-%d").to_string(),
                        amount: Some(money(day.2, &day.3)),
                        recognised: day.4,
                    })
                    .collect(),
                recognised: Some(money(recognised, currency)),
                deferred: Some(money(line.amount.amount() - recognised, currency)),
            })
        })
        .collect()
}

fn closed_period(
    Close {
        close_through,
        closed_at,
        memo,
    }: Close,
) -> ClosedPeriod {
    ClosedPeriod {
        close_through: Some(convert::timestamp(close_through)),
        closed_at: Some(convert::timestamp(closed_at)),
        memo,
    }
}

impl LedgerApi {
    /// Closes through `close_through` unless a later close exists (a close
    /// made is audited: `ledger.period_closed` by `origin`); returns the
    /// close in force.
    pub async fn close_period(
        &self,
        close_through: DateTime<Utc>,
        memo: &str,
        origin: &Origin,
    ) -> Result<ClosedPeriod, FinanceServiceError> {
        let now = self.clock.now();
        if close_through > now {
            return Err(FieldViolation::new(
                "close_through",
                "in_future",
                format!("{close_through} is after the service clock ({now}): only past periods can be closed"),
            )
            .into());
        }
        let mut transaction = self.pool.begin().await?;
        // Exclusive: no posting reads the old close and inserts after this commits.
        closes::lock_closes(&mut transaction).await?;
        let previous = closes::latest_close_if_any(&mut transaction).await?;
        let made =
            closes::insert_close_if_later(&mut transaction, close_through, now, memo).await?;
        let current = closes::latest_close(&mut transaction).await?;
        if made {
            let by = (&*self.ids, origin);
            super::audit::period_closed(&mut transaction, by, previous.as_ref(), &current).await?;
        }
        transaction.commit().await?;
        Ok(closed_period(current))
    }
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn get_trial_balance(
        &self,
        request: Request<GetTrialBalanceRequest>,
    ) -> Result<Response<GetTrialBalanceResponse>, Status> {
        let request = request.into_inner();
        let currency = currency_filter(&request.currency, "currency")?;
        let as_of = convert::optional_instant(request.as_of.as_ref(), "as_of")
            .map_err(FinanceServiceError::from)?;
        let totals = queries::trial_balance(&self.pool, &currency, as_of).await?;
        Ok(Response::new(GetTrialBalanceResponse {
            balances: trial_balances(totals),
        }))
    }

    async fn list_journal_transactions(
        &self,
        request: Request<ListJournalTransactionsRequest>,
    ) -> Result<Response<ListJournalTransactionsResponse>, Status> {
        let request = request.into_inner();
        let (from, to) = match request.effective.as_ref() {
            Some(range) => {
                let from =
                    convert::optional_instant(range.start_time.as_ref(), "effective.start_time")
                        .map_err(FinanceServiceError::from)?;
                let to = convert::optional_instant(range.end_time.as_ref(), "effective.end_time")
                    .map_err(FinanceServiceError::from)?;
                if let (Some(from), Some(to)) = (from, to)
                    && to < from
                {
                    return Err(FinanceServiceError::from(FieldViolation::new(
                        "effective.end_time",
                        "invalid_range",
                        "must not be before effective.start_time",
                    ))
                    .into());
                }
                (from, to)
            }
            None => (None, None),
        };
        let filter = JournalFilter {
            currency: currency_filter(&request.currency, "currency")?,
            account_id: request.account_id,
            source_id: request.source_id,
            from,
            to,
        };
        let after_seq = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| {
                    FinanceServiceError::from(FieldViolation::new(
                        "page_token",
                        "invalid_page_token",
                        format!("{:?} was not issued for this listing", request.page_token),
                    ))
                })?
        };
        let limit = match i64::from(request.page_size) {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        let page = queries::journal_page(&self.pool, &filter, after_seq, limit + 1).await?;
        let more = page.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        let transactions: Vec<queries::StoredTransaction> = page
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .collect();
        let next_page_token = match (more, transactions.last()) {
            (true, Some(last)) => last.seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListJournalTransactionsResponse {
            transactions: transactions.into_iter().map(journal_transaction).collect(),
            next_page_token,
        }))
    }

    async fn get_revenue_schedule(
        &self,
        request: Request<GetRevenueScheduleRequest>,
    ) -> Result<Response<GetRevenueScheduleResponse>, Status> {
        let invoice_id: InvoiceId = convert::id(&request.into_inner().invoice_id, "invoice_id")
            .map_err(FinanceServiceError::from)?;
        let (fact, days) = queries::schedule(&self.pool, invoice_id.as_str())
            .await?
            .ok_or_else(|| {
                FinanceServiceError::NotFound(format!(
                    "no finalized invoice {invoice_id:?} reached finance"
                ))
            })?;
        let invoice: InvoiceFinalized = serde_json::from_value(fact).map_err(|error| {
            FinanceServiceError::Internal(format!(
                "stored invoice {invoice_id} is unreadable: {error}"
            ))
        })?;
        Ok(Response::new(GetRevenueScheduleResponse {
            lines: line_schedules(&invoice, &days),
            invoice_id: invoice_id.into(),
        }))
    }

    async fn close_period(
        &self,
        request: Request<ClosePeriodRequest>,
    ) -> Result<Response<ClosePeriodResponse>, Status> {
        let origin = Origin::from_request(&request);
        let request = request.into_inner();
        let close_through =
            convert::required_instant(request.close_through.as_ref(), "close_through")
                .map_err(FinanceServiceError::from)?;
        let closed = LedgerApi::close_period(self, close_through, &request.memo, &origin).await?;
        Ok(Response::new(ClosePeriodResponse {
            closed: Some(closed),
        }))
    }

    async fn list_closed_periods(
        &self,
        _request: Request<ListClosedPeriodsRequest>,
    ) -> Result<Response<ListClosedPeriodsResponse>, Status> {
        let closes = closes::closes_latest_first(&self.pool).await?;
        Ok(Response::new(ListClosedPeriodsResponse {
            closes: closes.into_iter().map(closed_period).collect(),
        }))
    }

    async fn rebuild_ledger(
        &self,
        request: Request<RebuildLedgerRequest>,
    ) -> Result<Response<RebuildLedgerResponse>, Status> {
        let rebuilt = self.rebuild(&Origin::from_request(&request)).await?;
        tracing::info!(
            facts = rebuilt.facts,
            transactions = rebuilt.transactions,
            "ledger rebuilt"
        );
        Ok(Response::new(RebuildLedgerResponse {
            facts: u64::try_from(rebuilt.facts).unwrap_or(u64::MAX),
            transactions: u64::try_from(rebuilt.transactions).unwrap_or(0),
        }))
    }
}
