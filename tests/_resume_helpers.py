"""Helpers for tests/test_resume.py: the in-process CLI, row dumps of one session, polling."""
from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Ran

from roast.cli import main

TABLES = {"sessions": "id", "continuations": "session_id", "steps": "session_id", "events": "session_id"}




def cli(*args: str | os.PathLike[str]) -> Ran:
    """Run `roast ARGS` in this process (fast); use conftest.run_cli where a process matters."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


def ran(proc: Any) -> Ran:
    """A conftest.run_cli CompletedProcess as a Ran."""
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def db_path() -> Path:
    return Path(os.environ["ROAST_HOME"]) / "sessions.db"


def dump(session_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of `session_id` in every table, byte for byte (blobs as bytes), in rowid order."""
    with contextlib.closing(sqlite3.connect(db_path())) as db:
        return {table: db.execute(f"SELECT * FROM {table} WHERE {column} = ? ORDER BY rowid",
                                  (session_id,)).fetchall()
                for table, column in TABLES.items()}


def dump_all() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table."""
    with contextlib.closing(sqlite3.connect(db_path())) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in TABLES}


def envelope(session_id: str) -> bytes:
    with contextlib.closing(sqlite3.connect(db_path())) as db:
        return bytes(db.execute("SELECT envelope FROM continuations WHERE session_id = ?",
                                (session_id,)).fetchone()[0])


def set_envelope(session_id: str, blob: bytes) -> None:
    with contextlib.closing(sqlite3.connect(db_path())) as db, db:
        db.execute("UPDATE continuations SET envelope = ? WHERE session_id = ?", (blob, session_id))


def events_rows(session_id: str) -> list[tuple[Any, ...]]:
    return dump(session_id)["events"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def poll(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until `predicate()` holds (checked every 20 ms); fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def fill(template: str, **values: Path | str) -> str:
    """Replace `@KEY@` placeholders (e.g. `@LOG@`) in a workflow text; `{{ }}` stays as it is."""
    for key, value in values.items():
        template = template.replace(f"@{key}@", str(value))
    return template
