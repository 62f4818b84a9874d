//! Usage and invoices land in BigQuery with Tally's counts and sums; a void
//! is a new row and the current-state view shows it.

use tally_export::tables::{INVOICE_LINES, INVOICES, USAGE_EVENTS};

use crate::support::*;

#[tokio::test]
async fn usage_lands_once_with_tallys_counts_and_sums() {
    let h = harness().await;
    let mut expected_tokens = 0u64;
    for sequence in 1..=23u64 {
        let customer = if sequence % 2 == 0 { "cus_a" } else { "cus_b" };
        let tokens = sequence * 100;
        expected_tokens += tokens;
        h.stage_usage(
            &format!("uacc_{sequence}"),
            &usage(customer, &format!("e{sequence}"), sequence, tokens),
        )
        .await;
    }
    h.drain(USAGE_EVENTS).await;
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.usage_events`")
            .await
            .as_deref(),
        Some("23")
    );
    assert_eq!(
        h.scalar("SELECT COUNT(DISTINCT CONCAT(customer_id, '/', event_id)) FROM `{dataset}.usage_events`")
            .await
            .as_deref(),
        Some("23")
    );
    assert_eq!(
        h.scalar("SELECT SUM(CAST(JSON_VALUE(properties, '$.tokens') AS INT64)) FROM `{dataset}.usage_events`")
            .await,
        Some(expected_tokens.to_string())
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.usage_events` WHERE customer_id = 'cus_a'")
            .await
            .as_deref(),
        Some("11")
    );
}

#[tokio::test]
async fn invoices_and_lines_land_and_a_void_is_a_new_row_the_current_view_shows() {
    let h = harness().await;
    let first = invoice("inv_1", "cus_a", &["10.00", "2.50"], "12.50");
    let second = invoice("inv_2", "cus_b", &["99.99"], "99.99");
    h.stage_invoice("m1", &finalized("ievt_1", &first)).await;
    h.stage_invoice("m2", &finalized("ievt_2", &second)).await;
    h.stage_invoice("m3", &voided("ievt_3", &second)).await;
    h.drain(INVOICES).await;
    h.drain(INVOICE_LINES).await;

    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.invoices`")
            .await
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.invoice_lines`")
            .await
            .as_deref(),
        Some("3")
    );
    let lines_sum = h
        .scalar("SELECT CAST(SUM(amount) AS STRING) FROM `{dataset}.invoice_lines`")
        .await
        .unwrap();
    assert_eq!(lines_sum.parse::<f64>().unwrap(), 112.49, "{lines_sum}");
    // The current state: inv_2 is void, inv_1 finalized; only inv_1 counts.
    assert_eq!(
        h.scalar("SELECT status FROM `{dataset}.invoices_current` WHERE invoice_id = 'inv_2'")
            .await
            .as_deref(),
        Some("void")
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.invoices_current`")
            .await
            .as_deref(),
        Some("2")
    );
    let open_total = h
        .scalar("SELECT CAST(SUM(total) AS STRING) FROM `{dataset}.invoices_current` WHERE status != 'void'")
        .await
        .unwrap();
    assert_eq!(open_total.parse::<f64>().unwrap(), 12.5, "{open_total}");
    assert_eq!(
        h.scalar("SELECT void_reason FROM `{dataset}.invoices` WHERE event_kind = 'voided'")
            .await
            .as_deref(),
        Some("billed twice")
    );
}

#[tokio::test]
async fn payment_outcomes_land_once_each() {
    use tally_export::tables::PAYMENT_EVENTS;
    let h = harness().await;
    h.stage_payment("p1", &succeeded("pevt_1", "inv_1", "12.50"))
        .await;
    h.stage_payment("p1", &succeeded("pevt_1", "inv_1", "12.50"))
        .await;
    h.stage_payment("p2", &succeeded("pevt_2", "inv_2", "99.99"))
        .await;
    h.stage_payment("p3", &refunded("pevt_3", "inv_2", "20.00"))
        .await;
    h.drain(PAYMENT_EVENTS).await;
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.payment_events`")
            .await
            .as_deref(),
        Some("3")
    );
    let collected = h
        .scalar("SELECT CAST(SUM(amount) AS STRING) FROM `{dataset}.payment_events` WHERE event_kind = 'succeeded'")
        .await
        .unwrap();
    assert_eq!(collected.parse::<f64>().unwrap(), 112.49, "{collected}");
    assert_eq!(
        h.scalar(
            "SELECT refund_reason FROM `{dataset}.payment_events` WHERE event_kind = 'refunded'"
        )
        .await
        .as_deref(),
        Some("requested_by_customer")
    );
}

#[tokio::test]
async fn every_subscription_version_is_a_row_and_the_current_view_has_the_latest() {
    use tally_export::tables::SUBSCRIPTIONS;
    let h = harness().await;
    h.stage_subscription(
        "s1",
        &subscription_version("sub_1", 1, "pv_starter", "active"),
    )
    .await;
    h.stage_subscription("s2", &subscription_version("sub_1", 2, "pv_pro", "active"))
        .await;
    // The same version again under another message id: still one row.
    h.stage_subscription(
        "s2-again",
        &subscription_version("sub_1", 2, "pv_pro", "active"),
    )
    .await;
    h.stage_subscription(
        "s3",
        &subscription_version("sub_1", 3, "pv_pro", "canceled"),
    )
    .await;
    h.stage_subscription(
        "s4",
        &subscription_version("sub_2", 1, "pv_starter", "trialing"),
    )
    .await;
    h.drain(SUBSCRIPTIONS).await;
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.subscriptions`")
            .await
            .as_deref(),
        Some("4")
    );
    assert_eq!(
        h.scalar("SELECT CONCAT(status, '/', plan_version_id) FROM `{dataset}.subscriptions_current` WHERE subscription_id = 'sub_1'")
            .await
            .as_deref(),
        Some("canceled/pv_pro")
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.subscriptions_current`")
            .await
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        h.scalar("SELECT from_plan_version_id FROM `{dataset}.subscriptions` WHERE version = 2 AND subscription_id = 'sub_1'")
            .await
            .as_deref(),
        Some("pv_starter")
    );
}
