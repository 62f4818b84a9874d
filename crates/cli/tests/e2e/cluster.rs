//! The four services as separate `tally serve` processes, as a cluster runs
//! them: one shared PostgreSQL database, the Pub/Sub emulator as the bus,
//! real gRPC between them through `[peers]`, manual clocks, and a Stripe
//! that is the test's fake. Every process is killed when the `Cluster` is
//! dropped, however the test ends; their logs stay in a temporary directory
//! whose path the test prints. A service can be killed with SIGKILL and
//! started again on the same port with the same environment (the crash test).
//!
//! One cluster runs at a time in this test binary: four services plus the
//! test on a 2-core machine are enough load, and two clusters at once made
//! each slow enough to miss its deadlines.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// Where every process's clock starts.
pub const START: &str = "2026-11-01T00:00:00Z";

pub const SERVICES: [&str; 5] = ["ingest", "rating", "invoicing", "payments", "finance"];

/// How long a service may take to report SERVING after it was started.
const SERVING_DEADLINE: Duration = Duration::from_secs(60);

/// Held by the running cluster: one at a time (see the module comment).
static ONE_CLUSTER_AT_A_TIME: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(1)));

/// A running service.
#[derive(Debug)]
pub struct Process {
    pub name: &'static str,
    pub address: String,
    child: Child,
    log: PathBuf,
    /// `tally serve <name>`'s environment, to start it again after a kill.
    environment: Vec<(String, String)>,
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
    /// The instant every service's manual clock was last set to: a restarted
    /// service starts its clock there.
    clock: Mutex<String>,
    _turn: OwnedSemaphorePermit,
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
    /// Starts the services and waits until each reports SERVING.
    pub async fn start(database_url: &str, emulator_host: &str, stripe_url: &str) -> Self {
        let turn = Arc::clone(&ONE_CLUSTER_AT_A_TIME)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
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
            let environment: Vec<(String, String)> = [
                (
                    "TALLY_GRPC__LISTEN_ADDR",
                    format!("127.0.0.1:{}", ports[index]),
                ),
                ("TALLY_API_KEY", peer_key.clone()),
                ("TALLY_PEERS__INGEST_URL", url(0)),
                ("TALLY_PEERS__RATING_URL", url(1)),
                ("TALLY_PEERS__INVOICING_URL", url(2)),
                ("TALLY_BUS__BACKEND", "pubsub".to_owned()),
                (
                    "TALLY_BUS__PROJECT_ID",
                    tally_testkit::pubsub::TEST_PROJECT.to_owned(),
                ),
                ("PUBSUB_EMULATOR_HOST", emulator_host.to_owned()),
                ("TALLY_BUS__NAME_PREFIX", name_prefix.clone()),
                ("TALLY_CLOCK__MODE", "manual".to_owned()),
                ("TALLY_AUTH__REFRESH_INTERVAL_SECONDS", "1".to_owned()),
                ("TALLY_TELEMETRY__LOG_FORMAT", "json".to_owned()),
                ("TALLY_TELEMETRY__LOG_FILTER", "info".to_owned()),
                // Loops also run on a wall-clock period: keep it short so a
                // retry after a transient failure never waits a minute.
                ("TALLY_INVOICING__BILL_RUN_INTERVAL_SECONDS", "1".to_owned()),
                (
                    "TALLY_PAYMENTS__SCHEDULER_POLL_INTERVAL_SECONDS",
                    "1".to_owned(),
                ),
                (
                    "TALLY_PAYMENTS__RECONCILIATION_INTERVAL_HOURS",
                    "0".to_owned(),
                ),
                ("TALLY_PAYMENTS__STRIPE_API_BASE_URL", stripe_url.to_owned()),
                (
                    "TALLY_PAYMENTS__STRIPE_RETRY_BASE_DELAY_MS",
                    "50".to_owned(),
                ),
                (
                    "TALLY_PAYMENTS__STRIPE_RETRY_MAX_DELAY_MS",
                    "200".to_owned(),
                ),
                (
                    "TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR",
                    format!("127.0.0.1:{webhook_port}"),
                ),
                ("STRIPE_API_KEY", "sk_test_e2eTallyKey".to_owned()),
                (
                    "STRIPE_WEBHOOK_SECRET",
                    crate::stripe::WEBHOOK_SECRET.to_owned(),
                ),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
            let log = log_dir.join(format!("{name}.log"));
            let child = spawn(database_url, name, &environment, START, &log);
            processes.push(Process {
                name,
                address: url(index),
                child,
                log,
                environment,
            });
        }
        let mut cluster = Self {
            processes,
            database_url: database_url.to_owned(),
            admin_key,
            webhook_url: format!("http://127.0.0.1:{webhook_port}/webhooks/stripe"),
            emulator_host: emulator_host.to_owned(),
            name_prefix,
            clock: Mutex::new(START.to_owned()),
            _turn: turn,
        };
        for index in 0..cluster.processes.len() {
            cluster.processes[index].wait_until_serving().await;
        }
        cluster
    }

    fn process_mut(&mut self, name: &str) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|process| process.name == name)
            .expect("a service of the cluster")
    }

    /// Kills the service with SIGKILL (`Child::kill` on Unix): no shutdown,
    /// no flush, whatever it was doing is cut off.
    pub fn kill(&mut self, name: &str) {
        let process = self.process_mut(name);
        process.child.kill().expect("the service can be killed");
        process.child.wait().expect("the killed service is reaped");
    }

    /// Starts a killed service again, with the same environment and port,
    /// its clock where the others' are, and waits until it reports SERVING.
    pub async fn restart(&mut self, name: &str) {
        let clock = self.clock();
        let database_url = self.database_url.clone();
        let process = self.process_mut(name);
        assert!(
            matches!(process.child.try_wait(), Ok(Some(_))),
            "{name} is still running: kill it first"
        );
        process.child = spawn(
            &database_url,
            process.name,
            &process.environment,
            &clock,
            &process.log,
        );
        process.wait_until_serving().await;
    }

    /// The instant the services' clocks were last set to.
    pub fn clock(&self) -> String {
        self.clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        *self.clock.lock().unwrap_or_else(PoisonError::into_inner) = instant.to_owned();
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

/// `tally serve <name>` with `environment`, its clock at `clock`, its output
/// appended to `log` (a restart keeps the killed process's lines).
fn spawn(
    database_url: &str,
    name: &str,
    environment: &[(String, String)],
    clock: &str,
    log: &std::path::Path,
) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("a log file");
    tally(database_url)
        .args(["serve", name])
        .envs(environment.iter().map(|(key, value)| (key, value)))
        .env("TALLY_CLOCK__START", clock)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("a log file handle"))
        .stderr(file)
        .spawn()
        .expect("tally serve starts")
}

impl Process {
    async fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + SERVING_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if serving(&self.address).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not report SERVING within {SERVING_DEADLINE:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

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
