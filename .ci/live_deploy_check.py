"""Runs a rendered deployment (docker-compose.yml, or the Helm chart's manifests) as local
processes and bills with it: the check that a cluster installed as documented can create a
subscription (issue 23, item 1). Called by .ci/compose_check.py and .ci/helm_check.py when
TALLY_BIN names a built binary.

What it does, once per deployment:

1. Starts a throwaway PostgreSQL (initdb + pg_ctl as the `postgres` user, fsync off) and
   the Pub/Sub emulator, each on a free 127.0.0.1 port.
2. Takes each container's command and environment exactly as rendered (compose: the
   `docker-compose config` output; Helm: the Deployments' and hook Jobs' env, with values
   from the chart's ConfigMap and the Secrets the chart generates, e.g. the peer key) and
   changes only what points into the cluster — see REWRITES below — then runs the one-shot
   containers (compose: pubsub-setup's script, migrate, peer-key; Helm: the hook Jobs in
   hook-weight order) and the five `tally serve` processes.
3. Waits until every service reports SERVING for its readiness name over gRPC health.
4. Creates an admin key, applies a small catalog, creates a customer and a subscription
   that started 28 days ago with its billing anchor at today's midnight (UTC), sends usage
   in that period to ingest and waits until rating has rated it (over the bus), calls
   InvoiceService/RunBilling and asserts the invoice of the ended first period exists with
   the expected total (28.00 of fees + 0.50 of usage): every peer call of the path
   (invoicing → rating for the plan and the usage lines) goes through the rendered peer key.
   Then finalizes it (the default grace period keeps it a draft for a day) and waits until
   finance has booked it from `invoice-events`: `tally finance trial-balance` shows
   accounts receivable (1100) at the invoice's total, debits equal to credits.
5. The peer key: each service that calls peers, started with the same environment minus
   TALLY_API_KEY, exits at start with a message naming TALLY_API_KEY; each one that calls
   none (ingest, finance) starts and reports SERVING without it.

Every process it started is killed by pid and its temporary directory removed, whatever
happens (a failed assertion, an exception, SIGTERM).

REWRITES (nothing else of a container's environment or command is changed):

- in-cluster `host:port` values → `127.0.0.1:<free port>`: the database host in
  DATABASE_URL, PUBSUB_EMULATOR_HOST / bus.emulator_host, the peers' URLs
  (TALLY_PEERS__*_URL, [peers] in tally.toml): the processes run on one machine, where
  those names do not resolve and every service cannot have port 50051.
- the OTLP collector endpoint (compose's otel-collector:4317) → a closed local port: the
  collector is not part of what is checked, and an unresolvable name must not stall the
  exporter; export failures are only logged.
- listen addresses: TALLY_GRPC__LISTEN_ADDR (0.0.0.0:50051 in every container) → each
  service's own 127.0.0.1 port, and payments' webhook listener (its default 0.0.0.0:8080;
  set as TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR) → a free 127.0.0.1 port: one machine, one
  port per listener, loopback only.
- files mounted into the container (Helm: /etc/tally/tally.toml from the ConfigMap;
  compose: the pubsub-setup script) → the same content at a temporary path.
- values the operator provides and the chart only references (Helm: the database URL and
  Stripe Secrets, created before installing) → the throwaway database, and empty Stripe
  keys as compose has them by default; Kubernetes' downward API (POD_NAME,
  POD_NAMESPACE) → fixed names.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from deploy_checks import ROOT, Checks

SERVICES = ["ingest", "rating", "invoicing", "payments", "finance"]
# Services that call peers and so must refuse to start without TALLY_API_KEY; the
# others must start without it.
PEER_CALLERS = ["rating", "invoicing", "payments"]
# The grpc.health.v1 names each service reports readiness under.
READINESS = {
    "ingest": "tally.ingest.v1.IngestService",
    "rating": "tally.rating.v1.RatingService",
    "invoicing": "tally.invoicing.v1.InvoiceService",
    "payments": "tally.payments.v1.PaymentService",
    "finance": "tally.finance.v1.LedgerService",
}
# Finance's account for receivables (crates/finance, the chart of accounts).
RECEIVABLES_CODE = "1100"
EMULATOR_PATHS = ["/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"]
POSTGRES_MISSING = "PostgreSQL server binaries (initdb, pg_ctl) missing: apt-get install postgresql (or set PG_BIN_DIR)"
EMULATOR_MISSING = (
    "the Pub/Sub emulator is missing: apt-get install google-cloud-cli-pubsub-emulator openjdk-17-jre-headless "
    "(or set PUBSUB_EMULATOR_BIN)"
)
SERVING_DEADLINE = 120.0
EXIT_DEADLINE = 60.0
COMMAND_TIMEOUT = 120

# The first period of the subscription: 28 days (inside invoicing's default 30-day
# backdate window), ending at the billing anchor. The plan's monthly fee is one unit per
# day of that month, so the 28 days cost exactly 28.00 whatever the month's length; the
# usage events sent in that period add 0.01 each.
STUB_DAYS = 28
USAGE_EVENTS = 50
UNIT_PRICE = Decimal("0.01")
CATALOG = """\
meters:
  - code: live_check_calls
    name: Live check calls
    aggregation: count
    unit: call
plans:
  - code: live_check
    name: Live check
    version:
      currency: USD
      billing_interval: month
      charges:
        - key: platform_fee
          name: Platform fee
          flat_fee: "{fee}"
          timing: in_arrears
        - key: calls
          name: Calls
          meter: live_check_calls
          per_unit: "{unit_price}"
"""


@dataclass
class Container:
    """One container as rendered: its `tally` arguments (or a script), environment and
    the files mounted into it (path in the container → content)."""

    name: str
    args: list[str]
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    script: str | None = None  # a shell script run with `sh` instead of tally


@dataclass
class Deployment:
    label: str
    jobs: list[Container]  # one-shot, in order
    services: dict[str, Container]  # the `tally serve` containers, one per service
    # In-cluster `host:port` → the local role it stands for: "postgres", "pubsub",
    # "otlp" or a service name.
    hosts: dict[str, str]
    # Names that must not survive the rewrite (the cluster's hostnames).
    cluster_names: list[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    given = os.environ.get("PG_BIN_DIR")
    if given:
        return Path(given) if (Path(given) / "initdb").is_file() and (Path(given) / "pg_ctl").is_file() else None
    candidates = []
    newest_first = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                          key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += newest_first
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def emulator_binary() -> str | None:
    given = os.environ.get("PUBSUB_EMULATOR_BIN")
    if given:
        return given if os.access(given, os.X_OK) else None
    for candidate in [shutil.which("cloud-pubsub-emulator") or "", *EMULATOR_PATHS]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Failed(Exception):
    """A step failed; the message says which and why."""


class LiveRun:
    """The processes and directories of one run; `close` removes all of them."""

    def __init__(self, binary: Path, label: str) -> None:
        self.binary = binary
        self.label = label
        self.dir = Path(tempfile.mkdtemp(prefix="tally-live-"))
        self.dir.chmod(0o755)  # the postgres user must reach its data directory
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.pg_data: Path | None = None
        self.pg_ctl: Path | None = None
        self._as_postgres: list[str] = []
        self.ports: dict[str, int] = {}

    # --- infrastructure -------------------------------------------------------------

    def start_postgres(self) -> int:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            given = os.environ.get("PG_BIN_DIR")
            raise Failed(f"PG_BIN_DIR={given} holds no initdb and pg_ctl" if given else POSTGRES_MISSING)
        data = self.dir / "pgdata"
        data.mkdir()
        as_postgres: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            shutil.chown(data, "postgres", "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        self._run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-locale", "--no-sync"], "initdb")
        options = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self.pg_data, self.pg_ctl = data, bin_dir / "pg_ctl"
        self._as_postgres = as_postgres
        self._run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"),
                   "-o", options, "start"], "pg_ctl start")
        self._run([*as_postgres, str(bin_dir / "psql"), "-h", str(data), "-p", str(port), "-U", "postgres",
                   "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE tally"], "CREATE DATABASE tally")
        return port

    def start_emulator(self) -> int:
        binary = emulator_binary()
        if binary is None:
            given = os.environ.get("PUBSUB_EMULATOR_BIN")
            raise Failed(f"PUBSUB_EMULATOR_BIN={given} is not executable" if given else EMULATOR_MISSING)
        port = free_port()
        log = self.dir / "pubsub-emulator.log"
        process = self.spawn("pubsub-emulator", [binary, "--host=127.0.0.1", f"--port={port}"], dict(os.environ), log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "Server started, listening on" in log.read_text(errors="replace"):
                return port
            if process.poll() is not None:
                raise Failed(f"the Pub/Sub emulator exited ({process.returncode}): {tail(log)}")
            time.sleep(0.1)
        raise Failed(f"the Pub/Sub emulator did not start within 60 s: {tail(log)}")

    # --- processes --------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=self.dir, start_new_session=True)
        self.processes.append((name, process))
        return process

    def _run(self, argv: list[str], what: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
        try:
            result = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                                    cwd=self.dir)
        except subprocess.TimeoutExpired:
            raise Failed(f"{what}: no answer within {COMMAND_TIMEOUT} s") from None
        if result.returncode != 0:
            raise Failed(f"{what}: exit {result.returncode}: {(result.stderr.strip() or result.stdout.strip())[-2000:]}")
        return result.stdout

    def tally(self, args: list[str], env: dict[str, str], what: str, stdin: str | None = None) -> str:
        return self._run([str(self.binary), *args], what, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
                         stdin=stdin)

    def close(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.pg_data is not None and (self.pg_data / "postmaster.pid").exists():
            subprocess.run([*self._as_postgres, str(self.pg_ctl), "-D", str(self.pg_data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
            pid_file = self.pg_data / "postmaster.pid"
            if pid_file.exists():  # pg_ctl failed: the postmaster's pid, from its own file
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                except (ProcessLookupError, ValueError, IndexError):
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- rewriting -----------------------------------------------------------------------------


def rewrite_text(text: str, mapping: dict[str, str]) -> str:
    """Replaces each in-cluster `host:port` of `mapping` where it stands as a whole
    (not part of a longer name or port)."""
    for old, new in mapping.items():
        text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?!\d)", new, text)
    return text


def local_container(container: Container, mapping: dict[str, str], listen: str | None, webhook: str | None,
                    files_dir: Path) -> Container:
    env = {key: rewrite_text(value, mapping) for key, value in container.env.items()}
    if listen is not None:
        env["TALLY_GRPC__LISTEN_ADDR"] = listen
    if webhook is not None:
        env["TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR"] = webhook
    args = list(container.args)
    for path, content in container.files.items():
        local = files_dir / container.name / Path(path).name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(rewrite_text(content, mapping))
        args = [str(local) if arg == path else arg for arg in args]
    script = container.script
    if script is not None and script in container.files:
        script = str(files_dir / container.name / Path(script).name)
    return Container(container.name, args, env, {}, script)


def leftovers(container: Container, names: list[str], files_dir: Path) -> list[str]:
    """In-cluster hosts still named after the rewrite (a new, unmapped reference): a name
    followed by a port, or after `//` or `@` in a URL."""
    texts = [f"{key}={value}" for key, value in container.env.items()]
    texts += [(files_dir / container.name / Path(arg).name).read_text()
              for arg in container.args  # configuration files (a script is code, not settings)
              if arg.startswith(str(files_dir)) and Path(arg).is_file()]
    found = []
    for text in texts:
        for name in names:
            host = re.escape(name)
            if re.search(rf"(?<![\w.-]){host}(\.[\w.-]+)?:\d|(//|@){host}(\.[\w.-]+)?(?=[/\s\"']|$)", text):
                found.append(f"{name} in {text[:160]!r}")
    return found


# --- gRPC (grpcio with hand-encoded messages: two tiny requests need no generated code) ---


def _field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, bool) or isinstance(value, int):
        return bytes([number << 3 | 0]) + _varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return bytes([number << 3 | 2]) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _unary(address: str, method: str, request: bytes, key: str | None, timeout: float) -> bytes:
    import grpc  # installed into the tools' virtualenv by .ci/compose-validate and .ci/helm-lint

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        metadata = [("authorization", f"Bearer {key}")] if key else None
        return call(request, timeout=timeout, metadata=metadata)


def serving(address: str, name: str) -> bool:
    """grpc.health.v1.Health/Check for `name` answers SERVING (status field 1 = 1)."""
    try:
        response = _unary(address, "/grpc.health.v1.Health/Check", _field(1, name), None, 2.0)
    except Exception:  # noqa: BLE001 - not up yet, refused, UNKNOWN service…
        return False
    return response == b"\x08\x01"


def _decode(data: bytes) -> list[tuple[int, int | bytes]]:
    """The fields of a protobuf message: (number, varint or bytes); fixed widths skipped."""
    fields, index = [], 0

    def varint() -> int:
        nonlocal index
        value, shift = 0, 0
        while True:
            byte = data[index]
            index += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while index < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, data[index:index + length]))
            index += length
        elif wire in (1, 5):
            index += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    return fields


def run_billing(address: str, key: str, customer_id: str) -> dict:
    """InvoiceService/RunBilling for one customer, waiting for a run in progress: its
    counts and failures (RunBillingResponse fields 2–6 and 8)."""
    response = _unary(address, "/tally.invoicing.v1.InvoiceService/RunBilling",
                      _field(1, customer_id) + _field(2, True), key, 120.0)
    names = {2: "periods_examined", 3: "invoices_created", 4: "invoices_updated", 5: "invoices_finalized", 6: "failures"}
    result: dict = {name: 0 for name in names.values()} | {"failed": []}
    for number, value in _decode(response):
        if number in names:
            result[names[number]] = value
        elif number == 8:
            result["failed"].append([v.decode(errors="replace") for _, v in _decode(value) if isinstance(v, bytes)])
    return result


def rating_states(address: str, key: str, customer_id: str, event_ids: list[str]) -> dict[str, tuple[int, str]]:
    """RatingService/GetEventRatingStatus: event id → (EventRatingState, detail);
    1 pending, 2 rated, 3 unrated."""
    request = _field(1, customer_id) + b"".join(_field(2, event_id) for event_id in event_ids)
    response = _unary(address, "/tally.rating.v1.RatingService/GetEventRatingStatus", request, key, 30.0)
    states = {}
    for number, value in _decode(response):
        if number == 1 and isinstance(value, bytes):
            fields = dict(_decode(value))
            event_id = fields.get(1, b"").decode()
            states[event_id] = (int(fields.get(2, 0)), fields.get(4, b"").decode(errors="replace"))
    return states


# --- the run -------------------------------------------------------------------------------


def find_id(value: object, prefix: str) -> str | None:
    if isinstance(value, dict):
        if isinstance(value.get("id"), str) and value["id"].startswith(prefix):
            return value["id"]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = find_id(item, prefix)
            if found:
                return found
    return None


def run_deployment(checks: Checks, binary: Path, deployment: Deployment) -> None:
    prefix = f"[{deployment.label}] live"
    started = time.monotonic()
    run = LiveRun(binary, deployment.label)

    def terminated(*_: object) -> None:
        raise SystemExit(143)  # unwinds through `finally`: everything started is stopped

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        _run_deployment(checks, run, deployment, prefix)
    except Failed as error:
        checks.check(False, f"{prefix}: {error}")
    except Exception as error:  # noqa: BLE001 - a bug of the check: reported, and still cleaned up
        checks.check(False, f"{prefix}: the check itself failed: {error!r}")
        raise
    finally:
        run.close()
        signal.signal(signal.SIGTERM, previous)
    print(f"  {prefix}: finished in {time.monotonic() - started:.1f} s")


def _run_deployment(checks: Checks, run: LiveRun, deployment: Deployment, prefix: str) -> None:
    pg_port = run.start_postgres()
    emulator_port = run.start_emulator()
    ports = {name: free_port() for name in SERVICES}
    closed = free_port()  # nothing listens there
    local = {"postgres": f"127.0.0.1:{pg_port}", "pubsub": f"127.0.0.1:{emulator_port}", "otlp": f"127.0.0.1:{closed}",
             **{name: f"127.0.0.1:{port}" for name, port in ports.items()}}
    mapping = {host: local[role] for host, role in deployment.hosts.items()}
    print(f"  {prefix}: PostgreSQL on {local['postgres']}, Pub/Sub emulator on {local['pubsub']}, "
          f"services on {', '.join(f'{n} {local[n]}' for n in SERVICES)}")
    files_dir = run.dir / "files"
    webhook = f"127.0.0.1:{free_port()}"

    jobs = [local_container(job, mapping, None, None, files_dir) for job in deployment.jobs]
    services = {name: local_container(container, mapping, local[name], webhook if name == "payments" else None, files_dir)
                for name, container in deployment.services.items()}
    rendered = "\n".join([*(f"{k}={v}" for c in [*deployment.jobs, *deployment.services.values()] for k, v in c.env.items()),
                          *(text for c in deployment.services.values() for text in c.files.values())])
    used = {old: new for old, new in mapping.items() if rewrite_text(rendered, {old: new}) != rendered}
    print(f"  {prefix}: rewrites {used}; TALLY_GRPC__LISTEN_ADDR → each service's port above; "
          f"payments' webhook listener → {webhook}")
    for container in [*jobs, *services.values()]:
        left = leftovers(container, deployment.cluster_names, files_dir)
        if not checks.check(not left, f"{prefix}: {container.name} still points into the cluster after the rewrite: {left}"):
            return

    # One-shot containers, in order.
    for job in jobs:
        if job.script is not None:
            run._run(["sh", job.script], f"{job.name} ({job.script})",
                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **job.env})
        else:
            run.tally(job.args, job.env, f"{job.name}: tally {' '.join(job.args)}")
        print(f"  {prefix}: {job.name} done")

    # The admin key before the services start: they load the key table at start and then
    # only every auth.refresh_interval_seconds.
    migrate = next(job for job in jobs if job.args[:1] == ["migrate"])
    admin_key = run.tally(["keys", "create", "--name", "live-check-admin", "--scope", "admin"],
                          {"DATABASE_URL": migrate.env["DATABASE_URL"]}, "tally keys create --scope admin").strip()

    # The services.
    logs = {}
    processes = {}
    for name, container in services.items():
        logs[name] = run.dir / f"{name}.log"
        processes[name] = run.spawn(name, [str(run.binary), *container.args],
                                    {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **container.env}, logs[name])
    deadline = time.monotonic() + SERVING_DEADLINE
    waiting = set(services)
    while waiting:
        for name in sorted(waiting):
            if processes[name].poll() is not None:
                raise Failed(f"{name} exited at start ({processes[name].returncode}):\n{tail(logs[name])}")
            if serving(local[name], READINESS[name]):
                waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            raise Failed(f"not SERVING within {SERVING_DEADLINE:.0f} s: {sorted(waiting)}:\n"
                         + "\n".join(f"--- {n} ---\n{tail(logs[n])}" for n in sorted(waiting)))
        if waiting:
            time.sleep(0.2)
    checks.check(True, "")
    print(f"  {prefix}: all {len(services)} services report SERVING")

    try:
        bill_a_month(checks, run, admin_key, local, prefix)
    except Failed as error:
        raise Failed(f"{error}\n" + "\n".join(f"--- {n} ---\n{tail(logs[n], 15)}" for n in SERVICES)) from None

    # The negative case: without the peer key, each service that calls peers stops at start.
    for name in PEER_CALLERS:
        process, log, _ = spawn_without_key(run, services[name])
        try:
            code = process.wait(timeout=EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            code = None
        said = tail(log, 5)
        checks.check(code not in (None, 0) and "TALLY_API_KEY" in said,
                     f"{prefix}: {name} without TALLY_API_KEY should exit at start naming it; "
                     f"exit {code if code is not None else f'none within {EXIT_DEADLINE:.0f} s'}: {said}")
    print(f"  {prefix}: without TALLY_API_KEY, {', '.join(PEER_CALLERS)} each stop at start naming it")

    # …and each service that calls no peer starts without it.
    keyless = [name for name in SERVICES if name not in PEER_CALLERS]
    for name in keyless:
        process, log, address = spawn_without_key(run, services[name])
        deadline = time.monotonic() + SERVING_DEADLINE
        while process.poll() is None and not serving(address, READINESS[name]) and time.monotonic() < deadline:
            time.sleep(0.2)
        up = process.poll() is None and serving(address, READINESS[name])
        checks.check(up, f"{prefix}: {name} calls no peer and should start without TALLY_API_KEY: "
                         f"exit {process.poll()}: {tail(log, 5)}")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    print(f"  {prefix}: without TALLY_API_KEY, {', '.join(keyless)} start and report SERVING")


def spawn_without_key(run: LiveRun, container: Container) -> tuple[subprocess.Popen, Path, str]:
    """Starts a service's container again minus TALLY_API_KEY, on fresh local ports: the
    process, its log and its gRPC address."""
    env = {key: value for key, value in container.env.items() if key != "TALLY_API_KEY"}
    address = f"127.0.0.1:{free_port()}"
    env["TALLY_GRPC__LISTEN_ADDR"] = address
    if "TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR" in env:
        env["TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR"] = f"127.0.0.1:{free_port()}"
    log = run.dir / f"{container.name}-without-key.log"
    process = run.spawn(f"{container.name}-without-key", [str(run.binary), *container.args],
                        {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, log)
    return process, log, address


def bill_a_month(checks: Checks, run: LiveRun, admin_key: str, local: dict[str, str], prefix: str) -> None:
    def admin(args: list[str], service: str, what: str, stdin: str | None = None) -> str:
        return run.tally([*args, "--address", f"http://{local[service]}", "--api-key", admin_key], {}, what, stdin)

    now = datetime.now(timezone.utc)
    anchor = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = anchor - timedelta(days=STUB_DAYS)
    month_before = (anchor.replace(day=1) - timedelta(days=1))  # the previous month, for its length
    period_start = month_before.replace(day=min(anchor.day, days_in_month(month_before)))
    period_days = (anchor - period_start).days  # the full monthly period [anchor − 1 month, anchor)
    fee = Decimal(period_days)
    expected = Decimal(min(STUB_DAYS, period_days)) + USAGE_EVENTS * UNIT_PRICE

    admin(["catalog", "apply", "-f", "-"], "rating", "tally catalog apply",
          CATALOG.format(fee=f"{fee}.00", unit_price=UNIT_PRICE))
    customer = json.loads(admin(["customers", "create", "--name", "Live Check", "--external-id", "live-check",
                                 "--currency", "USD", "--output", "json"], "invoicing", "tally customers create"))
    customer_id = find_id(customer, "cus_")
    if not customer_id:
        raise Failed(f"tally customers create printed no cus_ id: {customer}")
    iso = lambda instant: instant.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    subscription = json.loads(admin(
        ["subscriptions", "create", "--customer", customer_id, "--plan", "live_check",
         "--catalog-address", f"http://{local['rating']}", "--start-at", iso(start), "--billing-anchor-at", iso(anchor),
         "--output", "json"], "invoicing", "tally subscriptions create"))
    subscription_id = find_id(subscription, "sub_")
    if not subscription_id:
        raise Failed(f"tally subscriptions create printed no sub_ id: {subscription}")
    print(f"  {prefix}: customer {customer_id}, subscription {subscription_id} from {iso(start)}, anchor {iso(anchor)}")

    # Usage in the period, through ingest, the bus and rating, then rated before billing
    # (a draft takes late usage only at its next refresh, an hour later by default).
    event_ids = [f"live-check-{index}" for index in range(USAGE_EVENTS)]
    lines = "".join(json.dumps({"id": event_id, "customerId": customer_id, "eventType": "live_check_calls",
                                "timestamp": iso(anchor - timedelta(hours=2) + timedelta(seconds=index)),
                                "properties": {}}) + "\n" for index, event_id in enumerate(event_ids))
    result = subprocess.run(
        [str(run.binary), "events", "send", "--address", f"http://{local['ingest']}",
         "--rating-address", f"http://{local['rating']}", "--api-key", admin_key],
        input=lines, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd=run.dir)
    counts = f"accepted {USAGE_EVENTS}, duplicate 0, conflict 0, rejected 0, not sent 0"  # on stderr, with progress
    if result.returncode != 0 or counts not in result.stdout + result.stderr:
        raise Failed(f"tally events send: exit {result.returncode}, expected {counts!r}: {result.stdout}{result.stderr}")
    deadline = time.monotonic() + SERVING_DEADLINE
    while True:
        try:
            states = rating_states(local["rating"], admin_key, customer_id, event_ids)
        except Exception as error:  # noqa: BLE001 - grpc.RpcError with its status
            raise Failed(f"GetEventRatingStatus failed: {error}") from None
        rated = sum(1 for state, _ in states.values() if state == 2)
        if rated == len(event_ids):
            break
        if time.monotonic() > deadline:
            others = sorted({(state, detail) for state, detail in states.values() if state != 2})
            raise Failed(f"{rated} of {len(event_ids)} usage events rated within {SERVING_DEADLINE:.0f} s; "
                         f"the others (state, detail): {others}")
        time.sleep(0.5)
    print(f"  {prefix}: {len(event_ids)} usage events sent to ingest and rated")

    # Bill runs until the ended period is invoiced: a run can fail a subscription for a
    # moment (rating has not seen the new subscription yet) and says so; it is retried.
    deadline = time.monotonic() + SERVING_DEADLINE
    runs = []
    while True:
        try:
            runs.append(run_billing(local["invoicing"], admin_key, customer_id))
        except Exception as error:  # noqa: BLE001 - grpc.RpcError with its status
            raise Failed(f"RunBilling failed: {error}") from None
        listed = json.loads(admin(["invoices", "list", "--customer", customer_id, "--output", "json"], "invoicing",
                                  "tally invoices list"))
        invoices = listed.get("invoices", []) if isinstance(listed, dict) else listed
        matching = [invoice for invoice in invoices
                    if invoice.get("subscriptionId") == subscription_id
                    and invoice.get("period", {}).get("startTime", "").startswith(iso(start)[:19])
                    and invoice.get("period", {}).get("endTime", "").startswith(iso(anchor)[:19])]
        if matching or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"  {prefix}: {len(runs)} bill run(s): {runs}")
    summary = [(i.get("id"), i.get("status"), i.get("period"), i.get("total")) for i in invoices]
    if checks.check(len(matching) == 1, f"{prefix}: one invoice for {iso(start)} – {iso(anchor)} expected: {summary}; "
                                        f"the last bill run: {runs[-1]}"):
        total = matching[0].get("total", {})
        checks.check(
            total.get("currency") == "USD" and Decimal(total.get("amount", "NaN")) == expected
            and matching[0].get("status") not in ("INVOICE_STATUS_VOID", None),
            f"{prefix}: the invoice of the ended period should total {expected} USD: {summary}",
        )
        print(f"  {prefix}: bill run made {matching[0].get('id')} ({matching[0].get('status')}) "
              f"for {iso(start)} – {iso(anchor)}: {total.get('amount')} {total.get('currency')}")
        finance_books(checks, admin, matching[0], expected, prefix)


def finance_books(checks: Checks, admin, invoice: dict, expected: Decimal, prefix: str) -> None:
    """Finance books the invoice once it is finalized: it arrives over `invoice-events`
    (finance's own ordered subscription), and accounts receivable holds its total."""
    invoice_id = invoice.get("id", "")
    if invoice.get("status") == "INVOICE_STATUS_DRAFT":
        # A draft stays open for invoicing.grace_period_hours (24) after its period.
        finalized = json.loads(admin(["invoices", "finalize", invoice_id, "--output", "json"], "invoicing",
                                     f"tally invoices finalize {invoice_id}"))
        checks.check(finalized.get("status") == "INVOICE_STATUS_FINALIZED",
                     f"{prefix}: tally invoices finalize {invoice_id} left it {finalized.get('status')}")
    deadline = time.monotonic() + SERVING_DEADLINE
    while True:
        trial = json.loads(admin(["finance", "trial-balance", "--currency", "USD", "--output", "json"], "finance",
                                 "tally finance trial-balance"))
        balances = trial.get("balances", [])
        accounts = {account.get("code"): account for balance in balances for account in balance.get("accounts", [])}
        receivable = Decimal(accounts.get(RECEIVABLES_CODE, {}).get("balance", {}).get("amount", "0"))
        if receivable == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    booked = [(code, account.get("balance", {}).get("amount")) for code, account in sorted(accounts.items())]
    if checks.check(receivable == expected,
                    f"{prefix}: finance should book {invoice_id}: accounts receivable {RECEIVABLES_CODE} at {expected} "
                    f"USD within {SERVING_DEADLINE:.0f} s; the trial balance: {booked}"):
        totals = balances[0] if balances else {}
        debits = Decimal(totals.get("totalDebits", {}).get("amount", "NaN"))
        credits = Decimal(totals.get("totalCredits", {}).get("amount", "NaN"))
        checks.check(debits == credits, f"{prefix}: the trial balance balances: debits {debits}, credits {credits}")
        print(f"  {prefix}: finance booked {invoice_id}: accounts receivable {receivable} USD; "
              f"debits = credits = {debits}; accounts {booked}")


def days_in_month(instant: datetime) -> int:
    following = (instant.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (following - timedelta(days=1)).day


# --- deployments from compose and Helm ------------------------------------------------------


def from_compose(compose: dict, env_of) -> Deployment:
    """The compose file's containers: pubsub-setup's script, migrate, peer-key, the services."""
    services = compose["services"]
    setup = services["pubsub-setup"]
    jobs = []
    # pubsub-setup runs its mounted script with sh (entrypoint ["/bin/sh", "/setup/…"]).
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in setup.get("volumes", [])}
    script = setup["entrypoint"][-1]
    source = Path(mounts[script]) if Path(mounts[script]).is_absolute() else ROOT / mounts[script]
    jobs.append(Container("pubsub-setup", [], env_of(setup), {script: source.read_text()}, script))
    for name in ("migrate", "peer-key"):
        jobs.append(Container(name, list(services[name]["command"]), env_of(services[name])))
    tally = {name: Container(name, list(services[name]["command"]), env_of(services[name])) for name in SERVICES}
    hosts: dict[str, str] = {}
    for container in [*jobs, *tally.values()]:
        for key, value in container.env.items():
            for host, port in re.findall(r"(?:^|//|@)([a-z][\w.-]*):(\d+)", value):
                if host in services:
                    hosts[f"{host}:{port}"] = role_of(host, services)
    return Deployment("docker-compose.yml", jobs, tally, hosts, [name for name in services])


def role_of(host: str, services: dict) -> str:
    if host in SERVICES:
        return host
    image = str(services.get(host, {}).get("image", ""))
    if host == "postgres" or image.startswith("postgres"):
        return "postgres"
    if "emulator" in image or "pubsub" in host:
        return "pubsub"
    return "otlp"


def from_helm(objects: list[dict], release: str, emulator_host: str) -> Deployment:
    """The rendered release's containers: the hook Jobs by weight, the Deployments; env
    values from the rendered ConfigMap and Secrets (the operator's own Secrets get local
    stand-ins, the downward API fixed names)."""
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    secrets = {name: {key: base64.b64decode(value).decode() for key, value in (obj.get("data") or {}).items()}
               | dict(obj.get("stringData") or {}) for name, obj in by_kind.get("Secret", {}).items()}
    config_maps = {name: dict(obj.get("data") or {}) for name, obj in by_kind.get("ConfigMap", {}).items()}

    def resolve(container: dict, pod: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for entry in container.get("env", []):
            source = entry.get("valueFrom", {})
            if "value" in entry:
                value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), entry["value"])
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                if ref["name"] in secrets:
                    value = secrets[ref["name"]][ref["key"]]
                elif entry["name"] == "DATABASE_URL":
                    value = "postgres://postgres@operator-postgres:5432/tally"  # the operator's Secret
                else:
                    value = ""  # the operator's Stripe Secret, empty as compose's default: no call leaves the machine
            elif "configMapKeyRef" in source:
                value = config_maps[source["configMapKeyRef"]["name"]][source["configMapKeyRef"]["key"]]
            elif "fieldRef" in source:
                value = {"metadata.name": pod, "metadata.namespace": "billing"}.get(source["fieldRef"]["fieldPath"], "")
            else:
                raise Failed(f"{pod}: env {entry['name']} has a source the check does not know: {source}")
            env[entry["name"]] = value
        return env

    def container_of(obj: dict, name: str) -> Container:
        spec = obj["spec"]["template"]["spec"]
        container = spec["containers"][0]
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        files = {}
        for mount in container.get("volumeMounts", []):
            config_map = volumes.get(mount["name"], {}).get("configMap")
            if config_map:
                for key, content in config_maps[config_map["name"]].items():
                    files[f"{mount['mountPath']}/{key}"] = content
        return Container(name, list(container.get("args", [])), resolve(container, f"{obj['metadata']['name']}-live"), files)

    jobs = sorted(
        (obj for obj in by_kind.get("Job", {}).values()),
        key=lambda obj: int(obj["metadata"].get("annotations", {}).get("helm.sh/hook-weight", "0")),
    )
    job_containers = []
    for obj in jobs:
        if obj["metadata"]["name"].endswith("pubsub-setup"):
            raise Failed("the live check runs with pubsub.setup.enabled=false (the default): the Job's curl image is not emulated")
        job_containers.append(container_of(obj, obj["metadata"]["name"].removeprefix(f"{release}-")))
    services = {name: container_of(by_kind["Deployment"][f"{release}-{name}"], name) for name in SERVICES}
    hosts = {"operator-postgres:5432": "postgres", emulator_host: "pubsub"}
    for name in SERVICES:
        service = by_kind["Service"][f"{release}-{name}"]
        for port in service["spec"]["ports"]:
            if port["name"] == "grpc":
                for host in (f"{release}-{name}", f"{release}-{name}.billing", f"{release}-{name}.billing.svc",
                             f"{release}-{name}.billing.svc.cluster.local"):
                    hosts[f"{host}:{port['port']}"] = name
    names = [f"{release}-{name}" for name in SERVICES] + [emulator_host.split(":")[0], "operator-postgres"]
    return Deployment("helm (live values)", job_containers, services, hosts, names)
