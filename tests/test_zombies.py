"""A process group of zombies is not alive (issue 20): recovery is not refused for a step that is gone
but not yet reaped, as happens where PID 1 reaps orphans slowly or never (a container without an init).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import roast
from conftest import ROOT, run_cli, write_workflow

# Plays PID 1 in a container without an init: a child subreaper that never reaps. It runs `roast execute`,
# kills it with -9 while its step sleeps, kills the step too (which then belongs to this process, a
# zombie it never collects), says which pid is the zombie, and keeps it so until told to go.
DRIVER = textwrap.dedent(r"""
    import ctypes, os, signal, subprocess, sys, time
    from pathlib import Path

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        print("no-subreaper", flush=True)
        sys.exit(0)
    workflow, pidfile = sys.argv[1], Path(sys.argv[2])
    execute = subprocess.Popen([sys.executable, "-m", "roast", "execute", workflow],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    step = int(pidfile.read_text())
    execute.kill()
    execute.wait()
    os.kill(step, signal.SIGKILL)  # its parent is gone: the step is this process's child now
    for _ in range(1200):
        with open(f"/proc/{step}/stat", "rb") as stat:
            if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.05)
    print(step, flush=True)
    sys.stdin.read()  # hold the zombie until the test is done
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER and /proc are Linux's")
def test_recovery_is_not_refused_by_a_process_group_of_zombies(tmp_path: Path) -> None:
    log, mark, pidfile = tmp_path / "log", tmp_path / "mark", tmp_path / "step.pid"
    workflow = write_workflow(tmp_path, f"""
        steps:
          - slow: "$(if [ -e {mark} ]; then echo second >> {log}; else touch {mark}; echo $$ > {pidfile}; exec sleep 60; fi)"
          - after: "$(echo after >> {log})"
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(workflow), str(pidfile)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        said = driver.stdout.readline().strip()
        if said == "no-subreaper":
            pytest.skip("this kernel refused PR_SET_CHILD_SUBREAPER")
        zombie = int(said)
        with open(f"/proc/{zombie}/stat", "rb") as stat:
            assert stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"  # gone, not reaped, still in its group

        (session,) = roast.sessions(limit=None)
        recovered = run_cli("resume", "-s", session.id)
        assert recovered.returncode == 0, recovered.stderr
        assert "still has processes running" not in recovered.stderr
        assert log.read_text().split() == ["second", "after"]
        assert roast.session(session.id).status == "completed"
    finally:
        if driver.stdin:
            driver.stdin.close()
        driver.wait(timeout=30)
