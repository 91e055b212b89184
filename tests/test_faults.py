"""Crash at every write point (reliability.md §6 F2, after SQLite's writecrash.test).

`ROAST_FAULT_AT=n` makes the store SIGKILL its own process at its n-th write point (before BEGIN,
before COMMIT, after COMMIT of every transaction). For each phase — `execute` up to the wait, and
`resume` to completion — n runs 1, 2, … until the phase gets through without being killed. After
every kill the session is recovered to completion and the invariants are checked:

1. (SQLite) `PRAGMA integrity_check` is ok, and there is exactly one session, completed;
2. its output and final output equal those of a run without faults;
3. the event was recorded exactly once;
4. no silent re-run: a step that ran k times has at least k attempts in its history.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import store_env, store_for

import roast
from roast import api
from roast.errors import RoastError

ROOT = Path(__file__).resolve().parent.parent

WORKFLOW = """
steps:
  - s1: $(echo s1 >> {log} && echo one)
  - s2: $(echo s2 >> {log} && echo two)
  - wait_for_event:
      approved:
        - s3: $(echo s3 >> {log} && echo "three {{{{ event.who }}}}")
        - s4: $(echo s4 >> {log} && echo four)
  - s5: $(echo s5 >> {log} && echo five)
"""


def _cli(args: list[str], home: Path, fault: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **store_env(home), "PYTHONPATH": str(ROOT)}
    env.pop("ROAST_FAULT_AT", None)
    if fault:
        env["ROAST_FAULT_AT"] = str(fault)
    return subprocess.run([sys.executable, "-m", "roast", *args], capture_output=True, text=True, env=env, check=False,
                          timeout=60)


def _sessions(home: Path) -> list[roast.SessionInfo]:
    return roast.sessions(limit=None, home=home, store=store_for(home))


def _finish(wf: Path, home: Path) -> None:
    """Recover whatever a kill left, in process, until the session completes."""
    for _ in range(10):
        found = _sessions(home)
        if not found:
            roast.run(wf, home=home, store=store_for(home))
            continue
        s = found[0]
        if s.status == "completed":
            return
        if s.status == "waiting":
            roast.resume("approved", data={"who": "ana"}, session_id=s.id, home=home, store=store_for(home))
        elif s.status == "running" and s.orphaned:
            roast.resume(session_id=s.id, home=home, store=store_for(home),
                         wait_for_steps=True)  # its step may still be ending
        else:
            raise AssertionError(f"unexpected state {s.status} (orphaned={s.orphaned})")
    raise AssertionError("the session did not complete")


def _timeless(output: dict) -> dict:
    """Outputs without the wait's received_at, which differs from run to run."""
    return json.loads(json.dumps(output).replace(output.get("wait_for_event", {}).get("received_at", "-"), "T"))


def _check(home: Path, log: Path, expected: dict, point: str) -> None:
    if store_for(home) is None:
        with sqlite3.connect(home / "sessions.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", point
    found = _sessions(home)
    assert len(found) == 1 and found[0].status == "completed", (point, found)
    events = [(e.name,) for e in api.deliveries(found[0].id, home=home, store=store_for(home))]
    attempts: Counter[str] = Counter()
    for step in api.history(found[0].id, home=home, store=store_for(home)):
        attempts[step.name] = max(attempts[step.name], step.attempt)
    assert _timeless(found[0].output) == _timeless(expected["output"]), point
    assert found[0].final_output == expected["final_output"], point
    assert events == [("approved",)], (point, events)
    ran = Counter(log.read_text().split())
    for step in ("s1", "s2", "s3", "s4", "s5"):
        assert ran[step] >= 1, (point, step)
        assert ran[step] <= attempts[step], f"{point}: {step} ran {ran[step]}x, history shows {attempts[step]}"


@pytest.fixture
def scenario(tmp_path: Path):
    def make(name: str) -> tuple[Path, Path, Path]:
        base = tmp_path / name
        log = base / "log"
        wf_dir = base / "wf"
        wf_dir.mkdir(parents=True)
        (wf_dir / "workflow.yml").write_text(WORKFLOW.format(log=log))
        log.touch()
        return wf_dir / "workflow.yml", base / "home", log
    return make


@pytest.fixture
def expected(scenario) -> dict:
    wf, home, _log = scenario("reference")
    assert _cli(["execute", str(wf)], home).returncode == 0
    assert _cli(["resume", str(wf), "-e", "approved", "-d", '{"who": "ana"}'], home).returncode == 0
    s = _sessions(home)[0]
    assert s.status == "completed" and s.output["s3"] == "three ana"
    return {"output": s.output, "final_output": s.final_output}


@pytest.mark.parametrize("phase", ["execute", "resume"])
def test_a_kill_at_any_write_point_loses_nothing_and_reruns_nothing_silently(scenario, expected, phase):
    killed = 0
    for n in range(1, 200):
        wf, home, log = scenario(f"{phase}-{n}")
        if phase == "resume":
            assert _cli(["execute", str(wf)], home).returncode == 0
            proc = _cli(["resume", str(wf), "-e", "approved", "-d", '{"who": "ana"}'], home, fault=n)
        else:
            proc = _cli(["execute", str(wf)], home, fault=n)
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, proc.stderr
            assert "Traceback" not in proc.stderr
            break
        killed += 1
        try:
            _finish(wf, home)
        except RoastError as err:
            raise AssertionError(f"{phase} killed at write point {n}: recovery failed: {err}") from err
        _check(home, log, expected, f"{phase} killed at write point {n}")
    else:
        raise AssertionError("the phase never completed")
    # every transaction has three points, so a phase that writes anything has several
    assert killed >= 9, f"only {killed} write points were exercised in {phase}"
    print(f"F2 {phase}: killed at {killed} write points, 0 violations")
