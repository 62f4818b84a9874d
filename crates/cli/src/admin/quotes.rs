//! `tally quotes create|preview|finalize|accept|decline|cancel|list|show` over invoicing's
//! `QuoteService`: quotes as code (`quote.yaml`, see `quote_file.rs` and
//! docs/operations.md, "Quotes").
//!
//! Every change carries an idempotency key: `--idempotency-key` when given (retrying the
//! same command is then safe), else a fresh one per run. `accept` is also idempotent by
//! the quote revision: accepting it again with the same signature changes nothing.

use clap::{Args, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use tally_proto::invoicing::quote_service_client::QuoteServiceClient;
use tally_proto::invoicing::{
    AcceptQuoteRequest, CancelQuoteRequest, CreateQuoteRequest, DeclineQuoteRequest,
    FinalizeQuoteRequest, GetQuoteRequest, ListQuotesRequest, PreviewQuoteRequest, Quote,
    QuoteContent, QuotePreview, QuoteStatus, quote_content,
};

use super::quote_file::QuoteFile;
use super::subscriptions::{customer_id_of, latest_published_version};
use super::table::Table;
use super::{
    Call as _, Output, Target, all_pages, connect, format_money, format_range, format_time,
    heading, idempotency_key, parse_time, print_many, print_one, short, usage,
};

/// `tally quotes …`.
#[derive(Debug, Subcommand)]
pub enum QuotesCommand {
    /// Creates a draft quote from a quote file (a revision with `--from`).
    Create(FileArgs),
    /// Prices a quote file without storing it: each period, the first, the recurring
    /// amount and the total contract value.
    Preview(FileArgs),
    /// Finalizes a draft: numbers it and opens it for signature (immutable from then on).
    Finalize(QuoteArgs),
    /// Records the signature and executes the quote: the customer, the subscription (or
    /// the amendment), in one step.
    Accept(AcceptArgs),
    /// Records that the customer declined an open quote.
    Decline(ReasonArgs),
    /// Withdraws a draft or open quote.
    Cancel(ReasonArgs),
    /// Lists quotes, newest first.
    List {
        /// Only this customer's (`cus_…` or the external id).
        #[arg(long)]
        customer: Option<String>,
        /// Only quotes in this status (repeatable).
        #[arg(long, value_enum)]
        status: Vec<Status>,
        #[command(flatten)]
        target: Target,
    },
    /// Shows a quote with its preview.
    Show {
        /// `quo_…`.
        quote: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A quote status, as a filter.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    /// Being written.
    Draft,
    /// Waiting for a signature.
    Open,
    /// Signed and executed.
    Accepted,
    /// Declined by the customer.
    Declined,
    /// Open past its expiry.
    Expired,
    /// Withdrawn or superseded.
    Canceled,
}

/// Options of `create` and `preview`.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The quote file (YAML; docs/operations.md, "Quotes").
    #[arg(short = 'f', long = "file")]
    file: std::path::PathBuf,
    /// `create` only: make a revision of this quote (`quo_…`).
    #[arg(long = "from")]
    from_quote: Option<String>,
    /// Rating's gRPC address for `plan:` (default: --address, as `tally dev` serves all).
    #[arg(long)]
    catalog_address: Option<String>,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options naming one quote.
#[derive(Debug, Args)]
pub struct QuoteArgs {
    /// `quo_…`.
    quote: String,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options of `decline` and `cancel`.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    #[command(flatten)]
    quote: QuoteArgs,
    /// Why (kept with the quote and in the audit log).
    #[arg(long, default_value = "")]
    reason: String,
}

/// Options of `accept`.
#[derive(Debug, Args)]
pub struct AcceptArgs {
    #[command(flatten)]
    quote: QuoteArgs,
    /// Who signed, e.g. "Jane Doe <jane@acme.example>".
    #[arg(long)]
    signed_by: String,
    /// When they signed (RFC 3339).
    #[arg(long)]
    signed_at: String,
    /// The signed document: its SHA-256 is recorded with the acceptance.
    #[arg(long, conflicts_with = "document_sha256")]
    document: Option<std::path::PathBuf>,
    /// The SHA-256 of the signed document (64 lowercase hex digits), if not `--document`.
    #[arg(long)]
    document_sha256: Option<String>,
}

type Client = QuoteServiceClient<super::Authenticated>;

async fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(QuoteServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

/// Reads a quote file and resolves its customer and plan to ids.
async fn content(args: &FileArgs) -> anyhow::Result<QuoteContent> {
    let path = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|error| usage(format!("cannot read {path}: {error}")))?;
    let file = QuoteFile::parse(&text, &path)?;
    let customer_id = match (&file.customer.id, &file.customer.external_id) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(external_id)) => Some(customer_id_of(&args.target, external_id).await?),
        (None, None) => None,
    };
    let plan_version_id = match (&file.plan_version, &file.plan) {
        (Some(version), _) => version.clone(),
        (None, code) => {
            let address = args
                .catalog_address
                .as_deref()
                .unwrap_or(&args.target.address);
            let code = code.clone().unwrap_or_default();
            latest_published_version(&code, address, &args.target).await?
        }
    };
    file.content(customer_id, plan_version_id)
}

/// Runs `tally quotes`.
pub async fn run(command: QuotesCommand) -> anyhow::Result<()> {
    match command {
        QuotesCommand::Create(args) => {
            let request = CreateQuoteRequest {
                idempotency_key: idempotency_key(args.idempotency_key.as_deref(), "quote-create"),
                quote: Some(content(&args).await?),
                from_quote_id: args.from_quote.clone().unwrap_or_default(),
            };
            let quote = client(&args.target)
                .await?
                .create_quote(request)
                .await
                .answer("CreateQuote")?
                .quote
                .unwrap_or_default();
            print_quote(args.target.output, &quote)
        }
        QuotesCommand::Preview(args) => {
            let request = PreviewQuoteRequest {
                quote: Some(content(&args).await?),
            };
            let answer = client(&args.target)
                .await?
                .preview_quote(request)
                .await
                .answer("PreviewQuote")?;
            print_one(
                args.target.output,
                &answer,
                "tally.invoicing.v1.PreviewQuoteResponse",
                |answer| {
                    Table::fields(&[("ends", format_time(answer.ends_at.as_ref()))]).print();
                    print_preview(answer.preview.as_ref());
                },
            )
        }
        QuotesCommand::Finalize(args) => {
            let quote = client(&args.target)
                .await?
                .finalize_quote(FinalizeQuoteRequest {
                    idempotency_key: idempotency_key(
                        args.idempotency_key.as_deref(),
                        "quote-finalize",
                    ),
                    quote_id: args.quote.clone(),
                })
                .await
                .answer(&format!("FinalizeQuote {}", args.quote))?
                .quote
                .unwrap_or_default();
            print_quote(args.target.output, &quote)
        }
        QuotesCommand::Accept(args) => accept(args).await,
        QuotesCommand::Decline(args) => {
            let quote = client(&args.quote.target)
                .await?
                .decline_quote(DeclineQuoteRequest {
                    idempotency_key: idempotency_key(
                        args.quote.idempotency_key.as_deref(),
                        "quote-decline",
                    ),
                    quote_id: args.quote.quote.clone(),
                    reason: args.reason.clone(),
                })
                .await
                .answer(&format!("DeclineQuote {}", args.quote.quote))?
                .quote
                .unwrap_or_default();
            print_quote(args.quote.target.output, &quote)
        }
        QuotesCommand::Cancel(args) => {
            let quote = client(&args.quote.target)
                .await?
                .cancel_quote(CancelQuoteRequest {
                    idempotency_key: idempotency_key(
                        args.quote.idempotency_key.as_deref(),
                        "quote-cancel",
                    ),
                    quote_id: args.quote.quote.clone(),
                    reason: args.reason.clone(),
                })
                .await
                .answer(&format!("CancelQuote {}", args.quote.quote))?
                .quote
                .unwrap_or_default();
            print_quote(args.quote.target.output, &quote)
        }
        QuotesCommand::List {
            customer,
            status,
            target,
        } => list(customer, &status, &target).await,
        QuotesCommand::Show { quote, target } => {
            let found = client(&target)
                .await?
                .get_quote(GetQuoteRequest {
                    quote_id: quote.clone(),
                })
                .await
                .answer(&format!("GetQuote {quote}"))?
                .quote
                .unwrap_or_default();
            print_quote(target.output, &found)
        }
    }
}

async fn accept(args: AcceptArgs) -> anyhow::Result<()> {
    let document_sha256 = match (&args.document, &args.document_sha256) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).map_err(|error| {
                usage(format!(
                    "cannot read --document {}: {error}",
                    path.display()
                ))
            })?;
            Sha256::digest(&bytes)
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        }
        (None, hash) => hash.clone().unwrap_or_default(),
    };
    let target = &args.quote.target;
    let answer = client(target)
        .await?
        .accept_quote(AcceptQuoteRequest {
            idempotency_key: idempotency_key(args.quote.idempotency_key.as_deref(), "quote-accept"),
            quote_id: args.quote.quote.clone(),
            signed_by: args.signed_by.clone(),
            signed_at: Some(parse_time("--signed-at", &args.signed_at)?),
            document_sha256,
        })
        .await
        .answer(&format!("AcceptQuote {}", args.quote.quote))?;
    if target.output == Output::Table && !answer.accepted_now {
        heading("already accepted with this signature: nothing was created now");
    }
    print_quote(target.output, &answer.quote.unwrap_or_default())
}

async fn list(
    customer: Option<String>,
    statuses: &[Status],
    target: &Target,
) -> anyhow::Result<()> {
    let customer_id = match &customer {
        Some(customer) => customer_id_of(target, customer).await?,
        None => String::new(),
    };
    let statuses: Vec<i32> = statuses
        .iter()
        .map(|status| {
            (match status {
                Status::Draft => QuoteStatus::Draft,
                Status::Open => QuoteStatus::Open,
                Status::Accepted => QuoteStatus::Accepted,
                Status::Declined => QuoteStatus::Declined,
                Status::Expired => QuoteStatus::Expired,
                Status::Canceled => QuoteStatus::Canceled,
            }) as i32
        })
        .collect();
    let mut client = client(target).await?;
    let quotes = all_pages(async |page_token| {
        let page = client
            .list_quotes(ListQuotesRequest {
                customer_id: customer_id.clone(),
                statuses: statuses.clone(),
                page_size: 200,
                page_token,
            })
            .await
            .answer("ListQuotes")?;
        Ok((page.quotes, page.next_page_token))
    })
    .await?;
    print_many(
        target.output,
        &quotes,
        "tally.invoicing.v1.Quote",
        |quotes| {
            let mut table = Table::new(&[
                "id",
                "number",
                "rev",
                "status",
                "customer",
                "start",
                "ends",
                "total contract value",
            ]);
            for quote in quotes {
                table.row(vec![
                    quote.id.clone(),
                    quote.number.clone(),
                    quote.revision.to_string(),
                    status_name(quote),
                    party(quote),
                    format_time(quote.content.as_ref().and_then(|c| c.start_at.as_ref())),
                    format_time(quote.ends_at.as_ref()),
                    format_money(
                        quote
                            .preview
                            .as_ref()
                            .and_then(|preview| preview.total_contract_value.as_ref()),
                    ),
                ]);
            }
            table.print();
        },
    )
}

fn status_name(quote: &Quote) -> String {
    QuoteStatus::try_from(quote.status).map_or_else(
        |_| quote.status.to_string(),
        |status| short(status.as_str_name(), "QUOTE_STATUS_"),
    )
}

/// The customer: its id, or `new: <external id>`.
fn party(quote: &Quote) -> String {
    match quote
        .content
        .as_ref()
        .and_then(|content| content.party.as_ref())
    {
        _ if !quote.customer_id.is_empty() => quote.customer_id.clone(),
        Some(quote_content::Party::NewCustomer(customer)) => {
            format!("new: {}", customer.external_id)
        }
        Some(quote_content::Party::CustomerId(id)) => id.clone(),
        None => "-".to_owned(),
    }
}

fn print_quote(output: Output, quote: &Quote) -> anyhow::Result<()> {
    print_one(output, quote, "tally.invoicing.v1.Quote", |quote| {
        let content = quote.content.clone().unwrap_or_default();
        Table::fields(&[
            ("id", quote.id.clone()),
            ("number", quote.number.clone()),
            ("revision", quote.revision.to_string()),
            ("from", quote.from_quote_id.clone()),
            ("status", status_name(quote)),
            ("reason", quote.status_reason.clone()),
            ("customer", party(quote)),
            ("amends", content.amends_subscription_id.clone()),
            ("plan version", content.plan_version_id.clone()),
            ("currency", quote.currency.clone()),
            ("start", format_time(content.start_at.as_ref())),
            ("ends", format_time(quote.ends_at.as_ref())),
            ("expires", format_time(content.expires_at.as_ref())),
            ("signed by", quote.signed_by.clone()),
            ("signed at", format_time(quote.signed_at.as_ref())),
            ("document sha-256", quote.document_sha256.clone()),
            ("subscription", quote.subscription_id.clone()),
            ("memo", content.memo.clone()),
        ])
        .print();
        print_preview(quote.preview.as_ref());
    })
}

fn print_preview(preview: Option<&QuotePreview>) {
    let Some(preview) = preview else {
        return;
    };
    heading("preview (committed: recurring fees and minimum spend, no usage)");
    Table::fields(&[
        ("first period", format_money(preview.first_period.as_ref())),
        ("recurring", format_money(preview.recurring.as_ref())),
        (
            "total contract value",
            format_money(preview.total_contract_value.as_ref()),
        ),
    ])
    .print();
    let mut table = Table::new(&["period", "phase", "amount"]);
    for period in &preview.periods {
        table.row(vec![
            format_range(period.period.as_ref()),
            period.phase.clone(),
            format_money(period.amount.as_ref()),
        ]);
    }
    table.print();
}
