#!/usr/bin/env bash
# The cost of the bill run's audit entries (issue #21, target < 10 % slower):
#
#   1. a private PostgreSQL 15 cluster, durable (fsync and synchronous_commit on);
#   2. crates/invoicing/tests/it/audit_cost.rs (release build): two databases set up alike
#      with SUBSCRIPTIONS subscriptions each (the workload of bench/bill-run.sh), billed in
#      one process — one with the bill run's audit entries (invoice.created and
#      invoice.finalized per invoice), one with them turned off by the switch only this
#      benchmark uses — at the start of the month and at the period end.
#
# Usage: bench/bill-run-audit.sh   (SUBSCRIPTIONS=10000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIPTIONS=${SUBSCRIPTIONS:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

cargo test --release --locked -p tally-invoicing --test it --no-run

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

echo "== bill run audit cost, $SUBSCRIPTIONS subscriptions per database"
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres" INVOICING_AUDIT_BENCH_SUBSCRIPTIONS=$SUBSCRIPTIONS \
  cargo test --release --locked -p tally-invoicing --test it audit_cost -- --ignored --nocapture 2>&1 \
  | grep -E '^bill run|panicked|test result'
