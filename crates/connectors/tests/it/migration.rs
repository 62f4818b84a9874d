//! The billing system of record end to end on real PostgreSQL: four
//! customers in shadow against a fake Orb pricing the same catalog match
//! exactly; a mispriced customer shows the exact difference; cutover only
//! at the boundary after N matching periods; rollback only before Tally's
//! next invoice; every change audited in connectors' chain.

use std::str::FromStr as _;
use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;
use tally_audit::{Origin, Schema};
use tally_connectors::migration::model::{BillingSystemState, CutoverPolicy};
use tally_connectors::migration::{Change, Migrations};
use tally_connectors::orb::Jitter;
use tally_connectors::{ConnectorsError, OrbApiKey, OrbClient};
use tally_runtime::ids::ClockIds;
use tally_runtime::{ManualClock, SharedClock};

use crate::migration_fake::{
    FakeTally, PRICE_BASE, PRICE_CALLS, PricingOrb, TallyState, Usage, pricing_orb,
};
use crate::support::{API_KEY, at, config};

pub struct World {
    pub database: tally_testkit::postgres::TestDatabase,
    pub server: wiremock::MockServer,
    pub orb: PricingOrb,
    pub tally: FakeTally,
    pub clock: Arc<ManualClock>,
    pub migrations: Migrations,
}

pub const CUSTOMERS: [(&str, &str, u64); 4] = [
    // (Tally customer, Orb external id, API calls per month)
    ("cus_alpha", "alpha", 10_000),  // 49.00 + 20.00 = 69.00
    ("cus_bravo", "bravo", 2_500),   // 49.00 + 5.00 = 54.00, minimum 6.00
    ("cus_charlie", "charlie", 0),   // 49.00, minimum 11.00
    ("cus_delta", "delta", 123_450), // 49.00 + 246.90 = 295.90
];

impl World {
    pub async fn open(now: &str) -> Self {
        let database = tally_testkit::postgres::database().await;
        let (server, orb) = pricing_orb().await;
        let tally = FakeTally {
            state: Arc::new(Mutex::new(TallyState::default())),
            usage: Arc::clone(&orb.0),
        };
        let clock = Arc::new(ManualClock::new(at(now)));
        let shared: SharedClock = clock.clone();
        let client = OrbClient::new(&config(&server.uri()), OrbApiKey::new(API_KEY))
            .unwrap()
            .with_jitter(Jitter::None);
        let migrations = Migrations::new(
            database.pool.clone(),
            Arc::clone(&shared),
            Arc::new(ClockIds::new(shared)),
            Arc::new(client),
            Arc::new(tally.clone()),
            CutoverPolicy {
                matching_periods: 2,
                boundary_tolerance: chrono::Duration::hours(1),
            },
        );
        migrations.map_orb_price(PRICE_BASE, "base").await.unwrap();
        migrations
            .map_orb_price(PRICE_CALLS, "api_calls")
            .await
            .unwrap();
        Self {
            database,
            server,
            orb,
            tally,
            clock,
            migrations,
        }
    }

    /// A customer mapped to Orb, subscribed in Tally, with `calls` per month
    /// for the months ending at `ends`.
    pub async fn customer(&self, customer: &str, external: &str, calls: u64, ends: &[&str]) {
        sqlx::query(
            "INSERT INTO connectors.orb_customers (customer_id, external_customer_id, created_at, updated_at) \
             VALUES ($1, $2, now(), now())",
        )
        .bind(customer)
        .bind(external)
        .execute(&self.database.pool)
        .await
        .unwrap();
        self.tally
            .state
            .lock()
            .unwrap()
            .subscribed
            .insert(customer.to_owned(), external.to_owned());
        let mut usage = self.orb.0.lock().unwrap();
        for end in ends {
            usage.calls.insert((external.to_owned(), at(end)), calls);
        }
    }

    pub fn set_now(&self, now: &str) {
        self.clock.set(at(now)).unwrap();
    }

    pub fn usage(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.orb.0.lock().unwrap()
    }

    pub async fn compare(
        &self,
        customer: &str,
        end: &str,
    ) -> tally_connectors::migration::model::ParityReport {
        self.migrations
            .compare(customer, Some(at(end)), false)
            .await
            .unwrap()
    }

    /// (action, reason, actor) of connectors' chain, in order; the chain verified.
    pub async fn audit(&self) -> Vec<(String, String, String)> {
        let verification = tally_audit::verify(&self.database.pool, Schema::Connectors)
            .await
            .unwrap();
        assert!(verification.broken.is_none(), "{verification:?}");
        sqlx::query_as(
            "SELECT action, coalesce(reason, ''), actor_id FROM connectors.audit_log ORDER BY sequence",
        )
        .fetch_all(&self.database.pool)
        .await
        .unwrap()
    }
}

pub fn change(customer: &str, reason: &str) -> Change {
    Change {
        customer_id: customer.to_owned(),
        reason: reason.to_owned(),
        origin: Origin::system("migration-test"),
        dry_run: false,
    }
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn refused(result: Result<impl std::fmt::Debug, ConnectorsError>) -> String {
    match result {
        Err(ConnectorsError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// (subject, Tally's amount, the biller's, difference, matches).
type Found<'a> = (
    &'a str,
    Option<Decimal>,
    Option<Decimal>,
    Option<Decimal>,
    bool,
);

const ENDS: [&str; 2] = ["2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"];

#[tokio::test]
async fn four_customers_in_shadow_match_exactly_and_cut_over_at_the_boundary() {
    let world = World::open("2026-10-05T09:00:00Z").await;
    for (customer, external, calls) in CUSTOMERS {
        world.customer(customer, external, calls, &ENDS).await;
        let changed = world
            .migrations
            .start_shadow(&change(customer, "parallel run before moving off Orb"))
            .await
            .unwrap();
        assert_eq!(changed.after.state, BillingSystemState::Shadow);
    }
    // Invoicing was told to hold every invoice of the four as drafts.
    let modes = world.tally.state.lock().unwrap().modes.clone();
    assert_eq!(modes.len(), 4);
    assert!(
        modes
            .iter()
            .all(|mode| mode.tally_bills_after.is_none() && mode.version == 2)
    );

    for (now, end) in [
        ("2026-11-01T02:00:00Z", ENDS[0]),
        ("2026-12-01T00:10:00Z", ENDS[1]),
    ] {
        world.set_now(now);
        for (customer, _, _) in CUSTOMERS {
            let report = world.compare(customer, end).await;
            assert!(report.matched, "{report:#?}");
            assert_eq!(report.lines_not_compared, 0);
            let subjects: Vec<&str> = report.findings.iter().map(|f| f.subject.as_str()).collect();
            assert_eq!(
                subjects,
                [
                    "subtotal",
                    "discounts",
                    "minimums",
                    "total",
                    "amount_due",
                    "line:api_calls",
                    "line:base"
                ]
            );
        }
    }
    let bravo = world.compare("cus_bravo", ENDS[1]).await;
    let minimums = &bravo.findings[2];
    assert_eq!(
        (minimums.tally_amount, minimums.external_amount),
        (Some(dec("6.00")), Some(dec("6.00")))
    );
    assert_eq!(bravo.findings[4].tally_amount, Some(dec("60.00")));

    // At the boundary (ten minutes after), with two matching periods: cut over.
    let dry = world
        .migrations
        .cutover(&Change {
            dry_run: true,
            ..change("cus_alpha", "parity held for two cycles")
        })
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(
        world.tally.state.lock().unwrap().modes.len(),
        4,
        "a dry run tells invoicing nothing"
    );
    for (customer, _, _) in CUSTOMERS {
        let changed = world
            .migrations
            .cutover(&change(customer, "parity held for two cycles"))
            .await
            .unwrap();
        assert_eq!(changed.after.state, BillingSystemState::Cutover);
        assert_eq!(changed.after.cutover_at, Some(at(ENDS[1])));
        let evidence = changed.evidence.unwrap();
        let json: serde_json::Value = serde_json::from_str(&evidence.json).unwrap();
        assert_eq!(json["reports"].as_array().unwrap().len(), 2);
        assert_eq!(json["cutover_at"], "2026-12-01T00:00:00+00:00");
        assert_eq!(evidence.csv.lines().count(), 1 + 2 * 7, "{}", evidence.csv);
        assert!(
            evidence
                .csv
                .lines()
                .skip(1)
                .all(|line| line.contains(",true,"))
        );
    }
    let last = world
        .tally
        .state
        .lock()
        .unwrap()
        .modes
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (last.tally_bills_after, last.version),
        (Some(at(ENDS[1])), 3)
    );

    let audit = world.audit().await;
    let actions: Vec<&str> = audit.iter().map(|(action, _, _)| action.as_str()).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "billing_system.enrolled")
            .count(),
        4
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "billing_system.shadow_started")
            .count(),
        4
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "billing_system.cut_over")
            .count(),
        4
    );
    assert!(audit.iter().all(|(_, _, actor)| actor == "migration-test"));
    assert_eq!(audit.last().unwrap().1, "parity held for two cycles");
}

#[tokio::test]
async fn a_mispriced_customer_shows_the_exact_difference_and_is_not_cut_over() {
    let world = World::open("2026-10-05T09:00:00Z").await;
    world.customer("cus_echo", "echo", 10_000, &ENDS).await;
    // Orb prices echo's calls at 0.0021 instead of 0.002: 21.00 against 20.00.
    world
        .usage()
        .orb_unit_price
        .insert("echo".to_owned(), "0.0021".to_owned());
    world
        .migrations
        .start_shadow(&change("cus_echo", "trial"))
        .await
        .unwrap();
    world.set_now("2026-12-01T00:05:00Z");
    world.compare("cus_echo", ENDS[0]).await;
    let report = world.compare("cus_echo", ENDS[1]).await;
    assert!(!report.matched);
    let found: Vec<Found<'_>> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.subject.as_str(),
                f.tally_amount,
                f.external_amount,
                f.difference,
                f.matches,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "subtotal",
                Some(dec("69.00")),
                Some(dec("70.00")),
                Some(dec("-1.00")),
                false
            ),
            (
                "discounts",
                Some(dec("0")),
                Some(dec("0")),
                Some(dec("0")),
                true
            ),
            (
                "minimums",
                Some(dec("0")),
                Some(dec("0")),
                Some(dec("0")),
                true
            ),
            (
                "total",
                Some(dec("69.00")),
                Some(dec("70.00")),
                Some(dec("-1.00")),
                false
            ),
            (
                "amount_due",
                Some(dec("69.00")),
                Some(dec("70.00")),
                Some(dec("-1.00")),
                false
            ),
            (
                "line:api_calls",
                Some(dec("20.00")),
                Some(dec("21.00")),
                Some(dec("-1.00")),
                false
            ),
            (
                "line:base",
                Some(dec("49.00")),
                Some(dec("49.00")),
                Some(dec("0")),
                true
            ),
        ]
    );
    // Stored as compared.
    let status = world.migrations.status("cus_echo").await.unwrap();
    assert_eq!(status.reports.len(), 2);
    assert_eq!(status.reports[0], report);

    let reason = refused(world.migrations.cutover(&change("cus_echo", "go")).await);
    assert!(
        reason.contains("0 of the last 2 shadow periods"),
        "{reason}"
    );
    assert!(reason.contains("did not match"), "{reason}");
    let status = world.migrations.status("cus_echo").await.unwrap();
    assert_eq!(status.system.unwrap().state, BillingSystemState::Shadow);
}

#[tokio::test]
async fn cutover_is_refused_mid_period_and_without_n_matching_periods() {
    let world = World::open("2026-10-05T09:00:00Z").await;
    world.customer("cus_alpha", "alpha", 10_000, &ENDS).await;
    // Not enrolled: nothing to cut over.
    let result = world.migrations.cutover(&change("cus_alpha", "go")).await;
    assert!(
        matches!(result, Err(ConnectorsError::NotFound(_))),
        "{result:?}"
    );
    world
        .migrations
        .start_shadow(&change("cus_alpha", "trial"))
        .await
        .unwrap();

    // One matching period only.
    world.set_now("2026-11-01T00:30:00Z");
    world.compare("cus_alpha", ENDS[0]).await;
    let reason = refused(world.migrations.cutover(&change("cus_alpha", "go")).await);
    assert!(
        reason.contains("1 of the last 2 shadow periods"),
        "{reason}"
    );
    assert!(
        reason.contains("no report for the period ending 2026-10-01"),
        "{reason}"
    );

    // Two now, but mid-period.
    world.set_now("2026-12-15T12:00:00Z");
    world.compare("cus_alpha", ENDS[1]).await;
    let reason = refused(world.migrations.cutover(&change("cus_alpha", "go")).await);
    assert!(reason.starts_with("not at a period boundary"), "{reason}");
    assert!(reason.contains("next boundary is 2027-01-01"), "{reason}");

    // Just after the boundary, but the period ending there was never compared.
    world.set_now("2027-01-01T00:20:00Z");
    let reason = refused(world.migrations.cutover(&change("cus_alpha", "go")).await);
    assert!(reason.contains("0 of the last 2"), "{reason}");
    assert!(
        reason.contains("no report for the period ending 2027-01-01"),
        "{reason}"
    );

    // Refusals change nothing and leave no audit entry.
    let actions: Vec<String> = world
        .audit()
        .await
        .into_iter()
        .map(|(action, _, _)| action)
        .collect();
    assert_eq!(
        actions,
        ["billing_system.enrolled", "billing_system.shadow_started"]
    );
}

#[tokio::test]
async fn rollback_only_before_tallys_next_invoice() {
    let world = World::open("2026-10-05T09:00:00Z").await;
    for (customer, external, calls) in &CUSTOMERS[..2] {
        world.customer(customer, external, *calls, &ENDS).await;
        world
            .migrations
            .start_shadow(&change(customer, "trial"))
            .await
            .unwrap();
    }
    world.set_now("2026-12-01T00:10:00Z");
    for (customer, _, _) in &CUSTOMERS[..2] {
        world.compare(customer, ENDS[0]).await;
        world.compare(customer, ENDS[1]).await;
        world
            .migrations
            .cutover(&change(customer, "parity held"))
            .await
            .unwrap();
    }
    // Before Tally's first invoice after the cutover (1 January): back to Orb.
    world.set_now("2026-12-20T10:00:00Z");
    let changed = world
        .migrations
        .rollback(&change(
            "cus_alpha",
            "finance asked to keep Orb through year end",
        ))
        .await
        .unwrap();
    assert_eq!(changed.after.state, BillingSystemState::RolledBack);
    assert_eq!(changed.after.cutover_at, None);
    let last = world
        .tally
        .state
        .lock()
        .unwrap()
        .modes
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (
            last.customer_id.as_str(),
            last.tally_bills_after,
            last.version
        ),
        ("cus_alpha", None, 4)
    );

    // After it: Tally has billed; refused.
    world.set_now("2027-01-02T00:00:00Z");
    let reason = refused(
        world
            .migrations
            .rollback(&change("cus_bravo", "too late"))
            .await,
    );
    assert!(
        reason.contains("rollback was possible until 2027-01-01"),
        "{reason}"
    );
    // A rolled-back customer cannot roll back again, and may start over.
    let reason = refused(
        world
            .migrations
            .rollback(&change("cus_alpha", "again"))
            .await,
    );
    assert!(reason.contains("rolled_back"), "{reason}");
    world
        .migrations
        .start_shadow(&change("cus_alpha", "second attempt"))
        .await
        .unwrap();

    let audit = world.audit().await;
    let rolled: Vec<_> = audit
        .iter()
        .filter(|(action, _, _)| action == "billing_system.rolled_back")
        .collect();
    assert_eq!(rolled.len(), 1);
    assert_eq!(rolled[0].1, "finance asked to keep Orb through year end");
}

#[tokio::test]
async fn a_change_invoicing_did_not_take_is_not_committed() {
    let world = World::open("2026-10-05T09:00:00Z").await;
    world.customer("cus_alpha", "alpha", 10_000, &ENDS).await;
    world.tally.state.lock().unwrap().down = true;
    let result = world
        .migrations
        .start_shadow(&change("cus_alpha", "trial"))
        .await;
    assert!(
        matches!(result, Err(ConnectorsError::Unavailable(_))),
        "{result:?}"
    );
    let status = world.migrations.status("cus_alpha").await.unwrap();
    assert_eq!(status.system, None);
    assert!(world.audit().await.is_empty());
    // Invoicing back: the same request goes through.
    world.tally.state.lock().unwrap().down = false;
    world
        .migrations
        .start_shadow(&change("cus_alpha", "trial"))
        .await
        .unwrap();
    assert_eq!(world.audit().await.len(), 2);
}

#[tokio::test]
async fn the_pricing_fake_orbs_invoices_parse_with_orbs_python_sdk() {
    let world = World::open("2026-12-01T00:10:00Z").await;
    world.customer("cus_bravo", "bravo", 2_500, &ENDS).await;
    world.customer("cus_echo", "echo", 10_000, &ENDS).await;
    world
        .usage()
        .orb_unit_price
        .insert("echo".to_owned(), "0.0021".to_owned());
    let calls: Vec<serde_json::Value> = ["bravo", "echo"]
        .into_iter()
        .map(|external| {
            serde_json::json!({"call": "list_invoices",
             "params": {"external_customer_id": external,
                        "invoice_date_gte": "2026-12-01T00:00:00Z",
                        "invoice_date_lt": "2026-12-02T00:00:00Z"}})
        })
        .collect();
    let result = crate::orb_sdk::run_sdk(&serde_json::json!({
        "base_url": world.server.uri(),
        "billing_calls": calls,
    }));
    assert_eq!(
        result["billing_calls"],
        serde_json::json!([
            {"ok": true, "invoices": [{"id": "orb_inv_bravo_202612", "subtotal": "54.00",
              "total": "60.00", "amount_due": "60.00", "lines": ["49.00", "11.00"]}]},
            {"ok": true, "invoices": [{"id": "orb_inv_echo_202612", "subtotal": "70.00",
              "total": "70.00", "amount_due": "70.00", "lines": ["49.00", "21.00"]}]},
        ]),
        "the SDK parses the pricing fake's invoices strictly"
    );
}
