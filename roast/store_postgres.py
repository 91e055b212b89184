"""The PostgreSQL session store (`ROAST_STORE=postgresql://user@host:port/dbname`): one store that
several hosts share, through psycopg 3 (`pip install 'roast-workflows[postgres]'`).

This is the dialect only: `roast.sql` writes every operation once, for both stores (with `?`
placeholders, rewritten here to psycopg's once per statement). Every write is one transaction
that first locks the session's row (`SELECT … FOR UPDATE`, or the compare-and-set itself), so
writers of one session queue up as SQLite's single writer would, and writers of different sessions
do not wait for each other; a claim is still the compare-and-set `UPDATE … WHERE status = 'waiting'
AND wait_seq = ?`. A lock wait longer than ROAST_BUSY_TIMEOUT (`lock_timeout`) is "busy".

Liveness is a session-level advisory lock (`pg_try_advisory_lock`), taken by `hold()` on this
thread's connection and held for the whole run: the server drops it when the process or its
connection dies. While it is held, every call of that thread uses that one connection, and a
broken one is never silently replaced (a replacement would not hold the lock): the call raises
StoreUnavailable and the session stays recoverable. A `holders` row names the holder for refusals
("roast resume (pid 123 on hostb)"). The signing key never lives in the database: it comes from
ROAST_KEY_FILE or ROAST_KEY (`seal.configured_keys`), and none is ever created here.

Schema changes are numbered migrations (`roast.migrations.POSTGRES`) applied under an advisory
lock. Text columns hold JSON as text, so what is read back is byte for byte what was written
(`roast store copy`). PostgreSQL text cannot hold NUL characters: a NUL in a step's output or a
message is stored as U+FFFD.

Must not import yaml or rich: `roast sessions` starts up through this module.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from roast import outcomes, seal
from roast.pg_errors import PgErrors, not_a_url
from roast.pg_tx import PgTx, clean, pg_sql
from roast.errors import NotWaiting, RoastError, StateRefused, StoreUnavailable
from roast.migrations import POSTGRES as MIGRATIONS, TABLE_COLUMNS
from roast.outcomes import Verdict
from roast.sql import COLUMNS, S_COLUMNS, SQLStore, Tx, _session
from roast.store import HOST, EventRecord, Incoming, Session, check_id, fault_point, mask_url, mine, process_alive, running_here
from roast.store import start_ticks

if TYPE_CHECKING:
    import builtins
    from typing import Any

    Row = dict[str, Any]

__all__ = ["MIGRATIONS", "TABLE_COLUMNS", "PostgresStore", "lock_key"]

_DEFAULT_CONNECT_TIMEOUT = "10"
# How long hold() waits for the server to drop the lock of a process on this host that is known to
# be dead (its backend notices the closed socket a moment after the kill).
_DEAD_HOLDER_WAIT = 10.0


_LIVE_LOCKS = (
    "SELECT (l.classid::int8 << 32) | l.objid::int8 AS lock_key, h.holder, h.host, h.pid, h.start "
    "FROM pg_locks l LEFT JOIN holders h ON h.backend_pid = l.pid "
    "AND h.lock_key = ((l.classid::int8 << 32) | l.objid::int8) "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((l.classid::int8 << 32) | l.objid::int8) = ANY(?::int8[])")


def _key(text: str) -> int:
    """A 63-bit advisory lock key (positive, so pg_locks' classid/objid give it back unchanged)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def lock_key(session_id: str) -> int:
    """The advisory lock that says session `session_id` is being run."""
    return _key(f"roast-session:{session_id}")


_MIGRATION_KEY = _key("roast-migrations")


def _rolled_back(store: str) -> StoreUnavailable:
    """PostgreSQL answered a COMMIT with ROLLBACK: a statement of the transaction had failed where no
    error reached the writer (a write group's read or lock, `roast.sql_group`). Nothing of it was
    kept, and nothing may be reported as done (issue 25)."""
    return StoreUnavailable(f"the session store {store} rolled the transaction back: one of its statements had "
                            "failed; nothing of it was written", hint="try again")


def _ended_by_server(conn: psycopg.Connection[Row]) -> bool:
    """True when an idle connection has something to read: roast never LISTENs, so that is the server
    ending it (a restart, a failover, pg_terminate_backend) — reused, its next statement would fail.
    One poll(0) of the socket; nothing is in flight on it, so a new connection loses nothing."""
    import select

    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _Local(threading.local):
    """This thread's connection: opened lazily, pinned while a hold() is active on it."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Row] | None = None
        self.pid = 0
        self.ready = False   # the schema was checked (and migrated) on this connection
        self.holds: dict[str, str] = {}  # session id -> holder text, held on self.conn
        self.stray: set[int] = set()  # lock keys a failed `_TAKE` may have left on self.conn
        self.later: list[str] = []  # sessions let go of inside a write group: at its end, at once


class PostgresStore(PgErrors, SQLStore):
    """The session store in a PostgreSQL database: cheap to construct, connects on first use, and
    creates its tables on the first write.

    >>> store = PostgresStore("postgresql://roast@db.internal:5432/roast")   # doctest: +SKIP
    >>> store.list()[1]                                                      # doctest: +SKIP
    0
    """

    shared = True
    read_only_view = False
    _skip_locked = " FOR UPDATE SKIP LOCKED"  # rows being written right now are left to their writer
    _step_order = "id"
    _dump_order = {"sessions": "created_at, id", "continuations": "session_id", "deltas": "session_id, seq",
                   "steps": "id", "events": "id", "definitions": "created_at, fingerprint"}
    _prune_tables = (("events", "session_id"), ("steps", "session_id"), ("deltas", "session_id"),
                     ("continuations", "session_id"), ("holders", "session_id"), ("sessions", "id"))

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:  # its text may quote the password (issue 21): not shown
            raise not_a_url(self.describe()) from None
        if any(c in str(params.get(k) or "") for k in ("host", "hostaddr", "port", "dbname") for c in "@#"):
            raise not_a_url(self.describe()) from None  # `p@ss#x@host`: libpq took part of the password as a host
        self._password = str(params.get("password") or "")
        self._params = params
        host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "")
        port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
        if not host or host.startswith("/"):
            where = f"{host or '/var/run/postgresql'}/.s.PGSQL.{port}"
        else:
            where = ",".join(f"{h}:{port}" for h in host.split(","))
        self.where = where  # host:port, never the password
        self.dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or "")
        self.user = str(params.get("user") or os.environ.get("PGUSER") or "")
        self._keys: seal.Keyring | None = None
        self._definitions: dict[str, tuple[bytes, object]] = {}
        self._local = _Local()
        # Every session some thread of this process holds through this store (pid, holder text).
        self._holding: dict[str, tuple[int, str]] = {}
        self._holding_lock = threading.Lock()
        self._delta_seq = {}
        self._groups, self._batch_holds = {}, {}

    def describe(self) -> str:
        return mask_url(self.url)

    # -- connections -----------------------------------------------------------------------------

    def _state(self) -> _Local:
        local = self._local
        if local.pid != os.getpid():
            # After a fork the parent's connection is not ours: forget it without closing it (closing
            # would end the parent's session, and with it the parent's locks).
            local.conn, local.pid, local.ready, local.holds = None, os.getpid(), False, {}
        return local

    def _connect(self) -> psycopg.Connection[Row]:
        timeout_ms = int(self._busy_timeout() * 1000)
        # The server drops a dead host's connection (and its locks) after about a minute, not the
        # kernel's two hours (tcp_keepalives_*; ignored on a unix socket).
        options = " ".join(filter(None, [str(self._params.get("options") or ""),
                                         f"-c lock_timeout={timeout_ms}", "-c tcp_keepalives_idle=30",
                                         "-c tcp_keepalives_interval=10", "-c tcp_keepalives_count=3"]))
        extra: dict[str, Any] = {"options": options}
        for name, value in (("connect_timeout", _DEFAULT_CONNECT_TIMEOUT), ("keepalives", "1"),
                            ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3"),
                            ("application_name", f"roast (pid {os.getpid()} on {HOST})"[:63])):
            if name not in self._params:
                extra[name] = value
        conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, **extra)
        return conn

    def _connection(self, *, write: bool) -> psycopg.Connection[Row] | None:
        """This thread's connection, schema checked; None for a read of a store with no tables yet."""
        local = self._state()
        conn = local.conn
        if conn is not None and (conn.closed or conn.broken):
            if local.holds:
                raise self._lost(None, next(iter(local.holds)))
            local.conn, local.ready = None, False
            conn = None
        if conn is not None and not local.holds and _ended_by_server(conn):
            local.conn, local.ready = None, False  # a restart while it was idle: connect afresh (issue 25)
            conn.close()
            conn = None
        if conn is None:
            try:
                conn = self._connect()
            except psycopg.Error as err:
                raise self._connect_error(err) from None
            local.conn, local.ready = conn, False
        if not local.ready:
            version = self._version(conn)
            if version == 0 and not write:
                return None  # reads create nothing
            if version != len(MIGRATIONS):
                self._migrate(conn)
            local.ready = True
        return conn

    def _version(self, conn: psycopg.Connection[Row]) -> int:
        try:
            row = conn.execute("SELECT max(version) AS v FROM roast_schema").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        version = int(row["v"] or 0) if row else 0
        if version > len(MIGRATIONS):
            raise StoreUnavailable(f"the session store {self.describe()} was written by a newer roast (schema "
                                   f"v{version}; this roast knows v{len(MIGRATIONS)}); nothing changed",
                                   hint="upgrade roast")
        return version

    def _migrate(self, conn: psycopg.Connection[Row]) -> None:
        latest = len(MIGRATIONS)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_KEY,))  # one migrator at a time
            conn.execute("CREATE TABLE IF NOT EXISTS roast_schema (version integer PRIMARY KEY, "
                         "applied_at double precision NOT NULL)")
            version = self._version(conn)  # another process may have migrated meanwhile
            for number in range(version + 1, latest + 1):
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO roast_schema (version, applied_at) VALUES (%s, %s)", (number, time.time()))

    def close(self) -> None:
        """Close this thread's connection (not while it holds a session: that would drop the lock)."""
        local = self._state()
        if local.conn is not None and not local.holds:
            conn, local.conn, local.ready = local.conn, None, False
            conn.close()

    @contextmanager
    def _write(self, session_id: str | None = None, *, durable: bool = True) -> Iterator[PgTx]:
        """One `BEGIN … COMMIT`; any error rolls it back and nothing changes. Inside a write group
        (`roast.sql_group`), the group's transaction instead."""
        group = self._joined()
        if group is not None:
            with group.write(session_id) as tx:
                yield tx
            return
        committing = False
        try:
            conn = self._connection(write=True)
            assert conn is not None
            fault_point()
            if durable:
                conn.execute("BEGIN")
            else:  # a commit that does not wait for the disk (spawned: a pgid does not outlive a crash)
                conn.execute("BEGIN; SET LOCAL synchronous_commit = off")
            try:
                yield PgTx(conn)
                fault_point()
                committing = True
                if conn.execute("COMMIT").statusmessage != "COMMIT":
                    raise _rolled_back(self.describe())
            except BaseException:
                if not committing and not conn.broken and not conn.closed:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        pass  # the connection failed: the server rolls back when it notices
                raise
            finally:
                if self._local.stray:
                    self._let_go_stray(conn)
                if self._local.later:  # a write group's sessions, held until it ended (`hold`)
                    later, self._local.later = self._local.later, []
                    self._unmark(conn, later)
        except psycopg.Error as err:
            self._forget_broken()
            raise self._store_error(err, session_id, committing) from None
        fault_point()

    @contextmanager
    def _read(self) -> Iterator[PgTx | None]:
        """A connection for reading, or None when the store has no tables yet (reads create nothing)."""
        try:
            conn = self._connection(write=False)
            yield None if conn is None else PgTx(conn)
        except psycopg.Error as err:
            self._forget_broken()
            raise self._store_error(err) from None

    def _forget_broken(self) -> None:
        local = self._state()
        if local.conn is not None and local.conn.broken and not local.holds:
            local.conn, local.ready = None, False  # a broken connection is not reused

    # -- keys ------------------------------------------------------------------------------------

    def _own_keys(self, tx: Tx | None, *, signing: bool) -> seal.Keyring:
        # issue 13: a shared store's key never lives in the database, and none is made implicitly.
        message = (f"the session store {self.describe()} is shared by several hosts, so roast keeps no signing "
                   "key in it and makes none: set ROAST_KEY_FILE (or ROAST_KEY) to the same key on every host; "
                   "nothing was signed or loaded")
        hint = "make one with `roast key new > roast.key && chmod 600 roast.key`, then set ROAST_KEY_FILE=roast.key"
        if signing:
            raise StoreUnavailable(message, hint=hint)
        raise StateRefused(message, hint=hint)

    # -- liveness --------------------------------------------------------------------------------

    def _holds_anywhere(self, session_id: str) -> str | None:
        """The holder text if any thread of this process holds the session through this store."""
        found = self._holding.get(session_id)
        return found[1] if found is not None and found[0] == os.getpid() else None

    def _live(self, tx: Tx, ids: Sequence[str]) -> dict[str, str]:
        """Which of these sessions some process holds (lock granted on the server), and by whom."""
        if not ids:
            return {}
        keys = {lock_key(sid): sid for sid in ids}
        found: dict[str, str] = {}
        for row in tx.rows(_LIVE_LOCKS, (list(keys),)):
            sid = keys.get(int(row["lock_key"]))
            if sid is None:
                continue
            if row["host"] == HOST and row["pid"] is not None and row["pid"] != os.getpid() \
                    and not process_alive(int(row["pid"]), row["start"]):
                continue  # its process died; the server drops the lock as soon as it notices
            found[sid] = row["holder"] or "another roast process"
        return found

    def _liveness(self, row: Row, live: dict[str, str]) -> tuple[bool, str | None]:
        """(orphaned, holder) of a running row: orphaned when no process holds its advisory lock and
        the owner recorded in the row is not this process."""
        if row["id"] in live:
            return False, live[row["id"]]
        here = self._holds_anywhere(row["id"])
        if here is not None:
            return False, here
        if mine(row["owner"]) and running_here(row["id"]):
            return False, f"this process (pid {os.getpid()})"
        return True, None  # (a drive of this very process that stopped on an error: recoverable here)

    def _sessions(self, tx: Tx, rows: Sequence[Row]) -> builtins.list[Session]:
        probe = [r["id"] for r in rows if r["status"] == "running" and self._holds_anywhere(r["id"]) is None]
        live = self._live(tx, probe)
        return [_session(r, *self._liveness(r, live)) if r["status"] == "running" else _session(r) for r in rows]

    @contextmanager
    def hold(self, session_id: str, purpose: str = "roast") -> Iterator[None]:
        """Hold the session's advisory lock for the whole run; the server drops it if we die.

        Take it *before* `create`/`deliver`/`take_over`, so a running session is never seen
        without its lock: `with store.hold(sid, "roast resume"): store.deliver(...); ...`.
        Inside a write group's open transaction it is let go of when the group ends, with the
        others of the group (one round trip), so never before the claim made under it commits.
        """
        if session_id in self._state().later:
            self.settle()  # let go of at the end of this thread's write group: end it first
        text = self._not_held_here(session_id, purpose)
        with self._errors():
            conn = self._connection(write=True)
            assert conn is not None
            self._lock_session(conn, session_id, lock_key(session_id), text)
        self._mark(session_id, text)
        try:
            yield
        finally:
            if self._joined() is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                self._state().later.append(session_id)  # issue 25: once the group's claims commit, all at once
            else:
                self._unmark(conn, [session_id])

    def hold_many(self, session_ids: Sequence[str], purpose: str) -> dict[str, RoastError | None]:
        """`hold` of each session until `let_go`: the locks and their holders rows taken in one round
        trip (issue 25); a session another process holds is tried once more alone, to say by whom."""
        got: dict[str, RoastError | None] = {}
        texts: dict[str, str] = {}
        for sid in session_ids:
            try:
                texts[sid] = self._not_held_here(sid, purpose)
            except NotWaiting as err:
                got[sid] = err
        with self._errors():
            conn = self._connection(write=True)
            assert conn is not None
            cur = conn.cursor()
            cur.executemany(_TAKE + _no_wait(conn) + " FROM got", [_take_params(sid, lock_key(sid), text)
                                                                  for sid, text in texts.items()], returning=True)
            for sid, text in texts.items():
                row = cur.fetchone()
                if row is None or not row["ok"]:
                    try:
                        self._lock_session(conn, sid, lock_key(sid), text)
                    except NotWaiting as err:
                        got[sid] = err
                        cur.nextset()
                        continue
                self._mark(sid, text)
                self._batch_holds[sid] = conn
                got[sid] = None
                cur.nextset()
        return got

    def let_go(self, session_ids: Sequence[str]) -> None:
        """Let go of sessions `hold_many` held (one round trip)."""
        held = [sid for sid in session_ids if sid in self._batch_holds]
        if held:
            self._unmark(self._batch_holds[held[0]], held)
            for sid in held:
                del self._batch_holds[sid]

    def _not_held_here(self, session_id: str, purpose: str) -> str:
        """The holder's text for a hold of the session; NotWaiting if this process holds it already."""
        check_id(session_id)
        mine = self._holds_anywhere(session_id)
        if mine is not None:  # the lock is reentrant on the server; a second run in this process is not
            raise NotWaiting(f"session {session_id} is being handled by {mine}; nothing changed",
                             hint="wait for it to finish or reach a wait, then try again")
        return f"{purpose} (pid {os.getpid()} on {HOST})"

    def _mark(self, session_id: str, text: str) -> None:
        self._state().holds[session_id] = text
        with self._holding_lock:
            self._holding[session_id] = (os.getpid(), text)
        self._delta_seq.pop(session_id, None)

    def _unmark(self, conn: psycopg.Connection[Row], session_ids: Sequence[str]) -> None:
        """Let go of the sessions' locks taken on `conn`, and of their holders rows."""
        local = self._state()
        for sid in session_ids:
            with self._holding_lock:
                self._holding.pop(sid, None)
            self._delta_seq.pop(sid, None)
            local.holds.pop(sid, None)
        if not conn.closed and not conn.broken:
            gone = [(sid, lock_key(sid)) for sid in session_ids]
            release = ("WITH gone AS (DELETE FROM holders WHERE session_id = %s AND backend_pid = pg_backend_pid()) "
                       "SELECT pg_advisory_unlock(%s::int8)" + _no_wait(conn))
            try:
                if len(gone) == 1:  # a pipeline costs more than one statement
                    conn.execute(release, gone[0])
                else:
                    conn.cursor().executemany(release, gone)
            except psycopg.Error:
                pass  # the connection failed: the server drops the locks with it
        if conn.broken or conn.closed:
            local.conn, local.ready = None, False  # the next call connects afresh

    def _lock_session(self, conn: psycopg.Connection[Row], session_id: str, key: int, text: str) -> None:
        """pg_try_advisory_lock, and the holders row that names us, in one statement; else NotWaiting.
        The row (and its deletion at the end of the hold) is committed without waiting for the disk:
        it only names the lock's holder, and a crash of the server that could lose it drops every
        advisory lock as well (issue 25: two fsyncs per session held cost more than firing it)."""
        deadline: float | None = None
        for _ in range(10_000):
            try:
                got = conn.execute(_TAKE + _no_wait(conn) + " FROM got", _take_params(session_id, key, text)).fetchone()
            except psycopg.Error:
                self._state().stray.add(key)  # the lock may be ours, its holders row not
                self._let_go_stray(conn)
                raise
            if got is not None and got["ok"]:
                return
            rows = conn.execute(pg_sql(_LIVE_LOCKS), ([key],)).fetchall()
            if not rows:
                continue  # released between the two statements: try again
            holder = rows[0]
            name = holder["holder"] or "another roast process"
            dead = holder["host"] == HOST and holder["pid"] is not None \
                and not process_alive(int(holder["pid"]), holder["start"])
            if not dead:
                raise NotWaiting(f"session {session_id} is being handled by {name}; nothing changed",
                                 hint="wait for it to finish or reach a wait, then try again")
            # A process on this host that has died: the server drops its lock as soon as it notices.
            deadline = deadline or time.monotonic() + _DEAD_HOLDER_WAIT
            if time.monotonic() > deadline:
                break
            self.settle()  # a batch's writes (roast.claiming) never keep their row locks while it waits
            time.sleep(0.01)
        raise NotWaiting(f"session {session_id} is still locked for a process that has ended; nothing changed",
                         hint="try again in a moment")

    def _let_go_stray(self, conn: psycopg.Connection[Row]) -> None:
        """Let go of the locks a failed `_TAKE` may have taken (its lock taken, its holders row refused,
        e.g. after a lock timeout): session locks outlive a rollback. Only once the connection is out
        of its transaction (a write group's ends with it), and never one a hold of this thread has."""
        local = self._state()
        if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return
        keys = list(local.stray - {lock_key(sid) for sid in local.holds})
        local.stray.clear()
        try:
            conn.execute(pg_sql(_LET_GO), (keys,))
        except psycopg.Error:
            pass  # the connection failed: the server drops its locks with it

    # -- the dialect's part of roast.sql ---------------------------------------------------------

    def _lock(self, tx: Tx, session_id: str) -> Row | None:
        """Lock the session's row for this transaction (writers of one session queue here)."""
        return tx.row(_LOCK_ROW, (session_id,))

    def _lock_many(self, tx: Tx, session_ids: Sequence[str]) -> builtins.list[Row | None]:
        # one statement for the batch, the rows locked in id order (as `fire_many` sorts them)
        if len(session_ids) < 2:
            return [self._lock(tx, sid) for sid in session_ids]
        found = {r["id"]: r for r in tx.rows(_LOCK_ROWS, (list(session_ids),))}
        return [found.get(sid) for sid in session_ids]

    def _consume(self, tx: Tx, session: Session, event: Incoming, verdict: Verdict, now: float,
                 approvals: builtins.list[dict[str, Any]] | None, guard: bool, scope: str | None,
                 moved: str | None) -> tuple[EventRecord, Row | None] | None:
        # the event and the compare-and-set in one statement: one round trip less a claim (issue 25)
        sql, params, record = self._event_insert(session.id, event, verdict, now, session.wait_seq, approvals, guard,
                                                 scope)
        flip = self._flip_params(session, now, outcomes.still_ahead(session, now, verdict.path), None, moved)
        row = tx.row(f"WITH ev AS ({sql} RETURNING id), {_CONSUMED}", (*params, *flip))
        if row is None or row["event_row"] is None:
            return None  # the event id was accepted before: nothing recorded, nothing flipped
        self._flipped(tx, session, row["id"] is not None, (event.name, verdict.path))
        return record._replace(row=int(row["event_row"])), row

    def _event_lock(self, tx: Tx, workflow_scope: str, event_id: str) -> None:
        # one workflow-wide check of an event id at a time (the session rows are locked one by one)
        tx.run("SELECT pg_advisory_xact_lock(?)", (_key(f"roast-event:{workflow_scope}:{event_id}"),))

    def _unheld(self, tx: Tx, rows: builtins.list[Row]) -> builtins.list[Row]:
        busy = self._live(tx, [r["id"] for r in rows if self._holds_anywhere(r["id"]) is None])
        return [r for r in rows if r["id"] not in busy]

    def _state_rows(self, tx: Tx, session_id: str) -> tuple[Row | None, builtins.list[Row]]:
        return _state_of(tx.row(_STATE, (session_id,)))

    def _session_state_rows(self, tx: Tx, session_id: str) -> tuple[Row | None, builtins.list[Row]]:
        return _state_of(tx.row(_SESSION_STATE, (session_id,)))

    def _state_rows_many(self, tx: Tx, session_ids: Sequence[str]) -> builtins.list[tuple[Row | None, builtins.list[Row]]]:
        found = {r["id"]: r for r in tx.rows(_STATES, (list(session_ids),))} if session_ids else {}
        return [_state_of(found.get(sid)) for sid in session_ids]

    def signing_keys(self) -> seal.Keyring:
        """The keys (for approval-link tokens, issue 15); a shared store never makes one."""
        return self._keyring(None, signing=True)


# pg_try_advisory_lock, and the holders row that names us, in one statement (`_lock_session`)
_TAKE = ("WITH got AS (SELECT pg_try_advisory_lock(%(key)s::int8) AS ok), "
         "mark AS (INSERT INTO holders (session_id, lock_key, holder, backend_pid, host, pid, start, since) "
         "SELECT %(sid)s, %(key)s::int8, %(holder)s, pg_backend_pid(), %(host)s, %(pid)s, %(start)s, %(now)s "
         "FROM got WHERE ok ON CONFLICT (session_id) DO UPDATE SET lock_key = EXCLUDED.lock_key, "
         "holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid, host = EXCLUDED.host, "
         "pid = EXCLUDED.pid, start = EXCLUDED.start, since = EXCLUDED.since) "
         "SELECT ok, set_config('application_name', %(app)s, false)")


_LET_GO = ("SELECT pg_advisory_unlock(l.k) FROM unnest(?::int8[]) AS l(k) WHERE EXISTS (SELECT 1 FROM pg_locks p "
           "WHERE p.locktype = 'advisory' AND p.objsubid = 1 AND p.pid = pg_backend_pid() AND p.granted "
           "AND ((p.classid::int8 << 32) | p.objid::int8) = l.k)")


def _take_params(session_id: str, key: int, text: str) -> dict[str, object]:
    return {"key": key, "sid": session_id, "holder": clean(text), "host": HOST, "pid": os.getpid(),
            "start": start_ticks(os.getpid()), "now": time.time(), "app": text[:63]}
# one statement, one snapshot: the continuation, its deltas and the wait number agree
_STATE = ("SELECT s.id, s.wait_seq, c.envelope, ARRAY(SELECT d.seq FROM deltas d WHERE d.session_id = s.id ORDER BY "
          "d.seq) AS seqs, ARRAY(SELECT d.envelope FROM deltas d WHERE d.session_id = s.id ORDER BY d.seq) AS blobs, "
          "s.definition, f.envelope AS definition_envelope FROM sessions s LEFT JOIN continuations c "
          "ON c.session_id = s.id LEFT JOIN definitions f ON f.fingerprint = s.definition WHERE s.id = ?")
_SESSION_STATE = _STATE.replace("SELECT s.id, s.wait_seq, ", f"SELECT {S_COLUMNS}, ")  # the row as well (`get_state`)
_STATES = _STATE.replace("WHERE s.id = ?", "WHERE s.id = ANY(?::text[])")  # a batch's states (`load_states`)


def _state_of(row: Row | None) -> tuple[Row | None, builtins.list[Row]]:
    return row, [] if row is None else [{"seq": q, "envelope": b} for q, b in zip(row["seqs"], row["blobs"])]
# `_consume`'s compare-and-set, handed the event `ev` inserted (and only if it was), with the row it left
_CONSUMED = ("up AS (" + SQLStore._FLIP.replace("COALESCE(?, pending_event)", "COALESCE(?, (SELECT id FROM ev))")
             + f" AND EXISTS (SELECT 1 FROM ev) RETURNING {COLUMNS}) SELECT (SELECT id FROM ev) AS event_row, up.* "
             "FROM (SELECT 1) AS one LEFT JOIN up ON true")
assert "(SELECT id FROM ev))" in _CONSUMED  # `_FLIP` still hands the runner its event that way
_LOCK_ROW = f"SELECT {COLUMNS}, pending_event, delta_seq FROM sessions WHERE id = ? FOR UPDATE"
_LOCK_ROWS = (f"SELECT {COLUMNS}, pending_event, delta_seq FROM sessions WHERE id = ANY(?::text[]) "
              'ORDER BY id COLLATE "C" FOR UPDATE')


def _no_wait(conn: psycopg.Connection[Row]) -> str:
    """A select-list item that lets the statement's own commit not wait for the disk (a holders row,
    see `_lock_session`); nothing inside an open transaction, whose commit must stay durable."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return ", set_config('synchronous_commit', 'off', true)"
    return ""
