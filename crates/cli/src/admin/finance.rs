//! `tally finance …`: the books finance keeps (`LedgerService`) — the trial
//! balance, the journal (also as CSV an ERP imports), an invoice's revenue
//! schedule, and closing a period.

use clap::{Subcommand, ValueEnum};
use tally_proto::common::TimeRange;
use tally_proto::finance::ledger_service_client::LedgerServiceClient;
use tally_proto::finance::{
    ClosePeriodRequest, GetRevenueScheduleRequest, GetTrialBalanceRequest, JournalTransaction,
    ListClosedPeriodsRequest, ListJournalTransactionsRequest, Side,
};

use super::table::Table;
use super::{
    Authenticated, Call as _, Output, Target, connect, format_money, format_range, format_time,
    parse_optional_time, print_json, print_one,
};

/// `tally finance …`.
#[derive(Debug, Subcommand)]
pub enum FinanceCommand {
    /// The balance of every account, per currency; debits equal credits.
    TrialBalance {
        /// Only this currency.
        #[arg(long)]
        currency: Option<String>,
        /// Transactions effective before this instant (RFC 3339; default all).
        #[arg(long)]
        as_of: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Journal transactions, oldest first, with their entries.
    Journal {
        /// Only this currency.
        #[arg(long)]
        currency: Option<String>,
        /// Only transactions touching this account (`acct_…`).
        #[arg(long)]
        account: Option<String>,
        /// Only transactions from this source (`inv_…`, `pay_…`, `ref_…`, `cn_…`).
        #[arg(long)]
        source: Option<String>,
        /// Effective at or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Effective before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// `csv`: one row per entry (date, transaction, account, debit,
        /// credit, currency, memo, source), as an ERP imports a journal.
        #[arg(long, value_enum)]
        format: Option<JournalFormat>,
        #[command(flatten)]
        target: Target,
    },
    /// An invoice's deferred lines, day by day: recognised and deferred.
    Schedule {
        /// `inv_…`.
        invoice: String,
        #[command(flatten)]
        target: Target,
    },
    /// Closes the books before an instant (needs `admin`): later facts of a
    /// closed period post at the close, naming their own date.
    Close {
        /// The first instant after the closed period, e.g. 2026-12-01T00:00:00Z.
        #[arg(long)]
        through: String,
        /// Why, kept with the close.
        #[arg(long, default_value = "")]
        memo: String,
        #[command(flatten)]
        target: Target,
    },
    /// The month-end close report: billed, recognised, collected, refunded
    /// and credited in a period; deferred, unbilled, receivable and owed at its end.
    Report(super::finance_report::ReportArgs),
    /// Rebuilds the books from the facts finance kept (needs `admin`): the
    /// same journal, unless the posting rules changed.
    Rebuild {
        #[command(flatten)]
        target: Target,
    },
    /// The closes made, newest first.
    Closes {
        #[command(flatten)]
        target: Target,
    },
    /// MRR, ARR, paying customers and ARPA in a currency at an instant.
    Mrr(super::finance_mrr::MrrArgs),
    /// MRR movements (new, expansion, contraction, churn, reactivation) in a
    /// range, with their totals, churn rates and quick ratio.
    Movements(super::finance_mrr::MovementsArgs),
    /// Net and gross MRR retention of monthly cohorts, at each month end.
    Retention(super::finance_retention::RetentionArgs),
}

/// How `tally finance journal` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JournalFormat {
    /// One CSV row per entry.
    Csv,
}

async fn client(target: &Target) -> anyhow::Result<LedgerServiceClient<Authenticated>> {
    Ok(LedgerServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

/// Runs `tally finance`.
pub async fn run(command: FinanceCommand) -> anyhow::Result<()> {
    match command {
        FinanceCommand::TrialBalance {
            currency,
            as_of,
            target,
        } => {
            let response = client(&target)
                .await?
                .get_trial_balance(GetTrialBalanceRequest {
                    currency: currency.unwrap_or_default(),
                    as_of: parse_optional_time("--as-of", as_of.as_deref())?,
                })
                .await
                .answer("GetTrialBalance")?;
            print_trial_balance(target.output, &response)
        }
        FinanceCommand::Journal {
            currency,
            account,
            source,
            from,
            to,
            format,
            target,
        } => {
            let effective = (from.is_some() || to.is_some())
                .then(|| -> anyhow::Result<TimeRange> {
                    Ok(TimeRange {
                        start_time: parse_optional_time("--from", from.as_deref())?,
                        end_time: parse_optional_time("--to", to.as_deref())?,
                    })
                })
                .transpose()?;
            let request = ListJournalTransactionsRequest {
                currency: currency.unwrap_or_default(),
                account_id: account.unwrap_or_default(),
                source_id: source.unwrap_or_default(),
                effective,
                page_size: 1000,
                page_token: String::new(),
            };
            let transactions = journal(&mut client(&target).await?, request).await?;
            print_journal(&transactions, format, target.output)
        }
        FinanceCommand::Schedule { invoice, target } => {
            let response = client(&target)
                .await?
                .get_revenue_schedule(GetRevenueScheduleRequest {
                    invoice_id: invoice,
                })
                .await
                .answer("GetRevenueSchedule")?;
            print_schedule(target.output, &response)
        }
        FinanceCommand::Close {
            through,
            memo,
            target,
        } => {
            let response = client(&target)
                .await?
                .close_period(ClosePeriodRequest {
                    close_through: Some(super::parse_time("--through", &through)?),
                    memo,
                })
                .await
                .answer("ClosePeriod")?;
            print_close(target.output, &response)
        }
        FinanceCommand::Report(args) => super::finance_report::run(args).await,
        FinanceCommand::Rebuild { target } => {
            let response = client(&target)
                .await?
                .rebuild_ledger(tally_proto::finance::RebuildLedgerRequest {})
                .await
                .answer("RebuildLedger")?;
            print_one(
                target.output,
                &response,
                "tally.finance.v1.RebuildLedgerResponse",
                |response| {
                    #[allow(clippy::print_stdout)]
                    {
                        println!(
                            "books rebuilt: {} facts booked again, {} journal transactions",
                            response.facts, response.transactions
                        );
                    }
                },
            )
        }
        FinanceCommand::Mrr(args) => super::finance_mrr::mrr(args).await,
        FinanceCommand::Movements(args) => super::finance_mrr::movements(args).await,
        FinanceCommand::Retention(args) => super::finance_retention::retention(args).await,
        FinanceCommand::Closes { target } => {
            let response = client(&target)
                .await?
                .list_closed_periods(ListClosedPeriodsRequest {})
                .await
                .answer("ListClosedPeriods")?;
            print_one(
                target.output,
                &response,
                "tally.finance.v1.ListClosedPeriodsResponse",
                |response| {
                    let mut table = Table::new(&["CLOSED BEFORE", "CLOSED AT", "MEMO"]);
                    for close in &response.closes {
                        table.row(vec![
                            format_time(close.close_through.as_ref()),
                            format_time(close.closed_at.as_ref()),
                            close.memo.clone(),
                        ]);
                    }
                    table.print();
                },
            )
        }
    }
}

/// The amount of a `Money` without its currency (the table has a column for it).
fn amount(money: Option<&tally_proto::common::Money>) -> String {
    money.map_or_else(|| "-".to_owned(), |money| money.amount.clone())
}

/// Every page of the journal.
async fn journal(
    client: &mut LedgerServiceClient<Authenticated>,
    mut request: ListJournalTransactionsRequest,
) -> anyhow::Result<Vec<JournalTransaction>> {
    let mut transactions = Vec::new();
    loop {
        let page = client
            .list_journal_transactions(request.clone())
            .await
            .answer("ListJournalTransactions")?;
        transactions.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return Ok(transactions);
        }
        request.page_token = page.next_page_token;
    }
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[allow(clippy::print_stdout)]
fn print_journal(
    transactions: &[JournalTransaction],
    format: Option<JournalFormat>,
    output: Output,
) -> anyhow::Result<()> {
    if format == Some(JournalFormat::Csv) {
        println!("date,transaction,account,debit,credit,currency,memo,source_kind,source_id");
        for transaction in transactions {
            for entry in &transaction.entries {
                let money = entry.amount.clone().unwrap_or_default();
                let (debit, credit) = if entry.side == Side::Debit as i32 {
                    (money.amount.clone(), String::new())
                } else {
                    (String::new(), money.amount.clone())
                };
                let row = [
                    format_time(transaction.effective_at.as_ref()),
                    transaction.id.clone(),
                    entry.account_id.clone(),
                    debit,
                    credit,
                    money.currency.clone(),
                    transaction.description.clone(),
                    transaction.source_kind.clone(),
                    transaction.source_id.clone(),
                ];
                println!(
                    "{}",
                    row.iter()
                        .map(|field| csv_field(field))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        return Ok(());
    }
    if output == Output::Json {
        let values = transactions
            .iter()
            .map(|transaction| {
                super::json::to_value(transaction, "tally.finance.v1.JournalTransaction")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return print_json(&serde_json::Value::Array(values));
    }
    let mut table = Table::new(&[
        "EFFECTIVE",
        "TRANSACTION",
        "ACCOUNT",
        "DEBIT",
        "CREDIT",
        "MEMO",
    ]);
    for transaction in transactions {
        for (index, entry) in transaction.entries.iter().enumerate() {
            let money = amount(entry.amount.as_ref());
            let (debit, credit) = if entry.side == Side::Debit as i32 {
                (money, String::new())
            } else {
                (String::new(), money)
            };
            let first = index == 0;
            table.row(vec![
                if first {
                    format_time(transaction.effective_at.as_ref())
                } else {
                    String::new()
                },
                if first {
                    transaction.id.clone()
                } else {
                    String::new()
                },
                entry.account_id.clone(),
                debit,
                credit,
                if first {
                    transaction.description.clone()
                } else {
                    String::new()
                },
            ]);
        }
    }
    table.print();
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_trial_balance(
    output: Output,
    response: &tally_proto::finance::GetTrialBalanceResponse,
) -> anyhow::Result<()> {
    print_one(
        output,
        response,
        "tally.finance.v1.GetTrialBalanceResponse",
        |response| {
            let mut table = Table::new(&[
                "CURRENCY", "CODE", "ACCOUNT", "DEBITS", "CREDITS", "BALANCE",
            ]);
            for trial in &response.balances {
                for account in &trial.accounts {
                    table.row(vec![
                        trial.currency.clone(),
                        account.code.clone(),
                        account.name.clone(),
                        amount(account.debits.as_ref()),
                        amount(account.credits.as_ref()),
                        amount(account.balance.as_ref()),
                    ]);
                }
                table.row(vec![
                    trial.currency.clone(),
                    String::new(),
                    "TOTAL".to_owned(),
                    amount(trial.total_debits.as_ref()),
                    amount(trial.total_credits.as_ref()),
                    String::new(),
                ]);
            }
            table.print();
        },
    )
}

#[allow(clippy::print_stdout)]
fn print_schedule(
    output: Output,
    response: &tally_proto::finance::GetRevenueScheduleResponse,
) -> anyhow::Result<()> {
    print_one(
        output,
        response,
        "tally.finance.v1.GetRevenueScheduleResponse",
        |response| {
            for line in &response.lines {
                println!(
                    "{} {} over {}: recognised {}, deferred {}",
                    line.line_id,
                    format_money(line.amount.as_ref()),
                    format_range(line.service_period.as_ref()),
                    format_money(line.recognised.as_ref()),
                    format_money(line.deferred.as_ref()),
                );
                let mut table = Table::new(&["DAY", "AMOUNT", "RECOGNISED"]);
                for day in &line.days {
                    table.row(vec![
                        day.day.clone(),
                        amount(day.amount.as_ref()),
                        if day.recognised { "yes" } else { "no" }.to_owned(),
                    ]);
                }
                table.print();
            }
        },
    )
}

#[allow(clippy::print_stdout)]
fn print_close(
    output: Output,
    response: &tally_proto::finance::ClosePeriodResponse,
) -> anyhow::Result<()> {
    print_one(
        output,
        response,
        "tally.finance.v1.ClosePeriodResponse",
        |response| {
            let closed = response.closed.clone().unwrap_or_default();
            println!(
                "books closed before {} (closed at {}{})",
                format_time(closed.close_through.as_ref()),
                format_time(closed.closed_at.as_ref()),
                if closed.memo.is_empty() {
                    String::new()
                } else {
                    format!(", {}", closed.memo)
                }
            );
        },
    )
}
