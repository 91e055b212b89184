"""Overdue waits fired a batch at a time (`roast tick` and the resident worker's pass, issue 25).

The claim of a timeout was one fsync'd transaction per session; here a batch shares one. Each
session of a batch is first locked (`Held`), read again and prepared — its state loaded and its
workflow's edits checked, everything that can refuse, so a refusal still changes nothing — then
every prepared wait is claimed in ONE transaction (`store.fire_many`: per session the same
compare-and-set as `store.fire`, so a timeout and an event racing at the deadline still resolve
to exactly one branch), then each branch runs, still under its session's lock, the lock is let
go and the notify steps run. A crash after the claim leaves each session `running` with its
timeout as its `pending_event`: recovered as any claimed session is (issue 10).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from roast.deliver import Held, cwd_of, not_waiting, prepare
from roast.drive import drive, event_of, notify
from roast.errors import RoastError, StoreUnavailable

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    from roast.deliver import Loaded
    from roast.store import Session, SessionStore
    from roast.views import Result

BATCH = 100  # sessions locked, claimed in one transaction and run per batch (each lock is an open file)


class _Ready:
    """A session of the batch, locked and loaded: what its claim and its branch need."""

    __slots__ = ("seen", "fresh", "loaded", "cwd", "held")

    def __init__(self, seen: Session, fresh: Session, loaded: Loaded, cwd: str | None, held: Held) -> None:
        self.seen, self.fresh, self.loaded, self.cwd, self.held = seen, fresh, loaded, cwd, held


def fire_batch(store: SessionStore, sessions: Sequence[Session], source: str, *,
               observer_for: Callable[[str], Any], now: Callable[[], float],
               stop: Any = None) -> list[tuple[Session, Result | RoastError]]:
    """Fire the overdue waits of `sessions` (at most BATCH): each one's result, or the error that
    kept it from firing or running. A StoreUnavailable stops the batch there: it is the last
    entry, and the sessions claimed and not yet run stay claimed (recovered as orphans are)."""
    done: list[tuple[Session, Result | RoastError]] = []
    ready: list[_Ready] = []
    try:
        for session in sessions:
            try:
                ready.append(_prepared(store, session, source))
            except StoreUnavailable as err:
                return [*done, (session, err)]
            except RoastError as err:
                done.append((session, err))
        if not ready:
            return done
        try:
            claimed = store.fire_many([(r.fresh.id, r.fresh.wait_seq) for r in ready], source=source, now=now())
        except StoreUnavailable as err:
            return [*done, *((r.seen, err) for r in ready)]
        ready.reverse()
        while ready:
            one = ready.pop()  # from here on its lock is let go by _run (or right here)
            got = claimed[one.fresh.id]
            if isinstance(got, RoastError):
                one.held.__exit__(None, None, None)
                done.append((one.seen, got))
                continue
            observer = observer_for(one.fresh.id)
            try:
                result, job = _run(store, one, got, observer, now, stop)
            except StoreUnavailable as err:
                return [*done, (one.seen, err)]
            except RoastError as err:
                done.append((one.seen, err))
                continue
            job = stop.notify_later(job, observer) if job and getattr(stop, "notify_later", None) else job
            done.append((one.seen, notify(store, job, result._replace(warnings=one.loaded.warnings), observer, now)))
        return done
    finally:
        for one in ready:  # claimed and not run (a stop, a store error): recovered as orphans are
            one.held.__exit__(None, None, None)


def _prepared(store: SessionStore, session: Session, source: str) -> _Ready:
    """The session locked, read again under the lock and loaded: still at the wait the listing saw."""
    cwd = cwd_of(session)
    held = Held(store, session.id, f"roast {source}", 0.0)
    held.__enter__()
    try:
        fresh = store.get(session.id)
        if fresh.status != "waiting" or fresh.wait_seq != session.wait_seq:
            raise not_waiting(fresh)
        return _Ready(session, fresh, prepare(store, fresh, None, False), cwd, held)
    except BaseException:
        held.__exit__(None, None, None)
        raise


def _run(store: SessionStore, one: _Ready, claimed: Any, observer: Any, now: Callable[[], float],
         stop: Any) -> tuple[Result, Any]:
    """The branch of a claimed timeout, driven under the session's lock, which is let go after."""
    try:
        one.loaded.ctx.attach_env(dict(os.environ))
        return drive(store, one.fresh.id, one.loaded.defn, one.loaded.ctx, one.loaded.cursor, event_of(claimed),
                     observer, now, one.cwd, stop)
    finally:
        one.held.__exit__(None, None, None)
