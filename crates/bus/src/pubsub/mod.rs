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
//!
//! Consumers pull in one of two ways ([`PullMode`]): StreamingPull through the
//! official client on Google Cloud ([`streaming`]), unary Pull over REST on
//! the emulator ([`unary`], which says why).

mod delivery_state;
mod streaming;
mod unary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::{DeadLetterPolicy, Message as PubSubMessage};

use crate::{Bus, BusError, Message, MessageStream, SubscriptionConfig};

/// The official client's default flow control: unacked messages per stream.
const DEFAULT_OUTSTANDING: i64 = 1_000;

/// How a consumer receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// StreamingPull through the official client: the default on Google Cloud.
    Streaming,
    /// Unary Pull over the emulator's REST interface: the default on the
    /// emulator, which keeps feeding a killed consumer's stream.
    Unary,
}

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
    pull_mode: PullMode,
}

pub(super) fn backend(error: impl std::fmt::Display) -> BusError {
    BusError::Backend(error.to_string())
}

pub(super) fn status_code(error: &google_cloud_pubsub::Error) -> Option<Code> {
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
            pull_mode: if emulator_host.is_some() {
                PullMode::Unary
            } else {
                PullMode::Streaming
            },
        })
    }

    /// Consumes through StreamingPull even on the emulator (the bus's own
    /// tests cover both paths). Unary Pull needs the emulator: on Google
    /// Cloud this is the only mode.
    pub fn with_streaming_pull(mut self) -> Self {
        self.pull_mode = PullMode::Streaming;
        self
    }

    /// How this bus's consumers pull.
    pub fn pull_mode(&self) -> PullMode {
        self.pull_mode
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
        let key = message.ordering_key.clone();
        let outcome = publisher.publish(outgoing(message)).await;
        settled(&publisher, topic, key, outcome)
    }

    async fn publish_all(&self, topic: &str, messages: Vec<Message>) -> Vec<Result<(), BusError>> {
        let publisher = match self.publisher(topic).await {
            Ok(publisher) => publisher,
            Err(error) => {
                let reason = error.to_string();
                return messages
                    .iter()
                    .map(|_| Err(BusError::Backend(reason.clone())))
                    .collect();
            }
        };
        // `publish` enqueues at once, in call order: the client batches them
        // and keeps each ordering key's messages in this order.
        let pending: Vec<_> = messages
            .into_iter()
            .map(|message| {
                let key = message.ordering_key.clone();
                (key, publisher.publish(outgoing(message)))
            })
            .collect();
        let mut results = Vec::with_capacity(pending.len());
        for (key, future) in pending {
            results.push(settled(&publisher, topic, key, future.await));
        }
        results
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn MessageStream>, BusError> {
        self.open_stream(subscription, None).await
    }

    async fn subscribe_with_flow(
        &self,
        subscription: &str,
        max_outstanding: usize,
    ) -> Result<Box<dyn MessageStream>, BusError> {
        self.open_stream(subscription, Some(max_outstanding.max(1)))
            .await
    }
}

/// The wire form of `message`.
fn outgoing(message: Message) -> PubSubMessage {
    let attributes = message.wire_attributes();
    let mut outgoing = PubSubMessage::new()
        .set_data(message.payload)
        .set_attributes(attributes);
    if let Some(key) = message.ordering_key {
        outgoing = outgoing.set_ordering_key(key);
    }
    outgoing
}

/// The result of one publish; a failed ordered publish pauses its key in the
/// client, so it is resumed to let the caller's retry through.
fn settled<T>(
    publisher: &Publisher,
    topic: &str,
    key: Option<String>,
    outcome: Result<T, PublishError>,
) -> Result<(), BusError> {
    let Err(error) = outcome else {
        return Ok(());
    };
    if let Some(key) = key {
        publisher.resume_publish(key);
    }
    match error {
        PublishError::Rpc(rpc) if status_code(&rpc) == Some(Code::NotFound) => {
            Err(BusError::TopicNotFound(topic.to_owned()))
        }
        other => Err(backend(other)),
    }
}

impl PubSubBus {
    /// A stream of `subscription`; `max_outstanding` sizes its pulls and flow
    /// control (the defaults of each pull path otherwise).
    async fn open_stream(
        &self,
        subscription: &str,
        max_outstanding: Option<usize>,
    ) -> Result<Box<dyn MessageStream>, BusError> {
        let (ordered, ack_deadline) = self.delivery_settings(subscription).await;
        let stream: Box<dyn MessageStream> = match (self.pull_mode, &self.emulator_host) {
            (PullMode::Unary, Some(host)) => {
                let rest = unary::RestSubscription::new(
                    host,
                    &self.subscription_path(subscription),
                    subscription,
                )?;
                let sizing = max_outstanding.map_or_else(
                    unary::PullSizing::default,
                    unary::PullSizing::for_outstanding,
                );
                Box::new(unary::UnaryPull::start(
                    rest,
                    ordered,
                    self.lease_extension,
                    sizing.lease_on_pull(ack_deadline),
                ))
            }
            _ => Box::new(streaming::StreamingPull {
                subscription: subscription.to_owned(),
                stream: self
                    .subscriber
                    .subscribe(self.subscription_path(subscription))
                    .set_max_lease_extension(self.lease_extension)
                    .set_max_outstanding_messages(
                        max_outstanding.map_or(DEFAULT_OUTSTANDING, |max| {
                            i64::try_from(max).unwrap_or(i64::MAX)
                        }),
                    )
                    .build(),
                ordered,
                attempts: delivery_state::Attempts::default(),
                held_keys: delivery_state::HeldKeys::default(),
            }),
        };
        Ok(crate::age::track(subscription, stream))
    }

    /// Whether `subscription` delivers in order, and its ack deadline (as it
    /// exists, whoever created it). When it cannot be read, assume ordered:
    /// holding a nacked key's later messages back is then merely slower, never
    /// out of order; and an unknown deadline (`None`) as longer than the lease.
    async fn delivery_settings(&self, subscription: &str) -> (bool, Option<std::time::Duration>) {
        match self
            .subscription_admin
            .get_subscription()
            .set_subscription(self.subscription_path(subscription))
            .send()
            .await
        {
            Ok(existing) => (
                existing.enable_message_ordering,
                u64::try_from(existing.ack_deadline_seconds)
                    .ok()
                    .map(std::time::Duration::from_secs),
            ),
            Err(error) => {
                tracing::debug!(%subscription, %error, "cannot read the subscription; treating it as ordered");
                (true, None)
            }
        }
    }

    /// Pub/Sub cannot change the ordering of an existing subscription: one
    /// created ordered by an older release stays ordered. That keeps working
    /// (Tally's consumers are correct either way, an ordered one is only
    /// slower), so say how to move (docs/operations.md, "Pub/Sub topology").
    /// The ack deadline is left as it was created (the chart's
    /// `pubsub.ackDeadlineSeconds` may set it): both pull paths lease what
    /// they hold, so it only bounds redelivery after a crash in the instant
    /// between receiving a message and leasing it.
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
