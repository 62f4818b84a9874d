//! The four services as separate `tally serve` processes, as a cluster runs
//! them: one shared PostgreSQL database, the Pub/Sub emulator as the bus,
//! real gRPC between them through `[peers]`, manual clocks, and a Stripe
//! that is the test's fake. Every process is killed when the `Cluster` is
//! dropped, however the test ends; their logs stay in a temporary directory
//! whose path the test prints.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// Where every process's clock starts.
pub const START: &str = "2026-11-01T00:00:00Z";

const SERVICES: [&str; 4] = ["ingest", "rating", "invoicing", "payments"];

/// A running service.
#[derive(Debug)]
pub struct Process {
    pub name: &'static str,
    pub address: String,
    child: Child,
    log: PathBuf,
}

/// The four services, the database they share and the admin key.
#[derive(Debug)]
pub struct Cluster {
    pub processes: Vec<Process>,
    pub database_url: String,
    /// `admin` scope: what the test itself calls with.
    pub admin_key: String,
    /// The payments webhook endpoint, `http://…/webhooks/stripe`.
    pub webhook_url: String,
    /// The Pub/Sub emulator and the topic prefix of this test.
    pub emulator_host: String,
    pub name_prefix: String,
}

fn free_port() -> u16 {
    tally_runtime::local_postgres::free_port().expect("a free port")
}

/// `tally` with the test's database and nothing inherited that could change
/// its configuration.
pub fn tally(database_url: &str) -> Command {
    let mut command = Command::new(TALLY);
    command
        .env("DATABASE_URL", database_url)
        .env_remove("TALLY_CONFIG")
        .env_remove("TALLY_API_KEY")
        .env_remove("TALLY_ADDRESS")
        .env_remove("RUST_LOG")
        .env_remove("STRIPE_API_KEY")
        .env_remove("STRIPE_WEBHOOK_SECRET");
    command
}

/// A new API key (`tally keys create`).
pub fn create_key(database_url: &str, scope: &str) -> String {
    let output = tally(database_url)
        .args(["keys", "create", "--name", &format!("e2e-{scope}")])
        .args(["--scope", scope])
        .output()
        .expect("tally keys create runs");
    assert!(
        output.status.success(),
        "tally keys create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Cluster {
    /// Starts the four services and waits until each reports SERVING.
    pub async fn start(database_url: &str, emulator_host: &str, stripe_url: &str) -> Self {
        let admin_key = create_key(database_url, "admin");
        // Services call each other with the narrowest key that works: `write`,
        // because payments reserves refunds in invoicing (`ReserveRefund`).
        let peer_key = create_key(database_url, "write");
        let suffix = tally_testkit::unique_suffix();
        let name_prefix = format!("e2e{suffix}-");
        let log_dir = std::env::temp_dir().join(format!("tally-e2e-{suffix}"));
        std::fs::create_dir_all(&log_dir).expect("a log directory");
        eprintln!("service logs: {}", log_dir.display());

        let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
        let url = |index: usize| format!("http://127.0.0.1:{}", ports[index]);
        let webhook_port = free_port();
        let mut processes = Vec::new();
        for (index, name) in SERVICES.into_iter().enumerate() {
            let log = log_dir.join(format!("{name}.log"));
            let file = std::fs::File::create(&log).expect("a log file");
            let mut command = tally(database_url);
            command
                .args(["serve", name])
                .env(
                    "TALLY_GRPC__LISTEN_ADDR",
                    format!("127.0.0.1:{}", ports[index]),
                )
                .env("TALLY_API_KEY", &peer_key)
                .env("TALLY_PEERS__INGEST_URL", url(0))
                .env("TALLY_PEERS__RATING_URL", url(1))
                .env("TALLY_PEERS__INVOICING_URL", url(2))
                .env("TALLY_BUS__BACKEND", "pubsub")
                .env("TALLY_BUS__PROJECT_ID", tally_testkit::pubsub::TEST_PROJECT)
                .env("PUBSUB_EMULATOR_HOST", emulator_host)
                .env("TALLY_BUS__NAME_PREFIX", &name_prefix)
                .env("TALLY_CLOCK__MODE", "manual")
                .env("TALLY_CLOCK__START", START)
                .env("TALLY_AUTH__REFRESH_INTERVAL_SECONDS", "1")
                .env("TALLY_TELEMETRY__LOG_FORMAT", "json")
                .env("TALLY_TELEMETRY__LOG_FILTER", "info")
                // Loops also run on a wall-clock period: keep it short so a
                // retry after a transient failure never waits a minute.
                .env("TALLY_INVOICING__BILL_RUN_INTERVAL_SECONDS", "1")
                .env("TALLY_PAYMENTS__SCHEDULER_POLL_INTERVAL_SECONDS", "1")
                .env("TALLY_PAYMENTS__RECONCILIATION_INTERVAL_HOURS", "0")
                .env("TALLY_PAYMENTS__STRIPE_API_BASE_URL", stripe_url)
                .env("TALLY_PAYMENTS__STRIPE_RETRY_BASE_DELAY_MS", "50")
                .env("TALLY_PAYMENTS__STRIPE_RETRY_MAX_DELAY_MS", "200")
                .env(
                    "TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR",
                    format!("127.0.0.1:{webhook_port}"),
                )
                .env("STRIPE_API_KEY", "sk_test_e2eTallyKey")
                .env("STRIPE_WEBHOOK_SECRET", crate::stripe::WEBHOOK_SECRET)
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("a log file handle"))
                .stderr(file);
            let child = command.spawn().expect("tally serve starts");
            processes.push(Process {
                name,
                address: url(index),
                child,
                log,
            });
        }
        let mut cluster = Self {
            processes,
            database_url: database_url.to_owned(),
            admin_key,
            webhook_url: format!("http://127.0.0.1:{webhook_port}/webhooks/stripe"),
            emulator_host: emulator_host.to_owned(),
            name_prefix,
        };
        cluster.wait_until_serving().await;
        cluster
    }

    async fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for index in 0..self.processes.len() {
            loop {
                let process = &mut self.processes[index];
                if let Ok(Some(status)) = process.child.try_wait() {
                    panic!(
                        "{} exited at start ({status}):\n{}",
                        process.name,
                        process.log_tail()
                    );
                }
                if serving(&process.address).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not report SERVING within 60 s:\n{}",
                    process.name,
                    process.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    pub fn address(&self, name: &str) -> &str {
        &self
            .processes
            .iter()
            .find(|process| process.name == name)
            .expect("a service of the cluster")
            .address
    }

    pub async fn channel(&self, name: &str) -> Channel {
        Channel::from_shared(self.address(name).to_owned())
            .expect("a valid address")
            .connect()
            .await
            .expect("the service accepts connections")
    }

    /// Every address, comma-separated, for `tally clock … --address`.
    pub fn all_addresses(&self) -> String {
        self.processes
            .iter()
            .map(|process| process.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `tally <args>` with the admin key; panics with the output unless it exits 0.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write as _;
        let mut child = tally(&self.database_url)
            .args(args)
            .env("TALLY_API_KEY", &self.admin_key)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tally runs");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("stdin is written");
        }
        let output = child.wait_with_output().expect("tally finishes");
        assert!(
            output.status.success(),
            "tally {args:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Sets every service's manual clock to `instant` (`tally clock set`).
    pub fn set_clock(&self, instant: &str) {
        self.cli(
            &["clock", "set", instant, "--address", &self.all_addresses()],
            None,
        );
    }

    /// The last lines of every log, for a failure message.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|process| format!("--- {} ---\n{}", process.name, process.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Process {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

async fn serving(address: &str) -> bool {
    let Ok(channel) = Channel::from_shared(address.to_owned())
        .expect("a valid address")
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32)
}
