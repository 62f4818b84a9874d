//! Tally's Orb requests and the fake Orb's responses, checked by Orb's
//! official Python SDK (`orb-billing` on PyPI), as the Stripe fakes are
//! checked with async-stripe's types: the request bodies against the SDK's
//! `EventIngestParams`, and the SDK's own client calling the fake — its 200
//! bodies must parse strictly as `EventIngestResponse`, its errors must map
//! to the SDK's exception classes.
//!
//! The SDK lives in a virtualenv: `TALLY_ORB_SDK_PYTHON`, or
//! `${TALLY_TOOLS_DIR:-~/.cache/tally-tools}/orb-sdk/bin/python`. When it is
//! missing the test fails saying how to create it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::support::*;

/// The SDK version the fakes were checked against.
const SDK_VERSION: &str = "4.90.0";

fn sdk_python() -> PathBuf {
    if let Some(python) = std::env::var_os("TALLY_ORB_SDK_PYTHON") {
        return python.into();
    }
    let tools = std::env::var_os("TALLY_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/tally-tools"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache/tally-tools"));
    tools.join("orb-sdk/bin/python")
}

fn install_hint(python: &std::path::Path) -> String {
    let venv = python
        .parent()
        .and_then(|bin| bin.parent())
        .map_or_else(|| "<venv>".to_owned(), |venv| venv.display().to_string());
    format!(
        "this test checks the fake Orb with Orb's official Python SDK, which is not installed at {}: \
         run `python3 -m venv {venv} && {venv}/bin/pip install orb-billing=={SDK_VERSION}` \
         (or point TALLY_ORB_SDK_PYTHON at a python that has `orb-billing`)",
        python.display()
    )
}

pub fn run_sdk(input: &Value) -> Value {
    let python = sdk_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/orb_sdk_check.py");
    let child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!("{} ({error})", install_hint(&python)),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {}
        Some(3) => panic!("{}: {stderr}", install_hint(&python)),
        _ => panic!("the Orb SDK check failed ({}): {stderr}", output.status),
    }
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn tallys_requests_and_the_fake_orb_agree_with_orbs_python_sdk() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    h.refuse(
        "cus_acme:evt_bad",
        "Event timestamp is outside the grace period",
    );
    h.forwarder
        .forward(&[
            usage(
                1,
                "cus_acme",
                "evt_1",
                &[("tokens", "1200"), ("model", "large")],
            ),
            usage(
                2,
                "cus_acme",
                "evt_2",
                &[
                    ("seconds", "0.25"),
                    ("huge", "123456789012345678901234567890"),
                ],
            ),
            usage(3, "cus_acme", "evt_bad", &[]),
        ])
        .await;
    let tally_requests = h.requests().await;
    assert_eq!(tally_requests.len(), 4, "a batch, then split in three");

    // The SDK's client against the same fake: a 429, a 500, then normal behaviour.
    h.script([
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(problem(429, "429-too-many-requests", "Too many requests")),
        ResponseTemplate::new(500).set_body_json(problem(
            500,
            "500-internal-server-error",
            "Internal server error",
        )),
    ]);
    let event = |key: &str| {
        json!({"idempotency_key": key, "external_customer_id": "acme-orb",
               "event_name": "api_calls", "timestamp": "2026-12-07T11:30:00Z",
               "properties": {"tokens": 3}})
    };
    let calls = json!([
        {"events": [event("sdk_1")]},
        {"events": [event("sdk_1")]},
        {"events": [event("sdk_1"), event("sdk_2")]},
        {"events": [event("sdk_3"), event("cus_acme:evt_bad")]},
    ]);
    let result = run_sdk(&json!({
        "tally_requests": tally_requests,
        "base_url": h.orb.uri(),
        "calls": calls,
    }));

    assert_eq!(result["sdk_version"], SDK_VERSION);
    assert_eq!(
        result["requests"],
        json!([[], [], [], []]),
        "Tally's bodies break the SDK's EventIngestParams"
    );
    assert_eq!(
        result["calls"][0],
        json!({"error": "TooManyRequests", "status": 429})
    );
    assert_eq!(
        result["calls"][1],
        json!({"error": "OrbInternalServerError", "status": 500})
    );
    assert_eq!(
        result["calls"][2],
        json!({"ok": true, "validation_failed": []})
    );
    assert_eq!(
        result["calls"][3],
        json!({"error": "RequestValidationError", "status": 400, "validation_errors": [
            {"idempotency_key": "cus_acme:evt_bad",
             "validation_errors": ["Event timestamp is outside the grace period"]}
        ]})
    );
}

#[tokio::test]
async fn tallys_billing_requests_the_billing_fakes_and_webhooks_agree_with_orbs_python_sdk() {
    use tally_bus::consumer::MessageHandler as _;
    use tally_connectors::orb::{Jitter, OrbWebhookSecret, webhook};

    let h = crate::billing_fake::BillingHarness::open(Jitter::None).await;
    // Tally's own requests: a customer and a subscription mirrored.
    h.mirroring
        .map_plan("plan_pro", "orb_plan_pro")
        .await
        .unwrap();
    let customers = tally_connectors::mirroring::consumer::CustomerFacts::new(
        h.mirroring.clone(),
        "connectors-invoice-events",
    );
    customers
        .handle(
            &crate::mirroring::customer_message("ievt_1", "cus_acme", "acme"),
            1,
        )
        .await
        .unwrap();
    let subscriptions = tally_connectors::mirroring::consumer::SubscriptionFacts::new(
        h.mirroring.clone(),
        "connectors-subscription-events",
    );
    subscriptions
        .handle(
            &crate::mirroring::subscription_message(1, "sub_acme", "cus_acme", "plan_pro"),
            1,
        )
        .await
        .unwrap();
    let billing_requests: Vec<Value> = h
        .posted("/v1/customers")
        .into_iter()
        .map(|posted| json!({"kind": "customer", "body": posted.body}))
        .chain(
            h.posted("/v1/subscriptions")
                .into_iter()
                .map(|posted| json!({"kind": "subscription", "body": posted.body})),
        )
        .collect();
    assert_eq!(billing_requests.len(), 2);

    // The SDK's client against the same fake, and a webhook Tally signs.
    h.fake.0.lock().unwrap().invoices = crate::invoices::five_invoices();
    let secret = "orb_webhook_secret_sdk";
    // The SDK checks the timestamp against the real clock.
    let stamp = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    let body = crate::webhooks::invoice_issued("whe_sdk");
    let signed = webhook::sign(&OrbWebhookSecret::new(secret), &stamp, body.as_bytes());
    let forged = webhook::sign(&OrbWebhookSecret::new("guess"), &stamp, body.as_bytes());
    let result = run_sdk(&json!({
        "base_url": h.orb.uri(),
        "billing_requests": billing_requests,
        "billing_calls": [
            {"call": "create_customer", "idempotency_key": "sdk-1",
             "params": {"name": "SDK Co", "email": "a@sdk.example", "external_customer_id": "sdk"}},
            {"call": "create_subscription", "idempotency_key": "sdk-2",
             "params": {"external_customer_id": "sdk", "plan_id": "orb_plan_pro"}},
            {"call": "list_invoices",
             "params": {"customer_id": "XuxCbt7x9L82yyeF", "limit": 2,
                        "invoice_date_gte": "2026-11-01T00:00:00Z",
                        "invoice_date_lt": "2026-12-01T00:00:00Z"}},
        ],
        "webhooks": [
            {"body": body, "secret": secret,
             "headers": {"X-Orb-Timestamp": stamp, "X-Orb-Signature": signed}},
            {"body": body, "secret": secret,
             "headers": {"X-Orb-Timestamp": stamp, "X-Orb-Signature": forged}},
        ],
    }));

    assert_eq!(result["sdk_version"], SDK_VERSION);
    assert_eq!(
        result["billing_requests"],
        json!([[], []]),
        "Tally's bodies break the SDK's CustomerCreateParams / SubscriptionCreateParams"
    );
    assert_eq!(
        result["billing_calls"][0],
        json!({"ok": true, "id": "orb_cus_2"})
    );
    assert_eq!(
        result["billing_calls"][1],
        json!({"ok": true, "id": "orb_sub_2"})
    );
    assert_eq!(
        result["billing_calls"][2],
        json!({"ok": true, "invoices": [
            {"id": "inv_orb_1", "subtotal": "200.00", "total": "180.00", "amount_due": "180.00", "lines": ["180.00"]},
            {"id": "inv_orb_2", "subtotal": "0.10", "total": "0.10", "amount_due": "0.10", "lines": ["0.10"]},
            {"id": "inv_orb_3", "subtotal": "12345678901234.5678", "total": "12345678901234.5677",
             "amount_due": "12345678901234.5677", "lines": ["12345678901234.5677"]},
            {"id": "inv_orb_4", "subtotal": "10.00", "total": "50.00", "amount_due": "50.00", "lines": ["50.00"]},
            {"id": "inv_orb_5", "subtotal": "33.33", "total": "29.997", "amount_due": "29.997", "lines": ["29.997"]},
        ]}),
        "the SDK pages through the fake's cursor and parses every invoice strictly"
    );
    assert_eq!(
        result["webhooks"][0],
        json!({"ok": true, "id": "whe_sdk", "type": "invoice.issued"})
    );
    assert_eq!(
        result["webhooks"][1],
        json!({"error": "None of the given webhook signatures match the expected signature"})
    );
}
