"""Stopping sessions (issue 20), through real processes: a session a person stops with a signal is
`interrupted` and stays stopped until `roast resume -s ID` (or `roast cancel`); `roast cancel` stops a
running session's steps; a timeout is a claimed event whose branch sees `refused_event`; a wait's
`notify:` runs once however many processes race for it; a session whose workflow file is gone
still times out, and can be cancelled or resumed, from the definition sealed at its wait.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _resume_helpers import lines, poll
from conftest import ROOT, run_cli, write_workflow
from test_serve import eventually, serve  # noqa: F401
from test_signals import sigint_as_default

import roast
from roast import api
from roast.stop import group_alive


def _start(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "roast", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_default)


def _step_group(sid: str, name: str) -> int:
    found: list[int] = []

    def recorded() -> bool:
        found[:] = [int(h.pgid) for h in api.history(sid) if h.name == name and h.pgid and h.finished_at is None]
        return bool(found)

    poll(recorded, f"step {name}'s process group to be recorded")
    return found[-1]


def _only(workflow_name: str) -> roast.SessionInfo:
    [s] = [s for s in roast.sessions(limit=None) if s.workflow_name == workflow_name]
    return s


SLOW = """
    name: slow
    steps:
      - one: $(echo one >> @LOG@)
      - slow: "$(echo start$ROAST_STEP_ATTEMPT >> @LOG@; [ $ROAST_STEP_ATTEMPT = 2 ] || sleep 60; echo end$ROAST_STEP_ATTEMPT >> @LOG@)"
"""


def _stopped_session(tmp_path: Path, signum: int = signal.SIGINT) -> tuple[str, Path]:
    """A session whose `roast execute` was stopped with `signum` during its slow step."""
    log = tmp_path / "log"
    wf = write_workflow(tmp_path, SLOW.replace("@LOG@", str(log)), name="slow")
    proc = _start("execute", str(wf))
    poll(lambda: lines(log) == ["one", "start1"], "the slow step to start")
    sid = _only("slow").id
    pgid = _step_group(sid, "slow")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert f"roast resume --session-id {sid}" in err and f"roast cancel {sid}" in err, err
    poll(lambda: not group_alive(pgid), "the step's process group to be gone")
    return sid, log


# --------------------------------------------------------------------------- 1. a stopped session stays stopped


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_session_stopped_with_a_signal_is_interrupted_and_listed_so(tmp_path: Path, signum: int) -> None:
    sid, _ = _stopped_session(tmp_path, signum)
    s = roast.session(sid)
    assert (s.status, s.orphaned) == ("interrupted", False)
    assert f"interrupted by {signal.Signals(signum).name} during steps[1]" in (s.error or "")
    assert [(h.path, h.status) for h in api.history(sid)] == [("steps[0]", "ok"), ("steps[1]", "interrupted")]

    listed = run_cli("sessions", "--status", "interrupted", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(d["session_id"], d["status"]) for d in json.loads(listed.stdout)] == [(sid, "interrupted")]
    assert json.loads(run_cli("sessions", "--status", "orphaned", "--json").stdout) == []
    table = run_cli("sessions")
    assert "interrupted" in table.stdout and f"roast resume -s {sid[:8]}" in table.stdout, table.stdout
    shown = run_cli("session", sid)
    assert "status    interrupted" in shown.stdout and f"roast resume -s {sid}" in shown.stdout, shown.stdout
    assert json.loads(run_cli("session", sid, "--json").stdout)["status"] == "interrupted"


def test_serve_and_tick_never_continue_an_interrupted_session_and_resume_does(tmp_path: Path, serve) -> None:  # noqa: F811
    sid, log = _stopped_session(tmp_path)
    # a control: a session whose process crashed (kill -9) is orphaned, and serve recovers it
    crash_log = tmp_path / "crash-log"
    crash = write_workflow(tmp_path, f"""
        name: crash
        steps:
          - boom: "$(echo attempt$ROAST_STEP_ATTEMPT >> {crash_log}; [ $ROAST_STEP_ATTEMPT = 1 ] && kill -9 $PPID; echo ok)"
    """, name="crash")
    assert run_cli("execute", str(crash)).returncode == -9
    crashed = _only("crash").id
    assert roast.session(crashed).orphaned

    ticked = run_cli("tick")
    assert ticked.returncode == 0, ticked.stderr
    server = serve()
    eventually(lambda: roast.session(crashed).status == "completed", "serve to recover the crashed session")
    assert lines(crash_log) == ["attempt1", "attempt2"]
    # the same look for orphans that found the crashed session left the interrupted one alone
    assert roast.session(sid).status == "interrupted"
    assert lines(log) == ["one", "start1"]
    assert sid not in server.log

    resumed = run_cli("resume", "-s", sid)
    assert resumed.returncode == 0, resumed.stderr
    assert roast.session(sid).status == "completed"
    assert lines(log) == ["one", "start1", "start2", "end2"]


def test_cancel_ends_an_interrupted_session_and_resume_then_refuses(tmp_path: Path) -> None:
    sid, log = _stopped_session(tmp_path)
    cancelled = run_cli("cancel", sid, "--reason", "not needed", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = run_cli("resume", "-s", sid)
    assert again.returncode == 3 and "cancelled" in again.stderr, again.stderr
    assert lines(log) == ["one", "start1"]


def test_serve_stopped_past_its_grace_leaves_its_sessions_for_the_next_start_to_recover(
        tmp_path: Path, serve) -> None:  # noqa: F811
    """Roast stopped them itself, for a restart: not `interrupted`, recovered by the next start."""
    log = tmp_path / "log"
    wf = write_workflow(tmp_path, f"""
        name: nap
        steps:
          - wait_for_event:
              go:
                - nap: "$(echo start$ROAST_STEP_ATTEMPT >> {log}; [ $ROAST_STEP_ATTEMPT = 2 ] || sleep 30)"
    """, name="nap")
    sid = roast.run(wf).session_id
    first = serve("--grace", "0")
    assert first.post(sid, "go")[0] == 200
    poll(lambda: lines(log) == ["start1"], "the step to start")
    _step_group(sid, "nap")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    stopped = roast.session(sid)
    assert (stopped.status, stopped.orphaned) == ("running", True), stopped
    serve()
    eventually(lambda: roast.session(sid).status == "completed", "the next serve to recover the session")
    assert lines(log) == ["start1", "start2"]


def test_a_delivery_to_an_interrupted_session_is_kept_for_a_later_wait_or_refused(tmp_path: Path) -> None:
    log = tmp_path / "log"
    wf = write_workflow(tmp_path, f"""
        name: later
        steps:
          - slow: "$(echo start$ROAST_STEP_ATTEMPT >> {log}; [ $ROAST_STEP_ATTEMPT = 2 ] || sleep 60)"
          - wait_for_event: {{approved: ["$(echo approved)"]}}
    """, name="later")
    proc = _start("execute", str(wf))
    poll(lambda: lines(log) == ["start1"], "the step to start")
    sid = _only("later").id
    _step_group(sid, "slow")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert roast.session(sid).status == "interrupted"
    kept = run_cli("resume", "-s", sid, "--event", "approved")
    assert kept.returncode == 0 and "kept" in kept.stderr, kept.stderr
    assert roast.session(sid).status == "interrupted"  # a delivery does not continue it either
    done = run_cli("resume", "-s", sid)
    assert done.returncode == 0, done.stderr
    assert roast.session(sid).status == "completed"


# --------------------------------------------------------------------------- 2. cancel a running session


def _running_session(tmp_path: Path, step: str, name: str = "busy") -> tuple[subprocess.Popen[str], str, int, Path]:
    log = tmp_path / "log"
    wf = write_workflow(tmp_path, f"""
        name: {name}
        steps:
          - one: $(echo one >> {log})
          - slow: "{step.replace('@LOG@', str(log))}"
          - after: $(echo after >> {log})
    """, name=name)
    proc = _start("execute", str(wf))
    poll(lambda: lines(log) == ["one", "start"], "the slow step to start")
    sid = _only(name).id
    return proc, sid, _step_group(sid, "slow"), log


def test_cancel_stops_a_running_sessions_step_and_the_process_running_it_exits_3(tmp_path: Path) -> None:
    proc, sid, pgid, log = _running_session(tmp_path, "$(echo start >> @LOG@; sleep 60; echo end >> @LOG@)")
    cancelled = run_cli("cancel", sid, "--reason", "superseded", "--actor", "ana", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    doc = json.loads(cancelled.stdout)
    assert (doc["status"], doc["cancelled_by"], doc["reason"]) == ("cancelled", "ana", "superseded")

    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert f"session {sid} was cancelled by ana" in err and "superseded" in err, err
    assert "Traceback" not in err and "roast retry" not in err and "failed" not in err, err
    assert not group_alive(pgid)
    assert lines(log) == ["one", "start"]  # the step never finished, and nothing after it ran
    s = roast.session(sid)
    assert (s.status, s.cancelled_by, s.reason) == ("cancelled", "ana", "superseded")
    assert [(h.path, h.status) for h in api.history(sid)] == [("steps[0]", "ok"), ("steps[1]", "cancelled")]
    shown = json.loads(run_cli("session", sid, "--json").stdout)
    assert (shown["status"], shown["cancelled_by"]) == ("cancelled", "ana")


def test_cancel_kills_a_step_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    proc, sid, pgid, log = _running_session(
        tmp_path, "$(trap '' TERM; echo start >> @LOG@; sleep 60 & wait; echo end >> @LOG@)", name="stubborn")
    cancelled = run_cli("cancel", sid)
    assert cancelled.returncode == 0, cancelled.stderr
    assert not group_alive(pgid)  # killed once the grace was over
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and f"session {sid} was cancelled by " in err, err
    assert roast.session(sid).cancelled_by  # the OS user by default
    assert lines(log) == ["one", "start"]


def test_cancel_of_a_branch_serve_is_running_stops_it_and_serve_says_so(tmp_path: Path, serve) -> None:  # noqa: F811
    log = tmp_path / "log"
    wf = write_workflow(tmp_path, f"""
        name: branch
        steps:
          - wait_for_event:
              go:
                - slow: "$(echo start >> {log}; sleep 60)"
                - after: $(echo after >> {log})
    """, name="branch")
    sid = roast.run(wf).session_id
    server = serve()
    assert server.post(sid, "go")[0] == 200
    poll(lambda: lines(log) == ["start"], "the branch's step to start")
    pgid = _step_group(sid, "slow")
    assert run_cli("cancel", sid, "--actor", "ops").returncode == 0
    eventually(lambda: "session cancelled" in server.log, "serve to say the branch ended cancelled")
    assert not group_alive(pgid) and lines(log) == ["start"]
    assert roast.session(sid).status == "cancelled"
    assert server.proc.poll() is None  # the server lives on


# --------------------------------------------------------------------------- 3. a timeout is a claimed event


LATE = """
    name: late
    steps:
      - wait_for_event:
          within: 1s
          approved:
            - $(echo approved-branch)
          timeout:
            - '$(echo "refused={{ event.refused_event }} deadline={{ event.deadline }}")'
"""


def _waiting_past_its_deadline(tmp_path: Path, text: str = LATE) -> tuple[str, str]:
    wf = write_workflow(tmp_path, text, name="late")
    started = run_cli("execute", str(wf), "--json")
    assert started.returncode == 0, started.stderr
    [doc] = json.loads(started.stdout)
    sid = doc["session_id"]
    deadline = roast.session(sid).deadline
    assert deadline is not None
    poll(lambda: __import__("time").time() > deadline + 0.01, "the wait's deadline to pass")
    return sid, doc["deadline"]


def test_a_late_delivery_runs_the_timeout_branch_with_the_refused_event_and_the_iso_deadline(
        tmp_path: Path) -> None:
    sid, deadline = _waiting_past_its_deadline(tmp_path)
    late = run_cli("resume", "-s", sid, "--event", "approved")  # no tick in between
    assert late.returncode == 3 and "'approved' was refused" in late.stderr, late.stderr
    assert late.stdout.strip() == f"refused=approved deadline={deadline}", late.stdout
    events = json.loads(run_cli("session", sid, "--json").stdout)["events"]
    assert [(e["name"], e["outcome"]) for e in events] == [("approved", "late"), ("timeout", "consumed")]
    assert events[1]["data"] == {"deadline": deadline, "refused_event": "approved"}


def test_a_timeout_fired_by_tick_gives_the_branch_the_same_iso_deadline(tmp_path: Path) -> None:
    sid, deadline = _waiting_past_its_deadline(tmp_path, LATE.replace("refused={{ event.refused_event }} ", ""))
    ticked = run_cli("tick", "--json")
    assert ticked.returncode == 0, ticked.stdout
    s = roast.session(sid)
    assert s.status == "completed" and s.final_output == f"deadline={deadline}", s
    [event] = json.loads(run_cli("session", sid, "--json").stdout)["events"]
    assert event["data"] == {"deadline": deadline}


# --------------------------------------------------------------------------- 4. notify once per wait


def test_notify_runs_once_per_wait_when_two_ticks_race_for_it(tmp_path: Path) -> None:
    """Each wait's notice is claimed (a compare-and-set) before its steps run: of two `roast tick`
    processes racing over the same notices left unrun, exactly one runs each."""
    from _resume_helpers import _sql

    notices = tmp_path / "notices"
    wf = write_workflow(tmp_path, f"""
        name: noisy
        steps:
          - wait_for_event:
              notify:
                - $(echo "$ROAST_SESSION_ID" >> {notices})
              go: ["$(echo gone)"]
    """, name="noisy")
    ids = [roast.run(wf).session_id for _ in range(30)]
    assert sorted(lines(notices)) == sorted(ids)
    notices.unlink()
    _sql("UPDATE sessions SET notify_pending = 1")  # as a crash between the save and the notice leaves them
    ticks = [_start("tick", cwd=tmp_path) for _ in range(2)]
    for tick in ticks:
        _, err = tick.communicate(timeout=120)
        assert tick.returncode == 0, err
    assert sorted(lines(notices)) == sorted(ids)  # each exactly once
    assert all(not s.notify_pending for s in roast.sessions(limit=None))


# --------------------------------------------------------------------------- 5. a deleted workflow file


GONE = """
    name: gone
    steps:
      - build: $(echo built)
      - wait_for_event:
          within: @WITHIN@
          approved:
            - $(echo "approved after {{ output.build }}")
          timeout:
            - $(echo "timed out after {{ output.build }}")
"""


def _waiting_without_its_file(tmp_path: Path, within: str) -> str:
    import shutil

    wf = write_workflow(tmp_path, GONE.replace("@WITHIN@", within), name="gone")
    started = run_cli("execute", str(wf), "--json")
    assert started.returncode == 0, started.stderr
    shutil.rmtree(wf.parent)
    return str(json.loads(started.stdout)[0]["session_id"])


def test_a_session_whose_workflow_file_was_deleted_still_times_out_under_tick(tmp_path: Path) -> None:
    sid = _waiting_without_its_file(tmp_path, "1s")
    deadline = roast.session(sid).deadline
    assert deadline is not None
    poll(lambda: __import__("time").time() > deadline + 0.01, "the wait's deadline to pass")
    ticked = run_cli("tick")
    assert ticked.returncode == 0, ticked.stderr + ticked.stdout
    s = roast.session(sid)
    assert (s.status, s.final_output) == ("completed", "timed out after built")
    assert run_cli("tick").returncode == 0  # nothing left to fire, and no error again


def test_a_session_whose_workflow_file_was_deleted_can_be_resumed_or_cancelled(tmp_path: Path) -> None:
    sid = _waiting_without_its_file(tmp_path, "1h")
    resumed = run_cli("resume", "-s", sid, "--event", "approved")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "approved after built"
    assert "is gone" in resumed.stderr  # said once, as a warning
    other = _waiting_without_its_file(tmp_path / "again", "1h")
    cancelled = run_cli("cancel", other)
    assert cancelled.returncode == 0, cancelled.stderr
    assert roast.session(other).status == "cancelled"
