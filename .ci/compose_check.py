"""Validates docker-compose.yml with two independent compose parsers and checks that
the pieces fit. Run through .ci/compose-validate, which installs the tools.

1. docker-compose 1.29 (Docker's own Python implementation, `docker-compose config`):
   its compose-spec schema, YAML anchors and merges, interpolation, and references
   between services (depends_on, volumes); its resolved output is what is checked below.
2. compose-spec (Python bindings of the Rust `compose_spec` crate): a strict typed
   parser of the current Compose Specification (knows newer keys than 1.29).
3. Wiring: every Tally service runs `tally serve <name>` from the image the migrate
   service builds, waits for a healthy PostgreSQL and Pub/Sub emulator and for the
   migrations, topic setup and peer-key registration to finish, calls its peers with
   the key peer-key registers, reaches hosts that exist, and is health-checked
   over gRPC; the topics match crates/bus/src/topics.rs; mounted files exist.
4. The topic setup script runs against the real Pub/Sub emulator, twice (idempotent),
   and the subscriptions come out with their dead-letter policy, ordered exactly where
   the code creates them ordered.
5. With TALLY_BIN set, the real binary accepts each container's command and environment,
   and the containers run as local processes (.ci/live_deploy_check.py) create a customer
   and a subscription and bill its first, ended period, which finance books; without the
   peer key a service that calls peers stops at start.
6. The Dockerfile the migrate service builds, parsed with BuildKit's parser: stages,
   a numeric non-root user, ENTRYPOINT tally, CI's build command, the build context.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import dockerfile
import yaml
from compose_spec import PyOptions

import live_deploy_check
from deploy_checks import (
    ROOT,
    Checks,
    bad_tally_variables,
    code_ordered_subscriptions,
    code_subscriptions,
    code_topics,
    run_binary,
    setup_entry_is_ordered,
    tally_binary,
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
TALLY_SERVICES = ["ingest", "rating", "invoicing", "payments", "finance", "connectors", "export"]
EMULATOR_PATHS = [
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
]


def docker_compose_v1(checks: Checks) -> dict:
    """`docker-compose config`: validates and prints the resolved file."""
    binary = os.environ["DOCKER_COMPOSE_V1"]
    result = subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
    )
    checks.check(result.returncode == 0, f"docker-compose config refused the file: {result.stderr.strip()}")
    print(f"  docker-compose {subprocess.run([binary, 'version', '--short'], capture_output=True, text=True).stdout.strip()}: "
          f"{'valid' if result.returncode == 0 else 'INVALID'}")
    return yaml.safe_load(result.stdout) if result.returncode == 0 else {}


def compose_spec_parser(checks: Checks) -> None:
    try:
        parsed = PyOptions(apply_merge=True).from_yaml(COMPOSE_FILE.read_text())
        parsed.to_spec()
        checks.check(True, "")
        print(f"  compose-spec: valid ({len(parsed.service_names())} services)")
    except ValueError as error:
        checks.check(False, f"compose-spec refused the file: {error}")


def env_of(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def ports_of(service: dict) -> list[tuple[str, str, str]]:
    """(host ip, published port, container port) of `docker-compose config`'s port strings."""
    result = []
    for port in service.get("ports", []):
        parts = str(port).split("/")[0].split(":")
        parts = [""] * (3 - len(parts)) + parts
        result.append((parts[0], parts[1], parts[2]))
    return result


def check_wiring(checks: Checks, compose: dict) -> None:
    services = compose.get("services", {})
    names = set(services)
    expected = {"postgres", "pubsub", "pubsub-setup", "migrate", "peer-key", "otel-collector", "jaeger", *TALLY_SERVICES}
    checks.check(names == expected, f"services are {sorted(names)}, expected {sorted(expected)}")

    postgres_env = env_of(services.get("postgres", {}))
    migrate = services.get("migrate", {})
    image = migrate.get("image")
    build = migrate.get("build", {})
    checks.check(migrate.get("command") == ["migrate"], "migrate runs `tally migrate`")
    context = Path(build.get("context", "")) if build else None
    checks.check(
        context is not None and (context / build.get("dockerfile", "Dockerfile")).is_file(),
        f"migrate builds the image from an existing Dockerfile: {build}",
    )
    for name in ("postgres", "pubsub"):
        checks.check("healthcheck" in services.get(name, {}), f"{name} has a health check")

    host_ports = [f"{ip}:{published}" for service in services.values() for ip, published, _ in ports_of(service)]
    checks.check(len(host_ports) == len(set(host_ports)), f"host ports are unique: {host_ports}")

    # The peer key: registered after the migrations, the one every service calls with.
    peer_key = services.get("peer-key", {})
    peer_key_value = env_of(peer_key).get("TALLY_API_KEY", "")
    checks.check(
        peer_key.get("command", [])[:2] == ["keys", "register"] and "read,write" in peer_key.get("command", []),
        f"peer-key runs `tally keys register --scope read,write`: {peer_key.get('command')}",
    )
    checks.check(len(peer_key_value) >= 32, "peer-key registers a key of at least 32 characters")
    checks.check(
        peer_key.get("depends_on", {}).get("migrate", {}).get("condition") == "service_completed_successfully",
        "peer-key waits for the migrations",
    )

    for name in [*TALLY_SERVICES, "migrate", "peer-key"]:
        service = services.get(name, {})
        env = env_of(service)
        where = f"service {name}"
        checks.check(service.get("image") == image, f"{where} runs the image migrate builds ({image})")
        refused = bad_tally_variables(list(env))
        checks.check(not refused, f"{where}: TALLY_ variables the config loader refuses: {refused}")
        url = urlsplit(env.get("DATABASE_URL", ""))
        checks.check(
            url.hostname == "postgres"
            and url.password == postgres_env.get("POSTGRES_PASSWORD")
            and url.path.lstrip("/") == postgres_env.get("POSTGRES_DB"),
            f"{where}: DATABASE_URL matches the postgres service",
        )
        depends = service.get("depends_on", {})
        checks.check(depends.get("postgres", {}).get("condition") == "service_healthy", f"{where} waits for a healthy postgres")
        if name in ("migrate", "peer-key"):
            continue
        checks.check(service.get("command") == ["serve", name], f"{where} runs `tally serve {name}`")
        checks.check(env.get("TALLY_API_KEY") == peer_key_value, f"{where} calls its peers with the key peer-key registers")
        checks.check(service.get("pull_policy") == "never", f"{where} never pulls the locally built image")
        for dependency in ("migrate", "pubsub-setup", "peer-key"):
            checks.check(
                depends.get(dependency, {}).get("condition") == "service_completed_successfully",
                f"{where} waits for {dependency} to complete",
            )
        test = service.get("healthcheck", {}).get("test", [])
        listen_port = env.get("TALLY_GRPC__LISTEN_ADDR", "").rsplit(":", 1)[-1]
        checks.check(
            test[:2] == ["CMD", "grpc_health_probe"] and f"-addr=127.0.0.1:{listen_port}" in test,
            f"{where} is health-checked over gRPC on its listen port: {test}",
        )
        checks.check(env.get("TALLY_BUS__BACKEND") == "pubsub", f"{where} uses the Pub/Sub bus")
        emulator = env.get("PUBSUB_EMULATOR_HOST", ":").split(":")[0]
        checks.check(emulator == "pubsub", f"{where}: PUBSUB_EMULATOR_HOST names the emulator service")
        otlp = urlsplit(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
        checks.check(otlp.hostname in names and otlp.port == 4317, f"{where}: OTLP goes to a service on 4317: {otlp.geturl()}")
        targets = [target for _, _, target in ports_of(service)]
        checks.check(listen_port in targets, f"{where}: its gRPC port {listen_port} is published")

    setup_env = env_of(services.get("pubsub-setup", {}))
    topics = setup_env.get("PUBSUB_TOPICS", "").split()
    checks.check(topics == code_topics(), f"pubsub-setup topics {topics} == crates/bus/src/topics.rs {code_topics()}")
    entries = setup_env.get("PUBSUB_SUBSCRIPTIONS", "").split()
    for entry in entries:
        checks.check(entry.split("=", 1)[-1].split(":")[0] in topics, f"subscription {entry} reads a created topic")
    named = {entry.split("=", 1)[0] for entry in entries}
    for constant, name in code_subscriptions().items():
        checks.check(name in named, f"pubsub-setup does not create {name} ({constant})")
    ordered = code_ordered_subscriptions()
    for entry in entries:
        name = entry.split("=", 1)[0]
        checks.check(
            setup_entry_is_ordered(entry) == (name in ordered),
            f"pubsub-setup entry {entry} is {'ordered' if name in ordered else 'unordered'} as the code creates it",
        )
    project = env_of(services.get("ingest", {})).get("TALLY_BUS__PROJECT_ID")
    checks.check(setup_env.get("PUBSUB_PROJECT_ID") == project, f"pubsub-setup creates topics in the services' project {project}")
    emulator_command = " ".join(services.get("pubsub", {}).get("command", []))
    checks.check(f"--project={project}" in emulator_command, "the emulator is started for the services' project")

    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith(("/", ".")):
                checks.check(Path(source).exists(), f"{name} mounts {source}, which exists")
    collector = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text())
    jaeger = urlsplit("//" + collector["exporters"]["otlp/jaeger"]["endpoint"]).hostname
    checks.check(jaeger in names, f"the collector exports traces to a service ({jaeger})")
    for pipeline in collector["service"]["pipelines"].values():
        for part in ("receivers", "processors", "exporters"):
            for item in pipeline.get(part, []):
                checks.check(item in collector.get(part, {}), f"otel-collector pipeline uses a defined {part[:-1]} {item}")


# What the build reads from the context (crates/proto/build.rs, sqlx::migrate!).
BUILD_INPUTS = ["Cargo.toml", "Cargo.lock", "crates", "proto", "migrations"]
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}


def check_dockerfile(checks: Checks) -> None:
    """The image migrate builds: parsed by BuildKit's own parser (the `dockerfile` package)."""
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    checks.check(all(c.cmd.upper() in INSTRUCTIONS for c in commands), f"Dockerfile instructions: {[c.cmd for c in commands]}")
    stages = [c.value[2] for c in commands if c.cmd.upper() == "FROM" and len(c.value) == 3]
    for command in commands:
        for flag in command.flags:
            if flag.startswith("--from="):
                checks.check(flag[7:] in stages, f"Dockerfile {command.original!r} copies from a defined stage {stages}")
    final = commands[[i for i, c in enumerate(commands) if c.cmd.upper() == "FROM"][-1]:]
    users = [c.value[0] for c in final if c.cmd.upper() == "USER"]
    checks.check(users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0",
                 f"the runtime stage runs as a numeric non-root user: {users}")
    entrypoint = [c for c in final if c.cmd.upper() == "ENTRYPOINT"]
    checks.check(entrypoint and entrypoint[-1].json and entrypoint[-1].value == ("tally",), "ENTRYPOINT [\"tally\"]")
    builds = [c.value[0] for c in commands if c.cmd.upper() == "RUN" and "cargo build" in c.value[0]]
    checks.check(
        builds and "cargo build --release --locked -p tally-cli" in builds[0],
        "the image builds what CI builds: cargo build --release --locked -p tally-cli",
    )
    ignored = [line.strip().strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for needed in BUILD_INPUTS:
        checks.check(needed not in ignored and (ROOT / needed).exists(), f".dockerignore keeps {needed} in the build context")
    print(f"  Dockerfile: {len(commands)} instructions in stages {stages}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emulator_binary() -> str | None:
    for candidate in [os.environ.get("PUBSUB_EMULATOR_BIN", ""), *EMULATOR_PATHS, shutil.which("cloud-pubsub-emulator") or ""]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_setup_script(checks: Checks, compose: dict) -> None:
    """Runs helm/tally/files/pubsub-setup.sh (compose's topic setup) against the emulator."""
    setup_env = env_of(compose["services"]["pubsub-setup"])
    process = None
    host = os.environ.get("PUBSUB_EMULATOR_HOST", "")
    if not host:
        binary = emulator_binary()
        if binary is None:
            checks.check(False, "the Pub/Sub emulator is missing (apt-get install google-cloud-cli-pubsub-emulator), "
                                "or set PUBSUB_EMULATOR_BIN / PUBSUB_EMULATOR_HOST")
            return
        port = free_port()
        host = f"127.0.0.1:{port}"
        process = subprocess.Popen([binary, "--host=127.0.0.1", f"--port={port}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # A project of its own, so a shared emulator is not disturbed.
        project = f"tally-ci-{uuid.uuid4().hex[:8]}"
        env = {**setup_env, "PATH": os.environ.get("PATH", ""), "PUBSUB_EMULATOR_HOST": host, "PUBSUB_PROJECT_ID": project}
        script = str(ROOT / "helm/tally/files/pubsub-setup.sh")
        for attempt in ("first run", "second run (idempotent)"):
            result = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=120)
            checks.check(result.returncode == 0, f"pubsub-setup.sh {attempt} failed: {result.stdout}{result.stderr}")
        created = 0
        for entry in setup_env["PUBSUB_SUBSCRIPTIONS"].split():
            name, target = entry.split("=", 1)
            topic, *options = target.split(":")
            seconds = [option for option in options if option != "ordered"]
            deadline = int(seconds[0] if seconds else setup_env.get("PUBSUB_ACK_DEADLINE_SECONDS", "10"))
            ordered = "ordered" in options
            with urllib.request.urlopen(f"http://{host}/v1/projects/{project}/subscriptions/{name}", timeout=10) as response:
                subscription = json.load(response)
            checks.check(subscription.get("topic") == f"projects/{project}/topics/{topic}", f"{name} reads {topic}")
            checks.check(
                bool(subscription.get("enableMessageOrdering", False)) == ordered,
                f"{name} is {'ordered' if ordered else 'unordered'}: {subscription.get('enableMessageOrdering')}",
            )
            checks.check(subscription.get("ackDeadlineSeconds") == deadline, f"{name} has a {deadline} s ack deadline")
            policy = subscription.get("deadLetterPolicy", {})
            checks.check(
                policy.get("deadLetterTopic") == f"projects/{project}/topics/{name}-dead-letter"
                and policy.get("maxDeliveryAttempts") == int(setup_env["PUBSUB_MAX_DELIVERY_ATTEMPTS"]) + 1,
                f"{name} dead-letters to {name}-dead-letter one attempt after the consumer: {policy}",
            )
            created += 1
        print(f"  pubsub-setup.sh against the emulator at {host}: {created} subscriptions verified, rerun is a no-op")
    finally:
        if process is not None:
            process.kill()
            process.wait()


def check_binary(checks: Checks, compose: dict) -> None:
    binary = tally_binary()
    if binary is None:
        print("  SKIPPED the binary check: set TALLY_BIN to a built tally (.ci/run does)")
        return
    for name in ["migrate", "peer-key", *TALLY_SERVICES]:
        service = compose["services"][name]
        error = run_binary(binary, service["command"], env_of(service), {})
        checks.check(error is None, f"tally refuses the {name} container's configuration: {error}")
    print(f"  {binary} accepts the command and environment of migrate, peer-key and the {len(TALLY_SERVICES)} services")


def check_live(checks: Checks, compose: dict) -> None:
    binary = tally_binary()
    if binary is None:
        print("  SKIPPED the live check: set TALLY_BIN to a built tally (.ci/run does)")
        return
    live_deploy_check.run_deployment(checks, binary, live_deploy_check.from_compose(compose, env_of))


def main() -> None:
    checks = Checks()
    print("==> parsers")
    compose = docker_compose_v1(checks)
    compose_spec_parser(checks)
    if not compose:
        checks.finish("docker-compose.yml")
    print("==> wiring")
    check_wiring(checks, compose)
    check_dockerfile(checks)
    print("==> topic setup against the Pub/Sub emulator")
    check_setup_script(checks, compose)
    print("==> the tally binary")
    check_binary(checks, compose)
    print("==> live: the containers as processes on PostgreSQL and the emulator, billing an ended period")
    check_live(checks, compose)
    checks.finish("docker-compose.yml")


if __name__ == "__main__":
    main()
