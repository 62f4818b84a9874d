//! The month's audit log, read back with `tally audit` from the separate
//! service processes: one invoice's complete timeline — created and
//! finalized by the bill run (invoicing's chain), sent to Stripe (payments'
//! chain), paid by Stripe's webhook, partially refunded —, its payment's in
//! payments' chain, and every chain intact.

use serde_json::Value;

use crate::cluster::{Cluster, tally};

/// `tally audit <args> --address <service's> --output json` with the admin key.
fn audit_json(cluster: &Cluster, service: &str, args: &[&str]) -> Value {
    let output = tally(&cluster.database_url)
        .arg("audit")
        .args(args)
        .args(["--address", cluster.address(service), "--output", "json"])
        .env("TALLY_API_KEY", &cluster.admin_key)
        .output()
        .expect("tally audit runs");
    assert!(
        output.status.success(),
        "tally audit {args:?} against {service}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// When an entry was recorded.
fn recorded_at(entry: &Value) -> chrono::DateTime<chrono::Utc> {
    entry["recordedAt"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .unwrap_or_else(|| panic!("no recordedAt in {entry}"))
        .to_utc()
}

/// `(action, actor id)` of each entry listed.
fn timeline(entries: &Value) -> Vec<(String, String)> {
    entries
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| {
            let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
            (text(&entry["action"]), text(&entry["actor"]["id"]))
        })
        .collect()
}

/// After Initech's December invoice was paid by transfer (webhook
/// `evt_1E2eInvoicePaid`) and 100.00 of it refunded through payments.
pub fn check_timeline(cluster: &Cluster, invoice_id: &str, payment_id: &str) {
    let invoicing_entries = audit_json(cluster, "invoicing", &["list", "--resource", invoice_id]);
    let invoice = timeline(&invoicing_entries);
    let actions: Vec<&str> = invoice.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "invoice.created",
            "invoice.finalized",
            "invoice.payment_succeeded",
            "invoice.refunded"
        ],
        "{invoice:?}"
    );
    assert_eq!(invoice[0].1, "bill_run");
    assert_eq!(invoice[1].1, "bill_run");
    assert!(invoice[2].1.starts_with("payment_event:"), "{invoice:?}");
    assert!(invoice[2].1.contains("evt_1E2eInvoicePaid"), "{invoice:?}");

    // Sent to Stripe (Initech's invoices are emailed: no charge attempt),
    // in payments' chain, between its finalization and its payment.
    let sent = audit_json(cluster, "payments", &["list", "--resource", invoice_id]);
    assert_eq!(
        timeline(&sent),
        [("invoice.sent_to_stripe".to_owned(), "collection".to_owned())]
    );
    let entries = invoicing_entries.as_array().expect("a list");
    let sent_at = recorded_at(&sent[0]);
    assert!(
        recorded_at(&entries[1]) <= sent_at && sent_at <= recorded_at(&entries[2]),
        "finalized {}, sent {sent_at}, paid {}",
        recorded_at(&entries[1]),
        recorded_at(&entries[2])
    );

    let payment = audit_json(cluster, "payments", &["list", "--resource", payment_id]);
    let payment = timeline(&payment);
    let actions: Vec<&str> = payment.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(
        actions,
        ["payment.succeeded", "payment.refunded"],
        "{payment:?}"
    );
    assert_eq!(payment[0].1, "stripe_webhook:evt_1E2eInvoicePaid");
    assert!(
        payment[1].1.starts_with("key_"),
        "by the caller's key: {payment:?}"
    );

    for service in ["invoicing", "payments"] {
        let verified = audit_json(cluster, service, &["verify"]);
        for chain in verified["chains"].as_array().expect("chains") {
            assert!(chain.get("brokenLink").is_none(), "{service}: {chain}");
        }
    }
}
