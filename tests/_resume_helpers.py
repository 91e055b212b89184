"""Helpers for tests/test_resume.py: the in-process CLI, row dumps of one session, polling.

The row helpers read whichever store the test runs on: the SQLite file in ROAST_HOME, or the
PostgreSQL database in ROAST_STORE (ROAST_TEST_STORE=postgres), in SQLite's column order."""
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


def _pg() -> str | None:
    url = os.environ.get("ROAST_STORE", "")
    return url if url.startswith(("postgresql://", "postgres://")) else None


def _pg_rows() -> dict[str, list[tuple[Any, ...]]]:
    from roast.store_postgres import PostgresStore

    dumped = PostgresStore(_pg() or "").dump()
    return {table: [tuple(row.values()) for row in dumped.get(table, [])] for table in TABLES}


def _sql(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL (`?` placeholders) on the test's store behind roast's back."""
    url = _pg()
    if url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            cur = db.execute(sql.replace("?", "%s"), params)
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cur.fetchall()] \
                if cur.description else []
    with contextlib.closing(sqlite3.connect(db_path())) as db, db:
        return db.execute(sql, params).fetchall()


def dump(session_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of `session_id` in every table, byte for byte (blobs as bytes), in rowid order."""
    if _pg():
        return {table: [r for r in rows if r[0 if table != "events" else 1] == session_id]
                for table, rows in _pg_rows().items()}
    with contextlib.closing(sqlite3.connect(db_path())) as db:
        return {table: db.execute(f"SELECT * FROM {table} WHERE {column} = ? ORDER BY rowid",
                                  (session_id,)).fetchall()
                for table, column in TABLES.items()}


def dump_all() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table."""
    if _pg():
        return _pg_rows()
    with contextlib.closing(sqlite3.connect(db_path())) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in TABLES}


def envelope(session_id: str) -> bytes:
    return bytes(_sql("SELECT envelope FROM continuations WHERE session_id = ?", (session_id,))[0][0])


def set_envelope(session_id: str, blob: bytes) -> None:
    _sql("UPDATE continuations SET envelope = ? WHERE session_id = ?", (blob, session_id))


def clone_session(source: str, new_id: str) -> None:
    """A copy of session `source`'s row under another id (to make two ids share a prefix)."""
    if _pg():
        from roast.store_postgres import TABLE_COLUMNS

        columns = list(TABLE_COLUMNS["sessions"])
    else:
        columns = [r[1] for r in _sql("PRAGMA table_info(sessions)")]
    _sql(f"INSERT INTO sessions ({', '.join(columns)}) SELECT "
         + ", ".join("?" if c == "id" else c for c in columns) + " FROM sessions WHERE id = ?", (new_id, source))


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
