"""What `roast serve` checks on a request before it reads the body or touches the store (issue 21).

A request is judged on its head first: a bearer token is checked, or the headers a signature
needs are present and its timestamp is inside the window, before a single byte of the body is
read (an unauthenticated upload costs nothing but its head). Numbers in the query are whole
numbers in range or a 400; the address to listen on is judged by what it resolves to, not by
its name. A face: imports only `errors` (and the standard library, lazily).
"""
from __future__ import annotations

from roast.errors import RequestRefused, Unauthorized, UsageError

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MAX_ID = 200  # characters of a webhook-id or X-GitHub-Delivery (api.resume's event id)


def signed(headers: Mapping[str, str]) -> bool:
    """Whether the request claims a signature (Standard Webhooks or GitHub): then its body is needed."""
    return headers.get("webhook-signature") is not None or headers.get("x-hub-signature-256") is not None


def check_signed_head(config: Any, headers: Mapping[str, str], now: float) -> None:
    """Refuse (401) a signed request whose head alone shows it cannot be valid, before its body is
    read: no secret configured for its kind, a header missing, a timestamp outside the window."""
    if headers.get("webhook-signature") is not None:
        if not config.webhook_secrets:
            raise Unauthorized("no Standard Webhooks secret is configured (ROAST_WEBHOOK_SECRET); nothing was read")
        msg_id, stamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
        if not msg_id or not stamp:
            raise Unauthorized("a Standard Webhooks request needs webhook-id, webhook-timestamp and "
                               "webhook-signature")
        if len(msg_id) > MAX_ID:
            raise Unauthorized(f"webhook-id is longer than {MAX_ID} characters")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise Unauthorized("webhook-timestamp is not a unix time in whole seconds")
        if abs(now - int(stamp)) > config.tolerance:
            raise Unauthorized(f"webhook-timestamp is more than {config.tolerance:g} s away from now (stale or "
                               "replayed)")
        return
    if not config.github_secret:
        raise Unauthorized("no GitHub webhook secret is configured (ROAST_GITHUB_WEBHOOK_SECRET); nothing was read")
    delivery = headers.get("x-github-delivery")
    if not delivery or len(delivery) > MAX_ID:
        raise Unauthorized(f"a GitHub request needs X-GitHub-Delivery (1 to {MAX_ID} characters); GitHub sends one "
                           "with every delivery")


def query_number(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    """`?limit=` / `?offset=`: absent is `default`; present, a whole number from 0 to `most`, else 400."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) > most:
        shown = raw if raw.isascii() and raw.isprintable() and len(raw) <= 40 else "that value"
        raise RequestRefused("bad_request", f"?{name}={shown} is not a whole number from 0 to {most:,}",
                             hint=f"e.g. ?{name}={default or 50}")
    return int(raw)


def loopback(host: str) -> bool:
    """Whether `host` is a loopback address, or a name every address of which is loopback (`localhost`
    is judged by what it resolves to: /etc/hosts may say otherwise)."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in found}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def read_tokens_file(path: str) -> str:
    """`--tokens-file`: its lines without `#` comments; refused when other users can read it."""
    import os

    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1_048_576)
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read --tokens-file {path!r}: {getattr(err, 'strerror', None) or err}") from err
    if mode & 0o077:
        raise UsageError(f"--tokens-file {path!r} can be read by other users; refusing to use it",
                         hint=f"chmod 600 {path}")
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
