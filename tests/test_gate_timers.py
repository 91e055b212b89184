"""Issue 23: `remind:` and `escalate:` are durable timers fired by the worker (`roast tick`, `roast
serve`, `--wait`): reminders every interval with `{{ wait.reminder }}` = 1, 2, … (0 in the first
notice), each escalation once, both stopping when the gate is decided, and each at most once under
racing workers and a kill -9. Durations in seconds; time is driven by running the worker, and every
wait is a poll with a deadline on what the notify steps append to a file, never a clock assertion.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import roast
from roast import api
from roast.cli import main
from conftest import ROOT, run_cli, write_workflow
from test_serve import eventually, serve  # noqa: F401

GATE = """
    name: gate
    steps:
      - wait_for_event:
          within: 1h
          remind: 1s
          notify:
            - $(echo "notice {{ wait.reminder }} {{ wait.escalation }}" >> @LOG@)
          approved: ["$(echo approved)"]
"""

CLOCK = """
    name: clock
    steps:
      - wait_for_event:
          within: 1h
          remind: 1s
          notify:
            - $(echo "tick {{ wait.reminder }}" >> @LOG@)
          stop: ["$(echo stopped)"]
"""


def _start(tmp_path: Path, yaml_text: str, log: Path, name: str) -> str:
    wf = write_workflow(tmp_path, yaml_text.replace("@LOG@", str(log)), name=name)
    result = roast.run(wf)
    assert result.status == "waiting", result
    return result.session_id


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def ticking_until(check, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Run `roast tick` (in process) until `check()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert main(["tick"]) == 0
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def waiting_until(check, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_reminders_run_every_interval_with_their_number_and_stop_when_the_gate_is_decided(tmp_path):
    log, clock = tmp_path / "notices.txt", tmp_path / "clock.txt"
    sid = _start(tmp_path, GATE, log, "gate")
    assert lines(log) == ["notice 0 "]  # the first notice is reminder 0
    ticking_until(lambda: "notice 3 " in lines(log), "three reminders")
    assert lines(log)[:4] == ["notice 0 ", "notice 1 ", "notice 2 ", "notice 3 "]

    assert main(["resume", "-s", sid, "-e", "approved"]) == 0
    sent = lines(log)
    # another gate, opened now, is the clock: once it was reminded twice, the decided one was due again
    _start(tmp_path, CLOCK, clock, "clock")
    ticking_until(lambda: "tick 2" in lines(clock), "two reminders of the clock gate")
    assert lines(log) == sent  # nothing after the decision
    assert api.session(sid).status == "completed"


def test_each_escalation_runs_once_with_its_own_notify_else_the_waits(tmp_path):
    log, clock = tmp_path / "notices.txt", tmp_path / "clock.txt"
    _start(tmp_path, """
        name: escalating
        steps:
          - wait_for_event:
              within: 1h
              escalate:
                - {after: 1s, notify: ["$(echo 'page oncall {{ wait.escalation }}' >> @LOG@)"]}
                - {after: 2s}
              notify:
                - $(echo "notice {{ wait.reminder }} {{ wait.escalation }}" >> @LOG@)
              approved: ["$(echo approved)"]
    """, log, "escalating")
    ticking_until(lambda: "notice 0 1" in lines(log), "the second escalation")
    _start(tmp_path, CLOCK, clock, "clock")
    ticking_until(lambda: "tick 2" in lines(clock), "two reminders of the clock gate")
    assert lines(log) == ["notice 0 ", "page oncall 0", "notice 0 1"]


def test_after_an_absence_only_the_latest_reminder_is_sent(tmp_path):
    log, clock = tmp_path / "notices.txt", tmp_path / "clock.txt"
    _start(tmp_path, GATE, log, "gate")
    clock_id = _start(tmp_path, CLOCK, clock, "clock")
    only_clock = api.worker()

    def clock_reminded_three_times() -> bool:  # the gate's worker is away meanwhile
        only_clock.fire_timers(clock_id)
        return "tick 3" in lines(clock)

    waiting_until(clock_reminded_three_times, "three intervals of the clock gate")
    assert lines(log) == ["notice 0 "]
    assert main(["tick"]) == 0
    sent = lines(log)
    assert len(sent) == 2 and int(sent[1].split()[1]) >= 3, sent  # one reminder, the latest due


def test_a_failing_reminder_is_a_warning_and_the_session_keeps_waiting(tmp_path, capsys):
    log = tmp_path / "notices.txt"
    sid = _start(tmp_path, """
        name: failing
        steps:
          - wait_for_event:
              within: 1h
              remind: 1s
              notify:
                - $(echo "notice {{ wait.reminder }}" >> @LOG@; test {{ wait.reminder }} = 0)
              approved: ["$(echo approved)"]
    """, log, "failing")
    ticking_until(lambda: "notice 2" in lines(log), "two failing reminders")
    assert api.session(sid).status == "waiting"
    assert main(["resume", "-s", sid, "-e", "approved"]) == 0


def test_roast_tick_says_which_reminders_and_escalations_it_sent(tmp_path):
    """`roast tick` lists what it sent beside the deadlines it fired, in text and in --json; with
    nothing due it says so (it said "no overdue waits" after sending a reminder)."""
    log = tmp_path / "notices.txt"
    sid = _start(tmp_path, """
        name: told
        steps:
          - wait_for_event:
              within: 1h
              remind: 1s
              escalate: {after: 1s}
              notify:
                - $(echo "notice {{ wait.reminder }} {{ wait.escalation }}" >> @LOG@)
              approved: ["$(echo approved)"]
    """, log, "told")
    done = run_cli("tick", "--json", cwd=tmp_path)
    while len(lines(log)) < 2:  # before its timers were due: nothing sent, nothing listed
        assert done.returncode == 0 and json.loads(done.stdout) == [], done
        time.sleep(0.2)
        done = run_cli("tick", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [entry] = json.loads(done.stdout)
    assert entry["session_id"] == sid and entry["fired"] is True and entry["status"] == "waiting"
    assert entry["timer"] == "reminder 1, escalation 1" and entry["error"] is None, entry
    texts = []
    while "notice 2" not in " ".join(lines(log)):  # the next reminder, in words
        text = run_cli("tick", cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        texts.append(text.stderr)
        time.sleep(0.2)
    assert f"session {sid}: reminder 2 sent" in texts[-1] and "no overdue" not in texts[-1]
    assert any("nothing due" in t for t in texts[:-1]) or len(texts) == 1


# --------------------------------------------------------------------------- racing workers and crashes

def _tick_loop(tmp_path: Path, stop: Path) -> subprocess.Popen[str]:
    """A shell loop of real `roast tick` processes, until `stop` exists."""
    script = f'while [ ! -f "{stop}" ]; do "{sys.executable}" -m roast tick >/dev/null 2>&1; done'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(["sh", "-c", script], cwd=tmp_path, env=env, text=True)


def test_two_racing_tick_loops_send_each_reminder_and_escalation_exactly_once(tmp_path):
    log = tmp_path / "notices.txt"
    sid = _start(tmp_path, """
        name: raced
        steps:
          - wait_for_event:
              within: 1h
              remind: 1s
              escalate: {after: 2s}
              notify:
                - $(echo "notice {{ wait.reminder }} {{ wait.escalation }}" >> @LOG@)
              approved: ["$(echo approved)"]
    """, log, "raced")
    stop = tmp_path / "stop"
    loops = [_tick_loop(tmp_path, stop) for _ in range(2)]
    try:
        waiting_until(lambda: any(line.startswith("notice 4 ") for line in lines(log)), "four reminders")
    finally:
        stop.touch()
        for loop in loops:
            loop.wait(timeout=60)
    assert run_cli("resume", "-s", sid, "-e", "approved").returncode == 0
    sent = lines(log)
    assert all(n == 1 for n in Counter(sent).values()), sent  # never twice
    reminders = [int(line.split()[1]) for line in sent if line.endswith(" ")]
    assert reminders[0] == 0 and reminders == sorted(reminders) and 4 in reminders, sent
    assert len([line for line in sent if not line.endswith(" ")]) == 1, sent  # the escalation, once


def test_two_racing_servers_send_each_reminder_once_and_stop_at_the_decision(tmp_path, serve):  # noqa: F811
    log, clock = tmp_path / "notices.txt", tmp_path / "clock.txt"
    sid = _start(tmp_path, GATE, log, "gate")
    first, second = serve(), serve()
    eventually(lambda: "notice 3 " in lines(log), "three reminders from the servers", timeout=60)
    assert first.post(sid, "approved")[0] == 200
    eventually(lambda: api.session(sid).status == "completed", "the branch to run")
    sent = lines(log)
    _start(tmp_path, CLOCK, clock, "clock")
    eventually(lambda: "tick 2" in lines(clock), "two reminders of the clock gate", timeout=60)
    assert lines(log) == sent
    numbers = [int(line.split()[1]) for line in sent]
    assert numbers[0] == 0 and numbers == sorted(set(numbers)), sent  # each once, in order
    assert "reminder failed" not in first.log + second.log


def test_a_server_killed_while_sending_a_reminder_never_sends_it_again(tmp_path, serve):  # noqa: F811
    """At most once: the reminder is claimed before its step runs; the next server goes on from the
    next one (reminder 2 started once, and is never started again)."""
    log = tmp_path / "notices.txt"
    release = tmp_path / "release"
    sid = _start(tmp_path, f"""
        name: killed
        steps:
          - wait_for_event:
              within: 1h
              remind: 1s
              notify:
                - $(echo "start {{{{ wait.reminder }}}}" >> @LOG@; if [ {{{{ wait.reminder }}}} = 2 ]; then while [ ! -f {release} ]; do sleep 0.05; done; fi)
              approved: ["$(echo approved)"]
    """, log, "killed")
    first = serve()
    eventually(lambda: "start 2" in lines(log), "reminder 2 to start", timeout=60)
    first.proc.kill()  # kill -9, in the middle of reminder 2's step
    first.proc.wait(timeout=30)
    serve()
    try:
        eventually(lambda: "start 4" in lines(log), "the next server's reminders", timeout=60)
    finally:
        release.touch()
    starts = Counter(lines(log))
    assert starts["start 2"] == 1 and all(n == 1 for n in starts.values()), starts
    assert api.session(sid).status == "waiting"


def test_execute_wait_fires_its_sessions_reminders(tmp_path):
    """`roast execute --wait` (the worker's `listen`) fires its own session's reminders while it waits."""
    log = tmp_path / "notices.txt"
    wf = write_workflow(tmp_path, GATE.replace("@LOG@", str(log)), name="gate")
    proc = subprocess.Popen([sys.executable, "-m", "roast", "execute", str(wf), "--wait"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        waiting_until(lambda: "notice 2 " in lines(log), "reminders while --wait follows the session")
    finally:
        proc.kill()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- validate

def test_validate_refuses_remind_without_notify_and_escalation_after_the_deadline(tmp_path, capsys):
    wf = write_workflow(tmp_path, """
        steps:
          - wait_for_event:
              within: 1h
              remind: 4h
              escalate: {after: 2h}
              approved: ["$(echo approved)"]
    """)
    code = main(["validate", str(wf)])
    err = capsys.readouterr().err
    assert code != 0
    assert "`remind` runs the wait's `notify:` again, but this wait has no `notify:`" in err
    assert "`remind` every 4h never runs" in err and "`escalate` after 2h never runs" in err


# --------------------------------------------------------------------------- the store's half, on both stores

@pytest.fixture(params=["sqlite", "postgres"])
def store(request, roast_home, monkeypatch):  # type: ignore[no-untyped-def]
    from conftest import TEST_KEY
    from roast.store_sqlite import SQLiteStore

    if request.param == "sqlite":
        monkeypatch.delenv("ROAST_KEY", raising=False)
        made = SQLiteStore(roast_home)
    else:
        from roast.store_postgres import PostgresStore

        monkeypatch.setenv("ROAST_KEY", TEST_KEY)
        made = PostgresStore(request.getfixturevalue("pg_url"))
    yield made
    made.close()


def _suspended(store, policy: dict | None, now: float = 1000.0) -> str:  # type: ignore[no-untyped-def]
    from roast.store import NewSession, new_id

    sid = new_id()
    store.create(NewSession(sid, "/w/gate/workflow.yml", "gate", "fp", None, "/tmp", ("approved",), None, None,
                            False, now), {"start": True}, now=now)
    store.suspend(sid, {"s": 1}, cursor="steps[0]", now=now,
                  awaiting=[{"event": "approved", "wait": "gate", "path": "steps[0]", "deadline": None,
                             **({"policy": policy} if policy else {})}])
    return sid


def test_a_wait_with_timers_is_due_at_the_first_and_exactly_one_racing_claim_wins(store):
    import threading

    from roast.store import Incoming

    plain = _suspended(store, None)
    sid = _suspended(store, {"remind": 10.0, "escalate": [5.0]})
    assert store.timers_due(now=1004.9) == []
    [due] = store.timers_due(now=1005.0)
    assert (due.session_id, due.opened_at, due.reminded, due.escalated, due.timer_at) == (sid, 1000.0, 0, 0, 1005.0)
    assert plain not in [t.session_id for t in store.timers_due(now=1e12)]

    wins: list[bool] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        wins.append(store.claim_timer(sid, wait_seq=due.wait_seq, reminded_was=0, escalated_was=0, reminded=0,
                                      escalated=1, next_at=1010.0))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert store.timers_due(now=1009.0) == []
    [again] = store.timers_due(now=1010.0)
    assert (again.reminded, again.escalated) == (0, 1)

    store.deliver(sid, Incoming("approved", {}, None, "ana", None, "cli", 1011.0, None), now=1011.0)
    assert store.timers_due(now=1e12) == []  # the gate closed: no timer is due, ever
    assert not store.claim_timer(sid, wait_seq=due.wait_seq, reminded_was=0, escalated_was=1, reminded=1,
                                 escalated=1, next_at=None)


def test_parallel_waits_are_reminded_together_and_each_escalates_with_its_own_number(tmp_path):
    log = tmp_path / "notices.txt"
    sid = _start(tmp_path, """
        name: both
        steps:
          - - - legal:
                  wait_for_event:
                    within: 1h
                    remind: 1s
                    notify: ["$(echo 'legal {{ wait.reminder }} {{ wait.escalation }}' >> @LOG@)"]
                    legal_ok: ["$(echo ok)"]
            - - security:
                  wait_for_event:
                    within: 1h
                    escalate: {after: 1s}
                    notify: ["$(echo 'security {{ wait.reminder }} {{ wait.escalation }}' >> @LOG@)"]
                    security_ok: ["$(echo ok)"]
    """, log, "both")
    assert sorted(lines(log)) == ["legal 0 ", "security 0 "]
    ticking_until(lambda: "legal 2 " in lines(log), "two reminders of the legal wait")
    sent = lines(log)
    assert sent.count("security 1 0") + sent.count("security 0 0") + sent.count("security 2 0") == 1, sent
    assert not any(line.startswith("security") and line.endswith(" ") and line != "security 0 " for line in sent)
    assert main(["resume", "-s", sid, "-e", "legal_ok"]) == 0
