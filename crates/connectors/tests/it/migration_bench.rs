//! The parity benchmark (docs/benchmarks.md): `TALLY_PARITY_CUSTOMERS`
//! customers (default 10,000), each compared for one period — Tally's
//! invoice through the port, Orb's read from the pricing fake over HTTP,
//! compared, and the report stored in PostgreSQL — one after another, timed.
//! Run by hand: `cargo test -p tally-connectors --test it
//! migration_bench -- --ignored --nocapture`.

use std::time::Instant;

use crate::migration::World;

#[tokio::test]
#[ignore = "a benchmark: run by hand"]
async fn parity_of_ten_thousand_customers() {
    let customers: usize = std::env::var("TALLY_PARITY_CUSTOMERS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10_000);
    let world = World::open("2026-12-01T00:10:00Z").await;
    let mut rows = Vec::new();
    for index in 0..customers {
        let customer = format!("cus_bench{index:06}");
        let external = format!("bench{index:06}");
        rows.push((customer, external, (index as u64 % 50) * 1_000));
    }
    for (customer, external, calls) in &rows {
        world
            .customer(customer, external, *calls, &["2026-12-01T00:00:00Z"])
            .await;
    }
    let started = Instant::now();
    let mut matched = Vec::with_capacity(customers);
    for (customer, _, _) in &rows {
        matched.push(
            world
                .compare(customer, "2026-12-01T00:00:00Z")
                .await
                .matched,
        );
    }
    let elapsed = started.elapsed();
    assert!(matched.iter().all(|matched| *matched));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM connectors.parity_findings")
        .fetch_one(&world.database.pool)
        .await
        .unwrap();
    assert_eq!(stored, i64::try_from(customers * 7).unwrap());
    #[allow(clippy::print_stdout)]
    {
        println!(
            "parity: {customers} customers in {:.1} s ({:.0} customers/s), {stored} findings stored",
            elapsed.as_secs_f64(),
            customers as f64 / elapsed.as_secs_f64()
        );
    }
}
