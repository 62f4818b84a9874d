//! `tally dev`: the demo bills a month end to end, and the ways it cannot
//! start say what to do (no PostgreSQL binaries, a taken gRPC or webhook
//! port — found before PostgreSQL starts —, a second `tally dev`, a data
//! directory of another PostgreSQL version), and its banner: the database
//! URL for `tally keys create`, one admin key kept across starts, no colours
//! into a pipe and one notice without Stripe keys.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn free_port() -> u16 {
    tally_runtime::local_postgres::free_port().unwrap()
}

/// `tally dev` without anything from the environment that would change it.
fn dev() -> Command {
    let mut command = Command::new(TALLY);
    command
        .arg("dev")
        .env_remove("DATABASE_URL")
        .env_remove("TALLY_CONFIG")
        .env_remove("TALLY_DEV_DIR")
        .env_remove("RUST_LOG")
        .env_remove("STRIPE_API_KEY")
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env_remove("TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR");
    command
}

/// A data directory no test shares, and `PG_BIN_DIR` without PostgreSQL
/// in it: a `tally dev` that got as far as starting PostgreSQL would fail
/// saying so (and would create the directory).
fn no_postgresql(command: &mut Command) -> (&mut Command, std::path::PathBuf) {
    let directory =
        std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix()));
    command
        .arg("--data-dir")
        .arg(&directory)
        .env("PG_BIN_DIR", directory.join("no-such-bin"));
    (command, directory)
}

/// Asserts `tally dev` stopped before PostgreSQL (see [`no_postgresql`]).
fn stopped_before_postgresql(stderr: &str, directory: &std::path::Path) {
    assert!(
        !stderr.contains("PostgreSQL server binaries"),
        "PostgreSQL was started:\n{stderr}"
    );
    assert!(!directory.exists(), "{} was created", directory.display());
}

/// A free port whose next port is free too (the webhook endpoint's by
/// default).
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// A taken port whose previous port is free: `--listen` on the free one
/// puts the webhook endpoint on the taken one.
fn taken_port_after_a_free_one() -> (u16, std::net::TcpListener) {
    loop {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        if port > 1024 && std::net::TcpListener::bind(("127.0.0.1", port - 1)).is_ok() {
            return (port - 1, taken);
        }
    }
}

/// The lines a child writes to stdout and stderr (stderr prefixed).
fn output_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel::<String>();
    let errors = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = errors.send(format!("stderr: {line}"));
        }
    });
    received
}

/// Waits (up to `bound`) for a line containing `needle`; returns it.
fn wait_for_line(received: &mpsc::Receiver<String>, needle: &str, bound: Duration) -> String {
    let started = Instant::now();
    let mut output = Vec::new();
    loop {
        let left = bound.saturating_sub(started.elapsed());
        match received.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => output.push(line),
            Err(_) => panic!(
                "no line with `{needle}` within {bound:?}:\n{}",
                output.join("\n")
            ),
        }
    }
}

/// Kills the process when dropped, however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_bills_a_month_and_prints_the_invoices() {
    let database = tally_testkit::postgres::database().await;
    let port = free_port();
    let mut child = dev()
        .args(["--demo", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--webhook-listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &database.url)
        .env("TALLY_CLOCK__START", "2026-11-01T00:00:00Z")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let _running = Running(child);
    let (lines, received) = mpsc::channel::<String>();
    let errors = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = errors.send(format!("stderr: {line}"));
        }
    });

    // Within a minute (the promise), the demo prints its summary.
    let started = Instant::now();
    let mut output = Vec::new();
    while !output
        .iter()
        .any(|line: &String| line.contains("demo  done"))
    {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        match received.recv_timeout(left) {
            Ok(line) => output.push(line),
            Err(_) => panic!(
                "the demo did not finish within 60 s:\n{}",
                output.join("\n")
            ),
        }
    }
    let text = output.join("\n");
    assert!(!text.contains("the demo stopped"), "{text}");
    for expected in [
        "inference_pro",
        "upgrades to inference_pro",
        "prepaid credits 250.00 USD",
        "TALLY-000001",
        "the month's usage, next month's fees",
        "tally invoices list",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }

    // The invoices are there for anyone to read: two per customer, none a draft.
    let key = text
        .lines()
        .find_map(|line| line.split("TALLY_API_KEY=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .expect("the printed key");
    let listed = Command::new(TALLY)
        .args(["invoices", "list", "--output", "json"])
        .args(["--address", &format!("http://127.0.0.1:{port}")])
        .env("TALLY_API_KEY", &key)
        .env_remove("TALLY_ADDRESS")
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let invoices: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let invoices = invoices.as_array().unwrap();
    assert_eq!(invoices.len(), 8, "{invoices:?}");
    assert!(
        invoices
            .iter()
            .all(|invoice| invoice["status"] != "INVOICE_STATUS_DRAFT"),
        "{invoices:?}"
    );
    let cycle_totals: Vec<&str> = invoices
        .iter()
        .filter(|invoice| invoice["billingReason"] == "BILLING_REASON_SUBSCRIPTION_CYCLE")
        .map(|invoice| invoice["total"]["amount"].as_str().unwrap())
        .collect();
    assert_eq!(cycle_totals.len(), 4, "{invoices:?}");
}

/// Runs `tally dev --demo` on `database_url` and `data_dir` until the demo
/// says it is done (60 s at most); returns what it printed.
fn run_demo(database_url: &str, data_dir: &std::path::Path) -> String {
    let mut child = dev()
        .args([
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--webhook-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("DATABASE_URL", database_url)
        .env("TALLY_CLOCK__START", "2026-11-01T00:00:00Z")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let received = output_lines(&mut child);
    let _running = Running(child);
    let started = Instant::now();
    let bound = Duration::from_secs(60);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|line: &String| line.contains("demo  done") || line.contains("the demo stopped"))
    {
        match received.recv_timeout(bound.saturating_sub(started.elapsed())) {
            Ok(line) => lines.push(line),
            Err(_) => panic!(
                "the demo did not finish within {bound:?}:\n{}",
                lines.join("\n")
            ),
        }
    }
    lines.join("\n")
}

/// The README's own example customer (`acme`) exists, as after a user
/// followed the README on the data directory `make dev` uses: the demo still
/// bills its month, and does so again on the same data directory.
#[tokio::test]
async fn the_demo_runs_on_a_used_data_directory_again_and_again() {
    let database = tally_testkit::postgres::database().await;
    let data_dir =
        std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix()));
    let (running, lines) = start_with_banner(&database.url, &data_dir);
    let key = banner_value(&lines, "API key (admin)");
    let address = banner_value(&lines, "gRPC (all services)");
    let created = Command::new(TALLY)
        .args([
            "customers",
            "create",
            "--name",
            "Acme AI",
            "--external-id",
            "acme",
        ])
        .args(["--currency", "USD", "--address", &address])
        .env("TALLY_API_KEY", &key)
        .env_remove("TALLY_ADDRESS")
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    drop(running);

    for run in ["first", "second"] {
        let text = run_demo(&database.url, &data_dir);
        assert!(!text.contains("the demo stopped"), "{run} run:\n{text}");
        assert!(
            text.contains("the month's usage, next month's fees"),
            "{run} run:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn reset_is_refused_with_a_database_url_and_empties_the_data_directory() {
    let directory =
        std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix()));
    let stderr = failing_start(
        dev()
            .args(["--reset", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&directory)
            .env("DATABASE_URL", "postgres://127.0.0.1:9/nowhere"),
    );
    assert!(
        stderr.contains("--reset deletes only the private PostgreSQL"),
        "{stderr}"
    );

    // What a used data directory holds goes; PostgreSQL is then started
    // afresh (here it is missing, so the start fails after the reset).
    std::fs::create_dir_all(directory.join("postgres").join("data")).unwrap();
    std::fs::write(
        directory.join("postgres").join("data").join("PG_VERSION"),
        "9.6\n",
    )
    .unwrap();
    std::fs::write(directory.join("admin-key"), "tally_old\n").unwrap();
    std::fs::write(directory.join("notes.txt"), "mine\n").unwrap();
    let stderr = failing_start(
        dev()
            .args([
                "--reset",
                "--listen",
                "127.0.0.1:0",
                "--webhook-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&directory)
            .env("PG_BIN_DIR", directory.join("no-such-bin")),
    );
    assert!(stderr.contains("starts empty"), "{stderr}");
    assert!(!stderr.contains("belongs to PostgreSQL 9.6"), "{stderr}");
    assert!(
        !directory
            .join("postgres")
            .join("data")
            .join("PG_VERSION")
            .exists()
    );
    assert!(!directory.join("admin-key").exists());
    assert!(
        directory.join("notes.txt").exists(),
        "only what tally dev keeps is deleted"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

/// Runs `tally dev` that must fail at start; returns its stderr.
fn failing_start(command: &mut Command) -> String {
    let output = command.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "tally dev started:\n{stderr}");
    stderr
}

#[test]
fn missing_postgresql_binaries_say_what_to_install() {
    let directory =
        std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix()));
    let stderr = failing_start(
        dev()
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&directory)
            .env("PG_BIN_DIR", directory.join("no-such-bin")),
    );
    assert!(
        stderr.contains("PostgreSQL server binaries (initdb, pg_ctl) not found"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install postgresql"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[test]
fn a_taken_grpc_port_is_named_before_postgresql_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let mut command = dev();
    command.args(["--listen", &address.to_string()]);
    let (command, directory) = no_postgresql(&mut command);
    let stderr = failing_start(command);
    assert!(
        stderr.contains(&format!("cannot listen on {address} for gRPC")),
        "{stderr}"
    );
    assert!(stderr.contains("another process"), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
    stopped_before_postgresql(&stderr, &directory);
}

#[test]
fn a_taken_webhook_port_is_named_before_postgresql_starts() {
    // By default the webhook endpoint takes the port after --listen's.
    let (grpc_port, taken) = taken_port_after_a_free_one();
    let webhooks = taken.local_addr().unwrap();
    let mut command = dev();
    command.args(["--listen", &format!("127.0.0.1:{grpc_port}")]);
    let (command, directory) = no_postgresql(&mut command);
    let stderr = failing_start(command);
    assert!(
        stderr.contains(&format!("cannot listen for Stripe webhooks on {webhooks}")),
        "{stderr}"
    );
    assert!(stderr.contains("--webhook-listen"), "{stderr}");
    stopped_before_postgresql(&stderr, &directory);

    // Named with the flag, the same.
    let mut command = dev();
    command.args(["--listen", "127.0.0.1:0", "--webhook-listen"]);
    command.arg(webhooks.to_string());
    let (command, directory) = no_postgresql(&mut command);
    let stderr = failing_start(command);
    assert!(
        stderr.contains(&format!("cannot listen for Stripe webhooks on {webhooks}")),
        "{stderr}"
    );
    stopped_before_postgresql(&stderr, &directory);
}

#[tokio::test]
async fn a_second_tally_dev_on_the_same_ports_fails_at_once_before_postgresql() {
    let database = tally_testkit::postgres::database().await;
    let port = free_port_pair();
    let listen = format!("127.0.0.1:{port}");
    let mut first = dev()
        .args(["--listen", &listen])
        .env("DATABASE_URL", &database.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = output_lines(&mut first);
    let _first = Running(first);
    // The webhook endpoint is on loopback, on the port after gRPC's (not
    // 0.0.0.0:8080), and answers there.
    let banner = wait_for_line(&lines, "Stripe webhooks", Duration::from_secs(120));
    let webhooks = format!("127.0.0.1:{}", port + 1);
    assert!(
        banner.contains(&format!("http://{webhooks}/webhooks/stripe")),
        "{banner}"
    );
    let answer = reqwest::Client::new()
        .post(format!("http://{webhooks}/webhooks/stripe"))
        .body("{}")
        .send()
        .await
        .expect("the webhook endpoint answers on loopback");
    assert_eq!(answer.status().as_u16(), 503, "no signing secret in dev");

    // A second one with the same --listen stops at once, naming the port
    // and the flag, before starting its PostgreSQL.
    let mut command = dev();
    command.args(["--listen", &listen]);
    let (command, directory) = no_postgresql(&mut command);
    let stderr = failing_start(command);
    assert!(
        stderr.contains(&format!("cannot listen on {listen} for gRPC")),
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
    stopped_before_postgresql(&stderr, &directory);

    // Moved to a free gRPC port but the same webhook port: the same, naming
    // the webhook port and its flag.
    let mut command = dev();
    command.args(["--listen", "127.0.0.1:0", "--webhook-listen", &webhooks]);
    let (command, directory) = no_postgresql(&mut command);
    let stderr = failing_start(command);
    assert!(
        stderr.contains(&format!("cannot listen for Stripe webhooks on {webhooks}")),
        "{stderr}"
    );
    assert!(stderr.contains("--webhook-listen"), "{stderr}");
    stopped_before_postgresql(&stderr, &directory);
}

#[test]
fn a_data_directory_of_another_version_is_refused() {
    let directory =
        std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix()));
    let data = directory.join("postgres").join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "9.6\n").unwrap();
    let stderr = failing_start(
        dev()
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&directory),
    );
    let _ = std::fs::remove_dir_all(&directory);
    assert!(
        stderr.contains("belongs to PostgreSQL 9.6, but the installed server is"),
        "{stderr}"
    );
    assert!(stderr.contains("move it away"), "{stderr}");
}

/// Starts `tally dev` on `database_url` with its data in `data_dir`; returns
/// it with every line it printed up to the end of its banner.
fn start_with_banner(database_url: &str, data_dir: &std::path::Path) -> (Running, Vec<String>) {
    let mut child = dev()
        .args(["--listen", "127.0.0.1:0", "--webhook-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("DATABASE_URL", database_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let received = output_lines(&mut child);
    let running = Running(child);
    let started = Instant::now();
    let bound = Duration::from_secs(120);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|line: &String| line.contains("ctrl-c stops everything"))
    {
        match received.recv_timeout(bound.saturating_sub(started.elapsed())) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("no banner within {bound:?}:\n{}", lines.join("\n")),
        }
    }
    (running, lines)
}

/// The value after `label` on the banner line that starts with it.
fn banner_value(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{label}` in:\n{}", lines.join("\n")))
        .to_owned()
}

/// `tally keys <args>` on `database_url`; panics unless it succeeds.
fn keys(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(TALLY)
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("TALLY_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_banner_prints_the_database_url_and_one_admin_key_kept_across_starts() {
    let database = tally_testkit::postgres::database().await;
    let data_dir =
        std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix()));

    let (first, lines) = start_with_banner(&database.url, &data_dir);
    let key = banner_value(&lines, "API key (admin)");
    assert!(key.starts_with("tally_"), "{}", lines.join("\n"));
    // The database `tally keys create` needs is printed (a trust-auth URL on
    // loopback: nothing secret), with the command.
    let url = banner_value(&lines, "PostgreSQL");
    assert_eq!(url, database.url);
    assert!(
        lines
            .iter()
            .any(|line| line.contains(&format!("DATABASE_URL={url} tally keys create"))),
        "{}",
        lines.join("\n")
    );
    let created = keys(&url, &["create", "--name", "me", "--scope", "read"]);
    assert!(created.trim().starts_with("tally_"), "{created}");
    drop(first);

    // Started again: the same key, and still one dev key in the table.
    let (second, lines) = start_with_banner(&database.url, &data_dir);
    assert_eq!(banner_value(&lines, "API key (admin)"), key);
    let listed = keys(&database.url, &["list"]);
    let dev_keys: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains("tally-dev"))
        .collect();
    assert_eq!(dev_keys.len(), 1, "{listed}");
    drop(second);

    // Revoked, it is replaced by a new one, kept in turn.
    let key_id = dev_keys[0].split_whitespace().next().unwrap().to_owned();
    keys(&database.url, &["revoke", &key_id]);
    let (third, lines) = start_with_banner(&database.url, &data_dir);
    let replaced = banner_value(&lines, "API key (admin)");
    assert_ne!(replaced, key);
    drop(third);
    let (_fourth, lines) = start_with_banner(&database.url, &data_dir);
    assert_eq!(banner_value(&lines, "API key (admin)"), replaced);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn without_stripe_keys_one_notice_and_no_colours_into_a_pipe() {
    let database = tally_testkit::postgres::database().await;
    let data_dir =
        std::env::temp_dir().join(format!("tally-dev-{}", tally_testkit::unique_suffix()));
    let (_running, lines) = start_with_banner(&database.url, &data_dir);
    let text = lines.join("\n");
    // Logs were written (the services' start) — to a pipe, so plain.
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes into a pipe:\n{text}"
    );
    // No ERROR for the missing Stripe key: one notice in the banner.
    assert!(!text.contains("STRIPE_API_KEY is not set"), "{text}");
    assert!(!text.contains("STRIPE_WEBHOOK_SECRET is not set"), "{text}");
    assert_eq!(
        text.matches("Stripe                not configured").count(),
        1,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The repository's file at `path` (from the workspace root).
fn repository_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn make_install_puts_tally_on_the_path_and_the_readme_says_so() {
    // `make install` installs this crate's `tally` binary, locked.
    let makefile = repository_file("Makefile");
    let recipe = makefile
        .split("\ninstall:\n")
        .nth(1)
        .expect("an install target in the Makefile")
        .lines()
        .next()
        .unwrap();
    assert_eq!(recipe.trim(), "cargo install --path crates/cli --locked");
    assert!(makefile.contains(".PHONY: dev demo install"), "{makefile}");
    assert!(
        repository_file("crates/cli/Cargo.toml").contains("name = \"tally\""),
        "the installed binary is `tally`"
    );
    // The README's first commands say how to get `tally`, and what the first
    // build costs in time and disk.
    let readme = repository_file("README.md");
    let first = readme
        .split("## The two commands")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    assert!(first.contains("make install"), "{first}");
    assert!(first.contains("about 10 minutes"), "{first}");
    assert!(first.contains("11 GB"), "{first}");
    assert!(first.contains("target/debug/tally"), "{first}");
}
