"""Checks Tally's Orb traffic with Orb's official Python SDK (PyPI `orb-billing`),
a client nobody on the Tally team wrote. Run by tests/it/orb_sdk.rs.

Reads one JSON object on stdin (every key optional but base_url):
  {"tally_requests": [<ingest bodies Tally sent>],
   "base_url": "<the fake Orb>",
   "calls": [{"events": [...]}, ...],
   "billing_requests": [{"kind": "customer" | "subscription", "body": {...}}],
   "billing_calls": [{"call": "create_customer" | "create_subscription" | "list_invoices",
                      "params": {...}, "idempotency_key": "..."}],
   "webhooks": [{"body": "<raw>", "headers": {...}, "secret": "..."}]}
and prints one JSON object with the problems or outcome of each, in order.

* every body Tally sent is validated against the SDK's `EventIngestParams` /
  `Event` TypedDicts with pydantic (strict: no unknown keys, required keys present,
  exactly one of customer_id / external_customer_id, a UTC ISO 8601 timestamp,
  flat properties);
* every call is made with the SDK's own client against the fake (no retries,
  strict response validation), so the fake's 200 bodies must parse as the SDK's
  `EventIngestResponse` and its errors must map to the SDK's exception classes;
* every customer and subscription body Tally sent is validated against the SDK's
  `CustomerCreateParams` / `SubscriptionCreateParams` (no unknown keys, required
  keys present, types), and the SDK's client creates customers and subscriptions
  and lists invoices (auto-paging over the fake's cursor) against the fake, so its
  bodies must parse strictly as `Customer`, `MutatedSubscription` and `Invoice`;
* every webhook Tally signed is unwrapped by the SDK's own `webhooks.unwrap`
  (signature, timestamp within five minutes, the body as the event type).
"""

import datetime
import json
import sys

try:
    import orb
    import pydantic
    from orb.types import EventIngestResponse
    from orb.types.event_ingest_params import Event, EventIngestParams
    from orb._models import validate_type
    from orb.types.customer_create_params import CustomerCreateParams
    from orb.types.unwrap_webhook_event import UnwrapWebhookEvent
    from orb.types.subscription_create_params import SubscriptionCreateParams
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


PARAMS = {"customer": CustomerCreateParams, "subscription": SubscriptionCreateParams}


def billing_problems(request):
    params = PARAMS[request["kind"]]
    body = request["body"]
    problems = []
    unknown = set(body) - set(params.__annotations__)
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    required = {name for name in params.__required_keys__}
    if required - set(body):
        problems.append(f"missing required keys {sorted(required - set(body))}")
    try:
        pydantic.TypeAdapter(params).validate_python(body)
    except pydantic.ValidationError as error:
        problems.append(str(error))
    return problems


def billing_call(client, item):
    options = {}
    if item.get("idempotency_key"):
        options["idempotency_key"] = item["idempotency_key"]
    try:
        if item["call"] == "create_customer":
            return {"ok": True, "id": client.customers.create(**item["params"], **options).id}
        if item["call"] == "create_subscription":
            return {"ok": True, "id": client.subscriptions.create(**item["params"], **options).id}
        invoices = list(client.invoices.list(**item["params"]))
        return {"ok": True, "invoices": [
            {"id": invoice.id, "subtotal": invoice.subtotal, "total": invoice.total,
             "amount_due": invoice.amount_due,
             "lines": [line.amount for line in invoice.line_items]}
            for invoice in invoices]}
    except orb.APIStatusError as error:
        return {"error": type(error).__name__, "status": error.status_code}
    except (orb.APIResponseValidationError, pydantic.ValidationError) as error:
        return {"error": f"the SDK cannot read the body: {error.__cause__ or error}"}


def unwrap(client, item):
    try:
        event = client.webhooks.unwrap(item["body"], item["headers"], secret=item["secret"])
        # unwrap constructs without validating; validate the body strictly too.
        validate_type(type_=UnwrapWebhookEvent, value=json.loads(item["body"]))
    except Exception as error:  # the SDK raises ValueError and pydantic errors alike
        return {"error": str(error)}
    return {"ok": True, "id": event.id, "type": event.type}


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
        "requests": [problems_of(body) for body in spec.get("tally_requests", [])],
        "calls": [call(client, item["events"]) for item in spec.get("calls", [])],
        "billing_requests": [billing_problems(item) for item in spec.get("billing_requests", [])],
        "billing_calls": [billing_call(client, item) for item in spec.get("billing_calls", [])],
        "webhooks": [unwrap(client, item) for item in spec.get("webhooks", [])],
    }
    print(json.dumps(result))


main()
