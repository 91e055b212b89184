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
    wf.write_text(textwrap.dedent(WORKFLOW).lstrip())
    ids = []
    for n in range(count):
        result = roast.run(wf)
        assert result.status == "waiting", result
        ids.append(result.session_id)
        if (n + 1) % 250 == 0:
            print(f"  {n + 1} sessions waiting", file=sys.stderr)
    return ids


def _start(home: Path, work: Path, workers: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    log = work / "serve.log"
    env = {**os.environ, "ROAST_HOME": str(home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    for name in ("ROAST_SERVE_TOKENS", "ROAST_WEBHOOK_SECRET", "ROAST_GITHUB_WEBHOOK_SECRET"):
        env.pop(name, None)
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, "--port", "0", "--workers", str(workers)],
                                cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
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


def _branches_done(home: Path, ids: list[str], timeout: float = 300) -> float:
    """Seconds until every session completed (the worker pool ran every branch)."""
    import sqlite3

    began = time.perf_counter()
    with sqlite3.connect(f"file:{home / 'sessions.db'}?mode=ro", uri=True) as db:
        while time.perf_counter() - began < timeout:
            done = db.execute("SELECT count(*) FROM sessions WHERE status = 'completed'").fetchone()[0]
            if done >= len(ids):
                break
            time.sleep(0.1)
    return time.perf_counter() - began


def run(sessions: int, clients: int, workers: int, base: str | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="roast-serve-bench-", dir=base))
    home = work / "home"
    try:
        print(f"building {sessions} waiting sessions in {home}", file=sys.stderr)
        ids = _build(home, work, sessions)
        proc, port, _ = _start(home, work, workers)
        try:
            print(f"delivering with {clients} clients to port {port}", file=sys.stderr)
            wall, latencies, outcomes = deliver(port, ids, clients)
            drained = _branches_done(home, ids)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rate = len(latencies) / wall
        return {"sessions": sessions, "clients": clients, "workers": workers, "seconds": round(wall, 3),
                "claims_per_s": round(rate, 1), "p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
                "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
                "mean_ms": round(statistics.fmean(latencies) * 1000, 2), "outcomes": outcomes,
                "branches_done_after_s": round(drained, 2), "target_claims_per_s": TARGET,
                "met": rate >= TARGET and outcomes.get("consumed") == sessions}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="waiting sessions (default: 1000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default: 16)")
    parser.add_argument("--workers", type=int, default=2, help="roast serve --workers (default: 2)")
    parser.add_argument("--base", help="directory for the temporary ROAST_HOME (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    figures = run(args.sessions, args.clients, args.workers, args.base)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"serve claims: {figures['claims_per_s']}/s over {figures['sessions']} sessions, "
              f"{figures['clients']} clients (target ≥ {TARGET:g}/s: {'met' if figures['met'] else 'MISSED'})")
        print(f"claim latency: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, mean {figures['mean_ms']} ms")
        print(f"outcomes: {figures['outcomes']}; every branch done {figures['branches_done_after_s']} s after "
              "the last claim")
    return 0 if figures["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
