//! Revenue analytics through the service: subscription snapshots and
//! finalized invoices applied by the consumers, MRR and its movements read
//! through `AnalyticsService`, to exact figures.
//!
//! The scenario (all USD, monthly unless said, from 1 January 2026):
//!
//! | customer | what happens | movements |
//! |---|---|---|
//! | cus_new | 50.00 a month | new 50 (1 Jan) |
//! | cus_upgrade | 30.00, upgraded on 16 Jan to 60.00 (prorated) | new 30, expansion +30 (16 Jan) |
//! | cus_downgrade | 60.00, downgraded to 30.00 at period end | new 60, contraction −30 (1 Feb) |
//! | cus_churn | 40.00, canceled at period end | new 40, churn −40 (1 Feb) |
//! | cus_react | 20.00 ended 10 Jan; a new 25.00 subscription on 20 Jan | new 20, churn −20, reactivation +25 |
//! | cus_yearly | 1,200.00 a year | new 100 (Stripe: "$1,200 counts $100 towards MRR") |
//! | cus_trial | 31.00, trial until 15 Jan | new 31 (15 Jan), nothing during the trial |
//! | cus_paused | 45.00, paused 20 Jan – 10 Feb | new 45, churn −45 (20 Jan), reactivation +45 (10 Feb) |

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::events::{InvoiceEvent, SubscriptionEvent};
use tally_proto::finance::analytics_service_server::AnalyticsService;
use tally_proto::finance::{GetMrrRequest, ListMrrMovementsRequest, MovementKind};
use tally_proto::invoicing::{InvoiceLineKind, PauseWindow, Subscription, SubscriptionStatus};

use crate::mrr_support::{
    Analytics, amount, finalized, instant, prorated, recurring, row, rows, snapshot,
};
use crate::support::{at, range, usd};

/// The scenario's snapshots, in version order per subscription.
fn snapshots() -> Vec<SubscriptionEvent> {
    use SubscriptionStatus::{Active, Canceled, Paused, Trialing};
    let none = |_: &mut Subscription| {};
    let monthly =
        |subscription, customer| snapshot(subscription, customer, 1, Active, "01-01", none);
    vec![
        monthly("sub_new", "cus_new"),
        monthly("sub_upgrade", "cus_upgrade"),
        monthly("sub_downgrade", "cus_downgrade"),
        monthly("sub_churn", "cus_churn"),
        snapshot("sub_churn", "cus_churn", 2, Active, "01-01", |s| {
            s.cancel_at = instant("02-01");
        }),
        snapshot("sub_churn", "cus_churn", 3, Canceled, "01-01", |s| {
            s.cancel_at = instant("02-01");
            s.ended_at = instant("02-01");
        }),
        monthly("sub_react1", "cus_react"),
        snapshot("sub_react1", "cus_react", 2, Canceled, "01-01", |s| {
            s.ended_at = instant("01-10");
        }),
        snapshot("sub_react2", "cus_react", 1, Active, "01-20", none),
        monthly("sub_yearly", "cus_yearly"),
        snapshot("sub_trial", "cus_trial", 1, Trialing, "01-01", |s| {
            s.trial_end_at = instant("01-15");
        }),
        snapshot("sub_trial", "cus_trial", 2, Active, "01-01", |s| {
            s.trial_end_at = instant("01-15");
        }),
        monthly("sub_paused", "cus_paused"),
        snapshot("sub_paused", "cus_paused", 2, Paused, "01-01", |s| {
            s.pauses = vec![PauseWindow {
                pause_at: instant("01-20"),
                resume_at: instant("02-10"),
            }];
        }),
        snapshot("sub_paused", "cus_paused", 3, Active, "01-01", |s| {
            s.pauses = vec![PauseWindow {
                pause_at: instant("01-20"),
                resume_at: instant("02-10"),
            }];
        }),
    ]
}

/// The scenario's finalized invoices, in time order.
fn invoices() -> Vec<InvoiceEvent> {
    use InvoiceLineKind::{ProrationCharge, ProrationCredit};
    let january = ("01-01", "02-01");
    let fee = |id: &str, plan: &str, amount: &str| vec![recurring(id, plan, amount, january)];
    vec![
        finalized(
            "inv_new1",
            "cus_new",
            "sub_new",
            fee("il_new1", "pv_std", "50.00"),
            "01-01",
        ),
        finalized(
            "inv_up1",
            "cus_upgrade",
            "sub_upgrade",
            fee("il_up1", "pv_basic", "30.00"),
            "01-01",
        ),
        finalized(
            "inv_down1",
            "cus_downgrade",
            "sub_downgrade",
            fee("il_down1", "pv_pro", "60.00"),
            "01-01",
        ),
        finalized(
            "inv_churn1",
            "cus_churn",
            "sub_churn",
            fee("il_churn1", "pv_churn", "40.00"),
            "01-01",
        ),
        finalized(
            "inv_react1",
            "cus_react",
            "sub_react1",
            fee("il_react1", "pv_small", "20.00"),
            "01-01",
        ),
        finalized(
            "inv_year1",
            "cus_yearly",
            "sub_yearly",
            vec![recurring(
                "il_year1",
                "pv_annual",
                "1200.00",
                ("01-01", "2027-01-01T00:00:00Z"),
            )],
            "01-01",
        ),
        finalized(
            "inv_pause1",
            "cus_paused",
            "sub_paused",
            fee("il_pause1", "pv_pause", "45.00"),
            "01-01",
        ),
        // The trial ends on the 15th: a stub of the anchored period.
        finalized(
            "inv_trial1",
            "cus_trial",
            "sub_trial",
            vec![prorated(
                "il_trial1",
                ProrationCharge,
                "pv_trial",
                ("17.00", "31.00"),
                ("01-15", "02-01"),
                january,
            )],
            "01-15",
        ),
        // 16 of 31 days at 60.00 instead of 30.00.
        finalized(
            "inv_up2",
            "cus_upgrade",
            "sub_upgrade",
            vec![
                prorated(
                    "il_up2c",
                    ProrationCredit,
                    "pv_basic",
                    ("-15.48", "30.00"),
                    ("01-16", "02-01"),
                    january,
                ),
                prorated(
                    "il_up2",
                    ProrationCharge,
                    "pv_pro",
                    ("30.97", "60.00"),
                    ("01-16", "02-01"),
                    january,
                ),
            ],
            "01-16",
        ),
        finalized(
            "inv_react2",
            "cus_react",
            "sub_react2",
            fee("il_react2", "pv_mid", "25.00"),
            "01-20",
        ),
        // February: the downgrade takes effect; the rest carries forward.
        finalized(
            "inv_down2",
            "cus_downgrade",
            "sub_downgrade",
            vec![recurring(
                "il_down2",
                "pv_basic",
                "30.00",
                ("02-01", "03-01"),
            )],
            "02-01",
        ),
    ]
}

pub(crate) async fn in_order() -> Analytics {
    let analytics = Analytics::open().await;
    for (index, event) in snapshots().iter().enumerate() {
        assert!(analytics.snapshot(&format!("sevt_{index}"), event).await);
    }
    for event in &invoices() {
        assert!(analytics.invoice(event).await);
    }
    analytics
}

#[tokio::test]
async fn every_movement_kind_through_the_service_to_exact_figures() {
    use MovementKind::{Churn, Contraction, Expansion, New, Reactivation};
    let analytics = in_order().await;

    let january = analytics.movements("01-01", "02-01").await;
    assert_eq!(
        rows(&january),
        vec![
            row("cus_churn", "01-01", New, dec!(40)),
            row("cus_downgrade", "01-01", New, dec!(60)),
            row("cus_new", "01-01", New, dec!(50)),
            row("cus_paused", "01-01", New, dec!(45)),
            row("cus_react", "01-01", New, dec!(20)),
            row("cus_upgrade", "01-01", New, dec!(30)),
            // Stripe: an annual 1,200.00 counts 100.00 towards MRR.
            row("cus_yearly", "01-01", New, dec!(100)),
            row("cus_react", "01-10", Churn, dec!(-20)),
            // No MRR during the trial: it counts from its end.
            row("cus_trial", "01-15", New, dec!(31)),
            // The upgrade counts from the instant it happened (the proration).
            row("cus_upgrade", "01-16", Expansion, dec!(30)),
            row("cus_paused", "01-20", Churn, dec!(-45)),
            row("cus_react", "01-20", Reactivation, dec!(25)),
        ]
    );
    assert_eq!(amount(january.starting_mrr.as_ref()), dec!(0));
    assert_eq!(amount(january.ending_mrr.as_ref()), dec!(366));
    assert_eq!(january.new_mrr, usd("376.00"));
    assert_eq!(january.expansion_mrr, usd("30.00"));
    assert_eq!(january.contraction_mrr, usd("0.00"));
    assert_eq!(january.churned_mrr, usd("-65.00"));
    assert_eq!(january.reactivation_mrr, usd("25.00"));
    assert_eq!(january.gross_mrr_churn_rate, None, "no starting MRR");
    assert_eq!(january.net_mrr_churn_rate, None);
    assert_eq!(
        january
            .quick_ratio
            .as_ref()
            .map(|ratio| ratio.value.as_str()),
        Some((dec!(431) / dec!(65)).normalize().to_string().as_str())
    );

    let february = analytics.movements("02-01", "03-01").await;
    assert_eq!(
        rows(&february),
        vec![
            row("cus_churn", "02-01", Churn, dec!(-40)),
            row("cus_downgrade", "02-01", Contraction, dec!(-30)),
            row("cus_paused", "02-10", Reactivation, dec!(45)),
        ]
    );
    assert_eq!(february.starting_mrr, usd("366.00"));
    assert_eq!(february.ending_mrr, usd("341.00"));
    let rate = |value: Decimal| Some(value.normalize().to_string());
    let text =
        |value: &Option<tally_proto::common::Decimal>| value.as_ref().map(|d| d.value.clone());
    assert_eq!(
        text(&february.gross_mrr_churn_rate),
        rate(dec!(70) / dec!(366))
    );
    assert_eq!(
        text(&february.net_mrr_churn_rate),
        rate(dec!(25) / dec!(366))
    );
    assert_eq!(text(&february.quick_ratio), rate(dec!(45) / dec!(70)));

    // During the trial, the reactivation's gap and the pause.
    let mid_january = analytics.mrr(Some("2026-01-10T12:00:00Z")).await;
    assert_eq!(mid_january.mrr, usd("325.00"));
    assert_eq!(mid_january.arr, usd("3900.00"));
    assert_eq!(mid_january.paying_customers, 6);
    assert_eq!(mid_january.arpa, usd("54.17"), "325 / 6 = 54.1666…");
    let paused = analytics.mrr(Some("01-25")).await;
    assert_eq!(paused.mrr, usd("366.00"));
    assert_eq!(
        paused.paying_customers, 7,
        "the paused customer is not paying"
    );
    // A change at the instant asked counts.
    assert_eq!(
        analytics.mrr(Some("2026-01-15T00:00:00Z")).await.mrr,
        usd("356.00")
    );
    assert_eq!(
        analytics.mrr(Some("2026-01-14T23:59:59Z")).await.mrr,
        usd("325.00")
    );

    // as_of defaults to the service clock.
    analytics
        .books
        .clock
        .set(at("2026-02-15T00:00:00Z"))
        .unwrap();
    let now = analytics.mrr(None).await;
    assert_eq!(now.currency, "USD");
    assert_eq!(now.mrr, usd("341.00"));
    assert_eq!(now.arr, usd("4092.00"));
    assert_eq!(now.paying_customers, 7);
    assert_eq!(now.arpa, usd("48.71"), "341 / 7 = 48.714…");
    assert_eq!(rows(&analytics.movements("01-01", "03-01").await).len(), 15);
}

#[tokio::test]
async fn snapshots_out_of_order_and_twice_give_the_same_answers() {
    let expected = in_order().await;
    let analytics = Analytics::open().await;
    let mut events = snapshots();
    events.reverse();
    for (index, event) in events.iter().enumerate() {
        let id = format!("sevt_rev_{index}");
        assert!(analytics.snapshot(&id, event).await);
        assert!(
            !analytics.snapshot(&id, event).await,
            "the inbox skips a redelivery"
        );
    }
    // Every snapshot again under new message ids (a replay): older versions change nothing.
    for (index, event) in snapshots().iter().enumerate() {
        assert!(
            analytics
                .snapshot(&format!("sevt_replay_{index}"), event)
                .await
        );
    }
    for event in &invoices() {
        assert!(analytics.invoice(event).await);
        assert!(!analytics.invoice(event).await);
    }
    for (from, to) in [
        ("01-01", "02-01"),
        ("02-01", "03-01"),
        ("01-15", "2027-01-01T00:00:00Z"),
    ] {
        assert_eq!(
            analytics.movements(from, to).await,
            expected.movements(from, to).await,
            "{from}–{to}"
        );
    }
    for as_of in ["01-01", "2026-01-10T12:00:00Z", "01-25", "02-15"] {
        assert_eq!(
            analytics.mrr(Some(as_of)).await,
            expected.mrr(Some(as_of)).await
        );
    }
}

/// ChartMogul's churn-rate example: 100 MRR at the start of the month, 10
/// lost to churn and 10 to contraction, one customer +10: gross MRR churn
/// 20 %, net 10 %.
#[tokio::test]
async fn chartmogul_churn_rates_through_list_mrr_movements() {
    use InvoiceLineKind::{ProrationCharge, ProrationCredit};
    let analytics = Analytics::open().await;
    let march = ("03-01", "04-01");
    let start = [
        ("a", "40.00"),
        ("b", "30.00"),
        ("c", "20.00"),
        ("d", "10.00"),
    ];
    for (name, fee) in start {
        let (customer, subscription) = (format!("cus_{name}"), format!("sub_{name}"));
        let event = snapshot(
            &subscription,
            &customer,
            1,
            SubscriptionStatus::Active,
            "02-01",
            |_| {},
        );
        assert!(analytics.snapshot(&format!("sevt_{name}"), &event).await);
        let line = recurring(&format!("il_{name}1"), "pv_old", fee, ("02-01", march.0));
        let invoice = finalized(
            &format!("inv_{name}1"),
            &customer,
            &subscription,
            vec![line],
            "02-01",
        );
        assert!(analytics.invoice(&invoice).await);
    }
    // d churns at the end of February.
    let ended = snapshot(
        "sub_d",
        "cus_d",
        2,
        SubscriptionStatus::Canceled,
        "02-01",
        |s| {
            s.ended_at = instant("03-01");
        },
    );
    assert!(analytics.snapshot("sevt_d2", &ended).await);
    // a, b and c renew for March; c downgrades to 10.00 and a upgrades to
    // 50.00 on 11 March (21 of 31 days prorated).
    for (name, fee) in [("a", "40.00"), ("b", "30.00"), ("c", "20.00")] {
        let (customer, subscription) = (format!("cus_{name}"), format!("sub_{name}"));
        let line = recurring(&format!("il_{name}2"), "pv_old", fee, march);
        let invoice = finalized(
            &format!("inv_{name}2"),
            &customer,
            &subscription,
            vec![line],
            "03-01",
        );
        assert!(analytics.invoice(&invoice).await);
    }
    for (name, old, new, credit, charge) in [
        ("a", "40.00", "50.00", "-27.10", "33.87"),
        ("c", "20.00", "10.00", "-13.55", "6.77"),
    ] {
        let (customer, subscription) = (format!("cus_{name}"), format!("sub_{name}"));
        let lines = vec![
            prorated(
                &format!("il_{name}3c"),
                ProrationCredit,
                "pv_old",
                (credit, old),
                ("03-11", march.1),
                march,
            ),
            prorated(
                &format!("il_{name}3"),
                ProrationCharge,
                "pv_new",
                (charge, new),
                ("03-11", march.1),
                march,
            ),
        ];
        let invoice = finalized(
            &format!("inv_{name}3"),
            &customer,
            &subscription,
            lines,
            "03-11",
        );
        assert!(analytics.invoice(&invoice).await);
    }

    let response = analytics.movements(march.0, march.1).await;
    use MovementKind::{Churn, Contraction, Expansion};
    assert_eq!(
        rows(&response),
        vec![
            row("cus_d", "03-01", Churn, dec!(-10)),
            row("cus_a", "03-11", Expansion, dec!(10)),
            row("cus_c", "03-11", Contraction, dec!(-10)),
        ]
    );
    assert_eq!(response.starting_mrr, usd("100.00"));
    assert_eq!(response.ending_mrr, usd("90.00"));
    assert_eq!(response.churned_mrr, usd("-10.00"));
    assert_eq!(response.contraction_mrr, usd("-10.00"));
    assert_eq!(response.expansion_mrr, usd("10.00"));
    let value = |rate: Option<tally_proto::common::Decimal>| rate.map(|rate| rate.value);
    assert_eq!(value(response.gross_mrr_churn_rate), Some("0.2".to_owned()));
    assert_eq!(value(response.net_mrr_churn_rate), Some("0.1".to_owned()));
    assert_eq!(value(response.quick_ratio), Some("0.5".to_owned()));
}

#[tokio::test]
async fn requests_name_the_field_they_break() {
    let analytics = Analytics::open().await;
    let violation = |status: tonic::Status| {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status.message().to_owned()
    };
    let missing = analytics
        .api
        .get_mrr(tonic::Request::new(GetMrrRequest::default()))
        .await
        .unwrap_err();
    assert!(violation(missing).starts_with("currency"));
    let unknown = analytics
        .api
        .get_mrr(tonic::Request::new(GetMrrRequest {
            currency: "usd".into(),
            as_of: None,
        }))
        .await
        .unwrap_err();
    assert!(violation(unknown).starts_with("currency"));
    let request = |range| ListMrrMovementsRequest {
        currency: "USD".into(),
        range,
    };
    let no_range = analytics
        .api
        .list_mrr_movements(tonic::Request::new(request(None)))
        .await
        .unwrap_err();
    assert!(violation(no_range).starts_with("range"));
    let inverted = analytics
        .api
        .list_mrr_movements(tonic::Request::new(request(range(
            "2026-02-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        ))))
        .await
        .unwrap_err();
    assert!(violation(inverted).starts_with("range.end_time"));
    // Nothing billed yet: zero, no ARPA.
    let empty = analytics.mrr(None).await;
    assert_eq!(empty.mrr, usd("0.00"));
    assert_eq!(empty.paying_customers, 0);
    assert_eq!(empty.arpa, None);
}

#[tokio::test]
async fn a_voided_invoice_bills_no_mrr_and_its_reissue_does() {
    let analytics = Analytics::open().await;
    let line = |id: &str, amount: &str| vec![recurring(id, "pv_std", amount, ("01-01", "02-01"))];
    let wrong = finalized(
        "inv_wrong",
        "cus_v",
        "sub_v",
        line("il_wrong", "90.00"),
        "01-01",
    );
    assert!(analytics.invoice(&wrong).await);
    assert_eq!(analytics.mrr(Some("01-02")).await.mrr, usd("90.00"));
    let void = crate::support::voided(wrong.invoice.clone().unwrap(), "2026-01-02T00:00:00Z");
    assert!(analytics.invoice(&void).await);
    assert_eq!(analytics.mrr(Some("01-02")).await.mrr, usd("0.00"));
    let reissued = finalized(
        "inv_right",
        "cus_v",
        "sub_v",
        line("il_right", "60.00"),
        "01-02",
    );
    assert!(analytics.invoice(&reissued).await);
    assert_eq!(analytics.mrr(Some("01-02")).await.mrr, usd("60.00"));
    let january = analytics.movements("01-01", "02-01").await;
    assert_eq!(
        rows(&january),
        vec![row("cus_v", "01-01", MovementKind::New, dec!(60))],
        "the history is recomputed: the voided fee never happened"
    );
}
