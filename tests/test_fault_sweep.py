"""Crash at every write point, for the shapes where exactly-once is hardest (issues 10 and 14).

Each scenario is a workflow plus the deliveries a sender makes, each with a fixed event id (so a
sender that retries after a crash is told `duplicate` instead of approving twice). For every phase
(the `execute`, then each delivery) and every write point n, the phase runs in a real process with
`ROAST_FAULT_AT=n` (the store SIGKILLs it at its n-th write point); then whatever the kill left is
recovered in process (`resume -s ID` for an orphan, the same delivery again for a sender), and the
remaining deliveries are made. Invariants, after every kill:

1. `PRAGMA integrity_check` is ok, and the one session completed;
2. its output equals the output of a run without faults;
3. each wait took exactly one event, the one the fault-free run gave it (no event ran two branches);
4. no silent re-run: a step that ran k times has at least k attempts in its history.

The issue-10 scenario (a crash inside one branch of a parallel group whose branches both wait for
`go`) is the first one: before the fix, recovery gave the second `go`'s branch the first event.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import roast
from roast import api

ROOT = Path(__file__).resolve().parent.parent

SCENARIOS = {
    "parallel-two-waits": ("""
steps:
  - - wait_for_event:
        go:
          - A1: $(echo A1 >> {log})
          - A2: $(echo A2 >> {log})
    - wait_for_event:
        go:
          - B1: $(echo B1 >> {log})
  - end: $(echo end >> {log})
""", [("go", "e1"), ("go", "e2")]),
    "wait-inside-each": ("""
steps:
  - each: $(printf 'a\\nb\\n')
    as: f
    steps:
      - wait_for_event:
          ok:
            - got: $(echo "got{{{{ f }}}}" >> {log} && echo "{{{{ f }}}}")
  - end: $(echo end >> {log})
""", [("ok", "e1"), ("ok", "e2")]),
    "a-branch-that-waits": ("""
steps:
  - wait_for_event:
      outer:
        - o1: $(echo o1 >> {log})
        - wait_for_event:
            inner:
              - i1: $(echo i1 >> {log})
        - o2: $(echo o2 >> {log})
  - end: $(echo end >> {log})
""", [("outer", "e1"), ("inner", "e2")]),
    "queued-then-consumed": ("""
steps:
  - first:
      wait_for_event:
        one:
          - s1: $(echo s1 >> {log})
  - second:
      wait_for_event:
        two:
          - s2: $(echo s2 >> {log})
  - end: $(echo end >> {log})
""", [("two", "e1"), ("one", "e2")]),  # `two` arrives early: kept, then taken by the second wait
}


def _env(home: Path, fault: int = 0) -> dict[str, str]:
    env = {**os.environ, "ROAST_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ROAST_FAULT_AT", None)
    if fault:
        env["ROAST_FAULT_AT"] = str(fault)
    return env


def _phase_args(wf: Path, phase: int, deliveries: list[tuple[str, str]], sid: str | None) -> list[str]:
    if phase == 0:
        return ["execute", str(wf)]
    event, event_id = deliveries[phase - 1]
    return ["resume", str(wf), "-e", event, "--event-id", event_id, "-s", sid or ""]


def _session(home: Path) -> roast.SessionInfo | None:
    found = roast.sessions(limit=None, home=home)
    assert len(found) <= 1, found
    return found[0] if found else None


def _recover(home: Path) -> None:
    s = _session(home)
    if s is not None and s.status == "running" and s.orphaned:
        roast.resume(session_id=s.id, home=home, wait_for_steps=True)


def _deliver(wf: Path, home: Path, event: str, event_id: str) -> None:
    s = _session(home)
    assert s is not None
    result = roast.resume(event, session_id=s.id, event_id=event_id, home=home)
    assert result.outcome in ("consumed", "queued", "duplicate"), result.outcome


def _drive(wf: Path, home: Path, deliveries: list[tuple[str, str]], start: int) -> None:
    """Recover what a kill left, then make every delivery from `start` on (the interrupted one again)."""
    if _session(home) is None:  # killed before the session existed: the sender runs it again
        roast.run(wf, home=home)
    _recover(home)
    for event, event_id in deliveries[max(start - 1, 0):]:
        _deliver(wf, home, event, event_id)
        _recover(home)


def _consumed(home: Path) -> list[tuple[str, str]]:
    s = _session(home)
    assert s is not None
    return sorted((e.name, e.wait_path or "") for e in api.deliveries(s.id, home=home) if e.outcome == "consumed")


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "received_at"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _check(home: Path, log: Path, expected: dict, point: str) -> None:
    with sqlite3.connect(home / "sessions.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", point
        attempts: Counter[str] = Counter()
        for step_name, most in db.execute("SELECT name, MAX(attempt) FROM steps GROUP BY path, name"):
            attempts[step_name] += most  # a step in a loop has one path per pass
    s = _session(home)
    assert s is not None and s.status == "completed", (point, s)
    assert _strip(s.output) == _strip(expected["output"]), point
    assert _consumed(home) == expected["consumed"], point
    ran = Counter(log.read_text().split())
    for token, times in expected["ran"].items():
        assert ran[token] >= times, (point, token, ran)  # nothing lost
    by_step: Counter[str] = Counter()
    for token, times in ran.items():
        by_step["got" if token.startswith("got") else token] += times  # `got` writes got<item>
    for step, times in by_step.items():
        assert times <= attempts[step], f"{point}: {step} ran {times}x, its history shows {attempts[step]}"


@pytest.fixture
def make(tmp_path: Path):
    def build(name: str, label: str) -> tuple[Path, Path, Path]:
        text, _ = SCENARIOS[name]
        base = tmp_path / f"{name}-{label}"
        log = base / "log"
        wf_dir = base / "wf"
        wf_dir.mkdir(parents=True)
        (wf_dir / "workflow.yml").write_text(text.format(log=log))
        log.touch()
        return wf_dir / "workflow.yml", base / "home", log
    return build


def _reference(make, name: str) -> dict:
    wf, home, log = make(name, "reference")
    deliveries = SCENARIOS[name][1]
    roast.run(wf, home=home)
    for event, event_id in deliveries:
        _deliver(wf, home, event, event_id)
    s = _session(home)
    assert s is not None and s.status == "completed", s
    return {"output": s.output, "consumed": _consumed(home), "ran": Counter(log.read_text().split())}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_kill_at_any_write_point_of_any_phase_runs_no_event_twice(make, name: str) -> None:
    expected = _reference(make, name)
    deliveries = SCENARIOS[name][1]
    killed = 0
    for phase in range(len(deliveries) + 1):
        for n in range(1, 300):
            wf, home, log = make(name, f"{phase}-{n}")
            sid = roast.run(wf, home=home).session_id if phase else None
            for event, event_id in deliveries[:max(phase - 1, 0)]:
                _deliver(wf, home, event, event_id)
            proc = subprocess.run([sys.executable, "-m", "roast", *_phase_args(wf, phase, deliveries, sid)],
                                  capture_output=True, text=True, env=_env(home, n), timeout=60, check=False)
            if proc.returncode != -signal.SIGKILL:
                assert proc.returncode == 0, proc.stderr
                assert "Traceback" not in proc.stderr
                _drive(wf, home, deliveries, phase + 1)
                _check(home, log, expected, f"{name}: phase {phase} without a kill")
                break
            killed += 1
            _drive(wf, home, deliveries, phase)
            _check(home, log, expected, f"{name}: phase {phase} killed at write point {n}")
        else:
            raise AssertionError("the phase never completed")
    assert killed >= 3 * (len(deliveries) + 1), killed
    print(f"F2 {name}: killed at {killed} write points, 0 violations")


# --------------------------------------------------------------------------- retries (issue 16)

RETRY_FLAKY = """
steps:
  - first: $(echo first >> {log})
  - flaky: $(n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}; echo flaky >> {log}; [ $n -ge 3 ])
  - end: $(echo end >> {log})
flaky:
  retry: {{attempts: 3, delay: 0.01s, jitter: false}}
"""

RETRY_FAILED = """
steps:
  - first: $(echo first >> {log})
  - - left: $(echo left >> {log})
    - build: $(test -e {fixed} || exit 3; echo build >> {log})
  - end: $(echo end >> {log})
"""


def _history_checks(home: Path, log: Path, point: str) -> None:
    """Every run of a step has its history row, and each step's attempts are 1..k with no gap."""
    with sqlite3.connect(home / "sessions.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", point
        rows = db.execute("SELECT name, attempt FROM steps ORDER BY rowid").fetchall()
    attempts: dict[str, list[int]] = {}
    for name, attempt in rows:
        attempts.setdefault(name, []).append(attempt)
    for name, seen in attempts.items():
        assert seen == list(range(1, len(seen) + 1)), (point, name, seen)
    for token, times in Counter(log.read_text().split()).items():
        assert times <= len(attempts.get(token, [])), f"{point}: {token} ran {times}x, history {attempts.get(token)}"


def _finish_retries(home: Path, fault: int = 0) -> bool:
    """What cron and an operator would do after a kill: recover an orphan, fire due backoffs. With
    `fault`, each backoff is first fired by a `roast tick` process killed at its `fault`-th write
    point; what it left is recovered here, or fired by the next tick. Returns whether every
    process ran clean."""
    import time

    clean = True
    faulted: set[float] = set()  # each backoff's first tick is killed; the next one (cron's) runs clean
    for _ in range(3000):
        s = _session(home)
        assert s is not None
        if s.status == "running" and s.orphaned:
            roast.resume(session_id=s.id, home=home, wait_for_steps=True)
        elif s.status == "waiting" and s.deadline is not None and s.deadline <= time.time():
            if fault and s.deadline not in faulted:
                faulted.add(s.deadline)
                proc = subprocess.run([sys.executable, "-m", "roast", "tick"], capture_output=True, text=True,
                                      env=_env(home, fault), timeout=60, check=False)
                clean = clean and proc.returncode != -signal.SIGKILL
            else:
                roast.tick(home=home)
        elif s.status not in ("running", "waiting"):
            return clean
        time.sleep(0.005)
    raise AssertionError("the session never ended")


@pytest.mark.parametrize("durable", [False, True], ids=["in-process-backoff", "durable-backoff"])
def test_a_kill_at_any_write_point_of_a_retry_backoff_keeps_the_attempts(tmp_path: Path, durable: bool,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The flaky step fails twice, then passes, with attempts: 3. A kill anywhere (in the backoff
    too) must resume at the same attempt: the session completes, every run has its history row,
    and the attempts are consecutive. Durable: each backoff suspends and `roast tick` continues."""
    if durable:
        monkeypatch.setenv("ROAST_SLEEP_IN_PROCESS", "0")
    killed = 0
    for n in range(1, 300):
        base = tmp_path / str(n)
        wf_dir, log, count = base / "wf", base / "log", base / "count"
        wf_dir.mkdir(parents=True)
        (wf_dir / "workflow.yml").write_text(RETRY_FLAKY.format(log=log, count=count))
        log.touch()
        home = base / "home"
        # the whole run, as cron would drive it: execute, then ticks, each process killed at its n-th write
        env = _env(home, n)
        proc = subprocess.run([sys.executable, "-m", "roast", "execute", str(wf_dir / "workflow.yml")],
                              capture_output=True, text=True, env=env, timeout=60, check=False)
        ended_clean = proc.returncode != -signal.SIGKILL
        if not ended_clean:
            killed += 1
        if _session(home) is None:
            roast.run(wf_dir / "workflow.yml", home=home)
        # durable: every tick that fires a backoff is killed at its n-th write point as well
        ended_clean = _finish_retries(home, n if durable else 0) and ended_clean
        point = f"retry backoff ({'durable' if durable else 'in process'}): killed at write point {n}"
        s = _session(home)
        assert s is not None and s.status == "completed", (point, s)
        ran = Counter(log.read_text().split())
        assert ran["first"] >= 1 and ran["end"] >= 1 and ran["flaky"] >= 3, (point, ran)
        _history_checks(home, log, point)
        if ended_clean:
            break
    assert killed >= 5, killed
    print(f"F3 retry backoff ({'durable' if durable else 'in process'}): killed at {killed} write points, "
          "0 violations")


def test_a_kill_at_any_write_point_of_roast_retry_runs_the_failed_step_once_more(tmp_path: Path) -> None:
    """A failed session (one branch of a parallel group failed), fixed, then `roast retry` killed at
    each write point: retrying again (or recovering the orphan) completes it, and the steps before
    the failed one never ran again."""
    killed = 0
    for n in range(1, 300):
        base = tmp_path / str(n)
        wf_dir, log, fixed = base / "wf", base / "log", base / "fixed"
        wf_dir.mkdir(parents=True)
        (wf_dir / "workflow.yml").write_text(RETRY_FAILED.format(log=log, fixed=fixed))
        log.touch()
        home = base / "home"
        failed = roast.run(wf_dir / "workflow.yml", home=home)
        assert failed.status == "failed", failed
        fixed.touch()
        proc = subprocess.run([sys.executable, "-m", "roast", "retry", failed.session_id], capture_output=True,
                              text=True, env=_env(home, n), timeout=60, check=False)
        point = f"roast retry killed at write point {n}"
        ended_clean = proc.returncode != -signal.SIGKILL
        if ended_clean:
            assert proc.returncode == 0, (point, proc.stderr)
        else:
            killed += 1
            s = _session(home)
            assert s is not None
            if s.status == "failed":  # killed before the claim: nothing happened; retry again
                roast.retry(s.id, home=home)
            _finish_retries(home)
        s = _session(home)
        assert s is not None and s.status == "completed", (point, s)
        ran = Counter(log.read_text().split())
        assert ran["first"] == 1 and ran["left"] == 1, (point, ran)  # before the failed step: never again
        assert ran["build"] >= 1 and ran["end"] >= 1, (point, ran)
        _history_checks(home, log, point)
        if ended_clean:
            break
    assert killed >= 3, killed
    print(f"F4 roast retry: killed at {killed} write points, 0 violations")
