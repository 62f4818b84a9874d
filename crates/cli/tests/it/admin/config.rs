//! Configuration seen from the terminal: a `TALLY_…` variable that is none of
//! Tally's (`TALLY_BIN` from a user's script) or belongs to a section a
//! command does not load stops nothing; an unknown key in a section the
//! command loads is refused, said once; `events send` and `rejected` take
//! `TALLY_ADDRESS` and a bare `host:port` like the admin commands.

use super::support::{Dev, create_key, run_with_env};
use super::usage::events;

const TALLY: &str = super::support::TALLY;

/// `tally keys …` on `database_url` with `env`; (exit code, stdout, stderr).
fn keys(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = std::process::Command::new(TALLY)
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("TALLY_CONFIG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn unknown_variables_stop_only_the_sections_a_command_loads() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let dev = Dev::start(&database.url, &[]).await;
    let bare = dev.address.trim_start_matches("http://").to_owned();
    // The events' day (the manual clock starts on 2026-11-01).
    run_with_env(
        &key,
        &["clock", "set", "2026-11-10T12:00:00Z", "--address", &bare],
        None,
        &[],
    )
    .expect(0);
    let foreign = [
        ("TALLY_BIN", "/usr/local/bin/tally"),
        ("TALLY_GRPC__LISTEN_ADR", "typo"),
    ];

    // Client commands load no configuration: nothing stops them, and
    // TALLY_ADDRESS may be a bare host:port for each of them.
    let mut env = foreign.to_vec();
    env.push(("TALLY_ADDRESS", &bare));
    run_with_env(&key, &["usage", "unrated"], None, &env).expect(0);
    let sent = run_with_env(
        &key,
        &["events", "send", "--wait-rated"],
        Some(&events(&[(
            "c1",
            "cus_someone",
            "llm_tokens",
            "{\"tokens\": \"1\"}",
        )])),
        &env,
    )
    .expect(0);
    assert!(sent.stderr.contains("accepted 1"), "{}", sent.stderr);
    let listed = run_with_env(&key, &["rejected", "list"], None, &env).expect(0);
    assert!(
        listed.stderr.contains("0 open rejected events"),
        "{}",
        listed.stderr
    );
    // And as --address.
    run_with_env(&key, &["rejected", "list", "--address", &bare], None, &[]).expect(0);
    run_with_env(&key, &["events", "send", "--address", &bare], Some(""), &[]).expect(0);

    // `tally keys` loads the database and clock sections only.
    let (code, stdout, stderr) = keys(&database.url, &["list"], &foreign);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ID"), "{stdout}");
    assert!(
        stderr.is_empty(),
        "nothing to say about TALLY_BIN: {stderr}"
    );

    // An unknown key in a section it loads is refused, named once.
    let (code, _, stderr) = keys(
        &database.url,
        &["list"],
        &[("TALLY_DATABASE__MAX_CONECTIONS", "3")],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert_eq!(stderr.matches("unknown field").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A section that does not exist is likely a typo: a warning, once.
    let (code, _, stderr) = keys(
        &database.url,
        &["list"],
        &[("TALLY_DATABSE__URL", "postgres://nowhere")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr,
        "warning: TALLY_DATABSE__URL is ignored: no configuration section `databse`\n"
    );
}

#[test]
fn a_refused_connection_is_said_once() {
    let port = tally_runtime::local_postgres::free_port().unwrap();
    let address = format!("127.0.0.1:{port}");
    for args in [
        vec!["usage", "unrated", "--address", &address],
        vec!["events", "send", "--address", &address],
        vec!["rejected", "list", "--address", &address],
    ] {
        let refused = run_with_env("key", &args, Some(""), &[]).expect(1);
        assert!(
            refused
                .stderr
                .contains(&format!("cannot connect to {address}")),
            "{args:?}: {}",
            refused.stderr
        );
        assert_eq!(
            refused.stderr.matches("tcp connect error").count(),
            1,
            "{args:?}: {}",
            refused.stderr
        );
        assert!(refused.stderr.contains("hint: is Tally running there?"));
    }
}
