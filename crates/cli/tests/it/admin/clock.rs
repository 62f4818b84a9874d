//! `tally clock` against two services on manual clocks, as separate processes.

use super::support::{Service, create_key, run};

fn now_of(key: &str, address: &str) -> String {
    let shown = run(
        key,
        &["clock", "show", "--output", "json", "--address", address],
    )
    .expect(0);
    shown.json()[0]["now"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn clocks_of_separate_processes_move_together() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let manual = |start| {
        [
            ("TALLY_CLOCK__MODE", "manual"),
            ("TALLY_CLOCK__START", start),
        ]
    };
    let early = Service::start(&database.url, "rating", &manual("2026-11-01T00:00:00Z")).await;
    let late = Service::start(
        &database.url,
        "payments",
        &[
            ("TALLY_CLOCK__MODE", "manual"),
            ("TALLY_CLOCK__START", "2026-11-01T06:00:00Z"),
            (
                "TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR",
                &format!(
                    "127.0.0.1:{}",
                    tally_runtime::local_postgres::free_port().unwrap()
                ),
            ),
        ],
    )
    .await;
    let both = format!("{},{}", early.address, late.address);

    let shown = run(&key, &["clock", "show", "--address", &both]).expect(0);
    assert_eq!(
        shown.rows(),
        vec![
            vec![
                early.address.clone(),
                "2026-11-01T00:00:00Z".into(),
                "manual".into()
            ],
            vec![
                late.address.clone(),
                "2026-11-01T06:00:00Z".into(),
                "manual".into()
            ],
        ]
    );

    // `host:port` without a scheme is plaintext, as with grpcurl.
    let bare = early.address.trim_start_matches("http://");
    run(&key, &["clock", "show", "--address", bare]).expect(0);

    // One address: AdvanceTime on that service alone.
    run(
        &key,
        &["clock", "advance", "90s", "--address", &early.address],
    )
    .expect(0);
    assert_eq!(now_of(&key, &early.address), "2026-11-01T00:01:30Z");

    // Several: each is set to the latest clock plus the duration.
    let advanced = run(
        &key,
        &[
            "clock",
            "advance",
            "1d12h",
            "--address",
            &early.address,
            "--address",
            &late.address,
            "--output",
            "json",
        ],
    )
    .expect(0);
    let advanced = advanced.json();
    let times: Vec<&str> = advanced
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["now"].as_str().unwrap())
        .collect();
    assert_eq!(times, ["2026-11-02T18:00:00Z", "2026-11-02T18:00:00Z"]);
    assert_eq!(now_of(&key, &early.address), "2026-11-02T18:00:00Z");

    run(
        &key,
        &["clock", "set", "2026-12-01T00:00:00Z", "--address", &both],
    )
    .expect(0);
    assert_eq!(now_of(&key, &late.address), "2026-12-01T00:00:00Z");

    // Time never goes backwards; malformed input is a usage error.
    let refused = run(
        &key,
        &[
            "clock",
            "set",
            "2026-11-15T00:00:00Z",
            "--address",
            &early.address,
        ],
    )
    .expect(1);
    assert!(refused.stderr.contains("SetTime on"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("InvalidArgument"),
        "{}",
        refused.stderr
    );
    // With several processes, a refusal comes before any clock moves.
    let refused = run(
        &key,
        &["clock", "set", "2026-11-15T00:00:00Z", "--address", &both],
    )
    .expect(1);
    assert!(
        refused.stderr.contains("nothing was moved"),
        "{}",
        refused.stderr
    );
    let wall = Service::start(&database.url, "rating", &[]).await;
    let mixed = format!("{both},{}", wall.address);
    let refused = run(&key, &["clock", "advance", "1d", "--address", &mixed]).expect(1);
    assert!(
        refused.stderr.contains("runs on the wall clock"),
        "{}",
        refused.stderr
    );
    assert_eq!(now_of(&key, &early.address), "2026-12-01T00:00:00Z");

    let usage = run(
        &key,
        &["clock", "advance", "1 month", "--address", &early.address],
    )
    .expect(2);
    assert!(
        usage.stderr.contains("is not a duration"),
        "{}",
        usage.stderr
    );
    run(
        &key,
        &["clock", "set", "tomorrow", "--address", &early.address],
    )
    .expect(2);
}

/// The runtime's test certificates (`crates/runtime/tests/fixtures/tls`).
fn tls_fixture(name: &str) -> String {
    format!(
        "{}/../runtime/tests/fixtures/tls/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test]
async fn the_cli_reaches_a_tls_server_through_https_with_a_private_ca() {
    let database = tally_testkit::postgres::database().await;
    let key = create_key(&database.url, "admin");
    let (cert, private_key) = (tls_fixture("server1.pem"), tls_fixture("server1.key"));
    let service = Service::spawn(
        &database.url,
        "rating",
        &[
            ("TALLY_CLOCK__MODE", "manual"),
            ("TALLY_CLOCK__START", "2026-11-01T00:00:00Z"),
            ("TALLY_GRPC__TLS_CERT_FILE", &cert),
            ("TALLY_GRPC__TLS_KEY_FILE", &private_key),
        ],
    );
    let https = service
        .address
        .replace("http://127.0.0.1", "https://localhost");
    let ca = tls_fixture("ca1.pem");
    let show = |extra: &[&str]| {
        let mut args = vec!["clock", "show", "--address", https.as_str()];
        args.extend_from_slice(extra);
        run(&key, &args)
    };
    // Up when the CLI, trusting the test CA, gets an answer (it may take a while to start).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let shown = show(&["--ca-file", &ca]);
        if shown.code == 0 {
            assert!(shown.stdout.contains("2026-11-01"), "{}", shown.stdout);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer over TLS: {}",
            shown.stderr
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Without the private CA the server's certificate is not trusted.
    let untrusted = show(&[]);
    assert_ne!(untrusted.code, 0, "{}", untrusted.stdout);
    // Plaintext against the TLS port gets no answer either.
    let plaintext = run(&key, &["clock", "show", "--address", &service.address]);
    assert_ne!(plaintext.code, 0, "{}", plaintext.stdout);
}
