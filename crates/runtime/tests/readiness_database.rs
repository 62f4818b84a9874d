//! Readiness follows PostgreSQL, taken away through a proxy and brought back;
//! liveness does not.
//!
//! In a test binary of its own, waiting by polling `Health/Check`: a
//! `Health/Watch` stream opened after readiness changed sometimes never
//! yielded the status `Check` was already answering (seen under load, alone
//! and beside other tests). Whether that is tonic-health, the runtime's
//! decode-errors layer around server-streaming calls, or the test is not
//! known yet; Kubernetes probes use `Check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tally_runtime::Shutdown;
use tally_runtime::auth::AuthLayer;
use tally_runtime::readiness::Readiness;
use tally_runtime::server::{self, GrpcServer};
use tally_testkit::tcp_proxy::TcpProxy;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICE: &str = "tally.test.v1.FirstService";
const OTHER: &str = "tally.test.v1.SecondService";

/// Generous: conditions are waited on, never slept through.
const BOUND: Duration = Duration::from_secs(60);

/// A server with two (route-less) services on a free port; `tasks` are
/// `SERVICE`'s background tasks.
async fn serve(
    readiness: Readiness,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: &Shutdown,
) -> Channel {
    let first = GrpcServer::new(|routes| routes, vec![SERVICE]).with_background_tasks(tasks);
    let second = GrpcServer::new(|routes| routes, vec![OTHER]);
    let server = first.merge(second).with_readiness(readiness);
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = listener.local_addr;
    let serving = shutdown.clone();
    tokio::spawn(async move {
        server
            .serve(
                listener,
                AuthLayer::disabled(),
                serving,
                Duration::from_secs(1),
            )
            .await
            .unwrap();
    });
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn status(channel: &Channel, service: &str) -> ServingStatus {
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

/// Waits (polling `Health/Check`, up to [`BOUND`]) until `service` reports
/// `expected`. Not through `Health/Watch`: a watch opened after the change
/// sometimes never yielded the status `Check` was already answering (seen
/// under load; to be understood — see the closing note of issue 23).
async fn until(channel: &Channel, service: &str, expected: ServingStatus) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let now = status(channel, service).await;
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{service}` did not become {expected:?} within {BOUND:?} (still {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn readiness_follows_postgresql_but_liveness_does_not() {
    let database = tally_testkit::postgres::database().await;
    let proxy = TcpProxy::start(&TcpProxy::target_of(&database.url))
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&proxy.url_through(&database.url))
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let readiness = Readiness::default()
        .with_database(pool, Duration::from_secs(1))
        .with_interval(Duration::from_millis(50));
    let channel = serve(readiness, Vec::new(), &shutdown).await;
    for name in ["", SERVICE, OTHER] {
        assert_eq!(
            status(&channel, name).await,
            ServingStatus::Serving,
            "{name}"
        );
    }

    proxy.take_down();
    until(&channel, SERVICE, ServingStatus::NotServing).await;
    until(&channel, OTHER, ServingStatus::NotServing).await;
    assert_eq!(
        status(&channel, "").await,
        ServingStatus::Serving,
        "liveness does not follow the database"
    );

    proxy.bring_back();
    until(&channel, SERVICE, ServingStatus::Serving).await;
    until(&channel, OTHER, ServingStatus::Serving).await;
    assert_eq!(status(&channel, "").await, ServingStatus::Serving);

    // Shutting down: nothing is ready or live any more (NOT_SERVING, or no
    // answer once the server has stopped).
    shutdown.trigger();
    for name in [SERVICE, ""] {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let answer = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: name.to_owned(),
                })
                .await;
            match answer {
                Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "`{name}` still SERVING {BOUND:?} after shutdown"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => break,
            }
        }
    }
}
