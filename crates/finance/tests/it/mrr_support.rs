//! Building subscription snapshots and invoices with recurring fees, and
//! the analytics harness (the subscription consumer and `AnalyticsService`
//! beside the ledger's books).

use std::sync::Arc;

use rust_decimal::Decimal;
use tally_domain::finance::RecognitionPolicy;
use tally_finance::{AnalyticsApi, Ledger, SubscriptionEventsHandler};
use tally_proto::common::Money;
use tally_proto::convert::timestamp;
use tally_proto::events::{InvoiceEvent, SubscriptionEvent, invoice_event, subscription_event};
use tally_proto::finance::analytics_service_server::AnalyticsService;
use tally_proto::finance::{
    GetMrrRequest, GetMrrResponse, ListMrrMovementsRequest, ListMrrMovementsResponse, MovementKind,
};
use tally_proto::invoicing::{
    Invoice, InvoiceLine, InvoiceLineKind, ProrationLineDetail, RecurringLineDetail, Subscription,
    SubscriptionStatus, invoice_line,
};
use tally_runtime::SharedClock;

use crate::support::{Books, at, range, usd};

/// A day of 2026 (or a full RFC 3339 instant).
pub fn day(text: &str) -> String {
    if text.contains('T') {
        text.to_owned()
    } else {
        format!("2026-{text}T00:00:00Z")
    }
}

/// A full-period recurring line.
pub fn recurring(id: &str, plan_version: &str, amount: &str, period: (&str, &str)) -> InvoiceLine {
    InvoiceLine {
        id: id.to_owned(),
        kind: InvoiceLineKind::Recurring as i32,
        period: range(&day(period.0), &day(period.1)),
        amount: usd(amount),
        detail: Some(invoice_line::Detail::Recurring(RecurringLineDetail {
            plan_version_id: plan_version.to_owned(),
            charge_key: "base".to_owned(),
            period_amount: usd(amount),
            ..RecurringLineDetail::default()
        })),
        ..InvoiceLine::default()
    }
}

/// A proration line: `amount` for `part` of the full period of a
/// `full_amount` fee (a credit when `kind` says so).
pub fn prorated(
    id: &str,
    kind: InvoiceLineKind,
    plan_version: &str,
    (amount, full_amount): (&str, &str),
    part: (&str, &str),
    full: (&str, &str),
) -> InvoiceLine {
    InvoiceLine {
        id: id.to_owned(),
        kind: kind as i32,
        period: range(&day(part.0), &day(part.1)),
        amount: usd(amount),
        detail: Some(invoice_line::Detail::Proration(ProrationLineDetail {
            plan_version_id: plan_version.to_owned(),
            charge_key: "base".to_owned(),
            full_period: range(&day(full.0), &day(full.1)),
            prorated_period: range(&day(part.0), &day(part.1)),
            period_amount: usd(full_amount),
            ..ProrationLineDetail::default()
        })),
        ..InvoiceLine::default()
    }
}

pub fn finalized(
    id: &str,
    customer: &str,
    subscription: &str,
    lines: Vec<InvoiceLine>,
    at_day: &str,
) -> InvoiceEvent {
    InvoiceEvent {
        event_id: format!("ievt_{id}"),
        invoice_id: id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: Some(timestamp(at(&day(at_day)))),
        invoice: Some(Invoice {
            id: id.to_owned(),
            customer_id: customer.to_owned(),
            subscription_id: subscription.to_owned(),
            currency: "USD".to_owned(),
            lines,
            ..Invoice::default()
        }),
        kind: Some(invoice_event::Kind::Finalized(
            invoice_event::Finalized::default(),
        )),
        ..InvoiceEvent::default()
    }
}

/// A snapshot: `version`, `status`, starting `start`; change the rest with `edit`.
pub fn snapshot(
    subscription: &str,
    customer: &str,
    version: u64,
    status: SubscriptionStatus,
    start: &str,
    edit: impl FnOnce(&mut Subscription),
) -> SubscriptionEvent {
    let mut snapshot = Subscription {
        id: subscription.to_owned(),
        customer_id: customer.to_owned(),
        status: status as i32,
        currency: "USD".to_owned(),
        start_at: Some(timestamp(at(&day(start)))),
        version,
        ..Subscription::default()
    };
    edit(&mut snapshot);
    SubscriptionEvent {
        subscription_id: subscription.to_owned(),
        customer_id: customer.to_owned(),
        version,
        effective_at: snapshot.start_at,
        occurred_at: snapshot.start_at,
        subscription: Some(snapshot),
        kind: Some(subscription_event::Kind::StateChanged(
            subscription_event::StateChanged::default(),
        )),
    }
}

pub fn instant(text: &str) -> Option<prost_types::Timestamp> {
    Some(timestamp(at(&day(text))))
}

/// Books with the analytics consumer and service beside the ledger's.
pub struct Analytics {
    pub books: Books,
    pub subscriptions: SubscriptionEventsHandler,
    pub api: AnalyticsApi,
}

impl Analytics {
    pub async fn open() -> Self {
        let books = Books::open("2026-01-01T00:00:00Z").await;
        let clock: SharedClock = books.clock.clone();
        let ledger = Arc::new(Ledger {
            pool: books.database.pool.clone(),
            clock: Arc::clone(&clock),
            policy: RecognitionPolicy::ByDay,
        });
        Self {
            subscriptions: SubscriptionEventsHandler::new(ledger, "finance-subscription-events"),
            api: AnalyticsApi::new(books.database.pool.clone(), clock),
            books,
        }
    }

    pub async fn invoice(&self, event: &InvoiceEvent) -> bool {
        self.books
            .invoices
            .apply(&event.event_id, event)
            .await
            .unwrap()
    }

    pub async fn snapshot(&self, message_id: &str, event: &SubscriptionEvent) -> bool {
        self.subscriptions.apply(message_id, event).await.unwrap()
    }

    pub async fn mrr(&self, as_of: Option<&str>) -> GetMrrResponse {
        self.api
            .get_mrr(tonic::Request::new(GetMrrRequest {
                currency: "USD".into(),
                as_of: as_of.map(|text| timestamp(at(&day(text)))),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn movements(&self, from: &str, to: &str) -> ListMrrMovementsResponse {
        self.api
            .list_mrr_movements(tonic::Request::new(ListMrrMovementsRequest {
                currency: "USD".into(),
                range: range(&day(from), &day(to)),
            }))
            .await
            .unwrap()
            .into_inner()
    }
}

pub fn amount(money: Option<&Money>) -> Decimal {
    money.unwrap().amount.parse().unwrap()
}

/// `(customer, day, kind, change)` of each movement.
pub fn rows(response: &ListMrrMovementsResponse) -> Vec<(String, String, MovementKind, Decimal)> {
    response
        .movements
        .iter()
        .map(|movement| {
            let occurred = tally_proto::convert::instant(movement.occurred_at.as_ref()).unwrap();
            (
                movement.customer_id.clone(),
                occurred.format("%m-%d").to_string(),
                MovementKind::try_from(movement.kind).unwrap(),
                amount(movement.change.as_ref()),
            )
        })
        .collect()
}

pub fn row(
    customer: &str,
    on: &str,
    kind: MovementKind,
    change: Decimal,
) -> (String, String, MovementKind, Decimal) {
    (customer.to_owned(), on.to_owned(), kind, change)
}
