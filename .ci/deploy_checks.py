"""What .ci/helm_check.py and .ci/compose_check.py share: facts read from the code
(topics, configuration sections), a failure collector, and the check that the real
`tally` binary accepts a deployment's configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Passes the configuration checks (it starts with postgres://) but cannot be parsed as
# a connection string, so a binary that accepted everything else fails at once with
# "cannot connect to PostgreSQL: error with configuration", without any network.
UNCONNECTABLE_DATABASE_URL = "postgres://check@127.0.0.1:1/tally?sslmode=not-a-mode"
ACCEPTED_MARKER = "cannot connect to PostgreSQL"


class Checks:
    """Collects failures so one run reports all of them."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, condition: object, message: str) -> bool:
        if condition:
            self.passed += 1
            return True
        self.failures.append(message)
        print(f"  FAIL {message}", flush=True)
        return False

    def finish(self, what: str) -> None:
        if self.failures:
            print(f"\n{what}: {len(self.failures)} check(s) failed, {self.passed} passed", flush=True)
            sys.exit(1)
        print(f"\n{what}: all {self.passed} checks passed", flush=True)


def code_topics() -> list[str]:
    """The topic names in crates/bus/src/topics.rs, in order."""
    source = (ROOT / "crates/bus/src/topics.rs").read_text()
    return re.findall(r'pub const [A-Z_]+: &str = "([^"]+)";', source)


def config_source() -> str:
    """The configuration's source: crates/runtime/src/config/*.rs."""
    return "\n".join(path.read_text() for path in sorted((ROOT / "crates/runtime/src/config").glob("*.rs")))


def struct_fields(struct: str) -> list[str]:
    """The public fields of `struct` in crates/runtime/src/config/ (the config keys)."""
    source = config_source()
    body = source.split(f"pub struct {struct} {{", 1)[1].split("\n}", 1)[0]
    return re.findall(r"pub (\w+):", body)


def config_sections() -> list[str]:
    """The top-level sections of the configuration."""
    return struct_fields("Config")


def cli_variables() -> list[str]:
    """TALLY_ variables the config loader leaves to the command line (TALLY_CONFIG, …)."""
    source = config_source()
    match = re.search(r"COMMAND_LINE_VARIABLES: &\[&str\] = &\[([^\]]*)\]", source)
    return [f"TALLY_{name.upper()}" for name in re.findall(r'"(\w+)"', match.group(1))] if match else []


def bad_tally_variables(names: list[str]) -> list[str]:
    """Variables the config loader would refuse: TALLY_ names that are neither
    TALLY_<SECTION>__<KEY> nor one of the command line's own."""
    sections = "|".join(section.upper() for section in config_sections())
    pattern = re.compile(rf"^TALLY_({sections})__[A-Z0-9_]+$")
    allowed = set(cli_variables())
    return [name for name in names if name.startswith("TALLY_") and not pattern.match(name) and name not in allowed]


def code_subscriptions() -> dict[str, str]:
    """Subscriptions the services name in code (`pub const …_SUBSCRIPTION`), by constant."""
    found = {}
    for path in sorted(ROOT.glob("crates/*/src/**/*.rs")):
        for constant, name in re.findall(r'pub const (\w+_SUBSCRIPTION): &str = "([^"]+)";', path.read_text()):
            if not constant.startswith("ATTRIBUTE_"):
                found[f"{path.relative_to(ROOT)}::{constant}"] = name
    return found


def code_ordered_subscriptions() -> set[str]:
    """Subscriptions the services create ordered (`SubscriptionConfig::ordered(<CONSTANT>, …)`);
    every other one is unordered. A constant is resolved within its own crate: two crates
    may use the same constant name (payments' and finance's INVOICE_EVENTS_SUBSCRIPTION)."""
    by_crate: dict[tuple[str, str], str] = {}
    for key, name in code_subscriptions().items():
        path, constant = key.split("::")
        by_crate[(Path(path).parts[1], constant)] = name
    found = set()
    for path in sorted(ROOT.glob("crates/*/src/**/*.rs")):
        crate = path.relative_to(ROOT).parts[1]
        for constant in re.findall(r"SubscriptionConfig::ordered\(\s*(\w+_SUBSCRIPTION)\b", path.read_text()):
            if (crate, constant) in by_crate:
                found.add(by_crate[(crate, constant)])
    return found


def setup_entry_is_ordered(entry: str) -> bool:
    """Whether a pubsub-setup.sh entry (subscription=topic[:seconds][:ordered]) asks for order."""
    return "ordered" in entry.split("=", 1)[-1].split(":")[1:]


def tally_binary() -> Path | None:
    """The binary named by TALLY_BIN (set by .ci/run after the release build), if any."""
    value = os.environ.get("TALLY_BIN", "")
    if not value:
        return None
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        sys.exit(f"TALLY_BIN={value} is not an executable file")
    return path


def run_binary(binary: Path, args: list[str], env: dict[str, str], files: dict[str, str]) -> str | None:
    """Runs `binary args` with exactly `env` (plus PATH) and a database URL it cannot use.

    `files` maps paths used in `args` (e.g. the mounted tally.toml) to their contents;
    they are written to a temporary directory and the arguments rewritten. Returns None
    when the binary got past configuration loading and validation (it then fails on
    the database URL), else what it said.
    """
    with tempfile.TemporaryDirectory() as directory:
        rewritten = list(args)
        for original, content in files.items():
            local = Path(directory) / Path(original).name
            local.write_text(content)
            rewritten = [str(local) if arg == original else arg for arg in rewritten]
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        full_env["DATABASE_URL"] = UNCONNECTABLE_DATABASE_URL
        if "TALLY_GRPC__LISTEN_ADDR" in full_env:
            # `tally serve` binds before it connects: a free port, so a busy one
            # (another Tally on this machine) cannot fail the check.
            full_env["TALLY_GRPC__LISTEN_ADDR"] = "127.0.0.1:0"
        if "serve" in args:
            # Payments binds its webhook port before it connects too.
            full_env["TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR"] = "127.0.0.1:0"
        try:
            result = subprocess.run(
                [str(binary), *rewritten],
                env=full_env,
                capture_output=True,
                text=True,
                timeout=30,
                cwd=directory,
            )
        except subprocess.TimeoutExpired:
            return "timed out after 30 s"
    if result.returncode != 0 and ACCEPTED_MARKER in result.stderr:
        return None
    return f"exit {result.returncode}: {result.stderr.strip() or result.stdout.strip()}"
