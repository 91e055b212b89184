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
ATTEMPT_TIMEOUT, NOTIFY_TIMEOUT = 15.0, 60.0  # seconds: one attempt, and all of them (README: "up to a minute")


def shown_url(url: str) -> str:
    """All that any message shows of a webhook URL: `scheme://host:port` (its path, query and user
    info often hold a token: chat webhooks)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except (ValueError, TypeError, AttributeError):
        return "the webhook URL"
    if not host or any(c <= " " or c == "\x7f" for c in host) or parts.scheme not in ("http", "https"):
        return "the webhook URL"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _checked_url(url: str) -> str:
    """`url` if urllib can send to it as it is; ValueError showing no more than `shown_url` otherwise
    (http.client's own errors quote the path and query: adversary P5)."""
    from urllib.parse import urlsplit

    shown = shown_url(url) if isinstance(url, str) else "the webhook URL"
    if not isinstance(url, str) or any(c <= " " or c == "\x7f" for c in url):
        raise ValueError(f"{shown} holds a space or a control character; percent-encode it (%20, %09)")
    if not url.isascii():
        raise ValueError(f"{shown} holds a character that is not ASCII; percent-encode it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"{shown} has an invalid host or port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown} is not an http:// or https:// URL with a host")
    return url


def _scrubbed(text: str, url: str) -> str:
    """`text` without any part of `url` beyond `scheme://host:port`."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    secret = [url, parts.netloc, parts.path + ("?" + parts.query if parts.query else ""), parts.query,
              parts.fragment, parts.username or "", parts.password or ""]
    if len(parts.path) > 1:
        secret.append(parts.path)
    for part in sorted((p for p in secret if p), key=len, reverse=True):
        text = text.replace(part, "…")
    return text


def _notify_timeout() -> float:
    from roast.settings import seconds

    return seconds("ROAST_NOTIFY_TIMEOUT", NOTIFY_TIMEOUT, hint="it bounds each notify webhook, all attempts "
                   f"together (default {NOTIFY_TIMEOUT:g})")


def _urllib_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST with urllib (proxies from the environment as usual), never following a redirect, and cut
    off `timeout` seconds after it began however slowly the answer's bytes come: urllib's own timeout
    applies to each read, so a receiver dripping a byte every few seconds would hold it for ever."""
    import http.client
    import socket
    import threading
    import urllib.error
    import urllib.request

    lock = threading.Lock()
    opened: list[socket.socket] = []
    state = {"done": False, "cut": False}

    def opening(sock: socket.socket) -> socket.socket:
        with lock:
            opened.append(sock)
            if state["cut"]:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        return sock

    def cut() -> None:
        with lock:
            if state["done"]:
                return
            state["cut"] = True
            for sock in opened:  # a closed socket has no descriptor left to reuse: harmless
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes the blocked read at once
                except OSError:
                    pass

    class Plain(http.client.HTTPConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create = self._create_connection  # type: ignore[has-type]
            self._create_connection = lambda *a, **k: opening(create(*a, **k))

    class Secure(http.client.HTTPSConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create = self._create_connection  # type: ignore[has-type]
            self._create_connection = lambda *a, **k: opening(create(*a, **k))

        def connect(self) -> None:  # http.client's, with the TLS handshake under the deadline too
            http.client.HTTPConnection.connect(self)
            host = self._tunnel_host or self.host  # type: ignore[attr-defined]
            context = self._context  # type: ignore[attr-defined]
            self.sock = opening(context.wrap_socket(self.sock, server_hostname=host, do_handshake_on_connect=False))
            self.sock.do_handshake()  # type: ignore[attr-defined]

    class PlainHandler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(Plain, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(Secure, req, context=self._context)  # type: ignore[attr-defined]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None  # a 3xx is an answer, and a failure: the signature headers go nowhere else

    opener = urllib.request.build_opener(PlainHandler, SecureHandler, NoRedirect)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read(65536)
                status = int(response.status)
        except urllib.error.HTTPError as err:
            err.close()
            status = int(err.code)
        except (OSError, http.client.HTTPException) as err:
            if state["cut"]:
                raise TimeoutError(f"no complete answer within {timeout:g} s") from err
            raise
        with lock:
            if state["cut"]:  # the cut ended the headers or the body early: what came is not the answer
                raise TimeoutError(f"no complete answer within {timeout:g} s")
            state["done"] = True
        return status
    finally:
        with lock:
            state["done"] = True
        timer.cancel()


def _secret_from_env() -> list[str]:
    import os

    raw = os.environ.get("ROAST_NOTIFY_SECRET", "")
    parse_secrets(raw, where="ROAST_NOTIFY_SECRET")
    return raw.split()


def _failure(err: Exception, url: str, timeout: float) -> str:
    """What an attempt's error shows: never the URL's path, query or user info."""
    import http.client

    if isinstance(err, TimeoutError):
        text = str(err) if str(err).startswith("no complete answer") else f"no answer within {timeout:g} s"
    elif isinstance(err, OSError):  # URLError, refused, reset, DNS
        reason = getattr(err, "reason", None) or err
        text = str(getattr(reason, "strerror", None) or reason)
    elif isinstance(err, http.client.HTTPException):
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    else:  # ValueError, UnicodeError: their text may quote the URL
        text = type(err).__name__
    return _scrubbed(text, url)


def send(url: str, payload: Mapping[str, Any], *, msg_id: str | None = None, secrets: Sequence[str] | None = None,
         timeout: float = ATTEMPT_TIMEOUT, max_time: float | None = None, backoff: float = 1.0,
         post: Post | None = None, sleep: Callable[[float], None] = time.sleep,
         now: Callable[[], float] = time.time) -> list[Attempt]:
    """POST `payload` as JSON to `url`, signed with Standard Webhooks headers (secrets default to
    ROAST_NOTIFY_SECRET; unsigned when there is none). Retries on 5xx, 429, timeouts and connection
    errors with exponential backoff (1 s, 2 s, 4 s …) while `max_time` allows; stops at once on
    any other answer (2xx is success; 410 means the receiver wants no more; a redirect is not
    followed). Each attempt carries the same `webhook-id` and a fresh timestamp, and ends `timeout`
    seconds after it began however slowly the receiver answers; all of them end within `max_time`
    (default ROAST_NOTIFY_TIMEOUT, else 60 s). Returns every attempt, in order. A URL that cannot be
    sent to is a ValueError; no message shows more of it than `scheme://host:port`.

        >>> send("https://hooks.example/roast", {"type": "wait.started"})   # doctest: +SKIP
        [Attempt(number=1, status=200, error=None, seconds=0.08)]
    """
    import uuid

    url = _checked_url(url)
    budget = _notify_timeout() if max_time is None else max_time
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
        limit = max(0.001, min(timeout, budget - (began - started)))
        status: int | None = None
        error: str | None = None
        try:
            status = post(url, body, headers, limit)
        except Exception as err:  # a transport of any kind; _failure shows nothing of the URL beyond its host
            error = _failure(err, url, limit)
        attempts.append(Attempt(len(attempts) + 1, status, error, round(time.monotonic() - began, 3)))
        retry = status is None or status >= 500 or status == 429
        if not retry or time.monotonic() - started + delay >= budget:
            return attempts
        sleep(delay)
        delay *= 2
