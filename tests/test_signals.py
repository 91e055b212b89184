"""Process faults through real processes (issue 10): signals, stray children, a deleted locks/
directory, a crash inside a parallel group, a store that is busy or full in the middle of a branch.

Every test here runs `python -m roast` as a real child process and acts on it from outside.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _resume_helpers import lines, poll
from conftest import ROOT

import roast
from roast import api
from roast.stop import group_alive


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def sigint_as_default() -> None:
    """In the child, before exec: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt. A test run started as a background job of a non-interactive shell (`pytest &`)
    inherits SIGINT ignored, and Python then leaves it ignored: the signal would be lost, and the
    test would wait for nothing (issue 20: "the SIGINT tests fail under load")."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "roast", *args], env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_default)


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roast", *args], env=_env(**env), capture_output=True,
                          text=True, timeout=60, check=False)


def _workflow(tmp_path: Path, text: str, **values: Path) -> Path:
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    directory = tmp_path / "wf"
    directory.mkdir(exist_ok=True)
    path = directory / "workflow.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _only_session() -> roast.SessionInfo:
    [s] = roast.sessions(limit=None)
    return s


def _step_groups(sid: str, path: str | None = None) -> list[int]:
    return [h.pgid for h in api.history(sid) if h.pgid and (path is None or h.path == path)]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log"


# --------------------------------------------------------------------------- SIGTERM, SIGHUP, SIGINT


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_kills_the_steps_process_group_records_it_and_says_how_to_continue(
        tmp_path: Path, log: Path, signum: int, code: int) -> None:
    path = _workflow(tmp_path, """
        steps:
          - one: $(echo one >> @LOG@)
          - slow: "$(echo start$ROAST_STEP_ATTEMPT >> @LOG@; [ $ROAST_STEP_ATTEMPT = 2 ] || sleep 60; echo end$ROAST_STEP_ATTEMPT >> @LOG@)"
    """, LOG=log)
    proc = _start("execute", str(path))
    poll(lambda: lines(log) == ["one", "start1"], "the slow step to start")
    sid = _only_session().id
    poll(lambda: bool(_step_groups(sid, "steps[1]")), "the step's process group to be recorded")
    [pgid] = _step_groups(sid, "steps[1]")

    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"interrupted by {signal.Signals(signum).name}" in err and "steps[1]" in err
    assert f"session {sid}" in err and f"roast resume --session-id {sid}" in err
    # killed with the group (a killed process may stay a zombie until init reaps it: give it a moment)
    poll(lambda: not group_alive(pgid), "the step's process group to be gone", timeout=10)
    s = roast.session(sid)
    assert s.status == "interrupted" and not s.orphaned  # stopped by a person: only asked to continue (#20)
    assert f"interrupted by {signal.Signals(signum).name}" in (s.error or "")
    assert [(h.path, h.status) for h in api.history(sid)] == [("steps[0]", "ok"), ("steps[1]", "interrupted")]

    again = _run("resume", "-s", sid)
    assert again.returncode == 0, again.stderr
    assert lines(log) == ["one", "start1", "start2", "end2"]  # never end1: the first attempt was stopped


def test_an_interrupt_while_following_a_waiting_session_leaves_it_waiting(tmp_path: Path) -> None:
    path = _workflow(tmp_path, """
        steps:
          - wait_for_event: {go: ["$(echo go)"]}
    """)
    proc = _start("execute", str(path), "--wait")
    poll(lambda: any(s.status == "waiting" for s in roast.sessions(limit=None)), "the session to wait")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert "no session was running" in err and "still waiting" in err
    assert _only_session().status == "waiting"


def test_recovery_refuses_while_the_interrupted_attempts_process_group_lives_then_waits_for_it(
        tmp_path: Path, log: Path) -> None:
    go = tmp_path / "go"
    path = _workflow(tmp_path, """
        steps:
          - slow: "$(echo start$ROAST_STEP_ATTEMPT >> @LOG@; while [ ! -e @GO@ ]; do sleep 0.05; done; echo end$ROAST_STEP_ATTEMPT >> @LOG@)"
    """, LOG=log, GO=go)
    proc = _start("execute", str(path))
    poll(lambda: lines(log) == ["start1"], "the step to start")
    sid = _only_session().id
    poll(lambda: bool(_step_groups(sid)), "the step's process group to be recorded")
    proc.kill()  # kill -9 of roast alone: its step lives on (a process group of its own)
    proc.wait()

    refused = _run("resume", "-s", sid)
    assert refused.returncode == 3, refused.stderr
    assert "still has processes running" in refused.stderr and "kill -TERM" in refused.stderr
    assert lines(log) == ["start1"]

    waiter = _start("resume", "-s", sid, "--wait")
    go.touch()  # the first attempt ends; only then may the second start
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert lines(log) == ["start1", "end1", "start2", "end2"]  # never side by side


def test_a_timeout_is_a_hard_limit_even_when_a_detached_child_keeps_the_output_open(
        tmp_path: Path, log: Path) -> None:
    pidfile = tmp_path / "child.pid"
    path = _workflow(tmp_path, """
        steps:
          - hang: "$(setsid sh -c 'echo $$ > @PID@; exec sleep 60' & sleep 60)"
        hang:
          timeout: 1s
    """, PID=pidfile)
    try:
        proc = _run("execute", str(path))
        assert proc.returncode == 1, proc.stderr
        assert "timed out after 1 s" in proc.stderr
        # roast returned while the detached child still holds the pipe: it did not wait for EOF
        child = int(pidfile.read_text())
        assert _alive(child)
    finally:
        with contextlib.suppress(Exception):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- liveness


def test_deleting_locks_does_not_make_a_running_session_look_orphaned(tmp_path: Path, log: Path,
                                                                      roast_home: Path) -> None:
    go = tmp_path / "go"
    path = _workflow(tmp_path, """
        steps:
          - slow: "$(echo start >> @LOG@; while [ ! -e @GO@ ]; do sleep 0.05; done)"
          - after: $(echo after >> @LOG@)
    """, LOG=log, GO=go)
    proc = _start("execute", str(path))
    poll(lambda: lines(log) == ["start"], "the step to start")
    sid = _only_session().id
    import shutil

    shutil.rmtree(roast_home / "locks")

    s = roast.session(sid)
    assert s.status == "running" and not s.orphaned
    refused = _run("resume", "-s", sid)
    assert refused.returncode == 3 and "running in" in refused.stderr, refused.stderr
    go.touch()
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert lines(log) == ["start", "after"]  # recovery never ran alongside


# --------------------------------------------------------------------------- the issue-10 crash


def test_a_crash_inside_one_branch_of_a_parallel_group_never_gives_its_event_to_the_other(
        tmp_path: Path, log: Path) -> None:
    crashed = tmp_path / "crashed"
    path = _workflow(tmp_path, """
        steps:
          - - wait_for_event:
                go: ['$(echo A1 >> @LOG@)', '$(if [ ! -e @CRASHED@ ]; then touch @CRASHED@; kill -9 $PPID; fi; echo A2 >> @LOG@)']
            - wait_for_event:
                go: ['$(echo B1 >> @LOG@)']
    """, LOG=log, CRASHED=crashed)
    assert _run("execute", str(path)).returncode == 0
    sid = _only_session().id
    killed = _run("resume", str(path), "--event", "go")
    assert killed.returncode == -signal.SIGKILL

    for pgid in _step_groups(sid):  # the killed attempt's shell ends on its own (no sleep in it)
        poll(lambda pgid=pgid: not group_alive(pgid), f"process group {pgid} to end", timeout=10)
    recovered = _run("resume", "-s", sid, "--json")

    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["status"] == "waiting"  # B still waits for its own `go`
    # A2 ran on after roast died (its shell outlived it), then again as attempt 2; B1 never ran
    assert lines(log) == ["A1", "A2", "A2"]
    assert [h.attempt for h in api.history(sid) if h.path == "steps[0][0].go[1]"] == [1, 2]
    done = _run("resume", str(path), "--event", "go")
    assert done.returncode == 0, done.stderr
    assert lines(log) == ["A1", "A2", "A2", "B1"]
    assert [e.outcome for e in api.deliveries(sid)] == ["consumed", "consumed"]


# --------------------------------------------------------------------------- store trouble mid-branch


def test_a_store_held_busy_between_steps_stops_the_process_and_leaves_the_session_recoverable(
        tmp_path: Path, log: Path, roast_home: Path) -> None:
    ready, locked = tmp_path / "ready", tmp_path / "locked"
    path = _workflow(tmp_path, """
        steps:
          - wait_for_event:
              go:
                - one: "$(echo one >> @LOG@; touch @READY@; while [ ! -e @LOCKED@ ]; do sleep 0.05; done)"
                - two: $(echo two >> @LOG@)
    """, LOG=log, READY=ready, LOCKED=locked)
    assert _run("execute", str(path)).returncode == 0
    sid = _only_session().id
    resumer = _start("resume", str(path), "--event", "go", ROAST_BUSY_TIMEOUT="0.3")
    poll(ready.exists, "the first step of the branch to run")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys
        db = sqlite3.connect({str(roast_home / 'sessions.db')!r}, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        open({str(locked)!r}, "w").close()
        sys.stdin.readline()
        db.execute("ROLLBACK")
    """)], stdin=subprocess.PIPE, text=True)
    try:
        out, err = resumer.communicate(timeout=60)
    finally:
        holder.communicate("done\n", timeout=30)

    assert resumer.returncode == 4, err
    assert "Traceback" not in err and "busy" in err
    assert f"roast resume -s {sid}" in err and "nothing after it was saved" in err
    s = roast.session(sid)
    assert s.status == "running" and s.orphaned, s  # never `failed`: the store decided nothing
    again = _run("resume", "-s", sid)
    assert again.returncode == 0, again.stderr
    assert roast.session(sid).status == "completed"
    assert lines(log).count("two") == 1


def test_a_full_disk_during_a_branch_is_exit_4_and_the_session_continues_once_there_is_room(
        tmp_path: Path, log: Path) -> None:
    from roast.store_sqlite import SQLiteStore

    path = _workflow(tmp_path, """
        steps:
          - wait_for_event:
              go:
                - one: $(echo one >> @LOG@)
                - big: "$(head -c 300000 /dev/zero | tr '\\\\0' x)"
                - two: $(echo two >> @LOG@)
    """, LOG=log)
    sid = roast.run(path).session_id
    full = SQLiteStore()
    with sqlite3.connect(full.db_path) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    full._on_connect = lambda db: db.execute(f"PRAGMA max_page_count = {pages + 40}")

    with pytest.raises(roast.errors.StoreUnavailable) as caught:
        roast.resume("go", session_id=sid, store=full)

    assert caught.value.exit_code == 4
    assert "disk full" in str(caught.value) and f"roast resume -s {sid}" in str(caught.value)
    s = roast.session(sid)
    assert s.status == "running" and s.orphaned  # recoverable in this very process too
    assert roast.resume(session_id=sid).status == "completed"
    assert lines(log).count("two") == 1
