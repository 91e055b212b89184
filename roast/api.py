"""The Python API: `run()`, `resume()`, `sessions()`, `session()`, `cancel()`, `tick()`.

Wires the loader, the step tree, the runner, the effects and the store together. The rule
that makes pauses durable: the session is saved *before* anything is reported (SPEC §6), and an
event is claimed with one compare-and-set before its branch runs, so it is consumed exactly once.

    >>> import roast
    >>> result = roast.run("deploy/workflow.yml")          # doctest: +SKIP
    >>> result.status, result.awaiting                      # doctest: +SKIP
    ('waiting', ['approved', 'rejected'])
    >>> roast.resume("approved", data={"approver": "ana"}, session_id=result.session_id)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roast import compiler, expressions, steps
from roast import workflow as workflow_mod
from roast.context import Context, WorkflowInfo
from roast.effects import Effects, choose_model
from roast.errors import (
    BadEventData,
    DefinitionChanged,
    EventLate,
    EventRefused,
    NotFound,
    NotWaiting,
    RoastError,
    TimedOut,
    UsageError,
)
from roast.expressions import iso
from roast.runner import Completed, Observer, Runner, Waiting
from roast.steps import Event
from roast.store import FINISHED, Session, StepDone, Store, new_id

STATE_VERSION = 1
SessionInfo = Session  # what roast.sessions() / roast.session() return


@dataclass(frozen=True)
class Result:
    """What a run or resume ended with.

    >>> r = roast.run("wf/workflow.yml")   # doctest: +SKIP
    >>> r.status in ("completed", "waiting", "failed", "timed_out")   # doctest: +SKIP
    True
    """

    status: str
    session_id: str
    workflow: str
    output: dict[str, Any] = field(default_factory=dict)
    final_output: str = ""
    awaiting: list[str] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)
    deadline: str | None = None
    target: str | None = None
    cursor: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    others_waiting: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "waiting")

    def to_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "status": self.status, "workflow": self.workflow,
                "target": self.target, "awaiting": self.awaiting, "waits": self.waits,
                "deadline": self.deadline, "cursor": self.cursor, "output": self.output,
                "final_output": self.final_output, "error": self.error, "warnings": self.warnings,
                "others_waiting": self.others_waiting}

    def __str__(self) -> str:
        text = f"session {self.session_id} {self.status}"
        if self.awaiting:
            text += f", awaiting {', '.join(self.awaiting)}"
        if self.deadline:
            text += f" until {self.deadline}"
        return text


def _plain(value: Any) -> Any:
    """Outputs as JSON-able data (Python steps may return anything)."""
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- loading


@dataclass
class _Definition:
    root: steps.Sequence
    path: str
    name: str
    fingerprint: str
    provider: str | None
    data: Mapping[str, Any] | None = None  # a dict workflow, pickled with the session
    sources: dict[str, str | None] | None = None  # a file workflow's files (see Workflow.sources)
    tree: bytes | None = None  # `root`, pickled for the next resume (see _portable_tree)


def _load(workflow: Any, cwd: Path | None = None) -> _Definition:
    if isinstance(workflow, Mapping):
        source = compiler.DictSource(workflow)
        root = compiler.compile_workflow(source)
        return _Definition(root, f"<dict:{source.name}>", source.name, "", _provider_name(workflow), workflow)
    wf = workflow_mod.load(workflow, cwd)
    root = compiler.compile_workflow(wf)
    return _Definition(root, str(wf.path), wf.name, wf.fingerprint(), _provider_name(wf.data),
                       sources=wf.sources())


def _provider_name(data: Mapping[str, Any]) -> str | None:
    provider = data.get("api_provider")
    return str(provider) if isinstance(provider, str) else None


def _provider(defn: _Definition) -> Any:
    return choose_model(defn.provider)


def _portable_tree(defn: _Definition) -> bytes | None:
    """The compiled tree of a file workflow, pickled with the loader's line-tracking strings,
    dicts and lists turned into plain ones, so that loading it needs neither the YAML loader nor a
    parse (STYLE: an unchanged workflow need not be parsed again). None if it cannot be made so."""
    if defn.tree is None and defn.sources is not None:
        import io
        import pickle

        from roast.workflow import Map, Seq, Str

        class _Plain(pickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                kind = type(obj)
                if kind is Str:
                    return str, (str(obj),)
                if kind is Map:
                    return dict, (dict(obj),)
                if kind is Seq:
                    return list, (list(obj),)
                return NotImplemented

        buffer = io.BytesIO()
        try:
            _Plain(buffer, protocol=5).dump(defn.root)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
            return None  # something in the tree will not pickle: the next resume parses again
        blob = buffer.getvalue()
        defn.tree = blob if b"roast.workflow" not in blob else None
    return defn.tree


def _unchanged(sources: Mapping[str, str | None]) -> bool:
    """True if every file reads as it did when the tree was compiled, and none has appeared."""
    for path, expected in sources.items():
        try:
            if expected is None:
                if os.path.isfile(path):
                    return False
                continue
            with open(path, "rb") as handle:
                text = handle.read(1_048_577).decode("utf-8-sig")
        except (OSError, UnicodeDecodeError):
            return False
        if expressions.digest(text) != expected:
            return False
    return True


# --------------------------------------------------------------------------- one drive


class _Journal:
    """Saves checkpoints and step history to the store, and tells the observer."""

    def __init__(self, store: Store, session_id: str, defn: _Definition, ctx: Context,
                 observer: Observer, now: Callable[[], float]) -> None:
        self.store, self.session_id, self.defn, self.ctx, self.observer = store, session_id, defn, ctx, observer
        self.now = now
        self._started: dict[tuple[str, int], float] = {}
        self.done: list[StepDone] = []  # written with the next checkpoint, in its transaction

    def started(self, request: Any) -> int:
        attempt = self.store.step_started(self.session_id, path=request.path, name=request.name or "",
                                          now=self.now())
        self._started[(request.path, attempt)] = time.monotonic()
        if attempt > 1:
            self.observer.note(f"step {request.path} was interrupted before; running it again "
                               f"(attempt {attempt})")
        self.observer.started(request.path, request.name, attempt)
        return attempt

    def finished(self, request: Any, attempt: int, status: str, output: Any) -> None:
        text = expressions.to_text(output)
        self.done.append(StepDone(request.path, attempt, status, text[:65536], self.now()))
        began = self._started.pop((request.path, attempt), time.monotonic())
        self.observer.finished(request.path, request.name, status, time.monotonic() - began)

    def checkpoint(self, cursor: Any) -> None:
        self.store.checkpoint(self.session_id, _state(self.defn, self.ctx, cursor),
                              cursor=steps.describe(self.defn.root, cursor), finished=self.flush(), now=self.now())

    def flush(self) -> list[StepDone]:
        done, self.done = self.done, []
        return done


def _state(defn: _Definition, ctx: Context, cursor: Any, *, at_wait: bool = False) -> dict[str, Any]:
    # The path signature (for SPEC §6 edit checks) is O(steps) to build, so only waits carry it;
    # recovering a crashed session against an edited workflow needs --force.
    state = {"v": STATE_VERSION, "cursor": cursor, "context": ctx,
             "signature": steps.signature(defn.root, cursor) if at_wait else None, "definition": defn.data}
    if at_wait and defn.sources is not None:
        state.update(tree=_portable_tree(defn), sources=defn.sources, provider=defn.provider)
    return state


def _awaiting(waits: Sequence[steps.WaitInfo]) -> list[dict[str, Any]]:
    return [{"event": name, "wait": w.wait, "path": w.path, "deadline": w.deadline}
            for w in waits for name in w.events]


def _drive(store: Store, session_id: str, defn: _Definition, ctx: Context, cursor: Any,
           event: Event | None, observer: Observer, now: Callable[[], float]) -> Result:
    """Run from `cursor` until the end or the next wait; save, then return what happened."""
    effects = Effects(ctx=ctx, model=_provider(defn), cwd=None, announce=observer.note)
    journal = _Journal(store, session_id, defn, ctx, observer, now)
    runner = Runner(effects, now=now, journal=journal, event=event)
    try:
        outcome = runner.drive(defn.root.run(ctx, cursor))
    except TimedOut as err:
        store.finish(session_id, "timed_out", output=_plain(ctx.output), final_output=ctx.final_output(),
                     error=str(err), finished=journal.flush(), now=now())
        return _result(store.get(session_id), error=str(err))
    except RoastError as err:
        store.finish(session_id, "failed", output=_plain(ctx.output), final_output=ctx.final_output(),
                     error=str(err), finished=journal.flush(), now=now())
        return _result(store.get(session_id), error=str(err))
    finally:
        effects.close()
    if isinstance(outcome, Waiting):
        suspend = outcome.suspend
        # SPEC §6: saved before it is reported, so a crash after the print cannot lose the wait.
        store.suspend(session_id, _state(defn, ctx, suspend.cursor, at_wait=True),
                      cursor=steps.describe(defn.root, suspend.cursor), awaiting=_awaiting(suspend.waits),
                      output=_plain(ctx.output), finished=journal.flush(), now=now())
        return _result(store.get(session_id))
    assert isinstance(outcome, Completed)
    store.finish(session_id, "completed", output=_plain(ctx.output), final_output=ctx.final_output(),
                 finished=journal.flush(), now=now())
    return _result(store.get(session_id))


def _result(row: Session, *, error: str | None = None) -> Result:
    waits = [{**item, "deadline": iso(item.get("deadline"))} for item in row.awaiting or []]
    return Result(status=row.status, session_id=row.id, workflow=row.workflow_path,
                  output=_plain(dict(row.output or {})), final_output=row.final_output or "",
                  awaiting=row.events, waits=waits if row.status == "waiting" else [],
                  deadline=iso(row.deadline), target=row.target, cursor=row.cursor, error=error or row.error)


# --------------------------------------------------------------------------- run


def run(workflow: str | os.PathLike[str] | Mapping[str, Any], target: str | None = None, *,
        home: str | os.PathLike[str] | None = None, observer: Observer | None = None,
        now: Callable[[], float] = time.time) -> Result:
    """Run a workflow (a path, or a dict whose steps may be callables) once, for one target.

    Returns a `Result`: `completed`, `waiting` (at a `wait_for_event`), `failed` or `timed_out`.
    An invalid workflow raises `roast.errors.WorkflowInvalid` before any step runs.

        >>> r = roast.run({"steps": [{"greet": lambda ctx: "hi"}]})   # doctest: +SKIP
        >>> r.output["greet"]                                        # doctest: +SKIP
        'hi'
    """
    observer = observer or Observer()
    defn = _load(workflow)
    store = Store(home)
    session_id = new_id(now())
    ctx = Context(WorkflowInfo(defn.name, defn.path, session_id, target))
    with store.hold(session_id):  # locked before it exists, so it is never seen orphaned
        store.create(workflow_path=defn.path, workflow_name=defn.name, fingerprint=defn.fingerprint,
                     target=target, has_definition=defn.data is not None, now=now(), session_id=session_id,
                     state=_state(defn, ctx, steps.HERE))
        ctx.env = dict(os.environ)
        return _drive(store, session_id, defn, ctx, steps.HERE, None, observer, now)


# --------------------------------------------------------------------------- resume


def _find(store: Store, session_id: str | None, workflow: Any) -> tuple[Session, list[str]]:
    if session_id:
        return store.get(session_id), []
    if workflow is None:
        raise UsageError("which session? give a session id or the workflow",
                         hint="roast resume WORKFLOW --event NAME [--session-id ID]")
    if isinstance(workflow, Mapping):
        raise UsageError("a dict workflow's session is resumed by id", hint="pass session_id=...")
    path = str(workflow_mod.locate(workflow))
    waiting = store.waiting_for(path)
    if not waiting:
        raise NotFound(f"no session of {path} is waiting",
                       hint=f"list sessions with `roast sessions --workflow {path}`")
    return waiting[0], [s.id for s in waiting[1:]]


def _definition_for(session: Session, state: Mapping[str, Any]) -> _Definition:
    if state.get("definition") is not None:
        return _load(state["definition"])
    if state.get("tree") and state.get("sources") and _unchanged(state["sources"]):
        import pickle  # the tree was sealed with the rest of the state and verified with it

        return _Definition(pickle.loads(state["tree"]), session.workflow_path, session.workflow_name,
                           session.fingerprint, state.get("provider"), sources=state["sources"],
                           tree=state["tree"])
    return _load(session.workflow_path)


def _check_definition(session: Session, defn: _Definition, state: Mapping[str, Any], event: str | None,
                      force: bool) -> list[str]:
    """SPEC §6: unchanged → resume; changed after the wait → warn; path to the wait changed → refuse."""
    if not session.fingerprint or defn.fingerprint == session.fingerprint:
        return []
    cursor = state["cursor"]
    if state.get("signature") is None:  # a crash checkpoint, not a wait: no signature kept
        if force:
            return [(f"{session.workflow_path} changed since session {session.id} was interrupted; "
                     "continuing with the new definition (--force)")]
        raise DefinitionChanged(
            f"session {session.id} was interrupted and {session.workflow_path} has changed since; "
            "nothing was changed", hint="restore the workflow, or pass --force to continue with the new one")
    old, new = list(state["signature"]), steps.signature(defn.root, cursor)
    waits = steps.wait_at(defn.root, cursor)
    declared = not event or any(event in w.events for w in waits) or not waits and event is None
    if old == new and declared:
        return [(f"{session.workflow_path} changed since session {session.id} paused; the change is "
                 "after the wait, so the new definition is used")]
    moved = [f"was: {a}\n      now: {b}" for a, b in zip(old, new) if a != b]
    if len(old) != len(new):
        moved.append(f"the path to the wait had {len(old)} levels, now {len(new)}")
    if not waits:
        moved.append("the saved position no longer rests on a wait")
    elif not declared:
        moved.append(f"the wait no longer declares {event!r}")
    if force and waits and declared:
        return [f"{session.workflow_path} changed before the wait; resuming anyway (--force)"]
    raise DefinitionChanged(
        f"session {session.id} cannot resume: {session.workflow_path} changed on the path to its wait; "
        "nothing was changed\n    " + "\n    ".join(moved),
        hint="restore the workflow as it was, or pass --force to resume against the new definition")


def resume(event: str | None = None, *, data: Any = None, session_id: str | None = None,
           workflow: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None,
           force: bool = False, source: str = "api", observer: Observer | None = None,
           now: Callable[[], float] = time.time) -> Result:
    """Deliver `event` to a waiting session and run on until the end or the next wait.

    Without `session_id`, the most recent waiting session of `workflow`. `data` is a dict or a
    JSON text (an object). With `event=None`, an orphaned `running` session (its process died)
    continues from its last checkpoint. Refusals change nothing and raise a `RoastError`.

        >>> roast.resume("approved", data={"approver": "ana"}, workflow="deploy")   # doctest: +SKIP
    """
    observer = observer or Observer()
    payload = _event_data(data)
    if event is not None and not steps.EVENT_NAME.fullmatch(event):
        raise UsageError(f"{event!r} is not an event name (letters, digits, _ and - only)")
    store = Store(home)
    session, others = _find(store, session_id, workflow)
    if workflow is not None and not isinstance(workflow, Mapping) and session_id:
        wanted = str(workflow_mod.locate(workflow))
        if wanted != session.workflow_path:
            raise UsageError(f"session {session.id} belongs to {session.workflow_path}, not {wanted}")
    if session.status == "running" and session.orphaned and event is None:
        return _recover(store, session, observer, now, force)
    if session.status != "waiting":
        raise _not_waiting(store, session)
    if event is None:
        raise UsageError(f"session {session.id} is waiting for {_names(session)}; say which event",
                         hint=f"roast resume {session.workflow_path} --event "
                              f"{_names(session, sep=' | ')} --session-id {session.id}")
    offered = [a for a in session.awaiting if a["event"] == event]
    if not offered:
        import difflib  # only on this error path: start-up is part of the product

        close = difflib.get_close_matches(event, [a["event"] for a in session.awaiting], n=1)
        raise EventRefused(f"session {session.id} waits for {_names(session, sep=' or ')}, not {event!r}; "
                           "nothing was changed",
                           hint=f"did you mean {close[0]!r}?" if close else None)
    state = store.load_state(session)
    defn = _definition_for(session, state)
    warnings = _check_definition(session, defn, state, event, force)
    for warning in warnings:
        observer.note(warning)
    if others:
        observer.note(f"{len(others)} other session(s) of this workflow are waiting too: "
                      f"{', '.join(others[:5])}; resuming the most recent, {session.id}")
    current = now()
    if all(a.get("deadline") is not None and a["deadline"] <= current for a in offered):
        # SPEC §6: a late event is refused and the timeout branch runs, in this same call.
        result = _fire(store, session, state, defn, observer, now, source, refused=event)
        deadline = min(a["deadline"] for a in offered)
        raise EventLate(f"session {session.id}: the wait timed out at {iso(deadline)}, so {event!r} was "
                        f"refused; the timeout branch ran and the session is now {result.status}")
    with store.hold(session.id):
        store.claim(session.id, wait_seq=session.wait_seq, event=event, data=payload, source=source,
                    now=current)
        ctx: Context = state["context"]
        ctx.env = dict(os.environ)
        result = _drive(store, session.id, defn, ctx, state["cursor"], Event(event, payload, iso(current) or ""),
                        observer, now)
    return Result(**{**result.__dict__, "warnings": warnings, "others_waiting": others})


def _fire(store: Store, session: Session, state: Mapping[str, Any], defn: _Definition, observer: Observer,
          now: Callable[[], float], source: str, refused: str | None = None) -> Result:
    """Claim an overdue wait for its timeout and run on: the same compare-and-set as an event,
    so an event and a timeout racing at the deadline resolve to exactly one branch (issue 6)."""
    with store.hold(session.id):
        data: dict[str, Any] = {"deadline": iso(session.deadline)}
        if refused:
            data["refused_event"] = refused
        store.claim(session.id, wait_seq=session.wait_seq, event="timeout", data=data, source=source, now=now())
        ctx: Context = state["context"]
        ctx.env = dict(os.environ)
        # no pending event: the runner answers each overdue wait with a `timeout` event
        return _drive(store, session.id, defn, ctx, state["cursor"], None, observer, now)


def tick(*, home: str | os.PathLike[str] | None = None, observer: Observer | None = None,
         now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """Fire every overdue wait (for cron or a systemd timer): one summary dict per session.

        >>> roast.tick()   # doctest: +SKIP
        [{'session_id': '0mww7…', 'fired': True, 'status': 'completed', 'error': None}]
    """
    observer = observer or Observer()
    store = Store(home)
    fired: list[dict[str, Any]] = []
    for session in store.overdue(now=now()):
        entry: dict[str, Any] = {"session_id": session.id, "workflow": session.workflow_path,
                                 "deadline": iso(session.deadline), "fired": False, "status": session.status,
                                 "error": None}
        try:
            state = store.load_state(session)
            defn = _definition_for(session, state)
            entry["warnings"] = _check_definition(session, defn, state, None, False)
            result = _fire(store, session, state, defn, observer, now, "tick")
            entry.update(fired=True, status=result.status, error=result.error)
        except RoastError as err:
            now_row = _current(store, session)
            if now_row is None or (now_row.status, now_row.wait_seq) != ("waiting", session.wait_seq):
                # an event (or another tick) resolved it between the listing and the claim: not an error
                entry.update(status=now_row.status if now_row else "gone", resumed_elsewhere=True)
            else:
                entry.update(error=str(err), code=err.code)
        fired.append(entry)
    return fired


def _current(store: Store, session: Session) -> Session | None:
    try:
        return store.get(session.id)
    except RoastError:
        return None


def listen(session_id: str, *, home: str | os.PathLike[str] | None = None, observer: Observer | None = None,
           now: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
           poll: float = 0.25, on_update: Callable[[Session, float], None] | None = None) -> Result:
    """Stay with a session until it ends (`--wait`): events come from other processes
    (`roast resume` elsewhere runs the branch); this process fires the deadline on time.
    Interrupting it (Ctrl-C) leaves the session exactly as it is."""
    observer = observer or Observer()
    store = Store(home)
    sid = store.get(session_id).id
    while True:
        session = store.get(sid)
        current = now()
        if on_update is not None:
            on_update(session, current)
        if session.status in FINISHED:
            return _result(session)
        if session.status == "waiting" and session.deadline is not None and session.deadline <= current:
            try:
                state = store.load_state(session)
                _fire(store, session, state, _definition_for(session, state), observer, now, "listen")
            except NotWaiting:
                pass  # an event won the race; follow the session on
            continue
        if session.status == "running" and session.orphaned:
            return _result(session, error="the process running this session died; "
                                          f"`roast resume --session-id {sid}` continues it")
        wait = poll
        if session.status == "waiting" and session.deadline is not None:
            wait = max(0.0, min(poll, session.deadline - current))
        sleep(wait)


def _recover(store: Store, session: Session, observer: Observer, now: Callable[[], float],
             force: bool) -> Result:
    """Continue an orphaned session (its process died) from its last checkpoint (issue 4 §6)."""
    with store.hold(session.id):
        fresh = store.get(session.id)
        if fresh.status != "running":
            raise _not_waiting(store, fresh)
        state = store.load_state(fresh)
        defn = _definition_for(fresh, state)
        warnings = _check_definition(fresh, defn, state, None, force)
        for warning in warnings:
            observer.note(warning)
        ctx: Context = state["context"]
        ctx.env = dict(os.environ)
        pending = None
        if steps.wait_at(defn.root, state["cursor"]):
            # the event was claimed but its branch had not started: deliver it again
            claimed = [e for e in store.events(fresh.id) if e.wait_seq == fresh.wait_seq]
            if claimed:
                last = claimed[-1]
                pending = Event(last.name, last.data, iso(last.received_at) or "")
        observer.note(f"session {fresh.id} was interrupted; continuing from its last checkpoint "
                      f"({fresh.cursor})")
        result = _drive(store, fresh.id, defn, ctx, state["cursor"], pending, observer, now)
        return Result(**{**result.__dict__, "warnings": warnings})


def _names(session: Session, sep: str = ", ") -> str:
    return sep.join(session.events) or "nothing"


def _not_waiting(store: Store, session: Session) -> RoastError:
    if session.status == "running":
        return NotWaiting(f"session {session.id} is no longer waiting: it is running"
                          + (" (its process died; `roast resume --session-id "
                             f"{session.id}` without --event continues it)" if session.orphaned else ""))
    when = iso(session.finished_at or session.updated_at)
    how = {"completed": "completed", "failed": "failed", "timed_out": "timed out",
           "cancelled": "was cancelled"}.get(session.status, session.status)
    return NotWaiting(f"session {session.id} {how} at {when}; there is nothing to resume",
                      hint=f"see `roast session {session.id}`")


def _event_data(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if isinstance(data, (str, bytes)):
        return expressions.parse_event_data(data)
    if not isinstance(data, Mapping):
        raise BadEventData(f"event data must be a JSON object (a dict), got {type(data).__name__}")
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise BadEventData(f"event data must be plain JSON data: {err}") from err
    return expressions.parse_event_data(text)


# --------------------------------------------------------------------------- sessions


def sessions(*, status: str | Sequence[str] | None = None, workflow: str | None = None,
             limit: int | None = 50, home: str | os.PathLike[str] | None = None) -> list[Session]:
    """Sessions, newest first: `roast.sessions(status="waiting")`."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    rows, _ = Store(home).list(statuses=statuses, workflow=workflow_mod.filter_key(workflow), limit=limit)
    return rows


def session(session_id: str, *, home: str | os.PathLike[str] | None = None) -> Session:
    """One session by id or unique prefix: `roast.session("mk3x")`."""
    return Store(home).get(session_id)


def cancel(session_id: str, *, reason: str | None = None, home: str | os.PathLike[str] | None = None) -> Session:
    """End a waiting (or orphaned) session: `roast.cancel("mk3x", reason="superseded")`."""
    store = Store(home)
    return store.cancel(store.get(session_id).id, reason=reason)
