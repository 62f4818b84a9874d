#!/usr/bin/env bash
# Reproduces the ingest figures in docs/benchmarks.md, in one run on one machine:
#
#   1. a private PostgreSQL 15 cluster, durable (fsync and synchronous_commit on);
#   2. `tally serve ingest` (release build) on it;
#   3. `tally load ingest`: batches of 1,000 events, 10 properties, 10,000 customers,
#      first all new, then with 20% duplicates;
#   4. `tally load copy-baseline`: COPY of the same rows into the same tables of a
#      second database in the same cluster;
#   5. the Pub/Sub path: `tally serve ingest` on the emulator, `tally load pubsub`.
#
# Usage: bench/ingest.sh            (EVENTS=1000000 PUBSUB_EVENTS=50000 by default;
#                                    ONLY_PUBSUB=1 runs step 5 alone)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-1000000}
PUBSUB_EVENTS=${PUBSUB_EVENTS:-50000}
CONCURRENCY=${CONCURRENCY:-8} # batches in flight: the IngestStream window
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
EMULATOR=${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}

if [ -n "${BENCH_TALLY_BIN:-}" ]; then
  TALLY=$BENCH_TALLY_BIN # e.g. a debug build, for a quick check of this script
else
  cargo build --release --locked -p tally-cli
  TALLY="$CARGO_TARGET_DIR/release/tally"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

WORK=$(mktemp -d /tmp/tally-bench.XXXXXX)
PIDS=()
cleanup() {
  [ -n "${KEEP_LOGS:-}" ] && cp "$WORK"/*.log /tmp/ 2>/dev/null
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

PG_PORT=$(free_port)
as_postgres "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale >/dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg.log" -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 \
  -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c max_connections=50" start >/dev/null
for db in tally baseline; do as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"; done

export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/tally"
export TALLY_TELEMETRY__LOG_FILTER=${LOG_FILTER:-warn}
export TALLY_DATABASE__MAX_CONNECTIONS=16
"$TALLY" migrate
KEY=$("$TALLY" keys create --name bench --scope ingest,read 2>/dev/null)

serve_ingest() { # $1 = port, extra environment before the call
  "$TALLY" serve ingest >"$WORK/ingest-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "ingest did not start; see $WORK/ingest-$1.log" >&2; cat "$WORK/ingest-$1.log" >&2; exit 1
}

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"
"$PG_BIN/postgres" --version
"$TALLY" --version

if [ -z "${ONLY_PUBSUB:-}" ]; then
GRPC_PORT=$(free_port)
TALLY_GRPC__LISTEN_ADDR=127.0.0.1:$GRPC_PORT TALLY_INGEST__PUBSUB_INTAKE=false serve_ingest "$GRPC_PORT"
echo "== gRPC, all new events"
"$TALLY" load ingest --address "http://127.0.0.1:$GRPC_PORT" --api-key "$KEY" \
  --events "$EVENTS" --concurrency "$CONCURRENCY" --run fresh
echo "== gRPC, 20% duplicates"
"$TALLY" load ingest --address "http://127.0.0.1:$GRPC_PORT" --api-key "$KEY" \
  --events "$EVENTS" --concurrency "$CONCURRENCY" --duplicates 0.2 --run dup
echo "== baseline"
"$TALLY" load copy-baseline --database-url "postgres://postgres@127.0.0.1:$PG_PORT/baseline" \
  --events "$EVENTS" --run fresh
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
fi

echo "== Pub/Sub (emulator)"
EMULATOR_PORT=$(free_port)
"$EMULATOR" --host=127.0.0.1 --port="$EMULATOR_PORT" >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "Server started" "$WORK/emulator.log" && break; sleep 0.2; done
export TALLY_BUS__BACKEND=pubsub TALLY_BUS__PROJECT_ID=tally-bench PUBSUB_EMULATOR_HOST=127.0.0.1:$EMULATOR_PORT
# Create the topics and the usage-events subscription without a consumer (the
# script the compose file and the Helm chart use), publish every event, then
# start ingest: its drain rate is the intake's own rate. (Starting ingest first
# and stopping it would leave the emulator assigning ordering keys to the dead
# stream until its ack deadline.)
PUBSUB_PROJECT_ID=tally-bench PUBSUB_TOPICS="usage-events usage-accepted usage-rejected" \
  PUBSUB_SUBSCRIPTIONS="usage-events=usage-events:60" sh helm/tally/files/pubsub-setup.sh >/dev/null
"$TALLY" load pubsub --publish-only --api-key unused --events "$PUBSUB_EVENTS" --run pubsub
GRPC_PORT=$(free_port)
TALLY_GRPC__LISTEN_ADDR=127.0.0.1:$GRPC_PORT serve_ingest "$GRPC_PORT"
"$TALLY" load pubsub --drain-only --address "http://127.0.0.1:$GRPC_PORT" --api-key "$KEY" \
  --events "$PUBSUB_EVENTS" --run pubsub
