"""The session rules of a delivery, decided from plain values: what becomes of an event (the
outcomes `closed`, `unknown_event`, `busy`, `late`, `consumed`, `not_waiting`, `queued`, and
`duplicate` for an event id already accepted; at a gated wait, issue 23, `forbidden`, `counted`
and `duplicate` for an identity already counted), which events stay ahead after a wait is claimed,
and the wording of every refusal a store gives.

Pure: no SQL, no I/O, no clock (`now` is passed in). `roast.sql` reads the rows, asks here, and
writes what was decided; tests/test_outcomes.py checks every outcome without a database.
"""
from __future__ import annotations

from roast.errors import BadEventData, Cancelled, NotFound, NotWaiting, Refused, Replayed, RoastError
from roast.record import Record
from roast.store import FINISHED, Session, when

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


class Verdict(Record):
    """What a delivery does: the outcome, the detail recorded with it, and the wait it concerns
    (`path` of the consuming wait; `deadline` of the wait a late event times out)."""

    __slots__ = ("outcome", "detail", "path", "deadline")
    _defaults = {"detail": None, "path": None, "deadline": None}


def decide(session: Session, name: str, *, holding: bool, now: float, wait_seq: int | None = None,
           if_waiting: bool = False) -> Verdict:
    """What becomes of event `name` delivered to `session` (issue 14). `stale`: the caller named
    a wait (`wait_seq`, an approval link) the session is no longer at. Raises NotWaiting for
    `if_waiting` when the event would only be queued."""
    if session.status == "moved":  # issue 24: the copy in the other store is the live one
        return Verdict("closed", moved_phrase(session))
    if wait_seq is not None and (session.status, session.wait_seq) != ("waiting", wait_seq):
        return Verdict("stale")  # an approval link is for one wait: never a later one (issue 15)
    if session.status in FINISHED:
        return Verdict("closed", f"the session {session.status} at {when(session.finished_at)}")
    if session.declares and name not in session.declares:
        return Verdict("unknown_event", "no wait of the workflow declares it")
    offered = [a for a in session.awaiting if a.get("event") == name] if session.status == "waiting" else []
    if offered and not holding:
        return Verdict("busy")  # the caller takes the session's lock, then asks again
    if offered:
        if all(a.get("deadline") is not None and a["deadline"] <= now for a in offered):
            deadline = min(a["deadline"] for a in offered)
            return Verdict("late", f"the wait's deadline passed at {when(deadline)}", deadline=deadline)
        return Verdict("consumed", path=offered[0].get("path"))
    state = session.status if session.status in ("running", "interrupted") else \
        f"waiting for {', '.join(session.events) or 'its deadline'}"
    if name not in session.ahead:
        return Verdict("not_waiting", f"it is {state}, and no wait still ahead declares {name!r}")
    if if_waiting:
        raise NotWaiting(f"session {session.id} is {state}, not waiting for {name!r}; nothing changed "
                         "(--if-waiting)", hint="drop --if-waiting to queue the event for a later wait")
    if GATE_AHEAD + name in session.ahead:  # kept, but no wait ahead will take it (issue 23): say so
        return Verdict("queued", ONLY_GATES_AHEAD)
    return Verdict("queued")


def same_event(event_id: str, digest: str | None, prior_digest: str | None, prior_session: str) -> None:
    """An event id already accepted is a duplicate, unless it came with other data: refused."""
    if prior_digest is not None and digest is not None and prior_digest != digest:
        raise BadEventData(f"event id {event_id!r} was already used with other data (for session "
                           f"{prior_session}); nothing changed", hint="use a new --event-id for a new event")


def still_ahead(session: Session, now: float, consumer: str | None) -> list[str]:
    """The events still ahead once a wait is claimed: the waits not consumed (the other branches
    of a parallel group) stay ahead; `consumer=None` (a timeout): the waits not yet due stay."""
    still = set(session.ahead)
    for a in session.awaiting:
        if not a.get("event"):
            continue
        other_branch = consumer is not None and a.get("path") != consumer
        not_due = consumer is None and (a.get("deadline") is None or a["deadline"] > now)
        if other_branch or not_due:
            still.add(a["event"])
            if not gated(a):  # a wait that takes a queued event is still ahead for it
                still.discard(GATE_AHEAD + a["event"])
    return sorted(still)


# In `Session.ahead` beside an event's name: only gated waits ahead declare it (issue 23). Such an
# event, sent early, is still queued (README: an approval is given to an open gate), but no wait ahead
# will take it, and the delivery says so. Event names are letters, digits, _ and -: no name has a colon.
GATE_AHEAD = "gate:"
ONLY_GATES_AHEAD = "only a gate ahead declares it, and a gate takes an approval only while it is open"


def ahead_of(every: set[str], taking: set[str]) -> list[str]:
    """`Session.ahead` at a suspend: `every` event a wait ahead declares, and GATE_AHEAD beside those
    only gated waits declare (`taking`: the events of the waits ahead that take a queued event)."""
    return sorted(every | {GATE_AHEAD + name for name in every - taking})


def taken_at_suspend(awaiting: Iterable[dict[str, Any]], ahead: Iterable[str], name: str) -> tuple[str, list[str]]:
    """A queued event `name` taken by a wait as the session suspends: that wait's path, and the
    events still ahead (later waits', and the other waits' here)."""
    waits = list(awaiting)
    path = next(a for a in waits if a.get("event") == name)["path"]
    return path, sorted(set(ahead) | {a["event"] for a in waits if a.get("event") and a["path"] != path})


# ---------------------------------------------------------------------------------------------
# refusal wording, the same for every store

def state_phrase(session: Session, last_event: tuple[str, float] | None) -> str:
    """'it is running (resumed at … with 'approved')', 'it completed at …', …"""
    status = session.status
    if status == "running":
        holder = f" in {session.holder}" if session.holder else ""
        if session.orphaned:
            return "it is orphaned (the process running it died; `roast resume -s " \
                   f"{session.id}` continues it)"
        if last_event is not None:
            return f"it is running{holder} (resumed at {when(last_event[1])} with {last_event[0]!r})"
        return f"it is running{holder} (started at {when(session.created_at)})"
    if status == "interrupted":  # issue 20: stopped by a person; continued only when asked
        return (f"it was interrupted at {when(session.updated_at)} (`roast resume -s {session.id}` continues it, "
                f"`roast cancel {session.id}` ends it)")
    if status == "waiting":
        names = ", ".join(repr(w.get("event")) for w in session.awaiting if w.get("event"))
        return f"it now waits for {names or 'its deadline'} (wait #{session.wait_seq})"
    if status == "moved":
        return f"it {moved_phrase(session)}"
    verb = {"completed": "completed", "failed": "failed", "timed_out": "timed out",
            "cancelled": "was cancelled"}.get(status, f"is {status}")
    text = f"it {verb} at {when(session.finished_at or session.updated_at)}"
    if status == "cancelled" and session.cancelled_by:
        text += f" by {session.cancelled_by}"
    if status == "cancelled" and session.reason:
        text += f" ({session.reason})"
    elif last_event is not None:
        text += f" (after {last_event[0]!r})"
    return text


def moved_phrase(session: Session) -> str:
    """'moved to postgresql://roast@db/roast on 2026-12-06T17:20:00Z; deliver there' (issue 24)."""
    return f"moved to {session.reason or 'another store'} on {when(session.finished_at)}; deliver there"


def not_waiting(session: Session | None, session_id: str, wait_seq: int,
                last_event: tuple[str, float] | None) -> RoastError:
    if session is None:
        return missing(session_id)
    if session.status == "waiting":  # a later wait than the caller saw
        return NotWaiting(f"session {session_id} is no longer at wait #{wait_seq}: "
                          f"{state_phrase(session, last_event)}; nothing changed")
    return NotWaiting(f"session {session_id} is no longer waiting: {state_phrase(session, last_event)}; "
                      "nothing changed")


def refusal(session: Session, what: str, last_event: tuple[str, float] | None) -> Refused:
    """`Cancelled` for a cancelled session: the process running it stops there (issue 20)."""
    kind = Cancelled if session.status == "cancelled" else Refused
    return kind(f"{what} session {session.id}: {state_phrase(session, last_event)}; nothing changed")


def missing(session_id: str) -> NotFound:
    return NotFound(f"no session {session_id!r}", hint="`roast sessions` lists sessions")


def replayed(name: str, session_id: str) -> Replayed:
    """A signed request seen before at another session or event (issue 21)."""
    return Replayed(f"this signed request was already delivered to another session or event, so {name!r} was "
                    f"not delivered to session {session_id}; nothing changed",
                    hint="a signature works once, where it was sent: sign each delivery with a new webhook-id "
                         "(GitHub: each delivery is its own)")


REFUSED_KEPT_WHOLE = 1024  # bytes of a refused delivery's data kept as they came (issue 21)
REFUSED_EXCERPT = 200      # characters kept of a larger one


def recorded_data(outcome: str, data: dict[str, Any]) -> dict[str, Any]:
    """The data a delivery's record keeps: a taken event (`consumed`, `queued`) keeps all of it; a
    refused one at most a bounded excerpt and its size (its digest is kept beside it), so refused
    requests cannot grow the store (issue 21: 50 refused 1 MiB requests stored 52 MB). A `counted`
    approval keeps all of it too: it becomes part of `delivery.approvals` (issue 23)."""
    if outcome in ("consumed", "queued", "counted"):
        return data
    import json

    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= REFUSED_KEPT_WHOLE:
        return data
    return {"excerpt": text[:REFUSED_EXCERPT], "bytes": size}


# ---------------------------------------------------------------------------------------------
# gate policy (issue 23): the verdicts of `roast.policy.decide` as delivery outcomes

def gated(entry: dict[str, Any]) -> bool:
    """Whether a wait (a session's `awaiting` entry) has a gate: approvers, a quorum, no self-approval
    or verified identities only. A gated wait never takes a queued event as it opens (an approval is
    given to an open gate), and a consuming delivery there is judged by `policy.decide` first."""
    doc = entry.get("policy") or {}
    return bool(doc.get("approvers") is not None or doc.get("quorum") or doc.get("self_approval") is False
                or doc.get("require_verified"))


def offered_to(session: Session, name: str, path: str | None) -> dict[str, Any] | None:
    """The awaiting entry of the wait `path` that takes event `name` (the one `decide` said consumes it)."""
    return next((a for a in session.awaiting if a.get("event") == name and a.get("path") == path), None)


def gate_verdict(judged: Any, session: Session, name: str, path: str | None) -> Verdict:
    """The delivery outcome of a `policy.decide` verdict that does not consume the wait (`Forbidden`,
    `Duplicate`, `Counted`), with the detail its row keeps."""
    kind = type(judged).__name__
    if kind == "Forbidden":
        return Verdict("forbidden", judged.reason)
    if kind == "Duplicate":
        return Verdict("duplicate", f"{judged.actor} was already counted for {name!r} ({judged.have} of "
                                    f"{judged.need} approvals); not counted again", path=path)
    return Verdict("counted", f"{judged.have} of {judged.need} approvals for {name!r}", path=path)


def who_may(doc: dict[str, Any] | None, name: str) -> str:
    """The hint of a `forbidden` delivery: who may deliver `name` to this wait, from its saved policy:
    `'approved' may be delivered by ana@example.com, *@sre.example.com (not the session's starter);
    2 distinct approvers must deliver it`."""
    doc = doc or {}
    who = ", ".join(doc["approvers"]) if doc.get("approvers") is not None else "anyone"
    but = (["not the session's starter"] if doc.get("self_approval") is False else []) + \
        (["verified identities only: an API token, a per-person link or an SSH-signed approval"]
         if doc.get("require_verified") else [])
    need = (doc.get("quorum") or {}).get(name)
    return (f"{name!r} may be delivered by {who}" + (f" ({'; '.join(but)})" if but else "")
            + (f"; {need} distinct approvers must deliver it" if need else ""))
