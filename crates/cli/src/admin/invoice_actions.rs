//! `tally invoices finalize|void|credit-note`: the calls of invoicing's
//! `InvoiceService` that change an invoice.
//!
//! `void` and `credit-note` carry an idempotency key (`--idempotency-key` when
//! given, else a fresh one per run); `FinalizeInvoice` has none because
//! finalizing is idempotent by itself (a finalized invoice is returned as is).

use clap::{Args, ValueEnum};
use tally_proto::common::Money;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::{
    CreateCreditNoteRequest, CreateCreditNoteResponse, CreditNoteLine, CreditNoteLines,
    CreditNoteReason, FinalizeInvoiceRequest, GetInvoiceRequest, VoidInvoiceRequest,
    create_credit_note_request,
};

use super::invoice_view::print_invoice;
use super::table::Table;
use super::{
    Authenticated, Call as _, Target, connect, format_money, format_time, heading, idempotency_key,
    print_one, refused, short, usage,
};

/// Options of `tally invoices finalize`.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// The draft, `inv_…`.
    invoice: String,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally invoices void`.
#[derive(Debug, Args)]
pub struct VoidArgs {
    /// A finalized, unpaid invoice, `inv_…`.
    invoice: String,
    /// Why (required; kept on the invoice).
    #[arg(long)]
    reason: String,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally invoices credit-note`.
#[derive(Debug, Args)]
pub struct CreditNoteArgs {
    /// A finalized invoice, `inv_…`.
    invoice: String,
    /// The amount in the invoice's currency, e.g. 12.34: credited against the
    /// single `--line`, or against the invoice as a whole without one.
    #[arg(long, required_unless_present_any = ["full", "lines"])]
    amount: Option<String>,
    /// An invoice line to credit: `il_…` (with --amount) or `il_…=AMOUNT`
    /// (repeatable, each with its amount).
    #[arg(long = "line", value_name = "LINE[=AMOUNT]", conflicts_with = "full")]
    lines: Vec<String>,
    /// Credit everything that remains creditable on the invoice.
    #[arg(long, conflicts_with = "amount")]
    full: bool,
    /// Why.
    #[arg(long, value_enum)]
    reason: Reason,
    /// Free text printed on the credit note.
    #[arg(long, default_value = "")]
    memo: String,
    /// For a paid invoice: add the amount to the customer's credit balance
    /// (otherwise money goes back only through a refund in payments).
    #[arg(long)]
    credit_to_balance: bool,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Why a credit note is issued (refund notes come from payments, not from here).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Reason {
    /// The invoice billed something twice.
    Duplicate,
    /// The charge was fraudulent.
    Fraudulent,
    /// The order changed after invoicing.
    OrderChange,
    /// Goodwill: the customer was unhappy with the service.
    ProductUnsatisfactory,
    /// The invoice was wrong (e.g. mis-rated usage).
    BillingError,
}

impl Reason {
    fn wire(self) -> CreditNoteReason {
        match self {
            Self::Duplicate => CreditNoteReason::Duplicate,
            Self::Fraudulent => CreditNoteReason::Fraudulent,
            Self::OrderChange => CreditNoteReason::OrderChange,
            Self::ProductUnsatisfactory => CreditNoteReason::ProductUnsatisfactory,
            Self::BillingError => CreditNoteReason::BillingError,
        }
    }
}

type Client = InvoiceServiceClient<Authenticated>;

async fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(InvoiceServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

/// Runs `tally invoices finalize`.
pub async fn finalize(args: FinalizeArgs) -> anyhow::Result<()> {
    let finalized = client(&args.target)
        .await?
        .finalize_invoice(FinalizeInvoiceRequest {
            invoice_id: args.invoice.clone(),
        })
        .await
        .answer(&format!("FinalizeInvoice {}", args.invoice))?
        .invoice
        .unwrap_or_default();
    print_one(
        args.target.output,
        &finalized,
        "tally.invoicing.v1.Invoice",
        print_invoice,
    )
}

/// Runs `tally invoices void`.
pub async fn void(args: VoidArgs) -> anyhow::Result<()> {
    if args.reason.trim().is_empty() {
        return Err(usage("--reason must say why the invoice is voided"));
    }
    let voided = client(&args.target)
        .await?
        .void_invoice(VoidInvoiceRequest {
            idempotency_key: idempotency_key(args.idempotency_key.as_deref(), "invoice-void"),
            invoice_id: args.invoice.clone(),
            reason: args.reason.clone(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| {
            refused_with_hint(
                &format!("VoidInvoice {}", args.invoice),
                &status,
                "only a finalized, unpaid invoice can be voided: finalize a draft first \
                 (`tally invoices finalize`); credit a paid one (`tally invoices credit-note`)",
            )
        })?
        .invoice
        .unwrap_or_default();
    print_one(
        args.target.output,
        &voided,
        "tally.invoicing.v1.Invoice",
        print_invoice,
    )
}

/// Runs `tally invoices credit-note`.
pub async fn credit_note(args: CreditNoteArgs) -> anyhow::Result<()> {
    let mut client = client(&args.target).await?;
    let amount = if args.full {
        create_credit_note_request::Amount::Full(true)
    } else {
        // Amounts are in the invoice's currency: read it rather than ask for it.
        let currency = client
            .get_invoice(GetInvoiceRequest {
                invoice_id: args.invoice.clone(),
            })
            .await
            .answer(&format!("GetInvoice {}", args.invoice))?
            .invoice
            .unwrap_or_default()
            .currency;
        create_credit_note_request::Amount::Partial(CreditNoteLines {
            lines: credit_lines(args.amount.as_deref(), &args.lines, &currency)?,
        })
    };
    let response = client
        .create_credit_note(CreateCreditNoteRequest {
            idempotency_key: idempotency_key(
                args.idempotency_key.as_deref(),
                "invoice-credit-note",
            ),
            invoice_id: args.invoice.clone(),
            reason: args.reason.wire() as i32,
            memo: args.memo.clone(),
            amount: Some(amount),
            credit_to_balance: args.credit_to_balance,
            refund_amount: None,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| {
            refused_with_hint(
                &format!("CreateCreditNote {}", args.invoice),
                &status,
                "only a finalized invoice can be credited, up to what its earlier credit \
                 notes left: `tally invoices show` prints its total and what is credited",
            )
        })?;
    print_one(
        args.target.output,
        &response,
        "tally.invoicing.v1.CreateCreditNoteResponse",
        print_credit_note,
    )
}

/// [`refused`], with `hint` when the service refused for the invoice's state
/// (FAILED_PRECONDITION).
fn refused_with_hint(call: &str, status: &tonic::Status, hint: &str) -> anyhow::Error {
    let error = refused(call, status);
    if status.code() == tonic::Code::FailedPrecondition {
        anyhow::anyhow!("{error}\nhint: {hint}")
    } else {
        error
    }
}

/// The lines of a partial credit note from `--amount` and `--line`: an amount
/// alone (not tied to a line), one line with `--amount`, or lines each with
/// its own `=AMOUNT`.
fn credit_lines(
    amount: Option<&str>,
    lines: &[String],
    currency: &str,
) -> anyhow::Result<Vec<CreditNoteLine>> {
    let line = |invoice_line_id: &str, amount: &str, option: &str| {
        if !is_amount(amount) {
            return Err(usage(format!(
                "{option} `{amount}` is not an amount like 12.34"
            )));
        }
        Ok(CreditNoteLine {
            invoice_line_id: invoice_line_id.to_owned(),
            description: String::new(),
            amount: Some(Money {
                amount: amount.to_owned(),
                currency: currency.to_owned(),
            }),
        })
    };
    match (amount, lines) {
        (Some(amount), []) => Ok(vec![line("", amount, "--amount")?]),
        (Some(amount), [id]) if !id.contains('=') => Ok(vec![line(id, amount, "--amount")?]),
        (None, lines) if !lines.is_empty() && lines.iter().all(|line| line.contains('=')) => lines
            .iter()
            .map(|given| {
                let (id, amount) = given.split_once('=').unwrap_or_default();
                line(id.trim(), amount.trim(), &format!("--line {id}="))
            })
            .collect(),
        _ => Err(usage(
            "give --amount alone, --amount with one --line il_…, or every --line as il_…=AMOUNT",
        )),
    }
}

/// `12`, `12.3`, `12.34`: digits with at most one decimal point (the service
/// checks the sign and the currency's precision).
fn is_amount(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
}

fn print_credit_note(response: &CreateCreditNoteResponse) {
    let note = response.credit_note.clone().unwrap_or_default();
    let reason = CreditNoteReason::try_from(note.reason).map_or_else(
        |_| note.reason.to_string(),
        |reason| short(reason.as_str_name(), "CREDIT_NOTE_REASON_").replace('_', " "),
    );
    Table::fields(&[
        ("credit note", format!("{} {}", note.number, note.id)),
        ("invoice", note.invoice_id.clone()),
        ("customer", note.customer_id.clone()),
        ("reason", reason),
        ("memo", note.memo.clone()),
        ("total", format_money(note.total.as_ref())),
        (
            "to balance",
            if note.credited_to_balance {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
        ),
        ("issued", format_time(note.created_at.as_ref())),
    ])
    .print();
    heading("lines");
    let mut lines = Table::new(&["invoice line", "description", "amount"]);
    for line in &note.lines {
        lines.row(vec![
            if line.invoice_line_id.is_empty() {
                "-".to_owned()
            } else {
                line.invoice_line_id.clone()
            },
            line.description.clone(),
            format_money(line.amount.as_ref()),
        ]);
    }
    lines.print();
    if let Some(invoice) = &response.invoice {
        heading("invoice now");
        Table::fields(&[
            ("total", format_money(invoice.total.as_ref())),
            ("credited", format_money(invoice.amount_credited.as_ref())),
            ("amount due", format_money(invoice.amount_due.as_ref())),
        ])
        .print();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(lines: &[CreditNoteLine]) -> Vec<(String, String, String)> {
        lines
            .iter()
            .map(|line| {
                let money = line.amount.clone().unwrap_or_default();
                (line.invoice_line_id.clone(), money.amount, money.currency)
            })
            .collect()
    }

    fn owned(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| (*line).to_owned()).collect()
    }

    #[test]
    fn an_amount_alone_is_not_tied_to_a_line() {
        let lines = credit_lines(Some("12.34"), &[], "USD").unwrap();
        assert_eq!(
            shape(&lines),
            [(String::new(), "12.34".to_owned(), "USD".to_owned())]
        );
    }

    #[test]
    fn an_amount_with_one_line_credits_that_line() {
        let lines = credit_lines(Some("5"), &owned(&["il_1"]), "EUR").unwrap();
        assert_eq!(
            shape(&lines),
            [("il_1".to_owned(), "5".to_owned(), "EUR".to_owned())]
        );
    }

    #[test]
    fn lines_with_their_own_amounts() {
        let lines = credit_lines(None, &owned(&["il_1=1.50", "il_2 = 0.25"]), "USD").unwrap();
        assert_eq!(
            shape(&lines),
            [
                ("il_1".to_owned(), "1.50".to_owned(), "USD".to_owned()),
                ("il_2".to_owned(), "0.25".to_owned(), "USD".to_owned()),
            ]
        );
    }

    #[test]
    fn ambiguous_or_malformed_amounts_are_usage_errors() {
        for (amount, lines) in [
            (Some("1.00"), owned(&["il_1", "il_2"])),
            (Some("1.00"), owned(&["il_1=1.00"])),
            (None, owned(&["il_1=1.00", "il_2"])),
            (None, owned(&[])),
            (Some("12,34"), owned(&[])),
            (Some("-1"), owned(&[])),
            (Some("1."), owned(&[])),
            (None, owned(&["il_1=abc"])),
        ] {
            let error = credit_lines(amount, &lines, "USD").unwrap_err();
            assert!(
                error.downcast_ref::<super::super::UsageError>().is_some(),
                "{amount:?} {lines:?}: {error}"
            );
        }
    }
}
