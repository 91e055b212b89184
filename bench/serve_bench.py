#!/usr/bin/env python3
"""`roast serve` delivery throughput (issue 15): claims per second over HTTP, and claim latency.

    python bench/serve_bench.py                 # 1,000 waiting sessions, 16 concurrent clients
    python bench/serve_bench.py --sessions 200 --clients 8 --json

Builds N sessions waiting at one `wait_for_event` (its branch is one `$(true)`) in a fresh ROAST_HOME,
starts a real `roast serve` on a free loopback port, then C client threads, each on its own
keep-alive connection, POST `/v1/sessions/{id}/events/go` once per session. A request returns once
the claim has committed (the branch runs afterwards in the server's worker pool), so the figures
are claims: throughput = sessions / wall time of the delivery phase; p50/p99 = per-request latency.
Target (issue 15): at least 200 claims/s on SQLite. Standard library and this repository's roast only.

    python bench/serve_bench.py --yardstick     # and the HTTP stack alone, beside roast (issue 25)
    python bench/serve_bench.py --store 'postgresql://…' --sessions 2000   # a PostgreSQL store (ROAST_KEY set)

The yardstick (issue 25) is the same clients (`deliver`, same request shape and body) against
Uvicorn with roast serve's settings (its guarded h11 protocol, `limit_concurrency`, keep-alive) and
a Starlette app that answers 202 with a small JSON document: `noop` does nothing else; `sqlite`
first commits one fsync'd `BEGIN IMMEDIATE; UPDATE; COMMIT` in WAL mode (`synchronous=FULL`, as
roast's store) on one worker thread, as roast serve's SQLite claims take turns; with `--store
postgresql://…`, `postgres` also commits one `UPDATE` (autocommit, the server's own durability
settings) per request on one of CLAIM_THREADS threads with a connection each (roast serve's own
claims are batched in two claim processes), in a table `roast_yard` it makes and drops in that database. `--http httptools`
/ `--loop uvloop` measure those Uvicorn options where installed (roast does not depend on them).
Every figure carries the CPU of the client process (getrusage of this process) and of the server
(its /proc stat, with its living children, the claim process among them, and the children it waited
for) over the delivery phase, in % of one core.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET = 200.0  # claims per second (issue 15)
SERVE = "import sys; from roast import serve; sys.exit(serve.run_from_argv(sys.argv[1:]))"
WORKFLOW = """
    name: bench
    steps:
      - wait_for_event:
          go: ["$(true)"]
"""


YARD_APP = """
import os, sqlite3, sys, threading
import anyio, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from roast import http_guard

mode, db_path, http, loop = sys.argv[1:5]
local = threading.local()
limiter = []


def commit(session_id):
    db = getattr(local, "db", None)
    if mode == "postgres":  # one connection per claim thread (a pool of CLAIM_THREADS), one commit each
        if db is None:
            import psycopg
            db = local.db = psycopg.connect(db_path, autocommit=True)
        db.execute("UPDATE roast_yard SET status = 'running', n = n + 1 WHERE id = %s", (session_id,))
        return
    if db is None:
        db = local.db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE sessions SET status = 'running', n = n + 1 WHERE id = ?", (session_id,))
    db.execute("COMMIT")


async def claim(request):
    body = await request.body()
    if mode != "noop":
        if not limiter:
            limiter.append(anyio.CapacityLimiter(1 if mode == "sqlite" else CLAIM_THREADS))
        await anyio.to_thread.run_sync(commit, request.path_params["session_id"], limiter=limiter[0])
    return Response(b'{"outcome":"consumed","session_id":"' + request.path_params["session_id"].encode() + b'"}',
                    status_code=202, media_type="application/json")


if mode == "postgres":
    from roast.serve import CLAIM_THREADS
elif mode == "sqlite":
    with sqlite3.connect(db_path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, status TEXT, n INTEGER DEFAULT 0)")
app = Starlette(routes=[Route("/v1/sessions/{session_id}/events/{event}", claim, methods=["POST"])])
protocol = http_guard.protocol(os.environ) if http == "guard" else http
config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off",
                        proxy_headers=False, server_header=False, timeout_keep_alive=5, timeout_graceful_shutdown=10,
                        limit_concurrency=1024, http=protocol, loop=loop)
server = uvicorn.Server(config)
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(2048)
print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
server.run(sockets=[sock])
"""
CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _build(home: Path, work: Path, count: int) -> list[str]:
    """`count` sessions waiting for `go`, made in this process through the public API."""
    os.environ["ROAST_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    import roast

    wf = work / "bench" / "workflow.yml"
    wf.parent.mkdir(parents=True)
    # a fingerprint of its own: a shared store keeps one definition per fingerprint, and one saved by
    # an earlier run (its directory gone) would be recompiled on every claim
    wf.write_text(textwrap.dedent(WORKFLOW).lstrip() + f"# {work.name}\n")
    ids = []
    for n in range(count):
        result = roast.run(wf)
        assert result.status == "waiting", result
        ids.append(result.session_id)
        if (n + 1) % 250 == 0:
            print(f"  {n + 1} sessions waiting", file=sys.stderr)
    return ids


def _start(home: Path, work: Path, workers: int, argv: list[str] | None = None) -> tuple[subprocess.Popen[bytes], int,
                                                                                         Path]:
    log = work / "serve.log"
    env = {**os.environ, "ROAST_HOME": str(home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    for name in ("ROAST_SERVE_TOKENS", "ROAST_WEBHOOK_SECRET", "ROAST_GITHUB_WEBHOOK_SECRET"):
        env.pop(name, None)
    if argv and os.environ.get("PYTHONPATH"):  # the yardstick may try packages installed aside (--loop uvloop)
        env["PYTHONPATH"] += os.pathsep + os.environ["PYTHONPATH"]
    argv = argv or [sys.executable, "-c", SERVE, "--port", "0", "--workers", str(workers)]
    with log.open("w") as err:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return proc, int(found.group(1)), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"roast serve did not start:\n{log.read_text()}")


def deliver(port: int, ids: list[str], clients: int) -> tuple[float, list[float], dict[str, int]]:
    """POST `go` to each of `ids` from `clients` threads at once (one keep-alive connection each): the
    wall seconds, each request's latency, and the outcomes by name. bench/scale.py uses it too."""
    todo: queue.Queue[str] = queue.Queue()
    for sid in ids:
        todo.put(sid)
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        seen: dict[str, int] = {}
        start.wait()
        while True:
            try:
                sid = todo.get_nowait()
            except queue.Empty:
                break
            began = time.perf_counter()
            conn.request("POST", f"/v1/sessions/{sid}/events/go", body=b"{}",
                         headers={"content-type": "application/json"})
            response = conn.getresponse()
            doc = json.loads(response.read() or b"{}")
            mine.append(time.perf_counter() - began)
            key = doc.get("outcome") or (doc.get("error") or {}).get("code") or str(response.status)
            seen[key] = seen.get(key, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for key, n in seen.items():
                outcomes[key] = outcomes.get(key, 0) + n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - began, latencies, outcomes


def family(pid: int) -> list[int]:
    """`pid` and its living children (`roast serve`'s claim process, running steps)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return [pid, *kids]


def _server_ticks(pid: int) -> int:
    """utime + stime of `pid`, of its living children (the claim process) and of the children it
    waited for (the branches' shells), in ticks."""
    total = 0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total


def _stop(proc: subprocess.Popen[Any], grace: float) -> None:
    """Stop a server: SIGTERM, then SIGKILL after `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def deliver_measured(pid: int, port: int, ids: list[str], clients: int) -> dict[str, Any]:
    """`deliver`, with the figures and the CPU of both sides (% of one core over the delivery phase)."""
    import resource

    def mine() -> float:
        use = resource.getrusage(resource.RUSAGE_SELF)
        return use.ru_utime + use.ru_stime

    client0, server0 = mine(), _server_ticks(pid)
    wall, latencies, outcomes = deliver(port, ids, clients)
    client, server = mine() - client0, (_server_ticks(pid) - server0) / CLK
    return {"sessions": len(ids), "clients": clients, "seconds": round(wall, 3),
            "claims_per_s": round(len(latencies) / wall, 1), "p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2), "outcomes": outcomes,
            "client_cpu_pct": round(client / wall * 100, 1), "server_cpu_pct": round(server / wall * 100, 1),
            "client_cpu_ms_per_request": round(client / len(latencies) * 1000, 3),
            "server_cpu_ms_per_request": round(server / len(latencies) * 1000, 3)}


def yardstick(mode: str, count: int, clients: int, base: str | None, http: str = "guard",
              loop: str = "asyncio") -> dict[str, Any]:
    """The same clients against the HTTP stack alone (`noop`), or with one fsync'd SQLite commit per
    request (`sqlite`): what this machine gives before roast does any work."""
    work = Path(tempfile.mkdtemp(prefix="roast-yard-", dir=base))
    try:
        ids = [f"s{n:06d}" for n in range(count)]
        db = os.environ["ROAST_STORE"] if mode == "postgres" else str(work / "yard.db")
        if mode == "postgres":
            _yard_table(db, ids)
        proc, port, _ = _start(work, work, 1, [sys.executable, "-c", YARD_APP, mode, db, http, loop])
        try:
            if mode == "sqlite":
                import sqlite3

                for _ in range(100):  # the server made the table
                    try:
                        with sqlite3.connect(db) as conn:
                            conn.executemany("INSERT OR IGNORE INTO sessions (id, status) VALUES (?, 'waiting')",
                                             [(sid,) for sid in ids])
                        break
                    except sqlite3.OperationalError:
                        time.sleep(0.05)
            figures = deliver_measured(proc.pid, port, ids, clients)
        finally:
            _stop(proc, 30)
            if mode == "postgres":
                _yard_table(db, None)
        return {"yardstick": mode, "http": http, "loop": loop, **figures}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _on_postgres() -> bool:
    return os.environ.get("ROAST_STORE", "").startswith(("postgresql:", "postgres:"))


def _yard_table(url: str, ids: list[str] | None) -> None:
    """The `postgres` yardstick's table in the store's database: made with `ids` waiting, or dropped."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS roast_yard")
        if ids is not None:
            db.execute("CREATE TABLE roast_yard (id text PRIMARY KEY, status text, n integer DEFAULT 0)")
            with db.cursor() as cur:
                cur.executemany("INSERT INTO roast_yard (id, status) VALUES (%s, 'waiting')", [(i,) for i in ids])


def _completed(home: Path) -> int:
    """Completed sessions in the store, counted in SQL (the api's counts are capped, issue 25)."""
    query = "SELECT count(*) FROM sessions WHERE status = 'completed'"
    url = os.environ.get("ROAST_STORE", "")
    if _on_postgres():
        import psycopg

        with psycopg.connect(url) as db:
            return int(db.execute(query).fetchone()[0])  # type: ignore[index]
    import sqlite3

    with sqlite3.connect(f"file:{home / 'sessions.db'}?mode=ro", uri=True) as lite:
        return int(lite.execute(query).fetchone()[0])


def _branches_done(home: Path, ids: list[str], before: int = 0, timeout: float = 300) -> float:
    """Seconds until every session completed (the worker pool ran every branch)."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if _completed(home) - before >= len(ids):
            break
        time.sleep(0.1)
    return time.perf_counter() - began


def _profiler(pid: int, out: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy (a dev tool: `pip install py-spy`) sampling the server's threads while they hold the GIL
    (its CPU: one process runs Python on one core at a time) into `out` (collapsed stacks) until it
    gets SIGINT; None without --profile."""
    if not out:
        return None
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--gil",
                            "--threads", "--nonblocking", "--output", out], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    return spy


def _stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        import signal

        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def run(sessions: int, clients: int, workers: int, base: str | None, profile: str | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="roast-serve-bench-", dir=base))
    home = work / "home"
    try:
        print(f"building {sessions} waiting sessions in {home}", file=sys.stderr)
        ids = _build(home, work, sessions)
        before = _completed(home)
        proc, port, _ = _start(home, work, workers)
        try:
            print(f"delivering with {clients} clients to port {port}", file=sys.stderr)
            spy = _profiler(proc.pid, profile)
            figures = deliver_measured(proc.pid, port, ids, clients)
            _stop_profiler(spy)
            drained = _branches_done(home, ids, before)
        finally:
            _stop(proc, 60)
        rate = figures["claims_per_s"]
        return {**figures, "workers": workers, "branches_done_after_s": round(drained, 2),
                "target_claims_per_s": TARGET, "met": rate >= TARGET and figures["outcomes"].get("consumed") == sessions}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="waiting sessions (default: 1000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default: 16)")
    parser.add_argument("--workers", type=int, default=2, help="roast serve --workers (default: 2)")
    parser.add_argument("--base", help="directory for the temporary ROAST_HOME (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--store", help="ROAST_STORE for the sessions (default: SQLite in the temporary ROAST_HOME)")
    parser.add_argument("--yardstick", action="store_true",
                        help="also the HTTP stack alone (noop) and with one fsync'd SQLite commit per request")
    parser.add_argument("--http", default="guard", help="the yardstick's Uvicorn protocol: guard (roast serve's), "
                                                        "h11 or httptools (default: guard)")
    parser.add_argument("--profile", metavar="FILE", help="sample the server with py-spy during the deliveries into "
                                                              "FILE (collapsed stacks; py-spy is not a dependency)")
    parser.add_argument("--loop", default="asyncio", help="the yardstick's event loop: asyncio or uvloop")
    args = parser.parse_args(argv)
    if args.store:
        os.environ["ROAST_STORE"] = args.store
    figures = run(args.sessions, args.clients, args.workers, args.base, args.profile)
    if args.yardstick:
        figures["yardsticks"] = [yardstick(mode, args.sessions, args.clients, args.base, args.http, args.loop)
                                 for mode in ("noop", "sqlite", *(("postgres",) if _on_postgres() else ()))]
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"serve claims: {figures['claims_per_s']}/s over {figures['sessions']} sessions, "
              f"{figures['clients']} clients (target ≥ {TARGET:g}/s: {'met' if figures['met'] else 'MISSED'})")
        print(f"claim latency: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, mean {figures['mean_ms']} ms")
        print(f"outcomes: {figures['outcomes']}; every branch done {figures['branches_done_after_s']} s after "
              "the last claim")
        print(f"cpu: client {figures['client_cpu_pct']} %, server {figures['server_cpu_pct']} % of a core")
        for yard in figures.get("yardsticks", []):
            print(f"yardstick {yard['yardstick']} ({yard['http']}, {yard['loop']}): {yard['claims_per_s']}/s, "
                  f"p50 {yard['p50_ms']} ms, p99 {yard['p99_ms']} ms; cpu: client {yard['client_cpu_pct']} %, "
                  f"server {yard['server_cpu_pct']} %")
    return 0 if figures["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
