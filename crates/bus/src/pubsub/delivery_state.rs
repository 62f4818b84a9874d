//! What both Pub/Sub pull paths ([`super::streaming`], [`super::unary`]) keep
//! per stream: the ordering keys held back after a nack, and attempt counts
//! when the service does not report them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Ordering key → id of its nacked message. Pub/Sub may already have sent us
/// the key's later messages; they must not be handled before the nacked one
/// comes back, so they are nacked unseen until it does. Only used on ordered
/// subscriptions: on an unordered one the nacked message may well be
/// redelivered to another consumer, and holding its key back here would only
/// burn the other messages' delivery attempts.
#[derive(Debug, Clone, Default)]
pub(super) struct HeldKeys(Arc<Mutex<HashMap<String, String>>>);

impl HeldKeys {
    /// Whether the message `message_id` of `ordering_key` may be handled now.
    /// `false` means a nacked earlier message of its key has not come back yet:
    /// nack this one unseen.
    pub(super) fn admit(&self, ordering_key: &str, message_id: &str) -> bool {
        if ordering_key.is_empty() {
            return true;
        }
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get(ordering_key) {
            Some(waiting_for) if waiting_for == message_id => {
                held.remove(ordering_key);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Holds `ordering_key` back until `message_id` (just nacked) comes again.
    pub(super) fn hold(&self, ordering_key: &str, message_id: &str) {
        if ordering_key.is_empty() {
            return;
        }
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ordering_key.to_owned(), message_id.to_owned());
    }
}

/// How many message ids [`Attempts`] remembers before starting afresh.
const LOCAL_ATTEMPTS_LIMIT: usize = 100_000;

/// Delivery attempts: Pub/Sub's count when it reports one (it does when the
/// subscription has a dead-letter policy, as Tally's always do), otherwise
/// the times this stream has seen the message.
#[derive(Debug, Default)]
pub(super) struct Attempts(HashMap<String, u32>);

impl Attempts {
    pub(super) fn count(&mut self, reported: Option<i32>, message_id: &str) -> u32 {
        if let Some(attempt) = reported.and_then(|attempt| u32::try_from(attempt).ok())
            && attempt > 0
        {
            return attempt;
        }
        if self.0.len() >= LOCAL_ATTEMPTS_LIMIT {
            // Bounded memory: forgetting counts only delays a dead letter.
            self.0.clear();
        }
        let count = self.0.entry(message_id.to_owned()).or_insert(0);
        *count += 1;
        *count
    }
}
