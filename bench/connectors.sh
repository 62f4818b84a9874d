#!/usr/bin/env bash
# Reproduces the connectors figures in docs/benchmarks.md, in one run on one machine:
#
#   1. a private PostgreSQL 15 cluster, durable (fsync and synchronous_commit on);
#   2. a fake Orb on loopback (axum in the test process: parses each ingest body,
#      keeps the idempotency keys, answers as Orb does);
#   3. the forwarding benchmark (crates/connectors/tests/it/throughput.rs, release
#      build): EVENTS accepted events of CUSTOMERS mapped customers forwarded by
#      `Forwarder::forward` one batch after another (inbox and state lookups, one
#      POST /v1/ingest, one transaction of inbox records and states), per batch size
#      in BATCHES; every event must reach the fake exactly once.
#
# Usage: bench/connectors.sh   (EVENTS=20000 CUSTOMERS=100 BATCHES=100,500 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-20000}
CUSTOMERS=${CUSTOMERS:-100}
BATCHES=${BATCHES:-100,500}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

cargo test --release --locked -p tally-connectors --test it --no-run

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
  -c shared_buffers=512MB -c max_connections=50" start >/dev/null

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"
"$PG_BIN/postgres" --version

echo "== forwarding to a fake Orb on loopback, $EVENTS events per batch size, batches of $BATCHES"
OUT=$WORK/throughput.txt
if ! DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres" CONNECTORS_BENCH_EVENTS=$EVENTS \
  CONNECTORS_BENCH_CUSTOMERS=$CUSTOMERS CONNECTORS_BENCH_BATCHES=$BATCHES \
  cargo test --release --locked -p tally-connectors --test it throughput -- --ignored --nocapture >"$OUT" 2>&1; then
  cat "$OUT"
  exit 1
fi
grep -E '^(events|batch)|test result' "$OUT"
