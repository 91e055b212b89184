"""PostgreSQL's side of `roast.sql_reads.Tx` (issue 25): `?` placeholders rewritten once per statement
text, no NUL in text, an INSERT returning its id, and a batch sent in one round trip.

Knows psycopg, nothing of sessions; `roast.store_postgres` opens the transactions it wraps.
"""
from __future__ import annotations

import builtins
from collections.abc import Sequence

import psycopg

from roast.sql_reads import Tx

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    Row = dict[str, Any]

_STATEMENTS: dict[str, str] = {}


def clean(value: object) -> object:
    """PostgreSQL text cannot hold NUL: store U+FFFD instead (SQLite keeps the NUL)."""
    if type(value) is str and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class PgTx(Tx):
    """`?` placeholders become psycopg's `%s` (once per statement text), and every parameter
    passes `clean` (no NUL in text)."""

    __slots__ = ()

    def _sql(self, sql: str) -> str:
        return pg_sql(sql)

    def _params(self, params: Sequence[object]) -> Sequence[object]:
        return tuple(clean(v) for v in params)

    def insert(self, sql: str, params: Sequence[object]) -> int:
        row = self.row(_returning(sql), params)
        assert row is not None
        return int(row["id"])

    def batch(self, statements: Sequence[tuple[str, Sequence[object]]]) -> builtins.list[tuple[int, builtins.list[Row]]]:
        """All in one round trip: one statement many times as psycopg's `executemany` (pipelined),
        different ones in a pipeline. Each one's (rows changed, rows returned), in order."""
        if len(statements) < 2:  # none, or one: as `rows` would (a pipeline costs more than one statement)
            return [_result(self.conn.execute(pg_sql(_returning(sql)), self._params(p))) for sql, p in statements]
        conn, first = self.conn, statements[0][0]
        if all(sql == first for sql, _ in statements):
            merged = _per_session(first, statements)
            if merged is not None:  # one statement over every session, each one's count from RETURNING
                counts: dict[str, int] = {}
                for row in conn.execute(pg_sql(merged), ([p[0] for _, p in statements],)).fetchall():
                    counts[row["session_id"]] = counts.get(row["session_id"], 0) + 1
                return [(counts.get(str(p[0]), 0), []) for _, p in statements]
            cur = conn.cursor()
            cur.executemany(pg_sql(_returning(first)), [self._params(p) for _, p in statements], returning=True)
            done = []
            while True:
                done.append(_result(cur))
                if not cur.nextset():
                    return done
        with conn.pipeline():
            curs = [conn.execute(pg_sql(_returning(sql)), self._params(p)) for sql, p in statements]
        return [_result(c) for c in curs]


def _per_session(sql: str, statements: Sequence[tuple[str, Sequence[object]]]) -> str | None:
    """A DELETE or UPDATE whose one parameter is the session id, given for distinct sessions (the
    ends a write group defers, `roast.sql_group`): the same statement over all of them at once, the
    rows it changed returned by session. None: not of that form (sent as they are)."""
    if not sql.startswith(("DELETE FROM ", "UPDATE ")) or sql.count("?") != 1 or " WHERE session_id = ? " not in sql + " ":
        return None
    if any(len(p) != 1 for _, p in statements) or len({p[0] for _, p in statements}) != len(statements):
        return None
    return sql.replace(" WHERE session_id = ?", " WHERE session_id = ANY(?::text[])") + " RETURNING session_id"


def _returning(sql: str) -> str:
    """An INSERT returns its new row's id (`Tx.batch`)."""
    return sql + " RETURNING id" if sql.startswith("INSERT") else sql


def _result(cur: psycopg.Cursor[Row]) -> tuple[int, builtins.list[Row]]:
    """(rows changed, rows returned); whether it returned rows asked of libpq (psycopg's
    `description` builds a record of every column)."""
    rows = cur.pgresult is not None and cur.pgresult.status == psycopg.pq.ExecStatus.TUPLES_OK
    return int(cur.rowcount), cur.fetchall() if rows else []


def pg_sql(sql: str) -> str:
    """`roast.sql`'s statement with psycopg's placeholders (cached: rewritten once per text)."""
    found = _STATEMENTS.get(sql)
    if found is None:
        found = _STATEMENTS[sql] = sql.replace("%", "%%").replace("?", "%s")
    return found
