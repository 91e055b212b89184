#!/usr/bin/env python3
"""roast on PostgreSQL beside SQLite (issue 13): resume as a whole process, and the cost of a step.

    python bench/pg.py 'postgresql://roastpg@/postgres?host=/tmp/pg&port=5432'   # may create databases
    python bench/pg.py --start            # on a throwaway cluster (tests/_pg.py), fsync on
    python bench/pg.py --quick --start    # fewer runs: checks that the bench works

`measure(url)` returns every figure (median, min, max, samples); bench/run.py can call it. The
PostgreSQL side runs in a database of its own (`CREATE DATABASE`, dropped afterwards), over
whatever the URL names (a unix socket for "local"); the SQLite side in a temporary ROAST_HOME on
the same disk as the temp dir. Uses the standard library, psycopg and the roast of this checkout.

Figures, each the median of N:
- `floor`: `python -c "import yaml, rich, cloudpickle"`, the least any roast process costs;
  `import_psycopg`: `python -c "import psycopg"`, what a PostgreSQL process adds to it.
- `resume_sqlite`, `resume_pg`: `roast resume WF -e go -s ID` of a session paused after three
  `$(true)` steps, whose branch is one `$(true)` step, then completed: the whole process, spawn to
  exit (each run gets a fresh session, made by an untimed `roast execute`). Runs interleave.
- `step_sqlite`, `step_pg`: µs per no-op Python step through `roast.run(dict)` (the start row
  travels with the checkpoint before it: one transaction per step), in this process.
- `advance_sqlite`, `advance_pg`: µs per `store.advance()` alone (one checkpoint transaction
  with a delta and a step start row), in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))  # the roast of this checkout

import roast
from roast import seal
from roast.store import NewSession, StepStart, new_id

FLOOR = "import yaml, rich, cloudpickle"
WORKFLOW = """
steps:
  - $(true)
  - $(true)
  - $(true)
  - wait_for_event:
      go:
        - $(true)
"""


def _noop(ctx: Any) -> None:
    return None


def _figure(samples: list[float], unit: str, label: str) -> dict[str, Any]:
    return {"label": label, "unit": unit, "median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "n": len(samples), "samples": samples}


class _Procs:
    """Whole `python` processes with bytecode caching on (as an installed package has .pyc files)."""

    def __init__(self, scratch: Path, key: str) -> None:
        self.scratch, self.key = scratch, key

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROAST_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(PYTHONPATH=str(REPO), PYTHONPYCACHEPREFIX=str(self.scratch / "pycache"), NO_COLOR="1",
                   HOME=str(self.scratch / "user"))
        env.update(extra)
        return env

    def run(self, args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=600, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench/pg.py: `python {' '.join(args)}` exited {proc.returncode}\n{proc.stderr[-2000:]}")
        return elapsed, proc.stdout


def _database(url: str) -> tuple[str, str]:
    """A fresh database on the server of `url`: (its URL, its name)."""
    from urllib.parse import urlsplit

    import psycopg

    name = f"roast_bench_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return urlsplit(url)._replace(path="/" + name).geturl(), name


def _drop(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(url: str, *, runs: int = 15, steps: int = 200, advances: int = 500) -> dict[str, Any]:
    """Measure roast on the PostgreSQL server of `url` (a role that may CREATE DATABASE) beside SQLite."""
    key = seal.new_key_text()
    scratch = Path(tempfile.mkdtemp(prefix="roast-bench-pg-"))
    db_url, db_name = _database(url)
    saved = {k: os.environ.get(k) for k in ("ROAST_KEY", "ROAST_STORE", "ROAST_HOME")}
    try:
        os.environ["ROAST_KEY"] = key  # the PostgreSQL store signs with it; SQLite uses it too (same cost)
        os.environ.pop("ROAST_STORE", None)
        procs = _Procs(scratch, key)
        wf_dir = scratch / "wf"
        wf_dir.mkdir()
        (wf_dir / "workflow.yml").write_text(textwrap.dedent(WORKFLOW).lstrip())
        wf = str(wf_dir / "workflow.yml")
        envs = {"sqlite": procs.env(ROAST_HOME=str(scratch / "sqlite-home"), ROAST_KEY=key),
                "pg": procs.env(ROAST_HOME=str(scratch / "pg-home"), ROAST_KEY=key, ROAST_STORE=db_url)}
        floor_env = procs.env()
        for env in envs.values():  # warm-up: .pyc files, page cache, the stores' schemas
            procs.run(["-m", "roast", "execute", wf], env, scratch)
        procs.run(["-c", FLOOR], floor_env, scratch)
        procs.run(["-c", "import psycopg"], floor_env, scratch)
        times: dict[str, list[float]] = {"floor": [], "import_psycopg": [], "resume_sqlite": [], "resume_pg": []}
        for _ in range(runs):
            for which, env in envs.items():
                _, out = procs.run(["-m", "roast", "execute", wf, "--json"], env, scratch)
                sid = json.loads(out)[0]["session_id"]  # execute --json is a list
                elapsed, _ = procs.run(["-m", "roast", "resume", wf, "-e", "go", "-s", sid], env, scratch)
                times[f"resume_{which}"].append(elapsed)
            times["floor"].append(procs.run(["-c", FLOOR], floor_env, scratch)[0])
            times["import_psycopg"].append(procs.run(["-c", "import psycopg"], floor_env, scratch)[0])
        figures = {
            "floor": _figure(times["floor"], "s", f"python -c {FLOOR!r}"),
            "import_psycopg": _figure(times["import_psycopg"], "s", "python -c 'import psycopg'"),
            "resume_sqlite": _figure(times["resume_sqlite"], "s", "roast resume (3 steps before the wait), SQLite"),
            "resume_pg": _figure(times["resume_pg"], "s", "roast resume (3 steps before the wait), PostgreSQL"),
        }
        figures.update(_per_step(scratch, db_url, steps, max(3, runs // 5), advances))
        return {"url": _masked(url), "runs": runs, "figures": figures, "server": _server(db_url)}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _drop(url, db_name)
        shutil.rmtree(scratch, ignore_errors=True)


def _per_step(scratch: Path, db_url: str, steps: int, rounds: int, advances: int) -> dict[str, Any]:
    from roast.store_postgres import PostgresStore
    from roast.store_sqlite import SQLiteStore

    out: dict[str, Any] = {}
    stores = {"sqlite": SQLiteStore(scratch / "step-home"), "pg": PostgresStore(db_url)}
    for which, store in stores.items():
        roast.run({"steps": [_noop]}, store=store)  # creates the schema
        per = []
        for _ in range(rounds):
            start = time.perf_counter()
            result = roast.run({"steps": [_noop] * steps}, store=store)
            per.append((time.perf_counter() - start) / steps * 1e6)
            assert result.status == "completed", result
        out[f"step_{which}"] = _figure(per, "µs/step", f"roast.run(dict), {steps} no-op steps, {which}")
        sid = new_id()
        store.create(NewSession(sid, "/bench/x.yml", "x", "fp", None, str(scratch), (), None, None, False,
                                time.time()), {"base": 0})
        each = []
        for n in range(advances):
            start = time.perf_counter()
            store.advance(sid, changes={"n": n}, cursor=f"steps[{n}]", start=StepStart(str(n), "s", time.time()))
            each.append((time.perf_counter() - start) * 1e6)
        out[f"advance_{which}"] = _figure(each, "µs", f"store.advance() (delta + step row), {which}")
        store.close()
    return out


def _server(db_url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(db_url) as db:
        row = db.execute("SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')"
                         ).fetchone()
    assert row is not None
    return {"version": row[0], "fsync": row[1], "synchronous_commit": row[2]}


def _masked(url: str) -> str:
    from roast.store import mask_url

    return mask_url(url)


def report(result: dict[str, Any]) -> str:
    f = result["figures"]
    floor = f["floor"]["median"]
    server = result["server"]
    title = (f"roast on PostgreSQL beside SQLite ({result['url']}; {server['version'].split(',')[0]}, "
             f"fsync={server['fsync']}, synchronous_commit={server['synchronous_commit']})")
    lines = [title, f"{'figure':<16} {'median':>12} {'min':>12} {'max':>12}  ×floor  n"]
    for key, fig in f.items():
        scale = 1000.0 if fig["unit"] == "s" else 1.0
        unit = "ms" if fig["unit"] == "s" else fig["unit"]
        ratio = f"{fig['median'] / floor:5.2f}" if fig["unit"] == "s" else "    -"
        lines.append(f"{key:<16} {fig['median'] * scale:9.1f} {unit:<3}{fig['min'] * scale:9.1f} {unit:<3}"
                     f"{fig['max'] * scale:9.1f} {unit:<3} {ratio}  {fig['n']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", help="a PostgreSQL URL whose role may create databases")
    parser.add_argument("--start", action="store_true", help="start a throwaway cluster (fsync on) and use it")
    parser.add_argument("--quick", action="store_true", help="3 runs and fewer steps (checks the bench works)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    if not args.url and not args.start:
        parser.error("give a PostgreSQL URL, or --start")
    cluster = None
    url = args.url
    if args.start:
        sys.path.insert(0, str(REPO / "tests"))
        import _pg

        cluster = _pg.start(settings={"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"})
        url = cluster.admin_url
    try:
        sizes = {"runs": 3, "steps": 50, "advances": 100} if args.quick else {}
        result = measure(url, **sizes)
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
