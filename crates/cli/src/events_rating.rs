//! What `tally events send` says after sending: which accepted events rating
//! billed, which it holds as unrated usage and why (an unknown customer, a
//! misspelled event type, a bad property, a timestamp no subscription
//! covers…), and which it has not heard of yet — over rating's
//! `GetEventRatingStatus`.
//!
//! Without `--wait-rated` it looks for a moment (rating usually hears of an
//! event within milliseconds in `tally dev`) and says how to check later;
//! with it, it waits until every event is rated or unrated, at most the
//! given bound.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tally_proto::rating::rating_service_client::RatingServiceClient;
use tally_proto::rating::{EventRatingState, GetEventRatingStatusRequest};

use crate::admin::Authenticated;
use crate::admin::usage::{hints, reason_name};

/// Most accepted events followed (the first ones sent): a bulk load of
/// millions is checked with `tally usage unrated` instead of held in memory.
pub const MAX_FOLLOWED: usize = 100_000;

/// Most ids asked about per call (the RPC's limit).
const IDS_PER_CALL: usize = 1000;

/// How long `events send` looks without `--wait-rated`.
const SHORT_LOOK: Duration = Duration::from_secs(2);

/// Between two looks.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// An accepted event to follow: its input line, customer and id.
#[derive(Debug, Clone)]
pub struct Sent {
    pub line: usize,
    pub customer_id: String,
    pub event_id: String,
}

/// The rating state of the sent events once looked at.
#[derive(Debug, Default)]
struct Tally {
    rated: u64,
    /// `(line, customer, event id, reason, detail)`.
    unrated: Vec<(usize, String, String, i32, String)>,
    pending: Vec<Sent>,
}

/// Looks at (or, given `wait`, waits for) the rating of `sent`, prints the
/// unrated events with their reason and a summary, and says how to check
/// what is still pending. Returns an error only when `wait` ran out.
#[allow(clippy::print_stdout)]
pub async fn report(
    channel: Authenticated,
    sent: Vec<Sent>,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    if sent.is_empty() {
        return Ok(());
    }
    let followed = sent.len();
    let mut rating = RatingServiceClient::new(channel);
    let bound = wait.unwrap_or(SHORT_LOOK);
    let started = Instant::now();
    let mut tally = Tally {
        pending: sent,
        ..Tally::default()
    };
    loop {
        match look(&mut rating, &mut tally).await {
            Ok(()) => {}
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                eprintln!(
                    "rating not checked: this key cannot read rating (scope `read`); \
                     see what is not billed with `tally usage unrated`"
                );
                return Ok(());
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                // A cluster's ingest: rating is served elsewhere.
                let text = "rating not checked: the address does not serve rating (pass \
                            --rating-address, e.g. rating's in a cluster); see what is not \
                            billed with `tally usage unrated`";
                if wait.is_some() {
                    anyhow::bail!("{text}");
                }
                eprintln!("{text}");
                return Ok(());
            }
            Err(status) => {
                return Err(crate::admin::refused("GetEventRatingStatus", &status));
            }
        }
        if tally.pending.is_empty() || started.elapsed() >= bound {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    tally
        .unrated
        .sort_by(|left, right| left.0.cmp(&right.0).then(left.2.cmp(&right.2)));
    for (line, _, event_id, reason, detail) in &tally.unrated {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        println!(
            "line {line}: {event_id} accepted, not billed: {}{detail}",
            reason_name(*reason)
        );
    }
    eprintln!(
        "rated {}, unrated {}, not rated yet {}{}",
        tally.rated,
        tally.unrated.len(),
        tally.pending.len(),
        if followed == MAX_FOLLOWED {
            format!(" (of the first {MAX_FOLLOWED} accepted; `tally usage unrated` lists all)")
        } else {
            String::new()
        }
    );
    for hint in hints(tally.unrated.iter().map(|unrated| unrated.3)) {
        eprintln!("{hint}");
    }
    if !tally.pending.is_empty() {
        let customers: Vec<&str> = tally
            .pending
            .iter()
            .map(|sent| sent.customer_id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let example = customers.first().copied().unwrap_or_default();
        eprintln!(
            "{} accepted events are not rated yet: rating hears of them over the bus. Check \
             with `tally usage unrated --customer {example}` (or `tally usage cost`), or send \
             with --wait-rated to wait",
            tally.pending.len()
        );
        if wait.is_some() {
            anyhow::bail!(
                "{} events were neither rated nor unrated within {} s (is rating running?)",
                tally.pending.len(),
                bound.as_secs()
            );
        }
    }
    Ok(())
}

/// Asks rating about every pending event once, moving the settled ones out.
async fn look(
    rating: &mut RatingServiceClient<Authenticated>,
    tally: &mut Tally,
) -> Result<(), tonic::Status> {
    let mut by_customer: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    for sent in std::mem::take(&mut tally.pending) {
        by_customer
            .entry(sent.customer_id.clone())
            .or_default()
            .push(sent);
    }
    for (customer_id, events) in by_customer {
        for chunk in events.chunks(IDS_PER_CALL) {
            let statuses = rating
                .get_event_rating_status(GetEventRatingStatusRequest {
                    customer_id: customer_id.clone(),
                    event_ids: chunk.iter().map(|sent| sent.event_id.clone()).collect(),
                })
                .await?
                .into_inner()
                .statuses;
            for (sent, status) in chunk.iter().zip(statuses) {
                match EventRatingState::try_from(status.state) {
                    Ok(EventRatingState::Rated) => tally.rated += 1,
                    Ok(EventRatingState::Unrated) => tally.unrated.push((
                        sent.line,
                        sent.customer_id.clone(),
                        sent.event_id.clone(),
                        status.reason,
                        status.detail,
                    )),
                    _ => tally.pending.push(sent.clone()),
                }
            }
        }
    }
    Ok(())
}
