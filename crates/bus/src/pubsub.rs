//! Google Cloud Pub/Sub backend (`google-cloud-pubsub`), also used against the
//! emulator.
//!
//! The official crate does not read `PUBSUB_EMULATOR_HOST`; [`PubSubBus::connect`]
//! takes the emulator host from config and points every client at it with
//! anonymous credentials. Without an emulator the clients use Application
//! Default Credentials (Workload Identity on GKE).
//!
//! Every subscription is created with a dead-letter policy: Pub/Sub only
//! reports delivery attempts when one is set, and it is the safety net if a
//! consumer cannot publish the dead letter itself (see [`crate::consumer`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::{DeadLetterPolicy, Message as PubSubMessage};
use google_cloud_pubsub::subscriber::handler::Handler;

use crate::message::Acknowledger;
use crate::{Bus, BusError, Delivery, Message, MessageStream, SubscriptionConfig};

/// A bus on Google Cloud Pub/Sub. Clones share clients and publishers.
#[derive(Debug, Clone)]
pub struct PubSubBus {
    project_id: String,
    emulator_host: Option<String>,
    name_prefix: String,
    topic_admin: TopicAdmin,
    subscription_admin: SubscriptionAdmin,
    subscriber: Subscriber,
    publishers: Arc<Mutex<HashMap<String, Publisher>>>,
    lease_extension: std::time::Duration,
}

fn backend(error: impl std::fmt::Display) -> BusError {
    BusError::Backend(error.to_string())
}

fn status_code(error: &google_cloud_pubsub::Error) -> Option<Code> {
    error.status().map(|status| status.code)
}

fn anonymous() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::anonymous::Builder::new().build()
}

impl PubSubBus {
    /// Connects to `project_id`, through the emulator at `emulator_host` when given.
    /// `name_prefix` is prepended to every topic and subscription name.
    pub async fn connect(
        project_id: &str,
        emulator_host: Option<&str>,
        name_prefix: &str,
    ) -> Result<Self, BusError> {
        let endpoint = emulator_host.map(|host| format!("http://{host}"));
        let mut topics = TopicAdmin::builder();
        let mut subscriptions = SubscriptionAdmin::builder();
        let mut subscriber = Subscriber::builder();
        if let Some(endpoint) = &endpoint {
            topics = topics.with_endpoint(endpoint).with_credentials(anonymous());
            subscriptions = subscriptions
                .with_endpoint(endpoint)
                .with_credentials(anonymous());
            subscriber = subscriber
                .with_endpoint(endpoint)
                .with_credentials(anonymous());
        }
        Ok(Self {
            project_id: project_id.to_owned(),
            emulator_host: emulator_host.map(str::to_owned),
            name_prefix: name_prefix.to_owned(),
            topic_admin: topics.build().await.map_err(backend)?,
            subscription_admin: subscriptions.build().await.map_err(backend)?,
            subscriber: subscriber.build().await.map_err(backend)?,
            publishers: Arc::default(),
            lease_extension: std::time::Duration::from_secs(60),
        })
    }

    /// How long Pub/Sub waits to hear from a consumer before redelivering its
    /// messages elsewhere (10 s – 10 min; default 60 s). This bounds redelivery
    /// after a crash — and, on the emulator, after a nack on an ordered
    /// subscription, which the emulator only honours when the lease runs out.
    pub fn with_lease_extension(mut self, extension: std::time::Duration) -> Self {
        self.lease_extension = extension;
        self
    }

    fn topic_path(&self, topic: &str) -> String {
        format!(
            "projects/{}/topics/{}{topic}",
            self.project_id, self.name_prefix
        )
    }

    fn subscription_path(&self, subscription: &str) -> String {
        format!(
            "projects/{}/subscriptions/{}{subscription}",
            self.project_id, self.name_prefix
        )
    }

    async fn publisher(&self, topic: &str) -> Result<Publisher, BusError> {
        if let Some(publisher) = self
            .publishers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
        {
            return Ok(publisher.clone());
        }
        let mut builder = Publisher::builder(self.topic_path(topic));
        if let Some(host) = &self.emulator_host {
            builder = builder
                .with_endpoint(format!("http://{host}"))
                .with_credentials(anonymous());
        }
        let publisher = builder.build().await.map_err(backend)?;
        self.publishers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), publisher.clone());
        Ok(publisher)
    }
}

#[async_trait]
impl Bus for PubSubBus {
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        let result = self
            .topic_admin
            .create_topic()
            .set_name(self.topic_path(topic))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if status_code(&error) == Some(Code::AlreadyExists) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }

    async fn ensure_subscription(&self, config: &SubscriptionConfig) -> Result<(), BusError> {
        self.ensure_topic(&config.dead_letter_topic).await?;
        // Pub/Sub's own dead-lettering is the safety net one attempt after ours.
        let server_attempts = i32::try_from(config.max_delivery_attempts + 1)
            .unwrap_or(100)
            .clamp(5, 100);
        let ack_deadline_seconds = i32::try_from(config.ack_deadline.as_secs())
            .unwrap_or(600)
            .clamp(10, 600);
        let result = self
            .subscription_admin
            .create_subscription()
            .set_name(self.subscription_path(&config.name))
            .set_topic(self.topic_path(&config.topic))
            .set_ack_deadline_seconds(ack_deadline_seconds)
            .set_enable_message_ordering(config.ordered)
            .set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(self.topic_path(&config.dead_letter_topic))
                    .set_max_delivery_attempts(server_attempts),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if status_code(&error) == Some(Code::AlreadyExists) => {
                self.warn_if_ordering_differs(config).await;
                Ok(())
            }
            Err(error) if status_code(&error) == Some(Code::NotFound) => {
                Err(BusError::TopicNotFound(config.topic.clone()))
            }
            Err(error) => Err(backend(error)),
        }
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let publisher = self.publisher(topic).await?;
        let mut outgoing = PubSubMessage::new()
            .set_data(message.payload.clone())
            .set_attributes(message.wire_attributes());
        if let Some(key) = &message.ordering_key {
            outgoing = outgoing.set_ordering_key(key.clone());
        }
        match publisher.publish(outgoing).await {
            Ok(_) => Ok(()),
            Err(error) => {
                // A failed ordered publish pauses its key; let the caller's retry through.
                if let Some(key) = &message.ordering_key {
                    publisher.resume_publish(key.clone());
                }
                match error {
                    PublishError::Rpc(rpc) if status_code(&rpc) == Some(Code::NotFound) => {
                        Err(BusError::TopicNotFound(topic.to_owned()))
                    }
                    other => Err(backend(other)),
                }
            }
        }
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn MessageStream>, BusError> {
        let ordered = self.is_ordered(subscription).await;
        let stream = self
            .subscriber
            .subscribe(self.subscription_path(subscription))
            .set_max_lease_extension(self.lease_extension)
            .build();
        Ok(crate::age::track(
            subscription,
            Box::new(PubSubStream {
                subscription: subscription.to_owned(),
                stream,
                ordered,
                local_attempts: HashMap::new(),
                nacked_keys: Arc::default(),
            }),
        ))
    }
}

impl PubSubBus {
    /// Whether `subscription` delivers in order (as it exists, whoever created
    /// it). When it cannot be read, assume ordered: holding a nacked key's
    /// later messages back is then merely slower, never out of order.
    async fn is_ordered(&self, subscription: &str) -> bool {
        match self
            .subscription_admin
            .get_subscription()
            .set_subscription(self.subscription_path(subscription))
            .send()
            .await
        {
            Ok(existing) => existing.enable_message_ordering,
            Err(error) => {
                tracing::debug!(%subscription, %error, "cannot read the subscription; treating it as ordered");
                true
            }
        }
    }

    /// Pub/Sub cannot change the ordering of an existing subscription: one
    /// created ordered by an older release stays ordered. That keeps working
    /// (Tally's consumers are correct either way, an ordered one is only
    /// slower), but on the emulator an ordered subscription stops delivering a
    /// disconnected consumer's keys, so say how to move (docs/operations.md,
    /// "Pub/Sub topology").
    async fn warn_if_ordering_differs(&self, config: &SubscriptionConfig) {
        let existing = self
            .subscription_admin
            .get_subscription()
            .set_subscription(self.subscription_path(&config.name))
            .send()
            .await;
        match existing {
            Ok(existing) if existing.enable_message_ordering != config.ordered => {
                tracing::warn!(
                    subscription = %config.name,
                    existing_ordered = existing.enable_message_ordering,
                    wanted_ordered = config.ordered,
                    "the subscription exists with a different message ordering, which Pub/Sub cannot change; \
                     it keeps working as it is; to switch without losing a message, snapshot it, delete it, \
                     create it again and seek it to the snapshot (docs/operations.md, \"Pub/Sub topology\")"
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(subscription = %config.name, %error, "cannot read the existing subscription");
            }
        }
    }
}

struct PubSubStream {
    subscription: String,
    stream: google_cloud_pubsub::subscriber::MessageStream,
    /// Whether the subscription is ordered: only then are a nacked key's later
    /// messages held back (on an unordered one the nacked message may well be
    /// redelivered to another consumer, and holding its key back here would
    /// only burn the other messages' delivery attempts).
    ordered: bool,
    /// Attempt counts seen by this stream, used only if the service does not
    /// report them (no dead-letter policy on a subscription created elsewhere).
    local_attempts: HashMap<String, u32>,
    /// Ordering key → id of its nacked message. Pub/Sub may already have sent
    /// us the key's later messages; they must not be handled before the nacked
    /// one comes back, so they are nacked unseen until it does.
    nacked_keys: NackedKeys,
}

type NackedKeys = Arc<Mutex<HashMap<String, String>>>;

/// How many message ids `local_attempts` remembers before starting afresh.
const LOCAL_ATTEMPTS_LIMIT: usize = 100_000;

impl std::fmt::Debug for PubSubStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PubSubStream")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MessageStream for PubSubStream {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let (incoming, handler) = match self.stream.next().await? {
                Ok(received) => received,
                Err(error) => {
                    if status_code(&error) == Some(Code::NotFound) {
                        return Some(Err(BusError::SubscriptionNotFound(
                            self.subscription.clone(),
                        )));
                    }
                    return Some(Err(backend(error)));
                }
            };
            if self.ordered && !incoming.ordering_key.is_empty() {
                let mut nacked = self
                    .nacked_keys
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let waiting_for = nacked.get(&incoming.ordering_key).cloned();
                match waiting_for {
                    Some(id) if id == incoming.message_id => {
                        nacked.remove(&incoming.ordering_key);
                    }
                    Some(_) => {
                        handler.nack();
                        continue;
                    }
                    None => {}
                }
            }
            let attempt = match handler
                .delivery_attempt()
                .and_then(|attempt| u32::try_from(attempt).ok())
            {
                Some(attempt) if attempt > 0 => attempt,
                _ => {
                    if self.local_attempts.len() >= LOCAL_ATTEMPTS_LIMIT {
                        // Bounded memory: forgetting counts only delays a dead letter.
                        self.local_attempts.clear();
                    }
                    let count = self
                        .local_attempts
                        .entry(incoming.message_id.clone())
                        .or_insert(0);
                    *count += 1;
                    *count
                }
            };
            let message = Message::from_wire(
                incoming.attributes.clone(),
                Some(incoming.ordering_key.clone()),
                incoming.data.to_vec(),
                &incoming.message_id,
            );
            let acknowledger = PubSubAcknowledger {
                handler: Some(handler),
                ordering_key: if self.ordered {
                    incoming.ordering_key.clone()
                } else {
                    String::new()
                },
                pubsub_message_id: incoming.message_id.clone(),
                nacked_keys: Arc::clone(&self.nacked_keys),
            };
            let mut delivery = Delivery::new(message, attempt, Box::new(acknowledger));
            if let Some(published_at) = incoming.publish_time.as_ref().and_then(|time| {
                DateTime::<Utc>::from_timestamp(
                    time.seconds(),
                    time.nanos().try_into().unwrap_or(0),
                )
            }) {
                delivery = delivery.with_published_at(published_at);
            }
            return Some(Ok(delivery));
        }
    }
}

#[derive(Debug)]
struct PubSubAcknowledger {
    /// `None` once settled.
    handler: Option<Handler>,
    /// The key to hold back after a nack (empty on an unordered subscription).
    ordering_key: String,
    pubsub_message_id: String,
    nacked_keys: NackedKeys,
}

impl PubSubAcknowledger {
    fn settle(&mut self, ack: bool) {
        let Some(handler) = self.handler.take() else {
            return;
        };
        if ack {
            handler.ack();
            return;
        }
        if !self.ordering_key.is_empty() {
            self.nacked_keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(self.ordering_key.clone(), self.pubsub_message_id.clone());
        }
        handler.nack();
    }
}

impl Acknowledger for PubSubAcknowledger {
    fn ack(mut self: Box<Self>) {
        self.settle(true);
    }

    fn nack(mut self: Box<Self>) {
        self.settle(false);
    }
}

impl Drop for PubSubAcknowledger {
    fn drop(&mut self) {
        // Dropped without a verdict (a crashed handler): redeliver, keeping key order.
        self.settle(false);
    }
}
