"""The worker behind `roast serve` (roast/worker.py), through a real server process: a transient
store error never leaves a session stuck, and stopping is cooperative (no thread is interrupted
from outside; the steps' process groups are killed)."""
from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
from conftest import write_workflow
from test_serve import SLOW, eventually, finished, release_script, serve, waiting_session  # noqa: F401

import roast
from roast import api


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@pytest.mark.sqlite_only("holds the SQLite file's write lock from another connection")
def test_an_orphan_whose_recovery_meets_a_locked_store_is_recovered_once_the_lock_is_released(
        tmp_path: Path, serve, roast_home: Path) -> None:  # noqa: F811
    release_script(tmp_path)
    sid = waiting_session(tmp_path, SLOW)
    first = serve()
    assert first.post(sid, "go")[0] == 200
    eventually(lambda: (tmp_path / "started-1").exists(), "the step to start")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=30)
    (tmp_path / "release").touch()  # attempt 1's process (left by the kill) can end now
    eventually(lambda: api.session(sid).orphaned, "the session to be orphaned")
    pgid = next(h.pgid for h in api.history(sid) if h.name == "slow")
    eventually(lambda: _group_gone(int(pgid)), "attempt 1's process to end")

    # another connection holds the write lock: every write of the new server fails for now
    holder = sqlite3.connect(roast_home / "sessions.db", isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    try:
        second = serve(env={"ROAST_BUSY_TIMEOUT": "0.05"})
        eventually(lambda: "recovery failed; trying again later" in second.log, "the recovery to fail")
        assert api.session(sid).orphaned  # nothing changed, and nothing marks it as running here
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    done = eventually(lambda: finished(sid), "the server to recover the session once the store works")
    assert done.status == "completed", done
    assert [h.attempt for h in api.history(sid) if h.name == "slow"] == [1, 2]
    # said once for the whole outage, not once per attempt
    assert second.log.count("recovery failed; trying again later") == 1, second.log


def test_sigterm_past_the_grace_stops_a_running_step_promptly_and_kills_its_process_group(
        tmp_path: Path, serve) -> None:  # noqa: F811
    wf = write_workflow(tmp_path, """
        name: sleepy
        steps:
          - wait_for_event:
              go:
                - nap: $(touch napping; sleep 30)
    """)
    result = roast.run(wf)
    assert result.status == "waiting"
    server = serve("--grace", "0")
    assert server.post(result.session_id, "go")[0] == 200
    eventually(lambda: (tmp_path / "napping").exists(), "the step to start")
    pgid = eventually(lambda: next((h.pgid for h in api.history(result.session_id) if h.name == "nap" and h.pgid),
                                   None), "the step's process group to be recorded")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0  # well before the step's 30 s
    eventually(lambda: _group_gone(int(pgid)), "the step's process group to be gone")
    stopped = api.session(result.session_id)
    assert stopped.status == "running" and stopped.orphaned  # recoverable
    assert "interrupted by SIGTERM" in (stopped.error or "")
    assert [h.status for h in api.history(result.session_id) if h.name == "nap"] == ["interrupted"]


def test_roast_run_honours_the_workflows_own_target_key_as_execute_does(wf, tmp_path, monkeypatch) -> None:
    path = wf("""
        target: "data/*.txt"
        steps:
          - $(cat "{{ file }}")
    """, files={"data/a.txt": "alpha\n"})
    monkeypatch.chdir(tmp_path)
    result = roast.run(path)
    assert result.target is not None and result.target.endswith("a.txt")
    assert result.final_output == "alpha"
