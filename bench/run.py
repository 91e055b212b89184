#!/usr/bin/env python3
"""roast benchmarks: start-up, per-step cost, resume, loop position, listing (issues 3-7, 12).

    python bench/run.py            # full mode (a few minutes), the numbers for the issue notes
    python bench/run.py --quick    # smaller sizes and fewer runs (< 1 min): checks the bench works

Prints a table and writes bench/results/latest.json. Uses only the standard library and the roast
package of this repository: whole processes are `python -m roast ...` timed with perf_counter,
in-process figures are loops over the public modules. Every figure is compared with the import
floor, `python -c "import yaml, rich, cloudpickle"`, measured in the same run. See bench/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

try:  # the installed package if there is one, else this checkout
    import roast
except ImportError:  # pragma: no cover - depends on how the repo is set up
    sys.path.insert(0, str(REPO))
    import roast

ROAST_ROOT = str(Path(roast.__file__).resolve().parent.parent)  # children import the same roast
FLOOR_CODE = "import yaml, rich, cloudpickle"


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    proc_runs: int          # repetitions of each whole-process figure
    inproc_runs: int        # repetitions of each in-process loop
    interp_steps: int       # 2a: no-op steps driven by the bare interpreter
    store_steps: int        # 2b: no-op steps through roast.run() with the store, on the home disk
    store_steps_tmpfs: int  # 2b': the same with ROAST_HOME on tmpfs (fsync is free there)
    store_runs: int
    shell_steps: int        # 2c: `$(true)` steps through `roast execute`
    shell_runs: int
    resume_long: int        # 3: steps before the wait of the "long" session
    loop_items: int         # 4: items of the `each`
    sessions: int           # 5: waiting sessions in the store
    flat_short: int         # 6: steps of the short run of the flatness check (issue 12: 200)
    flat_long: int          # 6: steps of the long run (issue 12: 4,000)
    fsync_steps: int        # 6: `$(true)` steps of the run whose fsyncs are counted


FULL = Sizes(proc_runs=15, inproc_runs=5, interp_steps=10_000, store_steps=200, store_steps_tmpfs=1_000,
             store_runs=3, shell_steps=1_000, shell_runs=1, resume_long=1_000, loop_items=1_000,
             sessions=10_000, flat_short=200, flat_long=4_000, fsync_steps=200)
QUICK = Sizes(proc_runs=3, inproc_runs=2, interp_steps=1_000, store_steps=20, store_steps_tmpfs=100,
              store_runs=1, shell_steps=30, shell_runs=1, resume_long=100, loop_items=100, sessions=1_000,
              flat_short=20, flat_long=200, fsync_steps=20)


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    key: str
    label: str
    unit: str                      # "s", "ms/step", "µs/step", "bytes"
    samples: list[float]           # in `unit`
    totals: list[float] = field(default_factory=list)  # seconds per sample (for the ratio to the floor)
    target: str = ""               # human text, e.g. "≤ 2× floor"
    limit: float | None = None     # the target as a number in `limit_of` terms
    limit_of: str = "floor"        # "floor" (ratio), "value" (median in unit), or another figure's key
    note: str = ""
    cpu: list[float] = field(default_factory=list)     # child user+sys CPU seconds per sample
    floor: list[float] = field(default_factory=list)   # floor runs interleaved with these samples
    floor_cpu: list[float] = field(default_factory=list)  # and their CPU times
    ratio: float | None = None     # filled in: median total seconds / floor median
    cpu_ratio: float | None = None  # median CPU / the interleaved floor's median CPU
    ok: bool | None = None
    miss: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


class Bench:
    def __init__(self, sizes: Sizes, base: Path, fast_base: Path, quick: bool) -> None:
        self.sizes = sizes
        self.base = base              # where ROAST_HOMEs that are measured live (the real disk)
        self.fast_base = fast_base    # where slow-to-build sessions are built (tmpfs if available)
        self.quick = quick
        self.figures: list[Figure] = []
        self.pycache = base / "pycache"
        self.meta: dict[str, Any] = {}

    # -- helpers
    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        print(f"  {fig.label}: {_fmt(fig.median, fig.unit)} (n={len(fig.samples)})", file=sys.stderr,
              flush=True)
        return fig

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("ROAST_HOME", None)
        env["ROAST_HOME"] = str(home)
        env["PYTHONPATH"] = os.pathsep.join([ROAST_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["NO_COLOR"] = "1"
        # Bytecode caching on, as in an installed package (pip compiles .pyc files): without it every
        # process recompiles roast's modules from source (~0.15 s). The cache lives in the bench's
        # temp dir, so nothing is written into the checkout.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        env.update(extra)
        return env

    def floor_run(self, cwd: Path, into: list[float], cpu: list[float]) -> None:
        """One import-floor process, interleaved with a scenario's runs so load drift hits both."""
        into.append(run_proc(["-c", FLOOR_CODE], self.env(cwd / "floor-home"), cwd)[0])
        cpu.append(LAST_CPU[0])

    def scenario_dir(self, name: str, fast: bool = False) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"roast-bench-{name}-", dir=self.fast_base if fast else self.base))
        return path


LAST_CPU = [0.0]  # user+sys CPU seconds of the last run_proc child (and the shells it waited for)


def run_proc(args: list[str], env: dict[str, str], cwd: Path, expect: int = 0) -> tuple[float, subprocess.CompletedProcess[str]]:
    """One whole process, timed from spawn to exit (wall clock; its CPU time goes to LAST_CPU)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != expect:
        raise SystemExit(f"bench: `python {' '.join(args)}` exited {proc.returncode} (expected {expect})\n"
                         f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    return elapsed, proc


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def restore(snapshot: Path, home: Path) -> None:
    """Put a copy of a saved ROAST_HOME in place (untimed), so every timed resume starts equal."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(snapshot, home)  # copy2 keeps 0600/0700 modes (secret.key is refused otherwise)


def execute_json(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    _, proc = run_proc(["-m", "roast", "execute", *args, "--json"], env, cwd)
    doc = json.loads(proc.stdout)
    return doc[-1] if isinstance(doc, list) else doc


def session_bytes(db_path: Path, session_id: str) -> dict[str, int]:
    """Bytes stored for one session: continuation envelope, the session row, its step history."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        cols = [row[1] for row in db.execute("PRAGMA table_info(sessions)")]
        row_bytes = db.execute("SELECT " + " + ".join(f"coalesce(length({c}), 0)" for c in cols)
                               + " FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]
        envelope = db.execute("SELECT coalesce(sum(length(envelope)), 0) FROM continuations WHERE session_id = ?",
                              (session_id,)).fetchone()[0]
        deltas = db.execute("SELECT coalesce(sum(length(envelope)), 0) FROM deltas WHERE session_id = ?",
                            (session_id,)).fetchone()[0]
        outputs = db.execute("SELECT coalesce(length(output), 0) FROM sessions WHERE id = ?",
                             (session_id,)).fetchone()[0]
        definition = db.execute("SELECT coalesce(sum(length(d.envelope)), 0) FROM definitions d JOIN sessions s "
                                "ON s.definition = d.fingerprint WHERE s.id = ?", (session_id,)).fetchone()[0]
        scols = [row[1] for row in db.execute("PRAGMA table_info(steps)")]
        steps_bytes, steps_rows = db.execute(
            "SELECT coalesce(sum(" + " + ".join(f"coalesce(length({c}), 0)" for c in scols) + "), 0), count(*) "
            "FROM steps WHERE session_id = ?", (session_id,)).fetchone()
    return {"envelope": int(envelope), "deltas": int(deltas), "row": int(row_bytes) - int(outputs),
            "outputs": int(outputs), "definition": int(definition), "history": int(steps_bytes),
            "history_rows": int(steps_rows)}


def fsync_ms(directory: Path, count: int = 20) -> float:
    """How long one small write + fsync takes where the store lives (SQLite's FULL sync pays this)."""
    fd, name = tempfile.mkstemp(dir=directory)
    try:
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, b"x" * 512)
            os.fsync(fd)
        return (time.perf_counter() - start) / count * 1e3
    finally:
        os.close(fd)
        os.unlink(name)


def tmpfs_dir() -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return None


# --------------------------------------------------------------------------- scenario 1


def scenario_startup(b: Bench) -> float:
    """Import floor, `roast --version`, `roast execute` of 3 shell steps (interleaved rounds)."""
    work = b.scenario_dir("startup")
    home = work / "home"
    env = b.env(home)
    write(work / "three" / "workflow.yml", """
        steps:
          - $(true)
          - $(echo one)
          - $(echo two)
    """)
    commands = {
        "floor": ["-c", FLOOR_CODE],
        "version": ["-m", "roast", "--version"],
        "execute3": ["-m", "roast", "execute", "three"],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    for args in commands.values():  # warm-up: .pyc files, page cache, the store and its key
        run_proc(args, env, work)
    for _ in range(b.sizes.proc_runs):
        for key, args in commands.items():
            times[key].append(run_proc(args, env, work)[0])
            cpu[key].append(LAST_CPU[0])
    floor, floor_cpu = times["floor"], cpu["floor"]
    b.add(Figure("floor", 'import floor: python -c "import yaml, rich, cloudpickle"', "s", floor, floor,
                 cpu=cpu["floor"], floor=floor, floor_cpu=floor_cpu))
    b.add(Figure("version", "roast --version", "s", times["version"], times["version"], cpu=cpu["version"],
                 floor=floor, floor_cpu=floor_cpu))
    b.add(Figure("execute3", "roast execute, 3 shell steps", "s", times["execute3"], times["execute3"],
                 target="≤ 1.6× floor", limit=1.6, cpu=cpu["execute3"], floor=floor, floor_cpu=floor_cpu))
    return statistics.median(times["floor"])


# --------------------------------------------------------------------------- scenario 2


def _noop(ctx: Any) -> None:
    return None


def scenario_per_step(b: Bench) -> None:
    from roast import compiler
    from roast.context import Context, WorkflowInfo
    from roast.effects import Effects
    from roast.runner import Completed, NullJournal, Runner

    n = b.sizes.interp_steps
    workflow = {"steps": [_noop] * n}
    compile_us, drive_us, drive_s = [], [], []
    for _ in range(b.sizes.inproc_runs):
        start = time.perf_counter()
        root = compiler.compile_workflow(compiler.DictSource(workflow))
        compiled = time.perf_counter()
        ctx = Context(WorkflowInfo("bench", "<dict:bench>", "benchsession01", None))
        runner = Runner(Effects(ctx=ctx), now=time.time, journal=NullJournal())
        outcome = runner.drive(root.run(ctx))
        done = time.perf_counter()
        assert isinstance(outcome, Completed), outcome
        compile_us.append((compiled - start) / n * 1e6)
        drive_us.append((done - compiled) / n * 1e6)
        drive_s.append(done - compiled)
    b.add(Figure("interp_step", f"in-process interpreter, {n:,} no-op Python steps (drive, NullJournal)",
                 "µs/step", drive_us, drive_s, target="≤ 50 µs/step", limit=50.0, limit_of="value"))
    b.add(Figure("compile_step", f"  compile_workflow of the same {n:,}-step dict", "µs/step", compile_us,
                 [u * n / 1e6 for u in compile_us]))

    def through_run(base: Path, count: int, key: str, where: str) -> None:
        home = Path(tempfile.mkdtemp(prefix="roast-bench-run-", dir=base)) / "home"
        roast.run({"steps": [_noop]}, home=home)  # creates the store and the key
        wf = {"steps": [_noop] * count}
        per, total = [], []
        for _ in range(b.sizes.store_runs):
            start = time.perf_counter()
            result = roast.run(wf, home=home)
            elapsed = time.perf_counter() - start
            assert result.status == "completed", result
            per.append(elapsed / count * 1e6)
            total.append(elapsed)
        b.add(Figure(key, f"roast.run(dict) with the store, {count:,} no-op steps ({where})", "µs/step",
                     per, total, note="per step: one transaction (its start row travels with the checkpoint before it)"))
        shutil.rmtree(home.parent, ignore_errors=True)

    through_run(b.base, b.sizes.store_steps, "run_store_step", "home on disk")
    shm = tmpfs_dir()
    if shm is not None and shm != b.base:
        through_run(shm, b.sizes.store_steps_tmpfs, "run_store_step_tmpfs", "home on tmpfs")

    # 2c: a YAML workflow of `$(true)` steps through `roast execute`, as a whole process
    work = b.scenario_dir("shell")
    n = b.sizes.shell_steps
    write(work / "many" / "workflow.yml", "steps:\n" + "  - $(true)\n" * n)

    def shell(base_home: Path, key: str, where: str) -> None:
        env = b.env(base_home)
        run_proc(["-m", "roast", "--version"], env, work)
        per, total, cpu = [], [], []
        for _ in range(b.sizes.shell_runs):
            elapsed, _ = run_proc(["-m", "roast", "execute", "many"], env, work)
            per.append(elapsed / n * 1e3)
            total.append(elapsed)
            cpu.append(LAST_CPU[0])
        b.add(Figure(key, f"roast execute, {n:,} $(true) steps ({where})", "ms/step", per, total, cpu=cpu,
                     note="whole process / steps (start-up included); cpu counts the shells too"))

    shell(work / "home", "execute_shell_step", "home on disk")
    if shm is not None and shm != b.base:
        tmp_home = Path(tempfile.mkdtemp(prefix="roast-bench-shell-", dir=shm))
        shell(tmp_home / "home", "execute_shell_step_tmpfs", "home on tmpfs")
        shutil.rmtree(tmp_home, ignore_errors=True)


# --------------------------------------------------------------------------- scenario 3


def scenario_resume(b: Bench) -> None:
    """`roast resume` of a session paused after 3 and after N steps, each on a fresh copy of its home."""
    work = b.scenario_dir("resume")
    build = b.scenario_dir("resume-build", fast=True)
    long_n = b.sizes.resume_long
    wait = """
        - wait_for_event:
            go:
              - $(true)
    """
    for name, count in (("short", 3), ("long", long_n)):
        write(work / name / "workflow.yml",
              "steps:\n" + "  - $(true)\n" * count + textwrap.indent(textwrap.dedent(wait).strip() + "\n", "  "))
    cases: dict[str, tuple[Path, str]] = {}
    for name in ("short", "long"):
        home = build / name
        doc = execute_json([name], b.env(home), work)
        assert doc["status"] == "waiting", doc
        cases[name] = (home, doc["session_id"])
    times: dict[str, list[float]] = {"short": [], "long": []}
    cpu: dict[str, list[float]] = {"short": [], "long": []}
    floor: list[float] = []
    floor_cpu: list[float] = []
    target_home = work / "home"
    for round_ in range(b.sizes.proc_runs + 1):
        for name, (snapshot, sid) in cases.items():
            restore(snapshot, target_home)
            elapsed, proc = run_proc(["-m", "roast", "resume", name, "-e", "go", "-s", sid],
                                     b.env(target_home), work)
            if "completed" not in proc.stderr:
                raise SystemExit(f"bench: resume of {name} did not complete:\n{proc.stderr[-2000:]}")
            if round_:  # round 0 is the warm-up
                times[name].append(elapsed)
                cpu[name].append(LAST_CPU[0])
        if round_:
            b.floor_run(work, floor, floor_cpu)
    b.add(Figure("resume3", "roast resume, session paused after 3 steps", "s", times["short"], times["short"],
                 target="≤ 1.3× floor", limit=1.3, cpu=cpu["short"], floor=floor, floor_cpu=floor_cpu))
    b.add(Figure("resume_long", f"roast resume, session paused after {long_n:,} steps", "s", times["long"],
                 times["long"], target="≤ 1.3× floor and ≤ 1.2× resume3", limit=1.2, limit_of="resume3",
                 cpu=cpu["long"], floor=floor, floor_cpu=floor_cpu))
    for name, (snapshot, sid) in cases.items():
        size = session_bytes(snapshot / "sessions.db", sid)
        steps_before = 3 if name == "short" else long_n
        stored = size["envelope"] + size["deltas"] + size["row"]
        # issue 12: ≤ 2 KB + the outputs themselves (these steps are unnamed: no outputs are kept)
        b.add(Figure(f"bytes_{name}", f"bytes per waiting session after {steps_before:,} steps "
                     "(continuation + deltas + session row)", "bytes", [stored],
                     target="≤ 2 KB + outputs" if name == "long" else "", limit=2048.0 + size["outputs"],
                     limit_of="value",
                     note=f"envelope {size['envelope']} B, deltas {size['deltas']} B, row {size['row']} B, outputs "
                          f"{size['outputs']} B; shared per definition: {size['definition']} B; step history "
                          f"{size['history_rows']} rows, {size['history']} B"))
    shutil.rmtree(build, ignore_errors=True)


# --------------------------------------------------------------------------- scenario 4


def scenario_loop(b: Bench) -> None:
    """A wait inside an `each` over N items, resumed at iteration 1 vs iteration N.

    To reach iteration N without N-1 resumes, the wait sits under `if: item >= FROM` (FROM from the
    environment): one `roast execute` runs the first FROM-1 iterations without waiting (a prompt step
    each, so history, outputs and the transcript grow as they would) and pauses at iteration FROM.
    Both sessions come from the same workflow file; each resume runs one branch and pauses again
    (at iteration 2, or at the final wait after the loop), so both do the same amount of work.
    """
    work = b.scenario_dir("loop")
    build = b.scenario_dir("loop-build", fast=True)
    n = b.sizes.loop_items
    write(work / "loop" / "workflow.yml", f"""
        steps:
          - each: "{{{{ list(range(1, {n} + 1)) }}}}"
            as: item
            steps:
              - "Review item {{{{ item }}}}"
              - if: "{{{{ item >= int(env.BENCH_WAIT_FROM) }}}}"
                then:
                  - wait_for_event:
                      approved:
                        - "Approved item {{{{ item }}}}"
          - wait_for_event:
              finished:
                - "All items reviewed"
    """)
    cases: dict[str, tuple[Path, str, str]] = {}
    for label, start in (("first", 1), ("last", n)):
        home = build / label
        doc = execute_json(["loop"], b.env(home, BENCH_WAIT_FROM=str(start)), work)
        assert doc["status"] == "waiting" and f"({start}/{n})" in (doc["cursor"] or ""), doc
        cases[label] = (home, doc["session_id"], str(start))
    times: dict[str, list[float]] = {"first": [], "last": []}
    cpu: dict[str, list[float]] = {"first": [], "last": []}
    floor: list[float] = []
    floor_cpu: list[float] = []
    target_home = work / "home"
    for round_ in range(b.sizes.proc_runs + 1):
        for label, (snapshot, sid, start) in cases.items():
            restore(snapshot, target_home)
            elapsed, proc = run_proc(["-m", "roast", "resume", "loop", "-e", "approved", "-s", sid, "--json"],
                                     b.env(target_home, BENCH_WAIT_FROM=start), work)
            doc = json.loads(proc.stdout)
            if doc["status"] != "waiting":
                raise SystemExit(f"bench: loop resume at {label} ended {doc['status']}: {doc.get('error')}")
            if round_:
                times[label].append(elapsed)
                cpu[label].append(LAST_CPU[0])
        if round_:
            b.floor_run(work, floor, floor_cpu)
    sizes = {label: session_bytes(snapshot / "sessions.db", sid) for label, (snapshot, sid, _) in cases.items()}
    notes = {label: f"envelope {s['envelope']} B, history {s['history_rows']} rows" for label, s in sizes.items()}
    b.add(Figure("loop_first", f"roast resume, wait in each at iteration 1/{n:,}", "s", times["first"],
                 times["first"], note=notes["first"], cpu=cpu["first"], floor=floor, floor_cpu=floor_cpu))
    b.add(Figure("loop_last", f"roast resume, wait in each at iteration {n:,}/{n:,}", "s", times["last"],
                 times["last"], target="≤ 1.2× iteration 1", limit=1.2, limit_of="loop_first", note=notes["last"],
                 cpu=cpu["last"], floor=floor, floor_cpu=floor_cpu))
    shutil.rmtree(build, ignore_errors=True)


# --------------------------------------------------------------------------- scenario 5


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def clone_sessions(db_path: Path, session_id: str, count: int) -> None:
    """count-1 copies of one waiting session (new ids, older created_at), continuations included."""
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        cols = [row[1] for row in db.execute("PRAGMA table_info(sessions)")]
        picks = []
        for col in cols:
            if col == "id":
                picks.append("?")
            elif col in ("created_at", "updated_at"):
                picks.append(f"{col} - ?")
            else:
                picks.append(col)
        insert = (f"INSERT INTO sessions ({', '.join(cols)}) SELECT {', '.join(picks)} "
                  "FROM sessions WHERE id = ?")
        base = int(session_id, 36)
        rows = []
        for i in range(1, count):
            new = _base36(base - i).rjust(len(session_id), "0")
            args: list[Any] = []
            for col in cols:
                if col == "id":
                    args.append(new)
                elif col in ("created_at", "updated_at"):
                    args.append(i * 60.0)
            rows.append((*args, session_id))
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert, rows)
        db.executemany("INSERT INTO continuations (session_id, envelope) SELECT ?, envelope FROM continuations "
                       "WHERE session_id = ?", [(r[cols.index("id")], session_id) for r in rows])
        db.execute("COMMIT")


def scenario_sessions(b: Bench) -> None:
    work = b.scenario_dir("sessions")
    home = work / "home"
    env = b.env(home)
    n = b.sizes.sessions
    write(work / "gate" / "workflow.yml", """
        steps:
          - $(echo building)
          - wait_for_event:
              approved:
                - $(echo deploying)
              rejected:
                - $(echo stopped)
    """)
    doc = execute_json(["gate"], env, work)
    assert doc["status"] == "waiting", doc
    clone_sessions(home / "sessions.db", doc["session_id"], n)
    _, proc = run_proc(["-m", "roast", "sessions", "--json", "--all"], env, work)
    listed = json.loads(proc.stdout)
    assert len(listed) == n, f"expected {n} sessions, listed {len(listed)}"
    page, listing, page_cpu, listing_cpu, floor, floor_cpu = [], [], [], [], [], []
    run_proc(["-m", "roast", "sessions"], env, work)
    for _ in range(b.sizes.proc_runs):
        page.append(run_proc(["-m", "roast", "sessions"], env, work)[0])
        page_cpu.append(LAST_CPU[0])
        listing.append(run_proc(["-m", "roast", "sessions", "--json", "--all"], env, work)[0])
        listing_cpu.append(LAST_CPU[0])
        b.floor_run(work, floor, floor_cpu)
    b.add(Figure("sessions_page", f"roast sessions (default page) over {n:,} waiting sessions", "s", page, page,
                 target="≤ 0.4 s", limit=0.4, limit_of="value", cpu=page_cpu, floor=floor, floor_cpu=floor_cpu))
    b.add(Figure("sessions_json_all", f"roast sessions --json --all over {n:,} waiting sessions", "s", listing,
                 listing, target="≤ 1.5 s", limit=1.5, limit_of="value", cpu=listing_cpu, floor=floor, floor_cpu=floor_cpu))


# --------------------------------------------------------------------------- scenario 6 (issue 12)


def scenario_durable(b: Bench) -> None:
    """What a durable step costs beyond the interpreter, whether it stays flat as history grows,
    and how many fsyncs a step costs on disk.

    - durable overhead per no-op step, home on tmpfs (fsync is free there, so this is roast's own
      work): a run through the store minus the same tree driven with a NullJournal, for dict
      callables and for named `.py` steps of a YAML workflow;
    - flatness: per-step time of a `flat_long`-step run ÷ that of a `flat_short`-step run, start-up
      subtracted (a 1-step run's time), for dict callables, `.py` steps and `$(…)` steps;
    - fsyncs per step on the real disk, counted with strace, beside the disk's fsync latency.
    """
    from roast import compiler
    from roast import workflow as workflow_mod
    from roast.context import Context, WorkflowInfo
    from roast.effects import Effects
    from roast.runner import NullJournal, Runner

    shm = tmpfs_dir() or b.base
    work = b.scenario_dir("durable")
    named_py = ("def run(ctx):\n    return None\n", "python")

    def yaml_steps(count: int, kind: str) -> Path:
        directory = work / f"{kind}-{count}"
        if not (directory / "workflow.yml").exists():
            if kind == "python":
                for i in range(count):
                    write(directory / f"s{i}.py", named_py[0])
                write(directory / "workflow.yml", "steps:\n" + "".join(f"  - s{i}\n" for i in range(count)))
            else:
                write(directory / "workflow.yml",
                      "steps:\n" + "".join(f"  - s{i}: $(echo {i})\n" for i in range(count)))
        return directory / "workflow.yml"

    def bare(definition: Any, count: int) -> float:
        """The same run without a store: load (a YAML file is parsed), compile, drive; per step."""
        start = time.perf_counter()
        source = compiler.DictSource(definition) if isinstance(definition, dict) else workflow_mod.load(definition)
        root = compiler.compile_workflow(source)
        ctx = Context(WorkflowInfo("bench", "bench", "benchsession01", None))
        Runner(Effects(ctx=ctx), now=time.time, journal=NullJournal()).drive(root.run(ctx))
        return (time.perf_counter() - start) / count

    def with_store(definition: Any, home: Path) -> float:
        start = time.perf_counter()
        result = roast.run(definition, home=home)
        elapsed = time.perf_counter() - start
        assert result.status == "completed", (result.status, result.error)
        return elapsed

    # durable overhead, tmpfs
    count = b.sizes.store_steps_tmpfs
    for kind in ("dict", "python"):
        home = Path(tempfile.mkdtemp(prefix="roast-bench-durable-", dir=shm)) / "home"
        if kind == "dict":
            definition: Any = {"steps": [{f"s{i}": _noop} for i in range(count)]}
        else:
            definition = yaml_steps(count, "python")
        with_store(definition, home)  # warm-up: the store, the key, the definition saved once
        per, totals, bare_per = [], [], []
        for _ in range(b.sizes.store_runs):
            elapsed = with_store(definition, home)
            baseline = bare(definition, count)
            per.append((elapsed / count - baseline) * 1e6)
            totals.append(elapsed)
            bare_per.append(baseline * 1e6)
        label = "dict callables" if kind == "dict" else "named .py steps"
        b.add(Figure(f"durable_{kind}", f"durable overhead per no-op step, {label} (tmpfs, {count:,} steps)",
                     "µs/step", per, totals, target="≤ 0.3 ms/step", limit=300.0, limit_of="value",
                     note=f"the interpreter alone: {statistics.median(bare_per):.1f} µs/step"))
        shutil.rmtree(home.parent, ignore_errors=True)

    # flatness: per step at flat_long ÷ at flat_short, start-up (a 1-step run) subtracted
    short_n, long_n = b.sizes.flat_short, b.sizes.flat_long
    for kind in ("dict", "python", "shell"):
        home = Path(tempfile.mkdtemp(prefix="roast-bench-flat-", dir=shm)) / "home"
        times: dict[int, list[float]] = {}
        for n in (1, short_n, long_n):
            repeat = 2 * b.sizes.proc_runs + 1 if n == 1 else b.sizes.proc_runs if n == short_n else \
                max(1, b.sizes.store_runs)  # start-up and the short run are small: more samples
            if kind == "dict":
                definition = {"steps": [{f"s{i}": _noop} for i in range(n)]}
                with_store(definition, home)
                runs = [with_store(definition, home) for _ in range(repeat)]
            elif kind == "python":
                definition = yaml_steps(n, "python")
                with_store(definition, home)
                runs = [with_store(definition, home) for _ in range(repeat)]
            else:
                path = yaml_steps(n, "shell")
                env = b.env(home)
                run_proc(["-m", "roast", "execute", str(path)], env, work)
                runs = [run_proc(["-m", "roast", "execute", str(path)], env, work)[0] for _ in range(repeat)]
            times[n] = runs
        startup = statistics.median(times[1])
        per_short = [(t - startup) / short_n for t in times[short_n]]
        per_long = [(t - startup) / long_n for t in times[long_n]]
        ratio = statistics.median(per_long) / statistics.median(per_short)
        label = {"dict": "dict callables", "python": "named .py steps", "shell": "named $(echo) steps"}[kind]
        b.add(Figure(f"flat_{kind}", f"per step at {long_n:,} steps ÷ at {short_n:,}, {label} (tmpfs)", "×",
                     [ratio], target="≤ 1.2×", limit=1.2, limit_of="value",
                     note=f"{statistics.median(per_short) * 1e3:.3f} ms/step at {short_n:,}, "
                          f"{statistics.median(per_long) * 1e3:.3f} ms/step at {long_n:,}"))
        shutil.rmtree(home.parent, ignore_errors=True)

    # fsyncs per step on the real disk
    strace = shutil.which("strace")
    n = b.sizes.fsync_steps
    path = yaml_steps(n, "shell")
    if strace is None:
        print("  fsync count skipped: strace is not installed (apt-get install strace)", file=sys.stderr)
        return
    one = yaml_steps(1, "shell")
    home = b.scenario_dir("fsync") / "home"
    env = b.env(home)
    run_proc(["-m", "roast", "execute", str(one)], env, work)

    def fsyncs(workflow: Path) -> int:
        out = work / "strace.txt"
        subprocess.run([strace, "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out), sys.executable, "-m",
                        "roast", "execute", str(workflow)], env=env, cwd=work, capture_output=True, timeout=900,
                       check=False)
        calls = 0
        for line in out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync") and len(parts) >= 5:
                calls += int(parts[3])
        return calls

    base, total = fsyncs(one), fsyncs(path)
    b.add(Figure("fsync_per_step", f"fsyncs per step on disk ({n:,} $(echo) steps, counted with strace)",
                 "fsync/step", [(total - base) / (n - 1)], target="≤ 1", limit=1.0, limit_of="value",
                 note=f"{total} fsyncs for {n:,} steps, {base} for 1 step (create, finish, start-up); one fsync on "
                      f"the store disk takes {b.meta.get('fsync_ms_base', 0):.2f} ms"))


# --------------------------------------------------------------------------- report


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1e3:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "bytes":
        return f"{value:,.0f} B"
    if unit == "µs/step":
        return f"{value:,.1f} µs/step" if value < 1000 else f"{value / 1e3:,.2f} ms/step"
    if unit == "ms/step":
        return f"{value:,.2f} ms/step"
    if unit == "×":
        return f"{value:.2f}×"
    return f"{value:g} {unit}"


def judge(figures: list[Figure], floor: float) -> None:
    """Ratios use the floor runs interleaved with the figure's own runs when there are any."""
    by_key = {f.key: f for f in figures}
    for f in figures:
        local = statistics.median(f.floor) if f.floor else floor
        if f.totals:
            f.ratio = statistics.median(f.totals) / local
        if f.cpu and f.floor_cpu:
            f.cpu_ratio = statistics.median(f.cpu) / statistics.median(f.floor_cpu)
        if f.limit is None:
            continue
        checks: list[tuple[float, float, str]] = []  # measured, allowed, what
        if f.limit_of == "value":
            checks.append((f.median, f.limit, "limit"))
        elif f.limit_of == "floor":
            checks.append((f.median, f.limit * local, "floor limit"))
        else:
            checks.append((f.median, f.limit * by_key[f.limit_of].median, f"{f.limit_of} limit"))
        if f.key == "resume_long":  # two targets: vs the floor and vs the short resume
            checks.append((f.median, 1.3 * local, "floor limit"))
        misses = [f"{m / a:.2f}× the {what}" for m, a, what in checks if m > a]
        f.ok = not misses
        f.miss = ", ".join(misses)


def table(figures: list[Figure]) -> str:
    rows = [("figure", "n", "median", "min", "max", "×floor", "cpu", "cpu×floor", "target", "")]
    for f in figures:
        verdict = "" if f.ok is None else ("ok" if f.ok else f"MISS ({f.miss})")
        rows.append((f.label, str(len(f.samples)), _fmt(f.median, f.unit), _fmt(min(f.samples), f.unit),
                     _fmt(max(f.samples), f.unit), "" if f.ratio is None else f"{f.ratio:.2f}×",
                     _fmt(statistics.median(f.cpu), "s") if f.cpu else "",
                     "" if f.cpu_ratio is None else f"{f.cpu_ratio:.2f}×", f.target, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j in (0, 8, 9) else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {f.key}: {f.note}" for f in figures if f.note]
    return "\n".join(lines) + ("\n\nnotes:\n" + "\n".join(notes) if notes else "")


SCENARIOS: dict[str, Callable[[Bench], Any]] = {
    "per-step": scenario_per_step,
    "durable": scenario_durable,
    "resume": scenario_resume,
    "loop": scenario_loop,
    "sessions": scenario_sessions,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (< 1 min)")
    parser.add_argument("--base", metavar="DIR",
                        help="where the measured ROAST_HOMEs live (default: the system temp dir)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[],
                        help="run only these scenarios after the start-up one (repeatable; default: all)")
    parser.add_argument("--output", metavar="FILE", default=str(BENCH / "results" / "latest.json"),
                        help="where to write the JSON results (default: bench/results/latest.json)")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="roast-bench-", dir=args.base))
    shm = tmpfs_dir()
    fast_root = Path(tempfile.mkdtemp(prefix="roast-bench-build-", dir=shm)) if shm else root
    b = Bench(sizes, root, fast_root, args.quick)
    began = time.perf_counter()
    print(f"roast bench ({'quick' if args.quick else 'full'}) in {root}", file=sys.stderr, flush=True)
    try:
        b.meta = {
            "mode": "quick" if args.quick else "full", "sizes": sizes.__dict__,
            "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
            "cpus": os.cpu_count(), "roast": roast.__version__, "roast_path": ROAST_ROOT,
            "commit": _git_commit(), "base": str(root), "build_base": str(fast_root),
            "fsync_ms_base": round(fsync_ms(root), 3),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        floor = scenario_startup(b)
        for name, fn in SCENARIOS.items():
            if not args.only or name in args.only:
                print(f"scenario {name}…", file=sys.stderr, flush=True)
                fn(b)
        # the floor again at the end: if it drifted, the ratios above are suspect
        env = b.env(root / "home-end")
        end, end_cpu = [], []
        for _ in range(sizes.proc_runs):
            end.append(run_proc(["-c", FLOOR_CODE], env, root)[0])
            end_cpu.append(LAST_CPU[0])
        b.add(Figure("floor_end", "import floor again, at the end (drift check)", "s", end, end, cpu=end_cpu))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if fast_root != root:
            shutil.rmtree(fast_root, ignore_errors=True)
    judge(b.figures, floor)
    b.meta["seconds"] = round(time.perf_counter() - began, 1)
    text = table(b.figures)
    print(text)
    print(f"\nfloor {floor * 1e3:.0f} ms; fsync on the store disk {b.meta['fsync_ms_base']:.2f} ms; "
          f"took {b.meta['seconds']:.0f} s", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": b.meta, "floor_s": floor, "figures": [
        {"key": f.key, "label": f.label, "unit": f.unit, "n": len(f.samples), "median": f.median,
         "min": min(f.samples), "max": max(f.samples), "samples": f.samples,
         "total_s_median": statistics.median(f.totals) if f.totals else None,
         "cpu_s_median": statistics.median(f.cpu) if f.cpu else None, "cpu_s": f.cpu or None,
         "cpu_ratio_to_floor": f.cpu_ratio,
         "floor_s_median": statistics.median(f.floor) if f.floor else floor, "ratio_to_floor": f.ratio,
         "target": f.target or None, "ok": f.ok, "miss": f.miss or None, "note": f.note or None}
        for f in b.figures]}
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
