#!/usr/bin/env bash
# Reproduces the bill-run figures in docs/benchmarks.md:
#
#   1. a private PostgreSQL 15 cluster, durable (fsync and synchronous_commit on);
#   2. the bill-run benchmark (crates/invoicing/tests/it/throughput.rs, release build):
#      rating and invoicing running in one process on that database, SUBSCRIPTIONS
#      customers each subscribed to a plan with a monthly fee in advance and three
#      usage charges, usage rated, then two timed bill runs with no grace period
#      (the start of the month, then its end: 3 usage lines + next month's fee,
#      every invoice created, numbered and finalized, its event in the outbox).
#
# Usage: bench/bill-run.sh   (SUBSCRIPTIONS=100000 by default)
#
# BENCH_TEST_BIN=<path> runs that invoicing `it` test binary instead of building one
# (e.g. a copy built from an earlier commit, to compare before and after in
# alternation); it runs in BENCH_TEST_DIR (default crates/invoicing), the directory
# `cargo test` would run it in.
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIPTIONS=${SUBSCRIPTIONS:-100000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

if [ -n "${BENCH_TEST_BIN:-}" ]; then
  run_benchmark() { (cd "${BENCH_TEST_DIR:-crates/invoicing}" && "$BENCH_TEST_BIN" throughput --ignored --nocapture); }
else
  cargo test --release --locked -p tally-invoicing --test it --no-run
  run_benchmark() { cargo test --release --locked -p tally-invoicing --test it throughput -- --ignored --nocapture; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

WORK=$(mktemp -d /tmp/tally-bench.XXXXXX)
cleanup() {
  as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

PG_PORT=$(free_port)
as_postgres "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >/dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg.log" -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 \
  -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c max_connections=50" start >/dev/null

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"
"$PG_BIN/postgres" --version

echo "== bill run, $SUBSCRIPTIONS subscriptions"
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres" INVOICING_BENCH_SUBSCRIPTIONS=$SUBSCRIPTIONS \
  run_benchmark 2>&1 | grep -E '^(setup|bill run)|panicked|test result'
