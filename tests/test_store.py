"""The session store contract, run against every store (the `store` fixture: SQLite, PostgreSQL):
ids and lookup, the exactly-once claim with real processes racing, deliveries, sealed
continuations and deltas (tampering, keys, rotation), definitions, liveness, listing, pruning.
Faults that only one backend can have (a damaged SQLite file, an unreachable server) are tested
against that backend."""
from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import pickle
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TEST_KEY

from roast import seal
from roast.errors import (
    Ambiguous,
    BadEventData,
    NotFound,
    NotWaiting,
    Refused,
    StateRefused,
    StoreUnavailable,
    UsageError,
)
from roast.store import SESSION_ID, Incoming, NewSession, StepDone, StepStart, new_id
from roast.store_sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from roast.store_sqlite import SQLiteStore

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z, a fixed "now"
WAITS = [{"event": "approved", "wait": "wait_for_event", "path": "1", "deadline": None},
         {"event": "rejected", "wait": "wait_for_event", "path": "1", "deadline": None}]

# sys.addaudithook cannot be removed, so one hook for the whole module records every global that
# unpickling resolves (reliability §2.3: a refused envelope must show zero of these).
FIND_CLASS: list[tuple[object, ...]] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "pickle.find_class":
        FIND_CLASS.append(args)


sys.addaudithook(_audit)


# --------------------------------------------------------------------------- fixtures and helpers

@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, roast_home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same contract against each store: SQLite in ROAST_HOME, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        monkeypatch.delenv("ROAST_KEY", raising=False)
        made: Any = SQLiteStore(roast_home)
    else:
        from roast.store_postgres import PostgresStore

        monkeypatch.setenv("ROAST_KEY", TEST_KEY)  # a shared store never makes its own key
        made = PostgresStore(request.getfixturevalue("pg_url"))
    yield made
    made.close()


def is_pg(store: Any) -> bool:
    return getattr(store, "shared", False)


def url_of(store: Any) -> str:
    """A store URL another process can open (`roast.api.open_store`)."""
    return store.url if is_pg(store) else f"sqlite://{store.db_path}"


def reopen(store: Any) -> Any:
    """A new store object on the same data, as another process would open it (fresh keys, connection)."""
    from roast.api import open_store

    return open_store(url_of(store))


def raw(store: Any, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database behind its back (`?` placeholders), as damage or an attacker would."""
    if is_pg(store):
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as db:
            cur = db.execute(sql.replace("?", "%s"), params)
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur.fetchall()] \
                if cur.description else []
    with contextlib.closing(sqlite3.connect(store.db_path)) as db, db:
        return db.execute(sql, params).fetchall()


def dump(store: Any) -> dict[str, list[dict[str, Any]]]:
    return store.dump()


def envelope_of(store: Any, sid: str) -> bytes:
    return bytes(raw(store, "SELECT envelope FROM continuations WHERE session_id = ?", (sid,))[0][0])


def put_envelope(store: Any, sid: str, blob: bytes) -> None:
    raw(store, "UPDATE continuations SET envelope = ? WHERE session_id = ?", (blob, sid))


def keys_of(store: Any) -> seal.Keyring:
    """The keys the store signs with: the environment's, else (SQLite) the key file in ROAST_HOME."""
    return seal.configured_keys() or seal.local_keys(os.path.join(store.home, "secret.key"), may_create=lambda: False)


def make(store: Any, *, sid: str | None = None, now: float = T0, workflow: str = "/w/deploy/workflow.yml",
         name: str = "deploy", declares: tuple[str, ...] = ("approved", "rejected", "merged"),
         state: object = None, definition: object | None = None, fingerprint: str = "fp",
         key: str | None = None) -> str:
    sid = sid or new_id()
    store.create(NewSession(sid, workflow, name, fingerprint, None, "/tmp", declares, key,
                            fingerprint if definition is not None else None, definition is not None, now),
                 {"start": True} if state is None else state, definition=definition, now=now)
    return sid


def waiting(store: Any, state: object = None, *, now: float = T0, deadline: float | None = None,
            awaiting: list[dict[str, Any]] | None = None, ahead: tuple[str, ...] = (), **kw: Any) -> str:
    sid = make(store, now=now, **kw)
    waits = [dict(w, deadline=deadline if w["event"] == "approved" else None) for w in (awaiting or WAITS)]
    store.suspend(sid, {"outputs": {"build": "ok"}} if state is None else state, cursor="steps[1]",
                  awaiting=waits, output={"build": "ok"}, ahead=ahead, now=now)
    return sid


def event(name: str = "approved", data: dict[str, Any] | None = None, *, event_id: str | None = None,
          now: float = T0 + 10) -> Incoming:
    payload = data or {}
    digest = json.dumps(payload, sort_keys=True) if event_id else None
    return Incoming(name, payload, event_id, "ana@host", None, "cli", now, digest)


def consume(store: Any, sid: str, name: str = "approved", **kw: Any) -> Any:
    outcome = store.deliver(sid, event(name, **kw), now=kw.get("now", T0 + 10))
    assert outcome.outcome == "consumed", outcome
    return outcome


def child(script: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def lambda_state() -> dict[str, object]:
    offset = 3
    return {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "fn": lambda x: x + offset}


# --------------------------------------------------------------------------- ids and lookup

def test_a_new_store_creates_nothing_until_the_first_write(store: Any, roast_home: Path) -> None:
    assert store.list() == ([], 0)
    with pytest.raises(NotFound):
        store.get("abcd")
    assert store.dump() == {} and not store.has_definition("fp")
    if is_pg(store):
        assert raw(store, "SELECT to_regclass('sessions') IS NULL")[0][0] is True
    else:
        assert not roast_home.exists()
    make(store)
    assert store.list()[1] == 1
    if not is_pg(store):
        assert roast_home.stat().st_mode & 0o777 == 0o700
        assert Path(store.db_path).stat().st_mode & 0o777 == 0o600


def test_new_ids_are_13_lowercase_base36_characters() -> None:
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(SESSION_ID.fullmatch(i) and len(i) == 13 and i == i.lower() for i in ids)


def test_get_finds_a_session_by_its_id_and_by_a_unique_prefix(store: Any) -> None:
    sid = make(store, sid="abcd0000000001")
    other = make(store, sid="abce0000000002")
    assert store.get(sid).id == sid
    assert store.get("abcd").id == sid and store.get("abce0").id == other
    assert store.get(sid).status == "running" and store.get(sid).cursor == "start"


def test_an_ambiguous_prefix_lists_up_to_ten_candidates(store: Any) -> None:
    ids = [make(store, sid=f"abcdef{n:07d}", now=T0 + n) for n in range(12)]
    with pytest.raises(Ambiguous) as err:
        store.get("abcdef")
    text = str(err.value)
    assert err.value.exit_code == 3 and "ambiguous" in text and "give more characters" in text
    assert sum(sid in text for sid in ids) == 10 and "and more" in text


@pytest.mark.parametrize("bad", ["../../etc/passwd", "%", "abc", "_abc", "ABCD", "ab\x00cd", "a" * 65, "abcd%"])
def test_a_malformed_id_is_a_usage_error_before_the_store_is_touched(store: Any, bad: str) -> None:
    for call in (lambda: store.get(bad), lambda: store.cancel(bad), lambda: store.history(bad),
                 lambda: store.hold(bad).__enter__(), lambda: make(store, sid=bad)):
        with pytest.raises(UsageError) as err:
            call()
        assert err.value.exit_code == 2 and "is not a session id" in str(err.value)
    assert store.dump() == {}  # nothing was created


def test_a_prefix_is_matched_literally_not_as_a_like_pattern(store: Any) -> None:
    make(store, sid="abcd0000000001")
    for prefix in ("abc_", "a_cd", "abc-"):
        with pytest.raises(NotFound) as err:
            store.get(prefix)
        assert "roast sessions" in str(err.value)


def test_an_unknown_id_is_not_found_with_a_hint(store: Any) -> None:
    make(store)
    with pytest.raises(NotFound) as err:
        store.get("zzzz9999")
    assert err.value.exit_code == 3 and "zzzz9999" in str(err.value) and "roast sessions" in str(err.value)


def test_the_store_modules_import_neither_yaml_nor_rich_nor_cloudpickle() -> None:
    code = ("import sys, roast.store, roast.store_sqlite, roast.store_postgres; "
            "print(sorted(m for m in ('yaml', 'rich', 'cloudpickle') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the exactly-once claim

def test_a_second_claim_of_the_same_wait_is_refused_with_exit_3(store: Any) -> None:
    sid = waiting(store, deadline=T0 + 60)
    session = store.get(sid)
    assert (session.status, session.wait_seq, session.deadline, session.events) == (
        "waiting", 1, T0 + 60, ["approved", "rejected"])
    with store.hold(sid, "roast resume"):  # as api claims: under the session's lock, so it is live
        consume(store, sid, data={"by": "ana"})
        with pytest.raises(NotWaiting) as err:
            store.fire(sid, wait_seq=1, source="tick", now=T0 + 11)
    assert err.value.exit_code == 3
    assert str(err.value).startswith(f"session {sid} is no longer waiting: it is running")
    assert "with 'approved'" in str(err.value) and "nothing changed" in str(err.value)
    assert [(e.name, e.data, e.wait_seq, e.outcome) for e in store.events(sid)] == [
        ("approved", {"by": "ana"}, 1, "consumed")]
    assert store.get(sid).attempt == 2 and store.get(sid).status == "running"


def test_claiming_a_completed_session_says_when_it_completed(store: Any) -> None:
    sid = waiting(store)
    consume(store, sid)
    store.finish(sid, "completed", output={"ok": True}, final_output="done", now=T0 + 3600)
    with pytest.raises(NotWaiting) as err:
        store.fire(sid, wait_seq=1, source="tick")
    assert "it completed at 2026-09-21T15:13:20Z" in str(err.value)


def test_claiming_an_earlier_wait_names_the_current_one(store: Any) -> None:
    sid = waiting(store)
    consume(store, sid)
    store.suspend(sid, {}, cursor="steps[3]", awaiting=[{"event": "merged", "wait": "w2", "path": "3",
                                                         "deadline": None}])
    with pytest.raises(NotWaiting) as err:
        store.fire(sid, wait_seq=1, source="tick")
    assert "no longer at wait #1" in str(err.value) and "'merged' (wait #2)" in str(err.value)


RACER = r"""
import json, random, sys, time
from roast.api import open_store
from roast.errors import NotWaiting
from roast.store import Incoming
url, ids, seed = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
random.Random(seed).shuffle(ids)
store = open_store(url)
store.list()  # connected and ready before the start signal
print("ready", flush=True)
sys.stdin.readline()
won, lost, other = [], 0, []
for sid in ids:
    try:
        got = store.deliver(sid, Incoming("approved", {"racer": seed}, None, "racer", None, "race", time.time(), None),
                            holding=True)
        if got.outcome == "consumed":
            won.append(sid)
        else:
            lost += 1
    except NotWaiting:
        lost += 1
    except BaseException as err:
        other.append(repr(err))
print(json.dumps({"won": won, "lost": lost, "other": other}), flush=True)
"""


def test_eight_processes_racing_for_twenty_waits_consume_each_event_exactly_once(store: Any) -> None:
    ids = [waiting(store) for _ in range(20)]
    racers = [child(RACER, url_of(store), json.dumps(ids), str(seed)) for seed in range(8)]
    for proc in racers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in racers:  # all are connected and waiting: release them together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in racers:
        out, errtext = proc.communicate(timeout=120)
        assert proc.returncode == 0, errtext
        results.append(json.loads(out.strip().splitlines()[-1]))
    won = [sid for r in results for sid in r["won"]]
    assert sorted(won) == sorted(ids)  # every wait claimed once, none twice
    assert sum(r["lost"] for r in results) == 8 * 20 - 20
    assert [r["other"] for r in results] == [[]] * 8  # no driver error leaked
    consumed = [e for sid in ids for e in store.events(sid) if e.outcome == "consumed"]
    assert len(consumed) == 20 and {store.get(sid).attempt for sid in ids} == {2}


QUORUM_RACER = r"""
import json, sys, time
from roast.api import open_store
from roast.errors import NotWaiting
from roast.store import Incoming
url, sid, actor = sys.argv[1], sys.argv[2], sys.argv[3]
store = open_store(url)
store.list()  # connected and ready before the start signal
print("ready", flush=True)
sys.stdin.readline()
try:
    got = store.deliver(sid, Incoming("approved", {"by": actor}, None, actor, None, "race", time.time(), None),
                        holding=True)
    print(json.dumps({"outcome": got.outcome, "approvals": got.event.approvals if got.event else None}), flush=True)
except NotWaiting:
    print(json.dumps({"outcome": "not_waiting", "approvals": None}), flush=True)
"""


def test_sixteen_processes_racing_approvals_of_four_people_meet_a_quorum_of_two_exactly_once(store: Any) -> None:
    """Issue 23's race: 16 concurrent approvals from 4 identities for quorum 2 → one consumed delivery, with
    exactly two distinct approvals in it; every other is counted once, a repeated identity, or too late."""
    gate = {"approvers": None, "quorum": {"approved": 2}, "self_approval": True, "require_verified": False,
            "remind": None, "escalate": []}
    sid = waiting(store, awaiting=[dict(w, policy=gate) for w in WAITS])
    people = ["ana@example.com", "bo@example.com", "cy@example.com", "di@example.com"]
    racers = [child(QUORUM_RACER, url_of(store), sid, people[i % 4]) for i in range(16)]
    for proc in racers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in racers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in racers:
        out, errtext = proc.communicate(timeout=120)
        assert proc.returncode == 0, errtext
        results.append(json.loads(out.strip().splitlines()[-1]))
    outcomes = [r["outcome"] for r in results]
    assert outcomes.count("consumed") == 1 and outcomes.count("counted") == 1, outcomes
    assert set(outcomes) <= {"consumed", "counted", "duplicate", "not_waiting", "queued"}
    [won] = [r for r in results if r["outcome"] == "consumed"]
    assert len(won["approvals"]) == 2 and len({a["actor"] for a in won["approvals"]}) == 2
    rows = store.events(sid)
    assert [e.approvals for e in rows if e.outcome == "consumed"] == [won["approvals"]]
    assert store.get(sid).status == "running" and store.get(sid).attempt == 2


# --------------------------------------------------------------------------- deliveries (issue 14)

def test_an_event_a_waiting_wait_declares_is_consumed_and_kept_pending_until_delivered(store: Any) -> None:
    sid = waiting(store)
    got = consume(store, sid, data={"who": "ana"}, event_id="e-1")
    assert (got.event.name, got.event.wait_seq, got.event.wait_path, got.event.event_id) == ("approved", 1, "1", "e-1")
    assert got.session.status == "running" and got.session.awaiting == []
    assert store.take_over(sid, now=T0 + 11) == got.event  # recovery reads the claimed event, infers nothing
    store.advance(sid, changes={"x": 1}, cursor="steps[1].approved[0]", delivered=True, now=T0 + 12)
    assert store.take_over(sid, now=T0 + 13) is None  # the branch has it now: no longer pending


def test_an_event_a_later_wait_declares_is_queued_and_consumed_by_that_wait(store: Any) -> None:
    sid = make(store)
    got = store.deliver(sid, event("merged", {"pr": 7}), now=T0 + 1)
    assert got.outcome == "queued" and got.session.status == "running"
    taken = store.suspend(sid, {"at": "w2"}, cursor="steps[3]", now=T0 + 2,
                          awaiting=[{"event": "merged", "wait": "w2", "path": "3", "deadline": None}])
    assert taken.wait_seq == 1 and taken.taken is not None
    assert (taken.taken.name, taken.taken.data, taken.taken.outcome, taken.taken.wait_path) == (
        "merged", {"pr": 7}, "consumed", "3")
    session = store.get(sid)
    assert session.status == "running" and store.take_over(sid) == taken.taken
    assert [e.outcome for e in store.events(sid)] == ["consumed"]


def test_a_queued_event_no_wait_took_is_unconsumed_when_the_session_ends(store: Any) -> None:
    sid = make(store)
    assert store.deliver(sid, event("merged")).outcome == "queued"
    store.finish(sid, "completed", output={}, final_output="", now=T0 + 5)
    assert [e.outcome for e in store.events(sid)] == ["unconsumed"]


def test_a_repeated_event_id_is_a_duplicate_and_the_same_id_with_other_data_is_refused(store: Any) -> None:
    sid = waiting(store)
    first = consume(store, sid, data={"n": 1}, event_id="deploy-1842")
    before = dump(store)
    again = store.deliver(sid, event("approved", {"n": 1}, event_id="deploy-1842"), now=T0 + 20)
    assert again.outcome == "duplicate" and again.event == first.event and dump(store) == before
    with pytest.raises(BadEventData, match="event id 'deploy-1842' was already used with other data"):
        store.deliver(sid, event("approved", {"n": 2}, event_id="deploy-1842"), now=T0 + 21)
    assert dump(store) == before


def test_an_event_id_is_unique_across_the_sessions_of_a_workflow_when_delivered_without_a_session(
        store: Any) -> None:
    a, b = waiting(store), waiting(store)
    consume(store, a, event_id="k-1")
    found = store.find_event("/w/deploy/workflow.yml", "k-1")
    assert found is not None and found[0].id == a and found[1].event_id == "k-1"
    again = store.deliver(b, event(event_id="k-1"), workflow_scope="/w/deploy/workflow.yml", now=T0 + 20)
    assert again.outcome == "duplicate" and again.session.id == a and store.get(b).status == "waiting"
    assert store.find_event("/w/other/workflow.yml", "k-1") is None


def test_an_event_after_the_deadline_is_late_and_the_timeout_is_claimed_instead(store: Any) -> None:
    sid = waiting(store, deadline=T0 + 5)
    late = store.deliver(sid, event("approved", now=T0 + 6), now=T0 + 6)
    assert late.outcome == "late" and "deadline passed at 2026-09-21T14:13:25Z" in late.event.detail
    assert late.session.status == "running"
    assert [(e.name, e.outcome, e.source) for e in store.events(sid)] == [
        ("approved", "late", "cli"), ("timeout", "consumed", "late")]


def test_an_event_for_a_finished_session_is_closed_and_recorded(store: Any) -> None:
    sid = waiting(store)
    consume(store, sid)
    store.finish(sid, "completed", output={}, final_output="", now=T0 + 30)
    closed = store.deliver(sid, event("approved", now=T0 + 40), now=T0 + 40)
    assert closed.outcome == "closed" and "completed at 2026-09-21T14:13:50Z" in closed.event.detail
    assert [e.outcome for e in store.events(sid)] == ["consumed", "closed"]


def test_an_event_no_wait_declares_is_unknown_and_one_no_wait_ahead_declares_is_not_waiting(store: Any) -> None:
    sid = waiting(store)
    assert store.deliver(sid, event("aproved")).outcome == "unknown_event"
    got = store.deliver(sid, event("merged"))
    assert got.outcome == "not_waiting" and "waiting for approved, rejected" in got.event.detail
    assert store.get(sid).status == "waiting"
    assert [e.outcome for e in store.events(sid)] == ["unknown_event", "not_waiting"]


def test_if_waiting_refuses_to_queue_and_records_nothing(store: Any) -> None:
    sid = make(store)
    before = dump(store)
    with pytest.raises(NotWaiting, match="--if-waiting"):
        store.deliver(sid, event("merged"), if_waiting=True)
    assert dump(store) == before


def test_without_the_sessions_lock_an_awaited_event_is_busy_and_nothing_changes(store: Any) -> None:
    sid = waiting(store)
    before = dump(store)
    assert store.deliver(sid, event(), holding=False).outcome == "busy"
    assert dump(store) == before


def test_delivering_to_an_unknown_session_is_not_found(store: Any) -> None:
    make(store)
    with pytest.raises(NotFound):
        store.deliver("zzzz00000000", event())


# --------------------------------------------------------------------------- continuations and deltas

def test_state_round_trips_through_create_and_suspend_with_code_in_it(store: Any) -> None:
    sid = waiting(store, lambda_state())
    state = store.load_state(store.get(sid))
    assert state.deltas == [] and state.base["when"] == datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert state.base["fn"](1) == 4


def test_recovery_reads_the_last_sealed_state_and_every_delta_after_it_in_order(store: Any) -> None:
    sid = make(store, state={"base": 0})
    for n in (1, 2, 3):
        assert store.advance(sid, changes={"n": n}, cursor=f"steps[{n}]", start=StepStart(str(n), f"s{n}", T0 + n),
                             finished=[StepDone(str(n - 1), 1, "completed", f"out{n - 1}", T0 + n)] if n > 1 else (),
                             now=T0 + n) == 1
    state = store.load_state(store.get(sid))
    assert state.base == {"base": 0} and state.deltas == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert store.get(sid).cursor == "steps[3]"
    assert store.advance(sid, changes=None, cursor=None, start=StepStart("3", "s3", T0 + 9)) == 2  # a re-run
    assert [(h.path, h.attempt, h.status, h.output) for h in store.history(sid[:6])] == [
        ("1", 1, "completed", "out1"), ("2", 1, "completed", "out2"), ("3", 1, "running", None),
        ("3", 2, "running", None)]
    store.suspend(sid, {"whole": True}, cursor="steps[4]", awaiting=WAITS)
    assert store.load_state(store.get(sid)) == type(state)({"whole": True}, [])  # the deltas were folded in


def test_a_tampered_swapped_or_foreign_delta_is_refused(store: Any) -> None:
    sid = make(store, state={"base": 0})
    other = make(store, state={"base": 1})
    for n in (1, 2):
        store.advance(sid, changes={"n": n}, cursor=f"steps[{n}]")
    store.advance(other, changes={"other": 1}, cursor="steps[1]")
    blobs = {seq: bytes(b) for seq, b in raw(store, "SELECT seq, envelope FROM deltas WHERE session_id = ?", (sid,))}
    flipped = bytearray(blobs[2])
    flipped[len(flipped) // 2] ^= 0x40
    FIND_CLASS.clear()
    raw(store, "UPDATE deltas SET envelope = ? WHERE session_id = ? AND seq = 2", (bytes(flipped), sid))
    with pytest.raises(StateRefused, match="failed its integrity check"):
        store.load_state(store.get(sid))
    raw(store, "UPDATE deltas SET envelope = ? WHERE session_id = ? AND seq = 2", (blobs[1], sid))
    with pytest.raises(StateRefused, match=f"holds the state of step record 1 of session {sid} at wait #0, not of "
                                           f"step record 2 of session {sid}"):
        store.load_state(store.get(sid))
    foreign = raw(store, "SELECT envelope FROM deltas WHERE session_id = ?", (other,))[0][0]
    raw(store, "UPDATE deltas SET envelope = ? WHERE session_id = ? AND seq = 2", (bytes(foreign), sid))
    with pytest.raises(StateRefused, match=f"step record 1 of session {other}"):
        store.load_state(store.get(sid))
    assert FIND_CLASS == []
    raw(store, "UPDATE deltas SET envelope = ? WHERE session_id = ? AND seq = 2", (blobs[2], sid))
    assert store.load_state(store.get(sid)).deltas == [{"n": 1}, {"n": 2}]


def test_a_checkpoint_is_refused_unless_the_session_runs_and_nothing_changes(store: Any) -> None:
    sid = waiting(store, awaiting=[{"event": "merged", "wait": "w", "path": "2", "deadline": None}])
    before = dump(store)
    with pytest.raises(Refused) as err:
        store.advance(sid, changes={"x": 3}, cursor="steps[3]", start=StepStart("3", "x", T0))
    assert str(err.value) == f"cannot save a checkpoint of session {sid}: it now waits for 'merged' (wait #1); " \
                             "nothing changed"
    assert dump(store) == before


def test_unpicklable_state_is_refused_and_nothing_changes(store: Any) -> None:
    sid = make(store)
    before = dump(store)
    with pytest.raises(UsageError) as err:
        store.advance(sid, changes={"gen": (x for x in [1])}, cursor="steps[1]")
    assert f"session {sid}" in str(err.value) and dump(store) == before


def test_two_hundred_flipped_bytes_are_all_refused_and_nothing_is_unpickled(store: Any) -> None:
    sid = waiting(store, lambda_state())
    envelope = envelope_of(store, sid)
    FIND_CLASS.clear()
    store.load_state(store.get(sid))
    assert FIND_CLASS, "control: loading this state resolves globals"
    FIND_CLASS.clear()
    rng = random.Random(2026)
    for offset in rng.sample(range(len(envelope)), 200):
        flipped = bytearray(envelope)
        flipped[offset] ^= rng.randrange(1, 256)
        put_envelope(store, sid, bytes(flipped))
        with pytest.raises(StateRefused) as err:
            store.load_state(store.get(sid))
        assert "it was not loaded" in str(err.value), offset
    put_envelope(store, sid, envelope[:-1] + bytes([envelope[-1] ^ 1]))
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(sid))
    assert str(err.value).startswith(f"the state of session {sid} failed its integrity check "
                                     "(modified outside roast?); it was not loaded")
    assert err.value.exit_code == 3 and FIND_CLASS == []


class Boom:
    """Unpickling this creates a file: what a forged continuation would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (str(self.path), "w"))


def test_a_forged_payload_that_would_create_a_file_is_refused_and_never_runs(store: Any, tmp_path: Path) -> None:
    sid = waiting(store)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Boom(control))).close()
    assert control.exists(), "control: the payload really does create a file"
    target = tmp_path / "pwned"
    attacker = seal.Keyring([os.urandom(32)], "attacker")
    forged = seal.envelope(pickle.dumps(Boom(target)), False, attacker, bind=seal.session_bind(sid, 1), now=T0)
    real = keys_of(store)
    relabelled = seal.envelope(pickle.dumps(Boom(target)), False, attacker, bind=seal.session_bind(sid, 1), now=T0)
    relabelled = relabelled.replace(attacker.signing[0].encode(), real.signing[0].encode())  # claims our key id
    FIND_CLASS.clear()
    for blob in (forged, relabelled, pickle.dumps(Boom(target)), forged[:-32] + bytes(32)):
        put_envelope(store, sid, blob)
        with pytest.raises(StateRefused):
            store.load_state(store.get(sid))
    assert FIND_CLASS == [] and not target.exists()


def test_a_truncated_envelope_is_refused_as_truncated(store: Any) -> None:
    sid = waiting(store, {"big": "x" * 5000})
    envelope = envelope_of(store, sid)
    for cut in (3, 20, len(envelope) // 2, len(envelope) - 40):
        put_envelope(store, sid, envelope[:cut])
        with pytest.raises(StateRefused) as err:
            store.load_state(store.get(sid))
        assert "is truncated" in str(err.value) and "disk or copy damage" in str(err.value), cut
    put_envelope(store, sid, envelope[:len(envelope) // 2])
    with pytest.raises(StateRefused, match=f"of {len(envelope):,} bytes"):
        store.load_state(store.get(sid))


def test_a_blob_swapped_between_two_sessions_is_refused(store: Any) -> None:
    a, b = waiting(store, {"who": "a"}), waiting(store, {"who": "b"})
    put_envelope(store, b, envelope_of(store, a))
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(b))
    assert f"holds the state of session {a} at wait #1, not of session {b}" in str(err.value)
    assert store.load_state(store.get(a)).base == {"who": "a"}  # the other session is untouched


def test_a_blob_from_an_earlier_wait_of_the_same_session_is_refused(store: Any) -> None:
    sid = waiting(store, {"wait": 1})
    first = envelope_of(store, sid)
    consume(store, sid)
    store.suspend(sid, {"wait": 2}, cursor="steps[5]", awaiting=[{"event": "merged", "wait": "w", "path": "5",
                                                                  "deadline": None}])
    put_envelope(store, sid, first)
    with pytest.raises(StateRefused, match="at wait #1, not of session .* at wait #2"):
        store.load_state(store.get(sid))


def test_code_in_state_from_another_python_is_refused_but_plain_data_loads(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    code_sid = waiting(store, lambda_state())
    data_sid = waiting(store, {"outputs": {"a": "b"}, "n": [1, 2.5]})
    saved = seal.PYTHON_VERSION
    monkeypatch.setattr(seal, "PYTHON_VERSION", "3.99.0")
    FIND_CLASS.clear()
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(code_sid))
    assert str(err.value).startswith(f"session {code_sid} was saved by CPython {saved} / cloudpickle ")
    assert "this is CPython 3.99.0" in str(err.value) and "holds code" in str(err.value)
    assert FIND_CLASS == []
    assert store.load_state(store.get(data_sid)).base == {"outputs": {"a": "b"}, "n": [1, 2.5]}
    monkeypatch.setattr(seal, "PYTHON_VERSION", saved)
    monkeypatch.setattr(seal, "PYTHON_IMPL", "pypy")
    with pytest.raises(StateRefused, match="this is PyPy"):
        store.load_state(store.get(code_sid))


def test_a_load_that_fails_after_a_good_signature_is_refused_with_the_versions(store: Any) -> None:
    sid = waiting(store)
    payload = pickle.dumps(datetime.date(2026, 1, 1)).replace(b"datetime", b"nodatetm")  # a module that is gone
    put_envelope(store, sid, seal.envelope(payload, False, keys_of(store), bind=seal.session_bind(sid, 1), now=T0))
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(sid))
    assert "cannot be loaded here (ModuleNotFoundError" in str(err.value)
    assert f"saved by CPython {seal.PYTHON_VERSION}" in str(err.value)


def test_finish_deletes_the_continuation_and_keeps_the_row(store: Any) -> None:
    sid = waiting(store)
    consume(store, sid)
    store.advance(sid, changes={"x": 1}, cursor="steps[2]")
    store.finish(sid, "completed", output={"approved": {"event": "approved"}}, final_output="done", now=T0 + 9)
    session = store.get(sid)
    assert (session.status, session.finished_at, session.final_output) == ("completed", T0 + 9, "done")
    assert session.output == {"approved": {"event": "approved"}} and session.awaiting == []
    assert [t for t, *_ in store.all_envelopes()] == []
    with pytest.raises(StateRefused, match="no saved state"):
        store.load_state(session)
    with pytest.raises(Refused, match="it completed at"):
        store.finish(sid, "failed")


def test_a_failed_session_keeps_its_last_checkpoint_for_retry(store: Any) -> None:
    sid = make(store, state={"base": 0})
    store.advance(sid, changes={"n": 1}, cursor="steps[1]")
    store.finish(sid, "failed", output={}, final_output="", error="boom", keep_state=True, now=T0 + 3)
    session = store.get(sid)
    assert (session.status, session.error) == ("failed", "boom")
    assert store.load_state(session).deltas == [{"n": 1}]


# --------------------------------------------------------------------------- keys

def test_a_session_sealed_under_another_key_is_refused_with_its_key_id(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = seal.new_key_text(), seal.new_key_text()
    monkeypatch.setenv("ROAST_KEY", old)
    sid = waiting(reopen(store))
    monkeypatch.setenv("ROAST_KEY", new)
    FIND_CLASS.clear()
    with pytest.raises(StateRefused) as err:
        reopen(store).load_state(store.get(sid))
    kid = seal.key_id(base64.b64decode(old))
    assert f"was signed with key {kid}, which is not among the keys configured here" in str(err.value)
    assert "add the old key to ROAST_KEY_FILE" in str(err.value) and FIND_CLASS == []


def test_two_keys_at_once_rotate_without_stranding_a_session(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = seal.new_key_text(), seal.new_key_text()
    keyfile = tmp_path / "roast.key"
    keyfile.write_text(old + "\n")
    keyfile.chmod(0o600)
    monkeypatch.delenv("ROAST_KEY", raising=False)
    monkeypatch.setenv("ROAST_KEY_FILE", str(keyfile))
    before = waiting(reopen(store), {"sealed": "old"})
    keyfile.write_text(new + "\n" + old + "\n")  # rotation: the new key signs, both verify
    rotated = reopen(store)
    assert rotated.load_state(rotated.get(before)).base == {"sealed": "old"}
    after = waiting(rotated, {"sealed": "new"})
    assert seal.key_id(base64.b64decode(new)).encode() in envelope_of(store, after)  # signed with the new key
    keyfile.write_text(new + "\n")  # the old key retired: sessions sealed under it are refused by key id
    retired = reopen(store)
    assert retired.load_state(retired.get(after)).base == {"sealed": "new"}
    with pytest.raises(StateRefused, match="not among the keys configured here"):
        retired.load_state(retired.get(before))


def test_a_key_file_readable_by_others_or_missing_is_refused_and_nothing_changes(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyfile = tmp_path / "roast.key"
    keyfile.write_text(seal.new_key_text() + "\n")
    keyfile.chmod(0o600)
    monkeypatch.delenv("ROAST_KEY", raising=False)
    monkeypatch.setenv("ROAST_KEY_FILE", str(keyfile))
    sid = waiting(reopen(store))
    other = make(reopen(store))
    before = dump(store)
    keyfile.chmod(0o644)
    with pytest.raises(StoreUnavailable) as err:
        reopen(store).load_state(store.get(sid))
    assert f"{keyfile} is readable by others (0644)" in str(err.value) and f"chmod 600 {keyfile}" in str(err.value)
    with pytest.raises(StoreUnavailable, match=r"readable by others \(0644\)"):
        reopen(store).advance(other, changes={"x": 1}, cursor="steps[1]")
    keyfile.chmod(0o600)
    monkeypatch.setenv("ROAST_KEY_FILE", str(tmp_path / "gone.key"))
    with pytest.raises(StoreUnavailable, match=r"gone.key \(from ROAST_KEY_FILE\) is missing"):
        reopen(store).advance(other, changes={"x": 1}, cursor="steps[1]")
    assert dump(store) == before and not (tmp_path / "gone.key").exists()


def test_postgres_a_shared_store_never_makes_a_key_and_says_how_to_make_one(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from roast.store_postgres import PostgresStore

    monkeypatch.delenv("ROAST_KEY", raising=False)  # set when the whole suite runs on PostgreSQL
    with pytest.raises(StoreUnavailable) as err:  # the roast_home fixture leaves no key configured
        make(PostgresStore(pg_url))
    assert err.value.exit_code == 4
    assert "shared by several hosts" in str(err.value) and "ROAST_KEY_FILE" in str(err.value)
    assert "roast key new > roast.key && chmod 600 roast.key" in str(err.value)
    assert PostgresStore(pg_url).list() == ([], 0)


@pytest.mark.sqlite_only
def test_sqlite_makes_its_key_once_and_never_again_once_sessions_are_sealed(roast_home: Path) -> None:
    store = SQLiteStore(roast_home)
    sid = waiting(store)
    key = roast_home / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    key.chmod(0o644)
    with pytest.raises(StateRefused, match=r"readable by others \(0644\)"):
        SQLiteStore(roast_home).load_state(store.get(sid))
    key.unlink()
    other = SQLiteStore(roast_home)
    with pytest.raises(StateRefused, match=f"signing key {key} is missing; restore it from backup"):
        other.load_state(other.get(sid))
    before = dump(other)
    with pytest.raises(StoreUnavailable, match="is missing"):
        make(SQLiteStore(roast_home))
    assert not key.exists() and dump(other) == before


# --------------------------------------------------------------------------- definitions

def test_a_definition_is_stored_once_per_fingerprint_and_dropped_with_its_last_session(store: Any) -> None:
    definition = {"data": {"steps": ["$(echo hi)"]}}
    a = make(store, definition=definition, fingerprint="f" * 64)
    b = make(store, definition=definition, fingerprint="f" * 64)
    assert store.has_definition("f" * 64) and not store.has_definition("0" * 64)
    assert [k for t, k, _ in store.all_envelopes() if t == "definitions"] == ["f" * 64]
    assert store.load_definition("f" * 64) == definition and store.load_definition("0" * 64) is None
    for sid in (a, b):
        store.finish(sid, "completed", output={}, final_output="", now=T0)
    assert store.prune(older_than=0, now=T0 + 1) == 2
    assert not store.has_definition("f" * 64)


def test_a_tampered_definition_is_refused(store: Any) -> None:
    make(store, definition={"data": {"steps": []}}, fingerprint="e" * 64)
    blob = bytearray(raw(store, "SELECT envelope FROM definitions")[0][0])
    blob[-5] ^= 1
    raw(store, "UPDATE definitions SET envelope = ?", (bytes(blob),))
    with pytest.raises(StateRefused, match=f"the saved definition {'e' * 12} failed its integrity check"):
        reopen(store).load_definition("e" * 64)


def test_a_definition_tampered_after_this_store_loaded_it_is_refused_by_the_same_store(store: Any) -> None:
    """Issue 25: a store keeps the definitions it verified, for the next claim of the same
    workflow; only the very bytes it verified are taken from that, so damage is still refused."""
    definition = {"data": {"steps": ["$(echo hi)"]}}
    make(store, definition=definition, fingerprint="d" * 64)
    assert store.load_definition("d" * 64) == definition
    assert store.load_definition("d" * 64) == definition  # kept
    blob = bytearray(raw(store, "SELECT envelope FROM definitions")[0][0])
    blob[-5] ^= 1
    raw(store, "UPDATE definitions SET envelope = ?", (bytes(blob),))
    with pytest.raises(StateRefused, match=f"the saved definition {'d' * 12} failed its integrity check"):
        store.load_definition("d" * 64)


def test_a_consumed_event_whose_compare_and_set_loses_is_not_kept(store: Any) -> None:
    """Issue 25: the consumed event is recorded with the compare-and-set that hands it to the runner
    (one statement on PostgreSQL). Should the compare-and-set find the session no longer at the wait
    the claim read (a row lock that did not hold), the claim is refused and its event not kept."""
    from roast import outcomes

    sid = waiting(store)
    read = store.get(sid)
    verdict = outcomes.decide(read, "approved", holding=True, now=T0 + 10)
    stale = read._replace(wait_seq=read.wait_seq + 1)
    with pytest.raises(NotWaiting):
        with store._write(sid) as tx:
            store._consume(tx, stale, event(event_id="e-1"), verdict, T0 + 10, None, True, None, None)
    assert store.get(sid).status == "waiting" and store.events(sid) == []
    with store._write(sid) as tx:
        consumed, row = store._consume(tx, read, event(event_id="e-1"), verdict, T0 + 10, None, True, None, None)
    assert (row["status"], consumed.name, consumed.event_id) == ("running", "approved", "e-1")
    assert [e.outcome for e in store.events(sid)] == ["consumed"]


def test_a_state_is_read_with_its_definition_and_a_tampered_definition_is_refused_there(store: Any) -> None:
    """Issue 25: a claim reads the session's saved definition with its state, in the same statement,
    verified as `load_definition` verifies it: damage is refused there too, by the same store."""
    definition = {"data": {"steps": ["$(echo hi)"]}}
    sid = make(store, definition=definition, fingerprint="c" * 64)
    session = store.get(sid)
    assert session.definition == "c" * 64 and store.load_state(session).definition == definition
    blob = bytearray(raw(store, "SELECT envelope FROM definitions")[0][0])
    blob[-5] ^= 1
    raw(store, "UPDATE definitions SET envelope = ?", (bytes(blob),))
    with pytest.raises(StateRefused, match=f"the saved definition {'c' * 12} failed its integrity check"):
        store.load_state(session)


# --------------------------------------------------------------------------- steps, listing, pruning

def test_spawned_records_the_process_group_and_host_of_an_attempt(store: Any) -> None:
    sid = make(store)
    attempt = store.advance(sid, changes=None, cursor=None, start=StepStart("0", "build", T0))
    store.spawned(sid, "0", attempt, 4242)
    (step,) = store.history(sid)
    assert (step.pgid, step.host, step.status) == (4242, os.uname().nodename, "running")


def test_interrupted_for_a_restart_marks_the_steps_in_flight_and_the_session_becomes_orphaned(store: Any) -> None:
    sid = make(store)
    with store.hold(sid, "roast execute"):
        store.advance(sid, changes=None, cursor=None, start=StepStart("0", "build", T0))
        assert store.get(sid).orphaned is False  # this process holds it
        store.interrupted(sid, error="interrupted by SIGTERM during 0", restart=True, now=T0 + 1)
    session = store.get(sid)
    assert (session.status, session.error, session.orphaned) == ("running", "interrupted by SIGTERM during 0", True)
    assert [h.status for h in store.history(sid)] == ["interrupted"]
    assert [s.id for s in store.orphans()] == [sid]
    with store.hold(sid, "roast resume"):
        assert store.take_over(sid) is None and store.get(sid).orphaned is False


def test_interrupted_by_a_person_is_its_own_status_never_an_orphan_and_taken_over_only_when_asked(
        store: Any) -> None:
    """Issue 20: a signal to the CLI leaves the session `interrupted`, which no orphan query lists."""
    sid = make(store)
    with store.hold(sid, "roast execute"):
        store.advance(sid, changes=None, cursor=None, start=StepStart("0", "build", T0))
        store.interrupted(sid, error="interrupted by SIGINT during 0", now=T0 + 1)
    session = store.get(sid)
    assert (session.status, session.orphaned, session.owner) == ("interrupted", False, None)
    assert [h.status for h in store.history(sid)] == ["interrupted"]
    assert store.orphans() == [] and store.list(statuses=["orphaned"])[0] == []
    assert [s.id for s in store.list(statuses=["interrupted"])[0]] == [sid]
    with store.hold(sid, "roast resume"):
        assert store.take_over(sid) is None
        assert (store.get(sid).status, store.get(sid).orphaned) == ("running", False)


def test_listing_filters_pages_and_counts(store: Any) -> None:
    ids = []
    for i in range(7):
        wf = "/w/a/workflow.yml" if i % 2 == 0 else "/w/b/workflow.yml"
        ids.append(waiting(store, now=T0 + i * 100, workflow=wf, name=wf.split("/")[2]))
    consume(store, ids[0], now=T0 + 1000)
    store.finish(ids[0], "completed", now=T0 + 1000)
    page, total = store.list(limit=3)
    assert [s.id for s in page] == ids[::-1][:3] and total == 7
    page, total = store.list(limit=3, offset=6)
    assert [s.id for s in page] == [ids[0]] and total == 7
    assert store.list(limit=None)[0][-1].id == ids[0]
    assert store.list(open_first=True, limit=None)[0][-1].id == ids[0]
    page, total = store.list(statuses=["waiting"], workflow="a")
    assert [s.id for s in page] == [ids[6], ids[4], ids[2]] and total == 3
    page, total = store.list(workflow="/w/b/workflow.yml", since=T0 + 200)
    assert [s.id for s in page] == [ids[5], ids[3]] and total == 2
    page, total = store.list(older_than=450, now=T0 + 700)
    assert {s.id for s in page} == {ids[1], ids[2]} and total == 2
    assert [s.id for s in store.waiting_for("/w/a/workflow.yml")] == [ids[6], ids[4], ids[2]]
    assert [s.id for s in store.open_of("/w/b/workflow.yml")] == [ids[5], ids[3], ids[1]]
    with pytest.raises(UsageError, match="unknown status 'paused'"):
        store.list(statuses=["paused"])


def test_a_correlation_key_finds_the_open_sessions_that_have_it(store: Any) -> None:
    a = waiting(store, key="PR-7", now=T0)
    b = make(store, key="PR-7", now=T0 + 1)
    waiting(store, key="PR-8")
    assert [s.id for s in store.with_key("/w/deploy/workflow.yml", "PR-7")] == [b, a]


def test_overdue_lists_waiting_sessions_past_their_deadline_and_a_timeout_claims_one(store: Any) -> None:
    late = waiting(store, deadline=T0 + 10)
    waiting(store, deadline=T0 + 1000)
    waiting(store)
    assert [s.id for s in store.overdue(now=T0 + 10)] == [late]
    claimed = store.fire(late, wait_seq=1, source="tick", now=T0 + 11)
    assert store.overdue(now=T0 + 10) == []
    deadline = datetime.datetime.fromtimestamp(T0 + 10, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # the claimed event, as the store keeps it and hands it to the runner: the deadline in ISO 8601 (issue 20)
    assert [(e.name, e.source, e.data) for e in store.events(late)] == [("timeout", "tick", {"deadline": deadline})]
    assert (claimed.name, claimed.data, claimed.outcome) == ("timeout", {"deadline": deadline}, "consumed")


def test_overdue_leaves_out_a_session_another_process_is_claiming(store: Any) -> None:
    late = waiting(store, deadline=T0 + 10)
    proc = child(LOCKER, url_of(store), late)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        shown = [s.id for s in store.overdue(now=T0 + 10)]
        assert shown == ([] if is_pg(store) else [late])  # SQLite lists it; its claim then waits for the lock
    finally:
        proc.communicate("done\n", timeout=30)
    assert [s.id for s in store.overdue(now=T0 + 10)] == [late]


def test_notify_due_lists_the_waits_whose_notify_steps_did_not_finish(store: Any) -> None:
    sid = make(store)
    store.suspend(sid, {}, cursor="steps[1]", awaiting=WAITS, notify=True)
    assert [s.id for s in store.notify_due()] == [sid] and store.get(sid).notify_pending
    store.notified(sid, wait_seq=1)
    assert store.notify_due() == []


def test_prune_deletes_old_finished_sessions_but_never_waiting_or_running(store: Any) -> None:
    old = {}
    for status in ("completed", "failed", "timed_out", "cancelled", "waiting", "running"):
        sid = waiting(store, now=T0)
        old[status] = sid
        if status == "cancelled":
            store.cancel(sid, now=T0)
        elif status != "waiting":
            consume(store, sid, now=T0)
            if status != "running":
                store.finish(sid, status, now=T0)
    with store.hold(old["completed"], "roast test"):
        pass
    recent = waiting(store, now=T0)
    store.cancel(recent, now=T0 + 3000)
    assert store.prune(older_than=3600, now=T0 + 3600 + 1) == 4
    left = {s.id for s in store.list(limit=None)[0]}
    assert left == {old["waiting"], old["running"], recent}
    assert {r["session_id"] for r in dump(store)["events"]} == {old["running"]}
    assert store.prune(older_than=0, now=T0 + 10**6) == 1  # only the cancelled recent one
    with pytest.raises(UsageError):
        store.prune(older_than=-1)


def test_a_nul_in_a_step_output_is_stored(store: Any) -> None:
    sid = make(store)
    store.advance(sid, changes=None, cursor=None, start=StepStart("0", "nul", T0))
    store.advance(sid, changes={"x": "a\x00b"}, cursor="steps[1]",
                  finished=[StepDone("0", 1, "completed", "a\x00b", T0 + 1)])
    (step,) = store.history(sid)
    assert step.output == ("a\ufffdb" if is_pg(store) else "a\x00b")  # PostgreSQL text cannot hold NUL
    assert store.load_state(store.get(sid)).deltas == [{"x": "a\x00b"}]  # sealed state is bytes: exact


def test_each_thread_gets_its_own_connection(store: Any) -> None:
    ids = [waiting(store) for _ in range(4)]
    errors: list[BaseException] = []

    def work(sid: str) -> None:
        try:
            for _ in range(5):
                assert store.get(sid).status == "waiting"
            store.deliver(sid, event())
            store.close()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(sid,)) for sid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and {store.get(sid).status for sid in ids} == {"running"}


# --------------------------------------------------------------------------- liveness and cancel

LOCKER = r"""
import sys
from roast.api import open_store
with open_store(sys.argv[1]).hold(sys.argv[2], "roast test"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_hold_excludes_a_second_holder_and_names_it(store: Any) -> None:
    sid = make(store)
    with store.hold(sid, "roast resume"):
        assert store.get(sid).orphaned is False
        with pytest.raises(NotWaiting) as err, store.hold(sid, "roast resume"):
            pass
        assert err.value.exit_code == 3
        assert f"is being handled by roast resume (pid {os.getpid()} on {os.uname().nodename})" in str(err.value)
        with pytest.raises(NotWaiting, match=f"being handled by roast resume \\(pid {os.getpid()}"), \
                reopen(store).hold(sid, "other"):
            pass
    store.interrupted(sid, error="stopped", restart=True)  # no owner any more: a free lock now means orphaned
    assert store.get(sid).orphaned is True and store.list()[0][0].orphaned is True
    with store.hold(sid):  # free again
        pass


def test_a_running_session_is_orphaned_once_its_process_dies_and_can_then_be_cancelled(store: Any) -> None:
    sid = waiting(store)
    consume(store, sid)
    store.interrupted(sid, error="handed over", restart=True)
    proc = child(LOCKER, url_of(store), sid)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        session = reopen(store).get(sid)
        assert session.orphaned is False and session.holder == f"roast test (pid {proc.pid} on {os.uname().nodename})"
        with pytest.raises(NotWaiting, match=f"being handled by roast test \\(pid {proc.pid} on "):
            store.hold(sid).__enter__()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert store.get(sid).orphaned is True  # at once: its process is known to be dead
    cancelled = store.cancel(sid[:6], reason="stuck", now=T0 + 50)
    assert (cancelled.status, cancelled.reason, cancelled.finished_at) == ("cancelled", "stuck", T0 + 50)


def test_cancel_of_a_running_session_refuses_its_owners_next_write_as_cancelled(store: Any) -> None:
    """Issue 20: no lock is needed to cancel a running session; every write of its owner checks
    the status, so the owner stops at its next checkpoint, and the steps in flight are `cancelled`."""
    from roast.errors import Cancelled

    sid = make(store)
    with store.hold(sid, "roast execute"):
        attempt = store.advance(sid, changes=None, cursor=None, start=StepStart("0", "build", T0))
        assert store.spawned(sid, "0", attempt, 4242) is True
        cancelled = reopen(store).cancel(sid, reason="superseded", actor="ana", now=T0 + 5)
        assert (cancelled.status, cancelled.cancelled_by, cancelled.reason) == ("cancelled", "ana", "superseded")
        assert store.spawned(sid, "0", attempt, 4242) is False  # the caller stops a step started meanwhile
        for write in (lambda: store.advance(sid, changes={"x": 1}, cursor="1", now=T0 + 6),
                      lambda: store.finish(sid, "completed", now=T0 + 6)):
            with pytest.raises(Cancelled, match="cancelled .* by ana \\(superseded\\)"):
                write()
    assert [(h.status, h.finished_at) for h in store.history(sid)] == [("cancelled", T0 + 5)]
    with pytest.raises(Cancelled):
        store.cancel(sid)  # finished: refused (exit 3), as before


LINGER = r"""
import subprocess, sys
from roast.api import open_store
store = open_store(sys.argv[1])
with store.hold(sys.argv[2], "roast test"):
    # a process that inherits the connection's socket keeps the server's backend (and its lock) alive
    sleeper = subprocess.Popen(["sleep", "600"], pass_fds=[store._local.conn.fileno()], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(sleeper.pid, flush=True)
    sys.stdin.readline()
"""


def test_postgres_a_lock_that_outlives_its_dead_process_does_not_block_recovery(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server drops a dead client's lock only when its backend notices: until then, the holder
    row names a process on this host that is gone, so the session is orphaned, and hold() waits."""
    import signal

    from roast.store_postgres import PostgresStore

    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    store = PostgresStore(pg_url)
    sid = make(store)
    store.interrupted(sid, error="handed over", restart=True)
    proc = child(LINGER, pg_url, sid)
    assert proc.stdout is not None
    sleeper = int(proc.stdout.readline())
    try:
        assert store.get(sid).orphaned is False
        proc.kill()
        proc.communicate(timeout=30)
        assert raw(store, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 1  # still held
        session = store.get(sid)
        assert (session.orphaned, session.holder) == (True, None)
    finally:
        os.kill(sleeper, signal.SIGKILL)
    with store.hold(sid, "roast resume (recovery)"):  # waits the moment the server needs to drop it
        assert store.take_over(sid) is None


def test_cancel_stops_a_waiting_session_and_refuses_a_finished_one(store: Any) -> None:
    sid = waiting(store)
    assert store.cancel(sid, now=T0 + 5).status == "cancelled"
    with pytest.raises(StateRefused, match="no saved state"):
        store.load_state(store.get(sid))
    with pytest.raises(Refused, match="cannot cancel session .*: it was cancelled at 2026-09-21T14:13:25Z"):
        store.cancel(sid)
    with pytest.raises(NotWaiting, match="it was cancelled"):
        store.fire(sid, wait_seq=1, source="tick")


def test_take_over_is_refused_for_a_session_that_is_not_running(store: Any) -> None:
    sid = waiting(store)
    with pytest.raises(NotWaiting, match="now waits for 'approved', 'rejected'"):
        store.take_over(sid)


# --------------------------------------------------------------------------- faults: busy, full, read-only

HOLD_SQLITE = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""

HOLD_PG = r"""
import sys, psycopg
db = psycopg.connect(sys.argv[1])
db.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (sys.argv[2],))
print("locked", flush=True)
sys.stdin.readline()
db.rollback()
"""


def test_a_locked_store_is_busy_exit_4_and_the_session_is_unchanged(store: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sid = waiting(store)
    before = dump(store)
    monkeypatch.setenv("ROAST_BUSY_TIMEOUT", "0.5")
    holder = child(HOLD_PG, store.url, sid) if is_pg(store) else child(HOLD_SQLITE, store.db_path)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        fresh = reopen(store)  # ROAST_BUSY_TIMEOUT is read when a connection opens
        with pytest.raises(StoreUnavailable) as err:
            fresh.deliver(sid, event())
        assert err.value.exit_code == 4
        assert str(err.value).startswith(f"the session store {fresh.describe()} is busy (another roast process has "
                                         "held ")
        assert "for more than 0.5 s); nothing changed, try again" in str(err.value)
        assert "ROAST_BUSY_TIMEOUT" in str(err.value)
        assert fresh.get(sid).status == "waiting"  # reads still work under a writer
    finally:
        holder.communicate("done\n", timeout=30)
    assert dump(store) == before


def test_a_bad_busy_timeout_is_a_usage_error(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAST_BUSY_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="ROAST_BUSY_TIMEOUT"):
        make(reopen(store))


def test_a_newer_schema_is_refused_without_changes(store: Any) -> None:
    make(store)
    if is_pg(store):
        raw(store, "INSERT INTO roast_schema (version, applied_at) VALUES (99, 0)")
    else:
        raw(store, "PRAGMA user_version = 99")
    with pytest.raises(StoreUnavailable, match=r"written by a newer roast \(schema v99"):
        reopen(store).list()  # the schema is checked when a process first connects


@pytest.mark.sqlite_only
def test_sqlite_a_full_disk_leaves_the_previous_state_intact(roast_home: Path) -> None:
    store = SQLiteStore(roast_home)
    sid = waiting(store, {"small": 1})
    consume(store, sid)
    store.advance(sid, changes={"small": 2}, cursor="steps[2]")
    before = dump(store)
    store._on_connect = lambda db: db.execute(
        f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    store.close()  # the hook applies to new connections; the store keeps one per thread
    with pytest.raises(StoreUnavailable) as err:
        store.advance(sid, changes={"big": os.urandom(256 * 1024)}, cursor="steps[3]")
    assert err.value.exit_code == 4
    assert str(err.value).startswith(f"could not save session {sid} (disk full at {store.db_path}); nothing changed")
    store._on_connect = None
    store.close()
    assert dump(store) == before and store.load_state(store.get(sid)).deltas == [{"small": 2}]


@pytest.mark.sqlite_only
def test_sqlite_reads_fall_back_to_an_immutable_view_when_the_store_cannot_be_written(
        roast_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(roast_home)
    sid = waiting(store)
    real_open = SQLiteStore._open

    def readonly_dir(self: SQLiteStore, uri: str | None = None) -> sqlite3.Connection:
        if uri is None:  # what a WAL database in a read-only directory does (reliability §5 row 12)
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real_open(self, uri)

    monkeypatch.setattr(SQLiteStore, "_open", readonly_dir)
    store.close()
    assert store.get(sid).status == "waiting" and store.read_only_view is True
    with pytest.raises(StoreUnavailable, match=f"the session store {store.db_path} is read-only"):
        make(store)


@pytest.mark.sqlite_only
def test_sqlite_a_damaged_file_is_reported_with_its_path_and_not_modified(roast_home: Path) -> None:
    store = SQLiteStore(roast_home)
    sid = make(store)
    store.close()
    with open(store.db_path, "r+b") as f:
        f.write(b"\xa5" * 100)
    damaged = Path(store.db_path).read_bytes()
    for call in (lambda: SQLiteStore(roast_home).get(sid), lambda: make(SQLiteStore(roast_home)),
                 lambda: SQLiteStore(roast_home).list()):
        with pytest.raises(StoreUnavailable) as err:
            call()
        assert err.value.exit_code == 4
        assert str(err.value).startswith(f"the session store {store.db_path} is damaged (")
        assert "it was not modified" in str(err.value) and ".recover" in str(err.value)
    assert Path(store.db_path).read_bytes() == damaged


@pytest.mark.sqlite_only
def test_sqlite_an_empty_sessions_db_is_refused_not_replaced(roast_home: Path) -> None:
    roast_home.mkdir(mode=0o700)
    (roast_home / "sessions.db").write_bytes(b"")
    for call in (lambda: SQLiteStore(roast_home).list(), lambda: make(SQLiteStore(roast_home))):
        with pytest.raises(StoreUnavailable, match=r"is empty \(0 bytes\); it was not used"):
            call()
    assert (roast_home / "sessions.db").read_bytes() == b""


@pytest.mark.sqlite_only
def test_sqlite_a_roast_01_store_is_migrated_and_keeps_its_sessions(roast_home: Path) -> None:
    roast_home.mkdir(mode=0o700)
    with contextlib.closing(sqlite3.connect(roast_home / "sessions.db")) as db, db:
        for statement in SQLITE_MIGRATIONS[0]:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO sessions (id, workflow_path, workflow_name, fingerprint, status, created_at, "
                   "updated_at) VALUES ('old0session01', '/w/x.yml', 'x', 'fp', 'completed', 1, 1)")
        db.execute("INSERT INTO events (session_id, wait_seq, name, data, received_at, source) "
                   "VALUES ('old0session01', 1, 'approved', '{}', 1, 'cli')")
    store = SQLiteStore(roast_home)
    assert store.get("old0").status == "completed"
    assert [(e.name, e.outcome, e.consumed_at) for e in store.events("old0session01")] == [("approved", "consumed", 1)]
    assert raw(store, "PRAGMA user_version")[0][0] == len(SQLITE_MIGRATIONS)


MIGRATOR = r"""
import sys, time
from roast.api import open_store
from roast.store import NewSession
store = open_store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
store.create(NewSession(sys.argv[2], "/w/x.yml", "x", "fp", None, "/tmp", (), None, None, False, time.time()), {})
print("made", flush=True)
"""


def test_postgres_processes_meeting_an_empty_database_migrate_it_once(pg_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from roast.store_postgres import MIGRATIONS, PostgresStore

    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    ids = [f"mig{n}aaaaaaaaa" for n in range(6)]
    procs = [child(MIGRATOR, pg_url, sid) for sid in ids]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "made" in out, err
    store = PostgresStore(pg_url)
    assert store.list()[1] == 6
    assert raw(store, "SELECT version FROM roast_schema ORDER BY version") == [(n,) for n in
                                                                               range(1, len(MIGRATIONS) + 1)]


# --------------------------------------------------------------------------- PostgreSQL: the server and its faults

def _own_cluster(pg_server: Any) -> Any:
    if pg_server.cluster is None:
        pytest.skip("needs the tests' own PostgreSQL cluster (ROAST_TEST_PG_URL names another server)")
    return pg_server.cluster


def test_postgres_an_unreachable_server_is_exit_4_naming_host_and_port_never_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from _pg import free_port

    from roast.store_postgres import PostgresStore

    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    port = free_port()
    url = f"postgresql://ana:pw-s3cret-9@127.0.0.1:{port}/roast"
    store = PostgresStore(url)
    assert "pw-s3cret-9" not in store.describe() and "ana:***@" in store.describe()
    for call in (store.list, lambda: store.get("abcd"), lambda: make(store),
                 lambda: store.hold("abcd1234").__enter__()):
        with pytest.raises(StoreUnavailable) as err:
            call()
        text = str(err.value)
        assert err.value.exit_code == 4 and "pw-s3cret-9" not in text, text
        assert text.startswith(f"cannot reach the PostgreSQL session store at 127.0.0.1:{port} (") and \
            "nothing changed" in text, text
    monkeypatch.setenv("ROAST_STORE", url)
    proc = subprocess.run([sys.executable, "-m", "roast", "sessions"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    assert proc.returncode == 4 and f"127.0.0.1:{port}" in proc.stderr
    assert "pw-s3cret-9" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_postgres_a_wrong_password_and_a_missing_database_are_named(pg_server: Any, pg_url: str) -> None:
    from roast.store_postgres import PostgresStore

    cluster = _own_cluster(pg_server)
    with pg_server.admin() as admin:
        admin.execute("DROP ROLE IF EXISTS roast_pw")
        admin.execute("CREATE ROLE roast_pw LOGIN PASSWORD 'right-pw-42'")
    dbname = pg_url.split("/")[3].split("?")[0]
    wrong = PostgresStore(f"postgresql://roast_pw:wrong-pw-17@127.0.0.1:{cluster.port}/{dbname}")
    with pytest.raises(StoreUnavailable) as err:
        wrong.list()
    assert str(err.value).startswith(f"the PostgreSQL server at 127.0.0.1:{cluster.port} refused the login of user "
                                     "'roast_pw' (authentication failed); nothing changed")
    assert "wrong-pw-17" not in str(err.value)
    right = PostgresStore(f"postgresql://roast_pw:right-pw-42@127.0.0.1:{cluster.port}/nosuchdb")
    with pytest.raises(StoreUnavailable) as err:
        right.list()
    assert str(err.value).startswith(f"the PostgreSQL server at 127.0.0.1:{cluster.port} has no database "
                                     "'nosuchdb'; nothing changed")
    assert "right-pw-42" not in str(err.value)


def test_postgres_a_read_only_database_serves_reads_and_refuses_writes(
        pg_server: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from roast.store_postgres import PostgresStore

    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    sid = waiting(PostgresStore(pg_url))
    dbname = pg_url.split("/")[3].split("?")[0]
    with pg_server.admin() as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    store = PostgresStore(pg_url)
    before = dump(store)
    assert store.get(sid).status == "waiting" and store.list()[1] == 1
    for call in (lambda: store.deliver(sid, event()), lambda: make(store), lambda: store.hold(sid).__enter__()):
        with pytest.raises(StoreUnavailable) as err:
            call()
        assert str(err.value).startswith(f"the session store {store.describe()} is read-only (")
        assert "nothing changed" in str(err.value)
    assert dump(store) == before


def test_postgres_a_full_disk_leaves_the_previous_state_intact(pg_server: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables on a 512 KiB tmpfs tablespace: a big delta fills it (ENOSPC, SQLSTATE 53100)."""
    from roast.store_postgres import PostgresStore

    cluster = _own_cluster(pg_server)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    tiny = cluster.base / f"tiny-{os.getpid()}"
    tiny.mkdir()
    import pwd

    owner = pwd.getpwnam(cluster.user) if cluster.user else pwd.getpwuid(os.geteuid())
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=512k,uid={owner.pw_uid},gid={owner.pw_gid},mode=0700",
                    "tmpfs", str(tiny)], check=True)
    url = pg_server.create()
    dbname = url.split("/")[3].split("?")[0]
    try:
        with pg_server.admin() as admin:
            admin.execute(f"CREATE TABLESPACE {dbname}_tiny LOCATION '{tiny}'")
            admin.execute(f'ALTER DATABASE "{dbname}" SET default_tablespace = {dbname}_tiny')
        monkeypatch.setenv("ROAST_KEY", TEST_KEY)
        store = PostgresStore(url)
        sid = waiting(store, {"small": 1})
        consume(store, sid)
        store.advance(sid, changes={"small": 2}, cursor="steps[2]")
        before = dump(store)
        with pytest.raises(StoreUnavailable) as err:
            store.advance(sid, changes={"big": os.urandom(1024 * 1024)}, cursor="steps[3]")
        assert err.value.exit_code == 4
        assert str(err.value).startswith(f"could not save session {sid} (disk full on the PostgreSQL server at ")
        assert "nothing changed" in str(err.value) and "free some disk space" in str(err.value)
        assert dump(store) == before and store.load_state(store.get(sid)).deltas == [{"small": 2}]
        store.close()
    finally:
        pg_server.drop(url)
        with pg_server.admin() as admin:
            admin.execute(f"DROP TABLESPACE IF EXISTS {dbname}_tiny")
        subprocess.run(["umount", str(tiny)], check=False)
        tiny.rmdir()


def test_postgres_a_lost_connection_mid_branch_is_exit_4_and_the_session_stays_recoverable(
        pg_server: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from roast.store_postgres import PostgresStore

    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    store = PostgresStore(pg_url)
    sid = new_id()
    with store.hold(sid, "roast execute"):
        make(store, sid=sid)
        store.advance(sid, changes={"n": 1}, cursor="steps[1]", start=StepStart("1", "s1", T0))
        with pg_server.admin(pg_url) as admin:  # the server ends our connection (restart, failover, kill)
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                                   "current_database() AND pid <> pg_backend_pid()").fetchall()
        assert killed
        for call in (lambda: store.advance(sid, changes={"n": 2}, cursor="steps[2]"), lambda: store.get(sid)):
            with pytest.raises(StoreUnavailable) as err:
                call()
            assert str(err.value).startswith("lost the connection to the PostgreSQL session store at ")
            assert f"while running session {sid}" in str(err.value)
    recovered = PostgresStore(pg_url)
    session = recovered.get(sid)
    assert session.status == "running" and session.cursor == "steps[1]"
    with recovered.hold(sid, "roast resume (recovery)"):  # its lock went with the connection
        recovered.take_over(sid)
        assert recovered.load_state(recovered.get(sid)).deltas == [{"n": 1}]
    assert store.get(sid).status == "running"  # the first store connects afresh once its hold has ended


CUT = r"""
import os, sys, psycopg
marker = sys.argv[1]
if not os.path.exists(marker):  # only the first attempt cuts: the re-run after recovery must get through
    open(marker, "w").close()
    with psycopg.connect(os.environ["ROAST_STORE"], autocommit=True) as db:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid()")
print("cut")
"""


def test_postgres_a_run_whose_connection_is_cut_exits_4_and_another_process_continues_it(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §11 on PostgreSQL: the server ends roast's connection during a step (a restart, a
    failover); the process stops with exit 4 naming the last saved step, and `roast resume -s ID`
    continues from there."""
    from conftest import write_workflow

    (tmp_path / "cut.py").write_text(CUT)
    wf = write_workflow(tmp_path, f"""
        steps:
          - one: $(echo one)
          - cut: $({sys.executable} {tmp_path / "cut.py"} {tmp_path / "cut-once"})
          - three: $(echo three)
    """)
    env = {**os.environ, "ROAST_STORE": pg_url, "ROAST_KEY": TEST_KEY, "PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, "-m", "roast", "execute", str(wf), "--json"], capture_output=True,
                           text=True, env=env, timeout=120, check=False)
    assert first.returncode == 4, first.stderr
    assert "lost the connection to the PostgreSQL session store" in first.stderr and "Traceback" not in first.stderr
    (sid,) = [s.id for s in roast_sessions(pg_url)]
    assert f"`roast resume -s {sid}` continues it" in first.stderr
    again = subprocess.run([sys.executable, "-m", "roast", "resume", "-s", sid, "--json"], capture_output=True,
                           text=True, env=env, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["output"] == {"one": "one", "cut": "cut", "three": "three"}


def roast_sessions(url: str) -> list[Any]:
    from roast import api

    return api.sessions(store=url, limit=None)


def test_postgres_a_forked_child_uses_its_own_connection(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from roast.store_postgres import PostgresStore

    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    store = PostgresStore(pg_url)
    sid = waiting(store)
    pid = os.fork()
    if pid == 0:  # the child: the parent's connection must not be touched (nor closed)
        code = 0
        try:
            code = 0 if store.deliver(sid, event()).outcome == "consumed" else 1
        except BaseException:  # noqa: BLE001 - the exit code reports it
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get(sid).status == "running" and store.list()[1] == 1  # the parent's connection still works
