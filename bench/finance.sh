#!/usr/bin/env bash
# Reproduces the finance figures in docs/benchmarks.md:
#
#   1. a private PostgreSQL 15 cluster, durable (fsync and synchronous_commit on);
#   2. the finance benchmarks (crates/finance/tests/it/throughput.rs, release build):
#      - posting: CUSTOMERS finalized invoices (a fee in advance, usage in arrears) and
#        their payments applied through the consumers' handlers, first one fact per
#        transaction, CONCURRENCY at once (the baseline), then in batches of BATCH messages
#        (the consumers' 100) a transaction, BATCHES_IN_FLIGHT (6) at once, into a fresh
#        database; then December recognised day by day, then the month rebuilt from the facts;
#      - analytics: SUBSCRIPTIONS subscriptions with a year of monthly fees (every 10th
#        upgraded in July, every 20th ended in October): GetMrr, ListMrrMovements over
#        12 months, GetRetention over 12 monthly cohorts.
#
# Usage: bench/finance.sh   (CUSTOMERS=10000 CONCURRENCY=8 SUBSCRIPTIONS=100000 by default;
#        BATCH and BATCHES_IN_FLIGHT default to the consumers' settings)
set -euo pipefail
cd "$(dirname "$0")/.."

CUSTOMERS=${CUSTOMERS:-10000}
CONCURRENCY=${CONCURRENCY:-8}
SUBSCRIPTIONS=${SUBSCRIPTIONS:-100000}
BATCH=${BATCH:-100}
BATCHES_IN_FLIGHT=${BATCHES_IN_FLIGHT:-6}
# TESTS=throughput::posting runs the posting benchmark alone; POSTING_ONLY=1 stops it after
# the two postings (no recognition, no rebuild).
TESTS=${TESTS:-throughput}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

cargo test --release --locked -p tally-finance --test it --no-run

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

echo "== finance: posting $CUSTOMERS customers' month ($CONCURRENCY at once), analytics over $SUBSCRIPTIONS subscriptions"
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
  FINANCE_BENCH_CUSTOMERS=$CUSTOMERS FINANCE_BENCH_CONCURRENCY=$CONCURRENCY FINANCE_BENCH_SUBSCRIPTIONS=$SUBSCRIPTIONS \
  FINANCE_BENCH_BATCH=$BATCH FINANCE_BENCH_BATCHES_IN_FLIGHT=$BATCHES_IN_FLIGHT \
  FINANCE_BENCH_POSTING_ONLY=${POSTING_ONLY:-} \
  cargo test --release --locked -p tally-finance --test it "$TESTS" -- --ignored --nocapture --test-threads 1 2>&1 \
  | grep --line-buffered -oE '(setup|posting|recognition|rebuild|GetMrr|ListMrrMovements|GetRetention)[^:]*: .*|panicked.*|test result.*'
