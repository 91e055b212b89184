"""Two hosts, one store (issue 13): two groups of real `python -m roast` processes that share nothing
but the PostgreSQL URL and a copy of the key file.

Each host is a network namespace (joined to a bridge by a veth pair; PostgreSQL listens on the
bridge's address and asks for a password), with its own hostname (UTS namespace), its own process
ids (PID namespace: killing the host kills everything on it) and its own files (mount namespace:
the host's private directory is bound at the same path, /…/srv, so a session's working directory
exists on both, as a checkout deployed at the same path would). Needs root.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _resume_helpers import Ran, poll
from conftest import ROOT, _unavailable

from roast import api, seal

PASSWORD = "two-hosts-pw-4711"  # must never appear in anything roast prints
# `python -m roast ARGS`, once its modules are imported and the test says go: racers that start together.
READY = ("import runpy, sys; import roast.cli, roast.api, roast.store_postgres; print('ready', flush=True); "
         "sys.stdin.readline(); sys.argv = ['roast', *sys.argv[1:]]; runpy.run_module('roast', run_name='__main__')")


class Host:
    """One host: `ip netns exec NS unshare --uts --pid --mount …`, its files bound at `srv`."""

    def __init__(self, name: str, netns: str, private: Path, srv: Path, url: str) -> None:
        self.name, self.netns, self.private, self.srv, self.url = name, netns, private, srv, url

    def argv(self, *args: str, ready: bool = False) -> list[str]:
        """`python -m roast ARGS` on this host; with `ready`, imported first, then run when told (stdin)."""
        script = 'hostname "$1" && mount --bind "$2" "$3" && cd "$3/work" && shift 3 && exec "$@"'
        python = [sys.executable, "-c", READY] if ready else [sys.executable, "-m", "roast"]
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--pid", "--fork", "--kill-child=SIGKILL",
                "--mount-proc", "--propagation", "private", "--", "sh", "-c", script, "sh", self.name,
                str(self.private), str(self.srv), *python, *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROAST_")}
        env.update(HOME=str(self.srv / "home"), ROAST_HOME=str(self.srv / "roast-home"), ROAST_STORE=self.url,
                   ROAST_KEY_FILE=str(self.srv / "roast.key"), PYTHONPATH=str(ROOT), NO_COLOR="1")
        return env

    def popen(self, *args: str, ready: bool = False) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args, ready=ready), stdin=subprocess.PIPE if ready else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env(), cwd="/")

    def run(self, *args: str) -> Ran:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env(), cwd="/",
                              timeout=120, check=False)
        ran = Ran(proc.returncode, proc.stdout, proc.stderr)
        assert PASSWORD not in ran.out + ran.err, ran
        return ran

    def log(self) -> list[str]:
        path = self.private / "log"
        return path.read_text().splitlines() if path.exists() else []


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def network() -> Any:
    """A bridge with PostgreSQL on its address, and two network namespaces plugged into it."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        _unavailable("the two-hosts test needs root, `ip` and `unshare` (network, PID and mount namespaces)")
    import _pg

    tag = f"{os.getpid() % 100000}"
    subnet = f"10.213.{os.getpid() % 250}"
    bridge, spaces = f"rbr{tag}", [f"roast-a-{tag}", f"roast-b-{tag}"]
    made: list[str] = []
    cluster = None
    try:
        _sh("ip", "link", "add", bridge, "type", "bridge")
        made.append("bridge")
        _sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        for number, space in enumerate(spaces, 2):
            outside, inside = f"v{tag}{'ab'[number - 2]}", f"e{tag}{'ab'[number - 2]}"
            _sh("ip", "netns", "add", space)
            made.append(space)
            _sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            _sh("ip", "link", "set", inside, "netns", space)
            _sh("ip", "link", "set", outside, "master", bridge, "up")
            _sh("ip", "netns", "exec", space, "ip", "addr", "add", f"{subnet}.{number}/24", "dev", inside)
            _sh("ip", "netns", "exec", space, "ip", "link", "set", inside, "up")
            _sh("ip", "netns", "exec", space, "ip", "link", "set", "lo", "up")
        cluster = _pg.start(listen=f"{subnet}.1", port=_pg.free_port(f"{subnet}.1"),
                            hba=(f"host all all {subnet}.0/24 scram-sha-256",))
        _pg.wait_ready(cluster.admin_url)
    except (subprocess.CalledProcessError, _pg.Unavailable) as err:
        detail = err.stderr.decode(errors="replace") if isinstance(err, subprocess.CalledProcessError) else str(err)
        _teardown(bridge, [s for s in spaces if s in made], cluster)
        _unavailable(f"cannot set up two network namespaces and a server on a bridge: {detail}")
    try:
        yield {"cluster": cluster, "spaces": spaces, "address": f"{subnet}.1"}
    finally:
        _teardown(bridge, spaces, cluster)


def _teardown(bridge: str, spaces: list[str], cluster: Any) -> None:
    if cluster is not None:
        cluster.stop()
    for space in spaces:
        subprocess.run(["ip", "netns", "del", space], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


WORKFLOW = """
name: deploy
steps:
  - build: $(echo build >> @SRV@/log)
  - wait_for_event:
      approved:
        - "$(echo branch {{event.n}} >> @SRV@/log; i=0; while [ ! -f @RELEASE@ ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done)"
  - after: $(echo after >> @SRV@/log)
"""


@pytest.fixture
def hosts(network: dict[str, Any], tmp_path: Path) -> tuple[Host, Host, Path]:
    """Host a and host b, each with its own files and a copy of the key; a database they share."""
    import psycopg

    name = f"roast_two_{os.getpid()}_{tmp_path.name[-20:]}".replace("-", "_")
    with psycopg.connect(network["cluster"].admin_url, autocommit=True) as admin:
        admin.execute("DO $$ BEGIN CREATE ROLE roast_app LOGIN PASSWORD '" + PASSWORD + "'; "
                      "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" OWNER roast_app TEMPLATE template0')
    url = f"postgresql://roast_app:{PASSWORD}@{network['address']}:{network['cluster'].port}/{name}"
    srv, release = tmp_path / "srv", tmp_path / "release"
    srv.mkdir()
    key = seal.new_key_text() + "\n"
    made = []
    for host_name, space in zip(("hosta", "hostb"), network["spaces"]):
        private = tmp_path / host_name
        for sub in ("work", "wf", "home", "roast-home"):
            (private / sub).mkdir(parents=True)
        (private / "wf" / "workflow.yml").write_text(
            textwrap.dedent(WORKFLOW).replace("@SRV@", str(srv)).replace("@RELEASE@", str(release)))
        (private / "roast.key").write_text(key)
        (private / "roast.key").chmod(0o600)
        made.append(Host(host_name, space, private, srv, url))
    try:
        yield made[0], made[1], release
    finally:
        release.touch()
        with psycopg.connect(network["cluster"].admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _execute(host: Host) -> str:
    ran = host.run("execute", str(host.srv / "wf" / "workflow.yml"), "--json")
    assert ran.code == 0, ran
    assert ran.json[0]["status"] == "waiting"
    return str(ran.json[0]["session_id"])  # execute --json is a list


def test_eight_resumers_split_over_two_hosts_run_exactly_one_branch(hosts: tuple[Host, Host, Path]) -> None:
    a, b, release = hosts
    sid = _execute(a)
    procs = [(a if n % 2 == 0 else b).popen("resume", "-s", sid, "-e", "approved", "-d", json.dumps({"n": n}),
                                            ready=True) for n in range(8)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # all eight imported: release them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        poll(lambda: sum(p.poll() is not None for p in procs) >= 7, "seven resumers to give up", timeout=180)
        release.touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    finally:
        release.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(PASSWORD not in out + err for _, out, err in results)
    winners = [n for n, (code, _, _) in enumerate(results) if code == 0]
    assert len(winners) == 1, results
    assert sorted(code for code, _, _ in results) == [0] + [3] * 7, results
    for code, _, err in results:
        if code:
            assert "no longer waiting" in err or "being handled by" in err, err
            assert "Traceback" not in err
    winner = a if winners[0] % 2 == 0 else b
    loser = b if winner is a else a
    assert winner.log()[-2:] == [f"branch {winners[0]}", "after"]
    assert [line for line in loser.log() if line.startswith(("branch", "after"))] == []
    shown = b.run("session", sid, "--json")
    assert shown.code == 0 and shown.json["status"] == "completed", shown


def test_a_killed_host_s_session_is_recovered_by_the_other_host(hosts: tuple[Host, Host, Path]) -> None:
    a, b, release = hosts
    sid = _execute(a)
    running = a.popen("resume", "-s", sid, "-e", "approved", "-d", '{"n": 1}')
    try:
        poll(lambda: "branch 1" in a.log(), "host a to run the branch", timeout=120)
        busy = b.run("resume", "-s", sid)
        assert busy.code == 3 and "running in roast resume (pid " in busy.err and " on hosta)" in busy.err, busy
        running.kill()  # kill -9 of host a: its PID namespace, and every process on it, is gone
        running.wait(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()

    def orphaned_on_b() -> bool:
        listed = b.run("sessions", "--json", "--all")
        assert listed.code == 0, listed
        return any(s["session_id"] == sid and s["status"] == "orphaned" for s in listed.json)

    poll(orphaned_on_b, "the server to release host a's lock", timeout=120)
    release.touch()
    recovered = b.run("resume", "-s", sid, "--json")
    assert recovered.code == 0, recovered
    assert recovered.json["status"] == "completed"
    assert "interrupted; continuing from its last checkpoint" in recovered.err
    assert a.log() == ["build", "branch 1"] and b.log() == ["branch 1", "after"]
    branch = [h for h in api.history(sid, store=a.url) if h.path.startswith("steps[1]")]
    assert [(h.attempt, h.host) for h in branch] == [(1, "hosta"), (2, "hostb")], branch
