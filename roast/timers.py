"""The reminder and escalation schedule of a waiting session (issue 23): one clock over the gate
policies of the waits it rests on, as the store keeps it (`opened_at`, `reminded`, `escalated`,
`timer_at`) and the worker fires it.

Pure: no I/O, no clock (`now` is passed in), no store. Reads the waits as saved
(`awaiting[i]["policy"]`, `policy.to_doc`), so the store computes the first `timer_at` at suspend
without loading the workflow, and the worker the same schedule from the same rows:
- A session rests on one wait, or on several inside a `parallel:` group. Their `remind:` intervals
  make one reminder clock, the shortest: reminder k (1, 2, …) is due at opened_at + k × interval and
  re-runs the `notify:` of every wait with `remind:`, with `wait.reminder` = k.
- Their `escalate:` entries make one list, sorted by `after` (then wait, then position): the store's
  `escalated` counts how many of it have fired; each fires once, with `wait.escalation` = its
  position in its own wait's list.
"""
from __future__ import annotations

from roast.policy import Escalation, Policy, due_escalations, due_reminder, from_doc, next_timer
from roast.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any


class Schedule(Record):
    """The timers of a waiting session: `policy` (the one clock: `remind`, `escalate`), `reminders`
    (the paths of the waits each reminder notifies) and `escalations` ((path, index in that wait's
    list) for each entry of `policy.escalate`, in the same order)."""
    __slots__ = ("policy", "reminders", "escalations")


class Due(Record):
    """What to fire now: `reminder` (its index k, or None), `escalations` ((path, index) each), and
    the counters and next wake-up to claim with them (`reminded`, `escalated`, `next_at`)."""
    __slots__ = ("reminder", "escalations", "reminded", "escalated", "next_at")

    def __bool__(self) -> bool:
        return self.reminder is not None or bool(self.escalations)


def schedule(awaiting: Sequence[Mapping[str, Any]]) -> Schedule | None:
    """The schedule of the waits in `awaiting` (a session's saved entries, one per event), or None
    when none has `remind:` or `escalate:`."""
    policies: dict[str, Policy] = {}
    for entry in awaiting:
        path = entry.get("path")
        if path is not None and path not in policies and (found := from_doc(entry.get("policy"))) is not None:
            if found.remind is not None or found.escalate:
                policies[str(path)] = found
    if not policies:
        return None
    reminds = [p.remind for p in policies.values() if p.remind is not None]
    steps = sorted((e.after, path, i) for path, p in policies.items() for i, e in enumerate(p.escalate))
    clock = Policy(remind=min(reminds) if reminds else None,
                   escalate=tuple(Escalation(after) for after, _, _ in steps))
    return Schedule(clock, tuple(path for path, p in policies.items() if p.remind is not None),
                    tuple((path, i) for _, path, i in steps))


def first_timer(awaiting: Sequence[Mapping[str, Any]], opened_at: float) -> float | None:
    """When the first reminder or escalation of a wait opened at `opened_at` is due (None: never)."""
    found = schedule(awaiting)
    return None if found is None else next_timer(found.policy, opened_at=opened_at, sent=0, fired=0)


def due(found: Schedule, *, opened_at: float, now: float, reminded: int, escalated: int) -> Due:
    """What is due at `now`, given the counters: after an absence only the latest reminder (never a
    burst), and every escalation whose time has come, each once."""
    reminder = due_reminder(found.policy, opened_at=opened_at, now=now, sent=reminded)
    fired = due_escalations(found.policy, opened_at=opened_at, now=now, fired=escalated)
    sent = reminder if reminder is not None else reminded
    done = fired[-1] + 1 if fired else escalated
    return Due(reminder, tuple(found.escalations[i] for i in fired), sent, done,
               next_timer(found.policy, opened_at=opened_at, sent=sent, fired=done))
