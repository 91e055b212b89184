"""Claims taken together: deliveries that arrive at once share one write transaction (issue 25).

`roast serve` on SQLite claims on one thread (the store has one writer). What costs most in a claim
there is not its statements but its own commit: an fsync, and a wake-up of the thread that waits for
it. So the claims that wait together run in one write group (`roast.sql_group`) and commit once,
each still deciding its own outcome with the same checks, locks and compare-and-set as alone.

Nothing of a group is kept unless all of it commits: when the group is rolled back (a store error,
an error after a write) or its commit fails, each claim runs again alone, in its own transaction,
and answers for itself. A caller answers no claim before `together` returns, so no delivery is
reported before the commit that makes it durable.

Only claims belong here: calls that write and run no step (`resume(..., run=False)`), since a
group's transaction stays open from the first of them to the last.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    from roast.store import SessionStore

Outcome = tuple[bool, "Any"]  # (True, the call's value) or (False, the exception it raised)


def _outcome(call: Callable[[], Any]) -> Outcome:
    try:
        return True, call()
    except Exception as err:  # a refusal is that claim's answer, not the batch's
        return False, err


def together(store: SessionStore, calls: Sequence[Callable[[], Any]]) -> list[Outcome]:
    """Each of `calls` (claims), in order, in one write transaction: its value or its exception.
    One call, or a group that could not be kept, runs each alone."""
    if len(calls) > 1:
        got: list[Outcome] = []
        try:
            with store.grouped() as group:
                for call in calls:
                    got.append(_outcome(call))
                    if group.failed is not None:
                        break  # rolled back: every later write of the group would be refused
            if group.failed is None:
                return got
        except Exception:  # noqa: S110 - the commit failed: nothing of the group was kept
            pass
    return [_outcome(call) for call in calls]
