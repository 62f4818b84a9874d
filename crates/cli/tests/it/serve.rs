use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tally_proto::ingest::IngestBatchRequest;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn tally(database_url: &str) -> Command {
    let mut command = Command::new(TALLY);
    command
        .env("DATABASE_URL", database_url)
        .env("TALLY_TELEMETRY__LOG_FORMAT", "json")
        .env("TALLY_AUTH__REFRESH_INTERVAL_SECONDS", "1")
        .env_remove("TALLY_CONFIG")
        .env_remove("RUST_LOG");
    command
}

fn create_key(database_url: &str, scope: &str) -> String {
    let output = tally(database_url)
        .args([
            "keys",
            "create",
            "--name",
            &format!("test-{scope}"),
            "--scope",
            scope,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A `tally serve` child process, killed when dropped (a test that fails, or
/// ends without [`RunningService::terminate`], leaves no server behind).
struct RunningService {
    child: Option<Child>,
    address: String,
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A peer key no database knows (services that call peers need one to start).
const UNREGISTERED_PEER_KEY: &str = "tally_peer_key_that_no_database_has_registered";

impl RunningService {
    async fn start(database_url: &str, service: &str) -> Self {
        Self::start_with(database_url, service, &[]).await
    }

    /// [`RunningService::start`] with `env` over the defaults.
    async fn start_with(database_url: &str, service: &str, env: &[(&str, &str)]) -> Self {
        let port = tally_runtime::local_postgres::free_port().unwrap();
        let child = tally(database_url)
            .args(["serve", service])
            .env("TALLY_GRPC__LISTEN_ADDR", format!("127.0.0.1:{port}"))
            // Separate processes need their peers' addresses (connected lazily,
            // never called by these tests) and a key to call them with.
            .env("TALLY_PEERS__INGEST_URL", "http://127.0.0.1:9")
            .env("TALLY_PEERS__RATING_URL", "http://127.0.0.1:9")
            .env("TALLY_PEERS__INVOICING_URL", "http://127.0.0.1:9")
            .env("TALLY_API_KEY", UNREGISTERED_PEER_KEY)
            .env(
                "TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR",
                format!(
                    "127.0.0.1:{}",
                    tally_runtime::local_postgres::free_port().unwrap()
                ),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let running = Self {
            child: Some(child),
            address: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while Channel::from_shared(running.address.clone())
            .unwrap()
            .connect()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{service} did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.address.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn terminate(mut self) -> Output {
        let child = self.child.take().expect("terminated once");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait_with_output().unwrap()
    }
}

async fn list_services(channel: Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected reflection response {other:?}"),
    }
}

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test]
async fn every_service_serves_health_and_reflection_without_a_key() {
    let database = tally_testkit::postgres::database().await;
    let expectations = [
        ("ingest", vec!["tally.ingest.v1.IngestService"]),
        (
            "rating",
            vec![
                "tally.rating.v1.CatalogService",
                "tally.rating.v1.RatingService",
            ],
        ),
        (
            "invoicing",
            vec![
                "tally.invoicing.v1.CustomerService",
                "tally.invoicing.v1.SubscriptionService",
                "tally.invoicing.v1.InvoiceService",
                "tally.invoicing.v1.CreditService",
            ],
        ),
        (
            "payments",
            vec![
                "tally.payments.v1.PaymentService",
                "tally.payments.v1.ReconciliationService",
            ],
        ),
    ];
    for (service, names) in expectations {
        let running = RunningService::start(&database.url, service).await;
        let mut health = HealthClient::new(running.channel().await);
        for name in names
            .iter()
            .chain(["", "tally.clock.v1.ClockService"].iter())
        {
            let status = health
                .check(HealthCheckRequest {
                    service: (*name).to_owned(),
                })
                .await
                .unwrap_or_else(|error| panic!("{service}: health of `{name}`: {error}"))
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service}: {name}");
        }
        let listed = list_services(running.channel().await).await;
        for name in &names {
            assert!(
                listed.iter().any(|listed| listed == name),
                "{service}: {name} not in {listed:?}"
            );
        }
        assert!(
            listed
                .iter()
                .any(|listed| listed == "grpc.health.v1.Health")
        );
        let output = running.terminate();
        assert!(
            output.status.success(),
            "{service} exited with {:?}",
            output.status
        );
    }
}

#[tokio::test]
async fn calls_need_a_valid_key_with_the_right_scope() {
    let database = tally_testkit::postgres::database().await;
    let ingest_key = create_key(&database.url, "ingest");
    let read_key = create_key(&database.url, "read");
    let running = RunningService::start(&database.url, "ingest").await;
    let mut client = IngestServiceClient::new(running.channel().await);

    let missing = client
        .ingest_batch(IngestBatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated, "{missing:?}");
    assert!(
        missing.message().contains("missing API key"),
        "{}",
        missing.message()
    );

    let wrong = client
        .ingest_batch(with_key(IngestBatchRequest::default(), "tally_0000"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);

    let forbidden = client
        .ingest_batch(with_key(IngestBatchRequest::default(), &read_key))
        .await
        .unwrap_err();
    assert_eq!(forbidden.code(), tonic::Code::PermissionDenied);
    assert!(
        forbidden.message().contains("`ingest` scope"),
        "{}",
        forbidden.message()
    );

    // A valid key reaches the handler, which refuses the empty batch itself.
    let reached = client
        .ingest_batch(with_key(IngestBatchRequest::default(), &ingest_key))
        .await
        .unwrap_err();
    assert_eq!(reached.code(), tonic::Code::InvalidArgument, "{reached:?}");
    assert!(
        reached.message().starts_with("events:"),
        "{}",
        reached.message()
    );

    // Revocation takes effect within the refresh interval.
    let list = tally(&database.url)
        .args(["keys", "list"])
        .output()
        .unwrap();
    let listing = String::from_utf8(list.stdout).unwrap();
    let key_id = listing
        .lines()
        .find(|line| line.contains("test-ingest"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let revoke = tally(&database.url)
        .args(["keys", "revoke", &key_id])
        .output()
        .unwrap();
    assert!(revoke.status.success());
    let started = Instant::now();
    loop {
        let result = client
            .ingest_batch(with_key(IngestBatchRequest::default(), &ingest_key))
            .await;
        if result.as_ref().unwrap_err().code() == tonic::Code::Unauthenticated {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "revoked key still accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.terminate();
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let database = tally_testkit::postgres::database().await;
    let running = RunningService::start(&database.url, "invoicing").await;
    let mut health = HealthClient::new(running.channel().await);
    health.check(HealthCheckRequest::default()).await.unwrap();
    let started = Instant::now();
    let output = running.terminate();
    assert!(output.status.success(), "exit status {:?}", output.status);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let logs = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("shutdown signal received"), "{logs}");
    assert!(logs.contains("grpc server stopped"), "{logs}");
}

#[tokio::test]
async fn a_bad_config_value_fails_at_start_naming_the_key() {
    let output = Command::new(TALLY)
        .args(["serve", "ingest"])
        .env("TALLY_BUS__MAX_DELIVERY_ATTEMPTS", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bus.max_delivery_attempts"), "{stderr}");
}

#[tokio::test]
async fn the_clock_service_reports_the_wall_clock_and_refuses_to_move_it() {
    let database = tally_testkit::postgres::database().await;
    let admin = create_key(&database.url, "admin");
    let running = RunningService::start(&database.url, "rating").await;
    let mut clock =
        tally_proto::clock::clock_service_client::ClockServiceClient::new(running.channel().await);
    let time = clock
        .get_time(with_key(tally_proto::clock::GetTimeRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(time.mode, tally_proto::clock::ClockMode::Wall as i32);
    let refused = clock
        .advance_time(with_key(
            tally_proto::clock::AdvanceTimeRequest {
                duration: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    running.terminate();
}

#[tokio::test]
async fn operators_replay_rejected_events_after_opening_a_backfill() {
    use tally_proto::common::TimeRange;
    use tally_proto::events::UsageEvent;
    use tally_proto::ingest::{EventOutcome, OpenBackfillRequest};

    let database = tally_testkit::postgres::database().await;
    let admin = create_key(&database.url, "admin");
    let running = RunningService::start(&database.url, "ingest").await;
    let mut client = IngestServiceClient::new(running.channel().await);
    let old = chrono::Utc::now() - chrono::Duration::days(50);
    let stamp = |at: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    };
    let event = UsageEvent {
        id: "late-1".into(),
        customer_id: "cus_late".into(),
        event_type: "api_calls".into(),
        timestamp: Some(stamp(old)),
        ..Default::default()
    };
    let sent = client
        .ingest_batch(with_key(
            IngestBatchRequest {
                events: vec![event],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.results[0].outcome, EventOutcome::Rejected as i32);
    let rejection = sent.results[0].rejection_id.clone();

    let rejected = |args: &[&str]| {
        tally(&database.url)
            .arg("rejected")
            .args(args)
            .args(["--address", &running.address, "--api-key", &admin])
            .output()
            .unwrap()
    };
    let listed = rejected(&["list"]);
    assert!(listed.status.success());
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains(&rejection) && listing.contains("timestamp before_backfill_window"),
        "{listing}"
    );

    let too_early = rejected(&["replay", "--rule", "before_backfill_window"]);
    assert!(
        !too_early.status.success(),
        "no backfill yet: still rejected"
    );

    client
        .open_backfill(with_key(
            OpenBackfillRequest {
                idempotency_key: "late-import".into(),
                customer_id: "cus_late".into(),
                event_time_range: Some(TimeRange {
                    start_time: Some(stamp(old - chrono::Duration::days(1))),
                    end_time: Some(stamp(old + chrono::Duration::days(1))),
                }),
                duration: None,
                reason: "late import".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let replayed = rejected(&["replay", "--rule", "before_backfill_window"]);
    let report = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{report}");
    assert!(report.contains("1 resolved"), "{report}");
    running.terminate();
}

#[tokio::test]
async fn events_send_reports_every_line() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "ingest");
    let running = RunningService::start(&database.url, "ingest").await;
    let now = chrono::Utc::now().to_rfc3339();
    let line = |id: &str, tokens: &str| {
        format!(
            r#"{{"id":"{id}","customerId":"cus_send","eventType":"llm_tokens","timestamp":"{now}","properties":{{"tokens":{tokens}}}}}"#
        )
    };
    let directory = std::env::temp_dir().join(format!("tally-send-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let send = |name: &str, lines: &[String]| {
        let path = directory.join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        tally(&database.url)
            .args(["events", "send", "--file", path.to_str().unwrap()])
            .args([
                "--address",
                &running.address,
                "--api-key",
                &key,
                "--batch",
                "2",
            ])
            .output()
            .unwrap()
    };
    let clean = send(
        "clean.jsonl",
        &[line("e1", "10"), line("e2", "20"), line("e3", "30")],
    );
    let summary = String::from_utf8_lossy(&clean.stderr);
    assert!(clean.status.success(), "{summary}");
    assert!(summary.contains("accepted 3, duplicate 0"), "{summary}");

    let messy = send(
        "messy.jsonl",
        &[
            line("e1", "10"),
            line("e2", "21"),
            r#"{"id":"e4","customerId":"cus_acme!","eventType":"llm_tokens"}"#.to_owned(),
            "not json".to_owned(),
        ],
    );
    let summary = String::from_utf8_lossy(&messy.stderr);
    let details = String::from_utf8_lossy(&messy.stdout);
    assert!(!messy.status.success());
    assert!(
        summary.contains("accepted 0, duplicate 1, conflict 1, rejected 1, not sent 1"),
        "{summary}"
    );
    assert!(details.contains("line 2: e2 Conflict"), "{details}");
    assert!(
        details.contains("customer_id invalid_characters"),
        "{details}"
    );
    assert!(details.contains("line 4: not sent"), "{details}");
    running.terminate();
}

#[tokio::test]
async fn tally_address_is_the_admin_commands_address_not_a_config_key() {
    // Every command loads the config first; TALLY_ADDRESS once failed there
    // as an unknown key before the command could read it.
    let output = Command::new(TALLY)
        .args(["invoices", "list"])
        .env("TALLY_ADDRESS", "http://127.0.0.1:9")
        .env("TALLY_API_KEY", "tally_0000")
        .env_remove("TALLY_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to http://127.0.0.1:9"),
        "{stderr}"
    );
}

/// Waits (polling `Health/Check`, up to a generous bound) until `service`
/// reports `expected` (not through `Health/Watch`: see
/// `crates/runtime/tests/readiness.rs`, `until`).
async fn until_health(channel: Channel, service: &str, expected: ServingStatus) {
    let bound = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == expected as i32 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{service}` did not become {expected:?} within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn readiness_follows_postgresql_and_liveness_does_not() {
    use tally_testkit::tcp_proxy::TcpProxy;
    let database = tally_testkit::postgres::database().await;
    // PostgreSQL as the service sees it: through a proxy the test takes
    // down and brings back (the server itself is shared with other tests).
    let proxy = TcpProxy::start(&TcpProxy::target_of(&database.url))
        .await
        .unwrap();
    let running = RunningService::start(&proxy.url_through(&database.url), "ingest").await;
    let readiness = "tally.ingest.v1.IngestService";
    until_health(running.channel().await, readiness, ServingStatus::Serving).await;

    proxy.take_down();
    until_health(
        running.channel().await,
        readiness,
        ServingStatus::NotServing,
    )
    .await;
    let liveness = HealthClient::new(running.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        liveness,
        ServingStatus::Serving as i32,
        "liveness does not follow the database"
    );

    proxy.bring_back();
    until_health(running.channel().await, readiness, ServingStatus::Serving).await;
    until_health(running.channel().await, "", ServingStatus::Serving).await;
    let output = running.terminate();
    assert!(output.status.success(), "{:?}", output.status);
}

#[test]
fn a_service_that_calls_peers_refuses_to_start_without_a_key() {
    for (service, peer) in [
        ("rating", "peers.ingest_url"),
        ("invoicing", "peers.rating_url"),
        ("payments", "peers.invoicing_url"),
    ] {
        // Refused before the database is touched: this one does not exist.
        let output = tally("postgres://nobody@127.0.0.1:9/none")
            .args(["serve", service])
            .env("TALLY_GRPC__LISTEN_ADDR", "127.0.0.1:0")
            .env("TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR", "127.0.0.1:0")
            .env_remove("TALLY_API_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{service} started without a key");
        assert!(
            stderr.contains("TALLY_API_KEY is not set"),
            "{service}: {stderr}"
        );
        assert!(stderr.contains(peer), "{service}: {stderr}");
        assert!(stderr.contains("--scope read,write"), "{service}: {stderr}");
    }
}

#[tokio::test]
async fn a_peer_refusing_the_key_is_reported_as_configuration_not_retry() {
    use tally_proto::common::TimeRange;
    use tally_proto::rating::catalog_service_client::CatalogServiceClient;
    use tally_proto::rating::rating_service_client::RatingServiceClient;
    use tally_proto::rating::{Aggregation, CreateMeterRequest, GetUsageRequest};

    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let ingest = RunningService::start(&database.url, "ingest").await;
    // Rating calls ingest with a key ingest does not know.
    let rating = RunningService::start_with(
        &database.url,
        "rating",
        &[("TALLY_PEERS__INGEST_URL", ingest.address.as_str())],
    )
    .await;
    CatalogServiceClient::new(rating.channel().await)
        .create_meter(with_key(
            CreateMeterRequest {
                code: "api_calls".into(),
                name: "API calls".into(),
                aggregation: Aggregation::Count as i32,
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap();
    let status = RatingServiceClient::new(rating.channel().await)
        .get_usage(with_key(
            GetUsageRequest {
                customer_id: "cus_01a19467e8007067865fcfe287ce91a3".into(),
                meter_code: "api_calls".into(),
                time_range: Some(TimeRange {
                    start_time: Some(prost_types::Timestamp {
                        seconds: 1_790_000_000,
                        nanos: 0,
                    }),
                    end_time: Some(prost_types::Timestamp {
                        seconds: 1_790_086_400,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect_err("ingest refuses rating's key");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    for expected in [
        "ingest refused this process's API key",
        "configuration, not a transient failure",
        "TALLY_API_KEY",
    ] {
        assert!(
            status.message().contains(expected),
            "no `{expected}` in {}",
            status.message()
        );
    }
    assert!(!status.message().contains("retry"), "{}", status.message());
}

#[tokio::test]
async fn keys_register_is_idempotent_and_refuses_a_revoked_or_short_key() {
    let database = tally_testkit::postgres::database().await;
    let peer_key = "tally_PeerKeyFromASecretTheChartGenerated0123456789";
    let register = |key: &str, scopes: &str| {
        tally(&database.url)
            .args([
                "keys",
                "register",
                "--name",
                "tally-peers",
                "--scope",
                scopes,
            ])
            .env("TALLY_API_KEY", key)
            .output()
            .unwrap()
    };
    let first = register(peer_key, "read,write");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("registered key_"), "{stderr}");
    let again = register(peer_key, "read,write");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("already registered"), "{stderr}");
    let listed = tally(&database.url)
        .args(["keys", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.matches("tally-peers").count(), 1, "{listed}");

    let other_scopes = register(peer_key, "admin");
    assert!(!other_scopes.status.success());
    assert!(
        String::from_utf8_lossy(&other_scopes.stderr).contains("with scopes read,write, not admin")
    );

    let short = register("tally_short", "read");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32 characters"));

    let id = listed
        .lines()
        .find(|line| line.contains("tally-peers"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let revoked = tally(&database.url)
        .args(["keys", "revoke", &id])
        .output()
        .unwrap();
    assert!(revoked.status.success());
    // Times are RFC 3339 in UTC to the second, as in every other command.
    let listed = tally(&database.url)
        .args(["keys", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let line = listed
        .lines()
        .find(|line| line.contains("tally-peers"))
        .unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    let rfc3339 = |text: &str| {
        text.len() == 20
            && text.ends_with('Z')
            && chrono::DateTime::parse_from_rfc3339(text).is_ok()
    };
    assert!(rfc3339(cells[3]), "created: {line}");
    assert_eq!(cells[4], "revoked", "{line}");
    assert!(rfc3339(cells[5]), "revoked at: {line}");
    let after = register(peer_key, "read,write");
    let stderr = String::from_utf8_lossy(&after.stderr);
    assert!(!after.status.success(), "a revoked key came back");
    assert!(stderr.contains("revoked"), "{stderr}");

    // The audit chain `auth`: one registration and one revocation, whatever
    // the repeated and refused calls, never the key itself.
    let audited: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT action, comment, coalesce(after_state, '') FROM tally_auth.audit_log \
         WHERE resource_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&database.pool)
    .await
    .unwrap();
    let actions: Vec<(&str, Option<&str>)> = audited
        .iter()
        .map(|(action, comment, _)| (action.as_str(), comment.as_deref()))
        .collect();
    assert_eq!(
        actions,
        [
            ("api_key.created", Some("registered from TALLY_API_KEY")),
            ("api_key.revoked", None)
        ]
    );
    assert!(
        audited
            .iter()
            .all(|(_, _, after)| !after.contains(peer_key))
    );
}
