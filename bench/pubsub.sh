#!/usr/bin/env bash
# The Pub/Sub intake beside the emulator's ceiling, in one run on one machine
# (docs/benchmarks.md, "Pub/Sub intake"):
#
#   1. the Pub/Sub emulator and a private durable PostgreSQL 15 cluster, on free ports;
#   2. for each consumer below, ordered and unordered, one after another: a fresh
#      subscription on the `usage-events` topic, the same EVENTS usage events published
#      to it (`tally load pubsub --publish-only`), drained alone, then deleted:
#      - crate-streaming: StreamingPull of the `google-cloud-pubsub` crate, acking only
#        (crates/bus/examples/pubsub_drain.rs);
#      - bus-unary: the bus's own stream as Tally's consumers use it on the emulator
#        (unary Pull over REST), acking only;
#      - python-streaming: Google's Python client (`google-cloud-pubsub`, in a venv under
#        ~/.cache/tally-tools), acking only (bench/pubsub_drain.py);
#      - tally intake: `tally serve ingest` on its own database, reading a subscription of
#        its own project attached to the same topic, timed by `tally load pubsub
#        --drain-only` until it has accepted (committed) every event;
#   3. one table, then the ratio lines.
#
# Usage: bench/pubsub.sh       (EVENTS=50000 by default; BEFORE_TALLY_BIN=/path/to/tally
#                               adds the intake of another build, e.g. the previous commit's;
#                               BENCH_TALLY_BIN and BENCH_DRAIN_BIN use prebuilt binaries)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-50000}
PYTHON_PUBSUB_VERSION=2.44.0
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
EMULATOR=${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}
TOOLS=${TALLY_TOOLS_DIR:-$HOME/.cache/tally-tools}

if [ -n "${BENCH_TALLY_BIN:-}" ]; then
  TALLY=$BENCH_TALLY_BIN
else
  cargo build --release --locked -p tally-cli --bin tally
  TALLY="$CARGO_TARGET_DIR/release/tally"
fi
if [ -n "${BENCH_DRAIN_BIN:-}" ]; then
  DRAIN=$BENCH_DRAIN_BIN
else
  cargo build --release --locked -p tally-bus --example pubsub_drain
  DRAIN="$CARGO_TARGET_DIR/release/examples/pubsub_drain"
fi

VENV="$TOOLS/pubsub-python"
if [ ! -f "$VENV/.installed-$PYTHON_PUBSUB_VERSION" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "google-cloud-pubsub==$PYTHON_PUBSUB_VERSION" >&2
  touch "$VENV/.installed-$PYTHON_PUBSUB_VERSION"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

WORK=$(mktemp -d /tmp/tally-bench-pubsub.XXXXXX)
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
  -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c max_connections=80" start >/dev/null

EMULATOR_PORT=$(free_port)
"$EMULATOR" --host=127.0.0.1 --port="$EMULATOR_PORT" >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 150); do grep -q "Server started" "$WORK/emulator.log" && break; sleep 0.2; done
grep -q "Server started" "$WORK/emulator.log" || { echo "the emulator did not start" >&2; cat "$WORK/emulator.log" >&2; exit 1; }
export PUBSUB_EMULATOR_HOST=127.0.0.1:$EMULATOR_PORT
REST="http://$PUBSUB_EMULATOR_HOST/v1"
PROJECT=tally-bench
TOPIC="projects/$PROJECT/topics/usage-events"

put() { # path json
  curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/json' --data "$2" "$REST/$1" ||
    { echo "cannot create $1" >&2; exit 1; }
}
subscription() { # project name ordered(true|false) [dead-letter]
  local body="{\"topic\": \"$TOPIC\", \"enableMessageOrdering\": $3, \"ackDeadlineSeconds\": 60"
  if [ -n "${4:-}" ]; then
    put "projects/$1/topics/$2-dead-letter" '{}'
    body="$body, \"deadLetterPolicy\": {\"deadLetterTopic\": \"projects/$1/topics/$2-dead-letter\", \"maxDeliveryAttempts\": 6}"
  fi
  put "projects/$1/subscriptions/$2" "$body}"
}

put "$TOPIC" '{}'

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"
"$PG_BIN/postgres" --version
"$TALLY" --version
echo "python google-cloud-pubsub $PYTHON_PUBSUB_VERSION, $EVENTS events"

export TALLY_TELEMETRY__LOG_FILTER=${LOG_FILTER:-warn}
declare -A RATE
PUBLISHED=()
rate_of() { sed -n 's/.*: \([0-9]*\) \(msg\|events\)\/s.*/\1/p' | tail -1; }

# One subscription at a time: it is created, the EVENTS are published to the
# topic (only it holds them: the emulator's cost per published message grows
# with the subscriptions holding a backlog), drained, then deleted.
publish() {
  local line
  line=$(TALLY_BUS__BACKEND=pubsub TALLY_BUS__PROJECT_ID=$PROJECT \
    "$TALLY" load pubsub --publish-only --api-key unused --events "$EVENTS" --run pubsub 2>/dev/null)
  PUBLISHED+=("$(rate_of <<<"$line")")
}
drop() { curl -fsS -o /dev/null -X DELETE "$REST/projects/$1/subscriptions/$2" || true; }

intake() { # binary project database
  local port db_url key pid out
  as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$3"
  db_url="postgres://postgres@127.0.0.1:$PG_PORT/$3"
  DATABASE_URL=$db_url "$1" migrate >/dev/null
  key=$(DATABASE_URL=$db_url "$1" keys create --name bench --scope ingest,read 2>/dev/null)
  port=$(free_port)
  DATABASE_URL=$db_url TALLY_DATABASE__MAX_CONNECTIONS=16 TALLY_BUS__BACKEND=pubsub TALLY_BUS__PROJECT_ID=$2 \
    TALLY_GRPC__LISTEN_ADDR=127.0.0.1:$port "$1" serve ingest >"$WORK/ingest-$2.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
  done
  out=$("$TALLY" load pubsub --drain-only --address "http://127.0.0.1:$port" --api-key "$key" \
    --events "$EVENTS" --run pubsub 2>/dev/null) || { echo "the intake of $2 failed; its log:" >&2; cat "$WORK/ingest-$2.log" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$out"
}

INTAKES=(tally-new)
[ -n "${BEFORE_TALLY_BIN:-}" ] && INTAKES+=(tally-before)
for ordering in unordered ordered; do
  echo "== $ordering subscriptions"
  ordered=$([ $ordering = ordered ] && echo true || echo false)
  for consumer in crate bus python; do
    subscription "$PROJECT" "$consumer-$ordering" "$ordered"
    publish
    case $consumer in
      crate) line=$("$DRAIN" "$PUBSUB_EMULATOR_HOST" "$PROJECT" "crate-$ordering" "$EVENTS" crate-streaming) ;;
      bus) line=$("$DRAIN" "$PUBSUB_EMULATOR_HOST" "$PROJECT" "bus-$ordering" "$EVENTS" bus-unary) ;;
      python) line=$("$VENV/bin/python" bench/pubsub_drain.py "$PROJECT" "python-$ordering" "$EVENTS") ;;
    esac
    echo "$line"
    RATE[$consumer-$ordering]=$(rate_of <<<"$line")
    drop "$PROJECT" "$consumer-$ordering"
  done
  for intake_name in "${INTAKES[@]}"; do
    binary=$TALLY
    [ "$intake_name" = tally-before ] && binary=$BEFORE_TALLY_BIN
    # Ingest reads `usage-events` of its project: a project per intake, its
    # subscription attached to the one topic.
    subscription "$intake_name-$ordering" usage-events "$ordered" dead-letter
    publish
    line=$(intake "$binary" "$intake_name-$ordering" "${intake_name//-/_}_$ordering"); echo "$line"
    RATE[$intake_name-$ordering]=$(rate_of <<<"$line")
    drop "$intake_name-$ordering" usage-events
  done
done

echo
echo "== Pub/Sub drain of $EVENTS waiting messages (emulator; msg/s, Tally: accepted events/s)"
printf '%-52s %12s %12s\n' "consumer" "unordered" "ordered"
row() { printf '%-52s %12s %12s\n' "$1" "${RATE[$2-unordered]}" "${RATE[$2-ordered]}"; }
row "google-cloud-pubsub crate, StreamingPull, ack only" crate
row "tally-bus stream (unary Pull, as on the emulator), ack only" bus
row "Google's Python client, streaming pull, ack only" python
row "Tally's ingest intake (this build)" tally-new
[ -n "${BEFORE_TALLY_BIN:-}" ] && row "Tally's ingest intake ($BEFORE_TALLY_BIN)" tally-before
echo "publishing (tally load pubsub --publish-only, msg/s per row): ${PUBLISHED[*]}"
echo
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
for ordering in unordered ordered; do
  echo "ratio, $ordering: intake / bus stream = $(ratio "${RATE[tally-new-$ordering]}" "${RATE[bus-$ordering]}"), intake / crate streaming = $(ratio "${RATE[tally-new-$ordering]}" "${RATE[crate-$ordering]}"), intake / python = $(ratio "${RATE[tally-new-$ordering]}" "${RATE[python-$ordering]}")"
  if [ -n "${BEFORE_TALLY_BIN:-}" ]; then
    echo "ratio, $ordering: intake this build / before = $(ratio "${RATE[tally-new-$ordering]}" "${RATE[tally-before-$ordering]}")"
  fi
done
