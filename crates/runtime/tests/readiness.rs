//! `grpc.health.v1` as liveness (`""`) and readiness (each service's name):
//! readiness follows PostgreSQL (taken away through a proxy and brought
//! back), the migration version and the background tasks; liveness follows
//! only the tasks. Reflection answers v1 and v1alpha.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

#[tokio::test]
async fn migrations_behind_the_binary_are_not_ready() {
    let database = tally_testkit::postgres::database().await;
    let shutdown = Shutdown::new();
    let readiness = Readiness::default()
        .with_database(database.pool.clone(), Duration::from_secs(5))
        .with_interval(Duration::from_millis(50));
    let channel = serve(readiness, Vec::new(), &shutdown).await;
    assert_eq!(status(&channel, SERVICE).await, ServingStatus::Serving);

    // The newest migration undone (as far as the version goes), then redone.
    let newest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    let set_version = |from: i64, to: i64| {
        sqlx::query("UPDATE _sqlx_migrations SET version = $2 WHERE version = $1")
            .bind(from)
            .bind(to)
            .execute(&database.pool)
    };
    set_version(newest, -newest).await.unwrap();
    until(&channel, SERVICE, ServingStatus::NotServing).await;
    assert_eq!(status(&channel, "").await, ServingStatus::Serving);
    set_version(-newest, newest).await.unwrap();
    until(&channel, SERVICE, ServingStatus::Serving).await;

    // A failed migration is not ready either.
    sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = $1")
        .bind(newest)
        .execute(&database.pool)
        .await
        .unwrap();
    until(&channel, SERVICE, ServingStatus::NotServing).await;
    shutdown.trigger();
}

#[tokio::test]
async fn a_stopped_background_task_makes_its_service_unready_and_the_process_not_live() {
    let shutdown = Shutdown::new();
    let (stop_task, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = stopped.await;
    });
    let readiness = Readiness::default().with_interval(Duration::from_millis(50));
    let channel = serve(readiness, vec![task], &shutdown).await;
    assert_eq!(status(&channel, SERVICE).await, ServingStatus::Serving);
    assert_eq!(status(&channel, "").await, ServingStatus::Serving);

    stop_task.send(()).unwrap();
    until(&channel, SERVICE, ServingStatus::NotServing).await;
    until(&channel, "", ServingStatus::NotServing).await;
    assert_eq!(
        status(&channel, OTHER).await,
        ServingStatus::Serving,
        "another service's tasks are not its business"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn reflection_answers_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let shutdown = Shutdown::new();
    let channel = serve(Readiness::default(), Vec::new(), &shutdown).await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1 did not list services");
    };
    let v1_names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha did not list services");
    };
    let v1alpha_names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();

    for names in [&v1_names, &v1alpha_names] {
        assert!(
            names.iter().any(|name| name == "grpc.health.v1.Health"),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .any(|name| name == "tally.ingest.v1.IngestService"),
            "{names:?}"
        );
    }
    // The same services, but for the reflection service each lists of itself.
    let without_reflection = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|name| !name.starts_with("grpc.reflection."))
            .cloned()
            .collect()
    };
    assert_eq!(
        without_reflection(&v1_names),
        without_reflection(&v1alpha_names)
    );
    shutdown.trigger();
}

/// Serves `tasks` as `SERVICE`'s background tasks with `grace`, until
/// `shutdown`; the handle ends when `serve` returns.
async fn serve_tasks(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: &Shutdown,
    grace: Duration,
) -> tokio::task::JoinHandle<()> {
    let server = GrpcServer::new(|routes| routes, vec![SERVICE]).with_background_tasks(tasks);
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let serving = shutdown.clone();
    tokio::spawn(async move {
        server
            .serve(listener, AuthLayer::disabled(), serving, grace)
            .await
            .unwrap();
    })
}

#[tokio::test]
async fn a_stopping_server_waits_for_its_background_tasks() {
    let shutdown = Shutdown::new();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A consumer finishing the message in hand after the signal.
    let task = {
        let shutdown = shutdown.clone();
        let finished = std::sync::Arc::clone(&finished);
        tokio::spawn(async move {
            shutdown.wait().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let serving = serve_tasks(vec![task], &shutdown, BOUND).await;
    shutdown.trigger();
    tokio::time::timeout(BOUND, serving).await.unwrap().unwrap();
    assert!(
        finished.load(std::sync::atomic::Ordering::SeqCst),
        "serve returned before its background task ended"
    );
}

#[tokio::test]
async fn a_background_task_stuck_past_the_grace_period_is_stopped() {
    /// Set when the task's future is dropped (it was aborted).
    struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let shutdown = Shutdown::new();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stuck = {
        let guard = SetOnDrop(std::sync::Arc::clone(&dropped));
        tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        })
    };
    let serving = serve_tasks(vec![stuck], &shutdown, Duration::from_millis(100)).await;
    shutdown.trigger();
    tokio::time::timeout(BOUND, serving).await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck task was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
