"""The Python API: `run()`, `resume()`, `retry()`, `sessions()`, `session()`, `cancel()`, `tick()`, `listen()`.

The public functions, and `_continue`: the one place that runs a saved session on (lock → read
it again → load it and check edits → claim → drive → notify). `resume`, recovery, `retry`,
deadlines and `roast serve`'s claimed branches differ only in the claim. The rules that make pauses
durable: the session is saved *before* anything is reported (SPEC §6); an event is claimed with one
compare-and-set before its branch runs, so it is consumed exactly once; what the runner holds
between two saves is in the store, so recovery infers nothing (issue 10); and a store error stops
the drive without deciding the session's outcome (SPEC §11).

    >>> import roast
    >>> result = roast.run("deploy/workflow.yml")          # doctest: +SKIP
    >>> result.status, result.awaiting                      # doctest: +SKIP
    ('waiting', ['approved', 'rejected'])
    >>> roast.resume("approved", data={"approver": "ana"}, session_id=result.session_id)  # doctest: +SKIP
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast import deliver as intake_
from roast.deliver import Busy, Held, LookAgain, Loaded, cwd_of, not_retryable, not_waiting
from roast.drive import correlation_key, drive, event_of, notify, state_of
from roast.errors import NotWaiting, RoastError, UsageError
from roast.expressions import iso
from roast.store import EventRecord, NewSession, Session, StepRecord, mark_running, new_id
from roast.store_url import open_store
from roast.views import COUNT_CAP, Page, Result, SessionList, delivery_doc, result_of

if TYPE_CHECKING:
    from typing import Any

    from roast.runner import Observer
    from roast.requests import Event
    from roast.store import SessionStore

# The step tree and the loader load when a session runs, not when one is listed (start-up, STYLE).

SessionInfo = Session  # what roast.sessions() / roast.session() return


def _quiet() -> Observer:
    from roast.runner import Observer

    return Observer()


# --------------------------------------------------------------------------- the store

_store = open_store  # (store, home): roast.store_url


# --------------------------------------------------------------------------- continuing a session

# What a claim gives the drive: the event its branch reads (None: no event, e.g. a timeout the
# runner answers, a retry), or a Result when nothing is to run (a delivery kept for later).
Claim = Callable[[Session, Loaded], "Event | None | Result"]


def _continue(store: SessionStore, session: Session, purpose: str, expect: Callable[[Session], None],
              claim: Claim, *, observer: Observer, now: Callable[[], float], force: bool = False,
              moved: str | None = None, event: str | None = None, from_step: str | None = None,
              wait: float = 0.0, run: bool = True, stop: Any = None,
              claimed_as: Callable[[], Session | None] | None = None) -> Result:
    """Run a saved session on: the one place that locks, re-reads, checks edits, claims and drives.

    `expect` refuses a session no longer in the state the claim needs; everything that can refuse
    runs before the claim, so a refusal changes nothing (reliability G5). `run=False` (`roast serve`):
    claim only; the branch runs later, in `run_claimed`; `claimed_as` gives the claimed session."""
    cwd = cwd_of(session)
    with Held(store, session.id, purpose, wait):
        # what we saw before the lock may be gone: another process can have taken, run and
        # finished the session in between; look again under the lock
        fresh, sealed = store.get_state(session.id)  # issue 25: the row and its state in one read
        expect(fresh)
        loaded = intake_.prepare(store, fresh, event, force, moved, from_step, sealed=sealed)
        claimed = claim(fresh, loaded)
        if isinstance(claimed, Result):
            return claimed
        if not run:
            from roast.store import mark_running

            mark_running(fresh.id)  # claimed here: live until run_claimed() runs it
            after = claimed_as() if claimed_as is not None else None  # issue 25: no read after the claim
            return result_of(after or store.get(fresh.id))._replace(warnings=loaded.warnings)
        loaded.ctx.attach_env(dict(os.environ))
        result, job = drive(store, fresh.id, loaded.defn, loaded.ctx, loaded.cursor, claimed, observer, now, cwd,
                            stop)
    job = stop.notify_later(job, observer) if job and getattr(stop, "notify_later", None) else job  # issue 21
    return notify(store, job, result._replace(warnings=loaded.warnings), observer, now)


# --------------------------------------------------------------------------- run


def run(workflow: str | os.PathLike[str] | Mapping[str, Any], target: str | None = None, *,
        home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
        observer: Observer | None = None, now: Callable[[], float] = time.time,
        started_by: str | None = None) -> Result:
    """Run a workflow (a path, or a dict whose steps may be callables) once, for one target, started
    by `started_by` (default `$USER@host`). Returns a `Result`: `completed`, `waiting` (at a
    `wait_for_event`), `failed` or `timed_out`; an invalid workflow raises `WorkflowInvalid` first.

        >>> r = roast.run({"steps": [{"greet": lambda ctx: "hi"}]})   # doctest: +SKIP
        >>> r.output["greet"]                                        # doctest: +SKIP
        'hi'
    """
    from roast import definition as definitions
    from roast import steps, tree
    from roast.context import Context, WorkflowInfo
    from roast.effects import choose_model
    from roast.definition import check_model

    observer = observer or _quiet()
    own = None if target is not None or isinstance(workflow, Mapping) else definitions.read(workflow)
    defn = definitions.load(workflow)  # issue 25: compiles the file just read for `target:`, parsed once
    if own is not None:  # the workflow's own `target:` (SPEC §5), expanded once the workflow is valid
        found = definitions.own_targets(own)
        if len(found) > 1:
            raise UsageError(f"the workflow's `target:` names {len(found)} targets; roast.run runs one session",
                             hint="pass target=..., or run each of roast.api.targets(workflow)")
        target = found[0]
    choose_model(defn.provider)  # an unusable provider is refused before a session exists (issue 11)
    check_model(defn.root, defn.models, os.environ)  # and a missing `openai` package (issue 24)
    store_ = _store(store, home)
    session_id = new_id()
    ctx = Context(WorkflowInfo(defn.name, defn.path, session_id, target))
    cwd = os.getcwd()
    key = correlation_key(defn, ctx)
    saved = None if store_.has_definition(defn.fingerprint) else definitions.record(defn)
    with store_.hold(session_id, "roast execute"):  # locked before it exists, so it is never seen orphaned
        store_.create(NewSession(session_id, defn.path, defn.name, defn.fingerprint if defn.sources else "",
                                 target, cwd, defn.declares, key, defn.fingerprint, defn.data is not None, now(),
                                 tree.event_schemas(defn.root), started_by or intake_.default_actor()),
                      state_of(ctx, steps.HERE), definition=saved, now=now())
        ctx.forget_changes()
        ctx.attach_env(dict(os.environ))
        result, job = drive(store_, session_id, defn, ctx, steps.HERE, None, observer, now, cwd)
    return notify(store_, job, result, observer, now)


def targets(workflow: str | os.PathLike[str] | Mapping[str, Any], given: Sequence[str] = (),
            specs: Sequence[str] = ()) -> list[str | None]:
    """The targets to run a workflow for (SPEC §5): `given` as they are, each of `specs` (a file, a
    glob, `$(command)`) expanded; with neither, the workflow's own `target:` key; else `[None]`."""
    from roast import effects

    found: list[str | None] = list(given)
    for spec in specs:
        found.extend(effects.expand_targets(spec))
    if found or isinstance(workflow, Mapping):
        return found or [None]
    from roast import definition as definitions

    return definitions.own_targets(definitions.read(workflow))


def validate(workflow: str | os.PathLike[str]) -> tuple[dict[str, Any], UsageError | None]:
    """Check a workflow without running it: (the `roast validate --json` document, the error that
    makes it invalid or None). A workflow that cannot be found raises NotFound."""
    from roast import compiler, tree
    from roast import workflow as workflow_mod
    from roast.errors import WorkflowInvalid
    from roast.definition import check_model

    wf = None
    warnings: list[str] = []
    try:
        wf = workflow_mod.load(workflow)
        root = compiler.compile_workflow(wf, warnings)
        warnings += filter(None, [check_model(root, wf.data, os.environ)])  # prompts and their model (issue 24)
    except UsageError as err:  # an invalid workflow (exit 2); a missing one is NotFound (exit 3)
        problems = err.problems if isinstance(err, WorkflowInvalid) and err.problems else [err]
        return {"workflow": str(wf.path) if wf is not None else os.fspath(workflow),
                "name": wf.name if wf is not None else None, "valid": False,
                "problems": [p.to_dict() for p in problems], "warnings": warnings}, err
    waits = list(tree.all_waits(root))
    return {"workflow": str(wf.path), "name": wf.name, "valid": True, "problems": [], "warnings": warnings,
            "waits": [{"path": w.path, "name": w.name or "wait_for_event", "events": list(w.events),
                       "timeout": w.timeout} for w in waits], "steps": len(root.steps)}, None


# --------------------------------------------------------------------------- resume


def resume(event: str | None = None, *, data: Any = None, session_id: str | None = None,
           workflow: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None,
           store: SessionStore | str | None = None, force: bool = False, source: str = "api",
           observer: Observer | None = None, now: Callable[[], float] = time.time, event_id: str | None = None,
           actor: str | None = None, reason: str | None = None, if_waiting: bool = False,
           key: str | None = None, wait_for_steps: bool = False, run: bool = True,
           wait_seq: int | None = None, verified: bool = False, signature: str | None = None) -> Result:
    """Deliver `event` to a session and, when a wait takes it, run on until the end or the next wait.

    Without `session_id`, the newest session of `workflow` whose current wait accepts the event
    (or the one with correlation `key`). `data` is a dict or a JSON text (an object). An event
    that no current wait declares but a later one does is kept (`outcome == "queued"`); a repeated
    `event_id` is not applied again (`"duplicate"`). `wait_seq`: only to that wait of the session
    (an approval link's), never a later one; `signature`: a signed request's (bound to where it went). With
    `event=None`, an orphaned `running` session continues from its last checkpoint. Refusals change nothing
    but the delivery record, and raise a `RoastError` whose `document` says what became of the delivery.

        >>> roast.resume("approved", data={"approver": "ana"}, workflow="deploy")   # doctest: +SKIP
    """
    observer = observer or _quiet()
    payload = intake_.event_data(data)
    incoming = intake_.intake(event, payload, event_id, actor, reason, source, now(), verified, signature) if event else None
    wanted = None
    if workflow is not None and not isinstance(workflow, Mapping):
        wanted = intake_.workflow_path(workflow)
    store_ = _store(store, home)  # after the checks: psycopg loads only for a store operation (issue 25)
    if incoming is None:
        if session_id is None:
            raise UsageError("which session? `roast resume -s ID` continues an interrupted session",
                             hint="say which event with --event NAME, or give --session-id")
        session = store_.get(session_id)
        if session.status in ("running", "interrupted"):
            return _recover(store_, session, observer, now, force, wanted, wait_for_steps)
        return intake_.without_event(session, wait_for_steps)
    if event_id is not None and session_id is None and wanted is not None:
        duplicate = store_.find_event(wanted, event_id)
        if duplicate is not None:
            return intake_.duplicate(duplicate[0], duplicate[1], payload)
    session, others = intake_.find(store_, session_id, workflow, incoming.name, key)
    moved = None
    if wanted is not None and session_id and wanted != session.workflow_path:
        moved = intake_.check_moved(session, wanted)
    intake_.check_schema(session, incoming.name, payload)
    scope = session.workflow_path if session_id is None else None
    return _deliver(store_, session, incoming, observer=observer, now=now, force=force, if_waiting=if_waiting,
                    scope=scope, others=others, moved=moved, run=run, wait_seq=wait_seq)


def _deliver(store: SessionStore, session: Session, incoming: Any, *, observer: Observer,
             now: Callable[[], float], force: bool, if_waiting: bool, scope: str | None,
             others: list[str], moved: str | None, run: bool, wait_seq: int | None = None) -> Result:
    """Deliver under the session's lock when a wait may take the event (the lock must be held before
    the claim, so a running session is never seen without its owner); otherwise the store keeps or
    refuses it without the lock."""
    taken: dict[str, Any] = {}

    def wants(s: Session) -> bool:
        return s.status == "waiting" and incoming.name in s.events

    def expect(fresh: Session) -> None:
        if not wants(fresh):
            raise LookAgain

    def claim(fresh: Session, loaded: Loaded) -> Event | None | Result:
        outcome = store.deliver(fresh.id, incoming, if_waiting=if_waiting, workflow_scope=scope, holding=True,
                                workflow_path=moved, wait_seq=wait_seq, now=now())
        if outcome.outcome not in ("consumed", "late"):
            return intake_.refused_or_kept(outcome, incoming, others)
        taken.update(outcome=outcome, session=fresh, after=outcome.session if outcome.outcome == "consumed" else None)
        if outcome.outcome == "late":  # SPEC §6: a late event is refused, and its claimed timeout runs
            return event_of(outcome.claimed)  # `refused_event` reaches the branch (issue 20)
        if others:
            observer.note(f"{intake_.counted(others)} other session(s) of this workflow are waiting too: "
                          f"{', '.join(others[:5])}; this event went to the most recent one that waits for "
                          f"{incoming.name!r}, {fresh.id}")
        return event_of(outcome.event)

    busy: RoastError | None = None
    for attempt in range(100):
        fresh = store.get(session.id) if attempt else session  # find() just read it (the lock re-reads it)
        if not wants(fresh):
            outcome = store.deliver(fresh.id, incoming, if_waiting=if_waiting, workflow_scope=scope, holding=False,
                                    wait_seq=wait_seq, now=now())
            if outcome.outcome == "busy":
                continue
            return intake_.refused_or_kept(outcome, incoming, others)
        try:
            result = _continue(store, fresh, "roast resume", expect, claim, observer=observer, now=now, force=force,
                               moved=moved, event=incoming.name, run=run, claimed_as=lambda: taken.get("after"))
        except Busy as err:
            busy = err
            store.settle()  # claims taken together commit first: the other process may need the write lock
            time.sleep(0.02)  # another process is taking the session right now; look again
            continue
        except LookAgain:
            continue
        claimed = taken.get("outcome")
        if claimed is None:
            return result  # kept for later, or a duplicate
        if claimed.outcome == "late":
            raise intake_.late(taken["session"], incoming, claimed.event, result if run else None)
        return result._replace(others_waiting=others, outcome="consumed", event_id=incoming.event_id,
                               event=incoming.name, delivery=delivery_doc(claimed.event))
    raise busy or NotWaiting(f"session {session.id} is being handled by another process; nothing changed",
                             hint="try again in a moment")


def _taken_over(store: SessionStore, observer: Observer | None, now: Callable[[], float]) -> Claim:
    """The claim of recovery and of a branch claimed earlier: the store hands back the event that
    was claimed and not yet delivered, if any (issue 10)."""
    def claim(fresh: Session, loaded: Loaded) -> Event | None:
        pending = store.take_over(fresh.id, now=now())
        if observer is not None:
            observer.note(f"session {fresh.id} was interrupted; continuing from its last checkpoint ({fresh.cursor})"
                          + (f", delivering {pending.name!r}, which was claimed and not yet delivered"
                             if pending else ""))
        return event_of(pending) if pending else None

    return claim


def _running(fresh: Session) -> None:
    if fresh.status not in ("running", "interrupted"):  # interrupted: stopped by a person (issue 20)
        raise not_waiting(fresh)


def _recover(store: SessionStore, session: Session, observer: Observer, now: Callable[[], float], force: bool,
             wanted: str | None, wait_for_steps: bool, stop: Any = None) -> Result:
    """Continue an orphaned or an interrupted session from its last checkpoint (issue 4 §6, issue 20)."""
    if session.status == "running" and not session.orphaned:
        raise NotWaiting(f"session {session.id} is running in {session.holder or 'another roast process'}; "
                         "nothing changed", hint="wait for it to finish or reach a wait")
    intake_.check_no_step_alive(store, session, wait_for_steps)
    moved = wanted if wanted is not None and wanted != session.workflow_path else None
    if moved:
        intake_.check_moved(session, moved)
    return _continue(store, session, "roast resume (recovery)", _running, _taken_over(store, observer, now),
                     observer=observer, now=now, force=force, moved=moved, stop=stop)


def together(calls: Sequence[Callable[[], Any]], *, home: str | os.PathLike[str] | None = None,
             store: SessionStore | str | None = None) -> list[tuple[bool, Any]]:
    """Claims (`resume(..., run=False)`) in one write transaction, each `(True, value)` or `(False,
    exception)`, each alone if the group is not kept (`roast serve` on SQLite, issue 25: `roast.claiming`)."""
    from roast.claiming import together as joined

    return joined(_store(store, home), calls)


def claims_owner(owner: str | None = None) -> str:
    """The owner this process's claims record; `owner`: record that one (`roast serve`'s claim process)."""
    from roast.store import claim_as, this_owner

    if owner is not None:
        claim_as(owner)
    return this_owner()


def ready_to_claim(*, store: SessionStore | str | None = None) -> None:
    """Load what a claim needs before the first one (`roast serve`'s claim process, at its start)."""
    from roast import claiming, definition, leaves, runner, tree  # noqa: F401 - imported for their cost

    _store(store, None).list(limit=1)  # and open the store's connection


def claimed_here(session_id: str, here: bool = True) -> None:
    """A session claimed for this process (by `roast serve`'s claim process) is this process's to run."""
    mark_running(session_id, here)


def run_claimed(session_id: str, *, home: str | os.PathLike[str] | None = None,
                store: SessionStore | str | None = None, observer: Observer | None = None,
                now: Callable[[], float] = time.time, stop: Any = None) -> Result:
    """Run the branch of an event this process claimed with `resume(..., run=False)` (`roast serve`
    answers the sender first, then runs the branch in its worker, issue 15). The claimed event is
    read from the store, as recovery does."""
    observer = observer or _quiet()
    store_ = _store(store, home)
    session = store_.get(session_id)
    _running(session)
    if session.orphaned is False and session.holder and f"pid {os.getpid()}" not in session.holder \
            and "this process" not in session.holder:
        raise NotWaiting(f"session {session.id} is being run by {session.holder}; nothing changed")
    # a losing delivery of this same process may hold the lock for a moment: wait for it
    return _continue(store_, session, "roast serve", _running, _taken_over(store_, None, now), observer=observer,
                     now=now, wait=5.0, stop=stop)


# --------------------------------------------------------------------------- retry (issue 16)


def retry(session_id: str, *, from_step: str | None = None, force: bool = False,
          workflow: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None, observer: Observer | None = None,
          now: Callable[[], float] = time.time, event_data: Any = None, drop_event: bool = False,
          actor: str | None = None, reason: str | None = None) -> Result:
    """Run a failed session again from the step that failed, as that step's next attempt: the
    steps before it do not run again and nothing before it is evaluated again (its last
    checkpoint was kept). `from_step` (a static step path such as `steps[2]`) starts from an earlier
    step on the way to the failed one instead, dropping the outputs of the steps that run again.
    The workflow may have been edited since: changes after the failed step are used; a change on
    the way to it is refused unless `force`, as for resume. `event_data` replaces the data of the
    latest event (that broke the branch), `drop_event` empties it, recorded with `actor`, `reason`.

        >>> roast.retry("0mww7qbb")   # doctest: +SKIP
    """
    observer = observer or _quiet()
    store_ = _store(store, home)
    session = store_.get(session_id)
    if session.status != "failed":
        raise not_retryable(session)
    wanted = intake_.workflow_path(workflow) if workflow is not None else None
    moved = wanted if wanted is not None and wanted != session.workflow_path else None
    if moved:
        intake_.check_moved(session, moved)

    def expect(fresh: Session) -> None:
        if fresh.status != "failed":
            raise not_retryable(fresh)

    def reopen(fresh: Session, loaded: Loaded) -> None:
        from roast import tree

        where = tree.describe(loaded.defn.root, loaded.cursor, loaded.ctx.collections)
        note = intake_.replace_event(fresh, loaded, event_data, drop_event, actor, reason, now())
        store_.reopen(fresh.id, changes=loaded.delta, cursor=where if loaded.delta is not None else None, now=now(),
                      note=note)
        observer.note(f"session {fresh.id} failed at {iso(fresh.finished_at)}; retrying from "
                      + (f"{from_step} ({where})" if from_step else f"its last checkpoint ({fresh.cursor})"))
        return None

    return _continue(store_, session, "roast retry", expect, reopen, observer=observer, now=now, force=force,
                     moved=moved, from_step=from_step)


# --------------------------------------------------------------------------- deadlines


def _fire(store: SessionStore, session: Session, observer: Observer, now: Callable[[], float],
          source: str, stop: Any = None) -> Result:
    """Claim an overdue wait for its timeout and run on: the same compare-and-set as an event,
    so an event and a timeout racing at the deadline resolve to exactly one branch (issue 6)."""
    def expect(fresh: Session) -> None:
        if fresh.status != "waiting" or fresh.wait_seq != session.wait_seq:
            raise not_waiting(fresh)

    def fire(fresh: Session, loaded: Loaded) -> Event:
        # the runner is handed the claimed `timeout` event; it never makes one for a wait it resumes
        return event_of(store.fire(fresh.id, wait_seq=fresh.wait_seq, source=source, now=now()))

    return _continue(store, session, f"roast {source}", expect, fire, observer=observer, now=now, stop=stop)


class _Jobs:
    """What a `worker.Worker` asks of the api for one store: claim and drive."""

    def __init__(self, store: SessionStore, observer: Observer, now: Callable[[], float]) -> None:
        self.store, self.observer, self.now = store, observer, now

    def fire(self, session: Session, observer: Observer, source: str, stop: Any) -> Result:
        return _fire(self.store, session, observer, self.now, source, stop)

    def recover(self, session_id: str, observer: Observer, stop: Any) -> Result:
        session = self.store.get(session_id)
        if session.status != "running":
            raise not_waiting(session)
        return _recover(self.store, session, observer, self.now, False, None, False, stop)

    def run_claimed(self, session_id: str, observer: Observer, stop: Any) -> Result:
        return run_claimed(session_id, store=self.store, observer=observer, now=self.now, stop=stop)


def worker(*, workers: int = 1, log: Callable[..., None] | None = None,
           observer_for: Callable[[str | None], Any] | None = None, home: str | os.PathLike[str] | None = None,
           store: SessionStore | str | None = None, now: Callable[[], float] = time.time) -> Any:
    """A `worker.Worker` over this store: `roast serve` starts one (`.start()`, `.submit(id)`, `.stop()`)."""
    from roast.worker import Worker

    return Worker(_Jobs(_store(store, home), _quiet(), now), workers=workers, log=log, observer_for=observer_for,
                  now=now)


def tick(*, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
         observer: Observer | None = None, now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """Fire every overdue wait (for cron or a systemd timer): one summary dict per session; then
    run the notify steps a crash left unrun (issue 14). One pass of the worker.

        >>> roast.tick()   # doctest: +SKIP
        [{'session_id': '0mww7…', 'fired': True, 'status': 'completed', 'error': None}]
    """
    return worker(store=_store(store, home), now=now, observer_for=lambda sid: observer or _quiet()).tick()


def listen(session_id: str, *, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
           observer: Observer | None = None, now: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep, poll: float = 0.25,
           on_update: Callable[[Session, float], None] | None = None) -> Result:
    """Stay with a session until it ends (`--wait`): events come from other processes
    (`roast resume` elsewhere runs the branch); this process fires the deadline on time.
    Interrupting it (Ctrl-C) leaves the session exactly as it is."""
    return worker(store=_store(store, home), now=now, observer_for=lambda sid: observer or _quiet()).listen(
        session_id, sleep=sleep, poll=poll, on_update=on_update)


def notify_pending(*, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
                   observer: Observer | None = None, now: Callable[[], float] = time.time) -> list[str]:
    """Run the notify steps a crash left unrun (at least once per wait): `roast tick` and `roast
    serve` call this. Returns the ids of the sessions notified."""
    from roast.worker import notify_pending as pending

    return pending(_store(store, home), observer or _quiet(), now)


# --------------------------------------------------------------------------- sessions


def sessions(*, status: str | Sequence[str] | None = None, workflow: str | None = None,
             limit: int | None = 50, offset: int = 0, home: str | os.PathLike[str] | None = None,
             store: SessionStore | str | None = None) -> SessionList:
    """Sessions, newest first: `roast.sessions(status="waiting")`. At most `limit` (None: all), from
    `offset`; the list's `total` says how many match and `next` the offset of the next page (issue 24)."""
    page = list_sessions(status=status, workflow=workflow, limit=limit, offset=offset, home=home, store=store)
    return SessionList(page.rows, page.total, offset, page.capped)


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
    return Page(rows, total, bool(getattr(store_, "read_only_view", False)), limit is not None and total > COUNT_CAP)


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


def cancel(session_id: str, *, reason: str | None = None, actor: str | None = None,
           home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None) -> Session:
    """End a session that has not finished, even a running one (issue 20), as `actor` (default `$USER@host`)."""
    from roast.stop import cancel as stop
    return stop(_store(store, home), session_id, reason=reason, actor=actor or intake_.default_actor())


def prune(*, older_than: float, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None) -> int:
    """Delete finished sessions last updated more than `older_than` seconds ago; return how many."""
    return _store(store, home).prune(older_than=older_than, now=time.time())


# --------------------------------------------------------------------------- links (issue 15)

def links(session: Session | str, *, public_url: str | None = None, home: str | os.PathLike[str] | None = None,
          store: SessionStore | str | None = None) -> dict[str, str]:
    """One signed link per event a waiting session accepts, under `public_url` (default
    `ROAST_PUBLIC_URL`); `{}` when no public URL is configured or the session is not waiting."""
    from roast.drive import signed_links

    store_ = _store(store, home)
    return signed_links(store_, store_.get(session) if isinstance(session, str) else session, public_url)


def check_link(token: str, *, home: str | os.PathLike[str] | None = None, store: SessionStore | str | None = None,
               now: Callable[[], float] = time.time) -> tuple[Any, Session, str]:
    """What an approval link grants: `(link, session, csrf_token)`; `links.BadLink` (a `Refused`)
    when it is tampered with, malformed or expired. The session may have moved on since."""
    from roast.drive import check_link as check

    return check(_store(store, home), token, now())


# --------------------------------------------------------------------------- stores and keys (issue 13)


def copy_store(to: str, *, source: str | None = None, home: str | os.PathLike[str] | None = None,
               keep_source: bool = False) -> dict[str, Any]:
    """Copy every session of the store in use (or `source`) into `to`, a PostgreSQL store URL
    (`roast store copy --to URL`); return how many rows of each table were written, and how many
    open sessions were marked `moved` in the source (none with `keep_source`: issue 24)."""
    from roast.store import mask_url
    from roast.store_copy import copy_store as copy

    counts: dict[str, Any] = dict(copy(open_store(source, home), open_store(to), keep_source=keep_source))
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


def read_event_data(spec: str | None, stdin: Any) -> str | None:
    """`--event-data`: the text itself, `@FILE`, or `-` for `stdin`, at most ROAST_MAX_EVENT_BYTES."""
    return intake_.read_event_data(spec, stdin)


def workflow_named(name: str, key: str, *, home: str | os.PathLike[str] | None = None,
                   store: SessionStore | str | None = None) -> str:
    """The workflow path that workflow `name` (its `name:`, directory or path) and `key` deliver to."""
    return intake_.workflow_named(_store(store, home), name, key)


# --------------------------------------------------------------------------- webhook signatures (for faces)


def webhook_secrets(text: str | None) -> list[bytes]:
    """`ROAST_WEBHOOK_SECRET`'s Standard Webhooks secrets, checked."""
    from roast import webhooks

    return webhooks.parse_secrets(text)


def verify_webhook(secrets: Sequence[bytes], headers: Mapping[str, str], body: bytes, *, now: float,
                   tolerance: float) -> str:
    """Check a Standard Webhooks signature over the raw body; return its `webhook-id`."""
    from roast import webhooks

    return webhooks.verify(secrets, headers, body, now=now, tolerance=tolerance)


def verify_github(secret: bytes | None, headers: Mapping[str, str], body: bytes) -> str | None:
    """Check GitHub's `X-Hub-Signature-256` over the raw body; return `X-GitHub-Delivery`."""
    from roast import webhooks

    return webhooks.verify_github(secret, headers, body)


_load_state = intake_.load_state  # tests/test_retry.py reads a saved state through it
