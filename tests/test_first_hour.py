"""Issue 24, the first hour round two: each mistake a new user met, through the `roast` command."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import ROOT, run_cli, write_workflow

import roast

TWO_WAITS = """
steps:
  - wait_for_event:
      approved:
        - got: "$(echo got {{ event.items }} {{ event['keys'] }})"
  - wait_for_event:
      done: [$(echo fin)]
"""


def test_event_data_keys_named_like_dict_methods_are_data_through_a_suspend_and_the_end(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, TWO_WAITS)
    assert run_cli("execute", str(wf)).returncode == 0
    data = json.dumps({"items": "x", "keys": "k", "values": [1], "get": {"items": 2}})
    paused = run_cli("resume", str(wf), "-e", "approved", "--event-data", data, "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["status"] == "waiting"
    assert json.loads(paused.stdout)["output"]["got"] == "got x k"
    done = run_cli("resume", str(wf), "-e", "done", "--event-data", data, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    shown = run_cli("session", json.loads(done.stdout)["session_id"], "--json")
    assert shown.returncode == 0, shown.stderr


def test_a_refused_delivery_of_malformed_data_has_the_outcome_invalid_in_json(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, TWO_WAITS)
    assert run_cli("execute", str(wf)).returncode == 0
    for data in ("[1, 2]", "{bad", '{"n": NaN}'):
        refused = run_cli("resume", str(wf), "-e", "approved", "--event-data", data, "--json")
        assert refused.returncode == 2, refused.stderr
        doc = json.loads(refused.stdout)
        assert (doc["outcome"], doc["event"], doc["error"]["code"]) == ("invalid", "approved", "invalid"), doc


POISON = """
steps:
  - wait_for_event:
      approved:
        - check: "$(test {{ event.n }} -lt 10 && echo ok-{{ event.n }})"
        - after: "$(echo after {{ delivery.actor }} {{ output.wait_for_event.data }})"
"""


def test_retry_with_event_data_replaces_the_data_that_broke_the_branch_and_records_who_and_why(
        tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, POISON)
    assert run_cli("execute", str(wf)).returncode == 0
    failed = run_cli("resume", str(wf), "-e", "approved", "-d", '{"n": 50}', "--json")
    assert failed.returncode == 1, failed.stderr
    sid = json.loads(failed.stdout)["session_id"]
    assert run_cli("retry", sid).returncode == 1, "the same data fails again"
    fixed = run_cli("retry", sid, "--event-data", '{"n": 5}', "--actor", "ops", "--reason", "n was a typo", "--json")
    assert fixed.returncode == 0, fixed.stderr
    doc = json.loads(fixed.stdout)
    assert doc["status"] == "completed"
    assert doc["output"]["check"] == "ok-5" and doc["output"]["after"] == 'after ops {"n": 5}'
    events = json.loads(run_cli("session", sid, "--json").stdout)["events"]
    assert [(e["name"], e["source"], e["actor"], e["reason"]) for e in events][-1] == \
        ("approved", "retry", "ops", "n was a typo")


def test_retry_drop_event_empties_the_data_and_a_session_without_an_event_is_refused(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved:
                - check: "$(test -z '{{ event.get('n', '') }}' && echo empty)"
    """)
    assert run_cli("execute", str(wf)).returncode == 0
    failed = run_cli("resume", str(wf), "-e", "approved", "-d", '{"n": "\\u0000bad"}', "--json")
    assert failed.returncode == 1, failed.stderr
    sid = json.loads(failed.stdout)["session_id"]
    dropped = run_cli("retry", sid, "--drop-event", "--reason", "poison", "--json")
    assert dropped.returncode == 0, dropped.stderr
    assert json.loads(dropped.stdout)["output"]["check"] == "empty"
    other = write_workflow(tmp_path, "steps: ['$(false)']", name="no-event")
    sid2 = json.loads(run_cli("execute", str(other), "--json").stdout)[0]["session_id"]
    refused = run_cli("retry", sid2, "--drop-event")
    assert refused.returncode == 2 and "no event data to replace" in refused.stderr, refused.stderr


GATE = """
steps:
  - wait_for_event:
      within: 1h
      approved:
        - sleep: 1h
        - $(echo shipped)
      rejected: [$(echo dropped)]
      timeout: [$(echo expired)]
"""


def test_sessions_shows_which_event_decided_a_completed_session_or_that_it_timed_out(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, GATE)
    past = time.time() - 3 * 3600
    approved, rejected, expired = (roast.run(wf, now=lambda: past).session_id for _ in range(3))
    # approved, then a sleep that a tick ends: the sleep's end is not what decided the session
    assert roast.resume("approved", session_id=approved, now=lambda: past).status == "waiting"
    assert roast.resume("rejected", session_id=rejected, now=lambda: past).status == "completed"
    ticked = run_cli("tick")
    assert ticked.returncode == 0, ticked.stderr
    listed = run_cli("sessions", "--json")
    assert listed.returncode == 0, listed.stderr
    decided = {s["session_id"]: (s["status"], s["outcome"]) for s in json.loads(listed.stdout)}
    assert decided == {approved: ("completed", "approved"), rejected: ("completed", "rejected"),
                       expired: ("completed", "timed out")}
    table = run_cli("sessions").stdout.splitlines()
    assert table[0].split()[:4] == ["id", "workflow", "status", "outcome"]
    rows = {line.split()[0]: line.split()[3] for line in table[1:]}
    assert rows == {approved[:8]: "approved", rejected[:8]: "rejected", expired[:8]: "timed"}


def test_roast_sessions_says_how_many_match_and_where_the_next_page_starts(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, "steps: ['$(echo hi)']")
    made = [roast.run(wf).session_id for _ in range(3)]
    first = roast.sessions(limit=2)
    assert isinstance(first, list) and len(first) == 2
    assert (first.total, first.next) == (3, 2)
    rest = roast.sessions(limit=2, offset=first.next)
    assert (len(rest), rest.total, rest.next) == (1, 3, None)
    assert sorted(s.id for s in [*first, *rest]) == sorted(made)
    assert roast.sessions().next is None and "total=3" in repr(roast.sessions())


def test_ctrl_c_while_execute_wait_follows_a_session_leaves_it_waiting_and_exits_0(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, TWO_WAITS)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # SIGINT at its default in the child: a run started as `pytest &` (or CI in the background) inherits
    # it ignored, Python then leaves it ignored, and the Ctrl-C below would be lost (as tests/test_signals.py)
    proc = subprocess.Popen([sys.executable, "-m", "roast", "execute", "--wait", str(wf)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    guard = threading.Timer(60, proc.kill)  # a hang guard, not synchronisation
    guard.start()
    try:
        assert proc.stderr is not None
        seen = ""
        while "continue with" not in seen:  # the waiting notice is printed before it starts following
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen + err
    assert "still waiting" in err and "continue with" in err and "Traceback" not in err
    [session] = roast.sessions()
    assert session.status == "waiting"


def test_the_continue_with_commands_work_from_any_directory(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "project", """
        steps:
          - wait_for_event:
              approved: [$(echo ok)]
          - wait_for_event:
              done: [$(echo fin)]
    """)
    paused = run_cli("execute", "wf", cwd=wf.parent.parent)
    assert paused.returncode == 0, paused.stderr
    lines = paused.stderr.splitlines()
    commands = [line.strip() for line in lines[lines.index("   continue with:") + 1:] if line.strip().startswith("roast ")]
    assert len(commands) == 1 and " -e approved" in commands[0], paused.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pasted = run_cli(*shlex.split(commands[0])[1:], cwd=elsewhere)
    assert pasted.returncode == 0, pasted.stderr
    assert "waiting for: done" in pasted.stderr


def test_execute_wait_says_once_how_the_session_ended(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, "steps:\n  - wait_for_event:\n      go: ['$(echo went)']\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # SIGINT at its default in the child: a run started as `pytest &` (or CI in the background) inherits
    # it ignored, Python then leaves it ignored, and the Ctrl-C below would be lost (as tests/test_signals.py)
    proc = subprocess.Popen([sys.executable, "-m", "roast", "execute", "--wait", str(wf)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    guard = threading.Timer(60, proc.kill)  # a hang guard, not synchronisation
    guard.start()
    try:
        assert proc.stderr is not None
        seen = ""
        while "Ctrl-C leaves it waiting" not in seen:  # following it now
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        assert run_cli("resume", str(wf), "-e", "go").returncode == 0
        out, err = proc.communicate(timeout=30)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen + err
    assert "is completed" not in err and err.count("completed") == 1, err


def test_every_install_hint_names_the_distribution_roast_workflows_never_the_unrelated_roast() -> None:
    assert importlib.metadata.distribution("roast-workflows").metadata["Name"] == "roast-workflows"
    texts = [*(ROOT / "roast").glob("*.py"), ROOT / "README.md", ROOT / "man" / "roast.include",
             *(ROOT / "examples").rglob("*.md"), *(ROOT / "examples").rglob("*.yml")]
    wrong = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in texts
             for m in re.finditer(r"pip install '?roast\[\w+\]", path.read_text())]
    assert wrong == []


PROMPTING = """
steps:
  - summarize: Summarize the release notes in one line
"""


def _roast_without_openai(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = ("import sys; sys.modules['openai'] = None; from roast.cli import main; "
            f"sys.exit(main({list(args)!r}))")
    full = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=full,
                          timeout=60, check=False)


def test_a_missing_openai_package_is_refused_before_a_session_starts(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, "api_provider: openai\n" + PROMPTING)
    refused = _roast_without_openai("execute", str(wf), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-test"})
    assert refused.returncode == 2, refused.stderr
    assert "`openai` package is not installed" in refused.stderr and "roast-workflows[openai]" in refused.stderr
    assert "no session was started" in refused.stderr
    listed = run_cli("sessions", "--json")
    assert json.loads(listed.stdout) == []
    invalid = _roast_without_openai("validate", str(wf), cwd=tmp_path)
    assert invalid.returncode == 2 and "roast-workflows[openai]" in invalid.stderr, invalid.stderr


def test_base_url_alone_means_the_openai_compatible_provider_never_the_offline_model(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, "base_url: http://127.0.0.1:9/v1\n" + PROMPTING)
    ran = run_cli("execute", str(wf), "--json")
    assert ran.returncode == 1, ran.stderr  # port 9 (discard) answers nothing: a provider error, not an echo
    assert "offline model" not in ran.stderr
    doc = json.loads(ran.stdout)[0]
    assert doc["status"] == "failed" and "Summarize the release notes" not in json.dumps(doc["output"])
    assert "cannot connect" in (doc["error"] or "") or "127.0.0.1:9" in (doc["error"] or ""), doc["error"]


def test_validate_warns_when_only_the_offline_model_would_answer_the_prompt_steps(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, PROMPTING)
    checked = run_cli("validate", str(wf), "--json")
    assert checked.returncode == 0, checked.stderr
    assert any("only the offline model would answer" in w for w in json.loads(checked.stdout)["warnings"])
    chosen = write_workflow(tmp_path, "api_provider: offline\n" + PROMPTING, name="chosen")
    assert json.loads(run_cli("validate", str(chosen), "--json").stdout)["warnings"] == []


def test_cosmetics_times_with_a_t_aligned_was_now_lines_and_the_carry_on_hint_only_where_it_helps(
        tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, """
        steps:
          - first: $(echo first)
          - wait_for_event:
              approved: [$(echo ok)]
    """)
    sid = json.loads(run_cli("execute", str(wf), "--json").stdout)[0]["session_id"]
    wf.write_text(wf.read_text().replace("first: $(echo first)", "FIRST: $(echo first)"))
    refused = run_cli("resume", "-s", sid, "-e", "approved")
    assert refused.returncode == 3, refused.stderr
    was = [line for line in refused.stderr.splitlines() if line.lstrip().startswith(("was: ", "now: "))]
    assert len(was) == 2 and len({len(line) - len(line.lstrip()) for line in was}) == 1, refused.stderr

    cancelled = run_cli("cancel", sid, "--reason", "edited")
    assert cancelled.returncode == 0, cancelled.stderr
    again = run_cli("cancel", sid)
    assert again.returncode == 3 and re.search(r"cancelled at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", again.stderr), \
        again.stderr

    migrate = write_workflow(tmp_path, "steps:\n  - migrate: $(echo 'relation exists' >&2; exit 1)\n", name="mig")
    failed = run_cli("execute", str(migrate))
    assert failed.returncode == 1 and "exit_on_error" not in failed.stderr, failed.stderr
    probe = write_workflow(tmp_path, "steps:\n  - probe: $(grep -q needle /dev/null)\n", name="probe")
    quiet = run_cli("execute", str(probe))
    assert quiet.returncode == 1 and "exit_on_error: false" in quiet.stderr, quiet.stderr


def test_a_step_named_items_does_not_break_a_script_step_after_it(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, """
        steps:
          - items: $(echo three things)
          - report
    """, files={"report.sh": "#!/bin/sh\necho \"$ROAST_OUTPUT\"\n"})
    ran = run_cli("execute", str(wf), "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)[0]["output"]["report"] == {"items": "three things"}  # JSON output is parsed
