"""Stopping a session from outside (issue 20): `cancel` ends a session that has not finished —
waiting, interrupted, orphaned, or running — and stops the process groups of the steps it had
in flight (SIGTERM, then SIGKILL after a grace). The process running it is never signalled: its
next write finds the session `cancelled` (a compare-and-set on the status), and it stops there.

How a session is stopped from inside (a signal to the CLI, `roast serve` shutting down) is
`drive` and `worker`; this module only acts on the store's records and the step processes.
"""
from __future__ import annotations

import os
import signal
import time

from roast.store import HOST

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from roast.store import Session, SessionStore

GRACE = 5.0  # seconds a cancelled step's processes have to end after SIGTERM, before SIGKILL


def cancel(store: SessionStore, session_id: str, *, reason: str | None, actor: str, grace: float = GRACE,
           now: float | None = None) -> Session:
    """Cancel the session (recording `actor` and `reason`), then stop its steps' process groups."""
    session = store.cancel(store.get(session_id).id, reason=reason, actor=actor,
                           now=time.time() if now is None else now)
    stop_groups(cancelled_groups(store, session.id), grace)
    return session


def cancelled_groups(store: SessionStore, session_id: str) -> list[int]:
    """The process groups, on this host, of the steps the cancel found in flight."""
    return [int(h.pgid) for h in store.history(session_id)
            if h.status == "cancelled" and h.pgid and h.host in (None, HOST)]


def stop_groups(groups: list[int], grace: float) -> None:
    """SIGTERM to each group that still runs; SIGKILL to those still running after `grace` seconds."""

    alive = [g for g in groups if group_alive(g)]
    for group in alive:
        _signal(group, signal.SIGTERM)
    until = time.monotonic() + grace
    while alive and time.monotonic() < until:
        time.sleep(0.05)
        alive = [g for g in alive if group_alive(g)]
    for group in alive:
        _signal(group, signal.SIGKILL)


def _signal(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass  # gone already, or not ours to stop: the owner stops at its next write all the same


def group_alive(pgid: int) -> bool:
    """True if a process group with this id still has a member that runs (a step left running by a
    dead roast). Zombies do not count (issue 20): `killpg(pgid, 0)` succeeds for a group of zombies,
    and where PID 1 reaps orphans slowly, or never (a container without an init), recovery would be
    refused for seconds or forever though nothing runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    states = _group_states(pgid)
    return True if states is None else any(state != b"Z" for state in states)


def _group_states(pgid: int) -> list[bytes] | None:
    """The states (`R`, `S`, `Z`, …) of the processes in a group, from /proc; None without /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    states = []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue  # exited meanwhile
        fields = data[data.rfind(b")") + 2:].split()  # after the command name, which may hold spaces
        if len(fields) > 2 and fields[2] == str(pgid).encode():
            states.append(fields[0])
    return states
