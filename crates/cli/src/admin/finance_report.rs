//! `tally finance report --from --to`: the month-end close report — what was
//! billed, recognised, collected, refunded and credited in a period, and
//! what is deferred, unbilled, receivable and owed to customers at its end —
//! from the trial balance at the period's two ends (`GetTrialBalance` twice),
//! so every figure is a difference of posted balances and ties out with the
//! journal by construction.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::json;
use sqlx::types::Decimal;
use tally_proto::finance::GetTrialBalanceRequest;
use tally_proto::finance::ledger_service_client::LedgerServiceClient;

use super::table::Table;
use super::{Call as _, Output, Target, connect, parse_time, print_json};

/// Options of `tally finance report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Start of the period (RFC 3339, inclusive), e.g. 2026-11-01T00:00:00Z.
    #[arg(long)]
    from: String,
    /// End of the period (RFC 3339, exclusive), e.g. 2026-12-01T00:00:00Z.
    #[arg(long)]
    to: String,
    /// Only this currency.
    #[arg(long)]
    currency: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Debits and credits per account code, per currency.
type Totals = BTreeMap<String, BTreeMap<String, (Decimal, Decimal)>>;

async fn totals(
    client: &mut LedgerServiceClient<super::Authenticated>,
    currency: &str,
    as_of: prost_types::Timestamp,
) -> anyhow::Result<Totals> {
    let response = client
        .get_trial_balance(GetTrialBalanceRequest {
            currency: currency.to_owned(),
            as_of: Some(as_of),
        })
        .await
        .answer("GetTrialBalance")?;
    let amount = |money: Option<&tally_proto::common::Money>| -> anyhow::Result<Decimal> {
        Ok(money
            .map(|money| money.amount.parse())
            .transpose()?
            .unwrap_or_default())
    };
    let mut totals = Totals::new();
    for trial in response.balances {
        let accounts = totals.entry(trial.currency.clone()).or_default();
        for account in trial.accounts {
            let debits = amount(account.debits.as_ref())?;
            let credits = amount(account.credits.as_ref())?;
            let entry = accounts.entry(account.code).or_default();
            entry.0 += debits;
            entry.1 += credits;
        }
    }
    Ok(totals)
}

/// The report's lines for one currency: `(line, amount)`.
fn lines(
    start: &BTreeMap<String, (Decimal, Decimal)>,
    end: &BTreeMap<String, (Decimal, Decimal)>,
) -> Vec<(&'static str, Decimal)> {
    let zero = (Decimal::ZERO, Decimal::ZERO);
    // Movement in the period: (debits, credits) of postings in it.
    let moved = |code: &str| {
        let (start_debits, start_credits) = start.get(code).copied().unwrap_or(zero);
        let (end_debits, end_credits) = end.get(code).copied().unwrap_or(zero);
        (end_debits - start_debits, end_credits - start_credits)
    };
    let moved_where = |matches: &dyn Fn(&str) -> bool| {
        end.keys()
            .filter(|code| matches(code))
            .map(|code| moved(code))
            .fold(zero, |sum, (debits, credits)| {
                (sum.0 + debits, sum.1 + credits)
            })
    };
    // Balance at the end on the account's normal side.
    let debit_balance = |code: &str| {
        let (debits, credits) = end.get(code).copied().unwrap_or(zero);
        debits - credits
    };
    let credit_balance = |code: &str| -debit_balance(code);
    let revenue = moved_where(&|code| {
        code.starts_with("40") || code.starts_with("41") || code.starts_with("42")
    });
    let contra = moved_where(&|code| code.starts_with("49"));
    vec![
        ("invoiced to receivables", moved("1100").0),
        ("revenue recognised", revenue.1 - revenue.0),
        ("— recurring fees", moved("4000").1 - moved("4000").0),
        ("— usage", {
            let usage = moved_where(&|code| code.starts_with("4200"));
            usage.1 - usage.0
        }),
        ("— one-off", moved("4100").1 - moved("4100").0),
        (
            "credit notes, discounts, credits (contra-revenue)",
            contra.0 - contra.1,
        ),
        ("collected (cash in)", moved("1000").0),
        ("refunded (cash out)", moved("1000").1),
        ("receivable at the end", debit_balance("1100")),
        ("unbilled at the end", debit_balance("1150")),
        ("deferred revenue at the end", credit_balance("2100")),
        ("customer credit owed at the end", credit_balance("2300")),
        (
            "refunds owed, not paid out, at the end",
            credit_balance("2400"),
        ),
    ]
}

/// Runs `tally finance report`.
#[allow(clippy::print_stdout)]
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let from = parse_time("--from", &args.from)?;
    let to = parse_time("--to", &args.to)?;
    let target = &args.target;
    let mut client = LedgerServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    );
    let currency = args.currency.clone().unwrap_or_default();
    let start = totals(&mut client, &currency, from).await?;
    let end = totals(&mut client, &currency, to).await?;
    let empty = BTreeMap::new();
    let report: Vec<(String, Vec<(&'static str, Decimal)>)> = end
        .iter()
        .map(|(currency, accounts)| {
            (
                currency.clone(),
                lines(start.get(currency).unwrap_or(&empty), accounts),
            )
        })
        .collect();
    if target.output == Output::Json {
        let value: serde_json::Value = report
            .iter()
            .map(|(currency, lines)| {
                let lines: serde_json::Map<String, serde_json::Value> = lines
                    .iter()
                    .map(|(name, amount)| ((*name).to_owned(), json!(amount.to_string())))
                    .collect();
                (currency.clone(), serde_json::Value::Object(lines))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        return print_json(&json!({"from": args.from, "to": args.to, "currencies": value}));
    }
    println!("close report {} → {}", args.from, args.to);
    let mut table = Table::new(&["CURRENCY", "LINE", "AMOUNT"]);
    for (currency, lines) in &report {
        for (name, amount) in lines {
            table.row(vec![
                currency.clone(),
                (*name).to_owned(),
                amount.to_string(),
            ]);
        }
    }
    table.print();
    Ok(())
}
