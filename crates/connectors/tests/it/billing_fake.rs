//! A fake Orb for customers, subscriptions and invoices (wiremock with
//! state). Its bodies start from fixtures (`tests/fixtures/orb/*.json`) that
//! Orb's Python SDK parses strictly (`orb_sdk::billing_*`). Like Orb, a POST
//! with an `Idempotency-Key` it has seen answers the first answer again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tally_connectors::OrbClient;
use tally_connectors::mirroring::Mirroring;
use tally_connectors::orb::Jitter;
use tally_runtime::{ManualClock, SharedClock};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{API_KEY, RecordedPauses, at, config};

pub fn fixture(name: &str) -> Value {
    let file = format!(
        "{}/tests/fixtures/orb/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

/// One POST the fake received.
#[derive(Debug, Clone)]
pub struct Posted {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

#[derive(Debug, Default)]
pub struct BillingState {
    /// Responses to give to POSTs before behaving normally.
    pub script: VecDeque<ResponseTemplate>,
    /// Every POST, in order.
    pub posted: Vec<Posted>,
    /// Idempotency key → the first answer.
    pub answers: BTreeMap<String, Value>,
    /// Objects created, by path.
    pub created: BTreeMap<String, u32>,
    /// The invoices listed, in order.
    pub invoices: Vec<Value>,
    /// Invoices per page.
    pub page_size: usize,
}

#[derive(Debug, Clone, Default)]
pub struct FakeBilling(pub Arc<Mutex<BillingState>>);

impl FakeBilling {
    fn created(&self, request: &Request, state: &mut BillingState) -> Value {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let path = request.url.path().to_owned();
        let count = state.created.entry(path.clone()).or_default();
        *count += 1;
        let number = *count;
        if path == "/v1/customers" {
            let mut customer = fixture("customer");
            customer["id"] = json!(format!("orb_cus_{number}"));
            for field in [
                "name",
                "email",
                "external_customer_id",
                "currency",
                "metadata",
            ] {
                if !body[field].is_null() {
                    customer[field] = body[field].clone();
                }
            }
            customer
        } else {
            let mut subscription = fixture("subscription");
            subscription["id"] = json!(format!("orb_sub_{number}"));
            subscription["customer"]["external_customer_id"] = body["external_customer_id"].clone();
            for field in ["metadata", "start_date"] {
                if !body[field].is_null() {
                    subscription[field] = body[field].clone();
                }
            }
            subscription
        }
    }

    fn page(&self, request: &Request, state: &BillingState) -> ResponseTemplate {
        let query: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        let start: usize = query
            .get("cursor")
            .map_or(0, |cursor| cursor.parse().unwrap());
        let customer = query
            .get("customer_id")
            .or_else(|| query.get("external_customer_id"))
            .cloned()
            .unwrap_or_default();
        let mine: Vec<&Value> = state
            .invoices
            .iter()
            .filter(|invoice| {
                invoice["customer"]["id"] == customer.as_str()
                    || invoice["customer"]["external_customer_id"] == customer.as_str()
            })
            .collect();
        let end = (start + state.page_size.max(1)).min(mine.len());
        let has_more = end < mine.len();
        ResponseTemplate::new(200).set_body_json(json!({
            "data": mine[start..end],
            "pagination_metadata": {
                "has_more": has_more,
                "next_cursor": if has_more { json!(end.to_string()) } else { Value::Null },
            }
        }))
    }
}

impl Respond for FakeBilling {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        if request.method.as_str() == "GET" {
            return self.page(request, &state);
        }
        let key = request
            .headers
            .get("Idempotency-Key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        state.posted.push(Posted {
            path: request.url.path().to_owned(),
            idempotency_key: key.clone(),
            body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
        });
        if let Some(scripted) = state.script.pop_front() {
            return scripted;
        }
        if let Some(answer) = key.as_ref().and_then(|key| state.answers.get(key)) {
            return ResponseTemplate::new(201).set_body_json(answer.clone());
        }
        let answer = self.created(request, &mut state);
        if let Some(key) = key {
            state.answers.insert(key, answer.clone());
        }
        ResponseTemplate::new(201).set_body_json(answer)
    }
}

/// A fake Orb serving customers, subscriptions and invoices, and a client of it.
pub struct BillingHarness {
    pub database: tally_testkit::postgres::TestDatabase,
    pub orb: MockServer,
    pub fake: FakeBilling,
    pub pauses: Arc<RecordedPauses>,
    pub client: OrbClient,
    pub clock: SharedClock,
    pub mirroring: Mirroring,
}

impl BillingHarness {
    pub async fn open(jitter: Jitter) -> Self {
        let database = tally_testkit::postgres::database().await;
        let orb = MockServer::start().await;
        let fake = FakeBilling::default();
        fake.0.lock().unwrap().page_size = 2;
        for (verb, route) in [
            ("POST", "/v1/customers"),
            ("POST", "/v1/subscriptions"),
            ("GET", "/v1/invoices"),
        ] {
            Mock::given(method(verb))
                .and(path(route))
                .respond_with(fake.clone())
                .mount(&orb)
                .await;
        }
        let pauses = Arc::new(RecordedPauses::default());
        let client = OrbClient::new(
            &config(&orb.uri()),
            tally_connectors::OrbApiKey::new(API_KEY),
        )
        .unwrap()
        .with_pause(pauses.clone())
        .with_jitter(jitter);
        let clock: SharedClock = Arc::new(ManualClock::new(at("2026-12-07T12:00:00Z")));
        let mirroring = Mirroring::new(
            database.pool.clone(),
            Arc::clone(&clock),
            Arc::new(client.clone()),
        );
        Self {
            database,
            orb,
            fake,
            pauses,
            client,
            clock,
            mirroring,
        }
    }

    pub fn script(&self, responses: impl IntoIterator<Item = ResponseTemplate>) {
        self.fake.0.lock().unwrap().script.extend(responses);
    }

    pub fn posted(&self, route: &str) -> Vec<Posted> {
        let state = self.fake.0.lock().unwrap();
        state
            .posted
            .iter()
            .filter(|posted| posted.path == route)
            .cloned()
            .collect()
    }

    pub fn created(&self, route: &str) -> u32 {
        self.fake
            .0
            .lock()
            .unwrap()
            .created
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    pub fn pauses(&self) -> Vec<std::time::Duration> {
        self.pauses.0.lock().unwrap().clone()
    }
}
