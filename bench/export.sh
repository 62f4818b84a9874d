#!/usr/bin/env bash
# Reproduces the export figures in docs/benchmarks.md, in one run on one machine:
#
#   1. a private PostgreSQL 15 cluster, durable (fsync and synchronous_commit on);
#   2. the BigQuery emulator `bqemulator` (installed by .ci/test-tools, started by
#      tally-testkit);
#   3. the export benchmark (crates/export/tests/it/throughput.rs, release build):
#      ROWS `usage-accepted` messages staged by the export service's consumer, then
#      exported by the `usage_events` exporter (claim, append at an offset, mark) in
#      batches of BATCH rows; and the same rows appended by a plain client (the same
#      generated Storage Write client, one committed stream, no PostgreSQL) into a
#      dataset of its own, before and after the service, in the same run.
#
# The last line is the ratio of the service's export rate to the plain client's.
# Usage: bench/export.sh   (ROWS=20000 BATCH=500 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-20000}
BATCH=${BATCH:-500}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

cargo test --release --locked -p tally-export --test it --no-run

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
"$HOME/.cache/tally-tools/bqemulator/bin/pip" show bqemulator 2>/dev/null | sed -n 's/^Version: /bqemulator /p' || true

echo "== export of usage_events, $ROWS rows, batches of $BATCH"
OUT=$WORK/throughput.txt
if ! DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres" EXPORT_BENCH_ROWS=$ROWS EXPORT_BENCH_BATCH=$BATCH \
  cargo test --release --locked -p tally-export --test it throughput -- --ignored --nocapture >"$OUT" 2>&1; then
  cat "$OUT"
  exit 1
fi
grep -E '^(rows|plain|service)|test result' "$OUT"
grep '^ratio' "$OUT"
