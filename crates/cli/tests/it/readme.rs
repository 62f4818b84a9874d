//! README.md's tour, run as written: every `sh` block of "## A tour", in
//! order, against a fresh `tally dev` (real clock), from a directory laid out
//! like the repository's root. The ids the tour creates are put in for the
//! README's placeholders (`cus_…`, `inv_…`). `grpcurl` lines run when
//! `grpcurl` is installed; otherwise their method must exist in `proto/` and
//! their `-d` body must be JSON. Every command of the `tally` synopsis must
//! exist (`tally <command> --help`), and the Pub/Sub snippet must name the
//! compose emulator's project. So the README cannot go stale silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repository().join(path)).unwrap()
}

/// The fenced blocks of `text` in `language`, in order.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("a closed code block");
        found.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    found
}

/// The tour: README.md from "## A tour" on.
fn tour() -> String {
    let readme = read("README.md");
    let start = readme.find("## A tour").expect("README.md has a tour");
    readme[start..].to_owned()
}

/// The block's commands: `\\` continuations and lines inside single quotes
/// (a multi-line JSON body) joined.
fn commands(block: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if current.matches('\'').count().is_multiple_of(2) {
                    joined.push(std::mem::take(&mut current));
                } else {
                    current.push('\n');
                }
            }
        }
    }
    joined
}

fn grpcurl_installed() -> bool {
    Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Without grpcurl: the method a `grpcurl` line calls exists in `proto/` and
/// its `-d` body is JSON.
fn check_grpcurl_statically(command: &str) {
    let last = command.split_whitespace().last().unwrap();
    if last == "list" {
        return;
    }
    let (service, method) = last.rsplit_once('/').expect("a Service/Method");
    let mut parts = service.split('.');
    let (package, name) = (parts.nth(1).unwrap(), service.rsplit('.').next().unwrap());
    let directory = repository().join(format!("proto/tally/{package}/v1"));
    let contracts: String = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert!(
        contracts.contains(&format!("service {name} {{"))
            && contracts.contains(&format!("rpc {method}(")),
        "README's grpcurl calls {last}, which proto/ does not define"
    );
    if let Some(body) = command.split("-d '").nth(1) {
        let body = body.split('\'').next().unwrap();
        serde_json::from_str::<serde_json::Value>(body)
            .unwrap_or_else(|error| panic!("README's grpcurl body is not JSON: {error}\n{body}"));
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tally(args: &[&str], address: &str, key: &str) -> std::process::Output {
    Command::new(TALLY)
        .args(args)
        .env("TALLY_ADDRESS", address)
        .env("TALLY_API_KEY", key)
        .output()
        .unwrap()
}

/// The first `prefix…` id in `text`.
fn first_id(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    let id: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (id.len() > prefix.len()).then_some(id)
}

#[tokio::test]
async fn every_command_of_the_readme_tour_runs_against_tally_dev() {
    let database = tally_testkit::postgres::database().await;
    let root =
        std::env::temp_dir().join(format!("tally-readme-{}", tally_testkit::unique_suffix()));
    let data_dir = root.join(".tally/dev");
    std::fs::create_dir_all(&root).unwrap();
    // The tour runs from the repository's root: its paths (crates/cli/demo/…).
    std::os::unix::fs::symlink(repository().join("crates"), root.join("crates")).unwrap();
    let port = tally_runtime::local_postgres::free_port().unwrap();
    let address = format!("http://127.0.0.1:{port}");
    let _dev = Running(
        Command::new(TALLY)
            .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--webhook-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env("DATABASE_URL", &database.url)
            // The creation invoice within a second, not a minute.
            .env("TALLY_INVOICING__BILL_RUN_INTERVAL_SECONDS", "1")
            .env_remove("TALLY_CONFIG")
            .env_remove("STRIPE_API_KEY")
            .env_remove("TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let key = loop {
        let kept = std::fs::read_to_string(data_dir.join("admin-key")).unwrap_or_default();
        if let Some(key) = kept.split_whitespace().nth(1)
            && tally(&["clock", "show"], &address, key).status.success()
        {
            break key.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "tally dev did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    let tour = tour();
    let with_grpcurl = grpcurl_installed();
    let mut customer_id: Option<String> = None;
    let mut outputs = String::new();
    for (index, block) in blocks(&tour, "sh").into_iter().enumerate() {
        let mut script = String::new();
        for command in commands(&block) {
            if command.trim_start().starts_with("grpcurl") && !with_grpcurl {
                check_grpcurl_statically(&command);
                continue;
            }
            script.push_str(&command);
            script.push('\n');
        }
        if script.contains("cus_…") {
            let id = customer_id
                .clone()
                .expect("a customer created before `cus_…` is used");
            script = script.replace("cus_…", &id);
        }
        if script.contains("inv_…") {
            // The subscription's first invoice, once the bill run made it.
            let id = loop {
                let listed = tally(&["invoices", "list", "--output", "json"], &address, &key);
                if let Some(id) = first_id(&String::from_utf8_lossy(&listed.stdout), "inv_") {
                    break id;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(180),
                    "no invoice was made"
                );
                std::thread::sleep(Duration::from_millis(200));
            };
            script = script.replace("inv_…", &id);
        }
        // One shell session, as a reader's: what a block exports, the next sees.
        let session = format!(
            "if [ -f .tour-env ]; then source .tour-env; fi\n{script}\nexport -p > .tour-env\n"
        );
        let output = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &session])
            .current_dir(&root)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    Path::new(TALLY).parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("TALLY_ADDRESS", &address)
            .env("KEY", &key)
            .env_remove("TALLY_API_KEY")
            .env_remove("TALLY_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "README tour block {index} failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        );
        if customer_id.is_none() && script.contains("customers create") {
            customer_id = first_id(&stdout, "cus_");
        }
        outputs.push_str(&stdout);
        outputs.push_str(&stderr);
    }
    // What the tour says happens, happens.
    for expected in [
        "would be created",
        "accepted 3",
        "llm_token",
        "Platform fee",
        "amount due",
    ] {
        assert!(
            outputs.contains(expected),
            "missing `{expected}` in:\n{outputs}"
        );
    }

    // Every command of the synopsis exists.
    let synopsis = blocks(&tour, "text")
        .into_iter()
        .find(|block| block.starts_with("tally dev"))
        .expect("the `tally` synopsis");
    for line in synopsis.lines().filter(|line| line.starts_with("tally ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
        let command = words[0];
        let subcommands: Vec<&str> = match words.get(1) {
            Some(next)
                if !next.starts_with('-')
                    && next
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || "|-".contains(c)) =>
            {
                next.split('|').collect()
            }
            _ => vec![""],
        };
        for subcommand in subcommands {
            let mut args = vec![command];
            if !subcommand.is_empty() {
                args.push(subcommand);
            }
            args.push("--help");
            let help = Command::new(TALLY).args(&args).output().unwrap();
            assert!(
                help.status.success(),
                "README names `tally {}`, which does not exist",
                args.join(" ")
            );
        }
    }

    // The Pub/Sub snippet publishes to the compose emulator's project.
    let compose = read("docker-compose.yml");
    let snippet = blocks(&tour, "python").concat();
    assert!(
        compose.contains("tally-local"),
        "docker-compose.yml's project changed"
    );
    assert!(snippet.contains("topic_path(\"tally-local\""), "{snippet}");
    let _ = std::fs::remove_dir_all(&root);
}
