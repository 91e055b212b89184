#!/usr/bin/env python3
"""roast with many waiting sessions (issue 25): every figure at 30, 10k, 100k and 1M open waits.

    python bench/scale.py                        # both stores, sizes 30,10000,100000,1000000
    python bench/scale.py --quick                # sizes 30,2000, fewer runs: checks the bench works
    python bench/scale.py --store sqlite --sizes 30,10000,100000
    python bench/scale.py --explain              # also print the query plans (always in the JSON)

Builds the sessions once per store and grows them: a few real ones through `roast.run()` (a
workflow with one `$(true)` step, then one `wait_for_event` whose branches are one `$(true)`),
then copies made inside the store by SQL (`INSERT … SELECT` over a recursive CTE on SQLite,
`generate_series` on PostgreSQL) of the session row, its continuation and its step history,
with new ids, spread `created_at` and spread far-future deadlines. Each copy's continuation is
sealed afresh for its own id (the seal binds session id and wait; the header is the template's
with the id replaced, the HMAC recomputed: a Python function registered with SQLite, pgcrypto's
`hmac()` on PostgreSQL), so copies resume, deliver, time out and cancel like real sessions.

At every size, each figure is measured beside the ~30-session figure (the yardstick, `×30`) and
the import floor `python -c "import yaml, rich, cloudpickle"` (interleaved, `×floor`). Prints a
table (target, met or not) on stdout, progress on stderr, and writes `--out` (JSON: every sample,
the query plans, machine facts) and a text dump of the plans beside it. Uses the standard
library, psycopg (PostgreSQL), the serve extra and the roast of this checkout; the PostgreSQL
server is a throwaway cluster (tests/_pg.py), fsync on. See bench/README.md.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
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

FLOOR = "import yaml, rich, cloudpickle"
DAY = 86400.0
LISTING = "/v1/sessions?status=waiting&limit=20"  # a full page on both sides: the yardstick has ~30 waiting
WORKFLOW = """
    name: scale
    steps:
      - $(true)
      - wait_for_event:
          go: ["$(true)"]
          timeout: ["$(true)"]
    wait_for_event:
      timeout: 30d
"""
COPY_ID = re.compile(r"c[0-9]{12}")  # the ids `grow` gives its copies
CHILD_EXPLAIN = "--explain-child"  # internal: capture and explain the queries of real commands

# targets: (text, test on the figure's dict)
TARGETS: dict[str, str] = {
    "resume_noid": "≤ 1.2× the 30-session figure",
    "sessions_page": "≤ 1.2× the 30-session figure",
    "tick_idle": "≤ 1.2× the 30-session figure",
    "api_list": "≤ 1.2× the 30-session figure",
    "tick_overdue": "≤ 1 s for 1,000 (≤ 1 ms a claim)",
    "serve_idle": "< 5 % of a core and < 200 MB RSS",
    "deliveries": "≥ 1,000 claims/s, p99 ≤ 20 ms",
    "delivery_cpu": "(1,000/s on 2 cores: ≤ 2 ms)",
    "bytes_per_session": "≤ 2 KB + outputs",
    "pg_startup": "psycopg imported only when needed (ratio stated)",
    "py_step": "≤ 0.3 ms a step",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


# --------------------------------------------------------------------------- processes


class Procs:
    """Whole `python` processes with bytecode caching on (as an installed package has .pyc files)."""

    def __init__(self, scratch: Path, key: str) -> None:
        self.scratch, self.key = scratch, key
        self.last_inblock = 0  # blocks the last process read from disk: a page cache miss, not roast's work

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROAST_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(PYTHONPATH=str(REPO), PYTHONPYCACHEPREFIX=str(self.scratch / "pycache"), NO_COLOR="1",
                   ROAST_KEY=self.key)
        env.update(extra)
        return env

    def run(self, args: list[str], env: dict[str, str], *, expect: tuple[int, ...] = (0,),
            timeout: float = 1800) -> tuple[float, float, subprocess.CompletedProcess[str]]:
        """(wall seconds, child CPU seconds, the process)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *args], env=env, cwd=self.scratch, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.last_inblock = after.ru_inblock - before.ru_inblock
        if proc.returncode not in expect:
            raise SystemExit(f"bench/scale.py: `python {' '.join(args)}` exited {proc.returncode}\n"
                             f"stdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-2500:]}")
        return elapsed, cpu, proc


# --------------------------------------------------------------------------- the stores


class Store:
    """One store under test: how to reach it (env for children, a DB-API connection for the bench),
    its size on disk, and the SQL that grows it."""

    kind = ""

    def __init__(self, scratch: Path, key: str) -> None:
        self.scratch = scratch
        self.key = key
        self.key_bytes = base64.b64decode(key)

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def connect(self) -> Any:
        raise NotImplementedError

    def q(self, sql: str) -> str:
        return sql

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect()) as db:
            return list(db.execute(self.q(sql), params).fetchall())

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with contextlib.closing(self.connect()) as db:
            count = db.execute(self.q(sql), params).rowcount
            db.commit()
            return int(count)

    def columns(self, table: str) -> list[str]:
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError

    def grow(self, template: str, first: int, last: int, now: float, *, prefix: str = "c", due: bool = False) -> None:
        """Copies `first`..`last` of session `template`, ids `prefix` + 12 digits; spread far-future
        deadlines, or (`due`) deadlines just before the template's own (already passed)."""
        raise NotImplementedError

    def after_growth(self) -> None:
        """Settle the store after a bulk load (PostgreSQL: VACUUM ANALYZE, as autovacuum would)."""

    def as_run(self, ids: list[str]) -> None:
        """Give copies what a session made by `roast run` has outside the database (SQLite: its
        lock file, made by its first run and kept until it is pruned)."""

    def server_pids(self) -> list[int]:
        return []

    def sibling(self, name: str) -> Store:
        """Another store of the same kind (on the same server): the yardstick's."""
        raise NotImplementedError

    def stop(self) -> None:
        pass

    def facts(self) -> dict[str, Any]:
        return {}

    # -- the parts both dialects share

    def _copy_exprs(self, table: str, template_alias: str, new_id: str, created: str, deadline: str,
                    envelope: str) -> tuple[list[str], list[str]]:
        cols = self.columns(table)
        if table in ("steps", "events") and "id" in cols:
            cols = [c for c in cols if c != "id"]  # generated
        exprs = []
        for col in cols:
            if (table == "sessions" and col == "id") or (table != "sessions" and col == "session_id"):
                exprs.append(new_id)
            elif table == "sessions" and col in ("created_at", "updated_at"):
                exprs.append(created)
            elif table == "sessions" and col == "deadline":
                exprs.append(deadline)
            elif table == "continuations" and col == "envelope":
                exprs.append(envelope)
            else:
                exprs.append(f"{template_alias}.{quote(col)}")
        return [quote(c) for c in cols], exprs

    def reseal_parts(self, template: str) -> tuple[bytes, bytes]:
        """The template's continuation around its session id: (before, after), tag dropped."""
        (envelope,) = self.rows("SELECT envelope FROM continuations WHERE session_id = ?", (template,))[0]
        body = bytes(envelope)[:-32]
        marker = b'"bind":"session:'
        at = body.index(marker + template.encode() + b":wait:") + len(marker)
        assert body[at:at + len(template)] == template.encode()
        return body[:at], body[at + len(template):]


def quote(col: str) -> str:
    return f'"{col}"'


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(self, scratch: Path, key: str, name: str = "big") -> None:
        super().__init__(scratch, key)
        self.home = scratch / f"sqlite-{name}"
        self.db_path = self.home / "sessions.db"

    def sibling(self, name: str) -> SQLiteStore:
        return SQLiteStore(self.scratch, self.key, name)

    def env(self) -> dict[str, str]:
        return {"ROAST_HOME": str(self.home)}

    def api_store(self) -> Any:
        return {"home": str(self.home)}

    def connect(self) -> Any:
        db = sqlite3.connect(self.db_path, timeout=60)
        db.execute("PRAGMA busy_timeout = 60000")
        return db

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.rows(f"PRAGMA table_info({table})")]

    def after_growth(self) -> None:
        # the bulk load's gigabytes go to the disk now, not under the first timed commands, as
        # PostgreSQL's CHECKPOINT does (in 3 of 7 runs the first few `roast sessions` at 1M took 70-88 ms
        # and the rest 50-57; this did not change that: its cause is not known)
        with contextlib.closing(self.connect()) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.sync()

    def size_bytes(self) -> int:
        with contextlib.closing(self.connect()) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def grow(self, template: str, first: int, last: int, now: float, *, prefix: str = "c", due: bool = False) -> None:
        from roast import seal

        before, after = self.reseal_parts(template)
        mac = hmac.new(self.key_bytes, seal._TAG_CONTEXT + before, hashlib.sha256)

        def reseal(new_id: str) -> bytes:
            tail = new_id.encode() + after
            h = mac.copy()
            h.update(tail)
            return before + tail + h.digest()

        with contextlib.closing(self.connect()) as db:
            db.create_function("reseal", 1, reseal, deterministic=True)
            db.execute("PRAGMA synchronous = NORMAL")  # the build only; roast's own connections keep FULL
            for lo in range(first, last + 1, 100_000):
                hi = min(last, lo + 99_999)
                series = "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                new_id = f"('{prefix}' || printf('%012d', n.i))"
                created = f"({now!r} - n.i * 0.5)"
                deadline = "(t.deadline - n.i * 0.001)" if due else "(t.deadline + (n.i % 100000))"
                db.execute("BEGIN IMMEDIATE")
                for table in ("sessions", "continuations", "steps", "events"):
                    cols, exprs = self._copy_exprs(table, "t", new_id, created, deadline, f"reseal({new_id})")
                    key = "id" if table == "sessions" else "session_id"
                    db.execute(f"{series}INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} "
                               f"FROM n, {table} t WHERE t.{key} = ?", (lo, hi, template))
                db.execute("COMMIT")
                log(f"  sqlite: copies {lo:,}–{hi:,} written")

    def as_run(self, ids: list[str]) -> None:
        locks = self.home / "locks"
        locks.mkdir(mode=0o700, exist_ok=True)
        for sid in ids:
            (locks / f"{sid}.lock").touch(mode=0o600)

    def facts(self) -> dict[str, Any]:
        return {"sqlite": sqlite3.sqlite_version, "home": str(self.home), "disk": disk_of(self.home)}


class PostgresStore(Store):
    kind = "postgres"

    def __init__(self, scratch: Path, key: str, name: str = "big", cluster: Any = None) -> None:
        super().__init__(scratch, key)
        sys.path.insert(0, str(REPO / "tests"))
        import _pg

        self.name = name
        self.owns_cluster = cluster is None
        # its own directory beside the scratch one: the server runs as another user, who may not enter ours
        self.cluster = cluster or _pg.start(tempfile.mkdtemp(prefix="roast-scale-pg-", dir=scratch.parent), settings={
            "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "shared_buffers": "256MB",
            "max_wal_size": "4GB", "checkpoint_timeout": "30min"})
        import psycopg

        with psycopg.connect(self.cluster.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE roast_{name} TEMPLATE template0")
        self.url = _pg.with_database(self.cluster.admin_url, f"roast_{name}")
        self.pgcrypto = True
        try:
            with psycopg.connect(self.url, autocommit=True) as db:
                db.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        except psycopg.Error as err:
            log(f"postgres: no pgcrypto ({err}); copies are resealed in Python")
            self.pgcrypto = False

    def sibling(self, name: str) -> PostgresStore:
        return PostgresStore(self.scratch, self.key, name, self.cluster)

    def env(self) -> dict[str, str]:
        return {"ROAST_STORE": self.url, "ROAST_HOME": str(self.scratch / f"pg-{self.name}")}

    def api_store(self) -> Any:
        return {"store": self.url, "home": str(self.scratch / f"pg-{self.name}")}

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url)

    def q(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def columns(self, table: str) -> list[str]:
        return [r[0] for r in self.rows("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                        "AND table_schema = 'public' ORDER BY ordinal_position", (table,))]

    def size_bytes(self) -> int:
        (total,) = self.rows("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")[0]
        return int(total or 0)

    def grow(self, template: str, first: int, last: int, now: float, *, prefix: str = "c", due: bool = False) -> None:
        from roast import seal

        before, after = self.reseal_parts(template)
        with contextlib.closing(self.connect()) as db:
            for lo in range(first, last + 1, 100_000):
                hi = min(last, lo + 99_999)
                new_id = f"('{prefix}' || lpad(n.i::text, 12, '0'))"
                created = "(%(now)s - n.i * 0.5)"
                deadline = "(t.deadline - n.i * 0.001)" if due else "(t.deadline + (n.i %% 100000))"
                body = f"(%(before)s || convert_to({new_id}, 'UTF8') || %(after)s)"
                envelope = f"({body} || hmac(%(ctx)s || {body}, %(key)s, 'sha256'))"
                for table in ("sessions", "continuations", "steps", "events"):
                    if table == "continuations" and not self.pgcrypto:
                        continue
                    cols, exprs = self._copy_exprs(table, "t", new_id, created, deadline, envelope)
                    key = "id" if table == "sessions" else "session_id"
                    db.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} "
                               f"FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n(i), {table} t "
                               f"WHERE t.{key} = %(template)s",
                               {"lo": lo, "hi": hi, "now": now, "template": template, "before": before,
                                "after": after, "ctx": seal._TAG_CONTEXT, "key": self.key_bytes})
                if not self.pgcrypto:
                    self._reseal_in_python(db, prefix, lo, hi, before, after)
                db.commit()
                log(f"  postgres: copies {lo:,}–{hi:,} written")

    def _reseal_in_python(self, db: Any, prefix: str, lo: int, hi: int, before: bytes, after: bytes) -> None:
        from roast import seal

        with db.cursor().copy("COPY continuations (session_id, envelope) FROM STDIN") as copy:
            for i in range(lo, hi + 1):
                sid = f"{prefix}{i:012d}"
                body = before + sid.encode() + after
                copy.write_row((sid, body + hmac.digest(self.key_bytes, seal._TAG_CONTEXT + body, "sha256")))

    def after_growth(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute("VACUUM ANALYZE")
            db.execute("CHECKPOINT")

    def server_pids(self) -> list[int]:
        try:
            postmaster = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        from serve_bench import family  # the postmaster and its children (backends, checkpointer, …)

        return family(postmaster)

    def stop(self) -> None:
        if self.owns_cluster:
            self.cluster.stop()

    def facts(self) -> dict[str, Any]:
        (version, fsync, sync, shared) = self.rows(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit'), "
            "current_setting('shared_buffers')")[0]
        return {"version": version.split(",")[0], "fsync": fsync, "synchronous_commit": sync,
                "shared_buffers": shared, "pgcrypto_reseal": self.pgcrypto, "disk": disk_of(self.cluster.data)}


def disk_of(path: Path) -> dict[str, Any]:
    """The filesystem `path` is on (device, type) and its free space."""
    best = ("", "", "")
    real = str(Path(path).resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            dev, mnt, fstype = line.split()[:3]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[1]):
                best = (dev, mnt, fstype)
    usage = shutil.disk_usage(real)
    return {"device": best[0], "mount": best[1], "fstype": best[2], "free_gb": round(usage.free / 1e9, 1)}


# --------------------------------------------------------------------------- /proc sampling


CLK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- serve


class Serve:
    def __init__(self, procs: Procs, store: Store, workdir: Path) -> None:
        self.log_path = workdir / f"serve-{store.kind}.log"
        env = procs.env(**store.env())
        for name in ("ROAST_SERVE_TOKENS", "ROAST_WEBHOOK_SECRET", "ROAST_GITHUB_WEBHOOK_SECRET"):
            env.pop(name, None)
        self.started = time.perf_counter()
        with self.log_path.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "roast", "serve", "--port", "0", "--workers", "2"],
                                         cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log_path.read_text())
            if found:
                self.port = int(found.group(1))
                self.listening_after = time.perf_counter() - self.started
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise SystemExit(f"roast serve did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def idle(self, store: Store, window: float, settle_max: float) -> dict[str, Any]:
        """CPU (% of a core) and RSS of the idle server once start-up has settled (CPU under 10 %
        over a second, or `settle_max` s), over `window` seconds; PostgreSQL's processes beside."""
        from serve_bench import family  # the server and its claim process

        pid = self.proc.pid
        began = time.perf_counter()
        last = cpu_ticks(family(pid))
        while time.perf_counter() - began < settle_max:
            time.sleep(1.0)
            now_ticks = cpu_ticks(family(pid))
            if (now_ticks - last) / CLK < 0.10:
                break
            last = now_ticks
        settled = time.perf_counter() - began
        pg = store.server_pids()
        members = family(pid)  # the server and its claim process (issue 25), counted together
        start_serve, start_pg, t0 = cpu_ticks(members), cpu_ticks(pg), time.perf_counter()
        peak = 0
        while time.perf_counter() - t0 < window:
            time.sleep(0.5)
            peak = max(peak, sum(rss_kb(m) for m in members))
        elapsed = time.perf_counter() - t0
        serve_pct = (cpu_ticks(members) - start_serve) / CLK / elapsed * 100
        rss = sum(rss_kb(m) for m in members)
        pg_pct = (cpu_ticks(store.server_pids()) - start_pg) / CLK / elapsed * 100 if pg else None
        return {"listening_after_s": round(self.listening_after, 3), "settled_after_s": round(settled, 1),
                "window_s": round(elapsed, 1), "cpu_pct": round(serve_pct, 2),
                "pg_cpu_pct": None if pg_pct is None else round(pg_pct, 2),
                "rss_mb": round(rss / 1024, 1), "rss_peak_mb": round(max(peak, rss) / 1024, 1),
                "hwm_mb": round(sum(rss_kb(m, "VmHWM") for m in members) / 1024, 1), "processes": len(members)}

    def get(self, path: str, runs: int) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        samples = []
        count = 0
        for n in range(runs + 1):
            began = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - began
            if response.status != 200:
                raise SystemExit(f"GET {path}: {response.status} {body[:500]!r}")
            if n:  # the first is a warm-up
                samples.append(elapsed)
            listed = json.loads(body)
            count = len(listed) if isinstance(listed, list) else len(listed.get("sessions", []))
        conn.close()
        return {"samples": samples, "median": median(samples), "listed": count}

    def deliver(self, ids: list[str], clients: int, store: Store) -> dict[str, Any]:
        """The deliveries, and the CPU each took on this machine's cores (ms a delivery): the clients
        (this process), the server with its claim processes, and PostgreSQL's processes."""
        import resource

        from serve_bench import deliver, family  # the same clients as bench/serve_bench.py

        def client_s() -> float:
            use = resource.getrusage(resource.RUSAGE_SELF)
            return use.ru_utime + use.ru_stime

        def ticks() -> tuple[dict[int, int], dict[int, int]]:  # each process apart: some start meanwhile
            return ({pid: cpu_ticks([pid]) for pid in family(self.proc.pid)},
                    {pid: cpu_ticks([pid]) for pid in store.server_pids()})

        before, client0 = ticks(), client_s()
        wall, latencies, outcomes = deliver(self.port, ids, clients)
        client, after = client_s() - client0, ticks()
        used = [sum(n - then.get(pid, 0) for pid, n in now.items()) for then, now in zip(before, after)]
        per = [client * 1e3 / len(ids)] + [n / CLK * 1e3 / len(ids) for n in used]
        cpu = {"client": round(per[0], 3), "server": round(per[1], 3),
               "postgres": round(per[2], 3) if after[1] else None, "total": round(sum(per), 3),
               "claim_processes": len(after[0]) - 1}
        cpu["ceiling_per_s"] = round((os.cpu_count() or 1) * 1e3 / cpu["total"]) if cpu["total"] else None
        return {"sessions": len(ids), "clients": clients, "seconds": round(wall, 3),
                "claims_per_s": round(len(latencies) / wall, 1), "p50_ms": round(percentile(latencies, 0.5) * 1e3, 2),
                "p99_ms": round(percentile(latencies, 0.99) * 1e3, 2), "outcomes": outcomes, "cpu_ms": cpu}


# --------------------------------------------------------------------------- the bench


class Scale:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scratch = Path(tempfile.mkdtemp(prefix="roast-scale-", dir=args.base))
        self.key = base64.b64encode(os.urandom(32)).decode("ascii")
        os.environ["ROAST_KEY"] = self.key  # roast.run() in this process signs with the children's key
        os.environ.pop("ROAST_STORE", None)
        self.procs = Procs(self.scratch, self.key)
        self.wf = self.scratch / "wf" / "scale.yml"
        self.wf.parent.mkdir(parents=True)
        self.wf.write_text(textwrap.dedent(WORKFLOW).lstrip())
        # the same, timing out after 1 s, without a timeout branch: firing is the claim (the session
        # ends timed_out), not a claim plus a `$(true)` process
        self.wf_due = self.wf.with_name("scale-due.yml")
        self.wf_due.write_text(textwrap.dedent(WORKFLOW).lstrip().replace("timeout: 30d", "timeout: 1s")
                               .replace('      timeout: ["$(true)"]\n', ""))
        self.due_copies = 0
        self.results: dict[str, Any] = {"stores": {}, "machine": machine(), "args": vars(args)}
        self.floor_env = self.procs.env(ROAST_HOME=str(self.scratch / "floor-home"))
        # byte-compiled up front, as an installed package is (pip compiles what it installs): a figure's
        # one run (the tick firing overdue deadlines) must not pay for compiling the modules it is the
        # first to import — roast's, and psycopg's (its pipeline modules are first imported there)
        compiled = [str(REPO / "roast")]
        with contextlib.suppress(ImportError):
            import psycopg

            compiled.append(str(Path(psycopg.__file__).parent))
        self.procs.run(["-m", "compileall", "-q", *compiled], self.floor_env)

    # -- building

    def real(self, store: Store, count: int) -> list[str]:
        import roast

        ids = []
        for _ in range(count):
            result = roast.run(self.wf, **store.api_store())
            assert result.status == "waiting", result
            ids.append(result.session_id)
        return ids

    def waiting(self, store: Store) -> int:
        return int(store.rows("SELECT count(*) FROM sessions WHERE status = 'waiting'")[0][0])

    # -- measuring

    def interleaved(self, commands: dict[str, tuple[dict[str, str], list[str]]], runs: int) -> dict[str, Any]:
        """Each command (env, argv) `runs` times, round-robin with the import floor; one untimed
        warm-up each (one timed run only when a warm-up took over 10 s). Commands come in pairs (a
        figure, then its yardstick): every other round runs each pair the other way round, so that
        neither side always runs first after the floor (on SQLite at 1M, the big store's `roast
        sessions`, always first, ran 70-88 ms for the first rounds while its yardstick ran 50; with
        the order alternating both sides are slow in those rounds). `inblock` counts the blocks
        each run read from disk (a page cache miss)."""
        times: dict[str, list[float]] = {name: [] for name in ["floor", *commands]}
        cpus: dict[str, list[float]] = {name: [] for name in ["floor", *commands]}
        reads: dict[str, list[int]] = {name: [] for name in ["floor", *commands]}
        slow = False
        for name, (env, argv) in commands.items():
            warm, _, _ = self.procs.run(argv, env, expect=(0, 3))
            slow = slow or warm > 10
        self.procs.run(["-c", FLOOR], self.floor_env)
        names = list(commands)
        swapped = [n for pair in zip(names[1::2], names[0::2]) for n in pair] if len(names) % 2 == 0 else names
        for round_ in range(1 if slow else runs):
            wall, cpu, _ = self.procs.run(["-c", FLOOR], self.floor_env)
            times["floor"].append(wall)
            cpus["floor"].append(cpu)
            reads["floor"].append(self.procs.last_inblock)
            for name in swapped if round_ % 2 else names:
                env, argv = commands[name]
                wall, cpu, _ = self.procs.run(argv, env, expect=(0, 3))
                times[name].append(wall)
                cpus[name].append(cpu)
                reads[name].append(self.procs.last_inblock)
        return {name: {"samples": times[name], "median": median(times[name]), "cpu": median(cpus[name]),
                       "inblock": reads[name]} for name in times}

    def measure_size(self, store: Store, small: Store, size: int) -> dict[str, Any]:
        args = self.args
        env = self.procs.env(**store.env())
        small_env = self.procs.env(**small.env())
        top_up = self.args.sizes[0] - self.waiting(small)
        if top_up > 0:
            self.real(small, top_up)
        out: dict[str, Any] = {"size": size, "waiting": self.waiting(store), "yardstick_waiting": self.waiting(small),
                               "load_before": os.getloadavg()}
        rm = ["-m", "roast"]
        log(f"{store.kind} @ {size:,}: process figures ({args.runs} runs, interleaved with the floor and the "
            f"{out['yardstick_waiting']}-session yardstick)")
        commands = {"resume_noid": [*rm, "resume", str(self.wf), "-e", "go"], "sessions_page": [*rm, "sessions"],
                    "tick_idle": [*rm, "tick"]}
        procs = self.interleaved({key: job for name, argv in commands.items()
                                  for key, job in ((name, (env, argv)), (f"{name}@yard", (small_env, argv)))}, args.runs)
        out["floor"] = procs.pop("floor")
        for name in commands:
            out[name] = procs[name]
            out[name]["yard"] = procs[f"{name}@yard"]["median"]
            out[name]["yard_samples"] = procs[f"{name}@yard"]["samples"]
            out[name]["yard_inblock"] = procs[f"{name}@yard"]["inblock"]
            out[name]["x30"] = out[name]["median"] / out[name]["yard"]
            out[name]["xfloor"] = out[name]["median"] / out["floor"]["median"]
        # consistency of copies: detail and cancel of one copy
        # a copy's id is `c` and 12 digits; a real session's id may start with `c` too (and the template,
        # the first real one, must stay waiting: the next size copies it)
        copies = [r[0] for r in store.rows("SELECT id FROM sessions WHERE status = 'waiting' AND id LIKE 'c%' "
                                           "ORDER BY id DESC LIMIT 200") if COPY_ID.fullmatch(r[0])]
        if copies:
            cid = copies[0]
            self.procs.run([*rm, "session", cid], env)
            self.procs.run([*rm, "cancel", cid], env)
            out["copy_checked"] = cid
        # tick firing overdue deadlines
        overdue = min(args.overdue, size // 4)
        if overdue >= 10:  # a median of several ticks, each after a run of the import floor
            ticks = []
            for _ in range(args.tick_runs):
                floor, _, _ = self.procs.run(["-c", FLOOR], self.floor_env)
                ticks.append({**self.tick_overdue(store, env, overdue), "floor": floor})
            middle = sorted(ticks, key=lambda t: t["seconds"])[len(ticks) // 2]
            out["tick_overdue"] = {**middle, "samples": [t["seconds"] for t in ticks],
                                   "floor": median([t["floor"] for t in ticks]),
                                   "fired": min(t["fired"] for t in ticks)}
        # serve: idle, listing, deliveries
        log(f"{store.kind} @ {size:,}: roast serve (idle {args.idle:g} s, listing, deliveries)")
        serve = Serve(self.procs, store, self.scratch)
        try:
            out["serve_idle"] = serve.idle(store, args.idle, args.settle)
            yard_serve = Serve(self.procs, small, self.scratch)
            try:
                big_list, small_list = [], []
                # a full page of 20 on both sides (the yardstick has ~30); rounds alternate between the
                # two servers, each round a warm-up and 5 timed requests on one connection: 10x the
                # samples of one request a round (a 2-ms request's median moved by 0.2 ms run to run)
                for _ in range(args.runs * 2):
                    big_list.append(serve.get(LISTING, 5))
                    small_list.append(yard_serve.get(LISTING, 5))
            finally:
                yard_serve.stop()
            samples = [s for g in big_list for s in g["samples"]]
            yard = [s for g in small_list for s in g["samples"]]
            out["api_list"] = {"samples": samples, "median": median(samples), "listed": big_list[-1]["listed"],
                               "yard": median(yard), "yard_samples": yard, "x30": median(samples) / median(yard)}
            count = min(args.deliveries, size // 4)
            if count >= 10:
                ids = [r[0] for r in store.rows("SELECT id FROM sessions WHERE status = 'waiting' AND id LIKE 'c%' "
                                                "ORDER BY id LIMIT ?", (count + 200,)) if COPY_ID.fullmatch(r[0])][:count]
                done_before = int(store.rows("SELECT count(*) FROM sessions WHERE status = 'completed'")[0][0])
                out["deliveries"] = serve.deliver(ids, args.clients, store)
                began = time.perf_counter()
                while time.perf_counter() - began < 300:
                    done = int(store.rows("SELECT count(*) FROM sessions WHERE status = 'completed'")[0][0])
                    if done - done_before >= len(ids):
                        break
                    time.sleep(0.25)
                out["deliveries"]["branches_done_after_s"] = round(time.perf_counter() - began, 2)
        finally:
            serve.stop()
        out["explain"] = self.explain(store, env)
        return out

    def tick_overdue(self, store: Store, env: dict[str, str], count: int) -> dict[str, Any]:
        """`roast tick` firing `count` overdue deadlines: a real session of a workflow whose wait
        times out after 1 s (the deadline is sealed in its state too), and `count - 1` copies of
        it with deadlines just before its own."""
        import roast

        result = roast.run(self.wf_due, **store.api_store())
        template = result.session_id
        (deadline,) = store.rows("SELECT deadline FROM sessions WHERE id = ?", (template,))[0]
        while time.time() <= deadline + 0.05:
            time.sleep(0.1)
        first = self.due_copies + 1
        store.grow(template, first, first + count - 2, time.time(), prefix="d", due=True)
        self.due_copies += count - 1
        ids = [template] + [f"d{i:012d}" for i in range(first, first + count - 1)]
        store.as_run(ids[1:])  # each copy's lock file, as a real session has (else the tick times making them)
        log(f"{store.kind}: roast tick firing {len(ids):,} overdue")
        wall, cpu, proc = self.procs.run(["-m", "roast", "tick", "--json"], env, expect=(0, 1))
        fired = 0
        for lo in range(0, len(ids), 500):
            chunk = ids[lo:lo + 500]
            fired += int(store.rows(f"SELECT count(*) FROM sessions WHERE id IN ({', '.join('?' * len(chunk))}) "
                                    "AND status <> 'waiting'", tuple(chunk))[0][0])
        return {"overdue": len(ids), "seconds": wall, "cpu": cpu, "per_claim_ms": wall / len(ids) * 1e3,
                "fired": fired, "exit": proc.returncode}

    def explain(self, store: Store, env: dict[str, str]) -> list[dict[str, Any]]:
        """The plans of every SELECT that real commands issue (captured in a child process)."""
        target = self.scratch / f"explain-{store.kind}.json"
        self.procs.run([str(Path(__file__).resolve()), CHILD_EXPLAIN, str(self.wf), str(target)], env)
        return list(json.loads(target.read_text()))

    def pg_startup(self, store: Store) -> dict[str, Any]:
        env = self.procs.env(**store.env())
        figures = self.interleaved({"sessions_json": (env, ["-m", "roast", "sessions", "--json"]),
                                    "import_psycopg": (env, ["-c", "import psycopg"])}, self.args.runs)
        _, _, proc = self.procs.run(["-X", "importtime", "-m", "roast", "sessions", "--json"], env)
        total = 0
        psycopg_us = 0
        for line in proc.stderr.splitlines():
            found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if found:
                total += int(found.group(1))
                if found.group(4) == "psycopg":
                    psycopg_us = max(psycopg_us, int(found.group(2)))
        figures["importtime"] = {"total_us": total, "psycopg_us": psycopg_us,
                                 "psycopg_share": psycopg_us / total if total else None}
        figures["xfloor"] = figures["sessions_json"]["median"] / figures["floor"]["median"]
        return figures

    def py_step(self) -> dict[str, Any]:
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else self.scratch
        work = Path(tempfile.mkdtemp(prefix="roast-scale-py-", dir=base))
        try:
            (work / "wf").mkdir()
            (work / "wf" / "noop.py").write_text("def run(ctx):\n    return None\n")
            for n in (1, 200):
                (work / "wf" / f"py{n}.yml").write_text("steps:\n" + "  - noop\n" * n)
            env = self.procs.env(ROAST_HOME=str(work / "home"))
            figures = self.interleaved({
                "one": (env, ["-m", "roast", "execute", str(work / "wf" / "py1.yml")]),
                "many": (env, ["-m", "roast", "execute", str(work / "wf" / "py200.yml")])}, self.args.runs)
            per = (figures["many"]["median"] - figures["one"]["median"]) / 199
            per_cpu = (figures["many"]["cpu"] - figures["one"]["cpu"]) / 199
            return {**figures, "steps": 200, "per_step_ms": per * 1e3, "per_step_cpu_ms": per_cpu * 1e3,
                    "home": str(work), "disk": disk_of(work)}
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run_store(self, store: Store) -> dict[str, Any]:
        args = self.args
        sizes = sorted(args.sizes)
        result: dict[str, Any] = {"sizes": {}, "facts": {}}
        self.due_copies = 0
        self.results["stores"][store.kind] = result
        yard_size = sizes[0]
        small = store.sibling("yard")
        log(f"{store.kind}: {yard_size} real sessions through roast.run(), in the store that grows and in the "
            "yardstick's")
        ids = self.real(store, yard_size)
        self.real(small, yard_size)
        template = ids[0]
        result["facts"] = store.facts()
        result["template"] = template
        result["template_bytes"] = {"envelope": len(store.rows("SELECT envelope FROM continuations WHERE session_id = ?",
                                                                (template,))[0][0])}
        if store.kind == "postgres":
            log("postgres: start-up of a PostgreSQL command")
            result["pg_startup"] = self.pg_startup(store)
        copies = 0
        for size in sizes:
            need = size - self.waiting(store)
            if need > 0:
                before = store.size_bytes()
                began = time.perf_counter()
                log(f"{store.kind}: growing by {need:,} copies to {size:,} waiting")
                store.grow(template, copies + 1, copies + need, time.time())
                built = time.perf_counter() - began
                copies += need
                store.after_growth()
                after = store.size_bytes()
                grown = {"copies": need, "build_s": round(built, 1), "bytes_before": before, "bytes_after": after,
                         "bytes_per_session": (after - before) / need}
            else:
                grown = {"copies": 0, "bytes_after": store.size_bytes()}
            figures = self.measure_size(store, small, size)
            figures["growth"] = grown
            result["sizes"][str(size)] = figures
            self.save()
            print(table(self.results, only=(store.kind, str(size))), flush=True)
        return result

    def save(self) -> None:
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.results, indent=1, default=str))
        out.with_name(out.stem + "-explain.txt").write_text(explain_text(self.results))

    def main(self) -> None:
        try:
            log(f".py steps: a workflow of 200 vs 1 on tmpfs ({self.args.runs} runs)")
            self.results["py_step"] = self.py_step()
            for kind in self.args.store:
                store: Store = SQLiteStore(self.scratch, self.key) if kind == "sqlite" else \
                    PostgresStore(self.scratch, self.key, "big")
                try:
                    self.run_store(store)
                finally:
                    store.stop()
                    self.save()
        finally:
            self.save()
            shutil.rmtree(self.scratch, ignore_errors=True)


def machine() -> dict[str, Any]:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "roast") else ""),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
            "load_at_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# --------------------------------------------------------------------------- the report


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def rows_of(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, store, size, value, target, met) for every figure measured."""
    out: list[tuple[str, str, str, str, str, str]] = []
    for kind, store in results["stores"].items():
        sizes = store["sizes"]
        for size, f in sizes.items():
            n = f"{int(size):,}"
            for name, label in (("resume_noid", "roast resume WF -e E (no -s)"), ("sessions_page", "roast sessions"),
                                ("tick_idle", "roast tick, nothing due"), ("api_list", "GET /v1/sessions?status=waiting&limit=20")):
                fig = f[name]
                x30 = fig["x30"]
                xfloor = f", {fig['xfloor']:.2f}× floor" if "xfloor" in fig else ""
                cold = sum(1 for blocks in fig.get("inblock", []) if blocks)
                cold_yard = sum(1 for blocks in fig.get("yard_inblock", []) if blocks)
                paged = (f"; read from disk in {cold} + {cold_yard} of {len(fig['inblock'])} runs"
                         if cold or cold_yard else "")
                value = f"{_ms(fig['median'])} ({x30:.2f}× {_ms(fig['yard'])} at ~30{xfloor}{paged})"
                met = "met" if x30 <= 1.2 else "NOT MET"
                out.append((label, kind, n, value, TARGETS[name], met))
            if "tick_overdue" in f:
                t = f["tick_overdue"]
                ok = t["per_claim_ms"] <= 1.0 and t["fired"] == t["overdue"]
                runs = f"median of {len(t['samples'])}, " if t.get("samples") else ""
                floor = f", floor {_ms(t['floor'])}" if t.get("floor") else ""
                out.append((f"roast tick firing {t['overdue']:,} overdue", kind, n,
                            f"{t['seconds']:.2f} s, {t['per_claim_ms']:.2f} ms a claim ({runs}{t['fired']:,} fired{floor})",
                            TARGETS["tick_overdue"],
                            "met" if ok else "NOT MET"))
            s = f["serve_idle"]
            pg = f" + {s['pg_cpu_pct']:.1f} % in PostgreSQL" if s.get("pg_cpu_pct") is not None else ""
            ok = s["cpu_pct"] < 5 and s["rss_mb"] < 200
            out.append(("idle roast serve", kind, n, f"{s['cpu_pct']:.1f} % of a core{pg}, {s['rss_mb']:.0f} MB RSS "
                        f"(listening after {s['listening_after_s']:.1f} s)", TARGETS["serve_idle"],
                        "met" if ok else "NOT MET"))
            if "deliveries" in f:
                d = f["deliveries"]
                ok = d["claims_per_s"] >= 1000 and d["p99_ms"] <= 20 and d["outcomes"].get("consumed") == d["sessions"]
                c = d.get("cpu_ms") or {}
                split = (f"; CPU a delivery {c['total']:.2f} ms (clients {c['client']:.2f}, server {c['server']:.2f}"
                         + (f", PostgreSQL {c['postgres']:.2f}" if c.get("postgres") is not None else "")
                         + f"): {os.cpu_count()} cores cannot pass {c['ceiling_per_s']:,}/s") if c.get("total") else ""
                out.append((f"{d['sessions']:,} deliveries, {d['clients']} clients", kind, n,
                            f"{d['claims_per_s']:,.0f} claims/s, p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms{split}",
                            TARGETS["deliveries"], "met" if ok else "NOT MET"))
            g = f.get("growth", {})
            if g.get("copies"):
                per = g["bytes_per_session"]
                out.append(("bytes per waiting session", kind, n, f"{per:,.0f} B (built {g['copies']:,} in "
                            f"{g['build_s']:.0f} s)", TARGETS["bytes_per_session"], "met" if per <= 2048 else "NOT MET"))
        if "pg_startup" in store:
            p = store["pg_startup"]
            share = p["importtime"]["psycopg_share"]
            out.append(("roast sessions --json (PostgreSQL start-up)", kind, "",
                        f"{_ms(p['sessions_json']['median'])}, {p['xfloor']:.2f}× floor; import psycopg "
                        f"{_ms(p['import_psycopg']['median'])}; psycopg {0 if share is None else share * 100:.0f} % "
                        "of import time", TARGETS["pg_startup"], ""))
    if "py_step" in results:
        p = results["py_step"]
        out.append((".py step, whole cost (tmpfs)", "sqlite", "", f"{p['per_step_ms']:.3f} ms a step ({p.get('per_step_cpu_ms', 0):.3f} ms CPU)",
                    TARGETS["py_step"], "met" if p["per_step_ms"] <= 0.3 else "NOT MET"))
    return out


def summary(results: dict[str, Any]) -> str:
    """One row per figure, one column per store and size (the README's Scale table)."""
    cols = [(kind, size) for kind, store in results["stores"].items() for size in store["sizes"] if int(size) > 100]
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    head = ["figure", *(f"{names[k]} {_count(int(n))}" for k, n in cols), "target"]

    def cell(kind: str, size: str, name: str) -> str:
        f = results["stores"][kind]["sizes"][size]
        if name in ("resume_noid", "sessions_page", "tick_idle", "api_list"):
            return f"{f[name]['x30']:.2f}× ({_ms(f[name]['median'])})"
        if name == "tick_overdue" and name in f:
            return f"{f[name]['seconds']:.2f} s"
        if name == "serve_idle":
            s = f[name]
            pg = f" + {s['pg_cpu_pct']:.1f} %" if s.get("pg_cpu_pct") is not None else ""
            return f"{s['cpu_pct']:.1f} %{pg}, {s['rss_mb']:.0f} MB"
        if name == "deliveries" and name in f:
            return f"{f[name]['claims_per_s']:,.0f}/s, p99 {f[name]['p99_ms']:.0f} ms"
        if name == "delivery_cpu" and (f.get("deliveries") or {}).get("cpu_ms"):
            c = f["deliveries"]["cpu_ms"]
            return f"{c['total']:.2f} ms: ≤ {c['ceiling_per_s']:,}/s"
        if name == "bytes_per_session" and f.get("growth", {}).get("copies"):
            return f"{f['growth']['bytes_per_session']:,.0f} B"
        return "–"

    labels = [("resume_noid", "`roast resume WF -e E` (no `-s`), ×30"), ("sessions_page", "`roast sessions`, ×30"),
              ("tick_idle", "`roast tick`, nothing due, ×30"), ("api_list", "`GET /v1/sessions?status=waiting&limit=20`, ×30"),
              ("tick_overdue", "`roast tick` firing 1,000 overdue"), ("serve_idle", "idle `roast serve` (CPU of a core, RSS)"),
              ("deliveries", "2,000 HTTP deliveries, 16 clients"),
              ("delivery_cpu", "CPU a delivery, every process (clients, server, PostgreSQL): the cores' ceiling"),
              ("bytes_per_session", "bytes per waiting session")]
    rows = [[label, *(cell(k, n, name) for k, n in cols), TARGETS[name]] for name, label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else \
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def table(results: dict[str, Any], only: tuple[str, str] | None = None) -> str:
    rows = rows_of(results)
    if only is not None:
        rows = [r for r in rows if r[1] == only[0] and r[2] == f"{int(only[1]):,}"]
    head = ("figure", "store", "waiting", "value", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(6)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def facts_text(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"machine: {m['cpus']} cores, {m['memory_gb']} GB, Python {m['python']}, {m['platform']}, "
             f"commit {m['commit']}, {m['date']}"]
    for kind, store in results["stores"].items():
        lines.append(f"{kind}: " + ", ".join(f"{k}={v}" for k, v in store.get("facts", {}).items()))
    return "\n".join(lines)


def explain_text(results: dict[str, Any]) -> str:
    out = []
    for kind, store in results["stores"].items():
        for size, f in store["sizes"].items():
            out.append(f"=== {kind} with {int(size):,} waiting sessions")
            for q in f.get("explain", []):
                out.append(f"--- {q['command']}: {q['sql']}\n    params {q['params']}")
                out.extend("    " + line for line in q["plan"])
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the explain child


def explain_child(workflow: str, target: str) -> int:
    """Run real commands in this process, record every SELECT they issue, and explain each."""
    import io

    from roast import cli
    from roast.sql_reads import Tx

    seen: list[dict[str, Any]] = []
    current = [""]
    originals = {name: getattr(Tx, name) for name in ("row", "rows")}

    def recording(name: str) -> Any:
        def wrapper(self: Any, sql: str, params: Any = ()) -> Any:
            text = self._sql(sql)
            if text.lstrip().upper().startswith(("SELECT", "WITH")):
                seen.append({"command": current[0], "sql": text, "params": list(self._params(params)),
                             "dialect": type(self).__module__})
            return originals[name](self, sql, params)
        return wrapper

    for name in originals:
        setattr(Tx, name, recording(name))
    for argv in (["resume", workflow, "-e", "go"], ["sessions"], ["tick"]):
        current[0] = "roast " + " ".join(a if a != workflow else "WF" for a in argv)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli.main(argv)
    from roast.api import list_sessions, open_store

    current[0] = f"GET {LISTING} (api.list_sessions as serve calls it)"
    list_sessions(status=["waiting"], limit=20, offset=0, open_first=True)
    current[0] = "roast serve's worker (store calls)"
    store = open_store()
    store.overdue(now=time.time())
    store.notify_due()
    store.list(statuses=["orphaned"], limit=None)
    store.close()
    for name, fn in originals.items():
        setattr(Tx, name, fn)
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for q in seen:
        unique.setdefault((q["command"], q["sql"]), q)
    url = os.environ.get("ROAST_STORE")
    if url:
        import psycopg

        with psycopg.connect(url) as db:
            for q in unique.values():
                q["plan"] = [r[0] for r in db.execute("EXPLAIN " + q["sql"], q["params"]).fetchall()]
    else:
        with contextlib.closing(sqlite3.connect(Path(os.environ["ROAST_HOME"]) / "sessions.db")) as db:
            for q in unique.values():
                q["plan"] = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + q["sql"], q["params"]).fetchall()]
    for q in unique.values():
        q.pop("dialect", None)
        q["params"] = [p if isinstance(p, (int, float, str)) or p is None else repr(p) for p in q["params"]]
    Path(target).write_text(json.dumps(list(unique.values()), indent=1))
    return 0


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_EXPLAIN]:
        return explain_child(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", action="append", choices=("sqlite", "postgres"),
                        help="the store(s) to measure (default: both)")
    parser.add_argument("--sizes", help="waiting sessions, smallest first is the yardstick "
                        "(default: 30,10000,100000,1000000)")
    parser.add_argument("--quick", action="store_true", help="sizes 30,2000, 3 runs, short windows (checks the bench works)")
    parser.add_argument("--runs", type=int, help="timed runs of each process figure (default: 5; quick 3)")
    parser.add_argument("--deliveries", type=int, help="HTTP deliveries per size (default: 2000; quick 200)")
    parser.add_argument("--overdue", type=int, help="overdue deadlines fired by one tick (default: 1000; quick 100)")
    parser.add_argument("--tick-runs", type=int, default=3, help="ticks firing them per size, the median shown "
                        "(default: %(default)s)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default: 16)")
    parser.add_argument("--idle", type=float, help="idle serve window in seconds (default: 20; quick 5)")
    parser.add_argument("--settle", type=float, default=180, help="most seconds to wait for serve to settle (default: 180)")
    parser.add_argument("--base", help="directory for the stores (default: the system temp dir)")
    parser.add_argument("--out", default=str(BENCH / "results" / "scale.json"), help="the JSON (default: %(default)s)")
    parser.add_argument("--explain", action="store_true", help="also print the query plans on stdout")
    args = parser.parse_args(argv)
    args.store = args.store or ["sqlite", "postgres"]
    default_sizes = "30,2000" if args.quick else "30,10000,100000,1000000"
    args.sizes = sorted(int(s.replace("_", "")) for s in (args.sizes or default_sizes).split(","))
    args.runs = args.runs or (3 if args.quick else 5)
    args.deliveries = args.deliveries or (200 if args.quick else 2000)
    args.overdue = args.overdue or (100 if args.quick else 1000)
    args.idle = args.idle or (5.0 if args.quick else 20.0)
    bench = Scale(args)
    bench.main()
    print()
    print(table(bench.results))
    print()
    print(summary(bench.results))
    print(facts_text(bench.results))
    print(f"(JSON: {args.out}; plans: {Path(args.out).with_name(Path(args.out).stem + '-explain.txt')})")
    if args.explain:
        print(explain_text(bench.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
