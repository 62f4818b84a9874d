//! `tally credits grant|balance|history` over invoicing's `CreditService`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tally_proto::common::Money;
use tally_proto::invoicing::credit_service_client::CreditServiceClient;
use tally_proto::invoicing::{
    CreditGrant, CreditGrantKind, CreditGrantStatus, CreditLedgerEntryKind,
    GetCreditBalanceRequest, GrantCreditRequest, ListCreditLedgerEntriesRequest,
};

use super::table::Table;
use super::{
    Call as _, Output, Target, all_pages, connect, format_money, format_time, heading,
    idempotency_key, parse_optional_time, print_json, print_many, print_one, short,
};

/// `tally credits …`.
#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Grants credits to a customer.
    Grant(GrantArgs),
    /// A customer's available and pending credits, grant by grant.
    Balance {
        /// `cus_…`.
        #[arg(long)]
        customer: String,
        /// The balance at this instant (RFC 3339; default now).
        #[arg(long)]
        as_of: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// The credit ledger of a customer (or of one grant), oldest first.
    History {
        /// `cus_…`.
        #[arg(long)]
        customer: String,
        /// Only this grant's entries (`grant_…`).
        #[arg(long)]
        grant: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// What kind of credit.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Paid for by the customer.
    Prepaid,
    /// Given for free.
    Promotional,
}

/// Options of `tally credits grant`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// `cus_…`.
    #[arg(long)]
    customer: String,
    /// The amount, a decimal such as 100.00.
    #[arg(long)]
    amount: String,
    /// Its currency (the customer's), e.g. USD.
    #[arg(long)]
    currency: String,
    /// Prepaid or promotional.
    #[arg(long, value_enum, default_value_t = Kind::Prepaid)]
    kind: Kind,
    /// Lower is used first.
    #[arg(long, default_value_t = 0)]
    priority: u32,
    /// When it becomes usable (RFC 3339; default now).
    #[arg(long)]
    effective_at: Option<String>,
    /// When what is left expires (RFC 3339; default never).
    #[arg(long)]
    expires_at: Option<String>,
    /// Shown on invoices and in the ledger.
    #[arg(long, default_value = "")]
    description: String,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    target: Target,
}

type Client = CreditServiceClient<super::Authenticated>;

/// Runs `tally credits`.
#[allow(clippy::print_stdout)]
pub async fn run(command: CreditsCommand) -> anyhow::Result<()> {
    match command {
        CreditsCommand::Grant(args) => {
            let request = GrantCreditRequest {
                idempotency_key: idempotency_key(args.idempotency_key.as_deref(), "credit-grant"),
                customer_id: args.customer.clone(),
                kind: match args.kind {
                    Kind::Prepaid => CreditGrantKind::Prepaid,
                    Kind::Promotional => CreditGrantKind::Promotional,
                } as i32,
                amount: Some(Money {
                    currency: args.currency.clone(),
                    amount: args.amount.clone(),
                }),
                priority: args.priority,
                effective_at: parse_optional_time("--effective-at", args.effective_at.as_deref())?,
                expires_at: parse_optional_time("--expires-at", args.expires_at.as_deref())?,
                description: args.description.clone(),
            };
            let grant = client(&args.target)
                .await?
                .grant_credit(request)
                .await
                .answer("GrantCredit")?
                .credit_grant
                .unwrap_or_default();
            print_one(
                args.target.output,
                &grant,
                "tally.invoicing.v1.CreditGrant",
                |grant| grants_table(std::slice::from_ref(grant)).print(),
            )
        }
        CreditsCommand::Balance {
            customer,
            as_of,
            target,
        } => {
            let balance = client(&target)
                .await?
                .get_credit_balance(GetCreditBalanceRequest {
                    customer_id: customer.clone(),
                    as_of: parse_optional_time("--as-of", as_of.as_deref())?,
                })
                .await
                .answer(&format!("GetCreditBalance {customer}"))?;
            if target.output == Output::Json {
                let mut value =
                    super::json::to_value(&balance, "tally.invoicing.v1.GetCreditBalanceResponse")?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("customerId".into(), json!(customer));
                }
                return print_json(&value);
            }
            Table::fields(&[
                ("customer", customer),
                ("as of", format_time(balance.as_of.as_ref())),
                ("available", format_money(balance.available.as_ref())),
                ("pending", format_money(balance.pending.as_ref())),
            ])
            .print();
            heading("grants");
            grants_table(&balance.grants).print();
            Ok(())
        }
        CreditsCommand::History {
            customer,
            grant,
            target,
        } => {
            let mut client = client(&target).await?;
            let entries = all_pages(async |page_token| {
                let page = client
                    .list_credit_ledger_entries(ListCreditLedgerEntriesRequest {
                        customer_id: customer.clone(),
                        credit_grant_id: grant.clone().unwrap_or_default(),
                        page_size: 100,
                        page_token,
                    })
                    .await
                    .answer("ListCreditLedgerEntries")?;
                Ok((page.entries, page.next_page_token))
            })
            .await?;
            print_many(
                target.output,
                &entries,
                "tally.invoicing.v1.CreditLedgerEntry",
                |entries| {
                    let mut table = Table::new(&[
                        "effective",
                        "kind",
                        "amount",
                        "balance after",
                        "grant",
                        "invoice",
                        "description",
                    ]);
                    for entry in entries {
                        table.row(vec![
                            format_time(entry.effective_at.as_ref()),
                            CreditLedgerEntryKind::try_from(entry.kind).map_or_else(
                                |_| entry.kind.to_string(),
                                |kind| short(kind.as_str_name(), "CREDIT_LEDGER_ENTRY_KIND_"),
                            ),
                            format_money(entry.amount.as_ref()),
                            format_money(entry.balance_after.as_ref()),
                            entry.credit_grant_id.clone(),
                            entry.invoice_id.clone(),
                            entry.description.clone(),
                        ]);
                    }
                    table.print();
                },
            )
        }
    }
}

async fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(CreditServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

fn grants_table(grants: &[CreditGrant]) -> Table {
    let mut table = Table::new(&[
        "grant",
        "kind",
        "status",
        "amount",
        "remaining",
        "priority",
        "effective",
        "expires",
        "description",
    ]);
    for grant in grants {
        table.row(vec![
            grant.id.clone(),
            CreditGrantKind::try_from(grant.kind).map_or_else(
                |_| grant.kind.to_string(),
                |kind| short(kind.as_str_name(), "CREDIT_GRANT_KIND_"),
            ),
            CreditGrantStatus::try_from(grant.status).map_or_else(
                |_| grant.status.to_string(),
                |status| short(status.as_str_name(), "CREDIT_GRANT_STATUS_"),
            ),
            format_money(grant.amount.as_ref()),
            format_money(grant.remaining.as_ref()),
            grant.priority.to_string(),
            format_time(grant.effective_at.as_ref()),
            format_time(grant.expires_at.as_ref()),
            grant.description.clone(),
        ]);
    }
    table
}
