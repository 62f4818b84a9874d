//! How old a subscription's messages are, as far as this process can tell.
//!
//! A message that the bus never hands over (a consumer down, a key held back)
//! is invisible to the consumer that would apply it. What a consumer can see
//! is the age of what it does get, measured from the publish time the backend
//! reports (Pub/Sub's `publish_time`, the in-process bus's enqueue time; it
//! stays the same on every redelivery):
//!
//! - `tally.bus.delivery_age` (histogram, s, by `subscription`): publish →
//!   receipt. It grows with a backlog, with a key held back and released, and
//!   with every redelivery of a failing message.
//! - `tally.bus.oldest_unacked_age_seconds` (gauge, by `subscription`): the
//!   oldest message this process has received and not yet acked or nacked
//!   (0 when it holds none). It grows while a handler is stuck on a message
//!   or deliveries wait for a busy consumer.
//!
//! Both backends put every stream they open through [`track`]. What was
//! published but never delivered is measured against the producers' and
//! consumers' own records instead (`tally status`, and the ingest and rating
//! gauges described in `docs/operations.md`); on Google Cloud, Pub/Sub's own
//! `subscription/oldest_unacked_message_age` sees it too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;

use crate::{BusError, Delivery, MessageStream};

/// The deliveries this process holds, per subscription, and the instruments.
struct Ages {
    subscriptions: Mutex<HashMap<String, Arc<Held>>>,
    delivery_age: Histogram<f64>,
}

/// The unsettled deliveries of one subscription: their publish times.
#[derive(Debug, Default)]
struct Held {
    next_id: AtomicU64,
    published: Mutex<HashMap<u64, DateTime<Utc>>>,
}

impl Held {
    fn enter(self: &Arc<Self>, published_at: DateTime<Utc>) -> InFlight {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, published_at);
        InFlight {
            held: Arc::clone(self),
            id,
        }
    }

    fn oldest(&self) -> Option<DateTime<Utc>> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .min()
            .copied()
    }
}

/// A delivery counted as held until this is dropped (when the delivery is
/// acked, nacked or dropped).
#[derive(Debug)]
pub(crate) struct InFlight {
    held: Arc<Held>,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.held
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

static AGES: OnceLock<Ages> = OnceLock::new();

/// The registry, with its instruments built on first use (after the services
/// installed their meter provider: they subscribe only once started).
fn ages() -> &'static Ages {
    AGES.get_or_init(|| {
        let meter = tally_runtime::telemetry::meter();
        // Observed when metrics are collected, so a stuck message's age keeps
        // growing between deliveries.
        meter
            .f64_observable_gauge("tally.bus.oldest_unacked_age_seconds")
            .with_unit("s")
            .with_description(
                "Age (since publish) of the oldest message this process received and has not acked or nacked, by subscription; 0 when none",
            )
            .with_callback(|observer| {
                let Some(ages) = AGES.get() else {
                    return;
                };
                let now = Utc::now();
                for (subscription, oldest) in ages.snapshot() {
                    observer.observe(
                        oldest.map_or(0.0, |published| seconds_between(published, now)),
                        &[KeyValue::new("subscription", subscription)],
                    );
                }
            })
            .build();
        Ages {
            subscriptions: Mutex::new(HashMap::new()),
            delivery_age: meter
                .f64_histogram("tally.bus.delivery_age")
                .with_unit("s")
                .with_description(
                    "Time from publish to receipt of each delivery (redeliveries included), by subscription",
                )
                .build(),
        }
    })
}

impl Ages {
    fn held(&self, subscription: &str) -> Arc<Held> {
        let mut subscriptions = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(subscriptions.entry(subscription.to_owned()).or_default())
    }

    fn snapshot(&self) -> Vec<(String, Option<DateTime<Utc>>)> {
        let subscriptions: Vec<(String, Arc<Held>)> = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, held)| (name.clone(), Arc::clone(held)))
            .collect();
        subscriptions
            .into_iter()
            .map(|(name, held)| (name, held.oldest()))
            .collect()
    }
}

fn seconds_between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> f64 {
    (later - earlier)
        .to_std()
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// How long ago the oldest message this process received from `subscription`
/// and has not settled was published; `None` when it holds none.
pub fn oldest_unacked_age(subscription: &str) -> Option<Duration> {
    let held = ages()
        .subscriptions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(subscription)
        .cloned()?;
    let oldest = held.oldest()?;
    Some((Utc::now() - oldest).to_std().unwrap_or(Duration::ZERO))
}

/// Wraps a backend's stream of `subscription` so that every delivery records
/// its age on arrival and counts as held until it is settled.
pub(crate) fn track(subscription: &str, inner: Box<dyn MessageStream>) -> Box<dyn MessageStream> {
    Box::new(Tracked {
        inner,
        held: ages().held(subscription),
        label: [KeyValue::new("subscription", subscription.to_owned())],
    })
}

#[derive(Debug)]
struct Tracked {
    inner: Box<dyn MessageStream>,
    held: Arc<Held>,
    label: [KeyValue; 1],
}

#[async_trait]
impl MessageStream for Tracked {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        let mut next = self.inner.next().await;
        if let Some(Ok(delivery)) = &mut next {
            let now = Utc::now();
            // A backend that does not say when it was published: count from now.
            let published_at = delivery.published_at.unwrap_or(now);
            ages()
                .delivery_age
                .record(seconds_between(published_at, now), &self.label);
            delivery.hold(self.held.enter(published_at));
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bus, InProcessBus, Message, SubscriptionConfig};

    #[tokio::test]
    async fn a_delivery_counts_as_held_until_it_is_settled_or_dropped() {
        let bus = InProcessBus::new();
        bus.ensure_topic("age-topic").await.unwrap();
        bus.ensure_subscription(&SubscriptionConfig::unordered("age-sub", "age-topic"))
            .await
            .unwrap();
        for number in 0..3u8 {
            bus.publish("age-topic", Message::new("t", 1, vec![number]))
                .await
                .unwrap();
        }
        assert_eq!(oldest_unacked_age("age-sub"), None, "nothing received yet");
        let mut stream = bus.subscribe("age-sub").await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert!(first.published_at.is_some(), "the in-process bus says when");
        assert!(oldest_unacked_age("age-sub").is_some());
        first.ack();
        assert!(
            oldest_unacked_age("age-sub").is_some(),
            "the second is held"
        );
        second.nack();
        assert_eq!(oldest_unacked_age("age-sub"), None);
        // The nacked one comes back with its first publish time; dropping it settles it too.
        let again = stream.next().await.unwrap().unwrap();
        assert_eq!(again.delivery_attempt, 2);
        assert!(oldest_unacked_age("age-sub").is_some());
        drop(again);
        assert_eq!(oldest_unacked_age("age-sub"), None);
    }
}
