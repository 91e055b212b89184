"""Delivering to a session: find it (by id, correlation key, or workflow), check what comes in
(event name, id, data, schema, a moved workflow), load what it needs to run on (state, definition,
edits since the pause), and turn each store outcome that runs nothing into a `Result` or a typed
refusal (`RoastError.document` says what became of the delivery).

Every check here runs before a claim, so a refusal changes nothing (reliability G5).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping

from roast.errors import (
    BadEventData,
    Closed,
    DefinitionChanged,
    EventLate,
    EventRefused,
    Forbidden,
    NotFound,
    NotWaiting,
    Refused,
    RoastError,
    StepsStillRunning,
    UsageError,
)
from roast.expressions import iso
from roast.settings import max_event_bytes
from roast.store import EventRecord, Incoming, Session
from roast.views import Result, delivery_doc, finished_phrase, names, outcome_doc, result_of, resume_commands

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    from roast.context import Context
    from roast.definition import Definition
    from roast.store import Continuation, SessionStore


class Busy(NotWaiting):
    """Another process holds the session's lock right now (a delivery looks again)."""


class LookAgain(Exception):
    """What a delivery saw before the lock is gone: look at the session again."""


class Held:
    """The session's lock, waited for up to `wait` seconds (the store's `hold` does not wait)."""

    def __init__(self, store: SessionStore, session_id: str, purpose: str, wait: float) -> None:
        self.store, self.hold, self.wait = store, store.hold(session_id, purpose), wait

    def __enter__(self) -> None:
        until = time.monotonic() + self.wait
        while True:
            try:
                self.hold.__enter__()
                return
            except NotWaiting as err:
                if time.monotonic() >= until:
                    raise Busy(err.message, hint=err.hint) from None
            self.store.settle()  # claims taken together (roast.claiming) commit before one waits for a lock
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.hold.__exit__(None, None, None)


def workflow_path(workflow: Any) -> str:
    """The workflow file a resume names (SPEC §1), found with os.path: pathlib and the loader are
    imported only to explain a path that does not resolve (start-up, issue 12)."""
    text = os.fspath(workflow)
    if text and "\0" not in text:
        given = os.path.join(os.getcwd(), text)
        for candidate in (given, os.path.join(given, "workflow.yml"),
                          os.path.join(os.getcwd(), "roast", text, "workflow.yml")):
            if os.path.isfile(candidate) and (candidate == given or not os.path.isfile(given)):
                return os.path.realpath(candidate)
    from roast import workflow as workflow_mod

    return str(workflow_mod.locate(workflow))


def find(store: SessionStore, session_id: str | None, workflow: Any, event: str | None,
          key: str | None) -> tuple[Session, list[str]]:
    """The session a delivery is for: by id, by correlation key, or the newest of the workflow
    whose current wait accepts the event (issue 11)."""
    if session_id:
        return store.get(session_id), []
    if workflow is None:
        raise UsageError("which session? give a session id or the workflow",
                         hint="roast resume WORKFLOW --event NAME [--session-id ID]")
    if isinstance(workflow, Mapping):
        raise UsageError("a dict workflow's session is resumed by id", hint="pass session_id=...")
    path = workflow_path(workflow)
    if key is not None:
        keyed = store.with_key(path, key)
        if not keyed:
            raise NotFound(f"no open session of {path} has the key {key!r}",
                           hint=f"list sessions with `roast sessions --workflow {path}`")
        return keyed[0], [s.id for s in keyed[1:]]
    waiting, accepting = _accepting(store, path, event)
    if accepting:
        return accepting[0], [s.id for s in accepting[1:]]
    # issue 14: no wait takes it now; the newest open session with a wait ahead for it keeps it
    keeping = [s for s in store.open_of(path, ahead=event, limit=OTHERS_SHOWN + 2)  # issue 25: not every one
               if event in s.ahead and not s.orphaned] if event is not None else []
    if keeping:
        return keeping[0], [s.id for s in keeping[1:]]
    orphans = [s for s in store.list(statuses=["running", "interrupted"], workflow=path, limit=100)[0]
               if s.orphaned or s.status == "interrupted"]
    if waiting:
        import difflib  # only on this error path

        accepted = sorted({e for s in waiting for e in s.events})
        close = difflib.get_close_matches(event or "", accepted, n=1)
        pausing = sum(1 for s in waiting if not s.events)  # sleeping, or in a retry's backoff
        more = "+" if len(waiting) >= WAITING_READ else ""  # only the newest were read (issue 25)
        what = [f"{len(waiting) - pausing:,}{more} waiting session(s) wait for: {', '.join(accepted)}"] if accepted \
            else []
        if pausing:
            what.append(f"{pausing} session(s) sleep or back off until a deadline, taking no events")
        raise EventRefused(f"no session of {path} is waiting for {event!r}; {'; '.join(what)}; nothing was changed",
                           hint=f"did you mean {close[0]!r}?" if close else
                           f"list them with `roast sessions --workflow {path} --status waiting`")
    hint = f"list sessions with `roast sessions --workflow {path}`"
    if orphans:
        hint = (f"{len(orphans)} session(s) of it were interrupted or orphaned; continue one with "
                f"`roast resume -s {orphans[0].id}`")
    else:
        moved = store.list(statuses=["moved"], workflow=path, limit=1)[0]  # issue 24
        if moved:
            raise Closed(f"no session of {path} is waiting here: session {moved[0].id} {finished_phrase(moved[0])}",
                         hint=f"ROAST_STORE={moved[0].reason} roast resume {path}"
                              + (f" --event {event}" if event else ""))
    raise NotFound(f"no session of {path} is waiting", hint=hint)


OTHERS_SHOWN = 100  # issue 25: `others_waiting` lists at most this many ids; the note says "100+"


def _accepting(store: SessionStore, path: str, event: str | None) -> tuple[list[Session], list[Session]]:
    """The newest waiting sessions of `path` that accept `event`, read a page at a time: at most
    OTHERS_SHOWN + 2 (the one picked, the others, one past the cap); when none does, every waiting
    session (for the error's counts). Issue 25: no longer every waiting session of the workflow."""
    accepting: list[Session] = []
    waiting: list[Session] = []
    before: tuple[float, str] | None = None
    while True:
        size = 100 if accepting else 20
        page = store.waiting_page(path, before=before, limit=size)
        accepting += [s for s in page if event is None or event in s.events]
        if not accepting:
            waiting += page
        if len(page) < size or len(accepting) > OTHERS_SHOWN + 1:
            break
        before = (page[-1].created_at, page[-1].id)
        if not accepting and len(waiting) >= WAITING_READ and event is not None:
            older = _older_accepting(store, path, event, before)  # the database filters the rest
            if older is None:
                break  # the refusal counts the WAITING_READ newest ("1,000+")
            accepting, before = [older], (older.created_at, older.id)
    return waiting, accepting[:OTHERS_SHOWN + 2]


WAITING_READ = 1000  # issue 25: waiting sessions read into this process when none of them accepts the event


def _older_accepting(store: SessionStore, path: str, event: str, before: tuple[float, str]) -> Session | None:
    """The newest waiting session older than `before` that accepts `event`, filtered in the database."""
    while True:
        page = store.waiting_page(path, before=before, limit=20, event=event)
        found = next((s for s in page if event in s.events), None)
        if found is not None or len(page) < 20:
            return found
        before = (page[-1].created_at, page[-1].id)


def counted(others: list[str]) -> str:
    """How many other sessions wait too: `3`, or `100+` past OTHERS_SHOWN (issue 25)."""
    return f"{OTHERS_SHOWN:,}+" if len(others) > OTHERS_SHOWN else str(len(others))


def new_event_id() -> str:
    """A new event id (a random version-4 UUID, as text) for a delivery that did not bring one;
    made without importing `uuid`, which loads `platform` (start-up)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def digest(data: Mapping[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_actor() -> str:
    """`$USER@host`, as getpass.getuser() reads it (without importing getpass)."""
    user = next((os.environ[v] for v in ("LOGNAME", "USER", "LNAME", "USERNAME") if os.environ.get(v)), None)
    if user is None:
        try:
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
        except (KeyError, ImportError):
            user = "unknown"
    return f"{user}@{os.uname().nodename}"


def check_schema(session: Session, event: str, data: Mapping[str, Any]) -> None:
    """Typed payloads (issue 14): data that does not match the schema of the wait that would take
    it is refused before anything is stored (outcome `invalid`, exit 2). An event for the wait now
    is checked against that wait's schema; one that would be kept for later, against every schema
    a wait of the workflow declares for it."""
    offered = [a for a in session.awaiting if a.get("event") == event] if session.status == "waiting" else []
    if offered:
        schemas = [offered[0]["schema"]] if offered[0].get("schema") is not None else []
    else:
        schemas = [json.loads(text) for text in (session.schemas or {}).get(event, [])]
    if not schemas:
        return
    from roast import schema as schema_mod

    for declared in schemas:
        found = schema_mod.problems(dict(data), declared)
        if found:
            raise BadEventData(f"event data for {event!r} does not match the wait's schema: " + "; ".join(found)
                               + "; nothing was changed",
                               hint=f"send data the wait accepts (`roast session {session.id} --json` shows the "
                                    "schema under `waits`)",
                               document={"outcome": "invalid", "session_id": session.id, "event": event,
                                         "status": session.status, "problems": found})


def check_moved(session: Session, wanted: str) -> str:
    """A session whose workflow folder moved: resumed from the new place if its content is the same
    (issue 11)."""
    from roast import definition as definitions

    try:
        defn = definitions.load(wanted)
    except RoastError as err:
        raise UsageError(f"session {session.id} belongs to {session.workflow_path}, and {wanted} cannot be "
                         f"loaded: {err.message}") from err
    if session.fingerprint and defn.fingerprint != session.fingerprint:
        raise UsageError(f"session {session.id} belongs to {session.workflow_path}, and {wanted} is a different "
                         "workflow (its content differs); nothing was changed",
                         hint=f"give the workflow it was started from, or leave the workflow out: "
                              f"`roast resume -s {session.id} --event ...`")
    return wanted


def duplicate(session: Session, original: EventRecord, payload: Mapping[str, Any]) -> Result:
    if original.data != dict(payload):
        raise BadEventData(f"event id {original.event_id!r} was already used with other data (for session "
                           f"{session.id}); nothing changed", hint="use a new --event-id for a new event")
    result = result_of(session)
    return result._replace(outcome="duplicate", event_id=original.event_id, event=original.name,
                           delivery=delivery_doc(original))


def refused_or_kept(outcome: Any, incoming: Incoming, others: list[str]) -> Result:
    """An outcome that ran nothing: `queued` and `duplicate` are results, the rest refusals (exit 3)."""
    session: Session = outcome.session
    record: EventRecord | None = outcome.event
    doc = outcome_doc(outcome.outcome, session, incoming.event_id, incoming.name, record)
    quorum = getattr(outcome, "quorum", None)  # issue 23: a counted approval, or one counted already
    if outcome.outcome in ("queued", "duplicate", "counted"):
        if outcome.outcome == "duplicate" and quorum is None and record is not None \
                and record.data != dict(incoming.data):
            raise BadEventData(f"event id {incoming.event_id!r} was already used with other data; nothing changed",
                               hint="use a new --event-id for a new event")
        return result_of(session)._replace(outcome=outcome.outcome, event_id=record.event_id if record else None,
                                         event=incoming.name, delivery=doc["delivery"], others_waiting=others,
                                         quorum=quorum)
    err: RoastError
    if outcome.outcome == "forbidden":
        err = forbidden(session, incoming, record)
    elif outcome.outcome == "closed" and session.status == "moved":  # issue 24: never applied in two stores
        err = Closed(f"session {session.id} {outcome.event.detail if outcome.event and outcome.event.detail else 'moved'}"
                     f"; {incoming.name!r} was not delivered here",
                     hint=f"ROAST_STORE={session.reason} roast resume -s {session.id} -e {incoming.name}"
                     if session.reason else None)
    elif outcome.outcome == "closed":
        err = Closed(f"session {session.id} {finished_phrase(session)}; {incoming.name!r} was not delivered",
                     hint=f"see `roast session {session.id}`")
    elif outcome.outcome == "unknown_event":
        import difflib  # only on this error path: start-up is part of the product

        close = difflib.get_close_matches(incoming.name, list(session.declares), n=1)
        err = EventRefused(f"no wait of {session.workflow_name} declares {incoming.name!r} (it declares "
                           f"{', '.join(session.declares) or 'no event'}); nothing was delivered",
                           hint=f"did you mean {close[0]!r}?" if close else None)
    elif session.status == "waiting":  # not_waiting
        err = NotWaiting(f"session {session.id} waits for {names(session, ' or ')}, not {incoming.name!r}, and no "
                         f"wait still ahead of it declares {incoming.name!r}; it was not delivered",
                         hint="\n".join(resume_commands(session)))
    elif session.status == "interrupted":
        err = NotWaiting(f"session {session.id} is interrupted, not waiting for {incoming.name!r}, and no wait still "
                         f"ahead of it declares {incoming.name!r}; it was not delivered",
                         hint=f"`roast resume --session-id {session.id}` without --event continues it")
    else:
        err = NotWaiting(f"session {session.id} is no longer waiting for {incoming.name!r}: it is running"
                         + (f" in {session.holder}" if session.holder else "")
                         + f", and no wait still ahead of it declares {incoming.name!r}; it was not delivered",
                         hint=(f"its process died: `roast resume --session-id {session.id}` without --event "
                               "continues it") if session.orphaned else None)
    err.document = {**doc, **err.document}  # forbidden: with the actor and the reason (issue 23)
    raise err


def forbidden(session: Session, incoming: Incoming, record: EventRecord | None) -> Forbidden:
    """Issue 23: the wait's policy refused the actor; the refusal names them, why, and who may."""
    from roast.outcomes import offered_to, who_may

    reason = record.detail if record is not None and record.detail else "the wait's policy refuses it"
    gate = offered_to(session, incoming.name, next((a.get("path") for a in session.awaiting
                                                    if a.get("event") == incoming.name), None))
    doc = outcome_doc("forbidden", session, incoming.event_id, incoming.name, record)
    return Forbidden(f"session {session.id}: {incoming.name!r} was not delivered: {reason}; nothing changed",
                     hint=who_may((gate or {}).get("policy"), incoming.name),
                     document={**doc, "actor": incoming.actor, "reason": reason})


class Loaded:
    """What a session needs to run on: its state (context and cursor), its definition, and the
    warnings about edits since it was saved."""

    __slots__ = ("state", "defn", "ctx", "cursor", "warnings", "delta")

    def __init__(self, state: dict[str, Any], defn: Definition, cursor: Any, warnings: list[str],
                 delta: dict[str, Any] | None) -> None:
        self.state, self.defn, self.cursor, self.warnings, self.delta = state, defn, cursor, warnings, delta
        self.ctx: Context = state["context"]


def prepare(store: SessionStore, session: Session, event: str | None, force: bool, moved: str | None = None,
            from_step: str | None = None, known: Callable[..., Any] | None = None,
            sealed: Continuation | RoastError | None = None) -> Loaded:
    """Load a session's state and definition and check edits since it was saved (nothing changes).
    `from_step` (a retry's `--from`): rewind the cursor to that step on the way to where it failed,
    dropping the outputs of the steps that run again (in the context, written by the claim)."""
    from roast import definition as definitions

    if isinstance(sealed, RoastError):  # `known`, `sealed`: read for a whole batch, or with the row (issue 25)
        raise sealed
    state = load_state(store, session, sealed := sealed or store.load_state(session))
    defn, saved = (known or definition_for)(store, session, state, moved, sealed.definition)
    old = definitions.old_tree(saved) if from_step is not None or defn.fingerprint != session.fingerprint else None
    cursor, delta = state["cursor"], None
    if from_step is not None:
        cursor, delta = _rewind(session, old if old is not None else defn.root, state, from_step)
    files = definitions.changed_files(saved) if defn.fingerprint != session.fingerprint else []
    warnings = definitions.check(session, defn, {**state, "cursor": cursor}, old, event, force, changed_files=files)
    if moved is None and not os.path.isfile(session.workflow_path) and not session.workflow_path.startswith("<dict:"):
        warnings.append(f"the workflow file {session.workflow_path} is gone; session {session.id} continues with "
                        "the definition saved at its wait")
    if moved:
        again = "is retried" if session.status == "failed" else "resumes"
        warnings.insert(0, f"session {session.id}'s workflow moved from {session.workflow_path} to {moved}; "
                           f"its content is the same, so it {again} from the new place")
    return Loaded(state, defn, cursor, warnings, delta)  # shown once, with the result (issue 11)


def _rewind(session: Session, tree: Any, state: dict[str, Any], from_step: str) -> tuple[Any, dict[str, Any]]:
    from roast import tree as walkers

    ctx: Context = state["context"]
    found = walkers.rewind(tree, state["cursor"], from_step.split("#")[0].strip())
    if found is None:
        ways = walkers.on_the_way(tree, state["cursor"])
        raise UsageError(f"{from_step!r} is not a step on the way to where session {session.id} failed "
                         f"({session.cursor}); nothing changed",
                         hint="give one of: " + ", ".join(ways[-12:]) if ways else
                         "retry without --from, to run the failed step again")
    cursor, again = found
    for node in again:
        for name in walkers.output_names(node):
            if name in ctx.output:
                del ctx.output[name]
    return cursor, {"cursor": cursor, "changes": ctx.take_changes()}


def load_state(store: SessionStore, session: Session, saved: Continuation | None = None) -> dict[str, Any]:
    """The last sealed state with every delta after it applied (recovery, resume, retry)."""
    saved = saved or store.load_state(session)
    base = saved.base
    if not isinstance(base, dict) or "context" not in base:
        from roast.errors import StateRefused

        raise StateRefused(f"the state of session {session.id} is not one roast can continue; it was not used")
    state = dict(base)
    ctx: Context = state["context"]
    ctx.forget_changes()
    for delta in saved.deltas:
        ctx.apply(delta["changes"])
        state["cursor"] = delta["cursor"]
    return state


def definition_for(store: SessionStore, session: Session, state: Mapping[str, Any],
                    moved: str | None = None, read: object | None = None) -> tuple[Definition, dict[str, Any] | None]:
    """The session's definition (`read`: its saved one, read with its state), and the saved record."""
    from roast import definition as definitions

    saved: dict[str, Any] | None = None
    if session.definition:
        loaded = read if read is not None else store.load_definition(session.definition)
        saved = loaded if isinstance(loaded, dict) else None
    if saved is None:  # saved by roast 0.1: in the state itself
        if state.get("definition") is not None:
            saved = {"data": state["definition"]}
        elif state.get("tree"):
            saved = {"tree": state["tree"], "sources": state.get("sources"), "provider": state.get("provider")}
    if moved is None and saved is not None:
        defn = definitions.from_record(saved, session)
        if defn is not None:
            return defn, saved
        if saved.get("tree") and not os.path.isfile(session.workflow_path):
            return _sealed(saved, session), saved
    if session.workflow_path.startswith("<dict:"):
        raise DefinitionChanged(f"session {session.id} was started from a dict workflow whose definition was not "
                                "saved; it cannot be continued", hint=f"`roast cancel {session.id}`")
    return definitions.load(moved or session.workflow_path), saved


def _sealed(saved: Mapping[str, Any], session: Session) -> Definition:
    """The definition sealed at the session's wait, as it was (issue 20): its workflow file is gone,
    so there is no edit to check; the session still times out, resumes and is cancelled."""
    import pickle  # the tree was sealed and verified with the rest of the record

    from roast.definition import Definition

    return Definition(pickle.loads(saved["tree"]), session.workflow_path, session.workflow_name, session.fingerprint,
                      saved.get("provider"), sources=saved.get("sources"), tree=saved["tree"],
                      key_template=saved.get("key"), models=saved.get("models"))


def check_no_step_alive(store: SessionStore, session: Session, wait: bool) -> None:
    """Recovery never starts an attempt while an earlier attempt's process group lives (issue 10)."""
    from roast.stop import group_alive

    host = os.uname().nodename
    while True:
        alive = [h for h in store.history(session.id) if h.pgid and h.status in ("running", "interrupted")
                 and h.host in (None, host) and group_alive(int(h.pgid))]
        if not alive:
            return
        if not wait:
            step = alive[-1]
            raise StepsStillRunning(f"session {session.id} cannot be continued yet: step {step.path} (attempt {step.attempt}) "
                          f"still has processes running (process group {step.pgid}); nothing changed",
                          hint=f"wait for them to end, stop them with `kill -TERM -- -{step.pgid}`, or add --wait "
                               "to wait for them")
        time.sleep(0.2)


def not_waiting(session: Session) -> RoastError:
    if session.status == "interrupted":
        return NotWaiting(f"session {session.id} is interrupted ({session.error or 'stopped by a signal'})",
                          hint=f"`roast resume --session-id {session.id}` without --event continues it; "
                               f"`roast cancel {session.id}` ends it")
    if session.status == "running":
        return NotWaiting(f"session {session.id} is no longer waiting: it is running"
                          + (" (its process died; `roast resume --session-id "
                             f"{session.id}` without --event continues it)" if session.orphaned else
                             f" in {session.holder}" if session.holder else ""))
    if session.status == "waiting":
        return NotWaiting(f"session {session.id} is waiting for {names(session, ' or ')}")
    return Closed(f"session {session.id} {finished_phrase(session)}; there is nothing to resume",
                  hint=f"see `roast session {session.id}`")


def event_data(data: Any) -> dict[str, Any]:
    from roast.expressions import parse_event_data

    if data is None:
        return {}
    if isinstance(data, (str, bytes)):
        return parse_event_data(data, limit=max_event_bytes())
    if not isinstance(data, Mapping):
        raise BadEventData(f"event data must be a JSON object (a dict), got {type(data).__name__}")
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise BadEventData(f"event data must be plain JSON data: {err}") from err
    return parse_event_data(text, limit=max_event_bytes())


def not_retryable(session: Session) -> RoastError:
    if session.status == "waiting":
        return NotWaiting(f"session {session.id} has not failed: it is waiting ({waiting_for(session)}); "
                          "there is nothing to retry", hint="\n".join(resume_commands(session)) or None)
    if session.status == "interrupted":
        return NotWaiting(f"session {session.id} has not failed: it was interrupted; there is nothing to retry",
                          hint=f"`roast resume --session-id {session.id}` continues it")
    if session.status == "running":
        return NotWaiting(f"session {session.id} has not failed: it is running"
                          + (" (its process died)" if session.orphaned else
                             f" in {session.holder}" if session.holder else ""),
                          hint=f"`roast resume --session-id {session.id}` continues it" if session.orphaned else None)
    return Closed(f"session {session.id} {finished_phrase(session)}; only a failed session can be retried",
                  hint=f"see `roast session {session.id}`")


def waiting_for(session: Session) -> str:
    """`approved or rejected`, `sleeping until …`, `a retry of steps[1] at …`."""
    parts = list(session.events)
    for item in session.awaiting:
        if item.get("event"):
            continue
        when = iso(item.get("deadline"))
        parts.append(f"waiting to retry {item.get('path')} ({item.get('wait')}) at {when}" if item.get("kind") == "retry"
                     else f"sleeping until {when}")
    return " or ".join(parts) or "nothing"


def cwd_of(session: Session) -> str | None:
    """Where a session's steps run: the directory it was started in (SPEC §11). Refused before
    anything is claimed when it is gone."""
    if session.cwd is None:
        return None
    if not os.path.isdir(session.cwd):
        raise Refused(f"session {session.id} runs in {session.cwd}, which no longer exists; nothing was changed",
                      hint=f"recreate {session.cwd}, or `roast cancel {session.id}`")
    return session.cwd


def intake(event: str, payload: dict[str, Any], event_id: str | None, actor: str | None, reason: str | None,
           source: str, now: float, verified: bool = False,
           signature: str | None = None) -> Incoming:
    """A delivery as the store records it: its name checked, an id made when none came, the actor
    defaulted to `$USER@host`, and a digest of its data (duplicates are compared by it)."""
    from roast.steps import EVENT_NAME

    if not EVENT_NAME.fullmatch(event):
        raise UsageError(f"{event!r} is not an event name (letters, digits, _ and - only)")
    if event_id is not None and (not isinstance(event_id, str) or not event_id or len(event_id) > 200):
        raise UsageError("an event id is 1 to 200 characters", hint="e.g. --event-id deploy-1842")
    return Incoming(event, payload, event_id or new_event_id(), actor or default_actor(), reason, source, now,
                    digest(payload), verified=verified, signature=signature)


def without_event(session: Session, wait_for_steps: bool) -> Result:
    """`roast resume -s ID` with no event, for a session that is not running: what to do instead."""
    if session.status == "waiting" and not session.events and wait_for_steps:
        return result_of(session)  # `roast resume -s ID --wait`: the caller stays until the deadline
    if session.status == "waiting" and not session.events:
        raise NotWaiting(f"session {session.id} is {waiting_for(session)}; it continues then, by itself",
                         hint="`roast tick` (from cron or a timer) or `roast serve` continues it at the "
                              f"deadline, or `roast resume -s {session.id} --wait` stays until then")
    if session.status == "waiting":
        raise UsageError(f"session {session.id} is waiting for {names(session, ' or ')}; say which event",
                         hint="\n".join(resume_commands(session)))
    if session.status == "failed":
        raise NotWaiting(f"session {session.id} failed at {iso(session.finished_at)}; there is nothing to "
                         "resume", hint=f"`roast retry {session.id}` runs the failed step again")
    raise not_waiting(session)


def late(session: Session, incoming: Incoming, record: EventRecord | None, result: Result | None) -> EventLate:
    """The refusal of an event that came after its wait's deadline: the wait's timeout was claimed
    instead. `result`: what the timeout path did when it ran here; None: it is claimed, not yet run."""
    doc = outcome_doc("late", session, incoming.event_id, incoming.name, record)
    if result is None:
        return EventLate(f"session {session.id}: the wait's deadline had passed, so {incoming.name!r} was refused; "
                         "its timeout path runs next", session_id=session.id, claimed=True, document=doc)
    deadline = min((a["deadline"] for a in session.awaiting if a.get("event") == incoming.name
                    and a.get("deadline") is not None), default=None)
    # what the timeout path left: the session's status now, and its output (printed by the CLI)
    return EventLate(f"session {session.id}: the wait timed out at {iso(deadline)}, so {incoming.name!r} was "
                     f"refused; the timeout branch ran and the session is now {result.status}",
                     session_id=session.id, claimed=False,
                     document={**doc, "status": result.status, "output": result.output,
                               "final_output": result.final_output})


def workflow_named(store: SessionStore, name: str, key: str) -> str:
    """The workflow path an event for workflow `name` with correlation `key` goes to (`roast serve`'s
    `POST /v1/workflows/{name}/events/{event}?key=K`): among workflows with an open session."""
    from roast.errors import Ambiguous

    paths = [p for p in store.workflow_paths(name) if store.list(statuses=["waiting", "running"], workflow=p, limit=1)[0]]
    if not paths:
        raise NotFound(f"no open session of a workflow named {name!r}; nothing was delivered",
                       hint="GET /v1/sessions lists the sessions and their workflows")
    keyed = [p for p in paths if store.with_key(p, key)] or paths[:1]  # issue 25: indexed, never every session
    if len(keyed) > 1:
        raise Ambiguous(f"several workflows named {name!r} have an open session with the key {key!r} "
                        f"({', '.join(keyed)}); nothing was delivered", hint="deliver by session id instead")
    return keyed[0]


def read_event_data(spec: str | None, stdin: Any) -> str | None:
    """`--event-data`: the text itself, `@FILE`, or `-` for `stdin` (a binary stream), at most
    ROAST_MAX_EVENT_BYTES; None without it."""
    limit = max_event_bytes()
    if spec is None:
        return None
    if spec == "-":
        raw = stdin.read(limit + 1)
        if len(raw) > limit:
            raise BadEventData(f"event data on stdin is too large (more than {limit:,} bytes, the limit)",
                               hint="send less data, or raise ROAST_MAX_EVENT_BYTES")
    elif spec.startswith("@"):
        try:
            with open(spec[1:], "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                raw = fh.read(limit + 1)
        except OSError as err:
            raise BadEventData(f"cannot read event data from {spec[1:]!r}: {err.strerror}") from err
        if len(raw) > limit:
            raise BadEventData(f"event data in {spec[1:]!r} is too large ({max(size, len(raw)):,} bytes, limit "
                               f"{limit:,})", hint="send less data, or raise ROAST_MAX_EVENT_BYTES")
    else:
        return spec
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadEventData(f"event data is not UTF-8 (byte {err.start})") from err


def replace_event(session: Session, loaded: Loaded, data: Any, drop: bool, actor: str | None, reason: str | None,
                  now: float) -> Incoming | None:
    """`roast retry --event-data` / `--drop-event` (issue 24): the data of the latest event (the
    one the failed branch read) replaced, or emptied with `drop`, in the context and in the delta
    the retry saves; returns the record of it for the session's events (None: nothing to do)."""
    if data is None and not drop:
        return None
    ctx = loaded.ctx
    if ctx.event_name is None:
        raise UsageError(f"session {session.id} failed before any event reached it, so there is no event data "
                         "to replace; nothing changed", hint=f"roast retry {session.id} without --event-data")
    payload = event_data({} if data is None else data)
    incoming = intake(ctx.event_name, payload, None, actor, reason, "retry", now)
    for name, value in list(dict.items(ctx.output)):  # the wait's own output records the event it took
        if isinstance(value, dict) and value.get("event") == ctx.event_name and value.get("data") == ctx.event:
            ctx.set_output(name, {**value, "data": payload})
    ctx.set_event(ctx.event_name, payload, {**ctx.delivery, "actor": incoming.actor, "reason": reason,
                                           "event_id": incoming.event_id, "source": "retry"})
    changes = {**(loaded.delta or {}).get("changes", {}), **ctx.take_changes()}
    loaded.delta = {"cursor": loaded.cursor, "changes": changes}
    return incoming
