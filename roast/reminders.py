"""Fires the reminders and escalations of open gates (issue 23): `remind:` runs a wait's `notify:`
again every interval with `{{ wait.reminder }}` = 1, 2, …; each `escalate:` entry runs its own
`notify:` (else the wait's) once, with `{{ wait.escalation }}` = its position. Called by the worker's
pass (`roast tick`, `roast serve`) and by `--wait` (`Worker.listen`), for its own session.

At most once each, across crashes and racing workers: the due timers come from the store's indexed
`timers_due`, the schedule is `roast.timers` (pure), and the store's compare-and-set `claim_timer`
records them as sent BEFORE their steps run; a worker that dies after its claim never sends them
again, and of two racing workers exactly one wins. A wait consumed meanwhile (`timer_at` cleared,
the wait number moved on) is never reminded. A failing step is a warning, never a session outcome.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from roast.errors import RoastError, StoreUnavailable

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    from roast.runner import Observer
    from roast.store import Session, SessionStore, WaitTimer

BATCH = 100  # timers read per query; the next batch is read once this one is fired


def fire_timers(store: SessionStore, observer: Observer, now: Callable[[], float],
                session_id: str | None = None) -> list[dict[str, Any]]:
    """Fire every due reminder and escalation (only `session_id`'s, when given): one dict per
    session fired, `{session_id, reminder, escalations, warnings}`. A store error stops the pass."""
    fired: list[dict[str, Any]] = []
    seen: set[str] = set()
    while True:
        batch = [t for t in store.timers_due(now=now(), limit=BATCH, session_id=session_id) if t.session_id not in seen]
        if not batch:
            return fired
        for timer in batch:
            seen.add(timer.session_id)
            try:
                entry = _fire(store, timer, observer, now)
            except StoreUnavailable:
                raise
            except RoastError as err:  # the session went away or cannot be read: said, never retried in a loop
                entry = {"session_id": timer.session_id, "error": str(err), "code": err.code}
            if entry is not None:
                fired.append(entry)


def _fire(store: SessionStore, timer: WaitTimer, observer: Observer, now: Callable[[], float]) -> dict[str, Any] | None:
    from roast import timers

    session = store.get(timer.session_id)
    if (session.status, session.wait_seq) != ("waiting", timer.wait_seq):
        return None  # consumed between the query and now: its timers ended with it
    plan = timers.schedule(session.awaiting)
    if plan is None or timer.opened_at is None:
        store.claim_timer(session.id, wait_seq=timer.wait_seq, reminded_was=timer.reminded,
                          escalated_was=timer.escalated, reminded=timer.reminded, escalated=timer.escalated,
                          next_at=None)  # nothing to fire (a wait saved without a schedule): stop looking
        return None
    due = timers.due(plan, opened_at=timer.opened_at, now=now(), reminded=timer.reminded, escalated=timer.escalated)
    if not due:
        return None  # not quite yet (the next pass fires it)
    failure: RoastError | None = None
    try:
        jobs = _jobs(store, session, plan, due)
    except RoastError as err:  # its state or workflow cannot be read: claimed all the same, so it is said
        jobs, failure = [], err  # once, not at every pass
    # the claim comes BEFORE the steps run: at most once, whoever crashes or races
    if not store.claim_timer(session.id, wait_seq=timer.wait_seq, reminded_was=timer.reminded,
                             escalated_was=timer.escalated, reminded=due.reminded, escalated=due.escalated,
                             next_at=due.next_at):
        return None  # another worker claimed it
    if failure is not None:
        raise failure  # for the worker to say
    from roast.drive import run_notices

    warnings: list[str] = []
    for job, extra in jobs:
        current = store.get(session.id)
        if (current.status, current.wait_seq) != ("waiting", timer.wait_seq):
            break  # the gate closed: what was not sent yet is not sent
        warnings += run_notices(store, job, observer, now, extra)
    return {"session_id": session.id, "reminder": due.reminder,
            "escalations": [index for _, index in due.escalations], "warnings": warnings}


def _jobs(store: SessionStore, session: Session, plan: Any, due: Any) -> list[tuple[Any, dict[str, Any]]]:
    """The notify jobs of what is due, each with what it adds to `{{ wait }}`: the reminder (every wait
    with `remind:`), then each escalation (its own steps, else its wait's)."""
    from roast.drive import NotifyJob

    ctx, defn, nodes, cwd = notices_of(store, session)

    def job(waits: list[Any]) -> Any:
        return NotifyJob(session.id, [w for w in waits if w is not None], ctx, defn, cwd, session.wait_seq)

    jobs: list[tuple[Any, dict[str, Any]]] = []
    if due.reminder is not None:
        jobs.append((job([wait_info(session, nodes, path) for path in plan.reminders]), {"reminder": due.reminder}))
    for path, index in due.escalations:
        node = _node_at(nodes, path)
        escalations = node.policy.escalate if node is not None and node.policy is not None else ()
        steps = escalations[index].notify if index < len(escalations) else None
        jobs.append((job([wait_info(session, nodes, path, steps)]), {"reminder": due.reminded, "escalation": index}))
    return [(j, extra) for j, extra in jobs if j.waits]


def notices_of(store: SessionStore, session: Session) -> tuple[Any, Any, list[Any], str | None]:
    """A waiting session loaded to run its notify steps (a reminder, an escalation, a notice a crash
    left unrun): its context with the environment, its definition, the wait nodes it rests on, and
    where its steps run (None when that directory is gone). Raises what keeps it from loading."""
    from roast import tree
    from roast.deliver import cwd_of, definition_for, load_state

    state = load_state(store, session)
    defn, _ = definition_for(store, session, state)
    try:
        cwd = cwd_of(session)
    except RoastError:
        cwd = None
    state["context"].attach_env(dict(os.environ))
    return state["context"], defn, tree.wait_at(defn.root, state["cursor"]), cwd


def wait_info(session: Session, nodes: list[Any], path: str, steps: Any = None) -> Any:
    """The `WaitInfo` a notice runs for the wait saved at `path` (its node's `notify:`, or `steps`),
    with the deadline the session saved for it; None when that wait has no steps to run."""
    from roast.requests import WaitInfo

    node = _node_at(nodes, path)
    if node is None or (steps or node.notify) is None:
        return None
    deadline = next((a.get("deadline") for a in session.awaiting if a.get("path") == path), None)
    return WaitInfo(path, node.name or "wait_for_event", node.events, deadline, node.schemas,
                    steps or node.notify, policy=node.policy)


def _node_at(nodes: list[Any], path: str) -> Any:
    """The wait node of a saved path: the node's, with the iteration of each enclosing loop (`steps[1]#2`)."""
    return next((n for n in nodes if path == n.path or path.startswith(n.path + "#")), None)
