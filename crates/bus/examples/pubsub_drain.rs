//! The ceiling beside Tally's Pub/Sub intake (`bench/pubsub.sh`): drains a
//! subscription that already holds `EVENTS` messages, doing nothing with a
//! message but ack it, and prints the rate.
//!
//! ```text
//! pubsub_drain <emulator host:port> <project> <subscription> <events> <mode>
//! ```
//!
//! Modes:
//! - `crate-streaming`: StreamingPull of the official `google-cloud-pubsub`
//!   crate on its own (default flow control: 1,000 outstanding messages);
//! - `bus-unary`: the bus's own stream as Tally's consumers use it on the
//!   emulator (unary Pull over REST, leases, batched acks);
//! - `bus-streaming`: the bus's own stream on StreamingPull (Google Cloud's path).
//!
//! The clock starts when the stream is opened; it stops when the last
//! message has been acked (handed to the client's ack machinery, as the
//! Python client's callback does).

use std::time::{Duration, Instant};

use google_cloud_pubsub::client::Subscriber;
use tally_bus::{Bus, PubSubBus};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, project, subscription, events, mode] = args.as_slice() else {
        anyhow::bail!(
            "usage: pubsub_drain <emulator host:port> <project> <subscription> <events> crate-streaming|bus-unary|bus-streaming"
        );
    };
    let events: u64 = events.parse()?;
    let path = format!("projects/{project}/subscriptions/{subscription}");
    let (drained, elapsed) = match mode.as_str() {
        "crate-streaming" => crate_streaming(host, &path, events).await?,
        "bus-unary" | "bus-streaming" => {
            let mut bus = PubSubBus::connect(project, Some(host), "").await?;
            if mode == "bus-streaming" {
                bus = bus.with_streaming_pull();
            }
            bus_stream(&bus, subscription, events).await?
        }
        other => anyhow::bail!("unknown mode {other}"),
    };
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{mode} drained {drained} messages of {subscription} in {:.2} s: {:.0} msg/s",
            elapsed.as_secs_f64(),
            drained as f64 / elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// How long to wait for the next message before giving up on a drain.
const IDLE: Duration = Duration::from_secs(60);

async fn crate_streaming(host: &str, path: &str, events: u64) -> anyhow::Result<(u64, Duration)> {
    let subscriber = Subscriber::builder()
        .with_endpoint(format!("http://{host}"))
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await?;
    let started = Instant::now();
    let mut stream = subscriber.subscribe(path).build();
    let mut drained = 0;
    while drained < events {
        let Ok(next) = tokio::time::timeout(IDLE, stream.next()).await else {
            anyhow::bail!("only {drained} of {events} messages arrived");
        };
        let Some(next) = next else { break };
        let (_message, handler) = next?;
        handler.ack();
        drained += 1;
    }
    Ok((drained, started.elapsed()))
}

async fn bus_stream(
    bus: &PubSubBus,
    subscription: &str,
    events: u64,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut stream = bus.subscribe(subscription).await?;
    let mut drained = 0;
    while drained < events {
        let Ok(next) = tokio::time::timeout(IDLE, stream.next()).await else {
            anyhow::bail!("only {drained} of {events} messages arrived");
        };
        let Some(next) = next else { break };
        next?.ack();
        drained += 1;
    }
    let elapsed = started.elapsed();
    // Let the settling task send the last acks before the runtime goes.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((drained, elapsed))
}
