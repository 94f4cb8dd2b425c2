#!/usr/bin/env python3
"""Judges what the Dodo simulator served and sent by Dodo's own SDK models.

    validate.py DIR [--simulator-src dev/src/dodo_simulator]

DIR holds the simulator's recordings (`DODO_SIMULATOR_RECORD_DIR`): JSON lines, one per
API answer (`kind: answer`, `method`, `route`, `status`, `body`) or webhook event
(`kind: webhook`, `type`, `body`). Each is validated against the typed model that the
official Python SDK, `dodopayments` (pinned in requirements.txt), parses it into:

- strictly (pydantic v2 strict mode): every required field present, every type and enum
  or literal value as the SDK has it, no coercion ("5" is not 5);
- and closed: a field the model does not have is an error too (the SDK's models accept
  extra fields, but the paywall must not come to depend on fields Dodo does not send).

Then coverage: every route of the map below and every webhook type the simulator can send
(found in its source) must have been seen at least once.

Exit status 0 when all is well; 1 with a report, one block per kind of failure (where,
field path, what the SDK expects, what was sent, how many times); 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import typing
from collections import Counter, defaultdict
from pathlib import Path

import pydantic
from pydantic import TypeAdapter

import dodopayments
from dodopayments import types as t

SDK_VERSION = "1.123.0"

# The routes the paywall calls (shared/src/dodo.rs) and the ones the simulator serves for
# the founder and the portal, with the model the SDK parses each answer into. `items` of a
# list route: the SDK's `SyncDefaultPageNumberPagination[Model]` page.
ROUTES: dict[tuple[str, str], tuple[str, type]] = {
    ("POST", "/checkouts"): ("one", t.CheckoutSessionResponse),
    ("GET", "/checkouts/{id}"): ("one", t.CheckoutSessionStatus),
    ("GET", "/payments"): ("page", t.PaymentListResponse),
    ("GET", "/payments/{id}"): ("one", t.Payment),
    ("GET", "/subscriptions"): ("page", t.SubscriptionListResponse),
    ("GET", "/subscriptions/{id}"): ("one", t.Subscription),
    ("PATCH", "/subscriptions/{id}"): ("one", t.Subscription),
    ("POST", "/subscriptions/{id}/change-plan"): ("one", t.SubscriptionChangePlanResponse),
    ("POST", "/subscriptions/{id}/change-plan/preview"): ("one", t.SubscriptionPreviewChangePlanResponse),
    ("POST", "/customers"): ("one", t.Customer),
    ("GET", "/customers/{id}"): ("one", t.Customer),
    ("POST", "/customers/{id}/customer-portal/session"): ("one", t.CustomerPortalSession),
    ("GET", "/refunds"): ("page", t.RefundListItem),
    ("POST", "/refunds"): ("one", t.Refund),
    ("GET", "/disputes"): ("page", t.DisputeListResponse),
    ("GET", "/products/{id}"): ("one", t.Product),
}

# What the paywall asks of Dodo, judged by the SDK's own request parameters (the
# TypedDicts its methods take): a JSON body or a query. Each 2xx answer's request must
# name only parameters the SDK has, every required one, each of the SDK's type. (A
# request the simulator refused is its own test of a refusal, not judged.)
REQUESTS: dict[tuple[str, str], tuple[str, type]] = {
    ("POST", "/checkouts"): ("body", t.CheckoutSessionCreateParams),
    ("POST", "/customers"): ("body", t.CustomerCreateParams),
    ("PATCH", "/subscriptions/{id}"): ("body", t.SubscriptionUpdateParams),
    ("POST", "/subscriptions/{id}/change-plan"): ("body", t.SubscriptionChangePlanParams),
    ("POST", "/subscriptions/{id}/change-plan/preview"): ("body", t.SubscriptionPreviewChangePlanParams),
    ("GET", "/subscriptions"): ("query", t.SubscriptionListParams),
    ("GET", "/payments"): ("query", t.PaymentListParams),
    ("GET", "/refunds"): ("query", t.RefundListParams),
    ("GET", "/disputes"): ("query", t.DisputeListParams),
}

# Routes the simulator serves that are not Dodo's API (its hosted pages, the stand-in for
# banks): recorded, not judged.
NOT_DODO_API = {
    ("POST", "/simulator/disputes"),
    ("POST", "/checkout/{session}"),
    ("GET", "/checkout/{session}"),
    ("GET", "/portal/{customer}"),
    ("POST", "/portal/{customer}/subscriptions/{id}"),
}


# Dodo's routes that answer no body on success (the SDK casts them to `None`): only their
# error answers are recorded and judged, and none is needed for coverage.
NO_CONTENT = {
    ("DELETE", "/subscriptions/{id}/change-plan/scheduled"),
}


class ErrorBody(pydantic.BaseModel):
    """Dodo's error answer (`{"code", "message"}`), which the SDK reads untyped."""

    model_config = pydantic.ConfigDict(extra="allow")
    code: str
    message: str


def webhook_models() -> dict[str, type]:
    """Event type -> the SDK's model of that event (the `UnwrapWebhookEvent` union)."""
    union = typing.get_args(t.UnwrapWebhookEvent)[0]
    models = {}
    for model in typing.get_args(union):
        literal = model.model_fields["type"].annotation
        for value in typing.get_args(literal):
            models[value] = model
    return models


def simulator_webhook_types(src: Path) -> set[str]:
    """The event types the simulator's source names (string literals such as
    `"payment.succeeded"`), so that a new one is covered without editing this file."""
    known = set(typing.get_args(t.WebhookEventType))
    found = set()
    for path in sorted(src.glob("*.rs")):
        text = path.read_text()
        # Leave the unit tests out: they may name events the simulator never sends.
        text = text.split("#[cfg(test)]")[0]
        for literal in re.findall(r'"([a-z_]+\.[a-z_]+)"', text):
            if literal in known:
                found.add(literal)
    return found


def show(value: object, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def path_of(loc: tuple) -> str:
    """`('items', 3, 'customer', 'name')` -> `items[].customer.name` (indices folded, so
    that one mistake in a list of 100 is one failure)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += "[]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(body)"


def unwrap(annotation: object) -> object:
    """`Annotated[X, ...]` -> X."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def describe(annotation: object) -> str:
    annotation = unwrap(annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("typing_extensions.", "")
    text = re.sub(r"dodopayments\.[\w.]+\.(\w+)", r"\1", text)
    return text if len(text) <= 100 else text[:99] + "…"


def field_of(model: type, loc: tuple) -> object:
    """The annotation the SDK gives the field at `loc` of `model` (None: not found)."""
    current: object = model
    for part in loc:
        current = unwrap(current)
        while not is_model(current) and typing.get_args(current):
            args = [a for a in typing.get_args(current) if a is not type(None)]
            if typing.get_origin(current) is dict:
                args = args[-1:]
            if isinstance(part, int) and typing.get_origin(current) is list:
                current = args[0]
                break
            current = unwrap(args[0])
        if isinstance(part, int):
            continue
        if not is_model(current) or part not in current.model_fields:
            return None
        current = current.model_fields[part].annotation
    return current


def expected_type(model: type, loc: tuple) -> str:
    annotation = field_of(model, loc)
    return "?" if annotation is None else describe(annotation)


def extras(annotation: object, value: object, loc: tuple = ()) -> list[tuple[tuple, str, object]]:
    """Fields that the SDK's model (`annotation`, recursively) does not have, anywhere in
    the JSON `value`: judged on the JSON itself, so that they are reported along with
    any type errors."""
    annotation = unwrap(annotation)
    found = []
    if is_model(annotation):
        if not isinstance(value, dict):
            return found
        fields = {(f.alias or name): f for name, f in annotation.model_fields.items()}
        for key, item in value.items():
            if key not in fields:
                found.append((loc + (key,), f"{key}` in `{annotation.__name__}", item))
            else:
                found.extend(extras(fields[key].annotation, item, loc + (key,)))
        return found
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(extras(args[0], item, loc + (i,)))
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            found.extend(extras(args[-1], item, loc + (key,)))
    elif args and value is not None:
        # A union (Optional[X], or a discriminated union such as Price): the member
        # whose `type` literal matches, else the first model member.
        members = [unwrap(a) for a in args if a is not type(None)]
        models = [m for m in members if is_model(m)]
        chosen = None
        if isinstance(value, dict) and "type" in value:
            for m in models:
                literal = m.model_fields.get("type")
                if literal is not None and value["type"] in typing.get_args(literal.annotation):
                    chosen = m
        if chosen is None and models:
            chosen = models[0]
        if chosen is None and len(members) == 1:
            chosen = members[0]
        if chosen is not None:
            found.extend(extras(chosen, value, loc))
    return found


class Report:
    def __init__(self) -> None:
        # (where, path, expected) -> [count, sent example]
        self.failures: dict[tuple[str, str, str], list] = {}

    def fail(self, where: str, path: str, expected: str, sent: object) -> None:
        key = (where, path, expected)
        if key in self.failures:
            self.failures[key][0] += 1
        else:
            self.failures[key] = [1, sent]

    def judge(self, where: str, model: type, body: object, prefix: tuple = ()) -> None:
        adapter = TypeAdapter(model)
        try:
            adapter.validate_json(json.dumps(body), strict=True)
        except pydantic.ValidationError as err:
            for e in err.errors(include_url=False):
                missing = e["type"] == "missing"
                self.fail(
                    where,
                    path_of(prefix + tuple(e["loc"])),
                    f"{e['msg']} [{e['type']}]" + (f": {expected_type(model, e['loc'])}" if missing else ""),
                    "(absent)" if missing else e.get("input"),
                )
        for loc, name, extra in extras(model, body):
            self.fail(where, path_of(prefix + loc), f"no field `{name}`", extra)


def judge_request(report: "Report", where: str, params: type, asked: object) -> None:
    """`asked` (a JSON body, or a query as a dict of strings) against the SDK's TypedDict
    `params`: no unknown name, every required one, each value of the declared type."""
    if not isinstance(asked, dict):
        report.fail(where, "(request)", f"a JSON object for {params.__name__}", asked)
        return
    hints = typing.get_type_hints(params, include_extras=True)
    for name in asked:
        if name not in hints:
            report.fail(where, f"request.{name}", f"a parameter of {params.__name__}", asked[name])
    for name in getattr(params, "__required_keys__", set()):
        if name not in asked:
            report.fail(where, f"request.{name}", f"present (required by {params.__name__})", None)
    try:
        TypeAdapter(params).validate_python(asked)
    except pydantic.ValidationError as err:
        for error in err.errors():
            path = ".".join(str(p) for p in error["loc"])
            report.fail(where, f"request.{path}", error["msg"], error.get("input"))


def query_of(text: object) -> dict[str, object]:
    """A query string as the SDK's parameters would give it: numbers and booleans typed."""
    from urllib.parse import parse_qsl

    typed: dict[str, object] = {}
    for name, value in parse_qsl(text or "", keep_blank_values=True):
        if value.isdigit():
            typed[name] = int(value)
        elif value in ("true", "false"):
            typed[name] = value == "true"
        else:
            typed[name] = value
    return typed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="the simulator's recordings")
    parser.add_argument(
        "--simulator-src",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "src" / "dodo_simulator",
        help="the simulator's source, to find which webhook types it can send",
    )
    args = parser.parse_args()
    if dodopayments.__version__ != SDK_VERSION:
        print(f"expected dodopayments {SDK_VERSION}, found {dodopayments.__version__}", file=sys.stderr)
        return 2
    files = sorted(args.dir.glob("*.jsonl"))
    if not files:
        print(f"no recordings (*.jsonl) in {args.dir}", file=sys.stderr)
        return 2

    report = Report()
    events = webhook_models()
    answers = Counter()
    requests = Counter()
    webhooks = Counter()
    shaped = 0
    skipped = Counter()
    seen_routes: set[tuple[str, str]] = set()
    seen_types: set[str] = set()

    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                report.fail(f"{file.name}:{number}", "(line)", "one JSON object per line", line[:80])
                continue
            if record.get("shaped_by_test"):
                shaped += 1
                continue
            body = record.get("body")
            if record.get("kind") == "webhook":
                kind = record.get("type")
                webhooks[kind] += 1
                seen_types.add(kind)
                model = events.get(kind)
                if model is None:
                    report.fail(f"webhook {kind}", "type", "an event type the SDK knows", kind)
                    continue
                if isinstance(body, dict) and body.get("type") != kind:
                    report.fail(f"webhook {kind}", "type", f"the body's type to be {kind}", body.get("type"))
                report.judge(f"webhook {kind}", model, body)
                continue
            key = (record.get("method"), record.get("route"))
            status = record.get("status", 0)
            where = f"{key[0]} {key[1]} ({status})"
            if key in NOT_DODO_API:
                skipped[key] += 1
                continue
            if key not in ROUTES and key not in NO_CONTENT:
                report.fail(where, "(route)", "a route of Dodo's API in validate.py's map", key[1])
                continue
            answers[key] += 1
            if key in REQUESTS and status < 400:
                part, params = REQUESTS[key]
                asked = record.get("request") if part == "body" else query_of(record.get("query"))
                judge_request(report, f"{where} request", params, asked)
                requests[key] += 1
            if status >= 400:
                report.judge(where, ErrorBody, body)
                continue
            if key in NO_CONTENT:
                report.fail(where, "(body)", "no body on success", body)
                continue
            seen_routes.add(key)
            shape, model = ROUTES[key]
            if shape == "one":
                report.judge(where, model, body)
                continue
            # A page: `{"items": [...]}` and nothing else.
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                report.fail(where, "items", "a page: {\"items\": [...]}", body)
                continue
            for name in body:
                if name != "items":
                    report.fail(where, name, "no field but `items` in a page", body[name])
            for i, item in enumerate(body["items"]):
                report.judge(where, model, item, ("items", i))

    for key in ROUTES:
        if key not in seen_routes:
            report.fail(f"{key[0]} {key[1]}", "(coverage)", "at least one 2xx answer recorded", None)
    for kind in sorted(simulator_webhook_types(args.simulator_src) - seen_types):
        report.fail(f"webhook {kind}", "(coverage)", "at least one event recorded (the simulator can send it)", None)

    for key in REQUESTS:
        if requests[key] == 0:
            report.fail(f"{key[0]} {key[1]}", "(coverage)", "at least one request judged", None)

    total_answers = sum(answers.values())
    total_webhooks = sum(webhooks.values())
    print(f"dodopayments {dodopayments.__version__}: {len(files)} recording file(s)")
    print(f"  {total_answers} answers on {len(answers)} routes, {total_webhooks} webhooks of {len(webhooks)} types")
    print(f"  {sum(requests.values())} requests judged by the SDK's parameters on {len(requests)} routes")
    if shaped:
        print(f"  {shaped} lines from simulators a test filled with objects of its own shape: not judged")
    if skipped:
        print(f"  {sum(skipped.values())} answers of the simulator's own pages (not Dodo's API): not judged")
    for key, count in sorted(answers.items()):
        print(f"    {count:6d}  {key[0]} {key[1]}")
    for kind, count in sorted(webhooks.items()):
        print(f"    {count:6d}  webhook {kind}")

    if not report.failures:
        print(f"{total_answers + total_webhooks} passed, 0 failed")
        return 0
    by_where = defaultdict(list)
    for (where, path, expected), (count, sent) in report.failures.items():
        by_where[where].append((path, expected, count, sent))
    print(f"\n{len(report.failures)} mismatch(es) with Dodo's SDK models:")
    for where in sorted(by_where):
        print(f"\n{where}")
        for path, expected, count, sent in sorted(by_where[where]):
            times = f" ({count}x)" if count > 1 else ""
            print(f"  {path}{times}\n    SDK expects: {expected}\n    sent:        {show(sent)}")
    failed = sum(count for count, _ in report.failures.values())
    print(f"\nsdk-oracle: {len(report.failures)} kinds of mismatch, {failed} in all")
    return 1


if __name__ == "__main__":
    sys.exit(main())
