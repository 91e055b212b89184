"""Overdue waits fired a batch at a time (`roast tick` and the resident worker's pass, issue 25).

The claim of a timeout was one fsync'd transaction per session, and so was the end of its branch;
here a batch shares one. Each session of a batch is first locked (`Held`) and prepared — its state
loaded and its workflow's edits checked, everything that can refuse, so a refusal still changes
nothing — then every prepared wait is claimed (`store.fire_many`: per session the same
compare-and-set as `store.fire`, so a timeout and an event racing at the deadline still resolve to
exactly one branch), then each branch runs, still under its session's lock. The claims and what
the branches write before their first step (an end, a new wait) join ONE transaction, a write
group (`roast.sql_group`), committed before any step, command or sleep of a branch and at the end
of the batch; a session's lock is let go once its writes are committed, and the notify steps run
after the batch. A crash before that commit leaves every session of it waiting and overdue, as if
the tick had not run (no side effect ran meanwhile), and the next tick fires them; a crash after
it leaves a session whose branch runs steps `running` with its timeout as its `pending_event`,
recovered as any claimed session is (issue 10).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from roast.deliver import Busy, cwd_of, definition_for, prepare
from roast.drive import drive, event_of, notify
from roast.errors import NotWaiting, RoastError, StoreUnavailable

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    from roast.deliver import Loaded
    from roast.store import Continuation, Session, SessionStore
    from roast.views import Result

BATCH = 100  # sessions locked, claimed in one transaction and run per batch (each lock is an open file)


class _Ready:
    """A session of the batch, locked and loaded: what its claim and its branch need."""

    __slots__ = ("session", "loaded", "cwd")

    def __init__(self, session: Session, loaded: Loaded, cwd: str | None) -> None:
        self.session, self.loaded, self.cwd = session, loaded, cwd


def fire_batch(store: SessionStore, sessions: Sequence[Session], source: str, *,
               observer_for: Callable[[str], Any], now: Callable[[], float],
               stop: Any = None) -> list[tuple[Session, Result | RoastError]]:
    """Fire the overdue waits of `sessions` (at most BATCH): each one's result, or the error that
    kept it from firing or running. A StoreUnavailable stops the batch there: it is the last
    entry, and the sessions claimed and not yet run stay claimed (recovered as orphans are) unless
    their claims were rolled back with the batch's writes (then they are simply still overdue)."""
    done: list[tuple[Session, Result | RoastError]] = []
    ready: list[_Ready] = []
    try:  # the locks, then the states: each at once
        held = store.hold_many([s.id for s in sessions], f"roast {source}")
    except StoreUnavailable as err:
        return [(sessions[0], err)]
    try:
        locked = [s for s in sessions if held[s.id] is None]
        states = store.load_states(locked) if locked else {}
        env, known = dict(os.environ), _definitions()
        for session in sessions:
            busy = held[session.id]
            if isinstance(busy, StoreUnavailable):
                return [*done, (session, busy)]
            if busy is not None:  # as `Held` words it: another process has it right now
                done.append((session, Busy(busy.message, hint=busy.hint) if isinstance(busy, NotWaiting) else busy))
                continue
            try:
                ready.append(_prepared(store, session, states[session.id], env, known))
            except StoreUnavailable as err:
                return [*done, (session, err)]
            except RoastError as err:
                store.let_go([session.id])
                done.append((session, err))
        if not ready:
            return done
        return _fire(store, ready, done, source, observer_for, now, stop)
    finally:  # claimed and not run (a stop, a store error): recovered as orphans are
        store.let_go([s.id for s in sessions])


def _fire(store: SessionStore, ready: list[_Ready], done: list[tuple[Session, Result | RoastError]], source: str,
          observer_for: Callable[[str], Any], now: Callable[[], float],
          stop: Any) -> list[tuple[Session, Result | RoastError]]:
    """Claim the prepared waits and run their branches, their writes joined in one group (the
    module docstring). A session leaves `ready` once its drive has ended; its lock is let go when
    its writes are committed, and its notify steps run after the whole batch's are."""
    pending: list[tuple[int, _Ready, Any, Any]] = []  # drives ended, writes not yet committed: (entry, session, job, observer)
    settled: list[tuple[int, _Ready, Any, Any]] = []  # committed, lock let go: notify steps still to run

    def committed() -> None:
        store.let_go([ran[1].session.id for ran in pending])
        settled.extend(pending)
        pending.clear()

    try:
        with store.grouped(committed) as group:
            try:
                claimed = store.fire_many([(r.session.id, r.session.wait_seq) for r in ready], source=source, now=now())
            except StoreUnavailable as err:
                return [*done, *((r.session, err) for r in ready)]
            ready.reverse()
            while ready:
                one = ready[-1]
                got = claimed[one.session.id]
                observer, job = None, None
                outcome: Result | RoastError
                if isinstance(got, RoastError):
                    outcome = got
                else:
                    group.join()
                    observer = observer_for(one.session.id)
                    try:
                        outcome, job = _run(store, one, got, observer, now, stop)
                    except StoreUnavailable as err:  # the group's own words when it was rolled back
                        return _lost(group, done, pending, one, group.failed or err)
                    except RoastError as err:
                        outcome = err
                    if group.failed is not None:  # the batch's writes were rolled back
                        return _lost(group, done, pending, one, group.failed)
                ready.pop()
                pending.append((len(done), one, job, observer))
                done.append((one.session, outcome))
                if not group.open:  # nothing of the batch waits for a commit: let go at once
                    committed()
    finally:  # rolled back: let go after the rollback
        store.let_go([ran[1].session.id for ran in pending])
        pending.clear()
    for index, one, job, observer in settled:
        result = done[index][1]
        if isinstance(result, RoastError):
            continue
        job = stop.notify_later(job, observer) if job and getattr(stop, "notify_later", None) else job
        done[index] = (one.session, notify(store, job, result._replace(warnings=one.loaded.warnings), observer, now))
    return done


def _lost(group: Any, done: list[tuple[Session, Result | RoastError]], pending: list[tuple[int, _Ready, Any, Any]],
          one: _Ready, err: StoreUnavailable) -> list[tuple[Session, Result | RoastError]]:
    """A store error stops the batch: what was not yet committed is rolled back, and each session it
    was for is reported with the error (those still waiting fire at the next tick)."""
    if group.open:
        group.rollback(err)
    for index, ran, _job, _observer in pending:
        done[index] = (ran.session, err)
    return [*done, (one.session, err)]


def _prepared(store: SessionStore, session: Session, saved: Continuation | RoastError, env: dict[str, str],
              known: Callable[..., Any]) -> _Ready:
    """The session (locked) loaded, as the listing saw it. Not read again under the lock: the claim
    (`fire_many`) is a compare-and-set on (status 'waiting', wait_seq), and a session waits at one
    wait number during one stretch of time only (each suspend takes a new one; nothing brings a
    session back to a wait it left), and nothing that `prepare` reads changes during that stretch
    (only the notice and reminder counters do). So if the claim succeeds, the session was at that
    very wait from the listing to the claim, and what was loaded is its state; if it does not, the
    claim refuses it and nothing loaded is used. `saved`: its state, read with the batch's."""
    if isinstance(saved, RoastError):
        raise saved
    loaded = prepare(store, session, None, False, known=known, sealed=saved)
    loaded.ctx.attach_env(dict(env))
    return _Ready(session, loaded, cwd_of(session))


def _definitions() -> Callable[..., Any]:
    """`deliver.definition_for`, remembered for one batch by saved definition and workflow: the
    sessions of a batch mostly share one, unpickled and checked against its files once."""
    seen: dict[tuple[str, str, str, str], Any] = {}

    def known(store: SessionStore, session: Session, state: Any, moved: str | None, read: object = None) -> Any:
        if moved is not None or not session.definition:  # roast 0.1 kept it in each state
            return definition_for(store, session, state, moved, read)
        key = (session.definition, session.workflow_path, session.workflow_name, session.fingerprint)
        found = seen.get(key)
        if found is None:
            found = seen[key] = definition_for(store, session, state, moved, read)
        return found

    return known


def _run(store: SessionStore, one: _Ready, claimed: Any, observer: Any, now: Callable[[], float],
         stop: Any) -> tuple[Result, Any]:
    """The branch of a claimed timeout, driven under the session's lock (let go by the caller)."""
    return drive(store, one.session.id, one.loaded.defn, one.loaded.ctx, one.loaded.cursor, event_of(claimed),
                 observer, now, one.cwd, stop)
