"""Shared fixtures: a private ROAST_HOME per test, a workflow writer, and PostgreSQL for the store tests.

PostgreSQL: `ROAST_TEST_PG_URL` (an admin URL that may create databases) if set, else a throwaway
cluster started once per test session (tests/_pg.py). Each test gets its own database. When no
server can be had the PostgreSQL tests skip, saying why; with `CI` set they fail instead.
`ROAST_TEST_STORE=postgres` runs every test on PostgreSQL (ROAST_STORE and ROAST_KEY set per test;
tests marked `sqlite_only` are deselected, so none is skipped).
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ON_POSTGRES = os.environ.get("ROAST_TEST_STORE", "sqlite") == "postgres"
# One key for every PostgreSQL test (a shared store never makes its own): base64 of 32 bytes.
TEST_KEY = "cm9hc3QtdGVzdC1rZXktZm9yLXRoZS1wb3N0Z3Jlcy0="
_databases = itertools.count(1)
_current: dict[str, Any] = {"server": None, "made": None}  # this test's server and its databases


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): reads or damages the SQLite file itself; "
                                       "deselected when ROAST_TEST_STORE=postgres")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ON_POSTGRES:
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With CI set, a PostgreSQL test that skipped is a failure: CI must not pass by not testing."""
    outcome = yield
    report = outcome.get_result()
    uses_pg = ON_POSTGRES or "pg_server" in getattr(item, "fixturenames", ()) or "postgres" in item.nodeid
    if report.skipped and os.environ.get("CI") and uses_pg and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"a PostgreSQL test was skipped, and CI is set: {report.longrepr}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"no PostgreSQL server for the tests, and CI is set: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server for the tests: {reason}")


class PgServer:
    """The tests' PostgreSQL server: makes and drops databases (one per test)."""

    def __init__(self, admin_url: str, cluster: Any = None) -> None:
        self.admin_url, self.cluster = admin_url, cluster

    def create(self) -> str:
        import psycopg
        from _pg import with_database

        name = f"roast_t{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return with_database(self.admin_url, name)

    def drop(self, url: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        name = conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def admin(self, url: str | None = None) -> Any:
        """An autocommit connection (to the test's database when `url` is given)."""
        import psycopg

        return psycopg.connect(url or self.admin_url, autocommit=True)


@pytest.fixture(scope="session")
def pg_server() -> Any:
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'roast-workflows[postgres]')")
    url = os.environ.get("ROAST_TEST_PG_URL")
    if url:
        try:
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as err:
            _unavailable(f"ROAST_TEST_PG_URL does not answer: {err}")
        yield PgServer(url)
        return
    import _pg

    try:
        cluster = _pg.start()
        _pg.wait_ready(cluster.admin_url)
    except (_pg.Unavailable, OSError, subprocess.SubprocessError) as err:
        _unavailable(str(err))
    try:
        yield PgServer(cluster.admin_url, cluster)
    finally:
        cluster.stop()


def _pg_database(server: PgServer) -> str:
    url = server.create()
    _current["made"].append(url)
    return url


def store_for(home: Path) -> str | None:
    """The store URL a test should use for the sessions kept in `home`: None on SQLite (ROAST_HOME
    does it); on the PostgreSQL leg, a database of its own, made on first use."""
    if not ON_POSTGRES:
        return None
    known: dict[str, str] = _current.setdefault("homes", {})
    if str(home) not in known:
        known[str(home)] = _pg_database(_current["server"])
    return known[str(home)]


def store_env(home: Path) -> dict[str, str]:
    """The environment of a process that uses the sessions kept in `home` (see store_for)."""
    url = store_for(home)
    return {"ROAST_HOME": str(home), **({"ROAST_STORE": url} if url else {})}


@pytest.fixture
def pg_url(pg_server: PgServer) -> Any:
    """A new, empty database of the tests' server (dropped afterwards)."""
    url = pg_server.create()
    try:
        yield url
    finally:
        pg_server.drop(url)


@dataclass
class Ran:
    """What one `roast` command showed: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:  # shown by pytest when an assert on it fails
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@pytest.fixture(autouse=True)
def roast_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # a stray ~/.roast lands here
    monkeypatch.setenv("ROAST_HOME", str(tmp_path / "roast-home"))
    for name in ("ROAST_SECRET_KEY_FILE", "ROAST_KEY", "ROAST_KEY_FILE", "ROAST_STORE", "OPENAI_API_KEY",
                 "OPENAI_BASE_URL", "OPENROUTER_API_KEY"):  # the tests use the offline model unless told
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    if not ON_POSTGRES:
        yield tmp_path / "roast-home"
        return
    server = request.getfixturevalue("pg_server")
    _current.update(server=server, made=[], homes={})
    monkeypatch.setenv("ROAST_STORE", store_for(tmp_path / "roast-home") or "")
    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    try:
        yield tmp_path / "roast-home"
    finally:
        for url in _current["made"]:
            server.drop(url)
        _current.update(server=None, made=None, homes={})


def write_workflow(directory: Path, yaml_text: str, files: dict[str, str] | None = None,
                   name: str = "wf") -> Path:
    """Write `<directory>/<name>/workflow.yml` (dedented) plus step files; return the yml path."""
    wf_dir = directory / name
    wf_dir.mkdir(parents=True, exist_ok=True)
    path = wf_dir / "workflow.yml"
    path.write_text(textwrap.dedent(yaml_text).lstrip("\n"))
    for rel, content in (files or {}).items():
        target = wf_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(content).lstrip("\n"))
        if rel.endswith(".sh"):
            target.chmod(0o755)
    return path


@pytest.fixture
def wf(tmp_path: Path):
    """`wf(yaml, files)` writes a workflow under tmp_path and returns its path."""
    def make(yaml_text: str, files: dict[str, str] | None = None, name: str = "wf") -> Path:
        return write_workflow(tmp_path, yaml_text, files, name)
    return make


def run_cli(*args: str, cwd: Path | None = None, input: str | None = None,
            env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a real `python -m roast` process with the test's environment."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "roast", *args], capture_output=True, text=True,
                          cwd=cwd, input=input, env=full_env, timeout=timeout, check=False)
