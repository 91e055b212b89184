"""Gates for people (issue 22): the page link of a wait, the `Gate` a page shows (built from the
session and its deliveries), the posted form turned into one delivery through `api.resume`, and
the inbox of every open gate.

The faces (`serve`, `cli`) call these as they call `api`; the HTML comes from `roast.pages` (pure).
Nothing here shows a session id (beyond an 8-character reference), a step path or a file path.
"""
from __future__ import annotations

import os
import re
import time

from roast import api
from roast.errors import RoastError
from roast.links import content_digest, person_event_id
from roast.drive import check_page, check_person, page_link, person_pages
from roast.pages import Decision, Gate, GateEvent, parse_form, render_gate
from roast.views import gate_progress, iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from roast.store import EventRecord, Session, SessionStore

    Form = Mapping[str, Sequence[str]]

_WHERE = re.compile(r"^\s*(?:step\s+)?steps\[[^:]*?:\s*")  # the failing step's path, up to its first colon
_STEPS = re.compile(r"steps\[[^\]]*\][\w.\[\]]*(?:\s*›\s*[\w.\[\]]+)*")
_FILES = re.compile(r"(?:/[\w.@+-]+){2,}/?")


def _store(store: SessionStore | str | None, home: str | os.PathLike[str] | None) -> SessionStore:
    return api.open_store(store, home)


def page(session: Session | str, *, public_url: str | None = None, home: str | os.PathLike[str] | None = None,
         store: SessionStore | str | None = None) -> str | None:
    """The signed page link of the wait a session rests on (under `public_url`, default
    `ROAST_PUBLIC_URL`); None without one, or when the session awaits no event."""
    store_ = _store(store, home)
    return page_link(store_, store_.get(session) if isinstance(session, str) else session, public_url)


def open_page(token: str, *, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
              now: float | None = None) -> tuple[Any, Session, str]:
    """What a page link opens: `(link, session, csrf)`; `links.BadLink` (a `Refused`) otherwise."""
    return check_page(_store(store, home), token, time.time() if now is None else now)


def plain_words(text: str | None) -> str | None:
    """A failure's reason without step paths, commands, output or file paths (a page shows no
    internals): `steps[0] › … › approved[0]: exit status 3: $(…): out` → "a step failed: exit status 3"."""
    if not text or not text.strip():
        return None
    first = text.strip().splitlines()[0]
    first = _WHERE.sub("", first).split(": $(")[0].split(" $(")[0]
    cleaned = " ".join(_FILES.sub("a file", _STEPS.sub("a step", first)).split()).strip(" :")
    return f"a step failed: {cleaned}" if cleaned else "a step failed"


def _title(session: Session, awaiting: Sequence[Mapping[str, Any]]) -> str:
    for a in awaiting:
        if a.get("title"):
            return str(a["title"])
    named = next((str(a["wait"]) for a in awaiting if a.get("wait") and a.get("wait") != "wait_for_event"), None)
    name = session.workflow_name.replace("_", " ").replace("-", " ")
    return f"{name[:1].upper()}{name[1:]}: {named}" if named else f"{name[:1].upper()}{name[1:]}: your decision"


def gate(session: Session, deliveries: Sequence[EventRecord], wait_seq: int, *,
         only: str | None = None, awaiting: Sequence[Mapping[str, Any]] | None = None) -> Gate:
    """The gate a person sees for wait `wait_seq` of a session: open (its events, each a button, with
    its schema's form) or decided (who, when, why, and what became of the session). `only`: an event
    link's page offers that one event."""
    waits = [a for a in (session.awaiting if awaiting is None else awaiting) or [] if a.get("event")]
    if only is not None:
        waits = [a for a in waits if a["event"] == only] or [{"event": only}]
    labels: dict[str, str] = {}
    for a in waits:
        labels.update({str(k): str(v) for k, v in (a.get("labels") or {}).items()})
    events: list[GateEvent] = []
    seen: set[str] = set()
    for a in waits:
        if a["event"] in seen or a["event"] == "timeout":
            continue
        seen.add(a["event"])
        events.append(GateEvent(a["event"], labels.get(a["event"]), a.get("schema"), primary=not events))
    description = next((str(a["description"]) for a in waits if a.get("description")), None)
    deadline = min((a["deadline"] for a in waits if a.get("deadline") is not None), default=None)
    about = next((str(a["about"]) for a in waits if a.get("about")), None)  # the workflow's description
    common = {"description": description, "workflow": session.workflow_name, "workflow_description": about,
              "ref": session.id}
    if session.status == "waiting" and session.wait_seq == wait_seq:
        return Gate(_title(session, waits), tuple(events), deadline=deadline, status="open",
                    progress=gate_progress(session, deliveries), **common)  # issue 23: "1 of 2 approvals: ana"
    decision = None
    for d in deliveries:
        if d.wait_seq == wait_seq and d.outcome == "consumed":
            outcome = session.status if session.status in ("completed", "failed", "cancelled", "timed_out",
                                                           "waiting", "running") else None
            why = plain_words(session.error) if session.status == "failed" else (
                session.reason if session.status == "cancelled" else None)
            decision = Decision(d.name, labels.get(d.name), d.actor, bool(getattr(d, "verified", False)),
                                d.consumed_at or d.received_at, d.reason, outcome, why)
            break
    if decision is None and session.status == "cancelled":
        decision = Decision("cancelled", "Cancelled", None, False, session.finished_at, session.reason,
                            "cancelled", session.reason)
    return Gate(_title(session, waits), tuple(events), status="decided", decision=decision, **common)


def _saved_awaiting(session: Session, wait_seq: int, deliveries: Sequence[EventRecord]) -> list[dict[str, Any]]:
    """The events of a wait that has passed (the session no longer carries them): the ones delivered
    to it, so the page can name the decision."""
    if session.status == "waiting" and session.wait_seq == wait_seq:
        return list(session.awaiting)
    return [{"event": d.name} for d in deliveries if d.wait_seq == wait_seq and d.outcome == "consumed"]


def render(token: str, *, action_url: str, errors: Mapping[str, str] | None = None, values: Form | None = None,
           only: str | None = None, link: Any = None, store: SessionStore | str | None = None,
           home: str | os.PathLike[str] | None = None) -> str:
    """The HTML of a page link (or, with `only`/`link`, of an event link's page)."""
    store_ = _store(store, home)
    if link is None:
        link, session, csrf = open_page(token, store=store_)
    else:
        session, csrf = link[1], link[2]
        link = link[0]
    deliveries = store_.events(session.id)
    shown = gate(session, deliveries, link.wait_seq, only=only,
                 awaiting=_saved_awaiting(session, link.wait_seq, deliveries))
    if getattr(link, "identity", None):  # a personal link (issue 23): the page says whom it answers as
        shown = shown._replace(person=link.identity)
    return render_gate(shown, now=time.time(), csrf=csrf, action_url=action_url, errors=errors, values=values)


def decide(session: Session, wait_seq: int, form: Form, *, actor: str, event_id: str | None, verified: bool = False,
           only: str | None = None, source: str = "link", store: SessionStore | str | None = None,
           home: str | os.PathLike[str] | None = None) -> tuple[Any, dict[str, str]]:
    """Deliver what a page's form says: `(Result, {})`, or `(None, {field: message})` when the form
    does not fit the event's schema (nothing delivered). The event is the posted `_event` (or `only`);
    the data is exactly the typed form; refusals of the delivery itself raise as for every channel."""
    from roast.errors import RequestRefused
    from roast.pages import EVENT_FIELD, REASON_FIELD

    event = only or (form.get(EVENT_FIELD) or [""])[0]
    offered = {a["event"]: a for a in session.awaiting or [] if a.get("event")}
    if event not in offered:
        raise RequestRefused("unknown_event", f"this request does not offer {event!r}; nothing was delivered")
    data, errors = parse_form(offered[event].get("schema"), form)
    if data is None:
        return None, errors
    reason = " ".join((form.get(REASON_FIELD) or [""])[0].split())[:2000] or None
    if reason is None and isinstance(data.get("reason"), str):
        reason = data["reason"]
    result = api.resume(event, data=data, session_id=session.id, actor=actor, source=source, reason=reason,
                        event_id=event_id, wait_seq=wait_seq, run=False, store=_store(store, home),
                        verified=verified)
    return result, {}


# --------------------------------------------------------------------------- per-person links (issue 23)


def pages(session: Session | str, *, public_url: str | None = None, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None) -> dict[str, str]:
    """The personal page link of each person the wait's `approvers:` names exactly (identity → URL,
    under `public_url`, default `ROAST_PUBLIC_URL`); `{}` without one or when nobody is named."""
    store_ = _store(store, home)
    return person_pages(store_, store_.get(session) if isinstance(session, str) else session, public_url)


def open_person(token: str, *, home: str | os.PathLike[str] | None = None,
                store: SessionStore | str | None = None, now: float | None = None) -> tuple[Any, Session, str]:
    """What a personal link opens: `(link, session, csrf)`; `links.BadLink` (a `Refused`) otherwise."""
    return check_person(_store(store, home), token, time.time() if now is None else now)


def changed(link: Any, session: Session) -> bool:
    """Whether the page a personal link would show now differs from the one its link was made for
    (only while its wait is open: a decided wait's page says how it ended)."""
    if session.status != "waiting" or session.wait_seq != link.wait_seq:
        return False
    return content_digest(session.workflow_name, session.awaiting) != link.digest


def already(link: Any, event: str, deliveries: Sequence[EventRecord]) -> EventRecord | None:
    """The delivery a personal link already made of `event` (its event id is one per session, wait,
    person and event: the store remembers it), or None."""
    event_id = person_event_id(link.session_id, link.wait_seq, link.identity, event)
    return next((d for d in deliveries if d.event_id == event_id and d.outcome in ("consumed", "counted")), None)


def already_page(record: EventRecord, session: Session) -> str:
    """The plain page of a second decision through the same personal link: what was said, and when."""
    from datetime import datetime, timezone

    labels: dict[str, str] = {}
    for a in session.awaiting or ():
        labels.update({str(k): str(v) for k, v in (a.get("labels") or {}).items()})
    at = datetime.fromtimestamp(record.received_at, timezone.utc).strftime("%d %b %Y at %H:%M UTC").lstrip("0")
    what = "approved this" if record.name == "approved" else f"answered “{labels.get(record.name, record.name)}”"
    return notice_page("Already answered", f"You already {what} on {at}, through this link; nothing was changed.")


def changed_page() -> str:
    """The page of a personal link whose request changed since the link was made (it acts no more)."""
    return notice_page("This request changed", "This request changed since your link was made; ask for a new "
                       "link. Nothing was changed.")


# --------------------------------------------------------------------------- the inbox


INBOX_SHOWN = 500  # the inbox lists at most this many gates, soonest deadline first (issue 25)


def inbox(*, as_: str | None = None, public_url: str | None = None, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """Every open gate across workflows (waiting sessions and the events they await), soonest
    deadline first: `session_id`, `title`, `workflow`, `events`, `labels`, `deadline`, `age`,
    `started_by`, `page` (None without a public URL) and `commands`. `as_` keeps the gates started by
    that person, or meant for them (a wait's `for:`, when it says so)."""
    from roast.views import resume_commands

    store_ = _store(store, home)
    at = time.time() if now is None else now
    rows = store_.soonest_waiting(INBOX_SHOWN)  # issue 25: the soonest gates, never every waiting session
    gates = []
    for s in rows:
        if not s.events:
            continue  # a `sleep:` or a retry's backoff: nobody decides it
        started = getattr(s, "started_by", None)
        if as_ is not None and started not in (None, as_):
            continue
        waits = [a for a in s.awaiting if a.get("event")]
        quorum = any((a.get("policy") or {}).get("quorum") for a in waits)  # issue 23: read its approvals
        shown = gate(s, api.deliveries(s.id, store=store_) if quorum else (), s.wait_seq, awaiting=waits)
        try:
            link = page_link(store_, s, public_url)
        except RoastError:  # e.g. no key for a shared store: the commands still work
            link = None
        deadline = min((a["deadline"] for a in waits if a.get("deadline") is not None), default=None)
        gates.append({"session_id": s.id, "title": shown.title, "workflow": s.workflow_name,
                      "events": [e.name for e in shown.events],
                      "labels": {e.name: e.label or e.name for e in shown.events},
                      "deadline": iso(deadline), "deadline_at": deadline, "waiting_since": iso(s.updated_at),
                      "age_seconds": max(0, int(at - s.updated_at)), "started_by": started, "page": link,
                      "commands": dict(zip(s.events, resume_commands(s))), "progress": shown.progress})
    gates.sort(key=lambda g: (g["deadline_at"] is None, g["deadline_at"] or 0, -g["age_seconds"]))
    return gates


# --------------------------------------------------------------------------- HTML for the faces


def csp(html_text: str | None = None) -> str:
    """The Content-Security-Policy of a page: its inline styles by hash, no script, forms to itself."""
    from roast.pages import STYLE, csp_header

    return csp_header(html_text or STYLE)


def notice_page(title: str, message: str) -> str:
    """A page that only says something (a refused link, a forged form, a sign-in needed)."""
    from roast.inbox import render_notice

    return render_notice(title, message)


def inbox_page(listed: Sequence[Mapping[str, Any]], *, who: str | None = None) -> str:
    """The inbox as HTML (`GET /inbox`)."""
    from roast.inbox import render_inbox

    return render_inbox(listed, now=time.time(), who=who)
