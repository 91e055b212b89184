"""The PostgreSQL session store (`ROAST_STORE=postgresql://user@host:port/dbname`): one store that
several hosts share, through psycopg 3 (`pip install 'roast[postgres]'`).

It behaves as `store_sqlite` does, method by method, and refuses in the same words (`roast.store`).
Every write is one transaction that first locks the session's row (`SELECT … FOR UPDATE`), so
writers of one session queue up as SQLite's single writer would, and writers of different sessions
do not wait for each other; a claim is still the compare-and-set `UPDATE … WHERE status = 'waiting'
AND wait_seq = %s`. A lock wait longer than ROAST_BUSY_TIMEOUT (`lock_timeout`) is "busy".

Liveness is a session-level advisory lock (`pg_try_advisory_lock`), taken by `hold()` on this
thread's connection and held for the whole run: the server drops it when the process or its
connection dies. While it is held, every call of that thread uses that one connection, and a
broken one is never silently replaced (a replacement would not hold the lock): the call raises
StoreUnavailable and the session stays recoverable. A `holders` row names the holder for refusals
("roast resume (pid 123 on hostb)"). The signing key never lives in the database: it comes from
ROAST_KEY_FILE or ROAST_KEY (`seal.configured_keys`), and none is ever created here.

Schema changes are numbered migrations applied under an advisory lock. Text columns hold JSON as
text, so what is read back is byte for byte what was written (`roast store copy`). PostgreSQL text
cannot hold NUL characters: a NUL in a step's output or a message is stored as U+FFFD.

Must not import yaml or rich: `roast sessions` starts up through this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from roast import seal
from roast.errors import NotWaiting, Refused, StateRefused, StoreUnavailable, UsageError
from roast.store import (
    ACCEPTED,
    FINISHED,
    STATUSES,
    Continuation,
    EventRecord,
    Incoming,
    NewSession,
    Outcome,
    Session,
    StepDone,
    StepRecord,
    StepStart,
    Suspended,
    check_id,
    fault_point,
    mask_url,
    missing,
    not_waiting,
    refusal,
    running_here,
    when,
)

if TYPE_CHECKING:
    import builtins
    from typing import Any

    Row = dict[str, Any]

_DEFAULT_BUSY_TIMEOUT = 5.0
_DEFAULT_CONNECT_TIMEOUT = "10"
# How long hold() waits for the server to drop the lock of a process on this host that is known to
# be dead (its backend notices the closed socket a moment after the kill).
_DEAD_HOLDER_WAIT = 10.0

# Numbered migrations, applied in order under an advisory lock and recorded in roast_schema. Never
# edit an entry that has shipped: append a new one. Column order follows SQLite's schema, so `dump()`
# rows of both stores line up.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: the schema of SQLite's migration 2 (roast 0.2), plus the holders of liveness locks
        """CREATE TABLE sessions (
            id text COLLATE "C" PRIMARY KEY,
            workflow_path text NOT NULL,
            workflow_name text NOT NULL,
            fingerprint text NOT NULL,
            target text,
            status text NOT NULL,
            cursor text,
            awaiting text NOT NULL DEFAULT '[]',
            deadline double precision,
            wait_seq integer NOT NULL DEFAULT 0,
            attempt integer NOT NULL DEFAULT 1,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            finished_at double precision,
            error text,
            output text,
            final_output text,
            reason text,
            has_definition integer NOT NULL DEFAULT 0,
            cwd text,
            declares text NOT NULL DEFAULT '[]',
            key text,
            definition text,
            owner text,
            pending_event bigint,
            delta_seq integer NOT NULL DEFAULT 0,
            notify_pending integer NOT NULL DEFAULT 0,
            ahead text,
            schemas text NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX sessions_by_status ON sessions(status, created_at)",
        "CREATE INDEX sessions_by_workflow ON sessions(workflow_path, status, created_at)",
        "CREATE INDEX sessions_by_deadline ON sessions(status, deadline)",
        "CREATE INDEX sessions_by_key ON sessions(workflow_path, key, status)",
        "CREATE INDEX sessions_by_created ON sessions(created_at)",
        """CREATE TABLE continuations (
            session_id text COLLATE "C" PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            envelope bytea NOT NULL
        )""",
        """CREATE TABLE steps (
            session_id text COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            path text NOT NULL,
            name text NOT NULL,
            attempt integer NOT NULL,
            started_at double precision NOT NULL,
            finished_at double precision,
            status text NOT NULL,
            output text,
            pgid integer,
            host text,
            error text,
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY
        )""",
        "CREATE INDEX steps_by_session ON steps(session_id, path, attempt)",
        """CREATE TABLE events (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            session_id text COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            wait_seq integer,
            name text NOT NULL,
            data text NOT NULL,
            received_at double precision NOT NULL,
            source text NOT NULL,
            event_id text,
            digest text,
            outcome text NOT NULL DEFAULT 'consumed',
            actor text,
            reason text,
            wait_path text,
            consumed_at double precision,
            detail text
        )""",
        "CREATE INDEX events_by_session ON events(session_id, outcome, id)",
        ("CREATE UNIQUE INDEX events_by_event_id ON events(session_id, event_id) "
         "WHERE event_id IS NOT NULL AND outcome IN ('consumed', 'queued', 'unconsumed')"),
        "CREATE INDEX events_by_any_id ON events(event_id) WHERE event_id IS NOT NULL",
        """CREATE TABLE deltas (
            session_id text COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq integer NOT NULL,
            envelope bytea NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        """CREATE TABLE definitions (
            fingerprint text COLLATE "C" PRIMARY KEY,
            envelope bytea NOT NULL,
            created_at double precision NOT NULL
        )""",
        # Who holds a session's advisory lock (for refusals). No foreign key: hold() comes before create().
        """CREATE TABLE holders (
            session_id text COLLATE "C" PRIMARY KEY,
            lock_key bigint NOT NULL,
            holder text NOT NULL,
            backend_pid integer NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            start text,
            since double precision NOT NULL
        )""",
    ),
]

# The columns of each table in SQLite's order (dump(), `roast store copy`).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": ("id", "workflow_path", "workflow_name", "fingerprint", "target", "status", "cursor", "awaiting",
                 "deadline", "wait_seq", "attempt", "created_at", "updated_at", "finished_at", "error", "output",
                 "final_output", "reason", "has_definition", "cwd", "declares", "key", "definition", "owner",
                 "pending_event", "delta_seq", "notify_pending", "ahead", "schemas"),
    "continuations": ("session_id", "envelope"),
    "deltas": ("session_id", "seq", "envelope"),
    "steps": ("session_id", "path", "name", "attempt", "started_at", "finished_at", "status", "output", "pgid",
              "host", "error"),
    "events": ("id", "session_id", "wait_seq", "name", "data", "received_at", "source", "event_id", "digest",
               "outcome", "actor", "reason", "wait_path", "consumed_at", "detail"),
    "definitions": ("fingerprint", "envelope", "created_at"),
}
_ORDER = {"sessions": "created_at, id", "continuations": "session_id", "deltas": "session_id, seq",
          "steps": "id", "events": "id", "definitions": "created_at, fingerprint"}

_COLUMNS = ("id, workflow_path, workflow_name, fingerprint, target, status, cursor, awaiting, deadline, "
            "wait_seq, attempt, created_at, updated_at, finished_at, error, output, final_output, reason, "
            "has_definition, cwd, declares, key, definition, owner, notify_pending, ahead, schemas")
_EVENT_COLUMNS = ("name, data, received_at, source, wait_seq, event_id, outcome, actor, reason, wait_path, "
                  "consumed_at, detail, id")
HOST = socket.gethostname()

_LIVE_LOCKS = (
    "SELECT (l.classid::int8 << 32) | l.objid::int8 AS lock_key, h.holder, h.host, h.pid, h.start "
    "FROM pg_locks l LEFT JOIN holders h ON h.backend_pid = l.pid "
    "AND h.lock_key = ((l.classid::int8 << 32) | l.objid::int8) "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((l.classid::int8 << 32) | l.objid::int8) = ANY(%s::int8[])")


def _key(text: str) -> int:
    """A 63-bit advisory lock key (positive, so pg_locks' classid/objid give it back unchanged)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def lock_key(session_id: str) -> int:
    """The advisory lock that says session `session_id` is being run."""
    return _key(f"roast-session:{session_id}")


_MIGRATION_KEY = _key("roast-migrations")


def _start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (/proc), to tell it from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is None:
        return True
    now = _start_ticks(pid)
    return now is None or now == start


_OWNER = json.dumps({"host": HOST, "pid": os.getpid(), "start": _start_ticks(os.getpid())})


def _me() -> str:
    """This process as the owner column records it (the same JSON as the SQLite store's)."""
    global _OWNER
    if json.loads(_OWNER)["pid"] != os.getpid():  # after a fork
        _OWNER = json.dumps({"host": HOST, "pid": os.getpid(), "start": _start_ticks(os.getpid())})
    return _OWNER


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _clean(value: object) -> object:
    """PostgreSQL text cannot hold NUL: store U+FFFD instead (SQLite keeps the NUL)."""
    if type(value) is str and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _params(values: Sequence[object]) -> tuple[object, ...]:
    return tuple(_clean(v) for v in values)


class _Local(threading.local):
    """This thread's connection: opened lazily, pinned while a hold() is active on it."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Row] | None = None
        self.pid = 0
        self.ready = False   # the schema was checked (and migrated) on this connection
        self.holds: dict[str, str] = {}  # session id -> holder text, held on self.conn


class PostgresStore:
    """The session store in a PostgreSQL database: cheap to construct, connects on first use, and
    creates its tables on the first write.

    >>> store = PostgresStore("postgresql://roast@db.internal:5432/roast")   # doctest: +SKIP
    >>> store.list()[1]                                                      # doctest: +SKIP
    0
    """

    shared = True
    read_only_view = False

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as err:
            raise UsageError(f"ROAST_STORE {self.describe()!r} is not a PostgreSQL URL ({_scrub(str(err), url)})",
                             hint="use postgresql://user@host:port/dbname") from None
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
        self._local = _Local()
        # Every session some thread of this process holds through this store (pid, holder text).
        self._holding: dict[str, tuple[int, str]] = {}
        self._holding_lock = threading.Lock()

    def describe(self) -> str:
        return re.sub(r"(password=)[^&\s]*", r"\1***", mask_url(self.url))

    # -- connections -----------------------------------------------------------------------------

    def _busy_timeout(self) -> float:
        raw = os.environ.get("ROAST_BUSY_TIMEOUT")
        if not raw:
            return _DEFAULT_BUSY_TIMEOUT
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            raise UsageError(f"ROAST_BUSY_TIMEOUT must be a number of seconds, not {raw!r}")
        return value

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

    # -- errors ----------------------------------------------------------------------------------

    def _lost(self, err: BaseException | None, session_id: str | None) -> StoreUnavailable:
        reason = _first_line(err, self.url) if err is not None else "the connection broke"
        what = f" while running session {session_id}" if session_id else ""
        return StoreUnavailable(f"lost the connection to the PostgreSQL session store at {self.where}{what} "
                                f"({reason}); nothing changed",
                                hint="check the server and the network, then try again")

    def _connect_error(self, err: BaseException) -> StoreUnavailable:
        """Why connecting failed, in one sentence naming host:port (and never the password)."""
        text = _first_line(err, self.url)
        low = text.lower()
        if "database" in low and "does not exist" in low:
            return StoreUnavailable(f"the PostgreSQL server at {self.where} has no database {self.dbname!r}; "
                                    "nothing changed",
                                    hint=f"create it (createdb {self.dbname}) or fix the database name in ROAST_STORE")
        if "authentication failed" in low or "no password supplied" in low or \
                ("role" in low and "does not exist" in low):
            return StoreUnavailable(f"the PostgreSQL server at {self.where} refused the login of user "
                                    f"{self.user!r} (authentication failed); nothing changed",
                                    hint="check the user and password in ROAST_STORE (or ~/.pgpass)")
        return StoreUnavailable(f"cannot reach the PostgreSQL session store at {self.where} ({text}); nothing "
                                "changed", hint="check that the server runs and that ROAST_STORE names it "
                                                "(postgresql://user@host:port/dbname)")

    def _store_error(self, err: BaseException, session_id: str | None = None,
                     committing: bool = False) -> StoreUnavailable:
        """Map a psycopg error on an open connection to one sentence naming the store, never the password."""
        text = _first_line(err, self.url)
        state = getattr(err, "sqlstate", None) or ""
        desc = self.describe()
        if state == "25006":
            return StoreUnavailable(f"the session store {desc} is read-only ({text}); nothing changed",
                                    hint="point ROAST_STORE at the primary server, or turn off "
                                         "default_transaction_read_only for this database")
        if state == "53100" or "no space left on device" in text.lower():
            what = f"could not save session {session_id}" if session_id else "could not write"
            return StoreUnavailable(f"{what} (disk full on the PostgreSQL server at {self.where}); nothing changed",
                                    hint="free some disk space on the database server and try again")
        if state in ("55P03", "40P01", "40001", "57014"):
            return StoreUnavailable(f"the session store {desc} is busy (another roast process has held a lock for "
                                    f"more than {self._busy_timeout():g} s); nothing changed, try again",
                                    hint="raise ROAST_BUSY_TIMEOUT (seconds) to wait longer")
        broken = isinstance(err, psycopg.OperationalError) and (not state or state.startswith(("08", "57P")))
        if broken and committing:
            return StoreUnavailable(f"lost the connection to the PostgreSQL session store at {self.where} while "
                                    f"committing ({text}); the change may or may not have been saved",
                                    hint="`roast session ID` shows what was saved")
        if broken:
            return self._lost(err, session_id)
        return StoreUnavailable(f"the session store {desc} failed ({text}); nothing changed")

    @contextmanager
    def _errors(self, session_id: str | None = None) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as err:
            raise self._store_error(err, session_id) from None

    @contextmanager
    def _write(self, session_id: str | None = None, *, durable: bool = True) -> Iterator[_Tx]:
        """One `BEGIN … COMMIT`; any error rolls it back and nothing changes."""
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
                yield _Tx(self, conn)
                fault_point()
                committing = True
                conn.execute("COMMIT")
            except BaseException:
                if not committing and not conn.broken and not conn.closed:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        pass  # the connection failed: the server rolls back when it notices
                raise
        except psycopg.Error as err:
            self._forget_broken()
            raise self._store_error(err, session_id, committing) from None
        fault_point()

    @contextmanager
    def _read(self) -> Iterator[_Tx | None]:
        """A connection for reading, or None when the store has no tables yet (reads create nothing)."""
        try:
            conn = self._connection(write=False)
            yield None if conn is None else _Tx(self, conn)
        except psycopg.Error as err:
            self._forget_broken()
            raise self._store_error(err) from None

    def _forget_broken(self) -> None:
        local = self._state()
        if local.conn is not None and local.conn.broken and not local.holds:
            local.conn, local.ready = None, False  # a broken connection is not reused

    # -- keys ------------------------------------------------------------------------------------

    def _keyring(self, *, signing: bool) -> seal.Keyring:
        if self._keys is not None:
            return self._keys
        keys = seal.configured_keys()
        if keys is None:
            # issue 13: a shared store's key never lives in the database, and none is made implicitly.
            message = (f"the session store {self.describe()} is shared by several hosts, so roast keeps no signing "
                       "key in it and makes none: set ROAST_KEY_FILE (or ROAST_KEY) to the same key on every host; "
                       "nothing was signed or loaded")
            hint = "make one with `roast key new > roast.key && chmod 600 roast.key`, then set ROAST_KEY_FILE=roast.key"
            if signing:
                raise StoreUnavailable(message, hint=hint)
            raise StateRefused(message, hint=hint)
        self._keys = keys
        return keys

    # -- liveness --------------------------------------------------------------------------------

    def _holds_anywhere(self, session_id: str) -> str | None:
        """The holder text if any thread of this process holds the session through this store."""
        found = self._holding.get(session_id)
        return found[1] if found is not None and found[0] == os.getpid() else None

    def _live(self, tx: _Tx, ids: Sequence[str]) -> dict[str, str]:
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
                    and not _process_alive(int(row["pid"]), row["start"]):
                continue  # its process died; the server drops the lock as soon as it notices
            found[sid] = row["holder"] or "another roast process"
        return found

    def _liveness(self, row: Row, live: dict[str, str]) -> tuple[bool, str | None]:
        """(orphaned, holder) of a running row: orphaned when no process holds its advisory lock and
        the owner recorded in the row is not this process."""
        if row["id"] in live:
            return False, live[row["id"]]
        mine = self._holds_anywhere(row["id"])
        if mine is not None:
            return False, mine
        owner = _owner(row["owner"])
        if owner and owner.get("host") == HOST and owner.get("pid") == os.getpid() and running_here(row["id"]):
            return False, f"this process (pid {os.getpid()})"
        return True, None  # (a drive of this very process that stopped on an error: recoverable here)

    def _sessions(self, tx: _Tx, rows: Sequence[Row]) -> list[Session]:
        probe = [r["id"] for r in rows if r["status"] == "running" and self._holds_anywhere(r["id"]) is None]
        live = self._live(tx, probe)
        return [_session(r, *self._liveness(r, live)) if r["status"] == "running" else _session(r) for r in rows]

    def _session_of(self, tx: _Tx, row: Row) -> Session:
        return self._sessions(tx, [row])[0]

    def _session_in(self, tx: _Tx, session_id: str) -> Session:
        row = tx.row(f"SELECT {_COLUMNS} FROM sessions WHERE id = %s", (session_id,))
        if row is None:
            raise missing(session_id)
        return self._session_of(tx, row)

    def _last_event(self, tx: _Tx, session_id: str) -> tuple[str, float] | None:
        last = tx.row("SELECT name, received_at FROM events WHERE session_id = %s AND outcome = 'consumed' "
                      "ORDER BY id DESC LIMIT 1", (session_id,))
        return (last["name"], last["received_at"]) if last is not None else None

    @contextmanager
    def hold(self, session_id: str, purpose: str = "roast") -> Iterator[None]:
        """Hold the session's advisory lock for the whole run; the server drops it if we die.

        Take it *before* `create`/`deliver`/`take_over`, so a running session is never seen
        without its lock: `with store.hold(sid, "roast resume"): store.deliver(...); ...`.
        """
        check_id(session_id)
        text = f"{purpose} (pid {os.getpid()} on {HOST})"
        mine = self._holds_anywhere(session_id)
        if mine is not None:  # the lock is reentrant on the server; a second run in this process is not
            raise NotWaiting(f"session {session_id} is being handled by {mine}; nothing changed",
                             hint="wait for it to finish or reach a wait, then try again")
        key = lock_key(session_id)
        local = self._state()
        with self._errors():
            conn = self._connection(write=True)
            assert conn is not None
            self._lock_session(conn, session_id, key, text)
        local.holds[session_id] = text
        with self._holding_lock:
            self._holding[session_id] = (os.getpid(), text)
        try:
            yield
        finally:
            with self._holding_lock:
                self._holding.pop(session_id, None)
            del local.holds[session_id]
            if not conn.closed and not conn.broken:
                try:
                    conn.execute("WITH gone AS (DELETE FROM holders WHERE session_id = %s AND backend_pid = "
                                 "pg_backend_pid()) SELECT pg_advisory_unlock(%s::int8)", (session_id, key))
                except psycopg.Error:
                    pass  # the connection failed: the server drops the lock with it
            if conn.broken or conn.closed:
                local.conn, local.ready = None, False  # the next call connects afresh

    def _lock_session(self, conn: psycopg.Connection[Row], session_id: str, key: int, text: str) -> None:
        """pg_try_advisory_lock, and the holders row that names us, in one statement; else NotWaiting."""
        deadline: float | None = None
        for _ in range(10_000):
            got = conn.execute(
                "WITH got AS (SELECT pg_try_advisory_lock(%(key)s::int8) AS ok), "
                "mark AS (INSERT INTO holders (session_id, lock_key, holder, backend_pid, host, pid, start, since) "
                "SELECT %(sid)s, %(key)s::int8, %(holder)s, pg_backend_pid(), %(host)s, %(pid)s, %(start)s, %(now)s "
                "FROM got WHERE ok ON CONFLICT (session_id) DO UPDATE SET lock_key = EXCLUDED.lock_key, "
                "holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid, host = EXCLUDED.host, "
                "pid = EXCLUDED.pid, start = EXCLUDED.start, since = EXCLUDED.since) "
                "SELECT ok, set_config('application_name', %(app)s, false) FROM got",
                {"key": key, "sid": session_id, "holder": _clean(text), "host": HOST, "pid": os.getpid(),
                 "start": _start_ticks(os.getpid()), "now": time.time(), "app": text[:63]}).fetchone()
            if got is not None and got["ok"]:
                return
            rows = conn.execute(_LIVE_LOCKS, ([key],)).fetchall()
            if not rows:
                continue  # released between the two statements: try again
            holder = rows[0]
            name = holder["holder"] or "another roast process"
            dead = holder["host"] == HOST and holder["pid"] is not None \
                and not _process_alive(int(holder["pid"]), holder["start"])
            if not dead:
                raise NotWaiting(f"session {session_id} is being handled by {name}; nothing changed",
                                 hint="wait for it to finish or reach a wait, then try again")
            # A process on this host that has died: the server drops its lock as soon as it notices.
            deadline = deadline or time.monotonic() + _DEAD_HOLDER_WAIT
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        raise NotWaiting(f"session {session_id} is still locked for a process that has ended; nothing changed",
                         hint="try again in a moment")

    # -- writes ----------------------------------------------------------------------------------

    def create(self, new: NewSession, state: object, *, definition: object | None = None,
               now: float | None = None) -> None:
        """Insert a `running` session with its first continuation sealed in the same transaction,
        so a session is never seen without something to recover from."""
        check_id(new.id)
        now = _now(now)
        payload, has_code = seal.dumps(state, f"session {new.id}")
        definition_bytes = seal.dumps(definition, "the workflow definition") if definition is not None else None
        keys = self._keyring(signing=True)
        with self._write() as tx:
            if tx.row("SELECT 1 AS one FROM sessions WHERE id = %s", (new.id,)):
                raise UsageError(f"session {new.id} already exists")
            tx.run("INSERT INTO sessions (id, workflow_path, workflow_name, fingerprint, target, status, awaiting, "
                   "wait_seq, attempt, created_at, updated_at, has_definition, cwd, declares, key, definition, owner, "
                   "cursor, ahead, schemas) VALUES (%s, %s, %s, %s, %s, 'running', '[]', 0, 1, %s, %s, %s, %s, %s, "
                   "%s, %s, %s, 'start', %s, %s)",
                   (new.id, new.workflow_path, new.workflow_name, new.fingerprint, new.target, now, now,
                    int(new.has_definition), new.cwd, json.dumps(list(new.declares)), new.key, new.definition, _me(),
                    json.dumps(list(new.declares)), json.dumps(dict(new.schemas))))
            tx.run("INSERT INTO continuations (session_id, envelope) VALUES (%s, %s)",
                   (new.id, seal.envelope(payload, has_code, keys, bind=seal.session_bind(new.id, 0), now=now)))
            if definition_bytes is not None and new.definition:
                self._put_definition(tx, keys, new.definition, definition_bytes, now)

    def _put_definition(self, tx: _Tx, keys: seal.Keyring, fingerprint: str, payload: tuple[bytes, bool],
                        now: float) -> None:
        if tx.row("SELECT 1 AS one FROM definitions WHERE fingerprint = %s", (fingerprint,)):
            return
        blob = seal.envelope(payload[0], payload[1], keys, bind=f"definition:{fingerprint}", now=now)
        tx.run("INSERT INTO definitions (fingerprint, envelope, created_at) VALUES (%s, %s, %s) "
               "ON CONFLICT (fingerprint) DO NOTHING", (fingerprint, blob, now))

    def _lock(self, tx: _Tx, session_id: str) -> Row | None:
        """Lock the session's row for this transaction (writers of one session queue here)."""
        return tx.row(f"SELECT {_COLUMNS}, pending_event, delta_seq FROM sessions WHERE id = %s FOR UPDATE",
                      (session_id,))

    def _running(self, tx: _Tx, session_id: str, what: str) -> Row:
        row = self._lock(tx, session_id)
        if row is None:
            raise missing(session_id)
        if row["status"] != "running":
            raise refusal(self._session_of(tx, row), what, self._last_event(tx, session_id))
        return row

    def advance(self, session_id: str, *, changes: object | None, cursor: str | None,
                finished: Sequence[StepDone] = (), start: StepStart | None = None, delivered: bool = False,
                now: float | None = None) -> int:
        """One step's transaction: the history rows of the steps that finished, the changes since the
        last save (a delta, sealed), the cursor, and the start row of the next step; returns that
        step's attempt number (0 without `start`)."""
        now = _now(now)
        payload = seal.dumps(changes, f"session {session_id}") if changes is not None else None
        keys = self._keyring(signing=True) if payload is not None else None
        with self._write(session_id) as tx:
            row = self._running(tx, session_id, "cannot save a checkpoint of")
            _finish_steps(tx, session_id, finished)
            if payload is not None:
                assert keys is not None
                seq = int(row["delta_seq"]) + 1
                blob = seal.envelope(payload[0], payload[1], keys,
                                     bind=f"delta:{session_id}:wait:{row['wait_seq']}:{seq}", now=now)
                # one round trip: the delta and the session row it moves on
                tx.run("WITH delta AS (INSERT INTO deltas (session_id, seq, envelope) VALUES (%s, %s, %s)) "
                       "UPDATE sessions SET delta_seq = %s, cursor = COALESCE(%s, cursor), updated_at = %s, "
                       "pending_event = CASE WHEN %s THEN NULL ELSE pending_event END WHERE id = %s",
                       (session_id, seq, blob, seq, cursor, now, bool(delivered), session_id))
            attempt = 0
            if start is not None:
                started = tx.row("INSERT INTO steps (session_id, path, name, attempt, started_at, status) "
                                 "SELECT %s, %s, %s, count(*) + 1, %s, 'running' FROM steps "
                                 "WHERE session_id = %s AND path = %s RETURNING attempt",
                                 (session_id, start.path, start.name, start.started_at, session_id, start.path))
                attempt = int(started["attempt"]) if started else 0
        return attempt

    def spawned(self, session_id: str, path: str, attempt: int, pgid: int) -> None:
        """Record a step's process group, so recovery can refuse to start another attempt while it
        lives (issue 10). Committed without waiting for the disk: a process group does not outlive
        a crash of the server's machine either."""
        with self._write(session_id, durable=False) as tx:
            tx.run("UPDATE steps SET pgid = %s, host = %s WHERE session_id = %s AND path = %s AND attempt = %s",
                   (pgid, HOST, session_id, path, attempt))

    def suspend(self, session_id: str, state: object, *, cursor: str, awaiting: list[dict[str, Any]],
                output: dict[str, Any] | None = None, finished: Sequence[StepDone] = (),
                definition: tuple[str, object] | None = None, notify: bool = False,
                ahead: Sequence[str] = (), undelivered: bool = False, now: float | None = None) -> Suspended:
        """Running → waiting: seal the whole state (the deltas before it are dropped), the awaited
        events and the deadline. In the same transaction, the oldest queued event that a wait here
        declares is consumed at once (issue 14): then the session stays running and `taken` says
        which event the caller must deliver. `ahead`: the events later waits (not these) declare."""
        now = _now(now)
        payload = seal.dumps(state, f"session {session_id}")
        definition_bytes = None
        if definition is not None:
            definition_bytes = (definition[0], seal.dumps(definition[1], "the workflow definition"))
        names = [a["event"] for a in awaiting if a.get("event")]
        keys = self._keyring(signing=True)
        with self._write(session_id) as tx:
            row = self._running(tx, session_id, "cannot suspend")
            _finish_steps(tx, session_id, finished)
            wait_seq = int(row["wait_seq"]) + 1
            if row["pending_event"] is not None and undelivered:  # claimed, but no wait took it: back to the inbox
                tx.run("UPDATE events SET outcome = 'queued', wait_seq = NULL, wait_path = NULL, consumed_at = NULL "
                       "WHERE id = %s", (row["pending_event"],))
            envelope = seal.envelope(payload[0], payload[1], keys, bind=seal.session_bind(session_id, wait_seq),
                                     now=now)
            tx.run("INSERT INTO continuations (session_id, envelope) VALUES (%s, %s) "
                   "ON CONFLICT (session_id) DO UPDATE SET envelope = EXCLUDED.envelope", (session_id, envelope))
            tx.run("DELETE FROM deltas WHERE session_id = %s", (session_id,))
            if definition_bytes is not None:
                self._put_definition(tx, keys, definition_bytes[0], definition_bytes[1], now)
            taken = None
            if names:
                taken = tx.row(f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = %s AND outcome = 'queued' "
                               "AND name = ANY(%s) ORDER BY id LIMIT 1", (session_id, names))
            output_json = None if output is None else json.dumps(output, default=str)
            if taken is not None:
                wait = next(a for a in awaiting if a.get("event") == taken["name"])
                tx.run("UPDATE events SET outcome = 'consumed', wait_seq = %s, wait_path = %s, consumed_at = %s "
                       "WHERE id = %s", (wait_seq, wait["path"], now, taken["id"]))
                still = sorted(set(ahead) | {a["event"] for a in awaiting
                                             if a.get("event") and a["path"] != wait["path"]})
                tx.run("UPDATE sessions SET wait_seq = %s, delta_seq = 0, cursor = %s, updated_at = %s, "
                       "output = COALESCE(%s, output), pending_event = %s, attempt = attempt + 1, ahead = %s "
                       "WHERE id = %s",
                       (wait_seq, cursor, now, output_json, taken["id"], json.dumps(still), session_id))
                record = _event(taken)._replace(outcome="consumed", wait_seq=wait_seq, wait_path=wait["path"],
                                                consumed_at=now)
                return Suspended(wait_seq, record)
            deadlines = [w["deadline"] for w in awaiting if w.get("deadline") is not None]
            tx.run("UPDATE sessions SET status = 'waiting', wait_seq = %s, delta_seq = 0, awaiting = %s, "
                   "deadline = %s, cursor = %s, updated_at = %s, output = COALESCE(%s, output), pending_event = NULL, "
                   "notify_pending = %s, owner = NULL, ahead = %s WHERE id = %s",
                   (wait_seq, json.dumps(awaiting), min(deadlines) if deadlines else None, cursor, now,
                    output_json, int(notify), json.dumps(sorted(set(ahead))), session_id))
        return Suspended(wait_seq)

    def deliver(self, session_id: str, event: Incoming, *, if_waiting: bool = False, workflow_scope: str | None = None,
                holding: bool = True, workflow_path: str | None = None, wait_seq: int | None = None,
                now: float | None = None) -> Outcome:
        """Deliver one event (issue 14), in one transaction: `consumed` (claimed by the waiting wait:
        a compare-and-set on status and wait number, so exactly one of any number of concurrent
        deliveries wins; the caller then runs the branch), `queued` (kept for a later wait),
        `duplicate` (this event id was already accepted: nothing changes), `late` (the wait's
        deadline passed: its timeout is claimed instead), `closed` or `unknown_event` (refused, and
        recorded). `workflow_scope`: an event id counts as used if any session of that workflow
        accepted it. Without `holding` (the session's lock), an event the session waits for is not
        consumed: the outcome is `busy`. `workflow_path`: the session's workflow moved there."""
        now = _now(now)
        data_json = json.dumps(event.data)  # ensure_ascii: a lone surrogate cannot break the INSERT
        with self._write(session_id) as tx:
            if event.event_id and workflow_scope is not None:
                # one workflow-wide check of an event id at a time (the session rows are locked one by one)
                tx.run("SELECT pg_advisory_xact_lock(%s)", (_key(f"roast-event:{workflow_scope}:{event.event_id}"),))
            row = self._lock(tx, session_id)
            if row is None:
                raise missing(session_id)
            if event.event_id:
                prior = self._prior(tx, session_id, event.event_id, workflow_scope)
                if prior is not None:
                    if prior["digest"] is not None and event.digest is not None and prior["digest"] != event.digest:
                        from roast.errors import BadEventData

                        raise BadEventData(f"event id {event.event_id!r} was already used with other data "
                                           f"(for session {prior['session_id']}); nothing changed",
                                           hint="use a new --event-id for a new event")
                    return Outcome("duplicate", _event(prior), self._session_in(tx, prior["session_id"]))
            session = self._session_of(tx, row)
            declares = list(session.declares)
            if wait_seq is not None and (session.status, session.wait_seq) != ("waiting", wait_seq):
                # an approval link is for one wait: never a later one (issue 15)
                raise not_waiting(session, session_id, wait_seq, self._last_event(tx, session_id))

            def record(outcome: str, detail: str | None = None, **extra: Any) -> EventRecord:
                inserted = tx.row(
                    "INSERT INTO events (session_id, wait_seq, name, data, received_at, source, event_id, digest, "
                    "outcome, actor, reason, wait_path, consumed_at, detail) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (session_id, extra.get("wait_seq"), event.name, data_json, now, event.source, event.event_id,
                     event.digest, outcome, event.actor, event.reason, extra.get("wait_path"),
                     extra.get("consumed_at"), detail))
                assert inserted is not None
                return EventRecord(event.name, dict(event.data), now, event.source, extra.get("wait_seq"),
                                   event.event_id, outcome, event.actor, event.reason, extra.get("wait_path"),
                                   extra.get("consumed_at"), detail, inserted["id"])

            if session.status in FINISHED:
                return Outcome("closed", record("closed", f"the session {session.status} at "
                                                          f"{when(session.finished_at)}"), session)
            if declares and event.name not in declares:
                return Outcome("unknown_event", record("unknown_event", "no wait of the workflow declares it"),
                               session)
            offered = [a for a in session.awaiting if a.get("event") == event.name] \
                if session.status == "waiting" else []
            if offered and not holding:
                return Outcome("busy", None, session)  # the caller takes the session's lock, then asks again
            if offered:
                if all(a.get("deadline") is not None and a["deadline"] <= now for a in offered):
                    late = record("late", f"the wait's deadline passed at {when(min(a['deadline'] for a in offered))}")
                    self._claim(tx, session, "timeout", {"deadline": min(a["deadline"] for a in offered),
                                                         "refused_event": event.name}, "late", now)
                    return Outcome("late", late, self._session_in(tx, session_id))
                self._flip(tx, session, now, consumer=offered[0].get("path"))
                consumed = record("consumed", None, wait_seq=session.wait_seq, wait_path=offered[0].get("path"),
                                  consumed_at=now)
                tx.run("UPDATE sessions SET pending_event = %s, workflow_path = COALESCE(%s, workflow_path) "
                       "WHERE id = %s", (consumed.row, workflow_path, session_id))
                return Outcome("consumed", consumed, self._session_in(tx, session_id))
            state = "running" if session.status == "running" else \
                f"waiting for {', '.join(session.events) or 'its deadline'}"
            if event.name not in session.ahead:
                return Outcome("not_waiting", record("not_waiting", f"it is {state}, and no wait still ahead "
                                                                    f"declares {event.name!r}"), session)
            if if_waiting:
                raise NotWaiting(f"session {session_id} is {state}, not waiting for {event.name!r}; nothing changed "
                                 "(--if-waiting)", hint="drop --if-waiting to queue the event for a later wait")
            return Outcome("queued", record("queued", None), session)

    def _prior(self, tx: _Tx, session_id: str, event_id: str, workflow_scope: str | None) -> Row | None:
        if workflow_scope is not None:
            return tx.row(f"SELECT e.session_id, e.digest, {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))} "
                          "FROM events e JOIN sessions s ON s.id = e.session_id WHERE e.event_id = %s AND "
                          "s.workflow_path = %s AND e.outcome = ANY(%s) ORDER BY e.id LIMIT 1",
                          (event_id, workflow_scope, list(ACCEPTED)))
        return tx.row(f"SELECT session_id, digest, {_EVENT_COLUMNS} FROM events WHERE session_id = %s AND "
                      "event_id = %s AND outcome = ANY(%s) ORDER BY id LIMIT 1", (session_id, event_id, list(ACCEPTED)))

    def _flip(self, tx: _Tx, session: Session, now: float, *, consumer: str | None = None) -> None:
        """The compare-and-set that consumes a wait: exactly one caller wins (reliability G1). The
        waits not consumed (the other branches of a parallel group) stay ahead; `consumer=None`: the
        overdue waits time out."""
        still = set(session.ahead)
        for a in session.awaiting:
            if not a.get("event"):
                continue
            other_branch = consumer is not None and a.get("path") != consumer
            not_due = consumer is None and (a.get("deadline") is None or a["deadline"] > now)
            if other_branch or not_due:
                still.add(a["event"])
        count = tx.run("UPDATE sessions SET status = 'running', attempt = attempt + 1, awaiting = '[]', "
                       "deadline = NULL, updated_at = %s, owner = %s, notify_pending = 0, ahead = %s "
                       "WHERE id = %s AND status = 'waiting' AND wait_seq = %s",
                       (now, _me(), json.dumps(sorted(still)), session.id, session.wait_seq))
        if count != 1:
            raise not_waiting(self._session_in(tx, session.id), session.id, session.wait_seq,
                              self._last_event(tx, session.id))

    def _claim(self, tx: _Tx, session: Session, name: str, data: dict[str, Any], source: str, now: float) -> None:
        self._flip(tx, session, now)
        tx.run("INSERT INTO events (session_id, wait_seq, name, data, received_at, source, outcome, consumed_at) "
               "VALUES (%s, %s, %s, %s, %s, %s, 'consumed', %s)",
               (session.id, session.wait_seq, name, json.dumps(data), now, source, now))

    def fire(self, session_id: str, *, wait_seq: int, source: str, now: float | None = None) -> None:
        """Claim an overdue wait for its timeout: the same compare-and-set as an event, so an event and
        a timeout racing at the deadline resolve to exactly one branch."""
        now = _now(now)
        with self._write(session_id) as tx:
            row = self._lock(tx, session_id)
            if row is None:
                raise missing(session_id)
            session = self._session_of(tx, row)
            if session.status != "waiting" or session.wait_seq != wait_seq:
                raise not_waiting(session, session_id, wait_seq, self._last_event(tx, session_id))
            self._claim(tx, session, "timeout", {"deadline": session.deadline}, source, now)

    def take_over(self, session_id: str, *, now: float | None = None) -> EventRecord | None:
        """Make this process the owner of an orphaned session (recovery); return the event that was
        claimed for it and not yet delivered, if any (saved by the claim: nothing is inferred)."""
        now = _now(now)
        with self._write(session_id) as tx:
            row = self._lock(tx, session_id)
            if row is None:
                raise missing(session_id)
            if row["status"] != "running":
                raise not_waiting(self._session_of(tx, row), session_id, -1, self._last_event(tx, session_id))
            count = tx.run("UPDATE sessions SET owner = %s, attempt = attempt + 1, updated_at = %s, error = NULL "
                           "WHERE id = %s AND status = 'running' AND owner IS NOT DISTINCT FROM %s",
                           (_me(), now, session_id, row["owner"]))
            if count != 1:
                raise NotWaiting(f"session {session_id} was taken over by another process meanwhile; nothing changed")
            if row["pending_event"] is None:
                return None
            pending = tx.row(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = %s", (row["pending_event"],))
            return _event(pending) if pending is not None else None

    def reopen(self, session_id: str, *, changes: object | None = None, cursor: str | None = None,
               now: float | None = None) -> None:
        """Failed → running, for `roast retry` (issue 16): see SQLiteStore.reopen."""
        now = _now(now)
        payload = seal.dumps(changes, f"session {session_id}") if changes is not None else None
        keys = self._keyring(signing=True) if payload is not None else None
        with self._write(session_id) as tx:
            row = self._lock(tx, session_id)
            if row is None:
                raise missing(session_id)
            if row["status"] != "failed":
                raise refusal(self._session_of(tx, row), "cannot retry", self._last_event(tx, session_id))
            if tx.row("SELECT 1 AS one FROM continuations WHERE session_id = %s", (session_id,)) is None:
                raise Refused(f"session {session_id} failed without keeping its state (roast 0.1 did not keep "
                              "it), so it cannot be retried; nothing changed", hint="start the workflow again")
            seq = int(row["delta_seq"])
            if payload is not None:
                assert keys is not None
                seq += 1
                blob = seal.envelope(payload[0], payload[1], keys,
                                     bind=f"delta:{session_id}:wait:{row['wait_seq']}:{seq}", now=now)
                tx.run("INSERT INTO deltas (session_id, seq, envelope) VALUES (%s, %s, %s)", (session_id, seq, blob))
            tx.run("UPDATE sessions SET status = 'running', owner = %s, error = NULL, finished_at = NULL, "
                   "final_output = NULL, updated_at = %s, attempt = attempt + 1, delta_seq = %s, "
                   "cursor = COALESCE(%s, cursor) WHERE id = %s",
                   (_me(), now, seq, cursor, session_id))
            tx.run("UPDATE events SET outcome = 'queued' WHERE session_id = %s AND outcome = 'unconsumed'",
                   (session_id,))

    def finish(self, session_id: str, status: str, *, output: dict[str, Any] | None = None,
               final_output: str | None = None, error: str | None = None, finished: Sequence[StepDone] = (),
               keep_state: bool = False, cursor: str | None = None, now: float | None = None) -> None:
        """Running → completed/failed/timed_out. The continuation is deleted (SPEC §7) unless
        `keep_state` (a failed session keeps its last checkpoint, for `roast retry`); events still
        queued are marked `unconsumed`."""
        if status not in ("completed", "failed", "timed_out"):
            raise UsageError(f"cannot finish a session as {status!r}; use completed, failed or timed_out")
        now = _now(now)
        output_json = None if output is None else json.dumps(output, default=str)
        with self._write(session_id) as tx:
            row = self._lock(tx, session_id)
            _finish_steps(tx, session_id, finished)
            count = 0 if row is None else tx.run(
                "UPDATE sessions SET status = %s, output = %s, final_output = %s, error = %s, awaiting = '[]', "
                "deadline = NULL, finished_at = %s, updated_at = %s, pending_event = NULL, owner = NULL, "
                "cursor = COALESCE(%s, cursor) WHERE id = %s AND status = 'running'",
                (status, output_json, final_output, error, now, now, cursor, session_id))
            if count != 1:
                raise refusal(self._session_in(tx, session_id), f"cannot mark as {status}",
                              self._last_event(tx, session_id))
            if not keep_state:
                tx.run("DELETE FROM deltas WHERE session_id = %s", (session_id,))
                tx.run("DELETE FROM continuations WHERE session_id = %s", (session_id,))
                tx.run("UPDATE sessions SET delta_seq = 0 WHERE id = %s", (session_id,))
            tx.run("UPDATE events SET outcome = 'unconsumed' WHERE session_id = %s AND outcome = 'queued'",
                   (session_id,))

    def interrupted(self, session_id: str, *, error: str, finished: Sequence[StepDone] = (),
                    now: float | None = None) -> None:
        """Roast is being stopped (a signal): record it and mark the steps in flight `interrupted`.
        The session stays `running`, and is orphaned once this process has exited."""
        now = _now(now)
        with self._write(session_id) as tx:
            self._lock(tx, session_id)
            _finish_steps(tx, session_id, finished)
            tx.run("UPDATE steps SET status = 'interrupted', finished_at = %s WHERE session_id = %s AND "
                   "finished_at IS NULL", (now, session_id))
            tx.run("UPDATE sessions SET error = %s, updated_at = %s, owner = NULL WHERE id = %s AND status = 'running'",
                   (error, now, session_id))

    def record_step(self, session_id: str, start: StepStart, done: StepDone | None) -> int:
        """A step that ran outside the session's drive (a `notify:` step of a waiting session): its
        history row, written whole; returns its attempt number."""
        with self._write(session_id) as tx:
            if tx.row("SELECT 1 AS one FROM sessions WHERE id = %s", (session_id,)) is None:
                raise missing(session_id)
            row = tx.row("SELECT count(*) AS n FROM steps WHERE session_id = %s AND path = %s", (session_id, start.path))
            attempt = int(row["n"] if row else 0) + 1
            tx.run("INSERT INTO steps (session_id, path, name, attempt, started_at, finished_at, status, output, error) "
                   "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                   (session_id, start.path, start.name, attempt, start.started_at,
                    done.finished_at if done else None, done.status if done else "running",
                    _clean(done.output) if done and done.output is not None else None,
                    _clean(done.error) if done and done.error else None))
        return attempt

    def signing_keys(self) -> seal.Keyring:
        """The keys (for approval-link tokens, issue 15); a shared store never makes one."""
        return self._keyring(signing=True)

    def notified(self, session_id: str, *, wait_seq: int) -> None:
        with self._write(session_id) as tx:
            tx.run("UPDATE sessions SET notify_pending = 0 WHERE id = %s AND wait_seq = %s", (session_id, wait_seq))

    def cancel(self, session_id: str, *, reason: str | None = None, now: float | None = None) -> Session:
        """Cancel a waiting session, or a running one whose process is gone (orphaned). Accepts a prefix."""
        now = _now(now)
        sid = self.get(session_id).id
        with self.hold(sid, "roast cancel"), self._write(sid) as tx:
            row = self._lock(tx, sid)
            if row is None:
                raise missing(sid)
            session = _session(row)
            if session.status == "running":
                # this process holds the lock now, so no other process does: it is live only if this
                # very process is running it
                owner = _owner(row["owner"])
                mine = bool(owner and owner.get("host") == HOST and owner.get("pid") == os.getpid())
                if mine and running_here(sid):
                    raise Refused(f"session {sid} is running in this process (pid {os.getpid()}); nothing changed",
                                  hint="wait for it to finish or reach a wait, then cancel it")
                session = _session(row, True, None)
            if session.status not in ("waiting", "running"):
                raise refusal(session, "cannot cancel", self._last_event(tx, sid))
            tx.run("UPDATE sessions SET status = 'cancelled', reason = %s, awaiting = '[]', deadline = NULL, "
                   "finished_at = %s, updated_at = %s, pending_event = NULL, owner = NULL WHERE id = %s",
                   (reason, now, now, sid))
            tx.run("DELETE FROM continuations WHERE session_id = %s", (sid,))
            tx.run("DELETE FROM deltas WHERE session_id = %s", (sid,))
            tx.run("UPDATE events SET outcome = 'unconsumed' WHERE session_id = %s AND outcome = 'queued'", (sid,))
            return self._session_in(tx, sid)

    def prune(self, *, older_than: float, now: float | None = None) -> int:
        """Delete finished sessions last updated more than `older_than` seconds ago; return how many."""
        if older_than < 0:
            raise UsageError(f"older_than must be zero or more seconds, not {older_than!r}")
        cutoff = _now(now) - older_than
        with self._write() as tx:
            # SKIP LOCKED: a finished session being written right now (a refused delivery) waits for the next prune
            ids = [r["id"] for r in tx.rows("SELECT id FROM sessions WHERE status = ANY(%s) AND updated_at < %s "
                                            "ORDER BY id FOR UPDATE SKIP LOCKED", (list(FINISHED), cutoff))]
            for table, column in (("events", "session_id"), ("steps", "session_id"), ("deltas", "session_id"),
                                  ("continuations", "session_id"), ("holders", "session_id"), ("sessions", "id")):
                tx.run(f"DELETE FROM {table} WHERE {column} = ANY(%s)", (ids,))
            tx.run("DELETE FROM definitions WHERE fingerprint NOT IN "
                   "(SELECT definition FROM sessions WHERE definition IS NOT NULL)")
        return len(ids)

    # -- reads -----------------------------------------------------------------------------------

    def get(self, id_or_prefix: str) -> Session:
        """The session with this id, or the only one whose id starts with it (like git's short SHAs)."""
        from roast.errors import Ambiguous

        check_id(id_or_prefix)
        with self._read() as tx:
            rows = [] if tx is None else tx.rows(f"SELECT {_COLUMNS} FROM sessions WHERE id = %s", (id_or_prefix,))
            if tx is not None and not rows:
                # A range query, never LIKE ('_' is a LIKE wildcard); ids compare bytewise (COLLATE "C").
                rows = tx.rows(f"SELECT {_COLUMNS} FROM sessions WHERE id >= %s AND id < %s "
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
            return self._session_of(tx, rows[0])

    def history(self, session_id: str) -> list[StepRecord]:
        sid = self.get(session_id).id
        with self._read() as tx:
            assert tx is not None  # get() found the session
            rows = tx.rows("SELECT path, name, attempt, started_at, finished_at, status, output, pgid, host, error "
                           "FROM steps WHERE session_id = %s ORDER BY id", (sid,))
        return [StepRecord(r["path"], r["name"], r["attempt"], r["started_at"], r["finished_at"], r["status"],
                           r["output"], r["pgid"], r["host"], r["error"]) for r in rows]

    def events(self, session_id: str) -> list[EventRecord]:
        sid = self.get(session_id).id
        with self._read() as tx:
            assert tx is not None
            rows = tx.rows(f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = %s ORDER BY id", (sid,))
        return [_event(r) for r in rows]

    def _select(self, where: str, args: Sequence[object], order: str) -> list[Session]:
        with self._read() as tx:
            if tx is None:
                return []
            return self._sessions(tx, tx.rows(f"SELECT {_COLUMNS} FROM sessions WHERE {where} {order}", args))

    def waiting_for(self, workflow_path: str) -> list[Session]:
        """Waiting sessions of one workflow, newest first (`roast resume` without --session-id)."""
        return self._select("workflow_path = %s AND status = 'waiting'", (workflow_path,),
                            "ORDER BY created_at DESC, id DESC")

    def open_of(self, workflow_path: str) -> list[Session]:
        """Waiting and running sessions of one workflow, newest first."""
        return self._select("workflow_path = %s AND status IN ('waiting', 'running')", (workflow_path,),
                            "ORDER BY created_at DESC, id DESC")

    def with_key(self, workflow_path: str, key: str) -> list[Session]:
        """Open sessions of a workflow with this correlation key (issue 15), newest first."""
        return self._select("workflow_path = %s AND key = %s AND status IN ('waiting', 'running')",
                            (workflow_path, key), "ORDER BY created_at DESC")

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
        several hosts' ticks read: rows being written right now (SKIP LOCKED) and sessions another
        process holds (it is claiming them) are left to that process."""
        with self._read() as tx:
            if tx is None:
                return []
            rows = tx.rows(f"SELECT {_COLUMNS} FROM sessions WHERE status = 'waiting' AND deadline IS NOT NULL "
                           "AND deadline <= %s ORDER BY deadline, id FOR UPDATE SKIP LOCKED", (_now(now),))
            busy = self._live(tx, [r["id"] for r in rows if self._holds_anywhere(r["id"]) is None])
            return self._sessions(tx, [r for r in rows if r["id"] not in busy])

    def orphans(self) -> list[Session]:
        """Running sessions whose process is gone (rows being written right now are skipped)."""
        with self._read() as tx:
            if tx is None:
                return []
            rows = tx.rows(f"SELECT {_COLUMNS} FROM sessions WHERE status = 'running' ORDER BY created_at, id "
                           "FOR UPDATE SKIP LOCKED")
            return [s for s in self._sessions(tx, rows) if s.orphaned]

    def notify_due(self) -> list[Session]:
        """Waiting sessions whose notify steps have not finished (a crash in between: at least once)."""
        return self._select("status = 'waiting' AND notify_pending = 1", (), "")

    def load_state(self, session: Session) -> Continuation:
        """Verify and unpickle the session's continuation and every delta after it, in order."""
        check_id(session.id)
        with self._read() as tx:
            if tx is None:
                raise missing(session.id)
            # one statement, one snapshot: the continuation, its deltas and the wait number agree
            row = tx.row("SELECT s.wait_seq, c.envelope, ARRAY(SELECT d.seq FROM deltas d WHERE d.session_id = s.id "
                         "ORDER BY d.seq) AS seqs, ARRAY(SELECT d.envelope FROM deltas d WHERE d.session_id = s.id "
                         "ORDER BY d.seq) AS blobs FROM sessions s LEFT JOIN continuations c ON c.session_id = s.id "
                         "WHERE s.id = %s", (session.id,))
        if row is None or row["envelope"] is None:
            raise StateRefused(f"session {session.id} has no saved state (it is {session.status}); nothing can be "
                               "continued from it")
        keys = self._keyring(signing=False)
        seq_now = int(row["wait_seq"])
        base = seal.unseal(bytes(row["envelope"]), keys, bind=seal.session_bind(session.id, seq_now))
        changes = [seal.unseal(bytes(blob), keys, bind=f"delta:{session.id}:wait:{seq_now}:{seq}")
                   for seq, blob in zip(row["seqs"], row["blobs"])]
        return Continuation(base, changes)

    def has_definition(self, fingerprint: str) -> bool:
        with self._read() as tx:
            return tx is not None and tx.row("SELECT 1 AS one FROM definitions WHERE fingerprint = %s",
                                             (fingerprint,)) is not None

    def load_definition(self, fingerprint: str) -> object | None:
        with self._read() as tx:
            row = None if tx is None else tx.row("SELECT envelope FROM definitions WHERE fingerprint = %s",
                                                 (fingerprint,))
        if row is None:
            return None
        return seal.unseal(bytes(row["envelope"]), self._keyring(signing=False), bind=f"definition:{fingerprint}",
                           who=f"the saved definition {fingerprint[:12]}")

    def list(self, *, statuses: Sequence[str] = (), workflow: str | None = None,
             older_than: float | None = None, since: float | None = None, limit: int | None = 50,
             offset: int = 0, open_first: bool = False, now: float | None = None) -> tuple[list[Session], int]:
        """A page of sessions, newest first (open ones first with `open_first`), and how many match.

        `workflow` matches the path or the name; `since` is an epoch (created at or after);
        `older_than` is seconds (last updated before now - older_than, as `prune` counts). The
        status `orphaned` means running sessions whose process is gone.
        """
        wanted = list(statuses)
        unknown = [s for s in wanted if s not in (*STATUSES, "orphaned")]
        if unknown:
            raise UsageError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUSES)}, orphaned")
        orphaned_only = "orphaned" in wanted and "running" not in wanted
        sql_statuses = sorted({"running" if s == "orphaned" else s for s in wanted})
        where: list[str] = []
        args: list[object] = []
        if sql_statuses:
            where.append("status = ANY(%s)")
            args.append(sql_statuses)
        if workflow is not None:
            where.append("(workflow_path = %s OR workflow_name = %s)")
            args.extend((workflow, workflow))
        if older_than is not None:
            where.append("updated_at < %s")
            args.append(_now(now) - older_than)
        if since is not None:
            where.append("created_at >= %s")
            args.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ORDER BY (status IN ('running', 'waiting')) DESC, created_at DESC, id DESC" if open_first \
            else "ORDER BY created_at DESC, id DESC"
        with self._read() as tx:
            if tx is None:
                return [], 0
            if orphaned_only:
                rows = tx.rows(f"SELECT {_COLUMNS} FROM sessions {clause} {order}", args)
                found = [s for s in self._sessions(tx, rows) if s.orphaned]
                page = found[offset:] if limit is None else found[offset:offset + limit]
                return page, len(found)
            total = tx.row(f"SELECT count(*) AS n FROM sessions {clause}", args)
            rows = tx.rows(f"SELECT {_COLUMNS} FROM sessions {clause} {order} LIMIT %s OFFSET %s",
                           (*args, limit, offset))
            return self._sessions(tx, rows), int(total["n"] if total else 0)

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
            out: dict[str, list[dict[str, Any]]] = {}
            for table, columns in TABLE_COLUMNS.items():
                rows = tx.rows(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {_ORDER[table]}")
                out[table] = [{c: bytes(r[c]) if isinstance(r[c], memoryview) else r[c] for c in columns}
                              for r in rows]
            return out

    def restore(self, dumped: dict[str, builtins.list[dict[str, Any]]]) -> dict[str, int]:
        """Insert the sessions of another store's `dump()` in one transaction; refuse (nothing
        changed) if this store already holds any of them. Event rows get new ids here (the
        sessions' pending events follow them); a definition this store already has is kept. Before
        the commit, the rows are read back and compared with `dumped` (`census_of`): any difference
        rolls it all back. Returns how many rows of each table were written (`roast store copy`)."""
        sessions = dumped.get("sessions", [])
        ids = [s["id"] for s in sessions]
        expected = census_of(dumped)
        with self._write() as tx:
            present = [r["id"] for r in tx.rows("SELECT id FROM sessions WHERE id = ANY(%s) ORDER BY id", (ids,))]
            if present:
                shown = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
                raise Refused(f"the session store {self.describe()} already holds {len(present)} of these sessions "
                              f"({shown}); nothing was copied",
                              hint="copy into a store that holds none of them")
            counts = dict.fromkeys(TABLE_COLUMNS, 0)
            columns = [c for c in TABLE_COLUMNS["sessions"] if c != "pending_event"]
            tx.many(f"INSERT INTO sessions ({', '.join(columns)}) VALUES ({', '.join('%s' for _ in columns)})",
                    [tuple(s[c] for c in columns) for s in sessions])
            counts["sessions"] = len(sessions)
            for table in ("continuations", "deltas", "steps"):
                rows = dumped.get(table, [])
                cols = TABLE_COLUMNS[table]
                tx.many(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('%s' for _ in cols)})",
                        [tuple(r[c] for c in cols) for r in rows])
                counts[table] = len(rows)
            renumbered: dict[int, int] = {}
            cols = TABLE_COLUMNS["events"][1:]
            for event in dumped.get("events", []):  # in the source's order, so ids keep it
                new = tx.row(f"INSERT INTO events ({', '.join(cols)}) VALUES ({', '.join('%s' for _ in cols)}) "
                             "RETURNING id", tuple(event[c] for c in cols))
                assert new is not None
                renumbered[int(event["id"])] = int(new["id"])
            counts["events"] = len(renumbered)
            tx.many("UPDATE sessions SET pending_event = %s WHERE id = %s",
                    [(renumbered.get(int(s["pending_event"])), s["id"]) for s in sessions
                     if s.get("pending_event") is not None])
            for definition in dumped.get("definitions", []):
                counts["definitions"] += tx.run(
                    "INSERT INTO definitions (fingerprint, envelope, created_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (fingerprint) DO NOTHING",
                    (definition["fingerprint"], definition["envelope"], definition["created_at"]))
            found = self._census(tx, ids, [d["fingerprint"] for d in dumped.get("definitions", [])])
            if found != expected:
                wrong = ", ".join(f"{k} {found.get(k)} instead of {v}" for k, v in expected.items() if found.get(k) != v)
                raise StoreUnavailable(f"the copy into {self.describe()} did not read back as written ({wrong}); "
                                       "nothing was copied")
        return counts

    def census(self, session_ids: Sequence[str], fingerprints: Sequence[str] = ()) -> dict[str, Any]:
        """How many rows these sessions have in each table, and a digest of their envelopes (as
        `census_of` counts a dump): `roast store copy` checks the target with it."""
        with self._read() as tx:
            if tx is None:
                return census_of({})
            return self._census(tx, session_ids, fingerprints)

    def _census(self, tx: _Tx, ids: Sequence[str], fingerprints: Sequence[str]) -> dict[str, Any]:
        counts: dict[str, Any] = {}
        for table, column in (("sessions", "id"), ("continuations", "session_id"), ("deltas", "session_id"),
                              ("steps", "session_id"), ("events", "session_id")):
            row = tx.row(f"SELECT count(*) AS n FROM {table} WHERE {column} = ANY(%s)", (list(ids),))
            counts[table] = int(row["n"]) if row else 0
        row = tx.row("SELECT count(*) AS n FROM definitions WHERE fingerprint = ANY(%s)", (list(fingerprints),))
        counts["definitions"] = int(row["n"]) if row else 0
        sealed = [("continuations", r["session_id"], bytes(r["envelope"])) for r in tx.rows(
            "SELECT session_id, envelope FROM continuations WHERE session_id = ANY(%s)", (list(ids),))]
        sealed += [("deltas", f"{r['session_id']}:{r['seq']}", bytes(r["envelope"])) for r in tx.rows(
            "SELECT session_id, seq, envelope FROM deltas WHERE session_id = ANY(%s)", (list(ids),))]
        counts["envelopes"] = _digest(sealed)
        return counts


def census_of(dumped: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The census (`PostgresStore.census`) of the sessions in a `dump()`."""
    counts: dict[str, Any] = {table: len(dumped.get(table, [])) for table in TABLE_COLUMNS}
    sealed = [("continuations", r["session_id"], bytes(r["envelope"])) for r in dumped.get("continuations", [])]
    sealed += [("deltas", f"{r['session_id']}:{r['seq']}", bytes(r["envelope"])) for r in dumped.get("deltas", [])]
    counts["envelopes"] = _digest(sealed)
    return counts


def _digest(sealed: list[tuple[str, str, bytes]]) -> str:
    digest = hashlib.sha256()
    for table, key, blob in sorted(sealed):
        digest.update(f"{table}\x00{key}\x00{len(blob)}\x00".encode() + blob)
    return digest.hexdigest()


class _Tx:
    """A connection inside `_write`/`_read`: every parameter passes `_clean` (no NUL in text)."""

    __slots__ = ("conn", "store")

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Row]) -> None:
        self.store, self.conn = store, conn

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute; return the number of rows it changed."""
        return self.conn.execute(sql, _params(params)).rowcount  # type: ignore[arg-type]

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql, [_params(r) for r in rows])  # type: ignore[arg-type]

    def row(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return self.conn.execute(sql, _params(params)).fetchone()  # type: ignore[arg-type]

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.conn.execute(sql, _params(params)).fetchall()  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# helpers used inside transactions

def _finish_steps(tx: _Tx, session_id: str, finished: Sequence[StepDone]) -> None:
    tx.many("UPDATE steps SET finished_at = %s, status = %s, output = %s, error = %s "
            "WHERE session_id = %s AND path = %s AND attempt = %s",
            [(f.finished_at, f.status, f.output, _clean(f.error) if f.error else None, session_id, f.path,
              f.attempt) for f in finished])


def _first_line(err: BaseException, url: str) -> str:
    """The error's text without the password (psycopg does not print it; be sure anyway)."""
    text = " ".join(str(err).split()) or type(err).__name__
    try:
        password = str(conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        password = ""
    return _scrub(text, url, password)


def _scrub(text: str, url: str, password: str = "") -> str:
    if password and len(password) >= 1:
        text = text.replace(password, "***")
    return text.replace(url, mask_url(url))


def _owner(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _session(row: Row, orphaned: bool = False, holder: str | None = None) -> Session:
    output = row["output"]
    return Session(row["id"], row["workflow_path"], row["workflow_name"], row["fingerprint"], row["target"],
                   row["status"], row["cursor"], json.loads(row["awaiting"] or "[]"), row["deadline"],
                   int(row["wait_seq"]), int(row["attempt"]), row["created_at"], row["updated_at"],
                   row["finished_at"], row["error"], None if output is None else json.loads(output),
                   row["final_output"], row["reason"], bool(row["has_definition"]), orphaned, row["cwd"],
                   tuple(json.loads(row["declares"] or "[]")), row["key"], row["definition"], row["owner"], holder,
                   bool(row["notify_pending"]),
                   tuple(json.loads(row["ahead"])) if row["ahead"] is not None else
                   tuple(json.loads(row["declares"] or "[]")), json.loads(row["schemas"] or "{}"))


def _event(row: Row) -> EventRecord:
    return EventRecord(row["name"], json.loads(row["data"]), row["received_at"], row["source"], row["wait_seq"],
                       row["event_id"], row["outcome"], row["actor"], row["reason"], row["wait_path"],
                       row["consumed_at"], row["detail"], row["id"])
