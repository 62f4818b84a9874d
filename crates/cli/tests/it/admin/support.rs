//! Running services and the `tally` admin commands as real processes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn tally(database_url: &str) -> Command {
    let mut command = Command::new(TALLY);
    command
        .env("DATABASE_URL", database_url)
        .env("TALLY_TELEMETRY__LOG_FORMAT", "json")
        .env("TALLY_AUTH__REFRESH_INTERVAL_SECONDS", "1")
        .env_remove("TALLY_CONFIG")
        .env_remove("TALLY_API_KEY")
        .env_remove("TALLY_ADDRESS")
        .env_remove("RUST_LOG");
    command
}

/// A new API key with `scope`.
pub fn create_key(database_url: &str, scope: &str) -> String {
    let output = tally(database_url)
        .args([
            "keys",
            "create",
            "--name",
            &format!("admin-test-{scope}"),
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

/// Waits until `what` accepts connections at `address`, at most `limit`.
async fn wait_until_listening(address: &str, limit: Duration, what: &str) {
    let started = Instant::now();
    while Channel::from_shared(address.to_owned())
        .unwrap()
        .connect()
        .await
        .is_err()
    {
        assert!(started.elapsed() < limit, "{what} did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `tally serve` of a service with peers calls them with here (no
/// database knows it; these tests never make a service call a peer).
const PEER_KEY_NEVER_USED: &str = "tally_peer_key_that_no_database_has_registered";

/// `tally serve <service>` on a free port; killed when dropped.
pub struct Service {
    child: Child,
    pub address: String,
}

impl Service {
    pub async fn start(database_url: &str, service: &str, env: &[(&str, &str)]) -> Self {
        let service_name = service;
        let service = Self::spawn(database_url, service_name, env);
        wait_until_listening(&service.address, Duration::from_secs(30), service_name).await;
        service
    }

    /// Starts it without waiting (the caller knows how to tell it is up,
    /// e.g. over TLS); `address` is `http://127.0.0.1:<port>`.
    pub fn spawn(database_url: &str, service: &str, env: &[(&str, &str)]) -> Self {
        let port = tally_runtime::local_postgres::free_port().unwrap();
        let mut command = tally(database_url);
        command
            .args(["serve", service])
            .env("TALLY_GRPC__LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("TALLY_PEERS__INGEST_URL", "http://127.0.0.1:9")
            .env("TALLY_PEERS__RATING_URL", "http://127.0.0.1:9")
            .env("TALLY_PEERS__INVOICING_URL", "http://127.0.0.1:9")
            // Services that call peers need a key to start (never used here).
            .env("TALLY_API_KEY", PEER_KEY_NEVER_USED)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        let address = format!("http://127.0.0.1:{port}");
        Self { child, address }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tally dev` on the test database and a free port; killed when dropped.
pub struct Dev {
    child: Child,
    pub address: String,
}

impl Dev {
    /// Starts it with `env` set over the defaults (a grace period of 0 hours).
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = tally_runtime::local_postgres::free_port().unwrap();
        let webhooks = tally_runtime::local_postgres::free_port().unwrap();
        let child = Command::new(TALLY)
            .args([
                "dev",
                "--manual-clock",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("DATABASE_URL", database_url)
            .env("TALLY_CLOCK__START", "2026-11-01T00:00:00Z")
            .env("TALLY_AUTH__REFRESH_INTERVAL_SECONDS", "1")
            .env("TALLY_INVOICING__GRACE_PERIOD_HOURS", "0")
            .env(
                "TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR",
                format!("127.0.0.1:{webhooks}"),
            )
            .env_remove("TALLY_CONFIG")
            .env_remove("STRIPE_API_KEY")
            .env_remove("ORB_API_KEY")
            // Its admin key is kept in the data directory: one per test.
            .env(
                "TALLY_DEV_DIR",
                std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix())),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address = format!("http://127.0.0.1:{port}");
        wait_until_listening(&address, Duration::from_secs(60), "tally dev").await;
        Self { child, address }
    }

    /// `tally <args> --address <dev> --output json`, expecting exit 0.
    pub fn json(&self, key: &str, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--address", &self.address, "--output", "json"]);
        run(key, &all).expect(0).json()
    }
}

impl Dev {
    /// Applies the documented catalog and subscribes a new customer `Acme
    /// AI` (`acme`, USD) to `inference_pro` from 1 November 2026:
    /// `(customer, subscription)`.
    pub fn acme_on_inference_pro(&self, key: &str) -> (String, String) {
        run_with_stdin(
            key,
            &["catalog", "apply", "-f", "-", "--address", &self.address],
            Some(&documented_catalog()),
        )
        .expect(0);
        let customer = text(
            &self.json(
                key,
                &[
                    "customers",
                    "create",
                    "--name",
                    "Acme AI",
                    "--external-id",
                    "acme",
                    "--currency",
                    "USD",
                ],
            )["id"],
        );
        let subscription = text(
            &self.json(
                key,
                &[
                    "subscriptions",
                    "create",
                    "--customer",
                    &customer,
                    "--plan",
                    "inference_pro",
                    "--start-at",
                    "2026-11-01T00:00:00Z",
                ],
            )["id"],
        );
        (customer, subscription)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON string's text (empty when it is not a string).
pub fn text(value: &serde_json::Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// What a finished `tally` command printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the output unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{}", self.stdout))
    }

    /// The table's data rows, as whitespace-separated cells (the header skipped).
    pub fn rows(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().map(str::to_owned).collect())
            .collect()
    }
}

/// Runs `attempt` until the services know the key it uses (their key cache
/// refreshes every second; under load it can take longer): the first result
/// that is not `Unauthenticated`, within a generous bound.
pub fn once_the_key_is_known(attempt: impl Fn() -> Run) -> Run {
    let started = Instant::now();
    loop {
        let outcome = attempt();
        if !outcome.stderr.contains("Unauthenticated") {
            return outcome;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new key was never accepted: {}",
            outcome.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `tally <args>` with `TALLY_API_KEY=key`.
pub fn run(key: &str, args: &[&str]) -> Run {
    run_with_stdin(key, args, None)
}

/// Runs `tally <args>`, feeding `stdin`.
pub fn run_with_stdin(key: &str, args: &[&str], stdin: Option<&str>) -> Run {
    run_with_env(key, args, stdin, &[])
}

/// Runs `tally <args>`, feeding `stdin`, with `env` set.
pub fn run_with_env(key: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    use std::io::Write as _;
    let mut command = Command::new(TALLY);
    command
        .args(args)
        .env("TALLY_API_KEY", key)
        .env_remove("TALLY_ADDRESS")
        .env_remove("TALLY_CONFIG")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The YAML example of docs/operations.md, so the documented file is the tested one.
pub fn documented_catalog() -> String {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    let section = guide
        .split("### `tally catalog apply")
        .nth(1)
        .expect("the catalog section of docs/operations.md");
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_owned()
}
