"""Issue 25: what one claim costs (`roast serve` makes one per HTTP delivery), on both stores, counted
in statements: a read the claim does not need is CPU and, on PostgreSQL, a round trip per request."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_scale_queries import recorded, store  # noqa: F401  (the fixture: SQLite and PostgreSQL)

import roast

WAITS = "name: claim\nsteps:\n  - wait_for_event:\n      go:\n        - echo went\n"


def test_a_claim_by_session_id_reads_the_sessions_table_three_times(
        store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    """find() reads the row; under the session's lock it is read again with the state and the saved
    definition, in one statement (a read each before: four); the claim's transaction locks and
    re-reads it; the answer is the session as the claim's compare-and-set returned it (it read it
    again once the claim was saved: five, issue 25); the delivery loop's first look reuses find()'s
    (it read it twice in a row: six before that)."""
    (tmp_path / "claim.yml").write_text(WAITS)
    monkeypatch.chdir(tmp_path)
    sid = roast.run(tmp_path / "claim.yml", store=store).session_id
    with recorded(monkeypatch) as seen:
        result = roast.resume("go", session_id=sid, store=store, run=False)
    assert (result.outcome, result.status) == ("consumed", "running")
    assert len(seen) == 3, [sql[-60:] for sql, _ in seen]
    assert roast.session(sid, store=store).status == "running" and result.session_id == sid


TWICE = ("name: twice\nsteps:\n  - wait_for_event:\n      go:\n        - echo one\n"
         "  - wait_for_event:\n      go:\n        - echo two\n")


def test_an_event_id_a_wait_took_is_a_duplicate_at_the_next_wait_for_the_same_event(
        store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    """Issue 25: a claim checks its event id in the INSERT that records it (one statement less). The
    id a first wait took must still never consume the second wait, which waits for the same event;
    with other data it is refused, and nothing is recorded either way."""
    from roast.errors import BadEventData

    (tmp_path / "twice.yml").write_text(TWICE)
    monkeypatch.chdir(tmp_path)
    sid = roast.run(tmp_path / "twice.yml", store=store).session_id
    first = roast.resume("go", session_id=sid, store=store, event_id="deploy-7")
    assert (first.outcome, first.status, first.cursor) == ("consumed", "waiting", "steps[1] › wait_for_event")
    again = roast.resume("go", session_id=sid, store=store, event_id="deploy-7", run=False)
    assert (again.outcome, again.status, again.cursor) == ("duplicate", "waiting", "steps[1] › wait_for_event")
    with pytest.raises(BadEventData, match="already used with other data"):
        roast.resume("go", session_id=sid, store=store, event_id="deploy-7", data={"x": 1}, run=False)
    assert [(e.outcome, e.wait_seq) for e in roast.api.deliveries(sid, store=store)] == [("consumed", 1)]
    assert roast.resume("go", session_id=sid, store=store, event_id="deploy-8", run=False).outcome == "consumed"


def test_an_event_id_another_session_of_the_workflow_took_is_a_duplicate_when_delivered_by_workflow(
        store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    """The same check in the INSERT, scoped to the workflow (a delivery without a session id): the
    store refuses to let a second session of the workflow consume an id the first one took."""
    from roast.deliver import intake

    (tmp_path / "claim.yml").write_text(WAITS)
    monkeypatch.chdir(tmp_path)
    a, b = (roast.run(tmp_path / "claim.yml", store=store).session_id for _ in range(2))
    assert roast.resume("go", session_id=a, store=store, event_id="K-1", run=False).outcome == "consumed"
    path = roast.session(a, store=store).workflow_path
    with store.hold(b, "roast test"):
        got = store.deliver(b, intake("go", {}, "K-1", None, None, "api", 1.0), workflow_scope=path, holding=True)
    assert (got.outcome, got.session.id) == ("duplicate", a)
    assert roast.session(b, store=store).status == "waiting" and roast.api.deliveries(b, store=store) == []
    with store.hold(b, "roast test"):
        got = store.deliver(b, intake("go", {}, "K-2", None, None, "api", 1.0), workflow_scope=path, holding=True)
    assert (got.outcome, got.session.id) == ("consumed", b)


def test_on_postgresql_a_claim_sends_eight_statements_alone_and_five_in_a_group(
        pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 25: on PostgreSQL each statement is a round trip, the cost of a claim there. Alone: the
    row (find), the session's lock with its holders row, the row again with its state and saved
    definition, BEGIN, the row lock, the event (its id checked by the INSERT) with the compare-and-set
    that hands it to the runner, COMMIT, and letting go of the lock. In a group (`roast serve`),
    BEGIN and COMMIT are the group's, and its sessions are let go of together after the COMMIT:
    five a claim, three a group."""
    import psycopg
    from conftest import TEST_KEY

    from roast import api
    from roast.store_postgres import PostgresStore

    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    pg_store = PostgresStore(pg_url)
    (tmp_path / "claim.yml").write_text(WAITS)
    monkeypatch.chdir(tmp_path)
    sids = [roast.run(tmp_path / "claim.yml", store=pg_store).session_id for _ in range(5)]
    sent: list[str] = []
    for name in ("execute", "executemany"):
        real = getattr(psycopg.Cursor, name)

        def spy(self: Any, query: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            sent.append(" ".join(str(query).split())[:50])
            return _real(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, name, spy)
    try:
        assert roast.resume("go", session_id=sids[0], store=pg_store, run=False).outcome == "consumed"
        alone = list(sent)
        sent.clear()
        got = api.together([lambda sid=sid: roast.resume("go", session_id=sid, store=pg_store, run=False)
                            for sid in sids[1:]], store=pg_store)
    finally:
        monkeypatch.undo()
    assert len(alone) == 8, alone
    assert [value.outcome for ok, value in got if ok] == ["consumed"] * 4, got
    assert len(sent) == 5 * 4 + 3, sent
    assert sum(q.startswith("WITH gone AS (DELETE FROM holders") for q in sent) == 1, sent
    pg_store.close()
