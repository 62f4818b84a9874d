"""Checks Tally's Orb traffic with Orb's official Python SDK (PyPI `orb-billing`),
a client nobody on the Tally team wrote. Run by tests/it/orb_sdk.rs.

Reads one JSON object on stdin:
  {"tally_requests": [<ingest bodies Tally sent>],
   "base_url": "<the fake Orb>",
   "calls": [{"events": [...]}, ...]}
and prints one JSON object: {"requests": [problems per body], "calls": [outcome per call]}.

* every body Tally sent is validated against the SDK's `EventIngestParams` /
  `Event` TypedDicts with pydantic (strict: no unknown keys, required keys present,
  exactly one of customer_id / external_customer_id, a UTC ISO 8601 timestamp,
  flat properties);
* every call is made with the SDK's own client against the fake (no retries,
  strict response validation), so the fake's 200 bodies must parse as the SDK's
  `EventIngestResponse` and its errors must map to the SDK's exception classes.
"""

import datetime
import json
import sys

try:
    import orb
    import pydantic
    from orb.types import EventIngestResponse
    from orb.types.event_ingest_params import Event, EventIngestParams
except ImportError as error:  # pragma: no cover - environment problem
    print(f"the Orb SDK is not importable here ({error})", file=sys.stderr)
    sys.exit(3)


def problems_of(body):
    problems = []
    if set(body) - set(EventIngestParams.__annotations__):
        problems.append(f"unknown request keys {sorted(set(body) - set(EventIngestParams.__annotations__))}")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        return problems + ["events must be a non-empty list"]
    allowed = set(Event.__annotations__)
    keys = [event.get("idempotency_key") for event in events]
    if len(keys) != len(set(keys)):
        problems.append("an idempotency_key repeats in one request")
    adapter = pydantic.TypeAdapter(Event)
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if set(event) - allowed:
            problems.append(f"{where}: unknown keys {sorted(set(event) - allowed)}")
        if ("customer_id" in event) == ("external_customer_id" in event):
            problems.append(f"{where}: exactly one of customer_id and external_customer_id")
        try:
            adapter.validate_python(event)
        except pydantic.ValidationError as error:
            problems.append(f"{where}: {error}")
        stamp = event.get("timestamp", "")
        try:
            parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if parsed.utcoffset() != datetime.timedelta(0) or not stamp.endswith("Z"):
                problems.append(f"{where}: timestamp {stamp!r} is not UTC with Z")
        except ValueError:
            problems.append(f"{where}: timestamp {stamp!r} is not ISO 8601")
        for name, value in event.get("properties", {}).items():
            if not isinstance(value, (str, int, float, bool)):
                problems.append(f"{where}.properties.{name}: {value!r} is not a string, number or boolean")
    return problems


def call(client, events):
    try:
        response = client.events.ingest(events=events)
    except orb.APIStatusError as error:
        outcome = {"error": type(error).__name__, "status": error.status_code}
        if isinstance(error, orb.RequestValidationError):
            outcome["validation_errors"] = error.validation_errors
        return outcome
    if not isinstance(response, EventIngestResponse):
        return {"error": f"not an EventIngestResponse: {type(response).__name__}"}
    return {"ok": True, "validation_failed": [failed.model_dump() for failed in response.validation_failed]}


def main():
    spec = json.load(sys.stdin)
    client = orb.Orb(
        api_key="orb_sdk_check",
        base_url=spec["base_url"] + "/v1",
        max_retries=0,
        _strict_response_validation=True,
    )
    result = {
        "sdk_version": orb.__version__,
        "requests": [problems_of(body) for body in spec["tally_requests"]],
        "calls": [call(client, item["events"]) for item in spec["calls"]],
    }
    print(json.dumps(result))


main()
