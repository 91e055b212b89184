"""Every `ROAST_*` setting roast reads from the environment, parsed and checked in one place.

Each function reads the variable when called (tests and long-lived processes may change the
environment), checks it, and says how to fix a bad value (`UsageError`, exit 2); so are the
durations and instants of command-line options. What roast *sets* for steps is not here.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from roast.errors import UsageError

MAX_EVENT_BYTES = 1_048_576          # ROAST_MAX_EVENT_BYTES default: 1 MiB
SLEEP_IN_PROCESS = 30.0              # ROAST_SLEEP_IN_PROCESS default, seconds
LINK_MAX_AGE = 7 * 86_400.0          # ROAST_LINK_MAX_AGE default: 7 days
BUSY_TIMEOUT = 5.0                   # ROAST_BUSY_TIMEOUT default, seconds


def _raw(name: str, environ: Mapping[str, str] | None) -> str:
    return (os.environ if environ is None else environ).get(name) or ""


def store_url(environ: Mapping[str, str] | None = None) -> str:
    """`ROAST_STORE`: the session store's URL (`sqlite:///…`, `postgresql://…`); empty: SQLite in ROAST_HOME."""
    return _raw("ROAST_STORE", environ)


def public_url(environ: Mapping[str, str] | None = None) -> str | None:
    """`ROAST_PUBLIC_URL`: where `roast serve` is reached from outside (approval links are made under it)."""
    return _raw("ROAST_PUBLIC_URL", environ) or None


def max_event_bytes(environ: Mapping[str, str] | None = None) -> int:
    """`ROAST_MAX_EVENT_BYTES` (default 1 MiB), checked (issue 10: `abc` and `-5` are usage errors)."""
    raw = _raw("ROAST_MAX_EVENT_BYTES", environ)
    if not raw:
        return MAX_EVENT_BYTES
    if not raw.isdigit() or int(raw) <= 0:
        raise UsageError(f"ROAST_MAX_EVENT_BYTES must be a positive whole number of bytes, not {raw!r}",
                         hint="unset it for the default, 1048576 (1 MiB)")
    return int(raw)


def seconds(name: str, default: float, environ: Mapping[str, str] | None = None, *,
            hint: str | None = None) -> float:
    """A deadline in seconds from the environment: more than 0 and at most 3600 (NaN and inf refused)."""
    raw = _raw(name, environ)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # NaN fails too
        raise UsageError(f"{name} must be a number of seconds from 0 to 3600, got {raw!r}",
                         hint=hint or f"the default is {default:g}")
    return value


def sleep_in_process(environ: Mapping[str, str] | None = None) -> float:
    """`ROAST_SLEEP_IN_PROCESS` (seconds, default 30): a retry's backoff up to this long is slept by
    the running process; a longer one saves the session as `waiting` until the next attempt is due
    (issue 16)."""
    raw = _raw("ROAST_SLEEP_IN_PROCESS", environ)
    if not raw:
        return SLEEP_IN_PROCESS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400 or value != value:
        raise UsageError(f"ROAST_SLEEP_IN_PROCESS must be a number of seconds from 0 to 86400, not {raw!r}",
                         hint="unset it for the default, 30")
    return value


def link_max_age(environ: Mapping[str, str] | None = None) -> float:
    """`ROAST_LINK_MAX_AGE` (a duration such as `2d`; default 7 days): how long after a wait began
    its approval links stay valid at most (a deadline ends them sooner)."""
    raw = _raw("ROAST_LINK_MAX_AGE", environ)
    if not raw:
        return LINK_MAX_AGE
    from roast.expressions import parse_duration

    try:
        return parse_duration(raw, "ROAST_LINK_MAX_AGE")
    except UsageError as err:
        raise UsageError(err.message, hint="e.g. ROAST_LINK_MAX_AGE=2d (at most 365 days)") from None


def busy_timeout(environ: Mapping[str, str] | None = None) -> float:
    """`ROAST_BUSY_TIMEOUT` (seconds): how long a store waits for another process's write lock."""
    raw = _raw("ROAST_BUSY_TIMEOUT", environ)
    if not raw:
        return BUSY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"ROAST_BUSY_TIMEOUT must be a number of seconds, not {raw!r}")
    return value


def serve_tokens(environ: Mapping[str, str] | None = None) -> list[tuple[str, bytes]]:
    """`ROAST_SERVE_TOKENS`: `roast serve`'s bearer tokens, space-separated, as (name, secret)."""
    return parse_tokens(_raw("ROAST_SERVE_TOKENS", environ), "ROAST_SERVE_TOKENS")


def parse_tokens(text: str, where: str) -> list[tuple[str, bytes]]:
    """Bearer tokens, space-separated, each `NAME:SECRET` or a bare secret; at least 16 characters. A name
    is letters, digits and `_.+@-` (issue 23: `ana@example.com:SECRET` is ana, as `approvers:` names her)."""
    import hashlib
    import re

    tokens = []
    for item in text.split():
        name, sep, secret = item.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.+@-]{1,64}", name):
            name, secret = "token-" + hashlib.sha256(item.encode()).hexdigest()[:8], item
        if len(secret) < 16:
            raise UsageError(f"{where}: a bearer token is shorter than 16 characters; refusing a guessable token",
                             hint="make one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
        tokens.append((name, secret.encode()))
    return tokens


def webhook_secret(environ: Mapping[str, str] | None = None) -> str | None:
    return _raw("ROAST_WEBHOOK_SECRET", environ) or None  # Standard Webhooks secrets (`roast serve`)


def github_webhook_secret(environ: Mapping[str, str] | None = None) -> str | None:
    return _raw("ROAST_GITHUB_WEBHOOK_SECRET", environ) or None  # GitHub's X-Hub-Signature-256


def duration(text: str, what: str = "timeout") -> float:
    """Seconds in a duration such as `30s`, `15m`, `2h`, `7d` (`--older-than`, `ROAST_LINK_MAX_AGE`)."""
    from roast.expressions import parse_duration

    return parse_duration(text, what)


def age(text: str | None, what: str) -> float | None:
    """A command-line duration (`--older-than 7d`), or None."""

    if text is None:
        return None
    try:
        return duration(text)
    except UsageError as err:
        raise UsageError(f"{what} {text!r}: {err.message}", hint="e.g. 30m, 2h or 7d") from err


def since(text: str | None) -> float | None:
    """`--since`: an ISO 8601 instant (UTC without a zone) or a duration back from now, or None."""
    import time
    from datetime import datetime, timezone

    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    except ValueError:
        seconds = age(text, "--since")
        return time.time() - (seconds or 0)


def trusted_proxies(environ: Mapping[str, str] | None = None) -> tuple[frozenset[str], str | None]:
    """`ROAST_TRUSTED_PROXIES` (addresses, space- or comma-separated) and `ROAST_IDENTITY_HEADER` (e.g.
    `X-Forwarded-Email`, lower-cased): who a request from such a proxy is (issue 22). One without
    the other is a usage error."""
    import ipaddress

    raw, header = _raw("ROAST_TRUSTED_PROXIES", environ), _raw("ROAST_IDENTITY_HEADER", environ).strip()
    addresses = frozenset(a for a in raw.replace(",", " ").split())
    if bool(addresses) != bool(header):
        raise UsageError("ROAST_TRUSTED_PROXIES and ROAST_IDENTITY_HEADER go together",
                         hint="e.g. ROAST_TRUSTED_PROXIES=127.0.0.1 ROAST_IDENTITY_HEADER=X-Forwarded-Email")
    for a in addresses:
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise UsageError(f"ROAST_TRUSTED_PROXIES: {a!r} is not an IP address") from None
    return addresses, header.lower() or None


def allowed_signers(environ: Mapping[str, str] | None = None) -> str | None:
    """`ROAST_ALLOWED_SIGNERS`: an OpenSSH `allowed_signers` file naming whose SSH keys may sign
    approvals (issue 23), `~` expanded; None when unset. Set, it must name a readable file."""
    raw = _raw("ROAST_ALLOWED_SIGNERS", environ).strip()
    if not raw:
        return None
    path = os.path.expanduser(raw)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UsageError(f"ROAST_ALLOWED_SIGNERS {raw!r} is not a readable file",
                         hint="point it at an OpenSSH allowed_signers file: one line per person, "
                              "e.g. `ana@example.com ssh-ed25519 AAAA…`")
    return path
