"""Claims taken together (issue 25): `api.together`, which `roast serve` uses on SQLite to commit the
deliveries that wait at once in one transaction. Each claim answers for itself, and nothing of a
group is kept unless all of it commits: a rolled-back group runs each claim again alone.
Runs on the store of the leg (SQLite, or PostgreSQL on the PostgreSQL leg)."""
from __future__ import annotations

import functools
from typing import Any

import roast
from roast import api
from roast.errors import NotFound, StoreUnavailable

WAITING = """
name: gate
steps:
  - wait_for_event:
      approved: ["$(echo approved)"]
"""


def _claim(store: Any, session_id: str, **more: Any) -> Any:
    return functools.partial(api.resume, "approved", session_id=session_id, run=False, store=store, **more)


def test_claims_together_each_get_their_own_outcome_and_all_are_kept(wf) -> None:
    path = wf(WAITING)
    a, b = (roast.run(path).session_id for _ in range(2))
    store = api.open_store()

    got = api.together([_claim(store, a, event_id="e-a"), _claim(store, "zzzzzzzzzzzzz"),
                        _claim(store, a, event_id="e-a"), _claim(store, b)], store=store)

    assert [ok for ok, _ in got] == [True, False, True, True], got
    assert (got[0][1].outcome, got[2][1].outcome, got[3][1].outcome) == ("consumed", "duplicate", "consumed")
    assert isinstance(got[1][1], NotFound)
    for sid in (a, b):
        assert api.session(sid).status == "running"  # claimed, its branch not run (run=False)
        assert [e.outcome for e in api.deliveries(sid)] == ["consumed"]


def test_a_group_rolled_back_by_one_claim_runs_every_claim_again_alone(wf) -> None:
    path = wf(WAITING)
    a, b, c = (roast.run(path).session_id for _ in range(3))
    store = api.open_store()

    def breaks() -> None:  # a write that fails after changing a row: the whole group is rolled back
        with store._write(c) as tx:
            tx.run("UPDATE sessions SET updated_at = updated_at WHERE id = ?", (c,))
            raise StoreUnavailable("the disk went away (a test)")

    got = api.together([_claim(store, a), breaks, _claim(store, b)], store=store)

    assert [ok for ok, _ in got] == [True, False, True], got
    assert got[0][1].outcome == got[2][1].outcome == "consumed"
    assert isinstance(got[1][1], StoreUnavailable)
    for sid in (a, b):  # claimed in the group, rolled back with it, then claimed alone: kept once
        assert api.session(sid).status == "running"
        assert [e.outcome for e in api.deliveries(sid)] == ["consumed"]
    assert api.session(c).status == "waiting" and api.deliveries(c) == []
