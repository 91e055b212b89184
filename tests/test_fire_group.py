"""Issue 25: `roast tick` writes a batch's claims and the ends of its branches in ONE transaction (a
write group, roast/sql_group.py), committed before any step runs — so firing N overdue waits whose
branches run no step costs one commit, not N + 1 — and a crash anywhere in it loses nothing and
fires nothing twice: what was not committed is rolled back whole (those sessions are still waiting
and overdue), and the next tick fires them. Both stores, through real `roast tick` processes."""
from __future__ import annotations

import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY
from test_scale_queries import store  # noqa: F401  (the fixture: SQLite and PostgreSQL)
from test_store import T0, is_pg

import roast
from roast import api

ROOT = Path(__file__).resolve().parent.parent

ENDS = ("name: ends\nsteps:\n  - first:\n      wait_for_event:\n        go:\n          - echo yes\n"
        "        within: 60s\n")  # no timeout branch: the tick ends it timed_out
AGAIN = ("name: again\nsteps:\n  - first:\n      wait_for_event:\n        go:\n          - echo yes\n"
         "        timeout:\n          - second:\n              wait_for_event:\n                go:\n"
         "                  - echo again\n        within: 60s\n")  # the branch waits again, running no step
STEP = ("name: step\nsteps:\n  - first:\n      wait_for_event:\n        go:\n          - echo yes\n"
        "        timeout:\n          - ran: $(echo ran >> {log} && echo ran)\n        within: 60s\n")


def workflows(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name, text in (("ends", ENDS), ("again", AGAIN), ("step", STEP)):
        path = tmp_path / name / "workflow.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text.format(log=tmp_path / "ran.log"))
        made[name] = path
    return made


def tick(store: Any, fault: int = 0, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    """`roast tick` in a process of its own (killed at its `fault`-th write point, if given); `args`:
    another roast command instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("ROAST_FAULT_AT", "ROAST_STORE", "ROAST_KEY")}
    env["ROAST_BUSY_TIMEOUT"] = "0.5"
    env["PYTHONPATH"] = str(ROOT)
    if is_pg(store):
        env.update(ROAST_STORE=store.url, ROAST_KEY=TEST_KEY)
    else:
        env["ROAST_HOME"] = str(store.home)
    if fault:
        env["ROAST_FAULT_AT"] = str(fault)
    return subprocess.run([sys.executable, "-m", "roast", *(args or ("tick", "--json"))], capture_output=True, text=True,
                          env=env, cwd=ROOT,
                          check=False, timeout=120)


def wal_commits(db_path: str) -> int:
    """Transactions committed into the WAL since it was last reset: its frames that end one (a
    nonzero "database size after commit") and carry the WAL header's salts (sqlite.org/fileformat)."""
    data = Path(db_path + "-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits, at = 0, 32
    while at + 24 + page_size <= len(data):
        if data[at + 8:at + 16] != salts:
            break
        commits += struct.unpack(">I", data[at + 4:at + 8])[0] != 0
        at += 24 + page_size
    return commits


def next_xid(store: Any) -> int:  # noqa: F811
    """PostgreSQL's next transaction id: each transaction that writes takes one (reading takes none)."""
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as db:
        row = db.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())").fetchone()
    assert row is not None
    return int(row[0])


def test_one_tick_commits_its_batch_of_timeouts_once_not_once_per_session(store: Any, tmp_path: Path) -> None:  # noqa: F811
    wf = workflows(tmp_path)
    ids = [roast.run(wf[name], store=store, now=lambda: T0).session_id for name in ("ends", "again") * 3]
    if is_pg(store):
        before = next_xid(store)
        ran = tick(store)
        written = next_xid(store) - before
        # each session's lock names its holder in a row (written as it is taken, deleted as it is let go):
        # two small transactions per session that are not the session's; the claims and the ends are one
        # (and one more per tick): 14 here, where each session's end was a transaction of its own (21)
        assert written <= 2 * len(ids) + 2, written
    else:
        with sqlite3.connect(store.db_path) as db:  # open, so the tick's exit does not checkpoint the WAL
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            ran = tick(store)
            written = wal_commits(store.db_path)
        assert written == 1, written  # was 8 (the claims, then one per session, and one more)
    assert ran.returncode == 0, ran.stderr
    for sid in ids:
        assert [e.name for e in store.events(sid)] == ["timeout"]
    statuses = Counter(roast.session(sid, store=store).status for sid in ids)
    assert statuses == {"timed_out": 3, "waiting": 3}, statuses


def _state(store: Any, ids: dict[str, str]) -> dict[str, tuple[str, int]]:  # noqa: F811
    return {name: (roast.session(sid, store=store).status, len(store.events(sid))) for name, sid in ids.items()}


def _recover(store: Any, ids: dict[str, str]) -> None:  # noqa: F811
    """What a kill left: the next tick fires what is still overdue; an orphan is continued."""
    again = tick(store)
    assert again.returncode == 0, again.stderr
    for sid in ids.values():
        info = roast.session(sid, store=store)
        if info.status == "running":
            assert info.orphaned, info
            roast.resume(session_id=sid, store=store, wait_for_steps=True)


def test_a_tick_killed_at_any_write_point_fires_every_session_exactly_once(store: Any, tmp_path: Path) -> None:  # noqa: F811
    wf = workflows(tmp_path)
    log = tmp_path / "ran.log"
    rolled_back_whole = []
    for n in range(1, 60):
        ids = {name: roast.run(wf[name], store=store, now=lambda: T0).session_id for name in wf}
        ran_before = log.read_text().count("ran") if log.exists() else 0
        proc = tick(store, fault=n)
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, proc.stderr
            break
        left = _state(store, ids)
        if n > 1 and all(v == ("waiting", 0) for v in left.values()):
            rolled_back_whole.append(n)  # killed after the batch's claims were written: none of them stayed
        _recover(store, ids)
        after = _state(store, ids)
        assert after == {"ends": ("timed_out", 1), "again": ("waiting", 1), "step": ("completed", 1)}, (n, left, after)
        for sid in ids.values():
            assert [e.name for e in store.events(sid)] == ["timeout"], n
        attempts = max(s.attempt for s in api.history(ids["step"], store=store) if s.name == "ran")
        ran = log.read_text().count("ran") - ran_before
        assert 1 <= ran <= attempts, (n, ran, attempts)  # no silent re-run of the branch's step
    else:
        raise AssertionError("the tick never got through")
    assert n >= 6, n
    # point 1 is before the batch's BEGIN; 2 is the first joined write after the claims, and at least
    # one more (the next joined write, or the COMMIT) comes before the commit: a kill at any of them
    # undid the claims with the rest (each end its own commit: only the claims' COMMIT did, [2])
    assert len(rolled_back_whole) >= 2 and rolled_back_whole[0] == 2, rolled_back_whole


def test_a_tick_on_postgresql_waits_for_the_disk_once_for_a_batch(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With fsync and synchronous_commit on (a server of its own): the WAL is flushed for the batch's
    commit, not for each session's end nor for the rows that name each lock's holder (they were 3 per
    session: the holder's row written, the end, the row deleted)."""
    import _pg
    import psycopg

    from roast.store_postgres import PostgresStore

    try:
        cluster = _pg.start(settings={"fsync": "on", "synchronous_commit": "on"})
        _pg.wait_ready(cluster.admin_url)
    except (_pg.Unavailable, OSError, subprocess.SubprocessError) as err:
        pytest.skip(str(err))
    try:
        monkeypatch.setenv("ROAST_KEY", TEST_KEY)
        store = PostgresStore(cluster.admin_url)
        wf = workflows(tmp_path)
        ids = [roast.run(wf["ends"], store=store, now=lambda: T0).session_id for _ in range(10)]
        store.close()

        def syncs() -> int:
            with psycopg.connect(cluster.admin_url, autocommit=True) as db:
                for _ in range(500):  # the tick's backend reports its WAL figures as it exits
                    if not db.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'roast%'").fetchall():
                        break
                    time.sleep(0.01)
                row = db.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
            assert row is not None
            return int(row[0])

        before = syncs()
        ran = tick(store)
        flushed = syncs() - before
        assert ran.returncode == 0, ran.stderr
        assert all(roast.session(sid, store=store).status == "timed_out" for sid in ids)
        assert flushed < len(ids), flushed  # 3 here; 32 when each end and each holder row was flushed
    finally:
        cluster.stop()


def test_a_store_error_inside_a_batch_rolls_its_claims_back_and_the_next_tick_fires_them(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The store fails as the second session's end is written (at the batch's commit: the disk is
    full): the tick stops with the store error (exit 4), nothing of the batch was kept — every session
    still waits, overdue, with no timeout recorded and nothing turned into an outcome — and the next
    tick fires each one once."""
    from roast.errors import StoreUnavailable
    from roast.sql_reads import Tx

    wf = workflows(tmp_path)
    ids = [roast.run(wf["ends"], store=store, now=lambda: T0).session_id for _ in range(3)]
    if is_pg(store):
        from roast.pg_tx import PgTx as Tx  # noqa: N814  (its own batch: a pipeline)
    real_batch, ends = Tx.batch, []

    def full_disk(self: Tx, statements: Any) -> Any:  # the ends of the sessions' runs: batched at the commit
        if any(sql.startswith("UPDATE events SET outcome = 'unconsumed'") and params[0] == ids[1]
               for sql, params in statements):
            ends.append(statements)
            if len(ends) == 1:
                if is_pg(store):
                    import psycopg

                    raise psycopg.errors.DiskFull("could not extend file: No space left on device")
                raise sqlite3.OperationalError("database or disk is full")
        return real_batch(self, statements)

    monkeypatch.setattr(Tx, "batch", full_disk)
    with pytest.raises(StoreUnavailable, match="disk full"):
        roast.tick(store=store)
    monkeypatch.setattr(Tx, "batch", real_batch)
    for sid in ids:
        info = roast.session(sid, store=store)
        assert (info.status, store.events(sid)) == ("waiting", []), info
    fired = roast.tick(store=store)
    assert sorted(f["session_id"] for f in fired if f["fired"]) == sorted(ids)
    for sid in ids:
        assert roast.session(sid, store=store).status == "timed_out"
        assert [e.name for e in store.events(sid)] == ["timeout"]


def test_a_cancel_while_a_batch_is_open_waits_for_its_commit_and_never_slips_between_claim_and_end(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """`roast cancel` takes no session lock: while a tick's batch holds its claims and the first end
    uncommitted, a cancel of that session waits for the store (the SQLite write lock, the PostgreSQL
    row lock) and, given up after ROAST_BUSY_TIMEOUT, changed nothing (exit 4); once the batch is
    committed, the session has timed out and a cancel is refused (exit 3)."""
    from roast import firing

    wf = workflows(tmp_path)
    ids = sorted(roast.run(wf["ends"], store=store, now=lambda: T0).session_id for _ in range(2))
    real_run, tried = firing._run, []

    def run_then_cancel_the_first(*args: Any, **kwargs: Any) -> Any:
        if args[1].session.id == ids[1]:  # the first session's end is written (deferred), not committed
            tried.append(tick(store, 0, "cancel", ids[0], "--reason", "meanwhile"))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(firing, "_run", run_then_cancel_the_first)
    fired = roast.tick(store=store)
    assert sorted(f["session_id"] for f in fired if f["fired"]) == ids
    [meanwhile] = tried
    assert meanwhile.returncode == 4 and "busy" in meanwhile.stderr and "nothing changed" in meanwhile.stderr, \
        meanwhile.stderr
    assert [roast.session(sid, store=store).status for sid in ids] == ["timed_out", "timed_out"]
    after = tick(store, 0, "cancel", ids[0])
    assert after.returncode == 3 and "timed out" in after.stderr, after.stderr


def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The round trips psycopg makes to the server from here on: each statement sent alone, each
    `executemany` (pipelined: one), each pipeline block (one, whatever it holds)."""
    import psycopg

    count = [0]
    inside = [0]
    real_execute, real_many, real_pipeline = psycopg.Cursor.execute, psycopg.Cursor.executemany, \
        psycopg.Connection.pipeline

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += not inside[0]
        return real_execute(self, *args, **kwargs)

    def executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += not inside[0]
        inside[0] += 1
        try:
            return real_many(self, *args, **kwargs)
        finally:
            inside[0] -= 1

    import contextlib

    @contextlib.contextmanager
    def pipeline(self: Any) -> Any:
        count[0] += not inside[0]
        inside[0] += 1
        try:
            with real_pipeline(self) as p:
                yield p
        finally:
            inside[0] -= 1

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    monkeypatch.setattr(psycopg.Cursor, "executemany", executemany)
    monkeypatch.setattr(psycopg.Connection, "pipeline", pipeline)
    return count


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_tick_on_postgresql_sends_a_batch_in_a_few_round_trips_whatever_its_size(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Issue 25: each session's lock, state, claim (row lock, event, compare-and-set) and end (its
    compare-and-set, deletes and queued events) were statements of their own — 11 round trips per
    fired session, 1.2 s for 1,000 before any work. They are now each one statement or one pipeline
    per batch: 16 more sessions in the batch cost no more round trips than 4."""
    wf = workflows(tmp_path)
    trips = {}
    for size in (4, 20):
        ids = [roast.run(wf["ends"], store=store, now=lambda: T0).session_id for _ in range(size)]
        with monkeypatch.context() as patch:
            count = round_trips(patch)
            fired = roast.tick(store=store, now=lambda: T0 + 61)
        trips[size] = count[0]
        assert sorted(f["session_id"] for f in fired if f["fired"]) == sorted(ids), fired
        for entry in fired:  # what the tick reports is what the store keeps (the end is written at the commit)
            kept = roast.session(entry["session_id"], store=store)
            assert (entry["status"], entry["error"]) == (kept.status, kept.error) and kept.status == "timed_out"
            assert [e.name for e in store.events(kept.id)] == ["timeout"]
    assert trips[20] - trips[4] < 8, trips  # was 11 a session: 176 more for 16 more sessions


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_batch_locks_reads_and_deletes_its_sessions_with_one_statement_each(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Issue 25: the row locks, the saved states and the deferred deletes of a batch were each one
    statement per session (pipelined, but each parsed, bound and run alone: about 4–5 ms a batch of
    100 each); they are one statement over the whole batch (`= ANY`), the rows returned by id."""
    import psycopg

    wf = workflows(tmp_path)
    ids = [roast.run(wf["ends"], store=store, now=lambda: T0).session_id for _ in range(12)]
    sent: list[tuple[str, int]] = []  # (statement, parameter sets) as psycopg sends them
    real_execute, real_many = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        sent.append((str(query), 1))
        return real_execute(self, query, params, **kwargs)

    def executemany(self: Any, query: Any, params_seq: Any, **kwargs: Any) -> Any:
        params_seq = list(params_seq)
        sent.append((str(query), len(params_seq)))
        return real_many(self, query, params_seq, **kwargs)

    with monkeypatch.context() as patch:  # only the tick is watched (the test's own environment stays)
        patch.setattr(psycopg.Cursor, "execute", execute)
        patch.setattr(psycopg.Cursor, "executemany", executemany)
        fired = roast.tick(store=store, now=lambda: T0 + 61)
    assert sorted(f["session_id"] for f in fired if f["fired"]) == sorted(ids), fired
    locks = [(q, n) for q, n in sent if "FROM sessions WHERE id" in q and "FOR UPDATE" in q]
    states = [(q, n) for q, n in sent if "FROM deltas" in q and "envelope" in q]
    deletes = [(q, n) for q, n in sent if q.startswith(("DELETE FROM deltas", "DELETE FROM continuations"))]
    assert [n for _, n in locks] == [1] and "ANY(" in locks[0][0], locks
    assert [n for _, n in states] == [1] and "ANY(" in states[0][0], states
    assert sorted(q.split()[2] for q, n in deletes if n == 1) == ["continuations", "deltas"], deletes
    for sid in ids:  # what the merged statements did is what each session's own would have
        assert roast.session(sid, store=store).status == "timed_out"
        with psycopg.connect(store.url) as db:
            assert db.execute("SELECT count(*) FROM continuations WHERE session_id = %s", (sid,)).fetchone()[0] == 0
