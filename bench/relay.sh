#!/usr/bin/env bash
# The relay fairness figure in docs/benchmarks.md: on the Pub/Sub emulator, how
# long a small customer's event takes from its commit to `usage-accepted` when
# another customer's 10,000-event batch was committed just before it (three
# rounds; crates/ingest/tests/it/relay_fairness.rs, relay_fairness_on_the_emulator).
# The test harness starts a throwaway PostgreSQL and the emulator itself and
# stops them. RELEASE=1 builds the test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
profile=()
if [ -n "${RELEASE:-}" ]; then profile=(--release); fi
if ! out=$(cargo test ${profile[@]+"${profile[@]}"} --locked -p tally-ingest --test it \
  relay_fairness_on_the_emulator -- --ignored --nocapture 2>&1); then
  echo "$out" >&2
  exit 1
fi
grep -E '^relay fairness|test result' <<<"$out"
