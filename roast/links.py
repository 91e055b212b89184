"""Signed links for people (issue 15): a capability to deliver one event to one wait of one
session, until an expiry. The token is `v1.<payload>.<tag>`, the payload base64url JSON
`{"s": session, "w": wait number, "e": event, "x": expiry epoch}`, the tag HMAC-SHA256 over it with a
key derived from the store's signing key (`seal.link_key`). Pure: no I/O, no clock of its own.

    >>> token = make(b"k" * 32, "abcd1234", 2, "approved", 2_000_000_000)
    >>> check(b"k" * 32, token, now=1_900_000_000).event
    'approved'
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

from roast.errors import Refused
from roast.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

_PREFIX = "v1"


class Link(Record):
    """What a valid token allows: deliver `event` to `session_id` at wait `wait_seq`, before `expires`."""

    __slots__ = ("session_id", "wait_seq", "event", "expires")


class BadLink(Refused):
    """A link token that is malformed, tampered with, or expired (the page answers 403)."""

    code = "bad_link"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"roast-link-v1\x00{payload}".encode(), hashlib.sha256).digest())


def make(key: bytes, session_id: str, wait_seq: int, event: str, expires: float) -> str:
    """A token for one event of one wait."""
    payload = _b64(json.dumps({"s": session_id, "w": wait_seq, "e": event, "x": int(expires)},
                              separators=(",", ":"), sort_keys=True).encode())
    return f"{_PREFIX}.{payload}.{_tag(key, payload)}"


def check(key: bytes, token: str, *, now: float) -> Link:
    """The link a token grants, or BadLink (tampered, malformed or expired); constant-time compare."""
    parts = token.split(".") if isinstance(token, str) and len(token) < 2048 else []
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise BadLink("this approval link is not a roast link (malformed); nothing was changed")
    payload, tag = parts[1], parts[2]
    if not hmac.compare_digest(_tag(key, payload), tag):
        raise BadLink("this approval link was altered or was made with another key; nothing was changed")
    try:
        fields = json.loads(_unb64(payload))
        link = Link(str(fields["s"]), int(fields["w"]), str(fields["e"]), float(fields["x"]))
    except (ValueError, KeyError, TypeError) as err:
        raise BadLink("this approval link is damaged; nothing was changed") from err
    if now >= link.expires:
        raise BadLink("this approval link has expired; nothing was changed",
                      hint="ask for a new link (`roast session ID` shows the current ones)")
    return link


def csrf(key: bytes, token: str) -> str:
    """The form token of the page a link opens: only that page knows it (GET never delivers)."""
    return _b64(hmac.new(key, f"roast-csrf-v1\x00{token}".encode(), hashlib.sha256).digest())[:32]


# --------------------------------------------------------------------------- page links (issue 22)

_PAGE = "p1"


def _page_tag(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"roast-page-v1\x00{payload}".encode(), hashlib.sha256).digest())


def make_page(key: bytes, session_id: str, wait_seq: int, expires: float) -> str:
    """A token for the page of one wait: every event of it, each its own button (issue 22). Its own
    prefix and HMAC domain, so an event link is never a page link nor the reverse."""
    payload = _b64(json.dumps({"s": session_id, "w": wait_seq, "x": int(expires)},
                              separators=(",", ":"), sort_keys=True).encode())
    return f"{_PAGE}.{payload}.{_page_tag(key, payload)}"


def check_page(key: bytes, token: str, *, now: float) -> Link:
    """The wait a page token opens (`event` is None), or BadLink; constant-time compare."""
    parts = token.split(".") if isinstance(token, str) and len(token) < 2048 else []
    if len(parts) != 3 or parts[0] != _PAGE:
        raise BadLink("this page link is not a roast link (malformed); nothing was changed")
    payload, tag = parts[1], parts[2]
    if not hmac.compare_digest(_page_tag(key, payload), tag):
        raise BadLink("this page link was altered or was made with another key; nothing was changed")
    try:
        fields = json.loads(_unb64(payload))
        link = Link(str(fields["s"]), int(fields["w"]), None, float(fields["x"]))
    except (ValueError, KeyError, TypeError) as err:
        raise BadLink("this page link is damaged; nothing was changed") from err
    if now >= link.expires:
        raise BadLink("this page link has expired; nothing was changed",
                      hint="ask for a new link (`roast session ID` shows the current one)")
    return link


# --------------------------------------------------------------------------- per-person links (issue 23)

_PERSON = "u1"


class PersonLink(Record):
    """What a person's page token grants: the page of wait `wait_seq` of `session_id`, as `identity`
    (the delivery's actor, verified by possession), while the page shows content of `digest`."""

    __slots__ = ("session_id", "wait_seq", "event", "expires", "identity", "digest")


def _person_tag(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"roast-person-v1\x00{payload}".encode(), hashlib.sha256).digest())


_SHOWN = ("event", "wait", "title", "description", "labels", "schema", "about")


def content_digest(workflow: str, awaiting: Iterable[Any] | None) -> str:
    """A short digest of what a wait's page shows: the workflow's name and, for each awaited event,
    the keys the page is built from (title, description, labels, schema, the workflow's description);
    not the deadline, the policy or the progress, which a person's link outlives."""
    entries = [{k: a.get(k) for k in _SHOWN} for a in awaiting or () if isinstance(a, dict) and a.get("event")]
    shown = json.dumps([workflow, entries], separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def make_person(key: bytes, session_id: str, wait_seq: int, identity: str, digest: str, expires: float) -> str:
    """A token for one person's page of one wait, bound to `identity` and to the page's `digest`.
    Its own prefix and HMAC domain: never a page link nor an event link, nor the reverse."""
    payload = _b64(json.dumps({"s": session_id, "w": wait_seq, "i": identity, "d": digest, "x": int(expires)},
                              separators=(",", ":"), sort_keys=True).encode())
    return f"{_PERSON}.{payload}.{_person_tag(key, payload)}"


def check_person(key: bytes, token: str, *, now: float) -> PersonLink:
    """What a person's token grants (`event` is None), or BadLink; constant-time compare."""
    parts = token.split(".") if isinstance(token, str) and len(token) < 2048 else []
    if len(parts) != 3 or parts[0] != _PERSON:
        raise BadLink("this personal link is not a roast link (malformed); nothing was changed")
    payload, tag = parts[1], parts[2]
    if not hmac.compare_digest(_person_tag(key, payload), tag):
        raise BadLink("this personal link was altered or was made with another key; nothing was changed")
    try:
        fields = json.loads(_unb64(payload))
        link = PersonLink(str(fields["s"]), int(fields["w"]), None, float(fields["x"]), str(fields["i"]),
                          str(fields["d"]))
    except (ValueError, KeyError, TypeError) as err:
        raise BadLink("this personal link is damaged; nothing was changed") from err
    if not link.identity:
        raise BadLink("this personal link names nobody; nothing was changed")
    if now >= link.expires:
        raise BadLink("this personal link has expired; nothing was changed",
                      hint="ask for a new link (`roast session ID` shows the current ones)")
    return link


def person_event_id(session_id: str, wait_seq: int, identity: str, event: str) -> str:
    """The event id of a delivery through a person's link: one per (session, wait, person, event),
    so a second decision through the same link is a `duplicate` in the store, never a second one."""
    from roast.policy import identity_key

    said = json.dumps([session_id, wait_seq, identity_key(identity), event], separators=(",", ":"))
    return "person-" + hashlib.sha256(said.encode()).hexdigest()[:32]
