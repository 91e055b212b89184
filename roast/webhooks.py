"""Webhook signatures (issue 15): Standard Webhooks 1.0 (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64>`, HMAC-SHA256 over `"{id}.{timestamp}.{raw body}"` with a `whsec_`
secret) and GitHub's `X-Hub-Signature-256: sha256=<hex>` (HMAC-SHA256 over the raw body); plus
`send()`, the outgoing sender that `notify: webhook:` uses (POST JSON signed with ROAST_NOTIFY_SECRET).

Signing and verifying are pure functions over bytes: the caller passes `now` and verifies the raw
body *before* parsing it (re-serialised JSON never matches). Every comparison is constant-time
(`hmac.compare_digest`). `send()` is the only I/O here, and its transport and sleep are parameters.

    >>> secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    >>> headers = sign([secret], "msg_1", b'{"ok":true}', now=1_700_000_000)
    >>> verify([secret], headers, b'{"ok":true}', now=1_700_000_100)
    'msg_1'
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from roast.errors import RoastError, UsageError
from roast.record import Record

TOLERANCE = 300.0  # seconds either side of now, as the Standard Webhooks reference libraries use
_SECRET_PREFIX = "whsec_"
_MIN_SECRET, _MAX_SECRET = 24, 64  # bytes (Standard Webhooks: 24 to 64)
_MAX_ID = 200  # an event id is 1 to 200 characters (api.resume)


class BadSignature(RoastError):
    """A request whose signature is missing, wrong or stale: the server answers 401, changes nothing."""

    exit_code = 3
    code = "unauthorized"


def parse_secret(text: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; UsageError for anything else (refuse, never guess)."""
    if not isinstance(text, str) or not text.startswith(_SECRET_PREFIX):
        raise UsageError("a Standard Webhooks secret starts with 'whsec_' (whsec_ + base64 of 24 to 64 random "
                         "bytes)", hint="make one with: python -c \"import base64, os; "
                                        "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\"")
    try:
        key = base64.b64decode(text[len(_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as err:
        raise UsageError("a Standard Webhooks secret is whsec_ followed by base64; this one is not valid "
                         "base64") from err
    if not _MIN_SECRET <= len(key) <= _MAX_SECRET:
        raise UsageError(f"a Standard Webhooks secret holds 24 to 64 bytes; this one holds {len(key)}")
    return key


def parse_secrets(text: str | None, *, where: str = "ROAST_WEBHOOK_SECRET") -> list[bytes]:
    """Several space-separated `whsec_` secrets (for rotation): every one is checked."""
    keys = []
    for item in (text or "").split():
        try:
            keys.append(parse_secret(item))
        except UsageError as err:
            raise UsageError(f"{where}: {err.message}", hint=err.hint) from err
    return keys


def _mac(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()


def sign(secrets: Sequence[str | bytes], msg_id: str, body: bytes, *, now: float) -> dict[str, str]:
    """Standard Webhooks headers for `body`: one `v1,` signature per secret (rotation)."""
    timestamp = str(int(now))
    keys = [s if isinstance(s, bytes) else parse_secret(s) for s in secrets]
    signatures = " ".join("v1," + base64.b64encode(_mac(k, msg_id, timestamp, body)).decode() for k in keys)
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signatures}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def verify(secrets: Sequence[str | bytes], headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance: float = TOLERANCE) -> str:
    """Check a Standard Webhooks request over its raw body; return its `webhook-id` (the event id).
    BadSignature when a header is missing, the timestamp is outside `tolerance`, or no `v1`
    signature matches any secret."""
    msg_id, timestamp, signatures = (_header(headers, n) for n in ("webhook-id", "webhook-timestamp",
                                                                   "webhook-signature"))
    if not msg_id or not timestamp or not signatures:
        raise BadSignature("a Standard Webhooks request needs webhook-id, webhook-timestamp and webhook-signature")
    if len(msg_id) > _MAX_ID:
        raise BadSignature(f"webhook-id is longer than {_MAX_ID} characters")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:  # '²' is a digit to isdigit()
        raise BadSignature("webhook-timestamp is not a unix time in whole seconds")
    if abs(now - int(timestamp)) > tolerance:
        raise BadSignature(f"webhook-timestamp is more than {tolerance:g} s away from now (stale or replayed)")
    if not secrets:
        raise BadSignature("no Standard Webhooks secret is configured (ROAST_WEBHOOK_SECRET)")
    keys = [s if isinstance(s, bytes) else parse_secret(s) for s in secrets]
    given = []
    for item in signatures.split():
        version, _, value = item.partition(",")
        if version == "v1":
            try:
                given.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
    matched = False
    for key in keys:  # every pair is compared: the time taken says nothing about which matched
        expected = _mac(key, msg_id, timestamp, body)
        for candidate in given:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise BadSignature("the webhook-signature does not match the body with any configured secret")
    return msg_id


def github_signature(secret: str | bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_github(secret: str | bytes | None, headers: Mapping[str, str], body: bytes) -> str:
    """Check `X-Hub-Signature-256` over the raw body; return `X-GitHub-Delivery` (the event id),
    which must be present. GitHub signs no timestamp and not the delivery id: the store binds the
    signature to the first session and event it reached (issue 21), so a captured body cannot be
    replayed anywhere else, whatever delivery id comes with it."""
    given = _header(headers, "x-hub-signature-256")
    if not given:
        raise BadSignature("a GitHub request needs X-Hub-Signature-256")
    if not secret:
        raise BadSignature("no GitHub webhook secret is configured (ROAST_GITHUB_WEBHOOK_SECRET)")
    if not hmac.compare_digest(github_signature(secret, body).encode(), given.strip().encode("utf-8", "replace")):
        raise BadSignature("X-Hub-Signature-256 does not match the body")
    delivery = _header(headers, "x-github-delivery")
    if delivery is None or not 0 < len(delivery) <= _MAX_ID:
        raise BadSignature(f"a GitHub request needs X-GitHub-Delivery (1 to {_MAX_ID} characters); GitHub sends "
                           "one with every delivery")
    return delivery


# --------------------------------------------------------------------------- the outgoing sender


class Attempt(Record):
    """One POST of `send()`: the HTTP status (None when no answer came), the error text, how long it took."""

    __slots__ = ("number", "status", "error", "seconds")  # noqa: RUF023 - the order is the positional order


Post = Callable[[str, bytes, Mapping[str, str], float], int]


def _urllib_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(65536)
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _secret_from_env() -> list[str]:
    import os

    raw = os.environ.get("ROAST_NOTIFY_SECRET", "")
    parse_secrets(raw, where="ROAST_NOTIFY_SECRET")
    return raw.split()


def send(url: str, payload: Mapping[str, Any], *, msg_id: str | None = None, secrets: Sequence[str] | None = None,
         timeout: float = 15.0, max_time: float = 60.0, backoff: float = 1.0, post: Post | None = None,
         sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.time) -> list[Attempt]:
    """POST `payload` as JSON to `url`, signed with Standard Webhooks headers (secrets default to
    ROAST_NOTIFY_SECRET; unsigned when there is none). Retries on 5xx, 429, timeouts and connection
    errors with exponential backoff (1 s, 2 s, 4 s …) while `max_time` allows; stops at once on
    any other answer (2xx is success; 410 means the receiver wants no more). Each attempt carries
    the same `webhook-id` and a fresh timestamp. Returns every attempt, in order.

        >>> send("https://hooks.example/roast", {"type": "wait.started"})   # doctest: +SKIP
        [Attempt(number=1, status=200, error=None, seconds=0.08)]
    """
    import uuid

    post = post or _urllib_post
    keys = list(secrets) if secrets is not None else _secret_from_env()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    attempts: list[Attempt] = []
    started = time.monotonic()
    delay = backoff
    while True:
        headers = {"content-type": "application/json", "user-agent": "roast-webhooks/1"}
        if keys:
            headers.update(sign(keys, msg_id, body, now=now()))
        else:
            headers["webhook-id"] = msg_id
        began = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = post(url, body, headers, timeout)
        except TimeoutError:
            error = f"no answer within {timeout:g} s"
        except OSError as err:  # URLError, refused, reset, DNS
            error = str(getattr(err, "reason", None) or err)
        attempts.append(Attempt(len(attempts) + 1, status, error, round(time.monotonic() - began, 3)))
        retry = status is None or status >= 500 or status == 429
        if not retry or time.monotonic() - started + delay > max_time:
            return attempts
        sleep(delay)
        delay *= 2
