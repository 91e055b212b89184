"""`roast store copy` (issue 13): every session of the SQLite store into PostgreSQL, byte for byte,
or nothing; afterwards the sessions continue on PostgreSQL."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, write_workflow

import roast
from roast import seal
from roast.errors import Refused, UsageError
from roast.store import Incoming, NewSession, StepStart, new_id
from roast.store_copy import copy_store
from roast.store_sqlite import SQLiteStore

pytestmark = pytest.mark.usefixtures("pg_server")

TWO_WAITS = """
name: release
steps:
  - build: $(echo built)
  - wait_for_event:
      approved:
        - ship: "$(echo shipped by {{event.who}})"
  - wait_for_event:
      merged:
        - tag: "$(echo tagged {{event.pr}})"
"""


@pytest.fixture
def sqlite_sessions(tmp_path: Path, roast_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A store on one machine with every kind of session: waiting, waiting with an event queued,
    completed, cancelled, and orphaned mid-branch with a delta and a claimed, undelivered event."""
    wf = write_workflow(tmp_path, TWO_WAITS)
    home = str(roast_home)
    ids = {"waiting": roast.run(wf, home=home).session_id}
    queued = roast.run(wf, home=home).session_id
    assert roast.resume("merged", data={"pr": 7}, session_id=queued, home=home).outcome == "queued"
    ids["queued"] = queued
    done = roast.run(wf, home=home).session_id
    roast.resume("approved", data={"who": "ana"}, session_id=done, home=home)
    roast.resume("merged", data={"pr": 8}, session_id=done, home=home)
    ids["completed"] = done
    ids["cancelled"] = roast.run(wf, home=home).session_id
    roast.cancel(ids["cancelled"], reason="superseded", home=home)
    store = SQLiteStore(home)
    orphan = new_id()
    store.create(NewSession(orphan, "/w/x/workflow.yml", "x", "fp", None, str(tmp_path), ("go",), None, None, False,
                            1.0), {"base": 0})
    store.suspend(orphan, {"base": 1}, cursor="steps[1]", awaiting=[{"event": "go", "wait": "w", "path": "1",
                                                                     "deadline": None}])
    store.deliver(orphan, Incoming("go", {"n": 1}, "go-1", "ana", None, "cli", 2.0, "d"))
    store.advance(orphan, changes={"n": 1}, cursor="steps[1].go[0]", start=StepStart("1.0", "s", 3.0))
    store.interrupted(orphan, error="killed", restart=True)
    ids["orphaned"] = orphan
    # the target hosts get the key the sessions were sealed with (a raw 32-byte key file works as it is)
    monkeypatch.setenv("ROAST_KEY_FILE", str(roast_home / "secret.key"))
    return ids


def _without(rows: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in names} for row in rows]


def test_store_copy_moves_every_session_byte_for_byte_and_they_continue_on_postgres(
        sqlite_sessions: dict[str, str], roast_home: Path, pg_url: str) -> None:
    from roast.store_postgres import PostgresStore

    source, target = SQLiteStore(roast_home), PostgresStore(pg_url)
    other = new_id()  # the target already has a session with events, so event ids must be renumbered
    target.create(NewSession(other, "/w/y.yml", "y", "fp", None, "/tmp", ("go",), None, None, False, 0.5), {})
    for n in range(3):
        target.deliver(other, Incoming("go", {"n": n}, None, "ana", None, "cli", 0.6, None))
    before = source.dump()

    counts = copy_store(source, target)

    assert counts == {"sessions": 5, "continuations": 3, "deltas": 1, "steps": len(before["steps"]),
                      "events": len(before["events"]), "definitions": 1, "moved": 3}
    moved = ("status", "reason", "finished_at", "updated_at", "owner", "notify_pending")
    after_source = source.dump()
    assert {s["id"] for s in after_source["sessions"] if s["status"] == "moved"} == \
        {sqlite_sessions[k] for k in ("waiting", "queued", "orphaned")}, "the open ones are marked moved (issue 24)"
    assert _without(after_source["sessions"], *moved) == _without(before["sessions"], *moved)
    assert {t: r for t, r in after_source.items() if t != "sessions"} == \
        {t: r for t, r in before.items() if t != "sessions"}, "nothing else changes in the source"
    after = {table: [r for r in rows if r.get("session_id", r.get("id")) != other]
             for table, rows in target.dump().items()}
    for table in ("continuations", "deltas", "steps", "definitions"):
        assert sorted(map(repr, after[table])) == sorted(map(repr, before[table])), table  # envelopes byte for byte
    assert sorted(map(repr, _without(after["sessions"], "pending_event"))) == \
        sorted(map(repr, _without(before["sessions"], "pending_event")))
    assert _without(after["events"], "id") == _without(before["events"], "id")
    assert {r["id"] for r in after["events"]}.isdisjoint(range(1, 4)), "renumbered past the target's own"

    orphan = PostgresStore(pg_url).get(sqlite_sessions["orphaned"])
    assert orphan.orphaned and orphan.status == "running"
    pending = PostgresStore(pg_url).take_over(orphan.id)
    assert pending is not None and (pending.name, pending.data, pending.event_id) == ("go", {"n": 1}, "go-1")
    assert PostgresStore(pg_url).load_state(orphan).deltas == [{"n": 1}]

    done = roast.resume("approved", data={"who": "bo"}, session_id=sqlite_sessions["queued"], store=pg_url)
    assert done.status == "completed" and done.output["tag"] == "tagged 7"  # the queued event came along
    waiting = roast.resume("approved", data={"who": "cy"}, session_id=sqlite_sessions["waiting"], store=pg_url)
    assert waiting.status == "waiting" and waiting.output["ship"] == "shipped by cy"
    assert roast.session(sqlite_sessions["cancelled"], store=pg_url).reason == "superseded"


def test_store_copy_refuses_a_target_that_holds_any_of_the_sessions_and_changes_nothing(
        sqlite_sessions: dict[str, str], roast_home: Path, pg_url: str) -> None:
    from roast.store_postgres import PostgresStore

    copy_store(SQLiteStore(roast_home), PostgresStore(pg_url))
    before = PostgresStore(pg_url).dump()
    with pytest.raises(Refused) as err:
        copy_store(SQLiteStore(roast_home), PostgresStore(pg_url))
    assert "already holds 5 of these sessions" in str(err.value) and "nothing was copied" in str(err.value)
    assert sqlite_sessions["waiting"] in str(err.value)
    assert PostgresStore(pg_url).dump() == before


def test_store_copy_refuses_sessions_sealed_under_a_key_this_host_lacks(
        sqlite_sessions: dict[str, str], roast_home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from roast.store_postgres import PostgresStore

    kid = seal.key_id((roast_home / "secret.key").read_bytes())
    for configure in ("none", "other"):
        monkeypatch.delenv("ROAST_KEY_FILE", raising=False)
        if configure == "other":
            monkeypatch.setenv("ROAST_KEY", TEST_KEY)
        with pytest.raises(Refused) as err:
            copy_store(SQLiteStore(roast_home), PostgresStore(pg_url))
        assert f"are sealed with {kid}" in str(err.value) and "nothing was copied" in str(err.value)
        assert "ROAST_KEY_FILE" in str(err.value)
        if configure == "other":
            assert seal.key_id(base64.b64decode(TEST_KEY)) in str(err.value)
    assert PostgresStore(pg_url).list() == ([], 0)


def test_store_copy_refuses_a_session_still_running_in_a_live_process(
        sqlite_sessions: dict[str, str], roast_home: Path, pg_url: str) -> None:
    from roast.store_postgres import PostgresStore

    store = SQLiteStore(roast_home)
    live = new_id()
    with store.hold(live, "roast execute"):
        store.create(NewSession(live, "/w/x.yml", "x", "fp", None, "/tmp", (), None, None, False, 5.0), {})
        with pytest.raises(Refused, match=f"session {live} of .* is running in roast execute \\(pid "):
            copy_store(SQLiteStore(roast_home), PostgresStore(pg_url))
    assert PostgresStore(pg_url).list() == ([], 0)


def test_store_copy_of_an_empty_store_copies_nothing_and_only_into_postgres(roast_home: Path, pg_url: str,
                                                                          tmp_path: Path) -> None:
    from roast.store_postgres import PostgresStore

    assert copy_store(SQLiteStore(roast_home), PostgresStore(pg_url)) == dict.fromkeys(
        ("sessions", "continuations", "deltas", "steps", "events", "definitions", "moved"), 0)
    with pytest.raises(UsageError, match="the target must be a PostgreSQL store"):
        copy_store(SQLiteStore(roast_home), SQLiteStore(tmp_path / "elsewhere"))
    with pytest.raises(UsageError, match="the source and the target are the same store"):
        copy_store(PostgresStore(pg_url), PostgresStore(pg_url))
