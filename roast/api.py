"""The Python API: `run()`, `resume()`, `sessions()`, `session()`, `cancel()`, `tick()`, `listen()`.

Wires the definition, the step tree, the runner, the effects and the store together; the only
module that knows a store exists (SPEC §11). The rules that make pauses durable: the session is
saved *before* anything is reported (SPEC §6); an event is claimed with one compare-and-set before
its branch runs, so it is consumed exactly once; what the runner holds between two saves (an event
claimed but not yet delivered) is in the store, so recovery infers nothing (issue 10); and a store
error stops the drive without deciding the session's outcome (SPEC §11).

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
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.errors import (
    BadEventData,
    Closed,
    DefinitionChanged,
    EventLate,
    EventRefused,
    Interrupted,
    NotFound,
    NotWaiting,
    Refused,
    RoastError,
    StepsStillRunning,
    StoreUnavailable,
    TimedOut,
    UsageError,
)
from roast.expressions import iso
from roast.views import Page, Result, delivery_doc, finished_phrase, outcome_doc, plain, result_of
from roast.store import (
    FINISHED,
    EventRecord,
    Incoming,
    NewSession,
    Session,
    StepDone,
    StepRecord,
    StepStart,
    new_id,
)

if TYPE_CHECKING:
    from typing import Any

    from roast.context import Context
    from roast.definition import Definition
    from roast.runner import Observer
    from roast.steps import Event, WaitInfo
    from roast.store import SessionStore

# The step tree, the compiler and the definition are loaded when a session runs, not when one is
# listed (`roast sessions` starts up through this module: STYLE, start-up is part of the product).

STATE_VERSION = 2
SessionInfo = Session  # what roast.sessions() / roast.session() return


def _quiet() -> Observer:
    from roast.runner import Observer

    return Observer()


# --------------------------------------------------------------------------- the store


def open_store(store: SessionStore | str | None = None, home: str | os.PathLike[str] | None = None) -> SessionStore:
    """The session store to use: `store` (an object, or a URL), else `ROAST_STORE`, else SQLite in
    ROAST_HOME (`home=`). URLs: `sqlite:///path/sessions.db`, `postgresql://user@host:port/db`."""
    if store is not None and not isinstance(store, str):
        return store
    url = store if isinstance(store, str) else os.environ.get("ROAST_STORE", "")
    if not url or home is not None and not isinstance(store, str):
        from roast.store_sqlite import SQLiteStore

        return SQLiteStore(home)
    if url.startswith("sqlite:"):
        from roast.store_sqlite import SQLiteStore

        path = url[len("sqlite://"):] if url.startswith("sqlite://") else url[len("sqlite:"):]
        if not path or path == "/":
            return SQLiteStore(home)
        return SQLiteStore(os.path.dirname(path) or ".", db_path=path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from roast.store_postgres import PostgresStore
        except ImportError as err:
            raise UsageError("ROAST_STORE names a PostgreSQL store, and its driver is not installed",
                             hint="pip install 'roast[postgres]'") from err
        return PostgresStore(url)
    from roast.store import mask_url

    raise UsageError(f"ROAST_STORE {mask_url(url)!r} is not a store URL",
                     hint="use sqlite:///path/sessions.db or postgresql://user@host:port/dbname")


def _store(store: SessionStore | str | None, home: str | os.PathLike[str] | None) -> SessionStore:
    return open_store(store, home)


# --------------------------------------------------------------------------- one drive


class _Journal:
    """Saves step history and checkpoints through the store, and tells the observer. A checkpoint
    is held until the next effect, so its transaction also carries the next step's start row
    (one transaction per step, issue 12); only what changed since the last save is written."""

    def __init__(self, store: SessionStore, session_id: str, defn: Definition, ctx: Context,
                 observer: Observer, now: Callable[[], float]) -> None:
        self.store, self.session_id, self.defn, self.ctx, self.observer = store, session_id, defn, ctx, observer
        self.now = now
        self._began: dict[tuple[str, int], float] = {}
        self.done: list[StepDone] = []      # finished steps not yet written
        self.changes: dict[str, Any] | None = None
        self.cursor: Any = None
        self.dirty = False
        self.delivered_now = False
        self.clear_pending = False
        self.saved_at: str | None = None    # the last cursor written, for messages
        self.running: list[str] = []        # steps in flight
        self.failed: set[str] = set()       # steps whose attempt failed in this drive (a retry follows)
        self.names: dict[str, str | None] = {}  # step path -> its name, for notes

    def checkpoint(self, cursor: Any) -> None:
        change = self.ctx.take_changes()
        self.changes = change if self.changes is None else self.ctx.merge_changes(self.changes, change)
        self.cursor, self.dirty = cursor, True
        if self.delivered_now:
            self.clear_pending, self.delivered_now = True, False

    def delivered(self, event: Event) -> None:
        self.delivered_now = True

    def _write(self, start: StepStart | None) -> int:
        from roast import steps

        cursor_text = steps.describe(self.defn.root, self.cursor, self.ctx.collections) if self.dirty else None
        delta = {"cursor": self.cursor, "changes": self.changes} if self.dirty else None
        attempt = self.store.advance(self.session_id, changes=delta,
                                     cursor=cursor_text, finished=self.done, start=start,
                                     delivered=self.clear_pending, now=self.now())
        if self.dirty:
            self.saved_at = cursor_text
        self.done, self.changes, self.dirty, self.clear_pending = [], None, False, False
        return attempt

    def started(self, request: Any) -> int:
        attempt = self._write(StepStart(request.path, request.name or "", self.now()))
        self._began[(request.path, attempt)] = time.monotonic()
        self.running.append(request.path)
        self.names[request.path] = request.name
        label = self._label(request.path)
        if request.path in self.failed:
            self.observer.note(f"retrying step {label} (attempt {attempt})")
        elif attempt > 1:
            self.observer.note(f"step {label} ran before; running it again (attempt {attempt})")
        self.observer.started(request.path, request.name, attempt)
        return attempt

    def flush(self) -> None:
        if self.dirty or self.done:
            self._write(None)

    def finished(self, request: Any, attempt: int, status: str, output: Any, error: str | None = None,
                 usage: tuple[int, int] | None = None) -> None:
        text = _text(output)
        if usage and status == "ok" and error is None:  # an ok row's note: the tokens a prompt used
            error = usage_note(usage)
        self.done.append(StepDone(request.path, attempt, status, text[:65536], self.now(),
                                  error[:4096] if error else None))
        if status == "failed":
            self.failed.add(request.path)
        began = self._began.pop((request.path, attempt), time.monotonic())
        if request.path in self.running:
            self.running.remove(request.path)
        self.observer.finished(request.path, request.name, status, time.monotonic() - began)

    def spawned(self, path: str, attempt: int, pgid: int) -> None:
        if attempt:
            self.store.spawned(self.session_id, path, attempt, pgid)

    def pausing(self, path: str, seconds: float) -> None:
        self.observer.note(f"step {self._label(path)} failed; next attempt in {seconds:.1f} s")

    def _label(self, path: str) -> str:
        name = self.names.get(path)
        return f"{path} {name}" if name else path

    def take_done(self) -> list[StepDone]:
        done, self.done = self.done, []
        return done


def usage_note(usage: tuple[int, int]) -> str:
    """How a prompt step's token usage is kept in its history row (issue 17): the note of an ok row."""
    return f"{USAGE_NOTE}{usage[0]} prompt + {usage[1]} completion tokens"


USAGE_NOTE = "usage: "


def _text(value: Any) -> str:
    from roast.expressions import to_text

    return to_text(value)


def _state(ctx: Context, cursor: Any) -> dict[str, Any]:
    return {"v": STATE_VERSION, "cursor": cursor, "context": ctx}


def _awaiting(waits: Sequence[WaitInfo]) -> list[dict[str, Any]]:
    out = []
    for w in waits:
        schemas = dict(w.schemas or ())
        for name in w.events:
            entry: dict[str, Any] = {"event": name, "wait": w.wait, "path": w.path, "deadline": w.deadline}
            if name in schemas:
                entry["schema"] = json.loads(schemas[name])
            out.append(entry)
    # a pause (a `sleep:`, a retry's backoff) awaits no event, only its deadline (issue 16)
    return out + [{"event": None, "wait": w.wait, "path": w.path, "deadline": w.deadline, "kind": w.kind}
                  for w in waits if not w.events]


def _model(defn: Definition) -> Any:
    from roast.effects import choose_model

    return choose_model(defn.provider)


def _models(defn: Definition) -> Any:
    """The workflow's model keys for the effects; the token is read only when a call needs it."""
    from roast.definition import api_token
    from roast.effects import ModelSetup

    return ModelSetup(defn.models, lambda: api_token(defn))


def _drive(store: SessionStore, session_id: str, defn: Definition, ctx: Context, cursor: Any,
           event: Event | None, observer: Observer, now: Callable[[], float], cwd: str | None) -> Result:
    """Run from `cursor` until the end or the next wait; save, then return what happened."""
    from roast.store import mark_running

    mark_running(session_id)  # live while this process drives it, even after a store error (store.py)
    try:
        return _drive_marked(store, session_id, defn, ctx, cursor, event, observer, now, cwd)
    finally:
        mark_running(session_id, False)


def _drive_marked(store: SessionStore, session_id: str, defn: Definition, ctx: Context, cursor: Any,
                  event: Event | None, observer: Observer, now: Callable[[], float], cwd: str | None) -> Result:
    from roast import steps
    from roast.effects import Effects
    from roast.runner import Completed, Runner, Waiting

    model = _model(defn)
    while True:
        effects = Effects(ctx=ctx, model=model, cwd=cwd, announce=observer.note,
                          pause=getattr(observer, "pause", None), unpause=getattr(observer, "unpause", None),
                          models=_models(defn))
        journal = _Journal(store, session_id, defn, ctx, observer, now)
        runner = Runner(effects, now=now, journal=journal, event=event, cancel=effects.kill_all,
                        hold_limit=sleep_in_process())
        effects.on_spawn = runner.spawned
        ending: tuple[str, RoastError] | None = None
        try:
            outcome: Completed | Waiting | None = runner.drive(defn.root.run(ctx, cursor))
        except StoreUnavailable as err:
            raise _stopped(err, session_id, journal) from err
        except (KeyboardInterrupt, Interrupted) as err:
            _interrupted(store, session_id, journal, err, now)
            raise
        except TimedOut as err:
            outcome, ending = None, ("timed_out", err)
        except RoastError as err:  # only a step decides `failed`
            outcome, ending = None, ("failed", err)
        finally:
            effects.close()
        try:
            if ending is not None:
                status, failure = ending
                if status == "failed":
                    journal.flush()  # the last checkpoint is kept, for `roast retry`
                store.finish(session_id, status, output=plain(ctx.output), final_output=ctx.final_output(),
                             error=str(failure), finished=journal.take_done(), keep_state=status == "failed",
                             now=now())
                return result_of(store.get(session_id), error=str(failure))._replace(detail=failure.detail)
            if isinstance(outcome, Completed):
                store.finish(session_id, "completed", output=plain(ctx.output), final_output=ctx.final_output(),
                             finished=journal.take_done(), cursor="end", now=now())
                return result_of(store.get(session_id))
            assert isinstance(outcome, Waiting)
            suspend = outcome.suspend
            # SPEC §6: saved before it is reported, so a crash after the print cannot lose the wait.
            notify = [w for w in suspend.waits if w.notify is not None]
            held = store.suspend(session_id, _state(ctx, suspend.cursor),
                                 cursor=steps.describe(defn.root, suspend.cursor, ctx.collections),
                                 awaiting=_awaiting(suspend.waits), output=plain(ctx.output),
                                 finished=journal.take_done(), undelivered=runner.pending is not None,
                                 ahead=sorted(steps.events_ahead(defn.root, suspend.cursor)), notify=bool(notify),
                                 now=now())
        except StoreUnavailable as err:
            raise _stopped(err, session_id, journal) from err
        ctx.forget_changes()
        if held.taken is None:
            if notify:  # run by the caller once it has let go of the session (see _notified)
                _NOTIFY[session_id] = (notify, ctx, defn, cwd, held.wait_seq)
            return result_of(store.get(session_id))
        # an event that arrived early was waiting in the inbox: its branch runs now (issue 14)
        taken = held.taken
        observer.note(f"session {session_id}: {taken.name!r} arrived before the wait (at {iso(taken.received_at)}) "
                      "and was kept; its branch runs now")
        event, cursor = _event_of(taken), suspend.cursor


# A wait's `notify:` steps, waiting for their session's lock to be released (issue 14).
_NOTIFY: dict[str, tuple[list[WaitInfo], Context, Definition, str | None, int]] = {}


def _notified(store: SessionStore, result: Result, observer: Observer, now: Callable[[], float]) -> Result:
    """Run the `notify:` steps of the wait a drive just saved, after the session's lock is released
    (a delivery is never kept waiting by a notifier). A failing notify step is a warning: the wait
    is saved, and the command still succeeds."""
    job = _NOTIFY.pop(result.session_id, None)
    if job is None:
        return result
    waits, ctx, defn, cwd, wait_seq = job
    warnings = _run_notify(store, result.session_id, waits, ctx, defn, cwd, wait_seq, observer, now)
    return result._replace(warnings=list(result.warnings) + warnings) if warnings else result


def _run_notify(store: SessionStore, session_id: str, waits: Sequence[WaitInfo], ctx: Context, defn: Definition,
                cwd: str | None, wait_seq: int, observer: Observer, now: Callable[[], float]) -> list[str]:
    from roast.context import NotifyContext
    from roast.effects import Effects
    from roast.runner import Runner

    try:
        hold = store.hold(f"{session_id}-notify", "roast notify")
        hold.__enter__()
    except NotWaiting:
        return []  # another process is notifying for this wait right now
    warnings: list[str] = []
    try:
        session = store.get(session_id)
        if session.status != "waiting" or session.wait_seq != wait_seq:
            return []  # an event came first: the wait is already passed
        commands = {e: c for e, c in zip(session.events, _resume_commands(session))}
        try:
            links_now = links(session, store=store)
        except RoastError:
            links_now = {}
        for wait in waits:
            value = {"session_id": session_id, "events": list(wait.events), "deadline": iso(wait.deadline),
                     "resume": {e: commands.get(e, "") for e in wait.events},
                     "links": {e: links_now[e] for e in wait.events if e in links_now}, "path": wait.path,
                     "name": wait.wait, "workflow": defn.name, "seq": wait_seq}
            view = NotifyContext(ctx, value)
            effects = Effects(ctx=ctx, model=_model(defn), cwd=cwd, announce=observer.note,
                              models=_models(defn))
            journal = _NotifyJournal(store, session_id, observer, now)
            try:
                Runner(effects, now=now, journal=journal).drive(wait.notify.run(view))  # type: ignore[union-attr]
                for text in journal.outputs:
                    if text:
                        observer.note(f"notify: {text}")
            except StoreUnavailable:
                raise
            except RoastError as err:
                warnings.append(f"a notify step of {wait.path} failed ({err.message}); the session is still "
                                "waiting")
            finally:
                effects.close()
        store.notified(session_id, wait_seq=wait_seq)
    finally:
        hold.__exit__(None, None, None)
    return warnings


class _NotifyJournal:
    """History rows for notify steps (the session is waiting: no checkpoints, no cursor)."""

    def __init__(self, store: SessionStore, session_id: str, observer: Observer, now: Callable[[], float]) -> None:
        self.store, self.session_id, self.observer, self.now = store, session_id, observer, now
        self.began: dict[str, float] = {}
        self.outputs: list[str] = []

    def started(self, request: Any) -> int:
        self.began[request.path] = self.now()
        self.observer.started(request.path, request.name, 1)
        return 1

    def finished(self, request: Any, attempt: int, status: str, output: Any, error: str | None = None,
                 usage: tuple[int, int] | None = None) -> None:
        text = _text(output)
        start = StepStart(request.path, request.name or "", self.began.pop(request.path, self.now()))
        self.store.record_step(self.session_id, start, StepDone(request.path, 1, status, text[:65536], self.now(),
                                                                error[:4096] if error else None))
        self.outputs.append(text.strip())
        self.observer.finished(request.path, request.name, status, 0.0)

    def checkpoint(self, cursor: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def delivered(self, event: Any) -> None:
        pass

    def spawned(self, path: str, attempt: int, pgid: int) -> None:
        pass

    def pausing(self, path: str, seconds: float) -> None:
        self.observer.note(f"notify step {path} failed; next attempt in {seconds:.1f} s")


def notify_pending(*, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
                   observer: Observer | None = None, now: Callable[[], float] = time.time) -> list[str]:
    """Run the notify steps a crash left unrun (at least once per wait): `roast tick` and `roast
    serve` call this. Returns the ids of the sessions notified."""
    from roast import steps

    observer = observer or _quiet()
    store_ = _store(store, home)
    done = []
    for session in store_.notify_due():
        try:
            state = _load_state(store_, session)
            defn, _ = _definition_for(store_, session, state)
        except RoastError:
            continue
        waits = []
        for node in steps.wait_at(defn.root, state["cursor"]):
            if node.notify is not None:
                deadline = next((a.get("deadline") for a in session.awaiting if a.get("path", "").startswith(node.path)),
                                None)
                waits.append(steps.WaitInfo(node.path, node.name or "wait_for_event", node.events, deadline,
                                            node.schemas, node.notify))
        ctx: Context = state["context"]
        ctx.attach_env(dict(os.environ))
        if waits:
            _run_notify(store_, session.id, waits, ctx, defn, _cwd_or_none(session), session.wait_seq, observer, now)
            done.append(session.id)
        else:
            store_.notified(session.id, wait_seq=session.wait_seq)
    return done


def _cwd_or_none(session: Session) -> str | None:
    try:
        return _cwd_of(session)
    except RoastError:
        return None


def _event_of(record: EventRecord) -> Event:
    from roast.steps import Event

    delivery = {"id": record.event_id, "actor": record.actor, "reason": record.reason, "source": record.source,
                "received_at": iso(record.received_at)}
    return Event(record.name, record.data, iso(record.received_at) or "", delivery)


def _stopped(err: StoreUnavailable, session_id: str, journal: _Journal) -> StoreUnavailable:
    """SPEC §11: a store error stops the process; the session stays recoverable, and the message
    says what is true (issue 10)."""
    last = journal.saved_at or "its last saved step"
    return StoreUnavailable(f"{err.message}; session {session_id} is stopped after {last} (nothing after it was "
                            f"saved), and `roast resume -s {session_id}` continues it from there once the store "
                            "works again", hint=err.hint)


def _interrupted(store: SessionStore, session_id: str, journal: _Journal, err: BaseException,
                 now: Callable[[], float]) -> None:
    """Record that roast was stopped (the runner has already killed the steps' process groups)."""
    import signal

    signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
    name = signal.Signals(signum).name
    step = ", ".join(journal.running) or None
    if isinstance(err, Interrupted):
        err.session_id, err.step = session_id, step
    else:
        err.session_id, err.step = session_id, step  # type: ignore[attr-defined]
    try:
        journal.flush()
        store.interrupted(session_id, error=f"interrupted by {name}" + (f" during {step}" if step else ""),
                          finished=journal.take_done(), now=now())
    except RoastError:
        pass  # the store is unavailable too: the session is orphaned all the same, and recoverable


def _cwd_of(session: Session) -> str | None:
    """Where a session's steps run: the directory it was started in (SPEC §11). Refused before
    anything is claimed when it is gone."""
    if session.cwd is None:
        return None
    if not os.path.isdir(session.cwd):
        raise Refused(f"session {session.id} runs in {session.cwd}, which no longer exists; nothing was changed",
                      hint=f"recreate {session.cwd}, or `roast cancel {session.id}`")
    return session.cwd


# --------------------------------------------------------------------------- run


def run(workflow: str | os.PathLike[str] | Mapping[str, Any], target: str | None = None, *,
        home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
        observer: Observer | None = None, now: Callable[[], float] = time.time) -> Result:
    """Run a workflow (a path, or a dict whose steps may be callables) once, for one target.

    Returns a `Result`: `completed`, `waiting` (at a `wait_for_event`), `failed` or `timed_out`.
    An invalid workflow raises `roast.errors.WorkflowInvalid` before any step runs.

        >>> r = roast.run({"steps": [{"greet": lambda ctx: "hi"}]})   # doctest: +SKIP
        >>> r.output["greet"]                                        # doctest: +SKIP
        'hi'
    """
    from roast import definition as definitions
    from roast import steps
    from roast.context import Context, WorkflowInfo

    observer = observer or _quiet()
    defn = definitions.load(workflow)
    _model(defn)  # an unusable provider is refused before a session exists (issue 11)
    store_ = _store(store, home)
    session_id = new_id()
    ctx = Context(WorkflowInfo(defn.name, defn.path, session_id, target))
    cwd = os.getcwd()
    key = _correlation_key(defn, ctx)
    saved = None if store_.has_definition(defn.fingerprint) else definitions.record(defn)
    with store_.hold(session_id, "roast execute"):  # locked before it exists, so it is never seen orphaned
        store_.create(NewSession(session_id, defn.path, defn.name, defn.fingerprint if defn.sources else "",
                                 target, cwd, defn.declares, key, defn.fingerprint, defn.data is not None, now(),
                                 steps.event_schemas(defn.root)),
                      _state(ctx, steps.HERE), definition=saved, now=now())
        ctx.forget_changes()
        ctx.attach_env(dict(os.environ))
        result = _drive(store_, session_id, defn, ctx, steps.HERE, None, observer, now, cwd)
    return _notified(store_, result, observer, now)


def _correlation_key(defn: Definition, ctx: Context) -> str | None:
    """`key:` evaluated when the session starts (issue 15): events can then find it by key."""
    if not defn.key_template:
        return None
    from roast.expressions import render

    ctx.attach_env(dict(os.environ))
    return render(defn.key_template, ctx.namespace())


# --------------------------------------------------------------------------- resume


def _workflow_path(workflow: Any) -> str:
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


def _find(store: SessionStore, session_id: str | None, workflow: Any, event: str | None,
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
    path = _workflow_path(workflow)
    if key is not None:
        keyed = store.with_key(path, key)
        if not keyed:
            raise NotFound(f"no open session of {path} has the key {key!r}",
                           hint=f"list sessions with `roast sessions --workflow {path}`")
        return keyed[0], [s.id for s in keyed[1:]]
    waiting = store.waiting_for(path)
    accepting = [s for s in waiting if event is None or event in s.events]
    if accepting:
        return accepting[0], [s.id for s in accepting[1:]]
    # issue 14: no wait takes it now; the newest open session with a wait ahead for it keeps it
    keeping = [s for s in store.open_of(path) if event in s.ahead and not s.orphaned]
    if keeping:
        return keeping[0], [s.id for s in keeping[1:]]
    orphans = [s for s in store.list(statuses=["running"], workflow=path, limit=None)[0] if s.orphaned]
    if waiting:
        import difflib  # only on this error path

        accepted = sorted({e for s in waiting for e in s.events})
        close = difflib.get_close_matches(event or "", accepted, n=1)
        pausing = sum(1 for s in waiting if not s.events)  # sleeping, or in a retry's backoff
        what = [f"{len(waiting) - pausing} waiting session(s) wait for: {', '.join(accepted)}"] if accepted else []
        if pausing:
            what.append(f"{pausing} session(s) sleep or back off until a deadline, taking no events")
        raise EventRefused(f"no session of {path} is waiting for {event!r}; {'; '.join(what)}; nothing was changed",
                           hint=f"did you mean {close[0]!r}?" if close else
                           f"list them with `roast sessions --workflow {path} --status waiting`")
    hint = f"list sessions with `roast sessions --workflow {path}`"
    if orphans:
        hint = (f"{len(orphans)} session(s) of it were interrupted (orphaned); continue one with "
                f"`roast resume -s {orphans[0].id}`")
    raise NotFound(f"no session of {path} is waiting", hint=hint)


def _event_id() -> str:
    """A new event id (a random version-4 UUID, as text) for a delivery that did not bring one;
    made without importing `uuid`, which loads `platform` (start-up)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _digest(data: Mapping[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _default_actor() -> str:
    """`$USER@host`, as getpass.getuser() reads it (without importing getpass)."""
    user = next((os.environ[v] for v in ("LOGNAME", "USER", "LNAME", "USERNAME") if os.environ.get(v)), None)
    if user is None:
        try:
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
        except (KeyError, ImportError):
            user = "unknown"
    return f"{user}@{os.uname().nodename}"


def resume(event: str | None = None, *, data: Any = None, session_id: str | None = None,
           workflow: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None,
           store: SessionStore | str | None = None, force: bool = False, source: str = "api",
           observer: Observer | None = None, now: Callable[[], float] = time.time, event_id: str | None = None,
           actor: str | None = None, reason: str | None = None, if_waiting: bool = False,
           key: str | None = None, wait_for_steps: bool = False, run: bool = True,
           wait_seq: int | None = None) -> Result:
    """Deliver `event` to a session and, when a wait takes it, run on until the end or the next wait.

    Without `session_id`, the newest session of `workflow` whose current wait accepts the event
    (or the one with correlation `key`). `data` is a dict or a JSON text (an object). An event
    that no current wait declares but a later one does is kept (`outcome == "queued"`); a repeated
    `event_id` is not applied again (`"duplicate"`). `wait_seq`: only to that wait of the session
    (an approval link's), never a later one. With `event=None`, an orphaned `running`
    session (its process died) continues from its last checkpoint. Refusals change nothing but the
    delivery record, and raise a `RoastError`.

        >>> roast.resume("approved", data={"approver": "ana"}, workflow="deploy")   # doctest: +SKIP
    """
    from roast.steps import EVENT_NAME

    observer = observer or _quiet()
    payload = _event_data(data)
    if event is not None and not EVENT_NAME.fullmatch(event):
        raise UsageError(f"{event!r} is not an event name (letters, digits, _ and - only)")
    if event_id is not None and (not isinstance(event_id, str) or not event_id or len(event_id) > 200):
        raise UsageError("an event id is 1 to 200 characters", hint="e.g. --event-id deploy-1842")
    store_ = _store(store, home)
    wanted = None
    if workflow is not None and not isinstance(workflow, Mapping):
        wanted = _workflow_path(workflow)
    if event is None:
        if session_id is None:
            raise UsageError("which session? `roast resume -s ID` continues an interrupted session",
                             hint="say which event with --event NAME, or give --session-id")
        session = store_.get(session_id)
        if session.status == "running":
            return _recover(store_, session, observer, now, force, wanted, wait_for_steps)
        if session.status == "waiting" and not session.events and wait_for_steps:
            return result_of(session)  # `roast resume -s ID --wait`: the caller stays until the deadline
        if session.status == "waiting" and not session.events:
            raise NotWaiting(f"session {session.id} is {_waiting_for(session)}; it continues then, by itself",
                             hint="`roast tick` (from cron or a timer) or `roast serve` continues it at the "
                                  f"deadline, or `roast resume -s {session.id} --wait` stays until then")
        if session.status == "waiting":
            raise UsageError(f"session {session.id} is waiting for {_names(session, ' or ')}; say which event",
                             hint="\n".join(_resume_commands(session)))
        if session.status == "failed":
            raise NotWaiting(f"session {session.id} failed at {iso(session.finished_at)}; there is nothing to "
                             "resume", hint=f"`roast retry {session.id}` runs the failed step again")
        raise _not_waiting(session)
    if event_id is None:
        duplicate = None
    elif session_id is None and wanted is not None:
        duplicate = store_.find_event(wanted, event_id)
    else:
        duplicate = None
    if duplicate is not None:
        return _duplicate(duplicate[0], duplicate[1], payload)
    session, others = _find(store_, session_id, workflow, event, key)
    moved = None
    if wanted is not None and session_id and wanted != session.workflow_path:
        moved = _moved(session, wanted)
    _check_schema(session, event, payload)
    incoming = Incoming(event, payload, event_id or _event_id(), actor or _default_actor(), reason, source, now(),
                        _digest(payload))
    scope = session.workflow_path if session_id is None else None
    return _deliver(store_, session, incoming, observer=observer, now=now, force=force, if_waiting=if_waiting,
                    scope=scope, others=others, moved=moved, run=run, wait_seq=wait_seq)


def _check_schema(session: Session, event: str, data: Mapping[str, Any]) -> None:
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


def _moved(session: Session, wanted: str) -> str:
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


def _duplicate(session: Session, original: EventRecord, payload: Mapping[str, Any]) -> Result:
    if original.data != dict(payload):
        raise BadEventData(f"event id {original.event_id!r} was already used with other data (for session "
                           f"{session.id}); nothing changed", hint="use a new --event-id for a new event")
    result = result_of(session)
    return result._replace(outcome="duplicate", event_id=original.event_id, event=original.name,
                           delivery=delivery_doc(original))


def _deliver(store: SessionStore, session: Session, incoming: Incoming, *, observer: Observer,
             now: Callable[[], float], force: bool, if_waiting: bool, scope: str | None,
             others: list[str], moved: str | None, run: bool, wait_seq: int | None = None) -> Result:
    """Deliver under the session's lock when a wait may take the event (the lock must be held before
    the claim, so a running session is never seen without its owner)."""
    busy: RoastError | None = None
    for _ in range(100):
        fresh = store.get(session.id)
        wants = fresh.status == "waiting" and incoming.name in fresh.events
        if not wants:
            outcome = store.deliver(fresh.id, incoming, if_waiting=if_waiting, workflow_scope=scope, holding=False,
                                    wait_seq=wait_seq, now=now())
            if outcome.outcome == "busy":
                continue
            return _refused_or_kept(outcome, incoming, others)
        try:
            hold = store.hold(fresh.id, "roast resume")
            hold.__enter__()
        except NotWaiting as err:
            busy = err
            time.sleep(0.02)  # another process is taking the session right now; look again
            continue
        try:
            # what we saw before the lock may be gone: another process can have taken, run and
            # finished the session in between (its state is then deleted); look again under the lock
            fresh = store.get(session.id)
        except BaseException:
            hold.__exit__(None, None, None)
            raise
        if not (fresh.status == "waiting" and incoming.name in fresh.events):
            hold.__exit__(None, None, None)
            continue
        try:
            result = _consume(store, fresh, incoming, observer=observer, now=now, force=force,
                              if_waiting=if_waiting, scope=scope, others=others, moved=moved, run=run,
                              wait_seq=wait_seq)
        finally:
            hold.__exit__(None, None, None)
        return _notified(store, result, observer, now)
    raise busy or NotWaiting(f"session {session.id} is being handled by another process; nothing changed",
                             hint="try again in a moment")


def _consume(store: SessionStore, session: Session, incoming: Incoming, *, observer: Observer,
             now: Callable[[], float], force: bool, if_waiting: bool, scope: str | None, others: list[str],
             moved: str | None, run: bool, wait_seq: int | None = None) -> Result:
    # everything that can refuse runs before the claim: a refusal changes nothing (reliability G5)
    cwd = _cwd_of(session)
    state, defn, warnings = _prepare(store, session, incoming.name, force, observer, moved)
    outcome = store.deliver(session.id, incoming, if_waiting=if_waiting, workflow_scope=scope, holding=True,
                            workflow_path=moved, wait_seq=wait_seq, now=now())
    if outcome.outcome != "consumed" and outcome.outcome != "late":
        return _refused_or_kept(outcome, incoming, others)
    if others and outcome.outcome == "consumed":
        observer.note(f"{len(others)} other session(s) of this workflow are waiting too: "
                      f"{', '.join(others[:5])}; this event went to the most recent one that waits for "
                      f"{incoming.name!r}, {session.id}")
    ctx: Context = state["context"]
    ctx.attach_env(dict(os.environ))
    if outcome.outcome == "late":
        # SPEC §6: a late event is refused and the timeout branch runs, in this same call (with
        # `run=False`, `roast serve`, the caller runs it: `run_claimed`)
        if not run:
            from roast.store import mark_running

            mark_running(session.id)
            raise EventLate(f"session {session.id}: the wait's deadline had passed, so {incoming.name!r} was refused; "
                            "its timeout path runs next", session_id=session.id, claimed=True,
                            document=outcome_doc("late", session, incoming.event_id, incoming.name, outcome.event))
        result = _drive(store, session.id, defn, ctx, state["cursor"], None, observer, now, cwd)
        deadline = min((a["deadline"] for a in session.awaiting if a.get("event") == incoming.name
                        and a.get("deadline") is not None), default=None)
        # what the timeout path left: the session's status now, and its output (printed by the CLI)
        raise EventLate(f"session {session.id}: the wait timed out at {iso(deadline)}, so {incoming.name!r} was "
                        f"refused; the timeout branch ran and the session is now {result.status}",
                        session_id=session.id, claimed=False,
                        document={**outcome_doc("late", session, incoming.event_id, incoming.name, outcome.event),
                                  "status": result.status, "output": result.output,
                                  "final_output": result.final_output})
    event = _event_of(outcome.event)
    if not run:
        from roast.store import mark_running

        mark_running(session.id)  # claimed here: live until run_claimed() runs it
        return result_of(store.get(session.id))._replace(outcome="consumed", event_id=incoming.event_id,
                                                       event=incoming.name, delivery=delivery_doc(outcome.event),
                                                       warnings=warnings, others_waiting=others)
    result = _drive(store, session.id, defn, ctx, state["cursor"], event, observer, now, cwd)
    return result._replace(warnings=warnings, others_waiting=others, outcome="consumed",
                           event_id=incoming.event_id, event=incoming.name, delivery=delivery_doc(outcome.event))


def _refused_or_kept(outcome: Any, incoming: Incoming, others: list[str]) -> Result:
    """An outcome that ran nothing: `queued` and `duplicate` are results, the rest refusals (exit 3)."""
    session: Session = outcome.session
    record: EventRecord | None = outcome.event
    doc = outcome_doc(outcome.outcome, session, incoming.event_id, incoming.name, record)
    if outcome.outcome in ("queued", "duplicate"):
        if outcome.outcome == "duplicate" and record is not None and record.data != dict(incoming.data):
            raise BadEventData(f"event id {incoming.event_id!r} was already used with other data; nothing changed",
                               hint="use a new --event-id for a new event")
        return result_of(session)._replace(outcome=outcome.outcome, event_id=record.event_id if record else None,
                                         event=incoming.name, delivery=doc["delivery"], others_waiting=others)
    err: RoastError
    if outcome.outcome == "closed":
        err = Closed(f"session {session.id} {finished_phrase(session)}; {incoming.name!r} was not delivered",
                     hint=f"see `roast session {session.id}`")
    elif outcome.outcome == "unknown_event":
        import difflib  # only on this error path: start-up is part of the product

        close = difflib.get_close_matches(incoming.name, list(session.declares), n=1)
        err = EventRefused(f"no wait of {session.workflow_name} declares {incoming.name!r} (it declares "
                           f"{', '.join(session.declares) or 'no event'}); nothing was delivered",
                           hint=f"did you mean {close[0]!r}?" if close else None)
    elif session.status == "waiting":  # not_waiting
        err = NotWaiting(f"session {session.id} waits for {_names(session, ' or ')}, not {incoming.name!r}, and no "
                         f"wait still ahead of it declares {incoming.name!r}; it was not delivered",
                         hint="\n".join(_resume_commands(session)))
    else:
        err = NotWaiting(f"session {session.id} is no longer waiting for {incoming.name!r}: it is running"
                         + (f" in {session.holder}" if session.holder else "")
                         + f", and no wait still ahead of it declares {incoming.name!r}; it was not delivered",
                         hint=(f"its process died: `roast resume --session-id {session.id}` without --event "
                               "continues it") if session.orphaned else None)
    err.document = doc
    raise err


def _prepare(store: SessionStore, session: Session, event: str | None, force: bool, observer: Observer,
             moved: str | None = None) -> tuple[dict[str, Any], Definition, list[str]]:
    """Load a session's state and definition and check edits since it was saved (nothing changes)."""
    from roast import definition as definitions

    state = _load_state(store, session)
    defn, saved = _definition_for(store, session, state, moved)
    old = definitions.old_tree(saved)
    files = definitions.changed_files(saved) if defn.fingerprint != session.fingerprint else []
    warnings = definitions.check(session, defn, state, old, event, force, changed_files=files)
    if moved:
        warnings.insert(0, f"session {session.id}'s workflow moved from {session.workflow_path} to {moved}; "
                           "its content is the same, so it resumes from the new place")
    return state, defn, warnings  # shown once, with the result (issue 11: it printed twice)


def _load_state(store: SessionStore, session: Session) -> dict[str, Any]:
    """The last sealed state with every delta after it applied (recovery, resume, retry)."""
    saved = store.load_state(session)
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


def _definition_for(store: SessionStore, session: Session, state: Mapping[str, Any],
                    moved: str | None = None) -> tuple[Definition, dict[str, Any] | None]:
    from roast import definition as definitions

    saved: dict[str, Any] | None = None
    if session.definition:
        loaded = store.load_definition(session.definition)
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
    if session.workflow_path.startswith("<dict:"):
        raise DefinitionChanged(f"session {session.id} was started from a dict workflow whose definition was not "
                                "saved; it cannot be continued", hint=f"`roast cancel {session.id}`")
    return definitions.load(moved or session.workflow_path), saved


def _recover(store: SessionStore, session: Session, observer: Observer, now: Callable[[], float], force: bool,
             wanted: str | None, wait_for_steps: bool) -> Result:
    """Continue an orphaned session (its process died) from its last checkpoint (issue 4 §6)."""
    if not session.orphaned:
        raise NotWaiting(f"session {session.id} is running in {session.holder or 'another roast process'}; "
                         "nothing changed", hint="wait for it to finish or reach a wait")
    _check_no_step_alive(store, session, wait_for_steps)
    cwd = _cwd_of(session)
    moved = wanted if wanted is not None and wanted != session.workflow_path else None
    if moved:
        _moved(session, moved)
    with store.hold(session.id, "roast resume (recovery)"):
        fresh = store.get(session.id)
        if fresh.status != "running":
            raise _not_waiting(fresh)
        state, defn, warnings = _prepare(store, fresh, None, force, observer, moved)
        pending = store.take_over(fresh.id, now=now())
        ctx: Context = state["context"]
        ctx.attach_env(dict(os.environ))
        observer.note(f"session {fresh.id} was interrupted; continuing from its last checkpoint ({fresh.cursor})"
                      + (f", delivering {pending.name!r}, which was claimed and not yet delivered" if pending else ""))
        result = _drive(store, fresh.id, defn, ctx, state["cursor"], _event_of(pending) if pending else None,
                        observer, now, cwd)
    return _notified(store, result._replace(warnings=warnings), observer, now)


def run_claimed(session_id: str, *, home: str | os.PathLike[str] | None = None,
                store: SessionStore | str | None = None, observer: Observer | None = None,
                now: Callable[[], float] = time.time) -> Result:
    """Run the branch of an event this process claimed with `resume(..., run=False)` (`roast serve`
    answers the sender first, then runs the branch in its worker pool, issue 15). The claimed
    event is read from the store, as recovery does."""
    observer = observer or _quiet()
    store_ = _store(store, home)
    session = store_.get(session_id)
    if session.status != "running":
        raise _not_waiting(session)
    if session.orphaned is False and session.holder and f"pid {os.getpid()}" not in session.holder \
            and "this process" not in session.holder:
        raise NotWaiting(f"session {session.id} is being run by {session.holder}; nothing changed")
    cwd = _cwd_of(session)
    for attempt in range(250):  # a losing delivery of this same process may hold the lock for a moment
        try:
            hold = store_.hold(session.id, "roast serve")
            hold.__enter__()
            break
        except NotWaiting:
            if attempt == 249:
                raise
            time.sleep(0.02)
    try:
        state, defn, warnings = _prepare(store_, session, None, False, observer)
        pending = store_.take_over(session.id, now=now())
        ctx: Context = state["context"]
        ctx.attach_env(dict(os.environ))
        result = _drive(store_, session.id, defn, ctx, state["cursor"], _event_of(pending) if pending else None,
                        observer, now, cwd)
    finally:
        hold.__exit__(None, None, None)
    return _notified(store_, result._replace(warnings=warnings), observer, now)


def _check_no_step_alive(store: SessionStore, session: Session, wait: bool) -> None:
    """Recovery never starts an attempt while an earlier attempt's process group lives (issue 10)."""
    from roast.effects import group_alive

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


def _names(session: Session, sep: str = ", ") -> str:
    return sep.join(session.events) or "nothing"


def _resume_commands(session: Session) -> list[str]:
    """One full command per event, so a pasted hint is never a pipe (issue 11)."""
    import shlex

    path = session.workflow_path
    if path.startswith("<dict:"):
        return [f"roast.resume({e!r}, session_id={session.id!r})" for e in session.events]
    return [f"roast resume {shlex.quote(path)} --event {e} --session-id {session.id}" for e in session.events]


def _not_waiting(session: Session) -> RoastError:
    if session.status == "running":
        return NotWaiting(f"session {session.id} is no longer waiting: it is running"
                          + (" (its process died; `roast resume --session-id "
                             f"{session.id}` without --event continues it)" if session.orphaned else
                             f" in {session.holder}" if session.holder else ""))
    if session.status == "waiting":
        return NotWaiting(f"session {session.id} is waiting for {_names(session, ' or ')}")
    return Closed(f"session {session.id} {finished_phrase(session)}; there is nothing to resume",
                  hint=f"see `roast session {session.id}`")


def _event_data(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if isinstance(data, (str, bytes)):
        return expressions_parse(data)
    if not isinstance(data, Mapping):
        raise BadEventData(f"event data must be a JSON object (a dict), got {type(data).__name__}")
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise BadEventData(f"event data must be plain JSON data: {err}") from err
    return expressions_parse(text)


def expressions_parse(raw: str | bytes) -> dict[str, Any]:
    from roast.expressions import parse_event_data

    return parse_event_data(raw, limit=max_event_bytes())


def max_event_bytes() -> int:
    """`ROAST_MAX_EVENT_BYTES` (default 1 MiB), checked (issue 10: `abc` and `-5` are usage errors)."""
    raw = os.environ.get("ROAST_MAX_EVENT_BYTES")
    if raw is None or raw == "":
        return 1_048_576
    if not raw.isdigit() or int(raw) <= 0:
        raise UsageError(f"ROAST_MAX_EVENT_BYTES must be a positive whole number of bytes, not {raw!r}",
                         hint="unset it for the default, 1048576 (1 MiB)")
    return int(raw)


def sleep_in_process() -> float:
    """`ROAST_SLEEP_IN_PROCESS` (seconds, default 30): a retry's backoff up to this long is slept by
    the running process; a longer one saves the session as `waiting` until the next attempt is due
    (issue 16)."""
    raw = os.environ.get("ROAST_SLEEP_IN_PROCESS")
    if raw is None or raw == "":
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400 or value != value:
        raise UsageError(f"ROAST_SLEEP_IN_PROCESS must be a number of seconds from 0 to 86400, not {raw!r}",
                         hint="unset it for the default, 30")
    return value


# --------------------------------------------------------------------------- retry (issue 16)


def retry(session_id: str, *, from_step: str | None = None, force: bool = False,
          workflow: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None, observer: Observer | None = None,
          now: Callable[[], float] = time.time) -> Result:
    """Run a failed session again from the step that failed, as that step's next attempt: the
    steps before it do not run again and nothing before it is evaluated again (its last
    checkpoint was kept). `from_step` (a static step path such as `steps[2]`) starts from an earlier
    step on the way to the failed one instead, dropping the outputs of the steps that run again.
    The workflow may have been edited since: changes after the failed step are used; a change on
    the way to it is refused unless `force`, as for resume.

        >>> roast.retry("0mww7qbb")   # doctest: +SKIP
    """
    from roast import definition as definitions
    from roast import steps

    observer = observer or _quiet()
    store_ = _store(store, home)
    session = store_.get(session_id)
    if session.status != "failed":
        raise _not_retryable(session)
    wanted = _workflow_path(workflow) if workflow is not None else None
    moved = wanted if wanted is not None and wanted != session.workflow_path else None
    if moved:
        _moved(session, moved)
    cwd = _cwd_of(session)
    with store_.hold(session.id, "roast retry"):
        fresh = store_.get(session.id)
        if fresh.status != "failed":
            raise _not_retryable(fresh)
        state = _load_state(store_, fresh)
        defn, saved = _definition_for(store_, fresh, state, moved)
        old = definitions.old_tree(saved)
        ctx: Context = state["context"]
        cursor = state["cursor"]
        delta = None
        if from_step is not None:
            tree = old if old is not None else defn.root
            found = steps.rewind(tree, cursor, from_step.split("#")[0].strip())
            if found is None:
                ways = steps.on_the_way(tree, cursor)
                raise UsageError(f"{from_step!r} is not a step on the way to where session {fresh.id} failed "
                                 f"({fresh.cursor}); nothing changed",
                                 hint="give one of: " + ", ".join(ways[-12:]) if ways else
                                 "retry without --from, to run the failed step again")
            cursor, again = found
            for node in again:
                for name in steps.output_names(node):
                    if name in ctx.output:
                        del ctx.output[name]
            delta = {"cursor": cursor, "changes": ctx.take_changes()}
        files = definitions.changed_files(saved) if defn.fingerprint != fresh.fingerprint else []
        warnings = definitions.check(fresh, defn, {**state, "cursor": cursor}, old, None, force, changed_files=files)
        if moved:
            warnings.insert(0, f"session {fresh.id}'s workflow moved from {fresh.workflow_path} to {moved}; its "
                               "content is the same, so it is retried from the new place")
        where = steps.describe(defn.root, cursor, ctx.collections)
        store_.reopen(fresh.id, changes=delta, cursor=where if delta is not None else None, now=now())
        ctx.attach_env(dict(os.environ))
        observer.note(f"session {fresh.id} failed at {iso(fresh.finished_at)}; retrying from "
                      + (f"{from_step} ({where})" if from_step else f"its last checkpoint ({fresh.cursor})"))
        result = _drive(store_, fresh.id, defn, ctx, cursor, None, observer, now, cwd)
    return _notified(store_, result._replace(warnings=warnings), observer, now)


def _not_retryable(session: Session) -> RoastError:
    if session.status == "waiting":
        return NotWaiting(f"session {session.id} has not failed: it is waiting ({_waiting_for(session)}); "
                          "there is nothing to retry", hint="\n".join(_resume_commands(session)) or None)
    if session.status == "running":
        return NotWaiting(f"session {session.id} has not failed: it is running"
                          + (" (its process died)" if session.orphaned else
                             f" in {session.holder}" if session.holder else ""),
                          hint=f"`roast resume --session-id {session.id}` continues it" if session.orphaned else None)
    return Closed(f"session {session.id} {finished_phrase(session)}; only a failed session can be retried",
                  hint=f"see `roast session {session.id}`")


def _waiting_for(session: Session) -> str:
    """`approved or rejected`, `sleeping until …`, `a retry of steps[1] at …`."""
    parts = list(session.events)
    for item in session.awaiting:
        if item.get("event"):
            continue
        when = iso(item.get("deadline"))
        parts.append(f"waiting to retry {item.get('path')} ({item.get('wait')}) at {when}" if item.get("kind") == "retry"
                     else f"sleeping until {when}")
    return " or ".join(parts) or "nothing"


# --------------------------------------------------------------------------- deadlines


def _fire(store: SessionStore, session: Session, observer: Observer, now: Callable[[], float],
          source: str) -> Result:
    """Claim an overdue wait for its timeout and run on: the same compare-and-set as an event,
    so an event and a timeout racing at the deadline resolve to exactly one branch (issue 6)."""
    cwd = _cwd_of(session)
    with store.hold(session.id, f"roast {source}"):
        fresh = store.get(session.id)
        if fresh.status != "waiting" or fresh.wait_seq != session.wait_seq:
            raise _not_waiting(fresh)
        state, defn, _ = _prepare(store, fresh, None, False, observer)
        store.fire(fresh.id, wait_seq=fresh.wait_seq, source=source, now=now())
        ctx: Context = state["context"]
        ctx.attach_env(dict(os.environ))
        # no pending event: the runner answers each overdue wait with a `timeout` event
        result = _drive(store, fresh.id, defn, ctx, state["cursor"], None, observer, now, cwd)
    return _notified(store, result, observer, now)


def tick(*, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
         observer: Observer | None = None, now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """Fire every overdue wait (for cron or a systemd timer): one summary dict per session.

        >>> roast.tick()   # doctest: +SKIP
        [{'session_id': '0mww7…', 'fired': True, 'status': 'completed', 'error': None}]
    """
    observer = observer or _quiet()
    store_ = _store(store, home)
    fired: list[dict[str, Any]] = []
    for session in store_.overdue(now=now()):
        entry: dict[str, Any] = {"session_id": session.id, "workflow": session.workflow_path,
                                 "deadline": iso(session.deadline), "fired": False, "status": session.status,
                                 "error": None}
        try:
            result = _fire(store_, session, observer, now, "tick")
            entry.update(fired=True, status=result.status, error=result.error)
        except StoreUnavailable:
            raise
        except RoastError as err:
            now_row = _current(store_, session)
            if now_row is None or (now_row.status, now_row.wait_seq) != ("waiting", session.wait_seq):
                # an event (or another tick) resolved it between the listing and the claim: not an error
                entry.update(status=now_row.status if now_row else "gone", resumed_elsewhere=True)
            else:
                entry.update(error=str(err), code=err.code)
        fired.append(entry)
    notify_pending(store=store_, observer=observer, now=now)  # what a crash left unnotified (issue 14)
    return fired


def _current(store: SessionStore, session: Session) -> Session | None:
    try:
        return store.get(session.id)
    except RoastError:
        return None


def listen(session_id: str, *, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
           observer: Observer | None = None, now: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep, poll: float = 0.25,
           on_update: Callable[[Session, float], None] | None = None) -> Result:
    """Stay with a session until it ends (`--wait`): events come from other processes
    (`roast resume` elsewhere runs the branch); this process fires the deadline on time.
    Interrupting it (Ctrl-C) leaves the session exactly as it is."""
    observer = observer or _quiet()
    store_ = _store(store, home)
    sid = store_.get(session_id).id
    while True:
        session = store_.get(sid)
        current = now()
        if on_update is not None:
            on_update(session, current)
        if session.status in FINISHED:
            return result_of(session)
        if session.status == "waiting" and session.deadline is not None and session.deadline <= current:
            try:
                _fire(store_, session, observer, now, "listen")
            except NotWaiting:
                pass  # an event won the race; follow the session on
            continue
        if session.status == "running" and session.orphaned:
            return result_of(session, error="the process running this session died; "
                                          f"`roast resume --session-id {sid}` continues it")
        wait = poll
        if session.status == "waiting" and session.deadline is not None:
            wait = max(0.0, min(poll, session.deadline - current))
        sleep(wait)


# --------------------------------------------------------------------------- sessions


def sessions(*, status: str | Sequence[str] | None = None, workflow: str | None = None,
             limit: int | None = 50, home: str | os.PathLike[str] | None = None,
             store: SessionStore | str | None = None) -> list[Session]:
    """Sessions, newest first: `roast.sessions(status="waiting")`."""
    return list_sessions(status=status, workflow=workflow, limit=limit, home=home, store=store).rows


def list_sessions(*, status: str | Sequence[str] | None = None, workflow: str | None = None,
                  older_than: float | None = None, since: float | None = None, limit: int | None = 50,
                  offset: int = 0, open_first: bool = False, home: str | os.PathLike[str] | None = None,
                  store: SessionStore | str | None = None) -> Page:
    """A page of sessions and the total (for `roast sessions`)."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    store_ = _store(store, home)
    key = None
    if workflow is not None:
        from roast.workflow import filter_key  # only with --workflow: a plain listing stays light

        key = filter_key(workflow)
    rows, total = store_.list(statuses=statuses, workflow=key, older_than=older_than, since=since, limit=limit,
                              offset=offset, open_first=open_first)
    return Page(rows, total, bool(getattr(store_, "read_only_view", False)))


def session(session_id: str, *, home: str | os.PathLike[str] | None = None,
            store: SessionStore | str | None = None) -> Session:
    """One session by id or unique prefix: `roast.session("mk3x")`."""
    return _store(store, home).get(session_id)


def history(session_id: str, *, home: str | os.PathLike[str] | None = None,
            store: SessionStore | str | None = None) -> list[StepRecord]:
    """Every attempt of every step of a session, in order."""
    return _store(store, home).history(session_id)


def deliveries(session_id: str, *, home: str | os.PathLike[str] | None = None,
               store: SessionStore | str | None = None) -> list[EventRecord]:
    """Every delivery that reached a session, in order, with what became of it (issue 14)."""
    return _store(store, home).events(session_id)


def cancel(session_id: str, *, reason: str | None = None, home: str | os.PathLike[str] | None = None,
           store: SessionStore | str | None = None) -> Session:
    """End a waiting (or orphaned) session: `roast.cancel("mk3x", reason="superseded")`."""
    store_ = _store(store, home)
    return store_.cancel(store_.get(session_id).id, reason=reason, now=time.time())


def prune(*, older_than: float, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None) -> int:
    """Delete finished sessions last updated more than `older_than` seconds ago; return how many."""
    return _store(store, home).prune(older_than=older_than, now=time.time())


# --------------------------------------------------------------------------- links (issue 15)

LINK_MAX_AGE = 7 * 86_400.0  # a link expires at the wait's deadline, and at most this long after the wait began


def link_max_age() -> float:
    """`ROAST_LINK_MAX_AGE` (a duration such as `2d`; default 7 days): how long after a wait began
    its approval links stay valid at most (a deadline ends them sooner)."""
    raw = os.environ.get("ROAST_LINK_MAX_AGE")
    if not raw:
        return LINK_MAX_AGE
    try:
        from roast.expressions import parse_duration

        return parse_duration(raw, "ROAST_LINK_MAX_AGE")
    except UsageError as err:
        raise UsageError(err.message, hint="e.g. ROAST_LINK_MAX_AGE=2d (at most 365 days)") from None


def links(session: Session | str, *, public_url: str | None = None, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None) -> dict[str, str]:
    """One signed link per event a waiting session accepts, under `public_url` (default
    `ROAST_PUBLIC_URL`); `{}` when no public URL is configured or the session is not waiting."""
    from roast import links as links_mod
    from roast import seal

    public = public_url or os.environ.get("ROAST_PUBLIC_URL")
    store_ = _store(store, home)
    row = store_.get(session) if isinstance(session, str) else session
    if not public or row.status != "waiting":
        return {}
    key = seal.link_key(store_.signing_keys())
    expires = row.updated_at + link_max_age()
    if row.deadline is not None:
        expires = min(expires, row.deadline)
    base = public.rstrip("/")
    return {event: f"{base}/a/{links_mod.make(key, row.id, row.wait_seq, event, expires)}" for event in row.events}


def check_link(token: str, *, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
               now: Callable[[], float] = time.time) -> tuple[Any, Session, str]:
    """What an approval link grants: `(link, session, csrf_token)`; `links.BadLink` (a `Refused`)
    when it is tampered with, malformed or expired. The session may have moved on since (the page
    then says what happened)."""
    from roast import links as links_mod
    from roast import seal

    store_ = _store(store, home)
    key = seal.link_key(store_.signing_keys())
    link = links_mod.check(key, token, now=now())
    return link, store_.get(link.session_id), links_mod.csrf(key, token)


# --------------------------------------------------------------------------- stores and keys (issue 13)


def copy_store(to: str, *, source: str | None = None, home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Copy every session of the store in use (or `source`) into `to`, a PostgreSQL store URL
    (`roast store copy --to URL`); return how many rows of each table were written."""
    from roast.store import mask_url
    from roast.store_copy import copy_store as copy

    counts: dict[str, Any] = dict(copy(open_store(source, home), open_store(to)))
    counts["target"] = mask_url(to)
    return counts


def new_key() -> str:
    """A new signing key as the text ROAST_KEY_FILE holds (`roast key new`)."""
    from roast.seal import new_key_text

    return new_key_text()


def short_id(session_id: str) -> str:
    """How listings show a session id (JSON keeps the full one)."""
    from roast.store import short_id as short

    return short(session_id)
