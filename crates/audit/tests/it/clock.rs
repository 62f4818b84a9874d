//! Clock moves: `AdvanceTime` and `SetTime` through `ClockRecorder` leave one
//! entry each (the caller's key, the instants before and after); a move the
//! clock refuses rolls its entry back.

use std::sync::Arc;

use serde_json::{Value, json};
use tally_audit::{ClockRecorder, Filter, Schema};
use tally_proto::clock::clock_service_server::ClockService;
use tally_proto::clock::{AdvanceTimeRequest, SetTimeRequest};
use tally_runtime::auth::{ApiKey, Scope};
use tally_runtime::clock_service::ClockApi;
use tally_runtime::{Clock as _, ManualClock};
use tally_testkit::SequentialIds;
use tally_testkit::postgres;
use tonic::Request;

use super::at;

fn by_key<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(ApiKey {
        id: "key_ops".into(),
        name: "operator".into(),
        scopes: [Scope::Admin].into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-clock".parse().unwrap());
    request
}

fn state(text: Option<&String>) -> Value {
    serde_json::from_str(text.unwrap()).unwrap()
}

#[tokio::test]
async fn each_clock_move_records_one_entry_and_a_refused_one_none() {
    let database = postgres::database().await;
    let clock = ManualClock::new(at(0));
    let recorder = ClockRecorder::new(
        database.pool.clone(),
        Arc::new(SequentialIds::default()),
        Schema::Ingest,
        "ingest",
    );
    let api = ClockApi::new(Arc::new(clock.clone())).with_moves(Arc::new(recorder));

    api.advance_time(by_key(AdvanceTimeRequest {
        duration: Some(prost_types::Duration {
            seconds: 90,
            nanos: 0,
        }),
    }))
    .await
    .unwrap();
    api.set_time(by_key(SetTimeRequest {
        time: Some(tally_proto::convert::timestamp(at(3600))),
    }))
    .await
    .unwrap();
    // Backwards: the clock refuses, the entry written before rolls back.
    let refused = api
        .set_time(by_key(SetTimeRequest {
            time: Some(tally_proto::convert::timestamp(at(60))),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(clock.now(), at(3600));

    let (entries, _) = tally_audit::list(
        &database.pool,
        &[Schema::Ingest],
        &Filter::default(),
        None,
        10,
    )
    .await
    .unwrap();
    let listed: Vec<_> = entries
        .iter()
        .map(|entry| {
            (
                entry.action.as_str(),
                entry.resource_type.as_str(),
                entry.resource_id.as_str(),
                entry.actor_id.as_str(),
                entry.request_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "clock.advanced",
                "clock",
                "ingest",
                "key_ops",
                Some("req-clock")
            ),
            ("clock.set", "clock", "ingest", "key_ops", Some("req-clock")),
        ]
    );
    let instant = |seconds| json!({ "now": at(seconds).to_rfc3339_opts(chrono::SecondsFormat::Micros, true) });
    assert_eq!(state(entries[0].before_state.as_ref()), instant(0));
    assert_eq!(state(entries[0].after_state.as_ref()), instant(90));
    assert_eq!(state(entries[1].before_state.as_ref()), instant(90));
    assert_eq!(state(entries[1].after_state.as_ref()), instant(3600));
    let verification = tally_audit::verify(&database.pool, Schema::Ingest)
        .await
        .unwrap();
    assert_eq!(verification.broken, None);
    assert_eq!(verification.entries_checked, 2);
}
