//! Helpers shared by the bus tests.

use std::time::Duration;

use tally_bus::{Delivery, Message, MessageStream};

/// How long a test waits for one delivery.
pub const WAIT: Duration = Duration::from_secs(30);

/// The next delivery, failing the test after [`WAIT`].
pub async fn next(stream: &mut Box<dyn MessageStream>) -> Delivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a delivery within 30 s")
        .expect("the stream is open")
        .expect("a delivery, not an error")
}

/// Message `number` of ordering key `key`, payload `key:number`.
pub fn numbered(key: &str, number: usize) -> Message {
    Message::new(
        "tally.test.v1.Numbered",
        1,
        format!("{key}:{number}").into_bytes(),
    )
    .with_ordering_key(key)
}
