//! The forwarder against a fake Orb: bodies, keys, redelivery, retries,
//! splitting refused batches, unmapped customers.

use std::time::Duration;

use serde_json::json;
use tally_connectors::Disposition;
use tally_proto::connectors::ForwardingState;
use wiremock::ResponseTemplate;

use crate::support::*;

#[tokio::test]
async fn batches_are_forwarded_with_the_right_body_and_keys() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    h.map("cus_globex", "globex-orb").await;
    let batch = [
        usage(
            1,
            "cus_acme",
            "evt_1",
            &[("tokens", "1200"), ("model", "large")],
        ),
        usage(2, "cus_globex", "evt_1", &[("seconds", "2.50")]),
        usage(3, "cus_acme", "evt_2", &[]),
    ];
    assert_eq!(
        h.forwarder.forward(&batch).await,
        vec![Disposition::Done; 3]
    );

    let received = h.orb.received_requests().await.unwrap();
    assert_eq!(received.len(), 1, "one request for the batch");
    assert_eq!(
        received[0].headers.get("authorization").unwrap(),
        &format!("Bearer {API_KEY}")
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&received[0].body).unwrap(),
        json!({"events": [
            {"idempotency_key": "cus_acme:evt_1", "external_customer_id": "acme-orb",
             "event_name": "api_calls", "timestamp": "2026-12-07T11:30:00Z",
             "properties": {"model": "large", "tokens": 1200}},
            {"idempotency_key": "cus_globex:evt_1", "external_customer_id": "globex-orb",
             "event_name": "api_calls", "timestamp": "2026-12-07T11:30:00Z",
             "properties": {"seconds": 2.5}},
            {"idempotency_key": "cus_acme:evt_2", "external_customer_id": "acme-orb",
             "event_name": "api_calls", "timestamp": "2026-12-07T11:30:00Z",
             "properties": {}},
        ]})
    );
    assert_eq!(
        h.states().await,
        [
            row("cus_acme", "evt_1", "forwarded", "", 1),
            row("cus_acme", "evt_2", "forwarded", "", 1),
            row("cus_globex", "evt_1", "forwarded", "", 1),
        ]
        .into()
    );
    let forwarded = h.events(ForwardingState::Forwarded).await;
    assert!(forwarded.iter().all(|event| event.forwarded_at.is_some()));
    assert_eq!(forwarded[0].idempotency_key, "cus_acme:evt_1");
    assert_eq!(forwarded[0].external_customer_id, "acme-orb");
}

#[tokio::test]
async fn batches_larger_than_the_request_size_go_in_several_requests() {
    let h = Harness::with_config(|config| tally_runtime::config::ConnectorsConfig {
        orb_batch_events: 2,
        ..config
    })
    .await;
    h.map("cus_acme", "acme-orb").await;
    let batch: Vec<_> = (1..=5)
        .map(|n| usage(n, "cus_acme", &format!("evt_{n}"), &[]))
        .collect();
    assert_eq!(
        h.forwarder.forward(&batch).await,
        vec![Disposition::Done; 5]
    );
    let sizes: Vec<usize> = h.keys_sent().await.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
}

#[tokio::test]
async fn a_redelivered_message_forwards_nothing_twice() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    let first = [
        usage(1, "cus_acme", "evt_1", &[]),
        usage(2, "cus_acme", "evt_2", &[]),
    ];
    h.forwarder.forward(&first).await;
    // The same messages again (a redelivery), one of them twice in the
    // batch, and one new message.
    let again = [
        usage(2, "cus_acme", "evt_2", &[]),
        usage(1, "cus_acme", "evt_1", &[]),
        usage(3, "cus_acme", "evt_3", &[]),
        usage(3, "cus_acme", "evt_3", &[]),
    ];
    let dispositions = h.forwarder.forward(&again).await;
    assert_eq!(
        dispositions[..3],
        [Disposition::Done, Disposition::Done, Disposition::Done]
    );
    assert!(
        matches!(&dispositions[3], Disposition::Redeliver(reason) if reason.contains("already in this batch")),
        "{dispositions:?}"
    );
    // Its redelivery finds it settled and sends nothing.
    assert_eq!(
        h.forwarder
            .forward(&[usage(3, "cus_acme", "evt_3", &[])])
            .await,
        [Disposition::Done]
    );
    // The same event re-published under another message id: not sent again.
    assert_eq!(
        h.forwarder
            .forward(&[usage(9, "cus_acme", "evt_1", &[])])
            .await,
        [Disposition::Done]
    );

    assert_eq!(
        h.keys_sent().await,
        [
            vec!["cus_acme:evt_1".to_owned(), "cus_acme:evt_2".to_owned()],
            vec!["cus_acme:evt_3".to_owned()],
        ]
    );
    assert_eq!(
        h.ingested(),
        ["cus_acme:evt_1", "cus_acme:evt_2", "cus_acme:evt_3"]
    );
    assert_eq!(h.states().await.len(), 3);
}

#[tokio::test]
async fn a_429_with_retry_after_then_success_keeps_the_same_keys() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    h.script([ResponseTemplate::new(429)
        .insert_header("retry-after", "2")
        .set_body_json(problem(429, "429-too-many-requests", "Too many requests"))]);
    let batch = [
        usage(1, "cus_acme", "evt_1", &[("tokens", "5")]),
        usage(2, "cus_acme", "evt_2", &[("tokens", "7")]),
    ];
    assert_eq!(
        h.forwarder.forward(&batch).await,
        vec![Disposition::Done; 2]
    );

    assert_eq!(
        h.pauses(),
        [Duration::from_secs(2)],
        "retry-after is honoured"
    );
    let requests = h.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], requests[1], "the retry sends the same body");
    assert_eq!(
        h.states().await,
        [
            row("cus_acme", "evt_1", "forwarded", "", 2),
            row("cus_acme", "evt_2", "forwarded", "", 2),
        ]
        .into()
    );
}

#[tokio::test]
async fn a_5xx_storm_is_retried_then_succeeds() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    let server_error = || {
        ResponseTemplate::new(500).set_body_json(problem(
            500,
            "500-internal-server-error",
            "Internal server error",
        ))
    };
    h.script([server_error(), ResponseTemplate::new(502), server_error()]);
    let batch = [usage(1, "cus_acme", "evt_1", &[])];
    assert_eq!(h.forwarder.forward(&batch).await, [Disposition::Done]);

    assert_eq!(
        h.pauses(),
        [100, 200, 400].map(Duration::from_millis),
        "exponential backoff from orb_retry_base_delay_ms"
    );
    assert_eq!(
        h.keys_sent().await,
        vec![vec!["cus_acme:evt_1".to_owned()]; 4]
    );
    assert_eq!(
        h.states().await,
        [row("cus_acme", "evt_1", "forwarded", "", 4)].into()
    );
}

#[tokio::test]
async fn a_storm_longer_than_the_retries_leaves_the_batch_to_redelivery() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    h.script((0..4).map(|_| ResponseTemplate::new(503)));
    // A retry-after longer than orb_retry_max_delay_ms is not waited in process either.
    h.script([ResponseTemplate::new(429).insert_header("retry-after", "3600")]);
    let batch = [
        usage(1, "cus_acme", "evt_1", &[]),
        usage(2, "cus_acme", "evt_2", &[]),
    ];

    for _ in 0..2 {
        let dispositions = h.forwarder.forward(&batch).await;
        assert!(
            dispositions
                .iter()
                .all(|d| matches!(d, Disposition::Redeliver(reason) if reason.contains("Orb is unavailable"))),
            "{dispositions:?}"
        );
        assert!(
            h.states().await.is_empty(),
            "nothing is recorded, the bus keeps the messages"
        );
    }
    // The redelivery after the storm forwards them.
    assert_eq!(
        h.forwarder.forward(&batch).await,
        vec![Disposition::Done; 2]
    );
    assert_eq!(h.ingested(), ["cus_acme:evt_1", "cus_acme:evt_2"]);
    assert_eq!(h.keys_sent().await.len(), 4 + 1 + 1);
}

#[tokio::test]
async fn a_refused_batch_is_split_and_the_bad_event_rejected_with_orbs_reason() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    let reason = "Event timestamp 2026-12-07T11:30:00+00:00 is outside the grace period";
    h.refuse("cus_acme:evt_2", reason);
    let batch = [
        usage(1, "cus_acme", "evt_1", &[]),
        usage(2, "cus_acme", "evt_2", &[]),
        usage(3, "cus_acme", "evt_3", &[]),
    ];
    assert_eq!(
        h.forwarder.forward(&batch).await,
        vec![Disposition::Done; 3]
    );

    assert_eq!(
        h.keys_sent().await,
        [
            vec!["cus_acme:evt_1", "cus_acme:evt_2", "cus_acme:evt_3"],
            vec!["cus_acme:evt_1"],
            vec!["cus_acme:evt_2"],
            vec!["cus_acme:evt_3"],
        ]
        .map(|keys| keys.into_iter().map(str::to_owned).collect::<Vec<_>>())
    );
    assert_eq!(h.ingested(), ["cus_acme:evt_1", "cus_acme:evt_3"]);
    assert_eq!(
        h.states().await,
        [
            row("cus_acme", "evt_1", "forwarded", "", 2),
            row(
                "cus_acme",
                "evt_2",
                "rejected",
                &format!("HTTP 400: Request validation failed: {reason}"),
                2
            ),
            row("cus_acme", "evt_3", "forwarded", "", 2),
        ]
        .into()
    );
    // A rejection is final: a redelivery sends nothing.
    h.forwarder.forward(&batch[1..2]).await;
    assert_eq!(h.keys_sent().await.len(), 4);
}

#[tokio::test]
async fn an_unmapped_customer_is_recorded_as_not_mapped() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    let batch = [
        usage(1, "cus_acme", "evt_1", &[]),
        usage(2, "cus_initech", "evt_1", &[]),
    ];
    assert_eq!(
        h.forwarder.forward(&batch).await,
        vec![Disposition::Done; 2]
    );
    assert_eq!(h.keys_sent().await, [vec!["cus_acme:evt_1".to_owned()]]);
    assert_eq!(
        h.states().await,
        [
            row("cus_acme", "evt_1", "forwarded", "", 1),
            row("cus_initech", "evt_1", "not_mapped", "", 0),
        ]
        .into()
    );
    let not_mapped = h.events(ForwardingState::NotMapped).await;
    assert_eq!(not_mapped[0].idempotency_key, "");
    assert!(not_mapped[0].forwarded_at.is_none());

    // Only unmapped customers: no request at all.
    h.forwarder
        .forward(&[usage(3, "cus_initech", "evt_2", &[])])
        .await;
    assert_eq!(h.keys_sent().await.len(), 1);
}

#[tokio::test]
async fn a_refused_api_key_leaves_everything_to_redelivery() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    h.script([ResponseTemplate::new(401).set_body_json(problem(
        401,
        "401-authentication-error",
        "Authentication error",
    ))]);
    let dispositions = h
        .forwarder
        .forward(&[usage(1, "cus_acme", "evt_1", &[])])
        .await;
    assert!(
        matches!(&dispositions[0], Disposition::Redeliver(reason) if reason.contains("ORB_API_KEY")),
        "{dispositions:?}"
    );
    assert!(h.states().await.is_empty());
    assert!(
        h.pauses().is_empty(),
        "a refused key is not retried in process"
    );
}
