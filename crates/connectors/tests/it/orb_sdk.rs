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

fn run_sdk(input: &Value) -> Value {
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
