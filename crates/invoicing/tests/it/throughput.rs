//! A bill-run measurement (ignored by default: it prints a figure rather
//! than checking behaviour). `INVOICING_BENCH_SUBSCRIPTIONS` (default 1000)
//! subscriptions, each with a recurring fee in advance and one usage charge
//! with usage, are billed at a period end with no grace (invoice created and
//! finalized in the same run).

use std::time::Instant;

use crate::support::*;

#[tokio::test]
#[ignore = "a measurement: cargo test -p tally-invoicing --test it throughput -- --ignored --nocapture"]
async fn bill_run_throughput() {
    let count: usize = std::env::var("INVOICING_BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000);
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let plan = h
        .plan("bench", PlanSpec::advance("10.00").calls("0.01"))
        .await;
    let setup = Instant::now();
    for index in 0..count {
        let customer = h.customer(&format!("bench-{index}")).await;
        h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
        h.calls(&customer, &format!("bench-{index}"), 3, at(2025, 1, 10))
            .await;
    }
    h.bill_at(at(2025, 1, 1)).await;
    let setup = setup.elapsed();
    h.clock.set(at(2025, 2, 1)).unwrap();
    h.sync().await;
    let started = Instant::now();
    let summary = h.invoicing.bill_run().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(summary.invoices_created, count as u64);
    assert_eq!(summary.invoices_finalized, count as u64);
    // How much of that is rating's: the same usage query once per subscription.
    let mut rating = tally_proto::rating::rating_service_client::RatingServiceClient::connect(
        h.rating_address.clone(),
    )
    .await
    .unwrap();
    let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM invoicing.subscriptions")
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
    let usage_started = Instant::now();
    for (id,) in &ids {
        rating
            .get_usage_charges(tally_proto::rating::GetUsageChargesRequest {
                subscription_id: id.clone(),
                period: Some(tally_proto::common::TimeRange {
                    start_time: Some(ts(at(2025, 1, 1))),
                    end_time: Some(ts(at(2025, 2, 1))),
                }),
            })
            .await
            .unwrap();
    }
    let usage = usage_started.elapsed();
    println!(
        "rating alone: {:.2} ms per GetUsageCharges ({} calls in {:.2} s)",
        usage.as_secs_f64() * 1000.0 / ids.len() as f64,
        ids.len(),
        usage.as_secs_f64()
    );
    println!(
        "bill run: {count} subscriptions in {:.2} s ({:.2} ms each, {:.0} per second); setup {:.1} s",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / count as f64,
        count as f64 / elapsed.as_secs_f64(),
        setup.as_secs_f64()
    );
}
