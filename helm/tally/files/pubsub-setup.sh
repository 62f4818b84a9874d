#!/bin/sh
# Creates Tally's Pub/Sub topics and subscriptions, each subscription with its
# dead-letter topic, the way the bus crate creates them (crates/bus/src/pubsub.rs):
# ordered only where the consumer needs it (entries marked :ordered), a 30 s ack
# deadline, and a server-side dead-letter policy one attempt after the consumer's own
# limit. Idempotent: what exists is left alone (an existing subscription is not
# updated; Pub/Sub cannot change a subscription's ordering anyway).
#
# Speaks the Pub/Sub REST API with curl, so it runs in any image with sh and curl:
# against the emulator when PUBSUB_EMULATOR_HOST is set, otherwise against
# pubsub.googleapis.com with a token from the GKE metadata server (Workload Identity).
# Used by docker-compose.yml (pubsub-setup) and the Helm chart (pubsub.setup.enabled).
#
#   PUBSUB_PROJECT_ID             project holding the topics (required)
#   PUBSUB_TOPICS                 space-separated topic names (required)
#   PUBSUB_SUBSCRIPTIONS          space-separated subscription=topic[:ack-deadline-seconds][:ordered]
#                                 entries (may be empty); :ordered delivers each ordering
#                                 key in order (docs/architecture.md, "Ordering per topic")
#   PUBSUB_NAME_PREFIX            prepended to every name (bus.name_prefix)
#   PUBSUB_MAX_DELIVERY_ATTEMPTS  bus.max_delivery_attempts (default 5)
#   PUBSUB_ACK_DEADLINE_SECONDS   for entries without their own (default 30)
#   PUBSUB_EMULATOR_HOST          host:port of the emulator
set -eu

project="${PUBSUB_PROJECT_ID:?set PUBSUB_PROJECT_ID}"
topics="${PUBSUB_TOPICS:?set PUBSUB_TOPICS}"
subscriptions="${PUBSUB_SUBSCRIPTIONS:-}"
prefix="${PUBSUB_NAME_PREFIX:-}"
attempts="${PUBSUB_MAX_DELIVERY_ATTEMPTS:-5}"
ack_deadline="${PUBSUB_ACK_DEADLINE_SECONDS:-10}"

# Pub/Sub's own dead-lettering is the safety net one attempt after the consumer's.
server_attempts=$((attempts + 1))
if [ "$server_attempts" -gt 100 ]; then server_attempts=100; fi

token=""
if [ -n "${PUBSUB_EMULATOR_HOST:-}" ]; then
  base="http://${PUBSUB_EMULATOR_HOST}/v1"
  echo "waiting for the Pub/Sub emulator at ${PUBSUB_EMULATOR_HOST}"
  tries=0
  until curl -fs -o /dev/null "http://${PUBSUB_EMULATOR_HOST}/"; do
    tries=$((tries + 1))
    [ "$tries" -ge 60 ] && { echo "the emulator did not answer in 60 s" >&2; exit 1; }
    sleep 1
  done
else
  base="https://pubsub.googleapis.com/v1"
  token=$(curl -fsS -H 'Metadata-Flavor: Google' \
    'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token' \
    | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')
  [ -n "$token" ] || { echo "no access token from the metadata server (is Workload Identity set up?)" >&2; exit 1; }
fi

# put PATH JSON: creates a resource; 200 = created, 409 = already there.
put() {
  if [ -n "$token" ]; then
    response=$(curl -sS -X PUT -H 'Content-Type: application/json' \
      -H "Authorization: Bearer ${token}" --data "$2" -w '\n%{http_code}' "${base}/$1")
  else
    response=$(curl -sS -X PUT -H 'Content-Type: application/json' \
      --data "$2" -w '\n%{http_code}' "${base}/$1")
  fi
  code=$(printf '%s\n' "$response" | tail -n 1)
  case "$code" in
    200) echo "created $1" ;;
    409) echo "exists  $1" ;;
    *) echo "failed  $1: HTTP ${code}" >&2; printf '%s\n' "$response" | sed '$d' >&2; exit 1 ;;
  esac
}

topic_path() { echo "projects/${project}/topics/${prefix}$1"; }

for topic in $topics; do
  put "$(topic_path "$topic")" '{}'
done

for entry in $subscriptions; do
  subscription="${entry%%=*}"
  target="${entry#*=}"
  topic="${target%%:*}"
  deadline="${ack_deadline}"
  ordered=false
  options=""
  if [ "$topic" != "$target" ]; then options="${target#*:}"; fi
  bad=""
  saved_ifs="$IFS"
  IFS=:
  set -f
  for option in $options; do
    case "$option" in
      ordered) ordered=true ;;
      ''|*[!0-9]*) bad=1 ;;
      *) deadline="$option" ;;
    esac
  done
  set +f
  IFS="$saved_ifs"
  case "$target" in *:) bad=1 ;; esac
  case "$options" in :*|*::*) bad=1 ;; esac
  [ -n "$subscription" ] && [ -n "$topic" ] && [ -z "$bad" ] && [ "$subscription" != "$entry" ] \
    || { echo "bad subscription entry '${entry}': expected subscription=topic[:seconds][:ordered]" >&2; exit 1; }
  dead_letter="${subscription}-dead-letter"
  put "$(topic_path "$dead_letter")" '{}'
  put "projects/${project}/subscriptions/${prefix}${subscription}" "{
    \"topic\": \"$(topic_path "$topic")\",
    \"ackDeadlineSeconds\": ${deadline},
    \"enableMessageOrdering\": ${ordered},
    \"deadLetterPolicy\": {
      \"deadLetterTopic\": \"$(topic_path "$dead_letter")\",
      \"maxDeliveryAttempts\": ${server_attempts}
    }
  }"
done
echo "Pub/Sub topology ready in project ${project}"
