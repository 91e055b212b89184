"""The reading half of the session store written once (`roast.sql` is the writing half): the
five-method `Tx`, rows turned into records, and every query of the `SessionStore` — a session by id
or prefix, its history and events, listings, the worker's queues (overdue, orphans, notices due),
saved state and definitions, and `dump()` for `roast store copy`.

SQL is written with `?` placeholders and named columns only. Must not import yaml or rich:
`roast sessions` starts up through this module.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence

from roast import seal, settings
from roast.errors import RoastError, UsageError
from roast.migrations import TABLE_COLUMNS
from roast.outcomes import missing
from roast.store import (
    ACCEPTED,
    COUNT_CAP,
    OPEN,
    STATUSES,
    Continuation,
    EventRecord,
    Session,
    StepRecord,
    WaitTimer,
    check_id,
    running_here,
    this_owner,
    when,
)

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

if TYPE_CHECKING:
    import builtins
    from contextlib import AbstractContextManager
    from typing import Any

    Row = Any  # sqlite3.Row or a psycopg dict row: read by column name only

COLUMNS = ("id, workflow_path, workflow_name, fingerprint, target, status, cursor, awaiting, deadline, "
           "wait_seq, attempt, created_at, updated_at, finished_at, error, output, final_output, reason, "
           "has_definition, cwd, declares, key, definition, owner, notify_pending, ahead, schemas, started_by, "
           "cancelled_by")
S_COLUMNS = ", ".join(f"s.{c} AS {c}" for c in COLUMNS.split(", "))  # of `sessions s` in a join
EVENT_COLUMNS = ("name, data, received_at, source, wait_seq, event_id, outcome, actor, reason, wait_path, "
                 "consumed_at, detail, id, verified, approvals")
_NO_LIMIT = 1 << 62  # LIMIT without a bound, in both dialects
# issue 25: the distinct workflow paths, one seek of `sessions_by_workflow` each (a skip scan), never
# a read of every session; both dialects take the same statement
_PATHS = ("WITH RECURSIVE paths(path) AS (SELECT min(workflow_path) FROM sessions UNION ALL "
          "SELECT (SELECT min(workflow_path) FROM sessions WHERE workflow_path > paths.path) FROM paths "
          "WHERE paths.path IS NOT NULL) SELECT path FROM paths WHERE path IS NOT NULL")
DEFINITIONS_KEPT = 64  # saved definitions a store keeps unsealed, by fingerprint (issue 25: a claim's)
OVERDUE_BATCH = 1000  # overdue() returns at most this many per call; the worker's next tick takes the rest (issue 25)


def marks(values: Sequence[object]) -> str:
    """`?, ?, ?`: the placeholders of an `IN (…)` list (never empty: the caller checks)."""
    return ", ".join("?" for _ in values)


def _like(text: str) -> str:
    """`text` inside a LIKE pattern with ESCAPE '!': its own %, _ and ! match only themselves."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def busy_timeout() -> float:
    """ROAST_BUSY_TIMEOUT: how long a write waits for another writer's lock, in seconds."""
    return settings.busy_timeout()


def _now(now: float | None) -> float:
    return time.time() if now is None else now


# ---------------------------------------------------------------------------------------------
# rows -> records

PAUSE_ENDED = "a pause ended (a sleep, or a retry's backoff)"  # the detail of such a `timeout` (issue 24)


def _json(text: str | None, empty: str) -> Any:
    """A JSON column's value; `empty` ("[]" or "{}") for NULL, and the empty ones without the parser
    (most of a session's lists are empty: issue 25, a claim reads the session four times)."""
    if not text or text == empty:
        return [] if empty == "[]" else {}
    return json.loads(text)


def _session(row: Row, orphaned: bool = False, holder: str | None = None) -> Session:
    output = row["output"]
    declares = tuple(_json(row["declares"], "[]"))
    return Session(row["id"], row["workflow_path"], row["workflow_name"], row["fingerprint"], row["target"],
                   row["status"], row["cursor"], _json(row["awaiting"], "[]"), row["deadline"],
                   int(row["wait_seq"]), int(row["attempt"]), row["created_at"], row["updated_at"],
                   row["finished_at"], row["error"], None if output is None else json.loads(output),
                   row["final_output"], row["reason"], bool(row["has_definition"]), orphaned, row["cwd"],
                   declares, row["key"], row["definition"], row["owner"], holder, bool(row["notify_pending"]),
                   tuple(_json(row["ahead"], "[]")) if row["ahead"] is not None else declares,
                   _json(row["schemas"], "{}"), row["started_by"], cancelled_by=row["cancelled_by"])


def _not_running_here(rows: Sequence[Row]) -> list[Row]:
    """`rows` without the sessions this very process runs (its owner text, and `running_here`): those
    are alive whatever their lock says, so a look for orphans neither probes their locks nor builds
    them (issue 25: 29 µs a session, and a busy server runs thousands between two looks)."""
    me = this_owner()
    return [r for r in rows if r["owner"] != me or not running_here(r["id"])]


def _event(row: Row) -> EventRecord:
    return EventRecord(row["name"], json.loads(row["data"]), row["received_at"], row["source"], row["wait_seq"],
                       row["event_id"], row["outcome"], row["actor"], row["reason"], row["wait_path"],
                       row["consumed_at"], row["detail"], row["id"], bool(row["verified"]),
                       json.loads(row["approvals"]) if row["approvals"] is not None else None)


def prior_where(session_id: str, event_id: str, workflow_scope: str | None) -> tuple[str, tuple[object, ...]]:
    """`FROM … WHERE …` of the accepted events (`e`) with this id (`Reads._prior`), and its parameters."""
    if workflow_scope is not None:
        return (f"FROM events e JOIN sessions s ON s.id = e.session_id WHERE e.event_id = ? AND s.workflow_path = ? "
                f"AND e.outcome IN ({marks(ACCEPTED)})", (event_id, workflow_scope, *ACCEPTED))
    return (f"FROM events e WHERE e.session_id = ? AND e.event_id = ? AND e.outcome IN ({marks(ACCEPTED)})",
            (session_id, event_id, *ACCEPTED))


class Tx:
    """One transaction (or a read connection) over a DB-API connection: the whole dialect surface
    for DML. A dialect's subclass rewrites the statement (`_sql`) or the parameters (`_params`)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _sql(self, sql: str) -> str:
        return sql

    def _params(self, params: Sequence[object]) -> Sequence[object]:
        return params

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute; return the number of rows it changed."""
        return int(self.conn.execute(self._sql(sql), self._params(params)).rowcount)

    def row(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return self.conn.execute(self._sql(sql), self._params(params)).fetchone()

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.conn.execute(self._sql(sql), self._params(params)).fetchall()

    def insert(self, sql: str, params: Sequence[object]) -> int:
        """Execute an INSERT; return the new row's id."""
        return int(self.conn.execute(self._sql(sql), self._params(params)).lastrowid)

    def batch(self, statements: Sequence[tuple[str, Sequence[object]]]) -> list[tuple[int, list[Row]]]:
        """Execute each (statement, parameters) in order; each one's (rows changed, rows returned),
        an INSERT's rows being `[{"id": the new row's id}]`. A dialect sends them all at once
        (PostgreSQL: one round trip, issue 25); here, one by one."""
        done: list[tuple[int, list[Row]]] = []
        for sql, params in statements:
            cur = self.conn.execute(self._sql(sql), self._params(params))
            rows = cur.fetchall() if cur.description else [{"id": cur.lastrowid}] if sql.startswith("INSERT") else []
            done.append((int(cur.rowcount), rows))
        return done


class Reads:
    """The queries of `SQLStore` (see the module docstring); the dialect supplies `_read`,
    `_sessions` (liveness) and the keys."""

    _skip_locked = ""  # PostgreSQL: rows being written right now are left to their writer
    _step_order = "rowid"
    _dump_order = {**dict.fromkeys(TABLE_COLUMNS, "rowid"), "deltas": "session_id, seq"}

    if TYPE_CHECKING:  # the dialect's part
        shared: bool
        _keys: seal.Keyring | None
        _definitions: dict[str, tuple[bytes, object]]  # load_definition's, by fingerprint

        def describe(self) -> str: ...
        def _write(self, session_id: str | None = None, *,
                   durable: bool = True) -> AbstractContextManager[Tx]: ...
        def _read(self) -> AbstractContextManager[Tx | None]: ...
        def _lock(self, tx: Tx, session_id: str) -> Row | None: ...  # the session row, locked for the write
        def _sessions(self, tx: Tx, rows: Sequence[Row]) -> list[Session]: ...  # with liveness
        def _own_keys(self, tx: Tx | None, *, signing: bool) -> seal.Keyring: ...  # none configured
        def hold(self, session_id: str, purpose: str = "roast") -> AbstractContextManager[None]: ...

    def _unheld(self, tx: Tx, rows: builtins.list[Row]) -> builtins.list[Row]:
        """The overdue rows no other process is claiming right now."""
        return rows

    def _keyring(self, tx: Tx | None, *, signing: bool) -> seal.Keyring:
        """The keys ROAST_KEY_FILE or ROAST_KEY name, else the dialect's own; kept once found."""
        if self._keys is None:
            keys = seal.configured_keys()
            self._keys = keys if keys is not None else self._own_keys(tx, signing=signing)
        return self._keys

    def _session_in(self, tx: Tx, session_id: str) -> Session:
        row = tx.row(f"SELECT {COLUMNS} FROM sessions WHERE id = ?", (session_id,))
        if row is None:
            raise missing(session_id)
        return self._sessions(tx, [row])[0]

    def _last_event(self, tx: Tx, session_id: str) -> tuple[str, float] | None:
        last = tx.row("SELECT name, received_at FROM events WHERE session_id = ? AND outcome = 'consumed' "
                      "ORDER BY id DESC LIMIT 1", (session_id,))
        return (last["name"], last["received_at"]) if last is not None else None

    def _prior(self, tx: Tx, session_id: str, event_id: str, workflow_scope: str | None) -> Row | None:
        """The first accepted event with this id: of the session, or (`workflow_scope`) of the workflow."""
        where, args = prior_where(session_id, event_id, workflow_scope)
        return tx.row(f"SELECT e.session_id, e.digest, {', '.join('e.' + c for c in EVENT_COLUMNS.split(', '))} "
                      f"{where} ORDER BY e.id LIMIT 1", args)

    def _decided(self, tx: Tx, sessions: builtins.list[Session]) -> builtins.list[Session]:
        """Fill in `decided` of the finished sessions: the event their last wait took, or `timed out`
        (a pause that ended is not a decision; a retry's replacement data neither). Issue 24."""
        ids = [s.id for s in sessions if s.status in ("completed", "failed", "timed_out")]
        last: dict[str, str] = {}
        for part in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            for r in tx.rows(f"SELECT session_id, name FROM events WHERE session_id IN ({marks(part)}) AND "
                             "outcome = 'consumed' AND source <> 'retry' AND COALESCE(detail, '') <> ? ORDER BY id",
                             (*part, PAUSE_ENDED)):
                last[r["session_id"]] = "timed out" if r["name"] == "timeout" else r["name"]
        return [s._replace(decided="timed out" if s.status == "timed_out" else last.get(s.id))
                if s.id in last or s.status == "timed_out" else s for s in sessions]

    def get(self, id_or_prefix: str) -> Session:
        """The session with this id, or the only one whose id starts with it (like git's short SHAs)."""
        from roast.errors import Ambiguous

        check_id(id_or_prefix)
        with self._read() as tx:
            rows = [] if tx is None else tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE id = ?", (id_or_prefix,))
            if tx is not None and not rows:
                # A range query, never LIKE: '_' is a LIKE wildcard and LIKE ignores case (§5 row 4).
                rows = tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE id >= ? AND id < ? "
                               "ORDER BY created_at DESC LIMIT 11", (id_or_prefix, id_or_prefix + "{"))
            if not rows:
                raise missing(id_or_prefix)
            if len(rows) > 1:
                shown = [f"{r['id']} {r['status']} {r['workflow_name']} (created {when(r['created_at'])})"
                         for r in rows[:10]]
                more = "\n  and more" if len(rows) > 10 else ""
                raise Ambiguous(f"session id prefix {id_or_prefix!r} is ambiguous; the candidates are:\n  "
                                + "\n  ".join(shown) + more, hint="give more characters of the id")
            assert tx is not None
            return self._sessions(tx, rows)[0]

    def history(self, session_id: str) -> list[StepRecord]:
        sid = self.get(session_id).id
        with self._read() as tx:
            assert tx is not None  # get() found the session
            rows = tx.rows("SELECT path, name, attempt, started_at, finished_at, status, output, pgid, host, error "
                           f"FROM steps WHERE session_id = ? ORDER BY {self._step_order}", (sid,))
        return [StepRecord(r["path"], r["name"], r["attempt"], r["started_at"], r["finished_at"], r["status"],
                           r["output"], r["pgid"], r["host"], r["error"]) for r in rows]

    def events(self, session_id: str) -> list[EventRecord]:
        sid = self.get(session_id).id
        with self._read() as tx:
            assert tx is not None
            rows = tx.rows(f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? ORDER BY id", (sid,))
        return [_event(r) for r in rows]

    def _select(self, where: str, args: Sequence[object], order: str = "") -> list[Session]:
        with self._read() as tx:
            if tx is None:
                return []
            return self._sessions(tx, tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE {where} {order}", args))

    def waiting_for(self, workflow_path: str) -> list[Session]:
        """Waiting sessions of one workflow, newest first (`roast resume` without --session-id)."""
        return self._select("workflow_path = ? AND status = 'waiting'", (workflow_path,),
                            "ORDER BY created_at DESC, id DESC")

    def open_of(self, workflow_path: str, *, ahead: str | None = None, limit: int | None = None) -> list[Session]:
        """Waiting and running sessions of one workflow, newest first. `ahead` (issue 25): only those
        whose later waits (`ahead`, else `declares`) name that event — a filter in the database that
        may let a few more through, never fewer (the caller checks `Session.ahead`); `limit`: at most."""
        where, args = ["workflow_path = ?"], [workflow_path]
        if ahead is not None:
            where.append("COALESCE(ahead, declares) LIKE ? ESCAPE '!'")
            args.append(f"%{_like(json.dumps(ahead))}%")
        if limit is None:
            return self._select(" AND ".join([*where, "status IN ('waiting', 'running')"]), args,
                                "ORDER BY created_at DESC, id DESC")
        with self._read() as tx:  # one indexed query per status, merged (as the open-first listing)
            return [] if tx is None else self._sessions(tx, self._newest(tx, where, args, ("waiting", "running"), limit))

    def workflow_paths(self, workflow: str) -> list[str]:
        """The workflow paths in the store that `workflow` names: the path itself, the workflow's `name:`
        or its directory's name (issue 25: read a distinct path at a time, not every session)."""
        import os

        with self._read() as tx:
            if tx is None:
                return []
            found = []
            for row in tx.rows(_PATHS, ()):
                path = row["path"]
                if workflow not in (path, os.path.basename(os.path.dirname(path))):
                    named = tx.row("SELECT workflow_name FROM sessions WHERE workflow_path = ? LIMIT 1", (path,))
                    if named is None or named["workflow_name"] != workflow:
                        continue
                found.append(path)
            return found

    def soonest_waiting(self, limit: int) -> list[Session]:
        """At most `limit` waiting sessions, soonest deadline first, then some without a deadline: the
        inbox's gates (issue 25: two ranges of `sessions_by_deadline`, never every waiting session)."""
        with self._read() as tx:
            if tx is None:
                return []
            rows = tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE status = 'waiting' AND deadline IS NOT NULL "
                           "ORDER BY deadline LIMIT ?", (limit,))
            if len(rows) < limit:
                rows += tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE status = 'waiting' AND deadline IS NULL "
                                "LIMIT ?", (limit - len(rows),))
            return self._sessions(tx, rows)

    def with_key(self, workflow_path: str, key: str) -> list[Session]:
        """Open sessions of a workflow with this correlation key (issue 15), newest first."""
        return self._select("workflow_path = ? AND key = ? AND status IN ('waiting', 'running')",
                            (workflow_path, key), "ORDER BY created_at DESC")

    def notify_due(self) -> list[Session]:
        """Waiting sessions whose notify steps have not finished (a crash in between: at least once)."""
        return self._select("status = 'waiting' AND notify_pending <> 0", ())  # 2: claimed by a process that died

    def find_event(self, workflow_path: str, event_id: str) -> tuple[Session, EventRecord] | None:
        with self._read() as tx:
            if tx is None:
                return None
            row = self._prior(tx, "", event_id, workflow_path)
            if row is None:
                return None
            return self._session_in(tx, row["session_id"]), _event(row)

    def overdue(self, *, now: float | None = None) -> list[Session]:
        """Waiting sessions whose deadline has passed, earliest deadline first. A work queue that
        several hosts' ticks may read: rows being written right now and sessions another process
        holds (it is claiming them) are left to that process."""
        with self._read() as tx:
            if tx is None:
                return []
            rows = tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE status = 'waiting' AND deadline IS NOT NULL "
                           f"AND deadline <= ? ORDER BY deadline, id LIMIT {OVERDUE_BATCH}{self._skip_locked}",
                           (_now(now),))
            return self._sessions(tx, self._unheld(tx, rows))

    def orphans(self) -> list[Session]:
        """Running sessions whose process is gone."""
        with self._read() as tx:
            if tx is None:
                return []
            rows = tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE status = 'running' "
                           f"ORDER BY created_at, id{self._skip_locked}")
            return [s for s in self._sessions(tx, _not_running_here(rows)) if s.orphaned]

    def _state_rows(self, tx: Tx, session_id: str) -> tuple[Row | None, list[Row]]:
        """The session's wait number with its continuation (`wait_seq`, `envelope`) and its saved
        definition (`definition`, `definition_envelope`), and its deltas (a dialect may read less)."""
        return self._session_state_rows(tx, session_id)

    def _session_state_rows(self, tx: Tx, session_id: str) -> tuple[Row | None, list[Row]]:
        """`_state_rows` with every column of the session's row (a dialect may read them at once)."""
        row = tx.row(f"SELECT {S_COLUMNS}, c.envelope, f.envelope AS definition_envelope FROM sessions s LEFT JOIN "
                     "continuations c ON c.session_id = s.id LEFT JOIN definitions f ON f.fingerprint = s.definition "
                     "WHERE s.id = ?", (session_id,))
        return row, [] if row is None else \
            tx.rows("SELECT seq, envelope FROM deltas WHERE session_id = ? ORDER BY seq", (session_id,))

    def _state_rows_many(self, tx: Tx, session_ids: Sequence[str]) -> list[tuple[Row | None, list[Row]]]:
        """`_state_rows` of each session (a dialect may read them at once)."""
        return [self._state_rows(tx, sid) for sid in session_ids]

    def load_state(self, session: Session) -> Continuation:
        """Verify and unpickle the session's continuation and every delta after it, in order."""
        check_id(session.id)
        with self._read() as tx:
            if tx is None:
                raise missing(session.id)
            row, deltas = self._state_rows(tx, session.id)
        return self._unsealed(session, row, deltas)

    def get_state(self, session_id: str) -> tuple[Session, Continuation | RoastError]:
        """The session with this (whole) id and its state, read together (a claim under the session's
        lock, issue 25): the state, or why it cannot be used (for the caller to raise if it needs it)."""
        check_id(session_id)
        with self._read() as tx:
            row, deltas = (None, []) if tx is None else self._session_state_rows(tx, session_id)
            if row is None or tx is None:
                raise missing(session_id)
            session = self._sessions(tx, [row])[0]
        try:
            return session, self._unsealed(session, row, deltas)
        except RoastError as err:
            return session, err

    def load_states(self, sessions: Sequence[Session]) -> dict[str, Continuation | RoastError]:
        """`load_state` of each session, their rows read at once (a batch of `roast tick`, issue 25):
        each one's state, or why it cannot be used."""
        with self._read() as tx:
            if tx is None:
                return {s.id: missing(s.id) for s in sessions}
            rows = self._state_rows_many(tx, [check_id(s.id) for s in sessions])
        loaded: dict[str, Continuation | RoastError] = {}
        for session, (row, deltas) in zip(sessions, rows):
            try:
                loaded[session.id] = self._unsealed(session, row, deltas)
            except RoastError as err:
                loaded[session.id] = err
        return loaded

    def _unsealed(self, session: Session, row: Row | None, deltas: list[Row]) -> Continuation:
        if row is None or row["envelope"] is None:
            from roast.errors import StateRefused

            raise StateRefused(f"session {session.id} has no saved state (it is {session.status}); nothing can be "
                               "continued from it")
        keys = self._keyring(None, signing=False)
        seq_now = int(row["wait_seq"])
        base = seal.unseal(bytes(row["envelope"]), keys, bind=seal.session_bind(session.id, seq_now))
        changes = [seal.unseal(bytes(d["envelope"]), keys, bind=f"delta:{session.id}:wait:{seq_now}:{d['seq']}")
                   for d in deltas]
        blob = row["definition_envelope"]  # issue 25: read with the state, one round trip less a claim
        same = blob is not None and row["definition"] == session.definition
        return Continuation(base, changes, self._definition(row["definition"], bytes(blob)) if same else None)

    def has_definition(self, fingerprint: str) -> bool:
        with self._read() as tx:
            return tx is not None and tx.row("SELECT 1 AS one FROM definitions WHERE fingerprint = ?",
                                             (fingerprint,)) is not None

    def load_definition(self, fingerprint: str) -> object | None:
        with self._read() as tx:
            row = None if tx is None else tx.row("SELECT envelope FROM definitions WHERE fingerprint = ?",
                                                 (fingerprint,))
        return None if row is None else self._definition(fingerprint, bytes(row["envelope"]))

    def _definition(self, fingerprint: str, envelope: bytes) -> object:
        """A saved definition's envelope, verified and unpickled (once for the same bytes)."""
        kept = self._definitions.get(fingerprint)
        if kept is not None and kept[0] == envelope:  # issue 25: verified before, byte for byte
            return kept[1]
        found = seal.unseal(envelope, self._keyring(None, signing=False),
                            bind=f"definition:{fingerprint}", who=f"the saved definition {fingerprint[:12]}")
        if len(self._definitions) >= DEFINITIONS_KEPT:
            self._definitions.clear()
        self._definitions[fingerprint] = (envelope, found)
        return found

    def all_envelopes(self) -> Iterator[tuple[str, str, bytes]]:
        """Every sealed blob (table, key, envelope): for `roast store copy` and the token checks in tests."""
        with self._read() as tx:
            if tx is None:
                return
            for table, column in (("continuations", "session_id"), ("deltas", "session_id || ':' || seq"),
                                  ("definitions", "fingerprint")):
                for row in tx.rows(f"SELECT {column} AS k, envelope FROM {table}"):
                    yield table, str(row["k"]), bytes(row["envelope"])

    def dump(self) -> dict[str, builtins.list[dict[str, Any]]]:
        """Every row of every table, in SQLite's column order (envelopes as bytes), for `roast store copy`."""
        with self._read() as tx:
            if tx is None:
                return {}
            out: dict[str, builtins.list[dict[str, Any]]] = {}
            for table, columns in TABLE_COLUMNS.items():
                rows = tx.rows(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {self._dump_order[table]}")
                out[table] = [{c: bytes(r[c]) if isinstance(r[c], memoryview) else r[c] for c in columns}
                              for r in rows]
            return out

    def list(self, *, statuses: Sequence[str] = (), workflow: str | None = None,
             older_than: float | None = None, since: float | None = None, limit: int | None = 50,
             offset: int = 0, open_first: bool = False, now: float | None = None
             ) -> tuple[builtins.list[Session], int]:
        """A page of sessions, newest first (open ones first with `open_first`), and how many match:
        with a `limit`, counted up to COUNT_CAP + 1 at most (issue 25; more than COUNT_CAP: "100+").

        `workflow` matches the path or the name; `since` is an epoch (created at or after);
        `older_than` is seconds (last updated before now - older_than, as `prune` counts). The
        status `orphaned` means running sessions whose process is gone.
        """
        wanted = [*statuses]
        unknown = [s for s in wanted if s not in (*STATUSES, "orphaned")]
        if unknown:
            raise UsageError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUSES)}, orphaned")
        orphaned_only = "orphaned" in wanted and "running" not in wanted
        sql_statuses = sorted({"running" if s == "orphaned" else s for s in wanted})
        where: builtins.list[str] = []  # every filter but the status (the open-first page filters each itself)
        args: builtins.list[object] = []
        if workflow is not None:  # issue 25: the paths it names, then an indexed range of each
            paths = self.workflow_paths(workflow)
            if not paths:
                return [], 0
            where.append(f"workflow_path IN ({marks(paths)})")
            args.extend(paths)
        if older_than is not None:
            where.append("updated_at < ?")
            args.append(_now(now) - older_than)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        filters, filter_args = where, args
        if sql_statuses:
            where, args = [f"status IN ({marks(sql_statuses)})", *filters], [*sql_statuses, *filter_args]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        if open_first and limit is not None and not orphaned_only:  # issue 25: per-status indexed queries
            with self._read() as tx:
                if tx is None:
                    return [], 0
                total = self._count(tx, filters, filter_args, sql_statuses, by_status=workflow is None)
                page = self._open_first(tx, filters, filter_args, sql_statuses, limit, offset)
                return self._decided(tx, self._sessions(tx, page)), total
        order = "ORDER BY (status IN ('running', 'waiting', 'interrupted')) DESC, created_at DESC, id DESC" \
            if open_first else "ORDER BY created_at DESC, id DESC"
        with self._read() as tx:
            if tx is None:
                return [], 0
            if orphaned_only:
                rows = _not_running_here(tx.rows(f"SELECT {COLUMNS} FROM sessions {clause} {order}", args))
                found = [s for s in self._sessions(tx, rows) if s.orphaned]
                page = found[offset:] if limit is None else found[offset:offset + limit]
                return self._decided(tx, page), len(found)
            if limit is None:
                counted = tx.row(f"SELECT count(*) AS n FROM sessions {clause}", args)
                total = int(counted["n"] if counted else 0)
            else:
                total = self._count(tx, filters, filter_args, sql_statuses, by_status=workflow is None)
            rows = tx.rows(f"SELECT {COLUMNS} FROM sessions {clause} {order} LIMIT ? OFFSET ?",
                           (*args, _NO_LIMIT if limit is None else limit, offset))
            return self._decided(tx, self._sessions(tx, rows)), total

    # -- issue 25: queries bounded by an index and a LIMIT, whatever the number of sessions

    def _count(self, tx: Tx, filters: Sequence[str], filter_args: Sequence[object], statuses: Sequence[str],
               *, by_status: bool) -> int:
        """How many rows match, counted up to COUNT_CAP + 1 (more: the listing says "100+"), one
        status at a time. `by_status` (no workflow filter): each status is a range of
        sessions_by_status, in its order so that no other index gives that order. Planned freely, a
        count over `status IN (…)` took sessions_by_key on PostgreSQL, whose leading column is the
        workflow, and read every session of the workflows that sort first (issue 25: 1.4× at 1M); one
        over `status = ?` took sessions_by_created once the statistics changed, reading sessions of
        every status in the order they were made."""
        total = 0
        each: Sequence[str | None] = statuses or [None]
        for status in each:
            ranged = bool(status) and by_status  # `status = ?` would let the planner drop it from the order
            where = [*(["status >= ? AND status <= ?"] if ranged else ["status = ?"] if status else []), *filters]
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            order = "ORDER BY status, created_at, id" if ranged else ""
            row = tx.row(f"SELECT count(*) AS n FROM (SELECT 1 AS one FROM sessions {clause} {order} "
                         f"LIMIT {COUNT_CAP + 1 - total}) AS capped",
                         [*([status] * (2 if ranged else 1) if status else []), *filter_args])
            total += int(row["n"] if row else 0)
            if total > COUNT_CAP:
                break
        return total

    def waiting_page(self, workflow_path: str, *, before: tuple[float, str] | None = None,
                     limit: int = 100, event: str | None = None) -> builtins.list[Session]:
        """At most `limit` waiting sessions of one workflow, newest first, older than `before`
        (created_at, id) — the last one of the previous page (`sessions_by_workflow`). `event`:
        only those whose saved waits name it (a filter in the database that may let a few more
        through, never fewer: the caller checks `Session.events`)."""
        after = "" if before is None else " AND (created_at < ? OR (created_at = ? AND id < ?))"
        args: tuple[object, ...] = (workflow_path,) if before is None else (workflow_path, before[0], before[0], before[1])
        if event is not None:  # `awaiting` is json.dumps of the waits: '"event": "NAME"' is in its text
            after += " AND awaiting LIKE ? ESCAPE '!'"
            args += ("%" + _like('"event": ' + json.dumps(event)) + "%",)
        return self._select(f"workflow_path = ? AND status = 'waiting'{after}", (*args, limit),
                            "ORDER BY created_at DESC, id DESC LIMIT ?")

    def _newest(self, tx: Tx, where: Sequence[str], args: Sequence[object], statuses: Sequence[str],
                count: int) -> builtins.list[Row]:
        """The `count` newest rows with one of `statuses`: one query per status, each a range of
        `sessions_by_status` (SQLite's planner picks a worse index for `status IN (…)`), merged.

        The status is a range of one value, and leads the order: with `status = ?` PostgreSQL's
        planner, which cannot know that the newest sessions are often finished ones, read
        `sessions_by_created` backward past them (5.5 ms for a page at 1M with 9,000 newer finished;
        0.4 ms so, bench/scale.py): kept in the order, the status is served by sessions_by_status only."""
        rows: builtins.list[Row] = []
        for status in statuses:
            clause = " AND ".join([*where, "status >= ? AND status <= ?"])
            rows += tx.rows(f"SELECT {COLUMNS} FROM sessions WHERE {clause} ORDER BY status DESC, created_at DESC, "
                            "id DESC LIMIT ?", (*args, status, status, count))
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return rows[:count]

    def _open_first(self, tx: Tx, where: Sequence[str], args: Sequence[object], statuses: Sequence[str],
                    limit: int, offset: int) -> builtins.list[Row]:
        """A page of `list(open_first=True)`: open sessions newest first, then finished ones."""
        wanted = statuses or STATUSES
        opened = self._newest(tx, where, args, [s for s in wanted if s in OPEN], offset + limit)
        if len(opened) < offset + limit:
            opened += self._newest(tx, where, args, [s for s in wanted if s not in OPEN], offset + limit - len(opened))
        return opened[offset:offset + limit]

    # -- issue 23: the reminders and escalations due (the partial index `sessions_timer_due`)

    def timers_due(self, *, now: float, limit: int = 100, session_id: str | None = None) -> builtins.list[WaitTimer]:
        """At most `limit` waiting sessions whose next reminder or escalation is due, earliest first
        (only `session_id`, when given: `--wait` follows one session)."""
        one = "" if session_id is None else "id = ? AND "
        with self._read() as tx:
            if tx is None:
                return []
            rows = tx.rows("SELECT id, wait_seq, opened_at, reminded, escalated, timer_at FROM sessions WHERE "
                           f"{one}status = 'waiting' AND timer_at IS NOT NULL AND timer_at <= ? ORDER BY timer_at, id "
                           "LIMIT ?", (*([session_id] if session_id else []), now, limit))
        return [WaitTimer(r["id"], int(r["wait_seq"]), r["opened_at"], int(r["reminded"]), int(r["escalated"]),
                          r["timer_at"]) for r in rows]
