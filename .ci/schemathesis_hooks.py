"""Schemathesis hooks for .ci/local-server: each operation tested with the caller it needs.

- `/server/*`: a server token (`GET /dev/token?server=1`, standing in for an IAM-signed
  request) in place of the user's token given with `-H` (PAYWALL_SERVER_TOKEN);
- the webhook (`/webhook`): each request signed as Dodo signs it (Standard Webhooks,
  HMAC-SHA256 over `{id}.{timestamp}.{body}` with the local server's secret,
  PAYWALL_WEBHOOK_SECRET) at the local server's virtual time (`GET /dev/clock` on
  PAYWALL_BASE_URL), so that the event behind the signature is what gets tested.

A request that lacks one of these headers on purpose (a "missing header" case), or whose
timestamp breaks the schema on purpose, is left as it is: it must still be refused. An
empty or non-ASCII `webhook-id` (schema-valid, but never one Dodo sends) is replaced by
a fresh ASCII one, so that the event behind it is tested rather than refused as
unsigned. Loaded with SCHEMATHESIS_HOOKS=schemathesis_hooks and
this folder on PYTHONPATH.
"""

import base64
import datetime
import itertools
import re
import hashlib
import hmac
import json
import os
import urllib.request

import schemathesis

BASE_URL = os.environ.get("PAYWALL_BASE_URL", "http://127.0.0.1:3000")
USER_AUTHORIZATION = "Bearer " + os.environ.get("PAYWALL_USER_TOKEN", "")
SERVER_AUTHORIZATION = "Bearer " + os.environ.get("PAYWALL_SERVER_TOKEN", "")
WEBHOOK_SECRET = os.environ.get(
    "PAYWALL_WEBHOOK_SECRET", "whsec_cGF5d2FsbC1sb2NhbC1kZXYtd2ViaG9vay1zZWNyZXQ="
)
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
DELIVERIES = itertools.count(1)


def _virtual_now() -> int:
    """The local server's test clock, in unix seconds."""
    with urllib.request.urlopen(BASE_URL + "/dev/clock", timeout=5) as answer:
        now = json.load(answer)["now"]
    return int(datetime.datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp())


def _body_bytes(body) -> bytes:
    """The bytes schemathesis's requests transport sends for a JSON body."""
    if isinstance(body, bytes):
        return body
    if body is None:
        return b"null"
    return json.dumps(body, allow_nan=False).encode("utf-8")


def _header(headers, name):
    for key in headers or {}:
        if key.lower() == name:
            return key
    return None


@schemathesis.hook
def before_call(context, case, **kwargs):
    path = case.operation.path
    headers = case.headers
    if path.startswith("/server"):
        key = _header(headers, "authorization")
        if key is not None and headers[key] == USER_AUTHORIZATION:
            headers[key] = SERVER_AUTHORIZATION
    elif path == "/webhook":
        if headers is None or any(_header(headers, h) is None for h in WEBHOOK_HEADERS):
            return
        if not re.fullmatch(r"[0-9]+", str(headers[_header(headers, "webhook-timestamp")])):
            return  # a timestamp that breaks the schema: must be refused as it is
        try:
            body = _body_bytes(case.body)
        except (TypeError, ValueError):
            return  # not JSON-serializable: sent unsigned, refused
        timestamp = str(_virtual_now())
        id_key = _header(headers, "webhook-id")
        webhook_id = str(headers[id_key])
        if not re.fullmatch(r"[!-~]+", webhook_id):
            webhook_id = f"msg_schemathesis_{next(DELIVERIES)}"
            headers[id_key] = webhook_id
        key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
        signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        headers[_header(headers, "webhook-timestamp")] = timestamp
        headers[_header(headers, "webhook-signature")] = "v1," + signature
