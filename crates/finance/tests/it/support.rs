//! Building the events finance consumes, and reading its books.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::finance::RecognitionPolicy;
use tally_finance::{InvoiceEventsHandler, Ledger, LedgerApi, PaymentEventsHandler};
use tally_proto::common::{Money, TimeRange};
use tally_proto::convert::timestamp;
use tally_proto::events::{InvoiceEvent, PaymentEvent, invoice_event, payment_event};
use tally_proto::finance::GetTrialBalanceRequest;
use tally_proto::finance::ledger_service_server::LedgerService;
use tally_proto::invoicing::{
    CreditNote, Invoice, InvoiceLine, InvoiceLineKind, UsageLineDetail, invoice_line,
};
use tally_proto::payments::Payment;
use tally_proto::rating::UsageCharge;
use tally_runtime::{ManualClock, SharedClock};

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

pub fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        amount: amount.to_owned(),
        currency: "USD".to_owned(),
    })
}

pub fn range(start: &str, end: &str) -> Option<TimeRange> {
    Some(TimeRange {
        start_time: Some(timestamp(at(start))),
        end_time: Some(timestamp(at(end))),
    })
}

/// The books under test, with a manual clock.
pub struct Books {
    pub database: tally_testkit::postgres::TestDatabase,
    pub clock: Arc<ManualClock>,
    pub invoices: InvoiceEventsHandler,
    pub payments: PaymentEventsHandler,
    pub api: LedgerApi,
}

impl Books {
    pub async fn open(now: &str) -> Self {
        let database = tally_testkit::postgres::database().await;
        let clock = Arc::new(ManualClock::new(at(now)));
        let shared: SharedClock = clock.clone();
        let ledger = Arc::new(Ledger {
            pool: database.pool.clone(),
            clock: Arc::clone(&shared),
            policy: RecognitionPolicy::ByDay,
        });
        Self {
            invoices: InvoiceEventsHandler::new(Arc::clone(&ledger), "finance-invoice-events"),
            payments: PaymentEventsHandler::new(Arc::clone(&ledger), "finance-payment-events"),
            api: LedgerApi::new(
                database.pool.clone(),
                shared,
                Arc::new(tally_testkit::SequentialIds::default()),
            ),
            clock,
            database,
        }
    }

    /// Balance per account code (normal side positive), one currency.
    pub async fn balances(&self, as_of: Option<&str>) -> BTreeMap<String, Decimal> {
        let response = self
            .api
            .get_trial_balance(tonic::Request::new(GetTrialBalanceRequest {
                currency: "USD".into(),
                as_of: as_of.map(|text| timestamp(at(text))),
            }))
            .await
            .unwrap()
            .into_inner();
        let mut balances = BTreeMap::new();
        for trial in response.balances {
            assert_eq!(
                trial.total_debits, trial.total_credits,
                "the trial balance balances"
            );
            for account in trial.accounts {
                balances.insert(
                    account.code.clone(),
                    account.balance.unwrap().amount.parse::<Decimal>().unwrap(),
                );
            }
        }
        balances
    }

    pub async fn recognise(&self, now: &str) -> usize {
        self.clock.set(at(now)).unwrap();
        tally_finance::recognition::recognise_due(
            &self.database.pool,
            at(now).date_naive(),
            at(now),
        )
        .await
        .unwrap()
    }
}

/// A line of an invoice: (id, kind, amount, service period).
pub struct Line<'a> {
    pub id: &'a str,
    pub kind: InvoiceLineKind,
    pub amount: &'a str,
    pub period: (&'a str, &'a str),
    pub meter: &'a str,
}

pub fn line<'a>(
    id: &'a str,
    kind: InvoiceLineKind,
    amount: &'a str,
    period: (&'a str, &'a str),
) -> Line<'a> {
    Line {
        id,
        kind,
        amount,
        period,
        meter: "",
    }
}

pub fn usage_line<'a>(
    id: &'a str,
    meter: &'a str,
    amount: &'a str,
    period: (&'a str, &'a str),
) -> Line<'a> {
    Line {
        id,
        kind: InvoiceLineKind::Usage,
        amount,
        period,
        meter,
    }
}

pub fn invoice(id: &str, customer: &str, lines: &[Line<'_>]) -> Invoice {
    Invoice {
        id: id.to_owned(),
        customer_id: customer.to_owned(),
        currency: "USD".to_owned(),
        lines: lines
            .iter()
            .map(|line| InvoiceLine {
                id: line.id.to_owned(),
                kind: line.kind as i32,
                period: range(line.period.0, line.period.1),
                amount: usd(line.amount),
                detail: (line.kind == InvoiceLineKind::Usage).then(|| {
                    invoice_line::Detail::Usage(UsageLineDetail {
                        charge: Some(UsageCharge {
                            meter_code: line.meter.to_owned(),
                            ..UsageCharge::default()
                        }),
                    })
                }),
                ..InvoiceLine::default()
            })
            .collect(),
        ..Invoice::default()
    }
}

pub fn finalized(invoice: Invoice, at_time: &str) -> InvoiceEvent {
    InvoiceEvent {
        event_id: format!("ievt_fin_{}", invoice.id),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        occurred_at: Some(timestamp(at(at_time))),
        invoice: Some(invoice),
        kind: Some(invoice_event::Kind::Finalized(
            invoice_event::Finalized::default(),
        )),
        ..InvoiceEvent::default()
    }
}

pub fn voided(invoice: Invoice, at_time: &str) -> InvoiceEvent {
    InvoiceEvent {
        event_id: format!("ievt_void_{}", invoice.id),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        occurred_at: Some(timestamp(at(at_time))),
        invoice: Some(invoice),
        kind: Some(invoice_event::Kind::Voided(invoice_event::Voided::default())),
        ..InvoiceEvent::default()
    }
}

pub fn credit_note(
    invoice: Invoice,
    note: &str,
    total: &str,
    refund: &str,
    at_time: &str,
) -> InvoiceEvent {
    // A note with a refund is on a paid invoice (the refund pays it out).
    let mut invoice = invoice;
    if !refund.is_empty() {
        invoice.status = tally_proto::invoicing::InvoiceStatus::Paid as i32;
    }
    InvoiceEvent {
        event_id: format!("ievt_cn_{note}"),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        occurred_at: Some(timestamp(at(at_time))),
        kind: Some(invoice_event::Kind::CreditNoteIssued(
            invoice_event::CreditNoteIssued {
                credit_note: Some(CreditNote {
                    id: note.to_owned(),
                    invoice_id: invoice.id.clone(),
                    customer_id: invoice.customer_id.clone(),
                    total: usd(total),
                    refund_amount: (!refund.is_empty()).then(|| usd(refund)).flatten(),
                    created_at: Some(timestamp(at(at_time))),
                    ..CreditNote::default()
                }),
                credit_grant: None,
            },
        )),
        invoice: Some(invoice),
        ..InvoiceEvent::default()
    }
}

pub fn paid(
    invoice: &str,
    customer: &str,
    payment: &str,
    amount: &str,
    at_time: &str,
) -> PaymentEvent {
    PaymentEvent {
        event_id: format!("pevt_{payment}"),
        invoice_id: invoice.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: Some(timestamp(at(at_time))),
        payment: Some(Payment {
            id: payment.to_owned(),
            invoice_id: invoice.to_owned(),
            customer_id: customer.to_owned(),
            amount: usd(amount),
            ..Payment::default()
        }),
        kind: Some(payment_event::Kind::Succeeded(payment_event::Succeeded {
            amount: usd(amount),
            ..payment_event::Succeeded::default()
        })),
    }
}

pub fn refunded(
    invoice: &str,
    customer: &str,
    payment: &str,
    refund: &str,
    amount: &str,
    at_time: &str,
) -> PaymentEvent {
    PaymentEvent {
        event_id: format!("pevt_{refund}"),
        invoice_id: invoice.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: Some(timestamp(at(at_time))),
        payment: Some(Payment {
            id: payment.to_owned(),
            invoice_id: invoice.to_owned(),
            customer_id: customer.to_owned(),
            amount: usd(amount),
            ..Payment::default()
        }),
        kind: Some(payment_event::Kind::Refunded(payment_event::Refunded {
            refund_id: refund.to_owned(),
            amount: usd(amount),
            ..payment_event::Refunded::default()
        })),
    }
}
