"""What a caller is given back: `Result`, `Page`, and the JSON documents of a session, a delivery
and a refusal — one shape each, shared by the CLI (`--json`), `roast serve` and the Python API.

Pure: builds values from store records, decides nothing, performs no I/O.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from roast.expressions import iso
from roast.expressions import plain as expressions_plain
from roast.outcomes import ONLY_GATES_AHEAD  # noqa: F401  (for the faces: a queued event no wait ahead takes)
from roast.store import COUNT_CAP

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    from roast.errors import RoastError
    from roast.store import EventRecord, Session, StepRecord

_RESULT_FIELDS = ("status", "session_id", "workflow", "output", "final_output", "awaiting", "waits", "deadline",
                  "target", "cursor", "error", "warnings", "others_waiting", "outcome", "event_id", "event",
                  "delivery", "detail", "quorum")

# How a finished session's status is said in a sentence ("… timed out at …").
FINISHED_WORDS = {"completed": "completed", "failed": "failed", "timed_out": "timed out", "cancelled": "was cancelled",
                  "moved": "moved to another store"}  # moved: issue 24

# HTTP status of a refusal, by its code (the document is the one `roast resume --json` prints).
HTTP_STATUS = {"invalid": 422, "usage": 422, "workflow_invalid": 422, "not_found": 404, "ambiguous": 404,
               "unknown_event": 404, "late": 409, "closed": 409, "not_waiting": 409, "refused": 409,
               "definition_changed": 409, "state_refused": 409, "bad_link": 403, "unauthorized": 401, "replayed": 409, "forbidden": 403,
               "too_large": 413, "bad_request": 400, "unsupported_media_type": 415, "store_unavailable": 503}
HTTP_STATUS["signature_refused"] = 403  # issue 23: an SSH-signed approval that does not check out


class Result:
    """What a run, resume or delivery ended with.

    >>> r = roast.run("wf/workflow.yml")   # doctest: +SKIP
    >>> r.status in ("completed", "waiting", "failed", "timed_out")   # doctest: +SKIP
    True

    A delivery (`roast.resume`) also says what became of the event: `outcome` is `consumed`,
    `queued` or `duplicate` (refusals raise), with `event_id` and `delivery` (issue 14); at a
    gated wait (issue 23) also `counted`, with `quorum` = `{event, have, need, approvers}`.
    """

    __slots__ = _RESULT_FIELDS

    def __init__(self, status: str, session_id: str, workflow: str, output: dict[str, Any] | None = None,
                 final_output: str = "", awaiting: list[str] | None = None, waits: list[dict[str, Any]] | None = None,
                 deadline: str | None = None, target: str | None = None, cursor: str | None = None,
                 error: str | None = None, warnings: list[str] | None = None, others_waiting: list[str] | None = None,
                 outcome: str | None = None, event_id: str | None = None, event: str | None = None,
                 delivery: dict[str, Any] | None = None, detail: str | None = None,
                 quorum: dict[str, Any] | None = None) -> None:
        self.status, self.session_id, self.workflow = status, session_id, workflow
        self.output = output or {}
        self.final_output = final_output
        self.awaiting = awaiting or []
        self.waits = waits or []
        self.deadline, self.target, self.cursor, self.error = deadline, target, cursor, error
        self.warnings = warnings or []
        self.others_waiting = others_waiting or []
        self.outcome, self.event_id, self.event = outcome, event_id, event
        self.delivery = delivery
        self.detail = detail  # the failing Python step's traceback (shown with -v; not in to_json)
        self.quorum = quorum  # issue 23: a gated wait's progress after a counted (or repeated) approval

    def _replace(self, **changes: Any) -> Result:
        values = {name: getattr(self, name) for name in _RESULT_FIELDS}
        values.update(changes)
        return Result(**values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "waiting")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.outcome is not None:  # a delivery: what became of it comes first (issue 14)
            doc.update(outcome=self.outcome, session_id=self.session_id, event_id=self.event_id, event=self.event)
        doc.update({"session_id": self.session_id, "status": self.status, "workflow": self.workflow,
                    "target": self.target, "awaiting": self.awaiting, "waits": self.waits,
                    "deadline": self.deadline, "cursor": self.cursor, "output": self.output,
                    "final_output": self.final_output, "error": self.error, "warnings": self.warnings,
                    "others_waiting": self.others_waiting})
        if self.outcome is not None:
            doc["delivery"] = self.delivery
            doc["quorum"] = self.quorum
        return doc

    def __repr__(self) -> str:
        return f"Result({self.status!r}, {self.session_id!r})"

    def __str__(self) -> str:
        text = f"session {self.session_id} {self.status}"
        if self.awaiting:
            text += f", awaiting {', '.join(self.awaiting)}"
        if self.deadline:
            text += f" until {self.deadline}"
        return text


class Page:
    """A page of sessions: the rows, how many match in all, and whether the view may be stale.
    `capped` (issue 25): more than COUNT_CAP match; `total` is then COUNT_CAP + 1 ("100+")."""

    __slots__ = ("rows", "total", "stale", "capped")

    def __init__(self, rows: list[Session], total: int, stale: bool, capped: bool = False) -> None:
        self.rows, self.total, self.stale, self.capped = rows, total, stale, capped


class SessionList(list):  # type: ignore[type-arg]
    """What `roast.sessions()` returns: a list of sessions (so existing callers keep working) that
    says whether it is the whole story (issue 24): `total` sessions match, and `next` is the
    `offset=` of the following page, or None when this page reaches the last one.

        >>> page = roast.sessions(status="completed")              # doctest: +SKIP
        >>> len(page), page.total, page.next                        # doctest: +SKIP
        (50, 80, 50)
    """

    __slots__ = ("total", "next", "total_capped")

    def __init__(self, rows: Sequence[Session], total: int, offset: int = 0, capped: bool = False) -> None:
        super().__init__(rows)
        # issue 25: past COUNT_CAP matches, `total` is COUNT_CAP and `total_capped` is True
        self.total, self.total_capped = (COUNT_CAP, True) if capped else (total, False)
        more = bool(rows) if capped else offset + len(rows) < total
        self.next: int | None = offset + len(rows) if more else None

    def __repr__(self) -> str:
        capped = ", total_capped=True" if self.total_capped else ""
        return f"SessionList({list.__repr__(self)}, total={self.total}{capped}, next={self.next})"


def plain(value: Any) -> Any:
    """Outputs as JSON-able data (Python steps may return anything). Through `expressions.plain`
    first: the json encoder would ask a `DotDict` for `.items()`, a data key there (issue 24)."""
    return json.loads(json.dumps(expressions_plain(value), default=str))


def result_of(row: Session, *, error: str | None = None) -> Result:
    """A session row as a `Result`."""
    waits = [{**item, "deadline": iso(item.get("deadline"))} for item in row.awaiting or []]
    return Result(status=row.status, session_id=row.id, workflow=row.workflow_path,
                  output=plain(dict(row.output or {})), final_output=row.final_output or "",
                  awaiting=row.events, waits=waits if row.status == "waiting" else [],
                  deadline=iso(row.deadline), target=row.target, cursor=row.cursor, error=error or row.error)


def finished_phrase(session: Session) -> str:
    """`timed out at 2026-…Z`."""
    if session.status == "moved":  # issue 24: say where it went
        return f"moved to {session.reason or 'another store'} on {iso(session.finished_at)}; deliver there"
    how = FINISHED_WORDS.get(session.status, session.status)
    return f"{how} at {iso(session.finished_at or session.updated_at)}"


def delivery_doc(record: EventRecord) -> dict[str, Any]:
    """One delivery, as `delivery` of a result and `events[]` of a session document (without data)."""
    return {"name": record.name, "event_id": record.event_id, "outcome": record.outcome, "actor": record.actor,
            "reason": record.reason, "received_at": iso(record.received_at), "source": record.source,
            "wait_path": record.wait_path, "consumed_at": iso(record.consumed_at), "detail": record.detail,
            "verified": bool(record.verified), "approvals": record.approvals}


def outcome_doc(outcome: str, session: Session, event_id: str | None, event: str,
                record: EventRecord | None) -> dict[str, Any]:
    """What a refused or kept delivery answers with (before its `error` object)."""
    return {"outcome": outcome, "session_id": session.id, "event_id": event_id, "event": event,
            "status": session.status, "delivery": delivery_doc(record) if record is not None else None}


def session_json(s: Session) -> dict[str, Any]:
    """A session in a listing (`roast sessions --json`, `GET /v1/sessions`)."""
    return {"session_id": s.id, "status": s.shown_status, "workflow": s.workflow_path,
            "workflow_name": s.workflow_name, "target": s.target,
            "awaiting": s.events, "deadline": iso(s.deadline),
            "cursor": s.cursor, "created_at": iso(s.created_at), "updated_at": iso(s.updated_at),
            "finished_at": iso(s.finished_at), "output": s.output or {}, "error": s.error,
            "reason": s.reason, "started_by": s.started_by, "cancelled_by": s.cancelled_by,
            "outcome": s.decided}  # outcome: the event that decided, or `timed out` (issue 24)


def event_data(e: EventRecord) -> Any:
    """An event's data as shown: a deadline's firing says when, in UTC, not as an epoch."""
    data = e.data
    if e.name == "timeout" and isinstance(data, dict) and isinstance(data.get("deadline"), (int, float)):
        data = {**data, "deadline": iso(data["deadline"])}
    return data


def session_document(s: Session, history: Sequence[StepRecord], events: Sequence[EventRecord],
                     links: Mapping[str, str] | None = None, page: str | None = None,
                     pages: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `roast session ID --json` prints (and `GET /sessions/ID` of `roast serve`); `links`:
    the signed approval link of each awaited event (with ROAST_PUBLIC_URL, issue 15); `pages`: the
    personal page of each person the wait's `approvers:` names exactly (issue 23)."""
    doc = session_json(s)
    doc["links"] = dict(links or {})
    doc["page"] = page  # issue 22: the wait's page (every event its own button), with ROAST_PUBLIC_URL
    doc["pages"] = dict(pages or {})  # issue 23: identity → that person's own page
    doc["waits"] = [{**a, "deadline": iso(a.get("deadline")), "quorum": quorum_of(s, a, events)}  # issue 23
                    for a in s.awaiting] if s.status == "waiting" else []
    doc["final_output"] = s.final_output
    doc["steps"] = [{"path": h.path, "name": h.name, "attempt": h.attempt, "status": h.status,
                     "started_at": iso(h.started_at), "finished_at": iso(h.finished_at), "output": h.output,
                     "error": h.error if h.status != "ok" else None, **_usage(h)}
                    for h in history]
    doc["events"] = [{**delivery_doc(e), "data": event_data(e)} for e in events]
    return doc


def _usage(h: StepRecord) -> dict[str, Any]:
    """A prompt step's token usage, kept as its ok row's note `usage: P prompt + C completion tokens`."""
    words = (h.error or "").split() if h.status == "ok" else []
    if len(words) == 7 and words[0] == "usage:" and words[1].isdigit() and words[4].isdigit():
        return {"usage": {"prompt_tokens": int(words[1]), "completion_tokens": int(words[4])}}
    return {}


def error_fields(err: RoastError, message: str | None = None, exit_code: int | None = None) -> dict[str, Any]:
    """The `error` object of a `--json` document (CLI and `roast serve` alike): the message, and its
    hint once, as its own field."""
    message = str(err) if message is None else message
    hint = err.hint
    if hint and message.endswith(f"\n  hint: {hint}"):
        message = message[:-len(f"\n  hint: {hint}")]
    return {"code": err.code, "message": message, "hint": hint,
            "exit_code": err.exit_code if exit_code is None else exit_code}


def refusal_document(err: RoastError) -> tuple[int, dict[str, Any]]:
    """(HTTP status, the document `roast resume --json` prints for this refusal)."""
    doc: dict[str, Any] = dict(err.document)
    doc["error"] = error_fields(err)
    return HTTP_STATUS.get(err.code, 409 if err.exit_code == 3 else 422 if err.exit_code == 2 else 500), doc


def names(session: Session, sep: str = ", ") -> str:
    """The events a session waits for, as words (`approved or rejected`)."""
    return sep.join(session.events) or "nothing"


def resume_commands(session: Session) -> list[str]:
    """One full command per event, so a pasted hint is never a pipe (issue 11); by session id, so it
    works from any directory, another terminal or cron (issue 24)."""
    import shlex

    path = session.workflow_path
    if path.startswith("<dict:"):
        return [f"roast.resume({e!r}, session_id={session.id!r})" for e in session.events]
    return [f"roast resume -s {session.id} -e {shlex.quote(e)}" for e in session.events]


def quorum_of(s: Session, wait: Mapping[str, Any], events: Sequence[EventRecord]) -> dict[str, Any] | None:
    """A waiting session's gate progress for one of its waits (an `awaiting` entry), issue 23:
    `{event, have, need, approvers}` from the approvals counted toward it, or None when its event
    has no quorum."""
    doc = wait.get("policy")
    if not doc or not wait.get("event") or s.status != "waiting":
        return None
    from roast import policy

    prior = [policy.Approval(e.name, e.actor, bool(e.verified), e.reason, e.received_at, e.data) for e in events
             if e.outcome == "counted" and e.wait_seq == s.wait_seq and e.wait_path == wait.get("path")]
    return policy.progress(policy.from_doc(doc), prior, str(wait["event"]))


def quorum_words(progress: Mapping[str, Any] | None) -> str:
    """`1 of 2 approvals: ana@example.com` (empty without a quorum): `roast session`, the page, the inbox."""
    if not progress:
        return ""
    names = ", ".join(progress["approvers"])
    return f"{progress['have']} of {progress['need']} approvals" + (f": {names}" if names else "")


def gate_progress(s: Session, events: Sequence[EventRecord]) -> str | None:
    """The quorum progress of a session's open gate in words (None without a quorum): one event's
    `1 of 2 approvals: ana@example.com`, or each named, `approved 1 of 2 approvals: …; rejected …`."""
    found = [p for a in s.awaiting if (p := quorum_of(s, a, events)) is not None]
    if not found:
        return None
    if len(found) == 1:
        return quorum_words(found[0])
    return "; ".join(f"{p['event']} {quorum_words(p)}" for p in found)
