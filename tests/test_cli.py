"""The command line's listings, options and JSON shapes (issue 11), through `main(argv)` and real processes.

Sessions are made with `roast.run` (fast, in this process); what is asserted is what a user sees:
exit codes, stdout/stderr text, JSON documents, files written.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest
from conftest import ROOT, Ran, run_cli, write_workflow

import roast
from roast.cli import main

GATE = """
    name: gate
    steps:
      - build: "$(echo built)"
      - wait_for_event:
          approved: ["$(echo shipped)"]
          within: 2h
"""
HELLO = """
    name: hello
    steps:
      - "$(echo hello)"
"""
FULL_ID = re.compile(r"\b[0-9a-z]{13}\b")


@pytest.fixture
def roast_cmd(capsys: pytest.CaptureFixture[str]):
    def run(*args: object) -> Ran:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Ran(code, out, err)
    return run


@pytest.fixture
def flows(tmp_path: Path) -> dict[str, Path]:
    return {"gate": write_workflow(tmp_path, GATE, name="gate"),
            "hello": write_workflow(tmp_path, HELLO, name="hello")}


# --------------------------------------------------------------------------- ids


def test_listings_show_eight_characters_of_the_id_and_json_keeps_all_thirteen(flows, roast_cmd):
    sid = roast.run(flows["gate"]).session_id
    assert len(sid) == 13
    r = roast_cmd("sessions")
    assert r.code == 0, r
    [line] = [line for line in r.out.splitlines() if line.startswith(sid[:8])]
    assert line.split()[0] == sid[:8] and sid not in r.out
    assert roast_cmd("sessions", "--json").json[0]["session_id"] == sid
    # the shown id, or any unique prefix of 4+ characters, is accepted back
    for prefix in (sid[:8], sid[:4]):
        r = roast_cmd("session", prefix)
        assert r.code == 0 and f"session   {sid}" in r.out, r


def test_an_ambiguous_prefix_is_code_ambiguous_in_json_and_lists_the_candidates(flows, roast_cmd, roast_home):
    a = roast.run(flows["hello"]).session_id
    b = roast.run(flows["hello"]).session_id
    with closing(sqlite3.connect(roast_home / "sessions.db")) as db, db:  # ids are random: make them collide
        db.execute("UPDATE sessions SET id = 'abcd' || substr(id, 5) WHERE id IN (?, ?)", (a, b))
    r = roast_cmd("session", "abcd", "--json")
    assert r.code == 3, r
    assert r.json["error"]["code"] == "ambiguous"
    assert "ambiguous" in r.err and "abcd" + a[4:] in r.err and "abcd" + b[4:] in r.err


# --------------------------------------------------------------------------- roast sessions


def test_open_sessions_come_first_and_the_footer_says_how_many_finished_ones_are_not_shown(flows, roast_cmd):
    gate = roast.run(flows["gate"]).session_id
    for _ in range(3):
        roast.run(flows["hello"])
    r = roast_cmd("sessions", "--limit", "2")
    assert r.code == 0, r
    assert r.out.splitlines()[1].startswith(gate[:8])  # the oldest, but open: first
    assert "… and 2 more finished sessions, not shown (--all lists all 4, or --limit N)" in r.out
    r = roast_cmd("sessions", "--limit", "1")
    assert "… and 3 more finished sessions, not shown (--all lists all 4, or --limit N)" in r.out
    roast.run(flows["gate"])
    r = roast_cmd("sessions", "--limit", "1")
    assert "… and 4 more not shown: 1 open, 3 finished (--all lists all 5, or --limit N)" in r.out
    assert "not shown" not in roast_cmd("sessions").out


@pytest.mark.parametrize("bad", ["0", "-1", "1e20", "1000001", "ten", "2.5", ""])
def test_limit_takes_a_whole_number_from_one_to_a_million_else_a_usage_error(flows, bad, capsys):
    roast.run(flows["hello"])
    with pytest.raises(SystemExit) as exit_:
        main(["sessions", "--limit", bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--limit" in err and "whole number from 1 to 1,000,000" in err and "Traceback" not in err


def test_limit_of_a_million_is_accepted(flows, roast_cmd):
    roast.run(flows["hello"])
    r = roast_cmd("sessions", "--limit", "1000000")
    assert r.code == 0 and "hello" in r.out, r


def test_status_orphaned_lists_the_sessions_whose_process_died(flows, roast_cmd, tmp_path):
    crash = write_workflow(tmp_path, "steps: ['$(kill -9 $PPID)']", name="crash")
    assert run_cli("execute", str(crash)).returncode == -9
    roast.run(flows["gate"])
    r = roast_cmd("sessions", "--status", "orphaned")
    assert r.code == 0, r
    rows = r.out.splitlines()[1:]
    assert len(rows) == 1 and rows[0].split()[1:3] == ["crash", "orphaned"], r
    docs = roast_cmd("sessions", "--status", "orphaned", "--json").json
    assert [d["status"] for d in docs] == ["orphaned"]


def test_watch_on_a_pipe_prints_a_plain_listing_every_refresh_until_sigint(flows):
    sid = roast.run(flows["gate"]).session_id
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NO_COLOR", None)  # a pipe alone must give plain text
    # SIGINT at its default in the child: a run started as `pytest &` inherits it ignored (issue 20)
    proc = subprocess.Popen([sys.executable, "-m", "roast", "sessions", "--watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    guard = threading.Timer(20, proc.kill)  # a hang guard, not synchronisation: a silent watch fails the test
    guard.start()
    try:
        assert proc.stdout is not None
        frames: list[list[str]] = []
        while len(frames) < 3:  # each frame is flushed as it is printed: reading blocks until it comes
            line = proc.stdout.readline().decode()
            assert line, proc.stderr.read().decode() if proc.stderr else ""
            if line.startswith("--- "):
                assert "Ctrl-C to exit" in line
                frames.append([])
            elif frames and line.strip():
                frames[-1].append(line.rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"\x1b" not in out
    for frame in frames[:2]:
        assert frame[0].split() == ["id", "workflow", "status", "outcome", "where", "awaiting", "deadline", "age"]
        assert frame[1].startswith(sid[:8]) and "waiting" in frame[1]


def test_json_with_an_output_file_writes_the_file_and_prints_the_json(flows, roast_cmd, tmp_path):
    out_file = tmp_path / "result.txt"
    r = roast_cmd("execute", flows["hello"], "--json", "-o", out_file)
    assert r.code == 0, r
    assert out_file.read_text() == "hello\n"
    [doc] = r.json
    assert doc["final_output"] == "hello" and doc["status"] == "completed"


# --------------------------------------------------------------------------- JSON shapes


def test_execute_json_is_a_list_with_one_object_per_target_even_for_one(flows, roast_cmd):
    r = roast_cmd("execute", flows["hello"], "--json")
    assert r.code == 0, r
    assert isinstance(r.json, list) and len(r.json) == 1 and r.json[0]["status"] == "completed"
    r = roast_cmd("execute", flows["gate"], "a.py", "b.py", "--json")
    assert [(d["target"], d["status"]) for d in r.json] == [("a.py", "waiting"), ("b.py", "waiting")]
    # resume answers for one session: one object
    r = roast_cmd("resume", "-s", r.json[0]["session_id"], "-e", "approved", "--json")
    assert r.code == 0, r
    assert isinstance(r.json, dict) and r.json["status"] == "completed"


def test_execute_json_through_a_real_process_is_one_list(flows):
    proc = run_cli("execute", str(flows["gate"]), "t1", "t2", "--json")
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert [d["target"] for d in docs] == ["t1", "t2"]


def test_execute_help_says_json_is_a_list_of_sessions(capsys):
    with pytest.raises(SystemExit):
        main(["execute", "--help"])
    assert "JSON list with one session object per target" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------- roast validate


def test_validate_counts_steps_and_waits_in_the_right_number(wf, roast_cmd):
    one = wf("steps: ['$(echo one)']\n", name="one")
    r = roast_cmd("validate", one)
    assert r.code == 0 and r.out.strip().endswith(": ok (1 top-level step, 0 waits)"), r
    r = roast_cmd("validate", wf(GATE, name="two"))
    assert r.out.strip().endswith(": ok (2 top-level steps, 1 wait)"), r


def test_validate_json_lists_every_problem_with_file_line_message_and_hint(wf, roast_cmd):
    path = wf("""
        steps:
          - notfy_team
          - wait_for_event:
              approved: [deploy]
              within: 0
    """, files={"notify_team.py": "def run(ctx):\n    return 1\n",
                "deploy.py": "def run(ctx):\n    return 1\n"})
    r = roast_cmd("validate", path, "--json")
    assert r.code == 2, r
    doc = r.json
    assert doc["valid"] is False and doc["name"] == "wf" and doc["workflow"].endswith("workflow.yml")
    assert len(doc["problems"]) == 2, doc
    for problem in doc["problems"]:
        assert set(problem) == {"file", "line", "message", "hint"}
        assert problem["file"].endswith("workflow.yml") and isinstance(problem["line"], int)
    assert [p["line"] for p in doc["problems"]] == [2, 5]
    assert "notfy_team" in doc["problems"][0]["message"] and "notify_team" in doc["problems"][0]["hint"]
    assert doc["error"]["code"] == "workflow_invalid"
    assert "roast: error:" in r.err


def test_validate_json_of_a_valid_workflow_has_no_problems(wf, roast_cmd):
    r = roast_cmd("validate", wf(GATE), "--json")
    assert r.code == 0, r
    assert r.json["valid"] is True and r.json["problems"] == []
    assert r.json["waits"][0]["events"] == ["approved"]


def test_validate_warns_about_interpolation_that_bash_evaluates_as_arithmetic(wf, roast_cmd):
    path = wf("""
        steps:
          - "$(echo fine {{ output }})"
          - wait_for_event:
              within: 1h
              go:
                - each: "$(ls)"
                  as: f
                  steps: ["$([[ {{ f }} -gt 3 ]] && echo big)"]
    """)
    r = roast_cmd("validate", path)
    assert r.code == 0, r
    [warning] = [line for line in r.err.splitlines() if line.startswith("roast: warning:")]
    assert "steps[1].go[0].steps[0]" in warning and "{{ f }}" in warning and "-gt" in warning
    doc = roast_cmd("validate", path, "--json").json
    assert len(doc["warnings"]) == 1 and "{{ f }}" in doc["warnings"][0]


# --------------------------------------------------------------------------- errors


def test_a_failing_python_step_names_the_file_and_line_of_the_users_code(wf, roast_cmd):
    path = wf("steps: [boom]\n",
              files={"boom.py": "def run(ctx):\n    x = 1\n    raise ValueError('no good')\n"})
    r = roast_cmd("execute", path)
    assert r.code == 1, r
    assert re.search(r"boom\.py:3\b", r.err) and "ValueError: no good" in r.err, r
    assert "Traceback" not in r.err


def test_tick_help_says_when_it_exits_0_and_when_1(capsys):
    with pytest.raises(SystemExit):
        main(["tick", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status 0 when every overdue wait fired as designed" in text
    assert "1 when one could not be fired" in text
