"""Claims taken together (issue 25): `api.together`, which `roast serve` uses on SQLite to commit the
deliveries that wait at once in one transaction. Each claim answers for itself, and nothing of a
group is kept unless all of it commits: a rolled-back group runs each claim again alone.
Runs on the store of the leg (SQLite, or PostgreSQL on the PostgreSQL leg)."""
from __future__ import annotations

import functools
from typing import Any

import roast
from roast import api
from roast.errors import NotFound, RoastError, StoreUnavailable

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


def test_a_group_whose_transaction_failed_where_no_claim_saw_it_is_claimed_again_alone(wf) -> None:
    """On PostgreSQL a statement that fails inside a group's transaction, where no write of the group
    sees it (a read, caught by its caller), makes the group's COMMIT a ROLLBACK. Its claims must not
    be answered as made: the group fails, and each claim runs again alone (on SQLite the statement
    does not fail, and the group is kept)."""
    path = wf(WAITING)
    a, b = (roast.run(path).session_id for _ in range(2))
    store = api.open_store()
    failed: list[str] = []

    def fails_unseen() -> None:  # once: a read of the group's transaction fails, and is caught here
        if failed:
            return
        try:
            with store._read() as tx:
                tx.row("SELECT CAST('x' AS integer) AS n")
            failed.append("no")  # SQLite casts it to 0
        except RoastError:  # PostgreSQL refuses it, as the store words it
            failed.append("yes")

    got = api.together([_claim(store, a), fails_unseen, _claim(store, b)], store=store)

    assert failed == ["yes" if getattr(store, "shared", False) else "no"], failed
    assert got[0][1].outcome == got[2][1].outcome == "consumed", got
    for sid in (a, b):  # answered consumed: claimed, once
        assert api.session(sid).status == "running"
        assert [e.outcome for e in api.deliveries(sid)] == ["consumed"]


def test_on_postgresql_a_hold_refused_after_taking_its_lock_lets_the_lock_go(wf, pg_url, monkeypatch) -> None:
    """A hold takes the session's lock and writes its holders row in one statement. When the row
    waits too long for another transaction's (a write group's, say) and the statement fails, the
    lock it took is let go: at once outside a transaction, when the group ends inside one (a
    session lock outlives a rollback; kept, the session would look held until the connection ends)."""
    import psycopg
    import pytest
    from conftest import TEST_KEY

    from roast.store_postgres import lock_key

    monkeypatch.setenv("ROAST_STORE", pg_url)
    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    monkeypatch.setenv("ROAST_BUSY_TIMEOUT", "0.3")
    path = wf(WAITING)
    a, b = (roast.run(path).session_id for _ in range(2))
    store = api.open_store()
    with psycopg.connect(pg_url, autocommit=True) as other:
        def locked() -> int:
            return other.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                                 "((classid::int8 << 32) | objid::int8) = %s", (lock_key(a),)).fetchone()[0]

        other.execute("BEGIN")  # an uncommitted holders row for `a`: a hold's row waits for it
        other.execute("INSERT INTO holders (session_id, lock_key, holder, backend_pid, host, pid, since) "
                      "VALUES (%s, 0, 'a test', 0, 'here', 0, 0)", (a,))
        with pytest.raises(RoastError):
            store.hold(a, "roast test").__enter__()
        assert locked() == 0
        with pytest.raises(StoreUnavailable, match="rolled the transaction back"):
            with store.grouped():
                api.cancel(b, store=store)  # the group's transaction is open
                with pytest.raises(RoastError):
                    store.hold(a, "roast test").__enter__()
                assert locked() == 1  # taken in the group's transaction: let go when it ends
        assert locked() == 0
        other.execute("ROLLBACK")
    assert api.session(a).status == api.session(b).status == "waiting"  # nothing of the group was kept
    assert api.resume("approved", session_id=a, run=False, store=store).outcome == "consumed"


def test_on_postgresql_a_group_lets_go_of_its_sessions_once_its_claims_are_committed(wf, pg_url, monkeypatch) -> None:
    """Issue 25: the sessions a group claims stay locked until its commit has made their claims
    durable, then are let go of together (one round trip a group, not one a claim). A hold of a
    session the group claimed ends the group first (the lock would otherwise be this thread's twice)."""
    import psycopg
    from conftest import TEST_KEY

    from roast.store_postgres import lock_key

    monkeypatch.setenv("ROAST_STORE", pg_url)
    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    path = wf(WAITING)
    a, b, c = (roast.run(path).session_id for _ in range(3))
    store = api.open_store()
    with psycopg.connect(pg_url, autocommit=True) as other:
        def locked(*sids: str) -> int:
            return other.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                                 "((classid::int8 << 32) | objid::int8) = ANY(%s)",
                                 ([lock_key(s) for s in sids],)).fetchone()[0]

        seen: list[int] = []
        with store.grouped():
            for sid in (a, b):
                assert _claim(store, sid, event_id=f"e-{sid}")().outcome == "consumed"
            seen.append(locked(a, b))  # claimed, not yet committed: still held
            seen.append(other.execute("SELECT count(*) FROM sessions WHERE id = ANY(%s) AND status = 'running'",
                                      ([a, b],)).fetchone()[0])
            again = _claim(store, a, event_id=f"e-{a}")()  # running now: answered without a hold
            with store.hold(a, "roast test"):  # the group commits and lets go of both, then a is taken
                seen.append(locked(a, b))
                seen.append(other.execute("SELECT count(*) FROM sessions WHERE id = ANY(%s) AND status = 'running'",
                                          ([a, b],)).fetchone()[0])
        assert seen == [2, 0, 1, 2], seen
        assert again.outcome == "duplicate"
        assert locked(a, b, c) == 0
        assert other.execute("SELECT count(*) FROM holders").fetchone()[0] == 0
    for sid in (a, b):
        assert api.session(sid).status == "running" and [e.outcome for e in api.deliveries(sid)] == ["consumed"]
    assert api.session(c).status == "waiting"


HOLDER = r"""
import os, sys, time
from roast import api
store = api.open_store()
held, cancel, marks = sys.argv[1], sys.argv[2], sys.argv[3]
with store.hold(held, "roast test"):
    open(os.path.join(marks, "holding"), "w").close()
    while not os.path.exists(os.path.join(marks, "go")):
        time.sleep(0.005)
    open(os.path.join(marks, "trying"), "w").close()
    api.cancel(cancel, store=store)  # a write: it needs the store's write lock
print("cancelled")
"""


def test_a_claim_that_waits_for_a_session_lock_does_not_keep_the_others_write_lock(wf, tmp_path) -> None:
    """Another process holds session S's lock and waits to write; a batch that holds the write lock
    while its claim of S waits for S's lock would wait for each other. The batch commits what it has
    before any claim waits for a lock, so the other process writes, lets go, and S is claimed."""
    import os
    import subprocess
    import sys
    import time

    from conftest import ROOT, store_env

    path = wf(WAITING)
    a, s, b, c = (roast.run(path).session_id for _ in range(4))
    store = api.open_store()
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, **store_env(tmp_path / "roast-home"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, s, c, str(marks)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (marks / "holding").exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()
            time.sleep(0.005)

        def go() -> None:  # inside the batch, after the claim of `a` took the write lock
            (marks / "go").touch()
            while not (marks / "trying").exists():
                time.sleep(0.005)
            time.sleep(0.2)  # the holder is now waiting for the write lock

        got = api.together([_claim(store, a), go, _claim(store, s), _claim(store, b)], store=store)
        out, err = holder.communicate(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0 and "cancelled" in out, err
    assert [ok for ok, _ in got] == [True, True, True, True], got
    assert [got[i][1].outcome for i in (0, 2, 3)] == ["consumed"] * 3
    assert api.session(c).status == "cancelled"
