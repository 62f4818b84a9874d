//! A fake Orb (wiremock with state: the keys it ingested, the keys it
//! refuses, scripted failures), accepted usage, and the forwarder under test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tally_connectors::forwarding::AcceptedUsage;
use tally_connectors::orb::{Jitter, Pause};
use tally_connectors::{ConnectorApi, Forwarder, Incoming, OrbApiKey, OrbClient};
use tally_proto::connectors::connector_service_server::ConnectorService;
use tally_proto::connectors::{
    ForwardedEvent, ForwardingState, ListForwardedEventsRequest, MapOrbCustomerRequest,
};
use tally_runtime::config::ConnectorsConfig;
use tally_runtime::{ManualClock, SharedClock};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const API_KEY: &str = "orb_test_key_1";
pub const SUBSCRIPTION: &str = "connectors-usage-accepted";

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// Orb's RFC 7807 error body of `kind` (its documented `type` URLs).
pub fn problem(status: u16, kind: &str, title: &str) -> Value {
    json!({
        "type": format!("https://docs.withorb.com/reference/error-responses#{kind}"),
        "status": status,
        "title": title,
        "detail": null,
    })
}

/// What the fake Orb remembers and is told to do.
#[derive(Debug, Default)]
pub struct OrbState {
    /// Responses to give before behaving normally (failures).
    pub script: VecDeque<ResponseTemplate>,
    /// Keys it refuses, with the validation error it gives.
    pub refuse: BTreeMap<String, String>,
    /// Keys ingested, in order (a key ingested again is not added).
    pub ingested: Vec<String>,
}

/// The fake's behaviour: scripted responses first; then a request with a
/// refused key is refused whole (400, `RequestValidationError` naming the
/// keys) and any other is ingested (200, `validation_failed: []`).
#[derive(Debug, Clone, Default)]
pub struct FakeOrb(pub Arc<Mutex<OrbState>>);

impl Respond for FakeOrb {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        if let Some(scripted) = state.script.pop_front() {
            return scripted;
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let keys: Vec<String> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["idempotency_key"].as_str().unwrap().to_owned())
            .collect();
        let refused: Vec<Value> =
            keys.iter()
                .filter_map(|key| {
                    state.refuse.get(key).map(
                        |reason| json!({"idempotency_key": key, "validation_errors": [reason]}),
                    )
                })
                .collect();
        if !refused.is_empty() {
            let mut body = problem(
                400,
                "400-request-validation-errors",
                "Request validation failed",
            );
            body["validation_errors"] = Value::Array(refused);
            return ResponseTemplate::new(400).set_body_json(body);
        }
        for key in keys {
            if !state.ingested.contains(&key) {
                state.ingested.push(key);
            }
        }
        ResponseTemplate::new(200).set_body_json(json!({"validation_failed": []}))
    }
}

/// Records the waits between retries instead of sleeping.
#[derive(Debug, Default)]
pub struct RecordedPauses(pub Mutex<Vec<Duration>>);

#[async_trait]
impl Pause for RecordedPauses {
    async fn pause(&self, delay: Duration) {
        self.0.lock().unwrap().push(delay);
    }
}

/// The forwarder against a fake Orb, on a fresh database.
pub struct Harness {
    /// Held for the test's length (the forwarder and API use its pool).
    _database: tally_testkit::postgres::TestDatabase,
    pub orb: MockServer,
    pub fake: FakeOrb,
    pub pauses: Arc<RecordedPauses>,
    pub forwarder: Forwarder,
    pub api: ConnectorApi,
}

/// Retries as in service, with short backoff (the waits are recorded, not slept).
pub fn config(orb_url: &str) -> ConnectorsConfig {
    ConnectorsConfig {
        orb_api_base_url: orb_url.to_owned(),
        orb_batch_events: 100,
        orb_max_attempts: 4,
        orb_retry_base_delay_ms: 100,
        orb_retry_max_delay_ms: 30_000,
        orb_request_timeout_ms: 10_000,
        orb_webhook_listen_addr: None,
        ..ConnectorsConfig::default()
    }
}

pub async fn fake_orb() -> (MockServer, FakeOrb) {
    let server = MockServer::start().await;
    let fake = FakeOrb::default();
    Mock::given(method("POST"))
        .and(path("/v1/ingest"))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    (server, fake)
}

impl Harness {
    pub async fn open() -> Self {
        Self::with_config(|config| config).await
    }

    pub async fn with_config(adjust: impl FnOnce(ConnectorsConfig) -> ConnectorsConfig) -> Self {
        let database = tally_testkit::postgres::database().await;
        let shared: SharedClock = Arc::new(ManualClock::new(at("2026-12-07T12:00:00Z")));
        let (orb, fake) = fake_orb().await;
        let pauses = Arc::new(RecordedPauses::default());
        let client = OrbClient::new(&adjust(config(&orb.uri())), OrbApiKey::new(API_KEY))
            .unwrap()
            .with_pause(pauses.clone())
            .with_jitter(Jitter::None);
        Self {
            forwarder: Forwarder::new(
                database.pool.clone(),
                Arc::clone(&shared),
                client,
                SUBSCRIPTION,
            ),
            api: ConnectorApi::new(database.pool.clone(), shared),
            _database: database,
            orb,
            fake,
            pauses,
        }
    }

    pub fn script(&self, responses: impl IntoIterator<Item = ResponseTemplate>) {
        self.fake.0.lock().unwrap().script.extend(responses);
    }

    pub fn refuse(&self, key: &str, reason: &str) {
        self.fake
            .0
            .lock()
            .unwrap()
            .refuse
            .insert(key.to_owned(), reason.to_owned());
    }

    pub fn ingested(&self) -> Vec<String> {
        self.fake.0.lock().unwrap().ingested.clone()
    }

    pub fn pauses(&self) -> Vec<Duration> {
        self.pauses.0.lock().unwrap().clone()
    }

    pub async fn map(&self, customer: &str, external: &str) {
        self.api
            .map_orb_customer(tonic::Request::new(MapOrbCustomerRequest {
                customer_id: customer.into(),
                external_customer_id: external.into(),
            }))
            .await
            .unwrap();
    }

    /// The bodies Orb received, in order.
    pub async fn requests(&self) -> Vec<Value> {
        self.orb
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|request| serde_json::from_slice(&request.body).unwrap())
            .collect()
    }

    /// The idempotency keys of every request, request by request.
    pub async fn keys_sent(&self) -> Vec<Vec<String>> {
        self.requests()
            .await
            .iter()
            .map(|body| {
                body["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|event| event["idempotency_key"].as_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    }

    /// Every recorded event, oldest first.
    pub async fn events(&self, state: ForwardingState) -> Vec<ForwardedEvent> {
        self.api
            .list_forwarded_events(tonic::Request::new(ListForwardedEventsRequest {
                state: state.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .events
    }

    /// `(customer, event, state, reason, attempts)` of every recorded event.
    pub async fn states(&self) -> BTreeSet<(String, String, &'static str, String, u32)> {
        self.events(ForwardingState::Unspecified)
            .await
            .into_iter()
            .map(|event| {
                let state = match event.state() {
                    ForwardingState::Forwarded => "forwarded",
                    ForwardingState::Rejected => "rejected",
                    ForwardingState::NotMapped => "not_mapped",
                    ForwardingState::Unspecified => "unspecified",
                };
                (
                    event.customer_id,
                    event.event_id,
                    state,
                    event.reason,
                    event.attempts,
                )
            })
            .collect()
    }
}

/// An accepted event, message id `uacc_<n>`.
pub fn usage(n: u64, customer: &str, event: &str, properties: &[(&str, &str)]) -> Incoming {
    Incoming {
        message_id: format!("uacc_{n}"),
        usage: AcceptedUsage {
            customer_id: customer.into(),
            event_id: event.into(),
            event_type: "api_calls".into(),
            timestamp: at("2026-12-07T11:30:00Z"),
            properties: properties
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        },
    }
}

pub fn row(
    customer: &str,
    event: &str,
    state: &'static str,
    reason: &str,
    attempts: u32,
) -> (String, String, &'static str, String, u32) {
    (
        customer.into(),
        event.into(),
        state,
        reason.into(),
        attempts,
    )
}
