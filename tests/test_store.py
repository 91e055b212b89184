"""The session store: ids, the exactly-once claim, sealed continuations, store faults, liveness locks."""
from __future__ import annotations

import datetime
import json
import os
import pickle
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from roast import store as store_mod
from roast.errors import NotFound, NotWaiting, Refused, StateRefused, StoreUnavailable, UsageError
from roast.store import SESSION_ID, StepDone, Store, new_id, seal, unseal

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000.0  # 2026-09-21 14:13:20Z, a fixed "now"

# sys.addaudithook cannot be removed, so one hook for the whole module records every global that
# unpickling resolves (reliability §2.3: a refused envelope must show zero of these).
FIND_CLASS: list[tuple[object, ...]] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "pickle.find_class":
        FIND_CLASS.append(args)


sys.addaudithook(_audit)


def make(store: Store, *, now: float = T0, workflow: str = "/w/deploy/workflow.yml", name: str = "deploy",
         **kw: object) -> str:
    return store.create(workflow_path=workflow, workflow_name=name, fingerprint="fp", target=None, now=now, **kw)


def waiting(store: Store, state: object = None, *, now: float = T0, deadline: float | None = None,
            **kw: object) -> str:
    sid = make(store, now=now, **kw)
    store.suspend(sid, {"outputs": {"build": "ok"}} if state is None else state, cursor="1/wait",
                  awaiting=[{"event": "approved", "wait": "wait_for_event", "path": "1", "deadline": deadline},
                            {"event": "rejected", "wait": "wait_for_event", "path": "1", "deadline": None}],
                  now=now)
    return sid


def dump(db_path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(db_path) as db:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("sessions", "continuations", "steps", "events")}


def envelope_of(store: Store, sid: str) -> bytes:
    with sqlite3.connect(store.db_path) as db:
        return bytes(db.execute("SELECT envelope FROM continuations WHERE session_id = ?", (sid,)).fetchone()[0])


def put_envelope(store: Store, sid: str, blob: bytes) -> None:
    with sqlite3.connect(store.db_path) as db:
        db.execute("UPDATE continuations SET envelope = ? WHERE session_id = ?", (blob, sid))


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def make_lambda_state() -> dict[str, object]:
    offset = 3
    return {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "fn": lambda x: x + offset}


# -- home, ids and lookup -------------------------------------------------------------------------

def test_a_new_store_creates_nothing_until_the_first_write(roast_home: Path) -> None:
    store = Store()
    assert store.home == roast_home
    assert store.list() == ([], 0)
    with pytest.raises(NotFound):
        store.get("abcd")
    assert not roast_home.exists()
    make(store)
    assert roast_home.stat().st_mode & 0o777 == 0o700
    assert store.db_path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(store.db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(store_mod.MIGRATIONS)


def test_a_roast_home_that_is_a_file_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home-file").write_text("x")
    monkeypatch.setenv("ROAST_HOME", str(tmp_path / "home-file"))
    with pytest.raises(UsageError) as err:
        Store()
    assert err.value.exit_code == 2 and "is a file" in str(err.value)


def test_an_explicit_home_wins_over_the_environment(tmp_path: Path) -> None:
    assert Store(tmp_path / "elsewhere").home == tmp_path / "elsewhere"


def test_new_ids_are_lowercase_sortable_and_valid() -> None:
    a, b = new_id(T0), new_id(T0 + 0.001)
    assert SESSION_ID.fullmatch(a) and a == a.lower() and len(a) == 13
    assert a[:9] < b[:9]
    assert new_id(0)[:9] == "000000000"


def test_get_finds_a_session_by_its_id_and_by_a_unique_prefix() -> None:
    store = Store()
    sid = make(store)
    other = make(store, now=T0 + 86_400 * 400)  # a different leading base36 digit
    assert store.get(sid).id == sid
    assert store.get(sid[:4]).id == sid
    assert store.get(other[:6]).id == other


def test_an_ambiguous_prefix_lists_up_to_ten_candidates() -> None:
    store = Store()
    ids = [make(store) for _ in range(12)]  # same millisecond: same first 9 characters
    with pytest.raises(NotFound) as err:
        store.get(ids[0][:9])
    text = str(err.value)
    assert err.value.exit_code == 3 and "ambiguous" in text
    assert sum(sid in text for sid in ids) == 10 and "and more" in text


@pytest.mark.parametrize("bad", ["../../etc/passwd", "%", "abc", "_abc", "ABCD", "ab\x00cd", "a" * 65, "abcd%"])
def test_a_malformed_id_is_a_usage_error_before_the_store_is_touched(bad: str, roast_home: Path) -> None:
    store = Store()
    for call in (lambda: store.get(bad), lambda: store.cancel(bad), lambda: store.history(bad),
                 lambda: store.claim(bad, wait_seq=1, event="approved", data={}),
                 lambda: store.hold(bad).__enter__()):
        with pytest.raises(UsageError) as err:
            call()
        assert err.value.exit_code == 2 and "is not a session id" in str(err.value)
    assert not roast_home.exists()


def test_a_prefix_is_matched_literally_not_as_a_like_pattern() -> None:
    store = Store()
    sid = make(store)
    with pytest.raises(NotFound) as err:
        store.get(sid[:3] + "_")
    assert "roast sessions" in str(err.value)


def test_an_unknown_id_is_not_found_with_a_hint() -> None:
    store = Store()
    make(store)
    with pytest.raises(NotFound) as err:
        store.get("zzzz9999")
    assert err.value.exit_code == 3 and "zzzz9999" in str(err.value) and "roast sessions" in str(err.value)


def test_the_store_module_imports_neither_yaml_rich_nor_cloudpickle() -> None:
    code = "import sys, roast.store; print(sorted(m for m in ('yaml', 'rich', 'cloudpickle') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True)
    assert out.stdout.strip() == "[]"


# -- the exactly-once claim ---------------------------------------------------------------------

def test_a_second_claim_of_the_same_wait_is_refused_with_exit_3() -> None:
    store = Store()
    sid = waiting(store, deadline=T0 + 60)
    session = store.get(sid)
    assert (session.status, session.wait_seq, session.deadline) == ("waiting", 1, T0 + 60)
    assert [w["event"] for w in session.awaiting] == ["approved", "rejected"]
    store.claim(sid, wait_seq=1, event="approved", data={"by": "ana"}, now=T0 + 10)
    with pytest.raises(NotWaiting) as err:
        store.claim(sid, wait_seq=1, event="rejected", data={}, now=T0 + 11)
    assert err.value.exit_code == 3
    assert str(err.value).startswith(f"session {sid} is no longer waiting: it is running (resumed at ")
    assert "with 'approved'" in str(err.value)
    assert [(e.name, e.data, e.wait_seq, e.source) for e in store.events(sid)] == [
        ("approved", {"by": "ana"}, 1, "cli")]
    assert store.get(sid).attempt == 2 and store.get(sid).status == "running"


def test_claiming_a_completed_session_says_when_it_completed() -> None:
    store = Store()
    sid = waiting(store)
    store.claim(sid, wait_seq=1, event="approved", data={}, now=T0 + 5)
    store.finish(sid, "completed", output={"ok": True}, final_output="done", now=T0 + 3600)
    with pytest.raises(NotWaiting) as err:
        store.claim(sid, wait_seq=1, event="approved", data={})
    assert "it completed at 2026-09-21 15:13:20Z" in str(err.value)


def test_claiming_an_earlier_wait_names_the_current_one() -> None:
    store = Store()
    sid = waiting(store)
    store.claim(sid, wait_seq=1, event="approved", data={})
    store.suspend(sid, {}, cursor="3/wait", awaiting=[{"event": "merged", "wait": "w2", "path": "3",
                                                       "deadline": None}])
    with pytest.raises(NotWaiting) as err:
        store.claim(sid, wait_seq=1, event="approved", data={})
    assert "no longer at wait #1" in str(err.value) and "'merged' (wait #2)" in str(err.value)


RACER = r"""
import json, random, sys
from roast.store import Store
from roast.errors import NotWaiting
home, ids, seed = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
random.Random(seed).shuffle(ids)
store = Store(home)
print("ready", flush=True)
sys.stdin.readline()
won, lost, other = [], 0, []
for sid in ids:
    try:
        store.claim(sid, wait_seq=1, event="approved", data={"racer": seed}, source="race")
        won.append(sid)
    except NotWaiting as err:
        lost += 1 if "no longer waiting" in str(err) else 0
    except BaseException as err:
        other.append(repr(err))
print(json.dumps({"won": won, "lost": lost, "other": other}), flush=True)
"""


def test_eight_processes_racing_for_twenty_waits_consume_each_event_exactly_once() -> None:
    store = Store()
    ids = [waiting(store) for _ in range(20)]
    racers = [spawn(RACER, str(store.home), json.dumps(ids), str(seed)) for seed in range(8)]
    for proc in racers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in racers:  # all are imported and waiting: release them together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in racers:
        out, errtext = proc.communicate(timeout=60)
        assert proc.returncode == 0, errtext
        results.append(json.loads(out.strip().splitlines()[-1]))
    won = [sid for r in results for sid in r["won"]]
    assert sorted(won) == sorted(ids)  # every wait claimed once, none twice
    assert sum(r["lost"] for r in results) == 8 * 20 - 20  # every loser was told "no longer waiting"
    assert [r["other"] for r in results] == [[]] * 8  # no sqlite error leaked
    with sqlite3.connect(store.db_path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 20
    assert {store.get(sid).attempt for sid in ids} == {2}


# -- continuations ------------------------------------------------------------------------------

def test_state_round_trips_through_suspend_and_load_state() -> None:
    store = Store()
    sid = waiting(store, make_lambda_state())
    state = store.load_state(store.get(sid))
    assert isinstance(state, dict)
    assert state["when"] == datetime.datetime(2026, 1, 2, 3, 4, 5) and state["fn"](1) == 4
    assert store.key_path().stat().st_mode & 0o777 == 0o600 and len(store.key_path().read_bytes()) == 32


def test_a_checkpoint_saves_cursor_and_state_only_while_running() -> None:
    store = Store()
    sid = make(store)
    store.checkpoint(sid, {"step": 1}, cursor="1", now=T0 + 1)
    assert store.get(sid).cursor == "1" and store.load_state(store.get(sid)) == {"step": 1}
    store.suspend(sid, {"step": 2}, cursor="2", awaiting=[{"event": "go", "wait": "w", "path": "2",
                                                          "deadline": None}])
    before = dump(store.db_path)
    with pytest.raises(Refused) as err:
        store.checkpoint(sid, {"step": 3}, cursor="3")
    assert "now waits for 'go'" in str(err.value) and dump(store.db_path) == before


def test_unpicklable_state_is_refused_and_nothing_changes() -> None:
    store = Store()
    sid = make(store)
    before = dump(store.db_path)
    with pytest.raises(UsageError) as err:
        store.checkpoint(sid, {"gen": (x for x in [1])}, cursor="1")
    assert f"session {sid}" in str(err.value) and dump(store.db_path) == before


def test_the_has_code_scan_tells_code_from_plain_data() -> None:
    import cloudpickle

    def local_class() -> type:
        class Local:
            pass
        return Local

    assert not store_mod._has_code(cloudpickle.dumps({"a": ["b", 1, 2.5, None], "cloudpickle": "CodeType"}))
    assert not store_mod._has_code(cloudpickle.dumps({"when": datetime.date(2026, 1, 1)}))
    assert store_mod._has_code(cloudpickle.dumps({"fn": lambda: 1}))
    assert store_mod._has_code(cloudpickle.dumps(local_class()))


def test_two_hundred_flipped_bytes_are_all_refused_and_nothing_is_unpickled() -> None:
    store = Store()
    sid = waiting(store, make_lambda_state())
    envelope = envelope_of(store, sid)
    key = store.key_path().read_bytes()
    FIND_CLASS.clear()
    unseal(envelope, key=key, session_id=sid, wait_seq=1)
    assert FIND_CLASS, "control: loading this state resolves globals"
    FIND_CLASS.clear()
    rng = random.Random(2026)
    for offset in rng.sample(range(len(envelope)), 200):
        flipped = bytearray(envelope)
        flipped[offset] ^= rng.randrange(1, 256)
        with pytest.raises(StateRefused) as err:
            unseal(bytes(flipped), key=key, session_id=sid, wait_seq=1)
        assert "it was not loaded" in str(err.value), offset
    put_envelope(store, sid, envelope[:-1] + bytes([envelope[-1] ^ 1]))
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(sid))
    assert str(err.value).startswith(f"the state of session {sid} failed its integrity check "
                                     "(modified outside roast?); it was not loaded")
    assert err.value.exit_code == 3
    assert FIND_CLASS == []


class Boom:
    """Unpickling this creates a file: what a forged continuation would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (str(self.path), "w"))


def test_a_forged_payload_that_would_create_a_file_is_refused_and_never_runs(tmp_path: Path) -> None:
    store = Store()
    sid = waiting(store)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Boom(control))).close()
    assert control.exists(), "control: the payload really does create a file"
    target = tmp_path / "pwned"
    attacker_key = os.urandom(32)
    forged = store_mod._envelope(pickle.dumps(Boom(target)), False, attacker_key, session_id=sid, wait_seq=1,
                                 now=T0)
    FIND_CLASS.clear()
    for blob in (forged, pickle.dumps(Boom(target)), forged[:-32] + bytes(32)):
        put_envelope(store, sid, blob)
        with pytest.raises(StateRefused):
            store.load_state(store.get(sid))
    assert FIND_CLASS == [] and not target.exists()


def test_a_truncated_envelope_is_refused_as_truncated() -> None:
    store = Store()
    sid = waiting(store, {"big": "x" * 5000})
    envelope = envelope_of(store, sid)
    key = store.key_path().read_bytes()
    for cut in (3, 20, len(envelope) // 2, len(envelope) - 40):
        with pytest.raises(StateRefused) as err:
            unseal(envelope[:cut], key=key, session_id=sid, wait_seq=1)
        assert "is truncated" in str(err.value) and "disk or copy damage" in str(err.value), cut
    with pytest.raises(StateRefused) as err:
        unseal(envelope[:len(envelope) // 2], key=key, session_id=sid, wait_seq=1)
    assert f"of {len(envelope):,} bytes" in str(err.value)


def test_a_bad_magic_and_a_newer_format_are_refused_with_their_own_messages() -> None:
    key = b"k" * 32
    envelope = seal({"a": 1}, key=key, session_id="abcd1234", wait_seq=1)
    with pytest.raises(StateRefused, match="bad magic"):
        unseal(b"XOAST" + envelope[5:], key=key, session_id="abcd1234", wait_seq=1)
    with pytest.raises(StateRefused, match=r"newer roast \(format v2\)"):
        unseal(envelope[:5] + b"\x02" + envelope[6:], key=key, session_id="abcd1234", wait_seq=1)


def test_a_blob_swapped_between_two_sessions_is_refused() -> None:
    store = Store()
    a, b = waiting(store, {"who": "a"}), waiting(store, {"who": "b"})
    put_envelope(store, b, envelope_of(store, a))
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(b))
    assert f"holds the state of session {a} at wait #1, not of session {b}" in str(err.value)
    assert store.load_state(store.get(a)) == {"who": "a"}  # the other session is untouched


def test_a_blob_from_an_earlier_wait_of_the_same_session_is_refused() -> None:
    store = Store()
    sid = waiting(store, {"wait": 1})
    first = envelope_of(store, sid)
    store.claim(sid, wait_seq=1, event="approved", data={})
    store.suspend(sid, {"wait": 2}, cursor="5", awaiting=[{"event": "go", "wait": "w", "path": "5",
                                                          "deadline": None}])
    put_envelope(store, sid, first)
    with pytest.raises(StateRefused, match="at wait #1, not of session .* at wait #2"):
        store.load_state(store.get(sid))


def test_a_key_file_readable_by_others_is_refused_for_loading_and_saving() -> None:
    store = Store()
    sid = waiting(store)
    store.key_path().chmod(0o644)
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(sid))
    assert f"{store.key_path()} is readable by others (0644)" in str(err.value)
    assert f"chmod 600 {store.key_path()}" in str(err.value)
    other = make(store)
    with pytest.raises(StoreUnavailable, match=r"readable by others \(0644\)"):
        store.checkpoint(other, {"x": 1}, cursor="1")
    store.key_path().chmod(0o600)
    assert store.load_state(store.get(sid)) == {"outputs": {"build": "ok"}}


def test_a_missing_key_with_saved_sessions_is_refused_and_no_new_key_is_made() -> None:
    store = Store()
    sid = waiting(store)
    other = make(store)
    store.key_path().unlink()
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(sid))
    assert f"signing key {store.key_path()} is missing; restore it from backup or set ROAST_SECRET_KEY_FILE" \
        in str(err.value)
    before = dump(store.db_path)
    with pytest.raises(StoreUnavailable, match="is missing"):
        store.suspend(other, {}, cursor="1", awaiting=[])
    assert not store.key_path().exists() and dump(store.db_path) == before


def test_roast_secret_key_file_moves_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAST_SECRET_KEY_FILE", str(tmp_path / "keys" / "roast.key"))
    store = Store()
    sid = waiting(store)
    assert (tmp_path / "keys" / "roast.key").stat().st_mode & 0o777 == 0o600
    assert not (store.home / "secret.key").exists()
    assert store.load_state(store.get(sid)) == {"outputs": {"build": "ok"}}


def test_code_in_state_from_another_python_is_refused_but_plain_data_loads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudpickle

    store = Store()
    code_sid = waiting(store, make_lambda_state())
    data_sid = waiting(store, {"outputs": {"a": "b"}, "n": [1, 2.5]})
    saved = store_mod.PYTHON_VERSION
    monkeypatch.setattr(store_mod, "PYTHON_VERSION", "3.99.0")
    FIND_CLASS.clear()
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(code_sid))
    assert str(err.value).startswith(
        f"session {code_sid} was saved by CPython {saved} / cloudpickle {cloudpickle.__version__}; "
        f"this is CPython 3.99.0 / cloudpickle {cloudpickle.__version__}, and its state holds code")
    assert FIND_CLASS == []
    assert store.load_state(store.get(data_sid)) == {"outputs": {"a": "b"}, "n": [1, 2.5]}
    monkeypatch.setattr(store_mod, "PYTHON_VERSION", saved)
    monkeypatch.setattr(store_mod, "PYTHON_IMPL", "pypy")
    with pytest.raises(StateRefused, match="this is PyPy"):
        store.load_state(store.get(code_sid))


def test_a_load_that_fails_after_a_good_signature_is_refused_with_the_versions() -> None:
    store = Store()
    sid = waiting(store)
    key = store.key_path().read_bytes()
    payload = pickle.dumps(datetime.date(2026, 1, 1)).replace(b"datetime", b"nodatetm")  # a module that is gone
    put_envelope(store, sid, store_mod._envelope(payload, False, key, session_id=sid, wait_seq=1, now=T0))
    with pytest.raises(StateRefused) as err:
        store.load_state(store.get(sid))
    assert "cannot be loaded here (ModuleNotFoundError" in str(err.value)
    assert f"saved by CPython {store_mod.PYTHON_VERSION}" in str(err.value)


def test_finish_deletes_the_continuation_and_keeps_the_row() -> None:
    store = Store()
    sid = waiting(store)
    store.claim(sid, wait_seq=1, event="approved", data={})
    store.finish(sid, "completed", output={"approved": {"event": "approved"}}, final_output="done", now=T0 + 9)
    session = store.get(sid)
    assert (session.status, session.finished_at, session.final_output) == ("completed", T0 + 9, "done")
    assert session.output == {"approved": {"event": "approved"}} and session.awaiting == []
    with pytest.raises(NotFound, match="no saved state"):
        store.load_state(session)
    with pytest.raises(Refused, match="it completed at"):
        store.finish(sid, "failed")


# -- store faults (exit 4, nothing changed) -----------------------------------------------------

HOLDER = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def test_a_locked_store_is_unavailable_and_the_session_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    sid = waiting(store)
    before = dump(store.db_path)
    monkeypatch.setenv("ROAST_BUSY_TIMEOUT", "0.5")
    holder = spawn(HOLDER, str(store.db_path))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreUnavailable) as err:
            store.claim(sid, wait_seq=1, event="approved", data={})
        assert err.value.exit_code == 4
        assert str(err.value) == (f"the session store {store.db_path} is busy (another roast process has held "
                                  "the write lock for more than 0.5 s); nothing changed, try again")
        assert store.get(sid).status == "waiting"  # WAL: reads still work under a writer
    finally:
        holder.communicate("done\n", timeout=30)
    assert dump(store.db_path) == before


def test_a_full_disk_leaves_the_previous_state_intact() -> None:
    store = Store()
    sid = waiting(store, {"small": 1})
    store.claim(sid, wait_seq=1, event="approved", data={})
    store.checkpoint(sid, {"small": 2}, cursor="2")
    before = dump(store.db_path)
    store._on_connect = lambda db: db.execute(
        f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    store.close()  # the hook applies to new connections; the store keeps one per thread
    with pytest.raises(StoreUnavailable) as err:
        store.checkpoint(sid, {"big": os.urandom(256 * 1024)}, cursor="3")
    assert err.value.exit_code == 4
    assert str(err.value).startswith(f"could not save session {sid} (disk full at {store.db_path}); "
                                     f"nothing changed; session {sid} is still at its previous step")
    store._on_connect = None
    assert dump(store.db_path) == before
    assert store.get(sid).cursor == "2" and store.load_state(store.get(sid)) == {"small": 2}


def test_a_corrupt_database_file_is_reported_with_its_path_and_not_modified() -> None:
    store = Store()
    sid = make(store)
    store.close()  # as a new process would meet the damaged file
    with open(store.db_path, "r+b") as f:
        f.write(b"\xa5" * 100)
    damaged = store.db_path.read_bytes()
    for call in (lambda: store.get(sid), lambda: make(store), lambda: store.list()):
        with pytest.raises(StoreUnavailable) as err:
            call()
        assert err.value.exit_code == 4
        assert str(err.value).startswith(f"the session store {store.db_path} is damaged (")
        assert "it was not modified" in str(err.value) and ".recover" in str(err.value)
    assert store.db_path.read_bytes() == damaged


def test_a_newer_schema_is_refused_without_changes() -> None:
    store = Store()
    make(store)
    with sqlite3.connect(store.db_path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreUnavailable, match="newer roast"):
        Store().list()  # the schema is checked when a process first connects


def test_a_bad_busy_timeout_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAST_BUSY_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="ROAST_BUSY_TIMEOUT"):
        make(Store())


# -- steps, events, listing, pruning ------------------------------------------------------------

def test_step_attempts_count_up_when_a_step_runs_again() -> None:
    store = Store()
    sid = make(store)
    assert store.step_started(sid, path="0", name="build", now=T0) == 1
    store.checkpoint(sid, {"after": "build"}, cursor="1", now=T0 + 1,
                     finished=[StepDone("0", 1, "completed", "ok", T0 + 1)])  # written with the checkpoint
    assert store.step_started(sid, path="1", name="deploy", now=T0 + 2) == 1
    assert store.step_started(sid, path="1", name="deploy", now=T0 + 3) == 2  # after a crash
    assert [(s.path, s.attempt, s.status, s.output) for s in store.history(sid[:6])] == [
        ("0", 1, "completed", "ok"), ("1", 1, "running", None), ("1", 2, "running", None)]
    with pytest.raises(NotFound):
        store.step_started("zzzz0000", path="0", name="x")


def test_listing_filters_pages_and_counts() -> None:
    store = Store()
    ids = []
    for i in range(7):
        wf = "/w/a/workflow.yml" if i % 2 == 0 else "/w/b/workflow.yml"
        ids.append(waiting(store, now=T0 + i * 100, workflow=wf, name=wf.split("/")[2]))
    store.claim(ids[0], wait_seq=1, event="approved", data={}, now=T0 + 1000)
    store.finish(ids[0], "completed", now=T0 + 1000)
    page, total = store.list(limit=3)
    assert [s.id for s in page] == ids[::-1][:3] and total == 7
    page, total = store.list(limit=3, offset=6)
    assert [s.id for s in page] == [ids[0]] and total == 7
    assert store.list(limit=None)[0][-1].id == ids[0]
    page, total = store.list(statuses=["waiting"], workflow="a")
    assert [s.id for s in page] == [ids[6], ids[4], ids[2]] and total == 3
    page, total = store.list(workflow="/w/b/workflow.yml", since=T0 + 200)
    assert [s.id for s in page] == [ids[5], ids[3]] and total == 2
    page, total = store.list(older_than=450, now=T0 + 700)
    assert {s.id for s in page} == {ids[1], ids[2]} and total == 2
    assert [s.id for s in store.waiting_for("/w/a/workflow.yml")] == [ids[6], ids[4], ids[2]]
    with pytest.raises(UsageError, match="unknown status 'paused'"):
        store.list(statuses=["paused"])


def test_overdue_lists_waiting_sessions_past_their_deadline() -> None:
    store = Store()
    late = waiting(store, deadline=T0 + 10)
    waiting(store, deadline=T0 + 1000)
    waiting(store)
    assert [s.id for s in store.overdue(now=T0 + 10)] == [late]
    store.claim(late, wait_seq=1, event="timeout", data={}, source="tick", now=T0 + 11)
    assert store.overdue(now=T0 + 10) == [] and store.events(late)[0].source == "tick"


def test_prune_deletes_old_finished_sessions_but_never_waiting_or_running() -> None:
    store = Store()
    old = {}
    for status in ("completed", "failed", "timed_out", "cancelled", "waiting", "running"):
        sid = waiting(store, now=T0)
        old[status] = sid
        if status == "cancelled":
            store.cancel(sid, now=T0)
        elif status != "waiting":
            store.claim(sid, wait_seq=1, event="approved", data={}, now=T0)
            if status != "running":
                store.finish(sid, status, now=T0)
    with store.hold(old["completed"]):
        pass  # leaves a lock file behind
    recent = waiting(store, now=T0)
    store.cancel(recent, now=T0 + 3000)
    assert store.prune(older_than=3600, now=T0 + 3600 + 1) == 4
    left = {s.id for s in store.list(limit=None)[0]}
    assert left == {old["waiting"], old["running"], recent}
    assert not (store.home / "locks" / f"{old['completed']}.lock").exists()
    with sqlite3.connect(store.db_path) as db:
        assert {r[0] for r in db.execute("SELECT session_id FROM events")} == {old["running"]}
    assert store.prune(older_than=0, now=T0 + 10**6) == 1  # only the cancelled recent one


# -- liveness and cancel --------------------------------------------------------------------------

def test_hold_excludes_a_second_holder_and_a_free_lock_means_orphaned() -> None:
    store = Store()
    sid = make(store)
    with store.hold(sid):
        assert store.get(sid).orphaned is False
        with pytest.raises(NotWaiting, match="being run by another roast process") as err, store.hold(sid):
            pass
        assert err.value.exit_code == 3
    assert store.get(sid).orphaned is True
    assert store.list()[0][0].orphaned is True
    with store.hold(sid):  # free again
        pass
    assert waiting(store) and not any(s.orphaned for s in store.list(statuses=["waiting"])[0])


LOCKER = r"""
import sys
from roast.store import Store
with Store(sys.argv[1]).hold(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_running_session_is_orphaned_once_its_process_dies_and_can_then_be_cancelled() -> None:
    store = Store()
    sid = waiting(store)
    store.claim(sid, wait_seq=1, event="approved", data={})
    proc = spawn(LOCKER, str(store.home), sid)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert store.get(sid).orphaned is False
        with pytest.raises(Refused, match="running in another roast process"):
            store.cancel(sid)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert store.get(sid).orphaned is True
    cancelled = store.cancel(sid[:6], reason="stuck", now=T0 + 50)
    assert (cancelled.status, cancelled.reason, cancelled.finished_at) == ("cancelled", "stuck", T0 + 50)


def test_cancel_stops_a_waiting_session_and_refuses_a_finished_one() -> None:
    store = Store()
    sid = waiting(store)
    assert store.cancel(sid, now=T0 + 5).status == "cancelled"
    with pytest.raises(NotFound, match="no saved state"):
        store.load_state(store.get(sid))
    with pytest.raises(Refused, match="cannot cancel session .*: it was cancelled at 2026-09-21 14:13:25Z"):
        store.cancel(sid)
    with pytest.raises(NotWaiting, match="it was cancelled"):
        store.claim(sid, wait_seq=1, event="approved", data={})


def test_reads_fall_back_to_an_immutable_view_when_the_store_cannot_be_opened_for_writing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    sid = waiting(store)
    real_open = Store._open

    def readonly_dir(self: Store, uri: str | None = None) -> sqlite3.Connection:
        if uri is None:  # what a WAL database in a read-only directory does (reliability §5 row 12)
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real_open(self, uri)

    monkeypatch.setattr(Store, "_open", readonly_dir)
    store.close()  # as a new process would open it
    assert store.get(sid).status == "waiting" and store.read_only_view is True
    with pytest.raises(StoreUnavailable, match=f"the session store {store.db_path} is read-only"):
        make(store)


def test_taking_a_lock_first_still_creates_a_private_home(roast_home: Path) -> None:
    with Store().hold("abcd1234"):
        assert roast_home.stat().st_mode & 0o777 == 0o700
