//! The end-to-end test: the four services as separate `tally serve`
//! processes on one PostgreSQL database, the real Pub/Sub emulator as the bus,
//! gRPC between them, a fake Stripe, and a month of billing for four
//! customers driven from outside — usage over gRPC and over Pub/Sub with
//! duplicates and a late event, a mid-period upgrade, prepaid credits, a
//! declined card paid by dunning — to the exact invoice totals in cents, the
//! matching Stripe invoice items, a signed `invoice.paid` webhook, a partial
//! refund's credit note, credit notes on an open and a paid invoice mirrored
//! to Stripe and a clean reconciliation with Stripe.
//!
//! Nothing here sleeps a fixed time: every wait polls for its condition
//! until a deadline. A missing PostgreSQL or Pub/Sub emulator fails the test
//! with what to install.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Scenario tests read as a story (a month of billing, a table of cents): length is fine here.
#![allow(clippy::too_many_lines)]
// Complete Stripe objects are large `json!` literals.
#![recursion_limit = "256"]

mod audit;
mod books;
mod cluster;
mod crash;
mod stripe;
mod stripe_objects;
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};
use tally_bus::{Bus as _, PubSubBus, topics};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::EventOutcome;
use tally_proto::invoicing::invoice_line::Detail;
use tally_proto::invoicing::{
    ChangePlanRequest, ChangeTiming, CollectionMode, CreateCreditNoteRequest, CreditGrantKind,
    CreditNote, CreditNoteLine, CreditNoteLines, CreditNoteReason, GetSubscriptionRequest,
    GrantCreditRequest, Invoice, InvoiceStatus, ListCreditNotesRequest, ProrationPolicy,
    SubscriptionStatus, create_credit_note_request,
};
use tally_proto::payments::{ListPaymentsRequest, RefundReason, RefundRequest};

use crate::cluster::Cluster;
use crate::stripe::FakeStripe;
use crate::support::{Clients, Waiting, amount, at, call, cents, event, post_webhook, usd};

/// The price book `tally dev --demo` loads: the test bills the demo's file.
const CATALOG: &str = include_str!("../../demo/catalog.yaml");

// What each customer's two invoices come to, worked out by hand from the
// price book and the usage below.
//
// acme — Inference Pro, pays by card, 100.00 of prepaid credits on the 10th
//   1 Nov   platform fee in advance                                   499.00
//   1 Dec   platform fee for December                                 499.00
//           GPU h100 3,600 s × 0.00125                                  4.50
//           GPU a100 7,200 s × 0.00080                                  5.76
//           GPU l4 10,000 s × 0.00022                                   2.20
//           images sdxl 5 × 0.004                                       0.02
//           tokens 13,000,000 (12,000,000 on time, a duplicate not
//             counted, 1,000,000 late): 10,000,000 × 0.0000021 = 21.00
//             + 3,000,000 × 0.0000015 = 4.50                           25.50
//           requests 3, 100,000 included                                0.00
//           subtotal                                                  536.98
//           credits applied                                          −100.00
//           total                                                     436.98
//
// globex — Inference Starter, upgraded to Pro on the 16th (15 of 30 days
// left, prorated by the second), pays by card
//   1 Nov   Starter platform fee in advance                            49.00
//   1 Dec   Starter fee back for 16 Nov – 1 Dec, 49.00 × 0.5          −24.50
//           Pro fee for 16 Nov – 1 Dec, 499.00 × 0.5                  249.50
//           Starter tokens 2,000,000 × 0.0000025                        5.00
//           Pro tokens (tiers start again) 4,000,000 × 0.0000021        8.40
//           Pro GPU h100 1,800 s × 0.00125                              2.25
//           Pro platform fee for December                             499.00
//           total                                                     739.65
//
// initech — Inference Pro, invoices sent (net 30), pays by transfer
//   1 Nov   platform fee in advance                                   499.00
//   1 Dec   platform fee for December                                 499.00
//           images sdxl 250 × 0.004                                     1.00
//           images flux_pro 20 × 0.03                                   0.60
//           GPU l4 36,000 s × 0.00022                                   7.92
//           tokens 500,000 × 0.0000021                                  1.05
//           total                                                     509.57
//
// hooli — Inference Starter, pays by card, but the card declines the first
// charge (insufficient funds): past due from the 10th, paid when dunning
// retries three days later (run when the clock reaches the 16th); no usage
//   1 Nov   Starter platform fee in advance                            49.00
//   1 Dec   Starter platform fee for December                          49.00
//           tokens 0                                                    0.00
//           total                                                      49.00
const ACME: [&str; 2] = ["499.00", "436.98"];
const GLOBEX: [&str; 2] = ["49.00", "739.65"];
const INITECH: [&str; 2] = ["499.00", "509.57"];
const HOOLI: [&str; 2] = ["49.00", "49.00"];

/// Whose usage a row of the tables below is.
#[derive(Debug, Clone, Copy)]
enum Who {
    Acme,
    Globex,
    Initech,
    Hooli,
}

/// `times` events of `meter` at `at` (ids `<id>-1`, `<id>-2`, … when more than one).
struct Usage {
    id: &'static str,
    who: Who,
    meter: &'static str,
    at: &'static str,
    properties: &'static [(&'static str, &'static str)],
    times: usize,
}

const fn usage(
    id: &'static str,
    who: Who,
    meter: &'static str,
    at: &'static str,
    properties: &'static [(&'static str, &'static str)],
    times: usize,
) -> Usage {
    Usage {
        id,
        who,
        meter,
        at,
        properties,
        times,
    }
}

/// Sent over gRPC in one batch during the first half of November.
#[rustfmt::skip]
const EARLY_GRPC: &[Usage] = &[
    usage("a-gpu-1", Who::Acme, "gpu_seconds", "2026-11-03T10:00:00Z", &[("seconds", "3600"), ("gpu_type", "h100")], 1),
    usage("a-gpu-2", Who::Acme, "gpu_seconds", "2026-11-04T10:00:00Z", &[("seconds", "7200"), ("gpu_type", "a100")], 1),
    usage("a-gpu-3", Who::Acme, "gpu_seconds", "2026-11-05T10:00:00Z", &[("seconds", "10000"), ("gpu_type", "l4")], 1),
    usage("a-img", Who::Acme, "images", "2026-11-07T09:00:00Z", &[("model", "sdxl")], 5),
    usage("a-req", Who::Acme, "api_requests", "2026-11-07T09:30:00Z", &[], 3),
    usage("g-tok-1", Who::Globex, "llm_tokens", "2026-11-05T12:00:00Z", &[("tokens", "2000000")], 1),
    usage("i-gpu-1", Who::Initech, "gpu_seconds", "2026-11-06T08:00:00Z", &[("seconds", "36000"), ("gpu_type", "l4")], 1),
    usage("i-img-sdxl", Who::Initech, "images", "2026-11-08T09:00:00Z", &[("model", "sdxl")], 250),
    usage("i-img-flux", Who::Initech, "images", "2026-11-08T10:00:00Z", &[("model", "flux_pro")], 20),
];

/// Published on the `usage-events` topic; `a-tok-2` twice, as an
/// at-least-once publisher may.
#[rustfmt::skip]
const EARLY_PUBSUB: &[Usage] = &[
    usage("a-tok-1", Who::Acme, "llm_tokens", "2026-11-06T10:00:00Z", &[("tokens", "4000000")], 1),
    usage("a-tok-2", Who::Acme, "llm_tokens", "2026-11-07T10:00:00Z", &[("tokens", "4000000")], 1),
    usage("a-tok-3", Who::Acme, "llm_tokens", "2026-11-08T10:00:00Z", &[("tokens", "4000000")], 1),
    usage("a-tok-2", Who::Acme, "llm_tokens", "2026-11-07T10:00:00Z", &[("tokens", "4000000")], 1),
    usage("i-tok-1", Who::Initech, "llm_tokens", "2026-11-09T10:00:00Z", &[("tokens", "500000")], 1),
];

/// After Globex's upgrade: one event over gRPC, one on Pub/Sub.
#[rustfmt::skip]
const AFTER_UPGRADE_GRPC: &[Usage] = &[usage(
    "g-gpu-1", Who::Globex, "gpu_seconds", "2026-11-21T08:00:00Z", &[("seconds", "1800"), ("gpu_type", "h100")], 1,
)];
#[rustfmt::skip]
const AFTER_UPGRADE_PUBSUB: &[Usage] = &[usage(
    "g-tok-2", Who::Globex, "llm_tokens", "2026-11-20T10:00:00Z", &[("tokens", "4000000")], 1,
)];

/// Arrives on 1 December, after the period's end, within the grace period.
#[rustfmt::skip]
const LATE: &[Usage] = &[usage(
    "a-tok-late", Who::Acme, "llm_tokens", "2026-11-30T23:00:00Z", &[("tokens", "1000000")], 1,
)];

/// The running system and the ids the month is about.
struct Month {
    _database: tally_testkit::postgres::TestDatabase,
    cluster: Cluster,
    stripe: FakeStripe,
    api: Clients,
    publisher: PubSubBus,
    pro: String,
    customers: [String; 4],
    subscriptions: [String; 4],
}

impl Month {
    /// Everything started, the catalog applied, four customers subscribed
    /// from 1 November.
    async fn start() -> Self {
        let database = tally_testkit::postgres::database().await;
        let emulator = tally_testkit::pubsub::emulator_host().await;
        let stripe = FakeStripe::start(at(cluster::START).timestamp()).await;
        let cluster = Cluster::start(&database.url, &emulator, &stripe.uri()).await;
        let mut api = Clients::new(&cluster).await;
        let publisher = PubSubBus::connect(
            tally_testkit::pubsub::TEST_PROJECT,
            Some(&cluster.emulator_host),
            &cluster.name_prefix,
        )
        .await
        .unwrap();

        // The price book, applied with the CLI against rating.
        let rating = cluster.address("rating");
        cluster.cli(
            &["catalog", "apply", "-f", "-", "--address", rating],
            Some(CATALOG),
        );
        let shown = cluster.cli(
            &["catalog", "show", "--output", "json", "--address", rating],
            None,
        );
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let version_of = |code: &str| {
            shown["plans"]
                .as_array()
                .unwrap()
                .iter()
                .find(|plan| plan["code"] == code)
                .and_then(|plan| plan["latestPublishedVersionId"].as_str())
                .unwrap()
                .to_owned()
        };
        let (pro, starter) = (version_of("inference_pro"), version_of("inference_starter"));

        let customers = [
            api.customer("acme", "Acme AI", CollectionMode::ChargeAutomatically)
                .await,
            api.customer("globex", "Globex Labs", CollectionMode::ChargeAutomatically)
                .await,
            api.customer("initech", "Initech", CollectionMode::SendInvoice)
                .await,
            api.customer("hooli", "Hooli Vision", CollectionMode::ChargeAutomatically)
                .await,
        ];
        stripe.decline_next_payments(&customers[Who::Hooli as usize], 1);
        let subscriptions = [
            api.subscribe(&customers[0], &pro).await,
            api.subscribe(&customers[1], &starter).await,
            api.subscribe(&customers[2], &pro).await,
            api.subscribe(&customers[3], &starter).await,
        ];
        Self {
            _database: database,
            cluster,
            stripe,
            api,
            publisher,
            pro,
            customers,
            subscriptions,
        }
    }

    fn customer(&self, who: Who) -> &str {
        &self.customers[who as usize]
    }

    fn subscription(&self, who: Who) -> &str {
        &self.subscriptions[who as usize]
    }

    /// Every service's clock, and Stripe's, to `instant`.
    fn set_clock(&self, instant: &str) {
        self.cluster.set_clock(instant);
        self.stripe.set_now(at(instant).timestamp());
    }

    /// Each customer with the status its invoices end in: paid by card, or
    /// finalized (sent, awaiting a transfer).
    fn by_status(&self) -> Vec<(&'static str, String, InvoiceStatus)> {
        [
            ("acme", Who::Acme, InvoiceStatus::Paid),
            ("globex", Who::Globex, InvoiceStatus::Paid),
            ("initech", Who::Initech, InvoiceStatus::Finalized),
            ("hooli", Who::Hooli, InvoiceStatus::Paid),
        ]
        .into_iter()
        .map(|(name, who, status)| (name, self.customer(who).to_owned(), status))
        .collect()
    }

    /// Waits until the subscription's status is `status`.
    async fn wait_for_subscription(&mut self, who: Who, status: SubscriptionStatus) {
        let waiting = Waiting::new(&self.cluster, format!("{who:?}'s subscription {status:?}"));
        loop {
            let request = GetSubscriptionRequest {
                subscription_id: self.subscription(who).to_owned(),
            };
            let found = self
                .api
                .subscriptions
                .get_subscription(call(&self.api.key, request))
                .await
                .unwrap()
                .into_inner()
                .subscription
                .unwrap();
            if found.status == status as i32 {
                return;
            }
            waiting
                .tick(SubscriptionStatus::try_from(found.status))
                .await;
        }
    }

    fn events(&self, rows: &[Usage]) -> Vec<UsageEvent> {
        let mut events = Vec::new();
        for row in rows {
            for n in 1..=row.times {
                let id = if row.times == 1 {
                    row.id.to_owned()
                } else {
                    format!("{}-{n}", row.id)
                };
                events.push(event(
                    &id,
                    self.customer(row.who),
                    row.meter,
                    row.at,
                    row.properties,
                ));
            }
        }
        events
    }

    async fn send_grpc(&mut self, rows: &[Usage]) {
        let events = self.events(rows);
        let count = events.len();
        let outcomes = self.api.ingest(events).await;
        assert_eq!(outcomes, vec![EventOutcome::Accepted; count]);
    }

    async fn publish(&self, rows: &[Usage]) {
        for event in self.events(rows) {
            self.publisher
                .publish(topics::USAGE_EVENTS, support::pubsub_message(&event))
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_billing_across_four_processes() {
    let started = Instant::now();
    let mut month = Month::start().await;

    // The 10th: the opening invoices are past their grace period, finalized
    // and collected (the card customers' are paid). Credits granted now go
    // to December's invoice.
    // Hooli's card declines: its invoice stays open and it is past due.
    month.set_clock("2026-11-10T00:00:00Z");
    let mut by_status = month.by_status();
    by_status[3].2 = InvoiceStatus::Finalized;
    month
        .api
        .settled_invoices(&month.cluster, &by_status, 1)
        .await;
    month
        .wait_for_subscription(Who::Hooli, SubscriptionStatus::PastDue)
        .await;
    let grant = GrantCreditRequest {
        idempotency_key: "e2e-acme-prepaid".into(),
        customer_id: month.customer(Who::Acme).to_owned(),
        kind: CreditGrantKind::Prepaid as i32,
        amount: usd("100.00"),
        description: "prepaid".into(),
        ..GrantCreditRequest::default()
    };
    month
        .api
        .credits
        .grant_credit(call(&month.api.key, grant))
        .await
        .unwrap();

    // Usage over gRPC and on Pub/Sub; a re-sent event is a duplicate.
    month.send_grpc(EARLY_GRPC).await;
    let again = month.events(&EARLY_GRPC[..1]);
    assert_eq!(month.api.ingest(again).await, vec![EventOutcome::Duplicate]);
    month.publish(EARLY_PUBSUB).await;

    // The 16th: Globex upgrades to Pro at once, prorated by the second.
    month.set_clock("2026-11-16T00:00:00Z");
    let upgrade = ChangePlanRequest {
        idempotency_key: "e2e-globex-upgrade".into(),
        subscription_id: month.subscription(Who::Globex).to_owned(),
        plan_version_id: month.pro.clone(),
        timing: ChangeTiming::Immediately as i32,
        proration_policy: ProrationPolicy::Prorate as i32,
        ..ChangePlanRequest::default()
    };
    month
        .api
        .subscriptions
        .change_plan(call(&month.api.key, upgrade))
        .await
        .unwrap();
    // Dunning's retry (due on the 13th) runs as the clock passes it: paid.
    let hooli = [month.by_status().remove(3)];
    month.api.settled_invoices(&month.cluster, &hooli, 1).await;
    month
        .wait_for_subscription(Who::Hooli, SubscriptionStatus::Active)
        .await;
    month.set_clock("2026-11-30T12:00:00Z");
    month.send_grpc(AFTER_UPGRADE_GRPC).await;
    month.publish(AFTER_UPGRADE_PUBSUB).await;

    // Everything sent so far is rated before the month ends (it travels
    // ingest → Pub/Sub → rating; the late event is still to come).
    for (who, total) in [
        (Who::Acme, "36.48"),
        (Who::Globex, "15.65"),
        (Who::Initech, "10.57"),
    ] {
        let subscription = month.subscription(who).to_owned();
        month
            .api
            .wait_for_november_usage(&month.cluster, &subscription, total)
            .await;
    }

    // 1 December, 01:00: the bill run drafts December's invoices; their grace
    // period (24 h) is still running when the late event arrives.
    month.set_clock("2026-12-01T01:00:00Z");
    month.send_grpc(LATE).await;
    let acme_subscription = month.subscription(Who::Acme).to_owned();
    month
        .api
        .wait_for_november_usage(&month.cluster, &acme_subscription, "37.98")
        .await;

    // 2 December: grace over, the bill run finalizes; payments mirrors each
    // invoice to Stripe and charges the card customers.
    month.set_clock("2026-12-02T01:00:00Z");
    let by_status = month.by_status();
    let invoices = month
        .api
        .settled_invoices(&month.cluster, &by_status, 2)
        .await;
    check_totals_and_stripe(&month.stripe, &invoices);
    check_explanations(&invoices);

    let december = invoices["initech"][1].clone();
    pay_by_transfer_and_refund(&mut month, &december).await;
    let november = invoices["initech"][0].clone();
    credit_notes_in_stripe(&mut month, &november, &december).await;
    reconcile(&month);
    one_balance_for_credit_notes_and_refunds(&mut month, &december).await;
    books::check_books(&month.cluster, &month._database.pool).await;
    eprintln!("end-to-end test took {:?}", started.elapsed());
}

/// The exact totals, and what Stripe was sent for each invoice: one item per
/// non-zero line with its amount in cents, summing to the amount due, every
/// call with an idempotency key.
fn check_totals_and_stripe(stripe: &FakeStripe, invoices: &BTreeMap<&str, Vec<Invoice>>) {
    for (name, expected) in [
        ("acme", ACME),
        ("globex", GLOBEX),
        ("initech", INITECH),
        ("hooli", HOOLI),
    ] {
        let invoices = &invoices[name];
        let totals: Vec<String> = invoices
            .iter()
            .map(|invoice| amount(invoice.total.as_ref()))
            .collect();
        assert_eq!(totals, expected, "{name}: invoice totals");
        for invoice in invoices {
            let due = cents(&amount(invoice.total.as_ref()));
            let lines: i64 = invoice
                .lines
                .iter()
                .map(|line| cents(&amount(line.amount.as_ref())))
                .sum();
            assert_eq!(lines, due, "{name}: lines add up to the total");
            let mirrored = stripe
                .invoice_of(&invoice.id)
                .unwrap_or_else(|| panic!("{name}: no Stripe invoice for {}", invoice.id));
            assert_eq!(mirrored["amount_due"], due, "{name}: Stripe's amount due");
            let items = stripe.items_of(mirrored["id"].as_str().unwrap());
            assert_eq!(
                items.iter().map(|item| item.amount).sum::<i64>(),
                due,
                "{name}: Stripe items"
            );
            for item in &items {
                let line = invoice
                    .lines
                    .iter()
                    .find(|line| line.id == item.tally_line_id)
                    .unwrap_or_else(|| {
                        panic!("{name}: item for unknown line {}", item.tally_line_id)
                    });
                assert_eq!(
                    item.amount,
                    cents(&amount(line.amount.as_ref())),
                    "{name}: {}",
                    line.description
                );
            }
        }
    }
    assert_eq!(
        stripe.posts_without_key(),
        Vec::<String>::new(),
        "every Stripe call has an idempotency key"
    );
    assert!(stripe.keyed_posts() > 0);
}

/// Lines explain their amounts: Acme's credits, Globex's proration (Starter's
/// unused half month credited, Pro's charged, both for 16 November → 1
/// December).
fn check_explanations(invoices: &BTreeMap<&str, Vec<Invoice>>) {
    let acme = &invoices["acme"][1];
    assert_eq!(amount(acme.subtotal.as_ref()), "536.98");
    assert_eq!(amount(acme.credits_applied.as_ref()), "-100.00");

    let mut prorations: Vec<(String, i64, i64, String)> = invoices["globex"][1]
        .lines
        .iter()
        .filter_map(|line| match &line.detail {
            Some(Detail::Proration(detail)) => {
                let range = detail.prorated_period.as_ref().unwrap();
                Some((
                    amount(line.amount.as_ref()),
                    range.start_time.unwrap().seconds,
                    range.end_time.unwrap().seconds,
                    detail.factor.as_ref().unwrap().value.clone(),
                ))
            }
            _ => None,
        })
        .collect();
    prorations.sort();
    let (from, to) = (
        at("2026-11-16T00:00:00Z").timestamp(),
        at("2026-12-01T00:00:00Z").timestamp(),
    );
    assert_eq!(
        prorations,
        vec![
            ("-24.50".to_owned(), from, to, "0.5".to_owned()),
            ("249.50".to_owned(), from, to, "0.5".to_owned()),
        ],
        "globex: proration lines and their explanation"
    );
}

/// Initech pays December's invoice by bank transfer: Stripe marks it paid and
/// posts a signed `invoice.paid` to payments' webhook endpoint; invoicing
/// sees it paid. Then a partial refund through payments becomes a credit
/// note in invoicing.
async fn pay_by_transfer_and_refund(month: &mut Month, december: &Invoice) {
    let (cluster, stripe) = (&month.cluster, &month.stripe);
    let stripe_invoice = stripe.invoice_of(&december.id).unwrap();
    let stripe_invoice_id = stripe_invoice["id"].as_str().unwrap().to_owned();
    let paid = stripe.pay_out_of_band(&stripe_invoice_id);
    let now = at("2026-12-02T01:00:00Z").timestamp();
    let payload = stripe::event("evt_1E2eInvoicePaid", "invoice.paid", now, paid).to_string();
    let signature = stripe::signature(&payload, now);
    let delivered = post_webhook(&cluster.webhook_url, &payload, &signature).await;
    assert_eq!(delivered.0, 200, "webhook answer: {}", delivered.1);
    // Stripe delivers at least once: a redelivery changes nothing.
    let again = post_webhook(&cluster.webhook_url, &payload, &signature).await;
    assert_eq!(again, (200, "duplicate".to_owned()));
    // A body that does not match its signature is refused.
    let forged = payload.replace("evt_1E2eInvoicePaid", "evt_1E2eForged");
    let refused = post_webhook(&cluster.webhook_url, &forged, &signature).await;
    assert_eq!(
        refused.0, 400,
        "a forged delivery is refused: {}",
        refused.1
    );

    let waiting = Waiting::new(cluster, "the webhook marks the invoice paid");
    let initech = month.customers[Who::Initech as usize].clone();
    let paid_invoice = loop {
        let invoices = month.api.invoices_of(&initech).await;
        let current = invoices
            .into_iter()
            .find(|invoice| invoice.id == december.id)
            .unwrap();
        if current.status == InvoiceStatus::Paid as i32 {
            break current;
        }
        waiting.tick(current.status).await;
    };
    assert_eq!(amount(paid_invoice.amount_paid.as_ref()), INITECH[1]);

    let key = month.api.key.clone();
    let payments = ListPaymentsRequest {
        invoice_id: december.id.clone(),
        ..ListPaymentsRequest::default()
    };
    let payment = month
        .api
        .payments
        .list_payments(call(&key, payments))
        .await
        .unwrap()
        .into_inner()
        .payments;
    let refund = RefundRequest {
        idempotency_key: "e2e-initech-refund".into(),
        payment_id: payment
            .first()
            .expect("a payment of the paid invoice")
            .id
            .clone(),
        amount: usd("100.00"),
        reason: RefundReason::RequestedByCustomer as i32,
        memo: "goodwill".into(),
    };
    let refund = month
        .api
        .payments
        .refund(call(&key, refund))
        .await
        .unwrap()
        .into_inner();
    let refund_id = refund.refund.unwrap().id;

    let waiting = Waiting::new(cluster, "the refund's credit note");
    let note = loop {
        let request = ListCreditNotesRequest {
            invoice_id: december.id.clone(),
            ..ListCreditNotesRequest::default()
        };
        let notes = month
            .api
            .invoices
            .list_credit_notes(call(&key, request))
            .await
            .unwrap();
        if let Some(note) = notes.into_inner().credit_notes.into_iter().next() {
            break note;
        }
        waiting.tick("none").await;
    };
    assert_eq!(amount(note.total.as_ref()), "100.00");
    assert_eq!(note.reason, CreditNoteReason::Refund as i32);
    assert_eq!(note.refund_id, refund_id);
    let charge = stripe.charge_of(&stripe_invoice_id).unwrap();
    assert_eq!(charge["amount_refunded"], 10_000, "Stripe refunded 100.00");

    // Stripe announces the refund too (`charge.refunded`): payments reads
    // the charge with its refunds and its invoice (through the invoice
    // payment of its PaymentIntent) and finds the refund already recorded.
    let charge_id = charge["id"].as_str().unwrap();
    let object = stripe.charge_in_event(charge_id).unwrap();
    let mut event = stripe::event("evt_1E2eChargeRefunded", "charge.refunded", now, object);
    event["data"]["previous_attributes"] = json!({"amount_refunded": 0});
    let payload = event.to_string();
    let signature = stripe::signature(&payload, now);
    let delivered = post_webhook(&cluster.webhook_url, &payload, &signature).await;
    assert_eq!(delivered, (200, "no change".to_owned()));
    audit::check_timeline(cluster, &december.id, &payment[0].id);
}

/// Credit notes issued in invoicing now become Stripe credit notes
/// (payments mirrors them so Stripe never asks for more than Tally):
/// Initech's November invoice is still open (sent, awaiting a transfer), so
/// its note lowers what Stripe's invoice asks for; December's is paid, so a
/// goodwill note is credited outside Stripe (`out_of_band_amount`, the
/// credit kept in invoicing's wallet). The refund's credit note on December
/// is not mirrored: payments caused it, and Stripe has the refund.
async fn credit_notes_in_stripe(month: &mut Month, november: &Invoice, december: &Invoice) {
    let stripe_november = month.stripe.invoice_of(&november.id).unwrap();
    let stripe_november_id = stripe_november["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            stripe_november["status"].clone(),
            stripe_november["amount_due"].clone()
        ),
        (json!("open"), json!(49_900)),
        "initech's November invoice is open in Stripe"
    );
    let note = issue_credit_note(
        month,
        november,
        "e2e-initech-november-credit",
        CreditNoteReason::OrderChange,
        false,
    )
    .await;
    let mirrored = wait_for_stripe_credit_note(month, &stripe_november_id, &note).await;
    assert_eq!(
        (
            mirrored["amount"].clone(),
            mirrored["type"].clone(),
            mirrored["reason"].clone(),
            mirrored["out_of_band_amount"].clone()
        ),
        (
            json!(4_900),
            json!("pre_payment"),
            json!("order_change"),
            Value::Null
        )
    );
    let lowered = month.stripe.invoice_of(&november.id).unwrap();
    assert_eq!(
        (lowered["status"].clone(), lowered["amount_due"].clone()),
        (json!("open"), json!(45_000)),
        "Stripe asks for 450.00 now"
    );

    let stripe_december = month.stripe.invoice_of(&december.id).unwrap();
    let stripe_december_id = stripe_december["id"].as_str().unwrap().to_owned();
    let goodwill = issue_credit_note(
        month,
        december,
        "e2e-initech-december-goodwill",
        CreditNoteReason::ProductUnsatisfactory,
        true,
    )
    .await;
    let mirrored = wait_for_stripe_credit_note(month, &stripe_december_id, &goodwill).await;
    assert_eq!(
        (
            mirrored["amount"].clone(),
            mirrored["type"].clone(),
            mirrored["out_of_band_amount"].clone(),
            mirrored["refunds"].clone()
        ),
        (json!(4_900), json!("post_payment"), json!(4_900), json!([])),
        "credited outside Stripe: no Stripe refund, no Stripe balance"
    );
    let paid = month.stripe.invoice_of(&december.id).unwrap();
    assert_eq!(
        (paid["status"].clone(), paid["amount_due"].clone()),
        (json!("paid"), stripe_december["amount_due"].clone())
    );
    // Invoicing's events of one customer reach payments in order, so the
    // refund's credit note (issued before the goodwill one) has been handled
    // by now: the goodwill note is December's only Stripe credit note.
    let ids: Vec<Value> = month
        .stripe
        .credit_notes_of(&stripe_december_id)
        .iter()
        .map(|note| note["metadata"]["tally_credit_note_id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!(goodwill.id)],
        "no Stripe credit note for the refund's credit note"
    );
}

/// Credit notes (invoicing) and refunds (payments, which reserves each one in
/// invoicing before Stripe) draw on one balance per invoice (docs/architecture.md, "One balance per
/// invoice"). December billed 509.57, paid; 100.00 refunded and 49.00 credited so
/// far leave 360.57. A goodwill note takes 300.00; then a note and a refund
/// of 40.00 each, sent at the same instant, cannot both pass; a refund one
/// cent above what remains is refused with the figures; what remains is
/// refunded, and the invoice ends credited exactly its total.
async fn one_balance_for_credit_notes_and_refunds(month: &mut Month, december: &Invoice) {
    let key = month.api.key.clone();
    let note = |idempotency_key: &str, amount: &str| CreateCreditNoteRequest {
        idempotency_key: idempotency_key.into(),
        invoice_id: december.id.clone(),
        reason: CreditNoteReason::ProductUnsatisfactory as i32,
        memo: "goodwill".into(),
        amount: Some(create_credit_note_request::Amount::Partial(
            CreditNoteLines {
                lines: vec![CreditNoteLine {
                    invoice_line_id: String::new(),
                    description: "Goodwill".into(),
                    amount: usd(amount),
                }],
            },
        )),
        credit_to_balance: false,
        refund_amount: None,
    };
    let payment_id = month
        .api
        .payments
        .list_payments(call(
            &key,
            ListPaymentsRequest {
                invoice_id: december.id.clone(),
                ..ListPaymentsRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .payments[0]
        .id
        .clone();
    let refund = |idempotency_key: &str, amount: &str| RefundRequest {
        idempotency_key: idempotency_key.into(),
        payment_id: payment_id.clone(),
        amount: usd(amount),
        reason: RefundReason::RequestedByCustomer as i32,
        memo: "one balance".into(),
    };
    month
        .api
        .invoices
        .create_credit_note(call(&key, note("e2e-balance-note-300", "300.00")))
        .await
        .unwrap();

    let (mut invoices, mut payments) = (month.api.invoices.clone(), month.api.payments.clone());
    let racing_note = tokio::spawn({
        let request = call(&key, note("e2e-balance-note-40", "40.00"));
        async move { invoices.create_credit_note(request).await.map(|_| ()) }
    });
    let racing_refund = tokio::spawn({
        let request = call(&key, refund("e2e-balance-refund-40", "40.00"));
        async move { payments.refund(request).await.map(|_| ()) }
    });
    let (racing_note, racing_refund) = (racing_note.await.unwrap(), racing_refund.await.unwrap());
    assert_eq!(
        usize::from(racing_note.is_ok()) + usize::from(racing_refund.is_ok()),
        1,
        "exactly one of 40.00 + 40.00 fits in 60.57: {racing_note:?} {racing_refund:?}"
    );
    let refused = racing_note.err().or(racing_refund.err()).unwrap();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("creditable"),
        "{}",
        refused.message()
    );

    let over = month
        .api
        .payments
        .refund(call(&key, refund("e2e-balance-refund-over", "20.58")))
        .await
        .unwrap_err();
    assert_eq!(over.code(), tonic::Code::FailedPrecondition);
    assert!(
        over.message().contains(&format!(
            "of 20.58 USD exceeds the 20.57 USD still creditable on invoice {}",
            december.id
        )),
        "{}",
        over.message()
    );
    month
        .api
        .payments
        .refund(call(&key, refund("e2e-balance-refund-rest", "20.57")))
        .await
        .unwrap();

    // Invoicing turns each refund's reservation into its credit note.
    let waiting = Waiting::new(&month.cluster, "the refunds' credit notes");
    loop {
        let invoices = month.api.invoices_of(&december.customer_id).await;
        let current = invoices
            .into_iter()
            .find(|invoice| invoice.id == december.id)
            .unwrap();
        let credited = amount(current.amount_credited.as_ref());
        if credited == "509.57" {
            break;
        }
        waiting.tick(credited).await;
    }
    let payment = month
        .api
        .payments
        .get_payment(call(
            &key,
            tally_proto::payments::GetPaymentRequest {
                payment_id: payment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    let refunded = if racing_refund_passed(&payment) {
        "160.57"
    } else {
        "120.57"
    };
    assert_eq!(amount(payment.amount_refunded.as_ref()), refunded);
}

/// Whether the racing refund of 40.00 is among the payment's succeeded refunds.
fn racing_refund_passed(payment: &tally_proto::payments::Payment) -> bool {
    payment.refunds.iter().any(|refund| {
        amount(refund.amount.as_ref()) == "40.00"
            && refund.status == tally_proto::payments::RefundStatus::Succeeded as i32
    })
}

/// A partial credit note of 49.00 on `invoice`, issued in invoicing.
async fn issue_credit_note(
    month: &mut Month,
    invoice: &Invoice,
    idempotency_key: &str,
    reason: CreditNoteReason,
    credit_to_balance: bool,
) -> CreditNote {
    let request = CreateCreditNoteRequest {
        idempotency_key: idempotency_key.into(),
        invoice_id: invoice.id.clone(),
        reason: reason as i32,
        memo: "goodwill".into(),
        amount: Some(create_credit_note_request::Amount::Partial(
            CreditNoteLines {
                lines: vec![CreditNoteLine {
                    invoice_line_id: String::new(),
                    description: "Goodwill".into(),
                    amount: usd("49.00"),
                }],
            },
        )),
        credit_to_balance,
        refund_amount: None,
    };
    month
        .api
        .invoices
        .create_credit_note(call(&month.api.key, request))
        .await
        .unwrap()
        .into_inner()
        .credit_note
        .unwrap()
}

/// Waits until payments has made the Stripe credit note of `note`.
async fn wait_for_stripe_credit_note(
    month: &Month,
    stripe_invoice_id: &str,
    note: &CreditNote,
) -> Value {
    let waiting = Waiting::new(
        &month.cluster,
        format!("credit note {} mirrored to Stripe", note.id),
    );
    loop {
        let mirrored = month
            .stripe
            .credit_notes_of(stripe_invoice_id)
            .into_iter()
            .find(|mirrored| mirrored["metadata"]["tally_credit_note_id"] == note.id.as_str());
        if let Some(mirrored) = mirrored {
            return mirrored;
        }
        waiting.tick("not yet").await;
    }
}

/// Finance's check: Tally and Stripe agree on every invoice, charge, refund
/// and balance transaction of the month (`tally reconcile` exits 1
/// otherwise). The window must have ended: an hour later, it has.
fn reconcile(month: &Month) {
    month.set_clock("2026-12-02T02:00:00Z");
    let payments = month.cluster.address("payments");
    let window = [
        "--from",
        "2026-11-01T00:00:00Z",
        "--to",
        "2026-12-02T02:00:00Z",
    ];
    let mut args = vec!["reconcile", "--address", payments, "--output", "json"];
    args.extend(window);
    let reconciled: serde_json::Value =
        serde_json::from_str(&month.cluster.cli(&args, None)).unwrap();
    assert_eq!(
        reconciled["findings"],
        serde_json::json!([]),
        "{reconciled}"
    );
    // 8 invoices; 8 charges (Hooli's declined one among them); 1 refund; the
    // balance transactions of the 7 collected charges and of the refund.
    assert_eq!(
        reconciled["report"]["summary"]["matched"], "25",
        "{reconciled}"
    );
}
