"""Data loss, leftovers, misleading refusals and tracebacks (issue 10 §5 and §6), through real processes.

Every bad environment or input here is a clear error with exit 2 (usage) or 4 (store), no traceback,
and nothing changed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _resume_helpers import dump_all, lines
from conftest import ROOT, write_workflow

import roast


def roast_proc(*args: str, env: dict[str, str] | None = None, input: str | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "roast", *args], capture_output=True, text=True, env=full,
                          input=input, cwd=cwd, timeout=60, check=False)


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return write_workflow(tmp_path, """
        steps:
          - $(echo built)
          - wait_for_event:
              approved: ["$(echo ok)"]
    """, name="gate")


# --------------------------------------------------------------------------- §5 data loss and leftovers


def test_a_store_truncated_to_zero_bytes_is_refused_not_taken_for_a_new_one(gate: Path, roast_home: Path) -> None:
    # the session is made by another process: this one holds no connection that could checkpoint
    # its WAL into the file after it is truncated (that made the test flaky under load)
    assert roast_proc("execute", str(gate)).returncode == 0
    (roast_home / "sessions.db").write_bytes(b"")  # someone truncated it
    for command in (["sessions"], ["execute", str(gate)], ["resume", str(gate), "-e", "approved"]):
        proc = roast_proc(*command)
        assert proc.returncode == 4, (command, proc.stderr)
        no_traceback(proc)
        assert "is empty (0 bytes)" in proc.stderr and "restore it from a backup" in proc.stderr
    assert (roast_home / "sessions.db").stat().st_size == 0  # nothing was written over it


def test_a_file_that_is_not_a_database_is_refused_as_damaged(gate: Path, roast_home: Path) -> None:
    assert roast_proc("execute", str(gate)).returncode == 0  # (no connection of this process, as above)
    (roast_home / "sessions.db").write_bytes(b"this is not sqlite" * 100)
    for name in ("sessions.db-wal", "sessions.db-shm"):
        (roast_home / name).unlink(missing_ok=True)
    proc = roast_proc("sessions")
    assert proc.returncode == 4, proc.stderr
    no_traceback(proc)
    assert "damaged" in proc.stderr or "not a database" in proc.stderr


def test_reading_a_read_only_store_leaves_no_read_only_wal_behind(gate: Path, roast_home: Path) -> None:
    made = roast_proc("execute", str(gate), "--json")
    assert made.returncode == 0, made.stderr
    sid = made.stdout.split('"session_id": "')[1].split('"')[0]
    db = roast_home / "sessions.db"
    import sqlite3

    conn = sqlite3.connect(db)  # the last connection to close checkpoints the WAL and removes it
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert not (roast_home / "sessions.db-wal").exists()
    db.chmod(0o400)
    try:
        proc = roast_proc("sessions", "--json")
        assert proc.returncode == 0, proc.stderr
        assert sid in proc.stdout and "read-only" in proc.stderr
        assert not (roast_home / "sessions.db-wal").exists() and not (roast_home / "sessions.db-shm").exists()
        refused = roast_proc("resume", str(gate), "-e", "approved")
        assert refused.returncode == 4 and "read-only" in refused.stderr and "chmod u+w" in refused.stderr
    finally:
        db.chmod(0o600)
    assert roast_proc("resume", str(gate), "-e", "approved").returncode == 0  # writable again: it works


def test_no_event_file_outlives_the_command_even_with_an_eight_way_parallel_group(tmp_path: Path) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    branches = "\n".join(f'          - - "$(cat $ROAST_EVENT_FILE > /dev/null; echo {i})"' for i in range(8))
    path = write_workflow(tmp_path, "steps:\n  - wait_for_event:\n      go:\n        - [" + ", ".join(
        f'"$(cat $ROAST_EVENT_FILE > /dev/null; echo {i})"' for i in range(8)) + "]\n", name="fan")
    del branches
    env = {"TMPDIR": str(spool)}
    for round_ in range(12):
        assert roast_proc("execute", str(path), env=env).returncode == 0
        done = roast_proc("resume", str(path), "-e", "go", "-d", '{"n": %d}' % round_, env=env)
        assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(spool)) == [], "roast left event files behind"


def test_a_refusal_names_what_actually_holds_the_session(gate: Path) -> None:
    sid = roast.run(gate).session_id
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from roast.store_sqlite import SQLiteStore
        with SQLiteStore().hold({sid!r}, "roast cancel"):
            print("held", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = dump_all()
        proc = roast_proc("resume", str(gate), "-e", "approved", "-s", sid)
        assert proc.returncode == 3, proc.stderr
        assert "roast cancel (pid" in proc.stderr  # not "another roast process"
        assert dump_all() == before
    finally:
        holder.communicate("\n", timeout=30)


# --------------------------------------------------------------------------- §6 no traceback, ever


@pytest.mark.parametrize(("variable", "value", "code", "says"), [
    ("ROAST_MAX_EVENT_BYTES", "abc", 2, "ROAST_MAX_EVENT_BYTES must be a positive whole number"),
    ("ROAST_MAX_EVENT_BYTES", "-5", 2, "ROAST_MAX_EVENT_BYTES must be a positive whole number"),
    ("ROAST_FAULT_AT", "abc", 2, "ROAST_FAULT_AT must be a whole number"),
    ("ROAST_BUSY_TIMEOUT", "soon", 2, "ROAST_BUSY_TIMEOUT must be a number of seconds"),
    ("ROAST_STORE", "mysql://db", 2, "is not a store URL"),
])
def test_a_bad_environment_variable_is_a_clear_error_and_changes_nothing(
        gate: Path, variable: str, value: str, code: int, says: str) -> None:
    sid = roast.run(gate).session_id
    before = dump_all()
    proc = roast_proc("resume", str(gate), "-e", "approved", "-d", "{}", env={variable: value})
    assert proc.returncode == code, proc.stderr
    no_traceback(proc)
    assert says in proc.stderr
    assert dump_all() == before
    assert roast.session(sid).status == "waiting"


@pytest.mark.parametrize("home", ["file", "long"])
def test_an_unusable_roast_home_is_exit_4_or_2_and_says_which(gate: Path, tmp_path: Path, home: str) -> None:
    if home == "file":
        (tmp_path / "a-file").write_text("x")
        value = str(tmp_path / "a-file" / "home")  # a directory below a file
    else:
        value = str(tmp_path / ("h" * 300))  # a name longer than 255 bytes
    proc = roast_proc("execute", str(gate), env={"ROAST_HOME": value})
    assert proc.returncode in (2, 4), proc.stderr
    no_traceback(proc)
    assert "ROAST_HOME" in proc.stderr or "session store" in proc.stderr


def test_execute_o_into_a_missing_directory_is_refused_before_any_step_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_workflow(tmp_path, f"steps: ['$(touch {marker})']", name="o")
    proc = roast_proc("execute", str(path), "-o", str(tmp_path / "missing" / "out.txt"))
    assert proc.returncode == 2, proc.stderr
    no_traceback(proc)
    assert "does not exist" in proc.stderr and "nothing ran" in proc.stderr
    assert not marker.exists() and roast.sessions() == []


def test_oversized_event_data_says_too_large_with_the_sizes(gate: Path, tmp_path: Path) -> None:
    roast.run(gate)
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "y" * 2000 + '"}')
    for spec, env in ((f"@{big}", {"ROAST_MAX_EVENT_BYTES": "1000"}),
                      ('{"x": "' + "y" * 2000 + '"}', {"ROAST_MAX_EVENT_BYTES": "1000"})):
        proc = roast_proc("resume", str(gate), "-e", "approved", "-d", spec, env=env)
        assert proc.returncode == 2, proc.stderr
        assert "too large" in proc.stderr and "limit 1,000" in proc.stderr and "not valid JSON" not in proc.stderr
    assert roast_proc("resume", str(gate), "-e", "approved").returncode == 0


def test_the_working_directory_of_a_session_is_restored_on_resume(tmp_path: Path) -> None:
    # issue 11: `cd w && roast execute .`, then from elsewhere `roast resume ~/w -e lgtm`
    work = tmp_path / "w"
    (work / "src").mkdir(parents=True)
    (work / "src" / "b.py").write_text("print('hi')\n")
    write_workflow(work.parent, """
        steps:
          - wait_for_event:
              lgtm: ["$(cat src/b.py)"]
    """, name="w")
    assert roast_proc("execute", ".", cwd=work).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = roast_proc("resume", str(work), "-e", "lgtm", "--json", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "print('hi')" in proc.stdout


def test_a_session_whose_working_directory_is_gone_is_refused_before_anything_is_claimed(tmp_path: Path) -> None:
    work = tmp_path / "w2"
    work.mkdir()
    path = write_workflow(tmp_path, "steps:\n  - wait_for_event: {go: ['$(pwd)']}\n", name="wf2")
    assert roast_proc("execute", str(path), cwd=work).returncode == 0
    work.rmdir()
    before = dump_all()
    proc = roast_proc("resume", str(path), "-e", "go", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "no longer exists" in proc.stderr and str(work) in proc.stderr
    assert dump_all() == before
    assert lines(tmp_path / "nothing") == []
