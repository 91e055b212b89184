"""Deadlines and a per-address cap for `roast serve`'s connections, in Uvicorn's protocol layer
(issue 21, adversary P4: 1,100 connections trickling a header line every 8 s made every endpoint
answer 503 for as long as they lasted).

Owns `protocol(environ)`, the class serve hands to `uvicorn.Config(http=...)`: Uvicorn's h11
protocol plus
- a deadline for the whole request head (`ROAST_SERVE_HEADER_TIMEOUT`, default 10 s, as nginx's
  `client_header_timeout`), counted from the connection (or the end of the previous response) however
  slowly its bytes come: an idle timeout between reads would let a byte every few seconds through;
- a deadline for the whole body (`ROAST_SERVE_BODY_TIMEOUT`, default 30 s), counted from the end of
  the head;
- at most `ROAST_SERVE_MAX_CONNECTIONS_PER_IP` open connections (default 100) from one address; one
  more is answered 429 and closed. Behind a reverse proxy on the same host every client has the
  proxy's address: raise the cap there;
- Uvicorn's `limit_concurrency` counts requests being answered, not open connections, so
  connections still sending their head never make `/healthz` (or anything else) answer 503.
An ASGI middleware cannot do this: it sees a request only once its head is parsed. A connection
cut at a deadline is answered 408 when part of a request came, and closed.
This module touches no store and no session; it is imported by serve only.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from roast.errors import UsageError

HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS_PER_IP = 10.0, 30.0, 100
LINGER = 2.0  # seconds an answered connection that is being refused is read (and dropped) before it closes


class Limits(NamedTuple):
    """Seconds for the whole head and the whole body of a request; open connections per address."""

    head: float = HEADER_TIMEOUT
    body: float = BODY_TIMEOUT
    per_ip: int = MAX_CONNECTIONS_PER_IP


def limits(environ: Mapping[str, str]) -> Limits:
    """The limits the environment sets; UsageError naming the variable for a bad value."""
    head = _seconds(environ, "ROAST_SERVE_HEADER_TIMEOUT", HEADER_TIMEOUT)
    body = _seconds(environ, "ROAST_SERVE_BODY_TIMEOUT", BODY_TIMEOUT)
    raw = environ.get("ROAST_SERVE_MAX_CONNECTIONS_PER_IP")
    per_ip = MAX_CONNECTIONS_PER_IP
    if raw:
        if not raw.strip().isdigit() or not 1 <= int(raw) <= 1_000_000:
            raise UsageError(f"ROAST_SERVE_MAX_CONNECTIONS_PER_IP must be a whole number from 1 to 1000000, "
                             f"got {raw!r}", hint=f"the default is {MAX_CONNECTIONS_PER_IP}")
        per_ip = int(raw)
    return Limits(head, body, per_ip)


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    from roast.settings import seconds

    return seconds(name, default, environ)


def protocol(environ: Mapping[str, str]) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with the limits `environ` sets (one count of
    open connections per address for this server)."""
    chosen = limits(environ)
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": chosen, "open_per_ip": {}})


def _quiet() -> logging.Logger:
    """Where a request cut at its body deadline logs: the app's read then ends with a disconnect that
    the server caused on purpose, which is no traceback for the serve log."""
    logger = logging.getLogger("roast.http_guard.cut")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger


class GuardedH11Protocol(H11Protocol):
    """Uvicorn's h11 protocol with the deadlines and the per-address cap of `Limits`."""

    limits: ClassVar[Limits] = Limits()
    open_per_ip: ClassVar[dict[str, int]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: str | None = None  # "head" or "body": what the armed deadline is for
        self._partial = False  # bytes of a request head have come
        self._address: str | None = None  # counted in open_per_ip
        self._lingering = False  # answered and closing: what still comes is read and dropped

    # -- connections
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if address is not None:
            count = self.open_per_ip.get(address, 0)
            if count >= self.limits.per_ip:
                self._answer(429, "too_many_connections",
                             f"more than {self.limits.per_ip} connections from your address are open; "
                             "close some, then try again", retry=True)
                return
            self.open_per_ip[address] = count + 1
            self._address = address
        self._arm("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._address is not None:
            left = self.open_per_ip.get(self._address, 1) - 1
            if left > 0:
                self.open_per_ip[self._address] = left
            else:
                self.open_per_ip.pop(self._address, None)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self.conn.their_state is h11.IDLE and data:
            self._partial = True
        self._count_requests_only()
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        self._count_requests_only()
        super().on_response_complete()
        self._follow()

    # -- deadlines
    def _follow(self) -> None:
        """Arm the deadline for what the connection now waits for; keep one already running."""
        their = self.conn.their_state
        if their is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            if self._waiting != "head":
                self._partial = False
                self._arm("head")
        elif their is h11.SEND_BODY:
            self._partial = False
            if self._waiting != "body":
                self._arm("body")
        else:  # the request is in (the app answers it), or the connection is ending
            self._disarm()

    def _arm(self, waiting: str) -> None:
        self._disarm()
        if self.transport is None or self.transport.is_closing():
            return
        self._waiting = waiting
        seconds = self.limits.head if waiting == "head" else self.limits.body
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._waiting = None, None

    def _expired(self) -> None:
        waiting, self._timer, self._waiting = self._waiting, None, None
        if self.transport.is_closing():
            return
        if waiting == "body" and self.cycle is not None:
            self.cycle.logger = _quiet()
            if not self.cycle.response_started:
                self._answer(408, "request_timeout", f"the request body did not arrive within "
                                                     f"{self.limits.body:g} s; nothing was delivered")
                return
        elif waiting == "head" and self._partial:
            self._answer(408, "request_timeout", f"the request head did not arrive within {self.limits.head:g} s")
            return
        self.transport.close()

    def _answer(self, status: int, code: str, message: str, *, retry: bool = False) -> None:
        """A JSON error written straight to the transport (no request cycle owns it), then close."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        phrase = {408: "Request Timeout", 429: "Too Many Requests"}[status]
        head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                + ("retry-after: 1\r\n" if retry else "") + "connection: close\r\n\r\n")
        self.transport.write(head.encode("ascii") + body)
        # Closing with unread bytes from the client resets the connection, and a reset can destroy the
        # answer before the client reads it: half-close, drop what still comes, close soon after.
        self._disarm()
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()
        super().eof_received()

    # -- concurrency
    def _count_requests_only(self) -> None:
        """Uvicorn answers 503 when open connections *or* running requests reach `limit_concurrency`;
        here only running requests count, so connections still sending a head cost nobody else."""
        limit = self.config.limit_concurrency
        if limit is not None:
            self.limit_concurrency = limit if len(self.tasks) >= limit else None
