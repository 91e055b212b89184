"""Issue 25: the queries that used to read every session (findings 0.2 scale §3) read a range of an
index with a LIMIT, on both stores: `roast resume WF -e E` without `-s`, `notify_due()`, the
open-first listing and `overdue()`. Each test checks the query plan of the statements the store
really ran (EXPLAIN QUERY PLAN on SQLite; EXPLAIN with sequential scans disabled on PostgreSQL, so
the planner's choice of index is meaningful on a small table) and that the results are unchanged."""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY
from test_store import T0, consume, is_pg, make, raw, waiting

from roast import deliver, sql_reads
from roast.sql_reads import Tx
from roast.store_sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, roast_home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """SQLite in ROAST_HOME, or a fresh PostgreSQL database (as tests/test_store.py's fixture)."""
    if request.param == "sqlite":
        monkeypatch.delenv("ROAST_KEY", raising=False)
        made: Any = SQLiteStore(roast_home)
    else:
        from roast.store_postgres import PostgresStore

        monkeypatch.setenv("ROAST_KEY", TEST_KEY)
        made = PostgresStore(request.getfixturevalue("pg_url"))
    yield made
    made.close()


@contextlib.contextmanager
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Sequence[object]]]]:
    """Every SELECT … FROM sessions the store runs inside the block, with its parameters."""
    seen: list[tuple[str, Sequence[object]]] = []
    reals = {name: getattr(Tx, name) for name in ("row", "rows")}
    for name, real in reals.items():

        def spy(self: Tx, sql: str, params: Sequence[object] = (), _real: Any = real) -> Any:
            if "FROM sessions" in sql and sql.lstrip().upper().startswith("SELECT"):
                seen.append((sql, params))
            return _real(self, sql, params)

        monkeypatch.setattr(Tx, name, spy)
    try:
        yield seen
    finally:
        for name, real in reals.items():
            monkeypatch.setattr(Tx, name, real)


def plan(store: Any, sql: str, params: Sequence[object]) -> str:
    """The query plan of one statement, as text."""
    if is_pg(store):
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as db:
            db.execute("SET enable_seqscan = off")
            rows = db.execute("EXPLAIN " + sql.replace("?", "%s"), list(params)).fetchall()
        return "\n".join(r[0] for r in rows)
    with contextlib.closing(sqlite3.connect(store.db_path)) as db:
        return "\n".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())


def assert_indexed(store: Any, statements: list[tuple[str, Sequence[object]]], index: str) -> None:
    """Every statement reads `index`, never the whole table, and stops at a LIMIT."""
    assert statements
    for sql, params in statements:
        text = plan(store, sql, params)
        assert "LIMIT" in sql.upper(), sql
        assert index in text, text
        if is_pg(store):
            assert "Seq Scan on sessions" not in text, text
        else:
            assert "SCAN sessions" not in text and "TEMP B-TREE FOR ORDER BY" not in text, text


# --------------------------------------------------------------------------- 1. resume without -s

@pytest.fixture
def wf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "workflow.yml").write_text("name: deploy\n")
    monkeypatch.chdir(tmp_path)
    return deliver.workflow_path("workflow.yml")


def test_resume_without_a_session_id_reads_one_page_of_the_workflow_index(store: Any, wf: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [waiting(store, workflow=wf, now=T0 + n) for n in range(30)]
    other = [{"event": "merged", "wait": "wait_for_event", "path": "1", "deadline": None}]
    newest_other = waiting(store, workflow=wf, now=T0 + 100, awaiting=other)  # newest, but not for `approved`
    with recorded(monkeypatch) as seen:
        picked, others = deliver.find(store, None, wf, "approved", None)
    assert picked.id == ids[-1] and others == ids[-2::-1] and newest_other not in others
    assert_indexed(store, seen, "sessions_by_workflow")
    assert deliver.find(store, None, wf, "merged", None) == (store.get(newest_other), [])


def test_others_waiting_stop_past_a_thousand_and_the_note_says_so(store: Any, wf: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliver, "OTHERS_SHOWN", 25)
    ids = [waiting(store, workflow=wf, now=T0 + n) for n in range(60)]
    picked, others = deliver.find(store, None, wf, "approved", None)
    assert picked.id == ids[-1] and others == ids[-2:-2 - 26:-1]
    assert deliver.counted(others) == "25+" and deliver.counted(others[:3]) == "3"


def test_no_session_waiting_for_the_event_still_explains_what_they_wait_for(store: Any, wf: str) -> None:
    from roast.errors import EventRefused

    for n in range(45):
        waiting(store, workflow=wf, now=T0 + n)
    with pytest.raises(EventRefused) as err:
        deliver.find(store, None, wf, "deployed", None)
    assert "45 waiting session(s) wait for: approved, rejected" in str(err.value)


# --------------------------------------------------------------------------- 2. notify_due

def test_notify_due_reads_the_partial_index(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = [waiting(store, now=T0 + n) for n in range(5)]
    due = waiting(store, now=T0 + 9)
    raw(store, "UPDATE sessions SET notify_pending = 1 WHERE id = ?", (due,))
    with recorded(monkeypatch) as seen:
        assert [s.id for s in store.notify_due()] == [due]
    assert quiet
    for sql, params in seen:  # no LIMIT here: the rows with a notice pending are few
        text = plan(store, sql, params)
        assert "sessions_notify_due" in text and "Seq Scan" not in text and "SCAN sessions" not in text, text


# --------------------------------------------------------------------------- 3. open-first listing

def mixed(store: Any) -> list[str]:
    ids = []
    for n in range(24):
        sid = waiting(store, now=T0 + n // 2)  # pairs with the same created_at: the id breaks the tie
        if n % 3 == 0:
            consume(store, sid)
            store.finish(sid, "completed", output={"ok": True}, now=T0 + 50)
        elif n % 3 == 1:
            store.cancel(sid, now=T0 + 50)
        ids.append(sid)
    ids.append(make(store, now=T0 + 3.5))  # running
    return ids


def test_open_first_listing_reads_each_status_by_index(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mixed(store)
    with recorded(monkeypatch) as seen:
        store.list(open_first=True, limit=5)
    assert_indexed(store, [s for s in seen if "count(" not in s[0]], "sessions_by_status")


def test_a_one_status_page_comes_in_order_from_the_status_index(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`GET /v1/sessions?status=waiting`: the page is a range of sessions_by_status in the listing's
    whole order, so nothing is sorted and the finished sessions newer than every waiting one (the head
    of sessions_by_created) are never read past (the PostgreSQL listing grew 2.3x at 1M before)."""
    mixed(store)
    with recorded(monkeypatch) as seen:
        page, _ = store.list(statuses=["waiting"], limit=3)
        assert store.list(statuses=["waiting"], limit=3, open_first=True)[0] == page  # serve's and the CLI's way
    assert [s.status for s in page] == ["waiting"] * 3
    assert page == sorted(page, key=lambda s: (s.created_at, s.id), reverse=True)
    listing = [s for s in seen if "count(" not in s[0]]
    assert_indexed(store, listing, "sessions_by_status")
    for sql, params in listing:
        text = plan(store, sql, params)
        assert "Sort" not in text and "TEMP B-TREE" not in text, text


def test_the_capped_count_reads_each_status_range_of_the_status_index(store: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing's count ("100+") reads the range of each status it counts in sessions_by_status,
    never an index led by the workflow (PostgreSQL chose sessions_by_key for `status IN (…)`, and read
    every session of the workflows that sort first: `GET /v1/sessions?status=waiting` was 1.4x at 1M)."""
    ids = mixed(store)
    for statuses in (["waiting"], ["running", "waiting", "interrupted"]):
        with recorded(monkeypatch) as seen:
            _, total = store.list(statuses=statuses, limit=2, open_first=True)
            assert store.list(statuses=statuses, limit=2)[1] == total
        assert total == len([i for i in ids if store.get(i).status in statuses])
        counts = [s for s in seen if "count(" in s[0]]
        assert len(counts) == 2 * len(statuses), counts  # one per status, in each of the two listings
        assert_indexed(store, counts, "sessions_by_status")
        for sql, params in counts:
            text = plan(store, sql, params)
            assert "sessions_by_key" not in text and "sessions_by_created" not in text, text
            # a range of status in the index's whole order: no other index gives it, whatever the statistics
            # (with `status = ?` PostgreSQL took sessions_by_created at 10k once 3,000 sessions had timed out)
            assert "status >= ? AND status <= ?" in sql and "ORDER BY status, created_at, id" in sql, sql


def test_open_first_pages_are_the_same_as_one_sorted_listing(store: Any) -> None:
    mixed(store)
    everything, total = store.list(limit=None)
    rank = {"running": 1, "waiting": 1, "interrupted": 1}
    expected = sorted(everything, key=lambda s: (rank.get(s.status, 0), s.created_at, s.id), reverse=True)
    assert [s.id for s in store.list(open_first=True, limit=None)[0]] == [s.id for s in expected]
    for offset in (0, 3, 8, 9, 10, 17, 24, 30):
        for limit in (1, 4, 9, 50):
            page, count = store.list(open_first=True, limit=limit, offset=offset)
            assert count == total
            assert [s.id for s in page] == [s.id for s in expected[offset:offset + limit]], (offset, limit)
    page, count = store.list(open_first=True, statuses=["completed", "waiting"], limit=3, offset=2)
    chosen = [s for s in expected if s.status in ("completed", "waiting")]
    assert [s.id for s in page] == [s.id for s in chosen[2:5]] and count == len(chosen)


# --------------------------------------------------------------------------- 4. overdue

def test_overdue_reads_the_deadline_index_a_batch_at_a_time(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from roast import sql_reads

    ids = [waiting(store, now=T0 + n, deadline=T0 + 100 + n) for n in range(7)]
    waiting(store, now=T0, deadline=T0 + 10_000)  # not due yet
    with recorded(monkeypatch) as seen:
        assert [s.id for s in store.overdue(now=T0 + 1000)] == ids
    assert_indexed(store, seen, "sessions_by_deadline")
    monkeypatch.setattr(sql_reads, "OVERDUE_BATCH", 3)
    assert [s.id for s in store.overdue(now=T0 + 1000)] == ids[:3]  # earliest deadlines first


def test_the_migration_creates_the_partial_index(store: Any) -> None:
    make(store)
    if is_pg(store):
        found = raw(store, "SELECT indexdef FROM pg_indexes WHERE indexname = 'sessions_notify_due'")
    else:
        found = raw(store, "SELECT sql FROM sqlite_master WHERE name = 'sessions_notify_due'")
    assert found and "notify_pending <> 0" in found[0][0]


def test_one_tick_fires_every_overdue_wait_past_the_batch_size(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import roast
    from roast import sql_reads

    workflow = tmp_path / "tick" / "workflow.yml"
    workflow.parent.mkdir()
    workflow.write_text("name: tick\nsteps:\n  - approval:\n      wait_for_event:\n        approved:\n"
                        "          - echo yes\n        within: 60s\n  - echo after\n")
    ids = {roast.run(workflow, now=lambda: T0).session_id for _ in range(7)}
    monkeypatch.setattr(sql_reads, "OVERDUE_BATCH", 3)
    fired = roast.tick(now=lambda: T0 + 61)
    assert {f["session_id"] for f in fired} == ids and all(f["fired"] for f in fired)
    assert roast.tick(now=lambda: T0 + 62) == []


# --------------------------------------------------------------------------- 5. a workflow by its name

def test_a_listing_or_a_keyed_delivery_by_workflow_name_reads_one_index_seek_per_workflow(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`roast sessions --workflow NAME`, `GET /v1/sessions?workflow=NAME` and `POST /v1/workflows/NAME/
    events/E?key=K` find the workflow's paths by skipping through `sessions_by_workflow` a distinct path
    at a time, then read an indexed range: never every session (they did, issue 25)."""
    paths = {}
    for name in ("deploy", "review", "release"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "workflow.yml").write_text(f"name: {name}\n")
        paths[name] = str(tmp_path / name / "workflow.yml")
    made = {name: [waiting(store, workflow=path, now=T0 + n) for n in range(8)] for name, path in paths.items()}
    assert store.workflow_paths("review") == [paths["review"]]  # by its directory
    assert store.workflow_paths(paths["deploy"]) == [paths["deploy"]]  # by its path
    with recorded(monkeypatch) as seen:
        rows, total = store.list(workflow="release", limit=5, open_first=True)
    assert [s.id for s in rows] == made["release"][::-1][:5] and total == 8
    assert any("workflow_path IN" in sql for sql, _ in seen), seen
    walk = plan(store, sql_reads._PATHS, ())  # the skip scan over the distinct paths
    assert "sessions_by_" in walk and "Seq Scan on sessions" not in walk and "SCAN sessions" not in walk, walk
    for sql, args in seen:
        text = plan(store, sql, args)
        assert "Seq Scan on sessions" not in text and "SCAN sessions" not in text, (sql, text)


# --------------------------------------------------------------------------- 6. the inbox

def test_the_inbox_reads_the_soonest_gates_through_the_deadline_index(store: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`roast inbox` and `GET /inbox` list at most INBOX_SHOWN gates, soonest deadline first (they read
    every waiting session, issue 25)."""
    from roast import gates

    monkeypatch.setattr(gates, "INBOX_SHOWN", 5)
    due = [waiting(store, now=T0 + n, deadline=T0 + 1_000 - n) for n in range(8)]
    for n in range(3):
        waiting(store, now=T0 + 50 + n)  # no deadline: after every one that has one
    with recorded(monkeypatch) as seen:
        listed = gates.inbox(store=store, now=T0 + 100)
    assert [g["session_id"] for g in listed] == due[::-1][:5]
    assert_indexed(store, [(sql, args) for sql, args in seen if "deadline IS NOT NULL" in sql], "sessions_by_deadline")
    for sql, args in seen:
        text = plan(store, sql, args)
        assert "Seq Scan on sessions" not in text and "SCAN sessions" not in text, (sql, text)
