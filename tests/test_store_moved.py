"""`roast store copy` marks the copied open sessions `moved` in the source (issue 24), so one
approval is never applied once in each store; `--keep-source` keeps them live, with a warning.
Real `roast` processes against the SQLite source and a real PostgreSQL target."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from conftest import run_cli, write_workflow

pytestmark = [pytest.mark.usefixtures("pg_server"),
              pytest.mark.sqlite_only("the source of a copy is the SQLite store in ROAST_HOME")]

DEPLOY = """
name: deploy
steps:
  - wait_for_event:
      within: 1h
      approved:
        - deploy: "$(echo deployed >> {log}; echo done)"
"""


def _with_password(url: str) -> str:
    """The test server trusts its socket: a password in the URL is accepted and must never be shown."""
    return re.sub(r"://([^:/@]+)@", r"://\1:sekrit@", url, count=1)


def _waiting(tmp_path: Path, log: Path) -> tuple[Path, str]:
    wf = write_workflow(tmp_path, DEPLOY.replace("{log}", str(log)))
    started = run_cli("execute", str(wf), "--json")
    assert started.returncode == 0, started.stderr
    return wf, json.loads(started.stdout)[0]["session_id"]


def test_store_copy_marks_open_sessions_moved_so_an_approval_runs_the_deploy_once(
        tmp_path: Path, roast_home: Path, pg_url: str) -> None:
    log = tmp_path / "deploys.log"
    wf, sid = _waiting(tmp_path, log)
    target = _with_password(pg_url)
    key = {"ROAST_KEY_FILE": str(roast_home / "secret.key")}

    copied = run_cli("store", "copy", "--to", target, env=key)
    assert copied.returncode == 0, copied.stderr
    assert "1 open session marked moved here" in copied.stderr and "sekrit" not in copied.stderr

    there = run_cli("resume", "-s", sid, "-e", "approved", "--reason", "via pg",
                    env={**key, "ROAST_STORE": target})
    assert there.returncode == 0, there.stderr
    here = run_cli("resume", "-s", sid, "-e", "approved", "--reason", "via sqlite", "--json")
    assert here.returncode == 3, here.stderr
    assert "moved to postgresql://roastpg@" in here.stderr and "deliver there" in here.stderr
    assert "sekrit" not in here.stderr + here.stdout and "***" not in here.stderr
    assert json.loads(here.stdout)["outcome"] == "closed"
    assert log.read_text().splitlines() == ["deployed"], "the deploy step ran once, in the target"

    for refused in (run_cli("resume", "-s", sid), run_cli("cancel", sid), run_cli("resume", str(wf), "-e", "approved")):
        assert refused.returncode == 3, refused.stderr
        assert "moved to postgresql://roastpg@" in refused.stderr, refused.stderr
    assert run_cli("tick").returncode == 0
    listed = run_cli("sessions", "--json")
    assert [(s["session_id"], s["status"]) for s in json.loads(listed.stdout)] == [(sid, "moved")]
    assert "moved" in run_cli("sessions").stdout
    assert log.read_text().splitlines() == ["deployed"]


def test_store_copy_keep_source_leaves_the_source_live_and_warns(tmp_path: Path, roast_home: Path,
                                                                 pg_url: str) -> None:
    log = tmp_path / "deploys.log"
    _, sid = _waiting(tmp_path, log)

    copied = run_cli("store", "copy", "--to", pg_url, "--keep-source", env={"ROAST_KEY_FILE": str(roast_home / "secret.key")})
    assert copied.returncode == 0, copied.stderr
    assert "warning: --keep-source" in copied.stderr and "marked moved" not in copied.stderr
    here = run_cli("resume", "-s", sid, "-e", "approved")
    assert here.returncode == 0, here.stderr
    assert log.read_text().splitlines() == ["deployed"]


def test_store_copy_names_a_roast_serve_still_running_on_the_source(tmp_path: Path, roast_home: Path,
                                                                   pg_url: str) -> None:
    import os
    import subprocess
    import sys
    import time

    from conftest import ROOT

    if importlib.util.find_spec("uvicorn") is None or not os.path.isdir("/proc"):
        pytest.skip("needs the serve extra and Linux's /proc")
    _waiting(tmp_path, tmp_path / "deploys.log")
    db = os.path.realpath(roast_home / "sessions.db")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    serve = subprocess.Popen([sys.executable, "-m", "roast", "serve", "--port", "0"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def has_it_open() -> bool:
            try:
                return any(os.readlink(f"/proc/{serve.pid}/fd/{fd}") in (db, db + "-wal")
                           for fd in os.listdir(f"/proc/{serve.pid}/fd"))
            except OSError:
                return False

        deadline = time.monotonic() + 30  # a hang guard: the serve opens the store as it starts
        while not has_it_open():
            assert serve.poll() is None and time.monotonic() < deadline, "roast serve did not open the store"
            time.sleep(0.05)
        copied = run_cli("store", "copy", "--to", pg_url, env={"ROAST_KEY_FILE": str(roast_home / "secret.key")})
    finally:
        serve.kill()
        serve.wait(timeout=30)
    assert copied.returncode == 0, copied.stderr
    assert f"roast serve (pid {serve.pid}) still has the source store open" in copied.stderr, copied.stderr
