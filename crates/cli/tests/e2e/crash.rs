//! The crash tests: the four services as separate `tally serve` processes on
//! PostgreSQL and the Pub/Sub emulator, killed with SIGKILL and started again
//! while usage streams in over gRPC and Pub/Sub (duplicates on both paths),
//! then killed again while the month's bill run mirrors invoices to Stripe
//! and collects them. Afterwards: every accepted event is in ingest's log
//! exactly once and rated exactly once, each subscription has exactly one
//! invoice per billing boundary with the total worked out from the events
//! sent, and each invoice one Stripe invoice and one charge.
//!
//! Two plans ([`Chaos`]): every service killed at random with usage on both
//! paths, and ingest killed twelve times over gRPC plus rating during the
//! bill run. On the emulator the services consume through unary Pull
//! (`tally_bus::pubsub`, "unary"): a killed consumer's messages come back
//! when their 10 s lease lapses.
//!
//! Which service dies and when is chosen by a pseudo-random generator from a
//! seed the test prints; `TALLY_CRASH_SEED=<n>` replays a run's plan (the
//! kills happen after the same steps of the stream and the same number of
//! Stripe calls; what a process was doing at that instant still varies, so
//! the assertions hold for every interleaving rather than one).
//!
//! Nothing sleeps a fixed time: every wait polls its condition until a
//! deadline, then fails with what it saw and the services' logs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Decimal;
use tally_bus::{Bus as _, PubSubBus, topics};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{EventOutcome, IngestBatchRequest};
use tally_proto::invoicing::CollectionMode;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::cluster::{Cluster, SERVICES, START};
use crate::stripe::FakeStripe;
use crate::support::{Clients, at, call, cents, pubsub_message};

/// The variable that replays a run's plan.
const SEED_VARIABLE: &str = "TALLY_CRASH_SEED";
/// The plan when the variable is not set.
const DEFAULT_SEED: u64 = 20_261_207;

/// The demo's price book: Inference Starter is 49.00 a month in advance plus
/// 0.0000025 per token in arrears.
const CATALOG: &str = include_str!("../../demo/catalog.yaml");
const PLAN: &str = "inference_starter";
const PLATFORM_FEE: &str = "49.00";
const TOKEN_PRICE: &str = "0.0000025";
/// 4,000 tokens × 0.0000025 = 0.01: every event is worth whole cents.
const TOKENS_PER_CENT: u64 = 4_000;

const CUSTOMERS: usize = 5;
/// The stream: each step publishes fresh events and duplicates on Pub/Sub,
/// then sends fresh events and duplicates over gRPC in one batch.
const STEPS: usize = 60;
const GRPC_FRESH_PER_STEP: usize = 5;
/// Kills during the stream; every victim is among them at least once.
const STREAM_KILLS: usize = 12;
/// How many steps the stream goes on while a killed service starts again.
const STEPS_WHILE_DOWN: usize = 3;
/// Fewer calls than the bill run makes for sure: each of the month's
/// invoices is created, given at least one item, finalized and paid.
const BILLING_KILL_LAST_CALL: usize = 4 * CUSTOMERS;

/// What a run kills and how usage arrives.
#[derive(Debug, Clone, Copy)]
struct Chaos {
    /// Who may die during the stream (each at least once).
    stream_victims: &'static [&'static str],
    /// Who may die during the bill run, and how many times.
    billing_victims: &'static [&'static str],
    billing_kills: usize,
    /// Per step: fresh events published on `usage-events`, and duplicates
    /// of earlier events sent again on each path.
    pubsub_fresh: usize,
    pubsub_duplicates: usize,
    grpc_duplicates: usize,
}

/// Every service killed, usage on both paths, kills in the bill run.
const EVERY_SERVICE: Chaos = Chaos {
    stream_victims: &SERVICES,
    billing_victims: &["rating", "invoicing", "payments"],
    billing_kills: 3,
    pubsub_fresh: 4,
    pubsub_duplicates: 2,
    grpc_duplicates: 1,
};

/// Ingest killed twelve times while usage and duplicates come over gRPC,
/// rating twice while the bill run asks it for usage: the many-kills plan,
/// fast because no redelivery waits for a lease.
const INGEST_OVER_GRPC: Chaos = Chaos {
    stream_victims: &["ingest"],
    billing_victims: &["rating"],
    billing_kills: 2,
    pubsub_fresh: 0,
    pubsub_duplicates: 0,
    grpc_duplicates: 3,
};

/// The clock during the stream: the opening invoices are finalized and
/// collected while services die; every event is in November before it.
const STREAM_CLOCK: &str = "2026-11-30T12:00:00Z";
/// Events are spread over 1–29 November.
const EVENT_SPAN_SECONDS: u64 = 29 * 86_400;
/// December's bill run: drafted at 1 December, finalized after the grace day.
const BILL_CLOCK: &str = "2026-12-02T01:00:00Z";
const OPENING_BOUNDARY: &str = START;
const DECEMBER_BOUNDARY: &str = "2026-12-01T00:00:00Z";

/// The bound on each phase's wait. Without kills the whole run takes about
/// 12 s; a killed consumer's messages come back after their 10 s lease, a
/// few times over in a run, so these only end a hung run.
const PHASE_DEADLINE: Duration = Duration::from_secs(180);
/// The bound on one gRPC call's retries while ingest is down.
const CALL_DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);
/// How often a slow wait prints what it has seen.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// SplitMix64: small, fast and the same everywhere.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` for a test plan.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            items.swap(index, self.below(index + 1));
        }
    }

    /// `count` distinct values of `range`, ascending.
    fn distinct(&mut self, count: usize, range: std::ops::Range<usize>) -> Vec<usize> {
        let mut values: Vec<usize> = range.collect();
        self.shuffle(&mut values);
        values.truncate(count);
        values.sort_unstable();
        values
    }
}

/// One usage event of the stream.
#[derive(Debug, Clone)]
struct Planned {
    id: String,
    customer: usize,
    at: DateTime<Utc>,
    tokens: u64,
}

/// What one step sends (indices into [`Plan::events`]).
#[derive(Debug, Default)]
struct Step {
    grpc_fresh: Vec<usize>,
    pubsub_fresh: Vec<usize>,
    grpc_duplicates: Vec<usize>,
    pubsub_duplicates: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Kill {
    service: &'static str,
    /// During the stream: after this many steps. During the bill run: after
    /// this many calls to Stripe since the clock moved.
    after: usize,
}

/// Everything the seed decides, chosen before anything starts.
#[derive(Debug)]
struct Plan {
    events: Vec<Planned>,
    steps: Vec<Step>,
    stream_kills: Vec<Kill>,
    billing_kills: Vec<Kill>,
}

impl Plan {
    fn new(seed: u64, chaos: Chaos) -> Self {
        let mut random = Random(seed);
        let start = at(START);
        let mut events = Vec::new();
        let mut steps = Vec::new();
        for step in 0..STEPS {
            let mut fresh = |count: usize, events: &mut Vec<Planned>| -> Vec<usize> {
                (0..count)
                    .map(|_| {
                        let index = events.len();
                        let offset = random.next() % EVENT_SPAN_SECONDS;
                        events.push(Planned {
                            id: format!("crash-{index:04}"),
                            customer: random.below(CUSTOMERS),
                            at: start
                                + chrono::Duration::seconds(
                                    i64::try_from(offset).expect("within a month"),
                                ),
                            tokens: TOKENS_PER_CENT * (1 + random.next() % 50),
                        });
                        index
                    })
                    .collect()
            };
            let sent_before = events.len();
            let grpc_fresh = fresh(GRPC_FRESH_PER_STEP, &mut events);
            let pubsub_fresh = fresh(chaos.pubsub_fresh, &mut events);
            // Duplicates of events sent in earlier steps, on either path.
            let (grpc_duplicates, pubsub_duplicates) = if sent_before == 0 {
                (Vec::new(), Vec::new())
            } else {
                let mut again = random.distinct(
                    (chaos.grpc_duplicates + chaos.pubsub_duplicates).min(sent_before),
                    0..sent_before,
                );
                random.shuffle(&mut again);
                let pubsub = again.split_off(chaos.grpc_duplicates.min(again.len()));
                (again, pubsub)
            };
            debug_assert!(step == steps.len());
            steps.push(Step {
                grpc_fresh,
                pubsub_fresh,
                grpc_duplicates,
                pubsub_duplicates,
            });
        }

        let mut victims: Vec<&'static str> = chaos.stream_victims.to_vec();
        while victims.len() < STREAM_KILLS {
            victims.push(chaos.stream_victims[random.below(chaos.stream_victims.len())]);
        }
        random.shuffle(&mut victims);
        let stream_kills = random
            .distinct(STREAM_KILLS, 1..STEPS)
            .into_iter()
            .zip(victims)
            .map(|(after, service)| Kill { service, after })
            .collect();
        let billing_kills = random
            .distinct(chaos.billing_kills, 1..BILLING_KILL_LAST_CALL + 1)
            .into_iter()
            .map(|after| Kill {
                service: chaos.billing_victims[random.below(chaos.billing_victims.len())],
                after,
            })
            .collect();
        Self {
            events,
            steps,
            stream_kills,
            billing_kills,
        }
    }

    /// The fresh events' tokens per customer: what must be billed.
    fn tokens_by_customer(&self) -> [u64; CUSTOMERS] {
        let mut tokens = [0; CUSTOMERS];
        for event in &self.events {
            tokens[event.customer] += event.tokens;
        }
        tokens
    }
}

fn seed() -> u64 {
    match std::env::var(SEED_VARIABLE) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VARIABLE}={text} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

/// A deadline for one wait, failing with what was awaited, what was seen
/// last and the services' logs.
struct Deadline {
    what: String,
    started: Instant,
    limit: Duration,
}

impl Deadline {
    fn new(what: impl Into<String>, limit: Duration) -> Self {
        Self {
            what: what.into(),
            started: Instant::now(),
            limit,
        }
    }

    fn expired(&self) -> bool {
        self.started.elapsed() >= self.limit
    }

    async fn tick(&self, cluster: &Cluster, last_seen: impl Debug) {
        assert!(
            self.started.elapsed() < self.limit,
            "timed out after {:?} waiting for {}; last seen: {last_seen:?}\n{}",
            self.limit,
            self.what,
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The running system and the ids of the customers and subscriptions.
struct Crash {
    database: tally_testkit::postgres::TestDatabase,
    cluster: Cluster,
    stripe: FakeStripe,
    customers: Vec<String>,
    subscriptions: Vec<String>,
}

impl Crash {
    async fn start() -> Self {
        let database = tally_testkit::postgres::database().await;
        let emulator = tally_testkit::pubsub::emulator_host().await;
        let stripe = FakeStripe::start(at(START).timestamp()).await;
        let cluster = Cluster::start(&database.url, &emulator, &stripe.uri()).await;
        let mut api = Clients::new(&cluster).await;
        let rating = cluster.address("rating");
        cluster.cli(
            &["catalog", "apply", "-f", "-", "--address", rating],
            Some(CATALOG),
        );
        let shown = cluster.cli(
            &["catalog", "show", "--output", "json", "--address", rating],
            None,
        );
        let shown: Value = serde_json::from_str(&shown).unwrap();
        let version = shown["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|plan| plan["code"] == PLAN)
            .and_then(|plan| plan["latestPublishedVersionId"].as_str())
            .unwrap()
            .to_owned();
        let mut customers = Vec::new();
        let mut subscriptions = Vec::new();
        for index in 0..CUSTOMERS {
            let customer = api
                .customer(
                    &format!("crash-{index}"),
                    &format!("Crash Test {index}"),
                    CollectionMode::ChargeAutomatically,
                )
                .await;
            subscriptions.push(api.subscribe(&customer, &version).await);
            customers.push(customer);
        }
        Self {
            database,
            cluster,
            stripe,
            customers,
            subscriptions,
        }
    }

    fn set_clock(&self, instant: &str) {
        self.cluster.set_clock(instant);
        self.stripe.set_now(at(instant).timestamp());
    }

    fn pool(&self) -> &PgPool {
        &self.database.pool
    }
}

/// The usage event of `planned`, for its customer.
fn usage_event(customers: &[String], planned: &Planned) -> UsageEvent {
    let tokens = planned.tokens.to_string();
    crate::support::event(
        &planned.id,
        &customers[planned.customer],
        "llm_tokens",
        &planned
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        &[("tokens", tokens.as_str())],
    )
}

/// Where the stream is: steps done, kills recovered from.
struct Progress {
    steps: watch::Sender<usize>,
    recovered: watch::Sender<usize>,
}

/// Sends the stream, step by step, never more than [`STEPS_WHILE_DOWN`]
/// steps past a kill whose service has not reported SERVING again. Returns
/// how many `IngestBatch` calls had to be retried.
async fn stream(
    plan: &Plan,
    customers: &[String],
    key: &str,
    ingest: &mut IngestServiceClient<Channel>,
    publisher: &PubSubBus,
    progress: &Progress,
) -> usize {
    // Events ingest has answered for over gRPC: sent again, they are duplicates.
    let mut acknowledged = BTreeSet::new();
    let mut retried_batches = 0;
    for (number, step) in plan.steps.iter().enumerate() {
        let must_have_recovered = plan
            .stream_kills
            .iter()
            .filter(|kill| kill.after + STEPS_WHILE_DOWN <= number)
            .count();
        let mut recovered = progress.recovered.subscribe();
        tokio::time::timeout(
            PHASE_DEADLINE,
            recovered.wait_for(|count| *count >= must_have_recovered),
        )
        .await
        .unwrap_or_else(|_| panic!("step {number}: a killed service never came back"))
        .unwrap();

        for &index in step.pubsub_fresh.iter().chain(&step.pubsub_duplicates) {
            let message = pubsub_message(&usage_event(customers, &plan.events[index]));
            publisher
                .publish(topics::USAGE_EVENTS, message)
                .await
                .unwrap();
        }

        let batch: Vec<usize> = step
            .grpc_fresh
            .iter()
            .chain(&step.grpc_duplicates)
            .copied()
            .collect();
        let events = batch
            .iter()
            .map(|&index| usage_event(customers, &plan.events[index]))
            .collect();
        let (outcomes, retried) = ingest_until_answered(ingest, key, events).await;
        for (&index, outcome) in batch.iter().zip(&outcomes) {
            let fresh = step.grpc_fresh.contains(&index);
            let allowed: &[EventOutcome] = if fresh && !retried {
                &[EventOutcome::Accepted]
            } else if acknowledged.contains(&index) {
                &[EventOutcome::Duplicate]
            } else {
                // A retried batch may have been committed by the killed
                // process; an event first published on Pub/Sub may not
                // have reached the log yet.
                &[EventOutcome::Accepted, EventOutcome::Duplicate]
            };
            assert!(
                allowed.contains(outcome),
                "step {number}: {} answered {outcome:?}, expected one of {allowed:?}",
                plan.events[index].id
            );
            acknowledged.insert(index);
        }
        retried_batches += usize::from(retried);
        progress.steps.send_replace(number + 1);
    }
    retried_batches
}

/// `IngestBatch`, retried until ingest answers (it may be dead or starting):
/// the outcomes, and whether a try failed first.
async fn ingest_until_answered(
    ingest: &mut IngestServiceClient<Channel>,
    key: &str,
    events: Vec<UsageEvent>,
) -> (Vec<EventOutcome>, bool) {
    let started = Instant::now();
    let mut retried = false;
    loop {
        let request = call(
            key,
            IngestBatchRequest {
                events: events.clone(),
            },
        );
        match ingest.ingest_batch(request).await {
            Ok(response) => {
                let outcomes = response
                    .into_inner()
                    .results
                    .iter()
                    .map(|result| EventOutcome::try_from(result.outcome).unwrap())
                    .collect();
                return (outcomes, retried);
            }
            Err(status) => {
                assert!(
                    started.elapsed() < CALL_DEADLINE,
                    "IngestBatch kept failing for {CALL_DEADLINE:?}: {status}"
                );
                retried = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Kills and restarts services as the stream reaches each planned step.
async fn stream_chaos(cluster: &mut Cluster, kills: &[Kill], progress: &Progress) {
    let mut steps = progress.steps.subscribe();
    for (number, kill) in kills.iter().enumerate() {
        tokio::time::timeout(PHASE_DEADLINE, steps.wait_for(|done| *done >= kill.after))
            .await
            .unwrap_or_else(|_| panic!("the stream never reached step {}", kill.after))
            .unwrap();
        let started = Instant::now();
        cluster.kill(kill.service);
        cluster.restart(kill.service).await;
        eprintln!(
            "kill {}: {} after step {}, SERVING again in {:?}",
            number + 1,
            kill.service,
            kill.after,
            started.elapsed()
        );
        progress.recovered.send_replace(number + 1);
    }
}

/// Kills and restarts services as the bill run's calls to Stripe reach each
/// planned count.
async fn billing_chaos(crash: &mut Crash, kills: &[Kill]) {
    let before = crash.stripe.posts();
    for (number, kill) in kills.iter().enumerate() {
        let deadline = Deadline::new(
            format!("{} calls to Stripe in the bill run", kill.after),
            PHASE_DEADLINE,
        );
        loop {
            let calls = crash.stripe.posts() - before;
            if calls >= kill.after {
                break;
            }
            deadline.tick(&crash.cluster, calls).await;
        }
        let started = Instant::now();
        crash.cluster.kill(kill.service);
        crash.cluster.restart(kill.service).await;
        eprintln!(
            "bill-run kill {}: {} after {} calls to Stripe, SERVING again in {:?}",
            number + 1,
            kill.service,
            kill.after,
            started.elapsed()
        );
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until ingest's log holds every event and rating has rated them all.
async fn wait_until_rated(crash: &Crash, plan: &Plan) {
    let expected = i64::try_from(plan.events.len()).unwrap();
    let deadline = Deadline::new(
        format!("{expected} events in ingest's log, all rated"),
        PHASE_DEADLINE,
    );
    let mut reported = Instant::now();
    loop {
        let logged = count(crash.pool(), "SELECT count(*) FROM ingest.events").await;
        let rated = count(crash.pool(), "SELECT count(*) FROM rating.rated_events").await;
        let unrated = count(crash.pool(), "SELECT count(*) FROM rating.unrated_events").await;
        if logged == expected && rated == expected {
            return;
        }
        let mut seen = format!("logged {logged}, rated {rated}, unrated {unrated}");
        if reported.elapsed() >= PROGRESS_EVERY {
            // A slow phase says where it is: redelivery after a kill shows as steps.
            eprintln!("waiting for {expected} events: {seen}");
            reported = Instant::now();
        }
        if deadline.expired() {
            seen.push_str(&missing(crash, plan).await);
        }
        deadline.tick(&crash.cluster, seen).await;
    }
}

/// Which events are missing from the log (and how they were first sent),
/// and which logged ones are not rated: what a stuck run is asked first.
async fn missing(crash: &Crash, plan: &Plan) -> String {
    let logged: BTreeMap<(String, String), i64> = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT customer_id, event_id, seq FROM ingest.events",
    )
    .fetch_all(crash.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(customer, id, seq)| ((customer, id), seq))
    .collect();
    let rated: BTreeSet<(String, String)> =
        sqlx::query_as("SELECT customer_id, event_id FROM rating.rated_events")
            .fetch_all(crash.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut not_logged = Vec::new();
    let mut not_rated = Vec::new();
    for (number, step) in plan.steps.iter().enumerate() {
        for (path, indices) in [("grpc", &step.grpc_fresh), ("pubsub", &step.pubsub_fresh)] {
            for &index in indices {
                let event = &plan.events[index];
                let key = (crash.customers[event.customer].clone(), event.id.clone());
                match logged.get(&key) {
                    None => {
                        not_logged.push(format!("{} ({path}, step {number}, {})", event.id, key.0))
                    }
                    Some(seq) if !rated.contains(&key) => {
                        not_rated.push(format!(
                            "{} (seq {seq}, {path}, step {number}, {})",
                            event.id, key.0
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let batches = count(crash.pool(), "SELECT count(*) FROM ingest.accepted_batches").await;
    let high_water = count(
        crash.pool(),
        "SELECT published_high_water FROM ingest.relay_state",
    )
    .await;
    format!(
        "\nnot in the log ({}): {not_logged:?}\nlogged, not rated ({}): {not_rated:?}\n\
         accepted batches not yet relayed: {batches}, relay high water: {high_water}",
        not_logged.len(),
        not_rated.len()
    )
}

/// Every accepted event once in the log and once in rating's records, and
/// nothing else there; each absorbed once into its subscription's aggregate.
async fn check_log_and_rating(crash: &Crash, plan: &Plan) {
    let expected: BTreeSet<(String, String)> = plan
        .events
        .iter()
        .map(|event| (crash.customers[event.customer].clone(), event.id.clone()))
        .collect();
    assert_eq!(expected.len(), plan.events.len());

    let logged: Vec<(String, String)> =
        sqlx::query_as("SELECT customer_id, event_id FROM ingest.events")
            .fetch_all(crash.pool())
            .await
            .unwrap();
    let logged_once: BTreeSet<(String, String)> = logged.iter().cloned().collect();
    assert_eq!(logged.len(), logged_once.len(), "an event logged twice");
    assert_eq!(logged_once, expected, "ingest's log");
    let keys: BTreeSet<(String, String)> =
        sqlx::query_as("SELECT customer_id, event_id FROM ingest.event_keys")
            .fetch_all(crash.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(keys, expected, "ingest's de-duplication keys");
    let rejected = count(crash.pool(), "SELECT count(*) FROM ingest.rejected_events").await;
    assert_eq!(
        rejected, 0,
        "no event is rejected (duplicates are not conflicts)"
    );

    let rated: BTreeSet<(String, String)> =
        sqlx::query_as("SELECT customer_id, event_id FROM rating.rated_events")
            .fetch_all(crash.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(rated, expected, "rating's rated events");
    let unrated = count(crash.pool(), "SELECT count(*) FROM rating.unrated_events").await;
    assert_eq!(unrated, 0, "no event is left unrated");

    // Each event absorbed once: the aggregates count every event once.
    let absorbed: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT subscription_id, sum(event_count)::numeric FROM rating.aggregates \
         GROUP BY subscription_id",
    )
    .fetch_all(crash.pool())
    .await
    .unwrap();
    let absorbed: BTreeMap<String, Decimal> = absorbed.into_iter().collect();
    for (index, subscription) in crash.subscriptions.iter().enumerate() {
        let events = plan
            .events
            .iter()
            .filter(|event| event.customer == index)
            .count();
        assert_eq!(
            absorbed.get(subscription).copied().unwrap_or_default(),
            Decimal::from(events),
            "{subscription}: events absorbed into its aggregates"
        );
    }
}

/// A customer's two invoices: the opening one (November's fee in advance)
/// and December's (December's fee plus November's tokens).
fn expected_totals(tokens: u64) -> [Decimal; 2] {
    let fee: Decimal = PLATFORM_FEE.parse().unwrap();
    let price: Decimal = TOKEN_PRICE.parse().unwrap();
    let usage = Decimal::from(tokens) * price;
    assert_eq!(usage, usage.round_dp(2), "whole cents by construction");
    [fee, fee + usage]
}

#[derive(Debug, sqlx::FromRow)]
struct InvoiceRow {
    id: String,
    subscription_id: String,
    boundary_at: DateTime<Utc>,
    status: String,
    total: Decimal,
}

async fn invoices(pool: &PgPool) -> Vec<InvoiceRow> {
    sqlx::query_as(
        "SELECT id, subscription_id, boundary_at, status, total FROM invoicing.invoices \
         ORDER BY subscription_id, boundary_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until every subscription's two invoices are paid.
async fn wait_until_paid(crash: &Crash) -> Vec<InvoiceRow> {
    let deadline = Deadline::new("every invoice of the two boundaries paid", PHASE_DEADLINE);
    let mut reported = Instant::now();
    loop {
        let found = invoices(crash.pool()).await;
        let paid = found.iter().filter(|row| row.status == "paid").count();
        if paid == 2 * CUSTOMERS && found.len() == paid {
            return found;
        }
        let seen: Vec<String> = found
            .iter()
            .map(|row| format!("{} {} {}", row.subscription_id, row.status, row.total))
            .collect();
        if reported.elapsed() >= PROGRESS_EVERY {
            eprintln!(
                "waiting for every invoice paid: {} of {} paid",
                paid,
                found.len()
            );
            reported = Instant::now();
        }
        deadline.tick(&crash.cluster, seen).await;
    }
}

/// Exactly one invoice per subscription per boundary with the expected
/// total, its lines adding up; one payment, one Stripe invoice and one
/// Stripe charge for each.
async fn check_invoices_and_payments(crash: &Crash, plan: &Plan, found: &[InvoiceRow]) {
    let tokens = plan.tokens_by_customer();
    let mut by_subscription: BTreeMap<&str, Vec<(DateTime<Utc>, Decimal)>> = BTreeMap::new();
    for row in found {
        by_subscription
            .entry(row.subscription_id.as_str())
            .or_default()
            .push((row.boundary_at, row.total));
    }
    for (index, subscription) in crash.subscriptions.iter().enumerate() {
        let [opening, december] = expected_totals(tokens[index]);
        let (opening, december) = (opening.round_dp(2), december.round_dp(2));
        eprintln!(
            "{subscription}: {} tokens × {TOKEN_PRICE} = {}; invoices {opening} and {december}",
            tokens[index],
            (december - opening).round_dp(2)
        );
        assert_eq!(
            by_subscription
                .remove(subscription.as_str())
                .unwrap_or_default(),
            vec![
                (at(OPENING_BOUNDARY), opening),
                (at(DECEMBER_BOUNDARY), december)
            ],
            "{subscription}: one invoice per boundary, with these totals"
        );
    }
    assert!(
        by_subscription.is_empty(),
        "invoices of no subscription: {by_subscription:?}"
    );

    for invoice in found {
        let lines: Decimal = sqlx::query_scalar(
            "SELECT coalesce(sum(amount), 0) FROM invoicing.invoice_lines WHERE invoice_id = $1",
        )
        .bind(&invoice.id)
        .fetch_one(crash.pool())
        .await
        .unwrap();
        assert_eq!(lines, invoice.total, "{}: lines add up", invoice.id);

        let payments: Vec<(String, Decimal, String)> = sqlx::query_as(
            "SELECT id, amount, status FROM payments.payments WHERE invoice_id = $1",
        )
        .bind(&invoice.id)
        .fetch_all(crash.pool())
        .await
        .unwrap();
        assert_eq!(payments.len(), 1, "{}: one payment", invoice.id);
        let (payment, amount, status) = &payments[0];
        assert_eq!(
            (amount, status.as_str()),
            (&invoice.total, "succeeded"),
            "{}: its payment",
            invoice.id
        );
        let attempts: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT attempt_number, succeeded FROM payments.payment_attempts \
             WHERE payment_id = $1 ORDER BY attempt_number",
        )
        .bind(payment)
        .fetch_all(crash.pool())
        .await
        .unwrap();
        assert_eq!(
            attempts.iter().filter(|(_, succeeded)| *succeeded).count(),
            1,
            "{}: one successful attempt: {attempts:?}",
            invoice.id
        );

        let due = cents(&invoice.total.round_dp(2).to_string());
        let mirrored = crash.stripe.invoices_for(&invoice.id);
        assert_eq!(mirrored.len(), 1, "{}: one Stripe invoice", invoice.id);
        let mirrored = &mirrored[0];
        assert_eq!(
            (
                mirrored["status"].as_str(),
                mirrored["amount_due"].as_i64(),
                mirrored["amount_paid"].as_i64()
            ),
            (Some("paid"), Some(due), Some(due)),
            "{}: the Stripe invoice",
            invoice.id
        );
        let stripe_invoice = mirrored["id"].as_str().unwrap();
        let items: i64 = crash
            .stripe
            .items_of(stripe_invoice)
            .iter()
            .map(|item| item.amount)
            .sum();
        assert_eq!(items, due, "{}: Stripe items", invoice.id);
        let charges: Vec<(Value, Value)> = crash
            .stripe
            .charges_of_invoice(stripe_invoice)
            .iter()
            .map(|charge| (charge["status"].clone(), charge["amount"].clone()))
            .collect();
        assert_eq!(
            charges,
            vec![(Value::from("succeeded"), Value::from(due))],
            "{}: one Stripe charge",
            invoice.id
        );
    }
    assert_eq!(
        crash.stripe.posts_without_key(),
        Vec::<String>::new(),
        "every Stripe call has an idempotency key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_twelve_times_loses_and_doubles_nothing() {
    run(INGEST_OVER_GRPC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_killed_at_random_loses_and_doubles_nothing() {
    run(EVERY_SERVICE).await;
}

async fn run(chaos: Chaos) {
    let started = Instant::now();
    let seed = seed();
    eprintln!("crash test seed: {seed} (replay this plan with {SEED_VARIABLE}={seed})");
    let plan = Plan::new(seed, chaos);
    for kill in &plan.stream_kills {
        eprintln!("plan: kill {} after step {}", kill.service, kill.after);
    }
    for kill in &plan.billing_kills {
        eprintln!(
            "plan: kill {} after {} calls to Stripe in the bill run",
            kill.service, kill.after
        );
    }

    let mut crash = Crash::start().await;
    let publisher = PubSubBus::connect(
        tally_testkit::pubsub::TEST_PROJECT,
        Some(&crash.cluster.emulator_host),
        &crash.cluster.name_prefix,
    )
    .await
    .unwrap();
    let mut ingest = IngestServiceClient::new(crash.cluster.channel("ingest").await);
    // The opening invoices are finalized and collected during the stream.
    crash.set_clock(STREAM_CLOCK);
    eprintln!("set up in {:?}", started.elapsed());

    let progress = Progress {
        steps: watch::Sender::new(0),
        recovered: watch::Sender::new(0),
    };
    let key = crash.cluster.admin_key.clone();
    let (retried_batches, ()) = tokio::join!(
        stream(
            &plan,
            &crash.customers,
            &key,
            &mut ingest,
            &publisher,
            &progress
        ),
        stream_chaos(&mut crash.cluster, &plan.stream_kills, &progress),
    );
    eprintln!(
        "stream and {STREAM_KILLS} kills done at {:?} ({retried_batches} IngestBatch calls retried)",
        started.elapsed()
    );

    wait_until_rated(&crash, &plan).await;
    eprintln!(
        "{} events logged and rated at {:?}",
        plan.events.len(),
        started.elapsed()
    );
    check_log_and_rating(&crash, &plan).await;

    // December's bill run, with kills while it talks to Stripe.
    crash.set_clock(BILL_CLOCK);
    billing_chaos(&mut crash, &plan.billing_kills).await;
    let found = wait_until_paid(&crash).await;
    eprintln!("every invoice paid at {:?}", started.elapsed());
    check_invoices_and_payments(&crash, &plan, &found).await;
    // Finance, killed with the others, booked every invoice and payment once.
    crate::books::check_books(&crash.cluster, crash.pool()).await;
    eprintln!("crash test (seed {seed}) took {:?}", started.elapsed());
}
