#!/usr/bin/env bash
# Reproduces the rating figures in docs/benchmarks.md, in one run on one machine:
#
#   1. a private PostgreSQL 15 cluster, durable (fsync and synchronous_commit on);
#   2. `tally load rating-consume`: EVENTS accepted events of 1,000 customers are queued
#      on the in-process bus, then rating's usage consumer is timed until all are in
#      the aggregates;
#   3. `tally load rating-latency`: 10,000 events/s through ingest's IngestBatch for
#      SECONDS seconds while a probe customer sends one event every 100 ms and polls
#      GetCurrentCost until it is reflected;
#   4. `tally load rating-cost`: one customer with COST_EVENTS events in the open period,
#      then 2,000 GetCurrentCost calls.
#
# Each step runs the services inside the load command, on its own fresh database.
# Usage: bench/rating.sh   (EVENTS=1000000 COST_EVENTS=1000000 LATENCY_SECONDS=60 RATE=10000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-1000000}
COST_EVENTS=${COST_EVENTS:-1000000}
SECONDS_MEASURED=${LATENCY_SECONDS:-60}
RATE=${RATE:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

if [ -n "${BENCH_TALLY_BIN:-}" ]; then
  TALLY=$BENCH_TALLY_BIN # e.g. a debug build, for a quick check of this script
else
  cargo build --release --locked -p tally-cli
  TALLY="$CARGO_TARGET_DIR/release/tally"
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
for db in consume latency cost; do as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"; done

export TALLY_TELEMETRY__LOG_FILTER=${LOG_FILTER:-warn}
export TALLY_DATABASE__MAX_CONNECTIONS=16
url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"; }

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"
"$PG_BIN/postgres" --version
"$TALLY" --version

echo "== consumption into aggregates"
DATABASE_URL=$(url consume) "$TALLY" load rating-consume --events "$EVENTS"
echo "== accepted by ingest -> reflected in GetCurrentCost, at $RATE events/s"
DATABASE_URL=$(url latency) "$TALLY" load rating-latency --rate "$RATE" --seconds "$SECONDS_MEASURED"
echo "== GetCurrentCost of a customer with $COST_EVENTS events"
DATABASE_URL=$(url cost) "$TALLY" load rating-cost --events "$COST_EVENTS"
