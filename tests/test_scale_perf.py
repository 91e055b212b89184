"""Issue 25, the second stop: the everyday work stays cheap whatever the number of sessions, on both
stores. `roast tick` claims its overdue timeouts a batch per transaction (then runs the branches),
and exactly once; counts are capped; the resident worker's idle loop reads only indexed rows."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_scale_queries import store  # noqa: F401  (the fixture: SQLite and PostgreSQL)
from test_store import T0

import roast
from roast.sql_reads import Tx

TICK = ("name: tick\nsteps:\n  - approval:\n      wait_for_event:\n        approved:\n          - echo yes\n"
        "        timeout:\n          - echo timed-out\n        within: 60s\n")


@contextlib.contextmanager
def claims_by_transaction(store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:  # noqa: F811
    """The number of the write transaction each timeout was claimed in (their count: transactions)."""
    real_write = type(store)._write
    count, seen = [0], []

    @contextlib.contextmanager
    def counted(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        count[0] += 1
        with real_write(self, *args, **kwargs) as tx:
            yield tx

    def spy(real: Any) -> Any:
        def insert(self: Tx, sql: str, params: Any) -> int:
            if sql.startswith("INSERT INTO events") and "timeout" in params:
                seen.append(count[0])
            return int(real(self, sql, params))
        return insert

    def spy_batch(real: Any) -> Any:  # a batch's claims are one `Tx.batch` (issue 25)
        def batch(self: Tx, statements: Any) -> Any:
            seen.extend(count[0] for sql, params in statements
                        if sql.startswith("INSERT INTO events") and "timeout" in params)
            return real(self, statements)
        return batch

    monkeypatch.setattr(type(store), "_write", counted)
    for cls in (Tx, *Tx.__subclasses__()):  # PostgreSQL's Tx has an insert and a batch of its own
        if "insert" in vars(cls):
            monkeypatch.setattr(cls, "insert", spy(vars(cls)["insert"]))
        if "batch" in vars(cls):
            monkeypatch.setattr(cls, "batch", spy_batch(vars(cls)["batch"]))
    yield seen


def tick_workflow(tmp_path: Path) -> Path:
    workflow = tmp_path / "tick" / "workflow.yml"
    workflow.parent.mkdir()
    workflow.write_text(TICK)
    return workflow


# --------------------------------------------------------------------------- 1. tick claims in batches

def test_one_tick_claims_its_overdue_timeouts_in_one_transaction_then_runs_each_branch(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    workflow = tick_workflow(tmp_path)
    ids = {roast.run(workflow, store=store, now=lambda: T0).session_id for _ in range(6)}
    with claims_by_transaction(store, monkeypatch) as claimed_in:
        fired = roast.tick(store=store, now=lambda: T0 + 61)
    assert {f["session_id"] for f in fired} == ids
    assert all(f["fired"] and f["status"] == "completed" and f["error"] is None for f in fired), fired
    assert len(claimed_in) == 6 and len(set(claimed_in)) == 1, claimed_in  # six claims, one transaction
    for sid in ids:
        assert [e.name for e in store.events(sid)] == ["timeout"]
        assert roast.session(sid, store=store).output["approval"]["event"] == "timeout"


def test_a_tick_batch_claims_a_session_an_event_took_meanwhile_for_nobody(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The listing saw three overdue sessions; an event took one before the batch was locked: the
    batch claims the two others, and reports the third as resolved elsewhere, not as an error."""
    workflow = tick_workflow(tmp_path)
    ids = [roast.run(workflow, store=store, now=lambda: T0).session_id for _ in range(3)]
    real = type(store).overdue

    def overdue_then_an_event(self: Any, *, now: float | None = None) -> list[Any]:
        listed = real(self, now=now)
        if any(s.id == ids[1] and s.status == "waiting" for s in listed):
            assert roast.resume("approved", session_id=ids[1], store=store, now=lambda: T0 + 30).status == "completed"
        return listed

    monkeypatch.setattr(type(store), "overdue", overdue_then_an_event)
    fired = {f["session_id"]: f for f in roast.tick(store=store, now=lambda: T0 + 61)}
    assert fired[ids[0]]["fired"] and fired[ids[2]]["fired"]
    assert not fired[ids[1]]["fired"] and fired[ids[1]]["error"] is None and fired[ids[1]]["resumed_elsewhere"]
    assert [e.name for e in store.events(ids[1])] == ["approved"]
    assert [e.name for e in store.events(ids[0])] == ["timeout"]


# --------------------------------------------------------------------------- 2. capped counts

def cap_counts(monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    from roast import api, display, sql_reads, views

    for module in (sql_reads, views, api, display):
        monkeypatch.setattr(module, "COUNT_CAP", cap)


def test_a_listing_counts_up_to_the_cap_through_an_index_and_says_so(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from test_scale_queries import assert_indexed, recorded
    from test_store import waiting

    cap_counts(monkeypatch, 5)
    ids = [waiting(store, now=T0 + n) for n in range(7)]
    with recorded(monkeypatch) as seen:
        rows, total = store.list(statuses=["waiting"], limit=2)
    assert [s.id for s in rows] == ids[:-3:-1] and total == 6  # counted no further than the cap + 1
    counts = [s for s in seen if "count(" in s[0]]
    assert len(counts) == 1 and "LIMIT 6" in counts[0][0]
    assert_indexed(store, counts, "sessions_by_")
    page = roast.sessions(status="waiting", limit=2, store=store)
    assert (page.total, page.total_capped, page.next) == (5, True, 2)
    whole = roast.sessions(status="waiting", limit=None, store=store)
    assert (len(whole), whole.total, whole.total_capped, whole.next) == (7, 7, False, None)
    few = roast.sessions(status="waiting", limit=2, offset=4, store=store)
    assert few.total_capped and len(few) == 2


def test_roast_sessions_says_10000_plus_when_the_count_stops_at_the_cap(
        roast_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from test_store import waiting

    from roast.cli import main
    from roast.store_sqlite import SQLiteStore

    cap_counts(monkeypatch, 5)
    monkeypatch.delenv("ROAST_STORE", raising=False)  # this SQLite store, also when the suite runs on PostgreSQL
    local = SQLiteStore(roast_home)
    for n in range(8):
        waiting(local, now=T0 + n)
    assert main(["sessions", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "… and more not shown: 5+ sessions match (--all lists them all, or --limit N)" in out, out
    assert main(["sessions", "--limit", "3", "--status", "waiting"]) == 0
    assert "5+ sessions match" in capsys.readouterr().out


# --------------------------------------------------------------------------- 2b. no session accepts the event

def test_resume_without_a_session_id_stops_reading_when_none_accepts_and_still_finds_an_older_one(
        store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    from test_scale_queries import assert_indexed, recorded
    from test_store import waiting

    from roast import deliver
    from roast.errors import EventRefused

    (tmp_path / "workflow.yml").write_text("name: deploy\n")
    monkeypatch.chdir(tmp_path)
    wf = deliver.workflow_path("workflow.yml")
    monkeypatch.setattr(deliver, "WAITING_READ", 25)
    merged = [{"event": "code_merged", "wait": "wait_for_event", "path": "1", "deadline": None}]
    oldest = waiting(store, workflow=wf, now=T0 - 10, awaiting=merged)
    for n in range(60):
        waiting(store, workflow=wf, now=T0 + n)
    with recorded(monkeypatch) as seen, pytest.raises(EventRefused) as err:
        deliver.find(store, None, wf, "deployed", None)
    assert "40+ waiting session(s) wait for: approved, rejected" in str(err.value)
    assert len(seen) < 15, [s[0][-80:] for s in seen]  # pages of 20, not one per session
    # (the look for interrupted or orphaned sessions of the workflow reads only those two statuses)
    assert_indexed(store, [s for s in seen if "interrupted" not in s[1]], "sessions_by_")
    with recorded(monkeypatch) as seen:
        picked, others = deliver.find(store, None, wf, "code_merged", None)  # past the cap: the database filters
    assert picked.id == oldest and others == []
    assert_indexed(store, seen, "sessions_by_")


# --------------------------------------------------------------------------- 3. the resident worker, idle

def test_every_query_of_an_idle_worker_pass_reads_an_index(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """What `roast serve` runs while nothing happens: a pass (overdue deadlines, notices a crash
    left, reminders due) every half second and a look for orphans every five. None reads the waiting sessions."""
    from test_scale_queries import assert_indexed, plan, recorded
    from test_store import make, waiting

    from roast.api import worker

    for n in range(30):
        waiting(store, now=T0 + n, deadline=T0 + 10_000 + n)
    running = make(store, now=T0 + 40)
    idle = worker(store=store, now=lambda: T0 + 100)
    recovering: list[str | None] = []
    monkeypatch.setattr(idle, "_put", lambda kind, session_id: recovering.append(session_id))
    with recorded(monkeypatch) as seen:
        assert idle.tick("serve") == []
        idle._orphans()
    assert len(seen) == 4, [s[0][-90:] for s in seen]
    overdue, notices, timers, orphans = seen
    assert_indexed(store, [overdue], "sessions_by_deadline")
    assert "sessions_notify_due" in plan(store, *notices)
    assert "sessions_timer_due" in plan(store, *timers)  # issue 23: reminders and escalations due
    text = plan(store, *orphans)  # the running sessions only (their liveness is checked one by one)
    assert "sessions_by_" in text and "Seq Scan" not in text and "SCAN sessions" not in text, text
    assert list(orphans[1]) == ["running"] and recovering == [running]  # (its creator is gone: an orphan)
