"""The SQLite session store: one file under ROAST_HOME (`sessions.db`), for one machine.

Every write is one `BEGIN IMMEDIATE … COMMIT` (reliability §1.6), so a refused or failed
operation changes nothing; WAL with `synchronous=FULL`, so an acknowledged transition survives
power loss. A step costs one transaction (its start row travels with the checkpoint before it,
and the checkpoint writes only what changed: issue 12). Liveness is an `flock` on
`locks/<id>.lock` held by the running process, backed by the owner recorded in the row (host,
pid, start time), so deleting `locks/` cannot make a live session look orphaned (issue 10).

Must not import yaml or rich: `roast sessions` starts up through this module.
"""
from __future__ import annotations

import contextlib
import fcntl
import _thread
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast import seal
from roast.errors import NotWaiting, Refused, RoastError, StoreUnavailable, UsageError
from roast.store import (
    ACCEPTED,
    FINISHED,
    SESSION_ID,
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
    missing,
    not_waiting,
    refusal,
    roast_home,
    running_here,
    when,
)

if TYPE_CHECKING:
    import builtins
    from typing import Any

_DEFAULT_BUSY_TIMEOUT = 5.0

# Numbered migrations, applied in order and recorded in PRAGMA user_version. Never edit an entry
# that has shipped: append a new one.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: the first schema (roast 0.1)
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            workflow_path TEXT NOT NULL,
            workflow_name TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            target TEXT,
            status TEXT NOT NULL,
            cursor TEXT,
            awaiting TEXT NOT NULL DEFAULT '[]',
            deadline REAL,
            wait_seq INTEGER NOT NULL DEFAULT 0,
            attempt INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL,
            error TEXT,
            output TEXT,
            final_output TEXT,
            reason TEXT,
            has_definition INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX sessions_by_status ON sessions(status, created_at)",
        "CREATE INDEX sessions_by_workflow ON sessions(workflow_path, status, created_at)",
        "CREATE INDEX sessions_by_deadline ON sessions(status, deadline)",
        """CREATE TABLE continuations (
            session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            envelope BLOB NOT NULL
        )""",
        """CREATE TABLE steps (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            name TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL,
            output TEXT
        )""",
        "CREATE INDEX steps_by_session ON steps(session_id, path, attempt)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            wait_seq INTEGER NOT NULL,
            name TEXT NOT NULL,
            data TEXT NOT NULL,
            received_at REAL NOT NULL,
            source TEXT NOT NULL,
            UNIQUE(session_id, wait_seq, name)
        )""",
    ),
    (  # 2: roast 0.2 — working directory, owner, deltas, shared definitions, deliveries (issues 10-14)
        "ALTER TABLE sessions ADD COLUMN cwd TEXT",
        "ALTER TABLE sessions ADD COLUMN declares TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE sessions ADD COLUMN key TEXT",
        "ALTER TABLE sessions ADD COLUMN definition TEXT",
        "ALTER TABLE sessions ADD COLUMN owner TEXT",
        "ALTER TABLE sessions ADD COLUMN pending_event INTEGER",
        "ALTER TABLE sessions ADD COLUMN delta_seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN notify_pending INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN ahead TEXT",
        "ALTER TABLE sessions ADD COLUMN schemas TEXT NOT NULL DEFAULT '{}'",
        "CREATE INDEX sessions_by_key ON sessions(workflow_path, key, status)",
        "CREATE INDEX sessions_by_created ON sessions(created_at)",
        "ALTER TABLE steps ADD COLUMN pgid INTEGER",
        "ALTER TABLE steps ADD COLUMN host TEXT",
        "ALTER TABLE steps ADD COLUMN error TEXT",
        """CREATE TABLE events2 (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            wait_seq INTEGER,
            name TEXT NOT NULL,
            data TEXT NOT NULL,
            received_at REAL NOT NULL,
            source TEXT NOT NULL,
            event_id TEXT,
            digest TEXT,
            outcome TEXT NOT NULL DEFAULT 'consumed',
            actor TEXT,
            reason TEXT,
            wait_path TEXT,
            consumed_at REAL,
            detail TEXT
        )""",
        "INSERT INTO events2 (id, session_id, wait_seq, name, data, received_at, source, consumed_at) "
        "SELECT id, session_id, wait_seq, name, data, received_at, source, received_at FROM events",
        "DROP TABLE events",
        "ALTER TABLE events2 RENAME TO events",
        "CREATE INDEX events_by_session ON events(session_id, outcome, id)",
        "CREATE UNIQUE INDEX events_by_event_id ON events(session_id, event_id) "
        "WHERE event_id IS NOT NULL AND outcome IN ('consumed', 'queued', 'unconsumed')",
        "CREATE INDEX events_by_any_id ON events(event_id) WHERE event_id IS NOT NULL",
        """CREATE TABLE deltas (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            envelope BLOB NOT NULL,
            PRIMARY KEY (session_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE definitions (
            fingerprint TEXT PRIMARY KEY,
            envelope BLOB NOT NULL,
            created_at REAL NOT NULL
        )""",
    ),
]

_COLUMNS = ("id, workflow_path, workflow_name, fingerprint, target, status, cursor, awaiting, deadline, "
            "wait_seq, attempt, created_at, updated_at, finished_at, error, output, final_output, reason, "
            "has_definition, cwd, declares, key, definition, owner, notify_pending, ahead, schemas")
_EVENT_COLUMNS = ("name, data, received_at, source, wait_seq, event_id, outcome, actor, reason, wait_path, "
                  "consumed_at, detail, id")
HOST = os.uname().nodename  # what socket.gethostname() says, without importing socket


def _start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (/proc), to tell it from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


def process_alive(pid: int, start: str | None) -> bool:
    """True if process `pid` runs, and is the same process that started at `start` (if known)."""
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
    # after a fork (roast serve workers, tests) the pid changed: describe this process
    global _OWNER
    if json.loads(_OWNER)["pid"] != os.getpid():
        _OWNER = json.dumps({"host": HOST, "pid": os.getpid(), "start": _start_ticks(os.getpid())})
    return _OWNER


def _now(now: float | None) -> float:
    return time.time() if now is None else now


class SQLiteStore:
    """The session store in ROAST_HOME: cheap to construct, creates nothing until first written.

    >>> import tempfile
    >>> store = SQLiteStore(tempfile.mkdtemp())
    >>> store.list()[1]
    0
    """

    shared = False

    def __init__(self, home: str | os.PathLike[str] | None = None, db_path: str | None = None) -> None:
        self.home = roast_home(home)
        self.db_path = db_path or os.path.join(self.home, "sessions.db")
        # True once a read had to fall back to an immutable read-only view (reliability §5 row 12);
        # the CLI warns that what it shows may be stale.
        self.read_only_view = False
        # Private test hook: run on every new connection (e.g. PRAGMA max_page_count for disk full).
        self._on_connect: Any = None
        self._keys: seal.Keyring | None = None
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._conn_thread = 0
        self._local: Any = None  # threading.local, made when a second thread uses the store
        self._held: set[str] = set()  # sessions whose lock this process holds (through this store)
        self._delta_seq: dict[str, tuple[int, int]] = {}  # session -> (wait_seq, last delta) while held

    def describe(self) -> str:
        return self.db_path

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

    def _store_error(self, err: BaseException, session_id: str | None = None) -> StoreUnavailable:
        """Map a sqlite3 or OS error to one sentence naming the DB and saying nothing changed."""
        db = self.db_path
        text = str(err)
        low = text.lower()
        name = getattr(err, "sqlite_errorname", "")
        if isinstance(err, OSError):
            return StoreUnavailable(f"cannot use the session store in {self.home} "
                                    f"({err.strerror or err}); nothing changed",
                                    hint="check ROAST_HOME: it must be a directory you can read and write")
        if "locked" in low or "busy" in low or name.startswith("SQLITE_BUSY"):
            return StoreUnavailable(f"the session store {db} is busy (another roast process has held the "
                                    f"write lock for more than {self._busy_timeout():g} s); nothing changed, "
                                    "try again", hint="raise ROAST_BUSY_TIMEOUT (seconds) to wait longer")
        if "full" in low or name.startswith("SQLITE_FULL"):
            what = f"could not save session {session_id}" if session_id else "could not write"
            return StoreUnavailable(f"{what} (disk full at {db}); nothing changed",
                                    hint="free some disk space and try again")
        if "readonly" in low or "read-only" in low or name.startswith("SQLITE_READONLY"):
            return StoreUnavailable(f"the session store {db} is read-only ({text}); nothing changed",
                                    hint=f"check the permissions of {self.home} and its files")
        if ("not a database" in low or "malformed" in low or name.startswith(("SQLITE_CORRUPT",
                                                                             "SQLITE_NOTADB"))):
            return StoreUnavailable(f"the session store {db} is damaged ({text}); it was not modified. "
                                    f"Move it aside and try `sqlite3 {db} .recover`")
        if "unable to open" in low or name.startswith("SQLITE_CANTOPEN"):
            return StoreUnavailable(f"cannot open the session store {db} ({text}); nothing changed",
                                    hint=f"check that {self.home} is a writable local directory")
        return StoreUnavailable(f"the session store {db} failed ({text}); nothing changed")

    @contextmanager
    def _errors(self, session_id: str | None = None) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as err:
            raise self._store_error(err, session_id) from err

    def _make_home(self) -> None:
        # missing parents get default permissions, but the home itself is private (§2.2).
        os.makedirs(self.home, mode=0o700, exist_ok=True)

    def _check_file(self) -> None:
        """Only a missing file means "a new store": an existing one that is empty is refused, so no
        waiting session vanishes without a word (issue 10); SQLite itself refuses one that is not a
        database. Checked with stat, never by opening the file: closing any descriptor of a database
        drops this process's SQLite locks on it (reliability §1.1)."""
        if os.stat(self.db_path).st_size:
            return
        raise StoreUnavailable(f"the session store {self.db_path} is empty (0 bytes); it was not used, and nothing "
                               "changed", hint="restore it from a backup; if you meant to start afresh, move "
                                               "it aside (roast creates a new store when the file is missing)")

    def _create_files(self) -> None:
        """Create the store whole, or not at all: a new file is built and migrated beside the real
        name, then linked into place, so a crash never leaves an empty `sessions.db`."""
        if os.path.exists(self.db_path):
            return
        self._make_home()
        tmp = f"{self.db_path}.new-{os.urandom(6).hex()}"
        # Created 0600 before the first connect: SQLite gives -wal/-shm the DB file's mode (§2.2).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # persists in the file
                self._migrate(db, tmp)
            finally:
                db.close()
            try:
                os.link(tmp, self.db_path)
            except FileExistsError:
                pass  # another process created it first: use theirs
        finally:
            for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        dir_fd = os.open(self.home, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _writable(self) -> bool:
        """False when the DB file's mode forbids writing (0400 means read-only, for root too)."""
        st = os.stat(self.db_path)
        return bool(st.st_mode & 0o200) and os.access(self.db_path, os.W_OK)

    def _mend_companions(self) -> None:
        """-wal and -shm left without write permission by an earlier read of a read-only DB keep
        every write failing after the DB's mode is fixed (issue 10): give them the DB's mode."""
        mode = os.stat(self.db_path).st_mode & 0o777
        for suffix in ("-wal", "-shm"):
            try:
                st = os.stat(self.db_path + suffix)
            except FileNotFoundError:
                continue
            if st.st_uid == os.geteuid() and (st.st_mode & 0o777) != mode:
                os.chmod(self.db_path + suffix, mode)

    def _open(self, uri: str | None = None) -> sqlite3.Connection:
        if uri is None:
            self._check_file()
            self._mend_companions()
        target = uri if uri is not None else self.db_path
        db = sqlite3.connect(target, timeout=self._busy_timeout(), isolation_level=None, uri=uri is not None,
                             check_same_thread=False)
        db.row_factory = sqlite3.Row
        try:
            if uri is None:
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
            if self._on_connect is not None:
                self._on_connect(db)
            if uri is None:
                self._migrate(db, self.db_path)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection, where: str) -> None:
        latest = len(MIGRATIONS)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == latest:
            return
        if version > latest:
            raise StoreUnavailable(f"the session store {where} was written by a newer roast (schema "
                                   f"v{version}; this roast knows v{latest}); nothing changed",
                                   hint="upgrade roast")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for number in range(version + 1, latest + 1):
                for statement in MIGRATIONS[number - 1]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number:d}")
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def _connection(self) -> sqlite3.Connection | None:
        """This thread's connection (one per thread, reopened after a fork)."""
        if self._conn is not None and self._conn_pid == os.getpid():
            if self._conn_thread == _thread.get_ident():
                return self._conn
            if self._local is None:
                self._local = _thread._local()
            db = getattr(self._local, "db", None)
            return db if db is not None and getattr(self._local, "pid", 0) == os.getpid() else None
        return None

    def _keep(self, db: sqlite3.Connection) -> sqlite3.Connection:
        if self._conn is None or self._conn_pid != os.getpid():
            self._conn, self._conn_pid, self._conn_thread = db, os.getpid(), _thread.get_ident()
        else:
            if self._local is None:
                self._local = _thread._local()
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _drop(self) -> None:
        db = self._connection()
        if db is None:
            return
        if self._conn is db and self._conn_thread == _thread.get_ident():
            self._conn = None
        elif self._local is not None:
            self._local.db = None
        with contextlib.suppress(sqlite3.Error):
            db.close()

    def close(self) -> None:
        """Close this thread's connection (it is also closed when the store is garbage-collected)."""
        self._drop()

    @contextmanager
    def _write(self, session_id: str | None = None, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE … COMMIT`; any error rolls it back and nothing changes."""
        with self._errors(session_id):
            db = self._connection()
            if db is None:
                if os.path.exists(self.db_path) and not self._writable():
                    raise StoreUnavailable(f"the session store {self.db_path} is read-only (its mode forbids "
                                           "writing); nothing changed",
                                           hint=f"chmod u+w {self.db_path}")
                self._create_files()
                db = self._keep(self._open())
            fault_point()
            if not durable:
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: this commit does not fsync
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                self._drop()
                raise
            try:
                yield db
                fault_point()
                db.execute("COMMIT")
            except sqlite3.Error:
                _rollback(db)
                self._drop()  # a connection that failed (busy, full, damaged) is not reused
                raise
            except BaseException:
                _rollback(db)
                raise
            finally:
                if not durable:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("PRAGMA synchronous=FULL")
            fault_point()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A connection for reading, or None when no store exists yet (reads create nothing)."""
        with self._errors():
            cached = self._connection()
            if cached is not None:
                yield cached
                return
            if not os.path.exists(self.db_path):
                yield None
                return
            if not self._writable():
                # a read-only DB: an immutable view, so no -wal/-shm is created with its mode (issue 10)
                self._check_file()
                with contextlib.closing(self._open(self._ro_uri())) as view:
                    self.read_only_view = True
                    yield view
                return
            try:
                db = self._open()
            except sqlite3.OperationalError as err:
                # §5 row 12: a WAL database in a read-only directory cannot even be read normally.
                low = str(err).lower()
                if "readonly" not in low and "unable to open" not in low:
                    raise
                with contextlib.closing(self._open(self._ro_uri())) as view:
                    self.read_only_view = True
                    yield view
                return
            yield self._keep(db)

    def _ro_uri(self) -> str:
        from urllib.parse import quote  # only for a read-only store

        return f"file:{quote(self.db_path)}?mode=ro&immutable=1"

    # -- keys ------------------------------------------------------------------------------------

    def key_path(self) -> str:
        return os.path.join(self.home, "secret.key")

    def _keyring(self, db: sqlite3.Connection | None, *, signing: bool) -> seal.Keyring:
        if self._keys is not None:
            return self._keys
        keys = seal.configured_keys()
        if keys is None:
            def may_create() -> bool:
                if not signing or db is None:
                    return False
                return not any(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                               for table in ("continuations", "deltas", "definitions"))

            try:
                keys = seal.local_keys(self.key_path(), may_create=may_create)
            except StoreUnavailable as err:
                if signing:
                    raise
                from roast.errors import StateRefused  # reading: the state cannot be verified

                raise StateRefused(err.message, hint=err.hint) from err
        self._keys = keys
        return keys

    def signing_keys(self) -> seal.Keyring:
        """The store's keys (for approval-link tokens, issue 15). Never creates one."""
        try:
            return self._keyring(None, signing=False)
        except RoastError as err:
            raise StoreUnavailable(err.message, hint=err.hint) from err

    # -- liveness --------------------------------------------------------------------------------

    def _lock_path(self, session_id: str) -> str:
        return os.path.join(self.home, "locks", f"{check_id(session_id)}.lock")

    def _probe(self, session_id: str) -> str | None:
        """Who holds the session's lock file (its text), or None when nobody does."""
        try:
            fd = os.open(self._lock_path(session_id), os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError:
            return "a process roast cannot identify"  # cannot tell: never call a session orphaned on a guess
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 400).decode("utf-8", "replace").strip()
                return text or "another roast process"
            return None
        finally:
            os.close(fd)

    def _liveness(self, row: sqlite3.Row, *, own_hold: bool = True) -> tuple[bool, str | None]:
        """(orphaned, holder) of a running row: orphaned when no process holds its lock file and
        the process recorded as its owner is gone. `own_hold=False`: this process's own hold does
        not count (it took the lock to act on the session: cancel)."""
        held = row["id"] in self._held
        if held and own_hold:
            return False, f"this process (pid {os.getpid()})"
        holder = None if held else self._probe(row["id"])  # (our own lock would look taken)
        if holder is not None:
            return False, holder
        owner = _owner(row["owner"])
        if owner and owner.get("host") == HOST and owner.get("pid") == os.getpid():
            if running_here(row["id"]):
                return False, f"this process (pid {os.getpid()})"
            return True, None  # this process stopped running it (a store error, a signal)
        if owner and owner.get("host") == HOST and process_alive(int(owner.get("pid", 0)), owner.get("start")):
            return False, f"pid {owner.get('pid')} on {HOST}"
        return True, None

    @contextmanager
    def hold(self, session_id: str, purpose: str = "roast") -> Iterator[None]:
        """Hold the session's liveness lock for the whole run; the kernel drops it if we die.

        Take it *before* `create`/`deliver`/`take_over`, so a running session is never seen
        without its lock: `with store.hold(sid, "roast resume"): store.deliver(...); ...`.
        """
        path = self._lock_path(session_id)
        with self._errors():
            self._make_home()
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            # os.open fds are not inherited by step subprocesses (O_CLOEXEC), so a child that outlives
            # roast cannot keep the session looking alive.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(5):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A `roast sessions` probe holds LOCK_SH for microseconds; don't mistake it for a run.
                if attempt < 4:
                    time.sleep(0.02)
        else:
            holder = os.read(fd, 400).decode("utf-8", "replace").strip() or "another roast process"
            os.close(fd)
            raise NotWaiting(f"session {session_id} is being handled by {holder}; nothing changed",
                             hint="wait for it to finish or reach a wait, then try again")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{purpose} (pid {os.getpid()} on {HOST})".encode(), 0)
            self._held.add(session_id)
            self._delta_seq.pop(session_id, None)
            yield
        finally:
            self._held.discard(session_id)
            self._delta_seq.pop(session_id, None)
            os.close(fd)  # closing the only fd on the open file description releases the flock

    # -- writes ----------------------------------------------------------------------------------

    def create(self, new: NewSession, state: object, *, definition: object | None = None,
               now: float | None = None) -> None:
        """Insert a `running` session (before step 1, so a crashed execute is visible), with its
        first continuation sealed in the same transaction, so a session is never seen without
        something to recover from (the fault sweep in tests/test_faults.py found that gap)."""
        check_id(new.id)
        now = _now(now)
        payload, has_code = seal.dumps(state, f"session {new.id}")
        definition_bytes = seal.dumps(definition, "the workflow definition") if definition is not None else None
        with self._write() as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (new.id,)).fetchone():
                raise UsageError(f"session {new.id} already exists")
            keys = self._keyring(db, signing=True)
            db.execute("INSERT INTO sessions (id, workflow_path, workflow_name, fingerprint, target, status, "
                       "awaiting, wait_seq, attempt, created_at, updated_at, has_definition, cwd, declares, key, "
                       "definition, owner, cursor, ahead, schemas) VALUES (?, ?, ?, ?, ?, 'running', '[]', 0, 1, ?, ?, "
                       "?, ?, ?, ?, ?, ?, 'start', ?, ?)",
                       (new.id, new.workflow_path, new.workflow_name, new.fingerprint, new.target, now, now,
                        int(new.has_definition), new.cwd, json.dumps(list(new.declares)), new.key,
                        new.definition, _me(), json.dumps(list(new.declares)), json.dumps(dict(new.schemas))))
            db.execute("INSERT INTO continuations (session_id, envelope) VALUES (?, ?)",
                       (new.id, seal.envelope(payload, has_code, keys, bind=seal.session_bind(new.id, 0), now=now)))
            if definition_bytes is not None and new.definition:
                self._put_definition(db, keys, new.definition, definition_bytes, now)

    def _put_definition(self, db: sqlite3.Connection, keys: seal.Keyring, fingerprint: str,
                        payload: tuple[bytes, bool], now: float) -> None:
        if db.execute("SELECT 1 FROM definitions WHERE fingerprint = ?", (fingerprint,)).fetchone():
            return
        blob = seal.envelope(payload[0], payload[1], keys, bind=f"definition:{fingerprint}", now=now)
        db.execute("INSERT INTO definitions (fingerprint, envelope, created_at) VALUES (?, ?, ?)",
                   (fingerprint, blob, now))

    def _running(self, db: sqlite3.Connection, session_id: str, what: str) -> sqlite3.Row:
        row = db.execute("SELECT status, wait_seq, delta_seq, pending_event FROM sessions WHERE id = ?",
                         (session_id,)).fetchone()
        if row is None:
            raise missing(session_id)
        if row["status"] != "running":
            raise refusal(self._session_in(db, session_id), what, self._last_event(db, session_id))
        return row

    def advance(self, session_id: str, *, changes: object | None, cursor: str | None,
                finished: Sequence[StepDone] = (), start: StepStart | None = None, delivered: bool = False,
                now: float | None = None) -> int:
        """One step's transaction: the history rows of the steps that finished, the changes since the
        last save (a delta, sealed), the cursor, and the start row of the next step; returns that
        step's attempt number (0 without `start`)."""
        now = _now(now)
        payload = seal.dumps(changes, f"session {session_id}") if changes is not None else None
        with self._write(session_id) as db:
            _finish_steps(db, session_id, finished)
            if payload is not None:
                # only the process holding the session writes its deltas: their number is kept here
                # after the first read (one statement less per step)
                known = self._delta_seq.get(session_id)
                if known is None:
                    row = self._running(db, session_id, "cannot save a checkpoint of")
                    known = (int(row["wait_seq"]), int(row["delta_seq"]))
                wait_seq, seq = known[0], known[1] + 1
                cur = db.execute("UPDATE sessions SET delta_seq = ?, cursor = COALESCE(?, cursor), updated_at = ?, "
                                 "pending_event = CASE WHEN ? THEN NULL ELSE pending_event END "
                                 "WHERE id = ? AND status = 'running' AND wait_seq = ?",
                                 (seq, cursor, now, int(delivered), session_id, wait_seq))
                if cur.rowcount != 1:
                    self._delta_seq.pop(session_id, None)
                    raise refusal(self._session_in(db, session_id), "cannot save a checkpoint of",
                                  self._last_event(db, session_id))
                blob = seal.envelope(payload[0], payload[1], self._keyring(db, signing=True),
                                     bind=f"delta:{session_id}:wait:{wait_seq}:{seq}", now=now)
                db.execute("INSERT INTO deltas (session_id, seq, envelope) VALUES (?, ?, ?)", (session_id, seq, blob))
                written = (wait_seq, seq)
            else:
                self._running(db, session_id, "cannot record a step of")
                written = None
            attempt = 0
            if start is not None:
                (earlier,) = db.execute("SELECT count(*) FROM steps WHERE session_id = ? AND path = ?",
                                        (session_id, start.path)).fetchone()
                attempt = int(earlier) + 1
                db.execute("INSERT INTO steps (session_id, path, name, attempt, started_at, status) "
                           "VALUES (?, ?, ?, ?, ?, 'running')",
                           (session_id, start.path, start.name, attempt, start.started_at))
        if written is not None:
            self._delta_seq[session_id] = written  # after COMMIT: a rolled-back delta does not count
        return attempt

    def spawned(self, session_id: str, path: str, attempt: int, pgid: int) -> None:
        """Record a step's process group, so recovery can refuse to start another attempt while it
        lives (issue 10). Not fsynced: a process group does not outlive a power loss either."""
        with self._write(session_id, durable=False) as db:
            db.execute("UPDATE steps SET pgid = ?, host = ? WHERE session_id = ? AND path = ? AND attempt = ?",
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
        with self._write(session_id) as db:
            _finish_steps(db, session_id, finished)
            row = self._running(db, session_id, "cannot suspend")
            keys = self._keyring(db, signing=True)
            wait_seq = int(row["wait_seq"]) + 1
            if row["pending_event"] is not None and undelivered:  # claimed, but no wait took it: back to the inbox
                db.execute("UPDATE events SET outcome = 'queued', wait_seq = NULL, wait_path = NULL, "
                           "consumed_at = NULL WHERE id = ?", (row["pending_event"],))
            envelope = seal.envelope(payload[0], payload[1], keys, bind=seal.session_bind(session_id, wait_seq),
                                     now=now)
            db.execute("INSERT OR REPLACE INTO continuations (session_id, envelope) VALUES (?, ?)",
                       (session_id, envelope))
            db.execute("DELETE FROM deltas WHERE session_id = ?", (session_id,))
            self._delta_seq.pop(session_id, None)
            if definition_bytes is not None:
                self._put_definition(db, keys, definition_bytes[0], definition_bytes[1], now)
            taken = None
            if names:
                marks = ", ".join("?" for _ in names)
                taken = db.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = ? AND outcome = 'queued' "
                                   f"AND name IN ({marks}) ORDER BY id LIMIT 1", (session_id, *names)).fetchone()
            output_json = None if output is None else json.dumps(output, default=str)
            if taken is not None:
                wait = next(a for a in awaiting if a.get("event") == taken["name"])
                db.execute("UPDATE events SET outcome = 'consumed', wait_seq = ?, wait_path = ?, consumed_at = ? "
                           "WHERE id = ?", (wait_seq, wait["path"], now, taken["id"]))
                still = sorted(set(ahead) | {a["event"] for a in awaiting if a.get("event") and a["path"] != wait["path"]})
                db.execute("UPDATE sessions SET wait_seq = ?, delta_seq = 0, cursor = ?, updated_at = ?, "
                           "output = COALESCE(?, output), pending_event = ?, attempt = attempt + 1, ahead = ? "
                           "WHERE id = ?",
                           (wait_seq, cursor, now, output_json, taken["id"], json.dumps(still), session_id))
                record = _event(taken)._replace(outcome="consumed", wait_seq=wait_seq, wait_path=wait["path"],
                                                consumed_at=now)
                return Suspended(wait_seq, record)
            deadlines = [w["deadline"] for w in awaiting if w.get("deadline") is not None]
            db.execute("UPDATE sessions SET status = 'waiting', wait_seq = ?, delta_seq = 0, awaiting = ?, "
                       "deadline = ?, cursor = ?, updated_at = ?, output = COALESCE(?, output), pending_event = NULL, "
                       "notify_pending = ?, owner = NULL, ahead = ? WHERE id = ?",
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
        accepted it (delivery without a session id). Without `holding` (the session's lock), an event
        the session waits for is not consumed: the outcome is `busy`. `workflow_path`: the session's
        workflow moved there (issue 11); recorded when the event is consumed."""
        now = _now(now)
        data_json = json.dumps(event.data)  # ensure_ascii: a lone surrogate cannot break the INSERT
        with self._write(session_id) as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
                raise missing(session_id)
            if event.event_id:
                prior = self._prior(db, session_id, event.event_id, workflow_scope)
                if prior is not None:
                    if prior["digest"] is not None and event.digest is not None and prior["digest"] != event.digest:
                        from roast.errors import BadEventData

                        raise BadEventData(f"event id {event.event_id!r} was already used with other data "
                                           f"(for session {prior['session_id']}); nothing changed",
                                           hint="use a new --event-id for a new event")
                    return Outcome("duplicate", _event(prior), self._session_in(db, prior["session_id"]))
            session = self._session_in(db, session_id)
            declares = list(session.declares)
            if wait_seq is not None and (session.status, session.wait_seq) != ("waiting", wait_seq):
                # an approval link is for one wait: never a later one (issue 15)
                raise not_waiting(session, session_id, wait_seq, self._last_event(db, session_id))

            def record(outcome: str, detail: str | None = None, **extra: Any) -> EventRecord:
                cur = db.execute(
                    "INSERT INTO events (session_id, wait_seq, name, data, received_at, source, event_id, digest, "
                    "outcome, actor, reason, wait_path, consumed_at, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (session_id, extra.get("wait_seq"), event.name, data_json, now, event.source, event.event_id,
                     event.digest, outcome, event.actor, event.reason, extra.get("wait_path"),
                     extra.get("consumed_at"), detail))
                return EventRecord(event.name, dict(event.data), now, event.source, extra.get("wait_seq"),
                                   event.event_id, outcome, event.actor, event.reason, extra.get("wait_path"),
                                   extra.get("consumed_at"), detail, cur.lastrowid)

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
                    self._claim(db, session, "timeout", {"deadline": min(a["deadline"] for a in offered),
                                                         "refused_event": event.name}, "late", now)
                    return Outcome("late", late, self._session_in(db, session_id))
                self._flip(db, session, now, consumer=offered[0].get("path"))
                consumed = record("consumed", None, wait_seq=session.wait_seq, wait_path=offered[0].get("path"),
                                  consumed_at=now)
                db.execute("UPDATE sessions SET pending_event = ?, workflow_path = COALESCE(?, workflow_path) "
                           "WHERE id = ?", (consumed.row, workflow_path, session_id))
                return Outcome("consumed", consumed, self._session_in(db, session_id))
            state = "running" if session.status == "running" else \
                f"waiting for {', '.join(session.events) or 'its deadline'}"
            if event.name not in session.ahead:
                return Outcome("not_waiting", record("not_waiting", f"it is {state}, and no wait still ahead "
                                                                    f"declares {event.name!r}"), session)
            if if_waiting:
                raise NotWaiting(f"session {session_id} is {state}, not waiting for {event.name!r}; nothing changed "
                                 "(--if-waiting)", hint="drop --if-waiting to queue the event for a later wait")
            return Outcome("queued", record("queued", None), session)

    def _prior(self, db: sqlite3.Connection, session_id: str, event_id: str,
               workflow_scope: str | None) -> sqlite3.Row | None:
        marks = ", ".join("?" for _ in ACCEPTED)
        if workflow_scope is not None:
            return db.execute(f"SELECT e.session_id, e.digest, {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))} "
                              "FROM events e JOIN sessions s ON s.id = e.session_id WHERE e.event_id = ? AND "
                              f"s.workflow_path = ? AND e.outcome IN ({marks}) ORDER BY e.id LIMIT 1",
                              (event_id, workflow_scope, *ACCEPTED)).fetchone()
        return db.execute(f"SELECT session_id, digest, {_EVENT_COLUMNS} FROM events WHERE session_id = ? AND "
                          f"event_id = ? AND outcome IN ({marks}) ORDER BY id LIMIT 1",
                          (session_id, event_id, *ACCEPTED)).fetchone()

    def _flip(self, db: sqlite3.Connection, session: Session, now: float, *, consumer: str | None = None) -> None:
        """The compare-and-set that consumes a wait: exactly one caller wins (reliability G1). The
        waits not consumed (the other branches of a parallel group) stay ahead; `consumer=None`: the
        overdue waits time out."""
        still = set(session.ahead)
        for a in session.awaiting:
            if not a.get("event"):
                continue
            if consumer is not None and a.get("path") != consumer:
                still.add(a["event"])
            elif consumer is None and (a.get("deadline") is None or a["deadline"] > now):
                still.add(a["event"])
        cur = db.execute("UPDATE sessions SET status = 'running', attempt = attempt + 1, awaiting = '[]', "
                         "deadline = NULL, updated_at = ?, owner = ?, notify_pending = 0, ahead = ? "
                         "WHERE id = ? AND status = 'waiting' AND wait_seq = ?",
                         (now, _me(), json.dumps(sorted(still)), session.id, session.wait_seq))
        if cur.rowcount != 1:
            raise not_waiting(self._session_in(db, session.id), session.id, session.wait_seq,
                              self._last_event(db, session.id))

    def _claim(self, db: sqlite3.Connection, session: Session, name: str, data: dict[str, Any], source: str,
               now: float) -> None:
        self._flip(db, session, now)
        db.execute("INSERT INTO events (session_id, wait_seq, name, data, received_at, source, outcome, consumed_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, 'consumed', ?)",
                   (session.id, session.wait_seq, name, json.dumps(data), now, source, now))

    def fire(self, session_id: str, *, wait_seq: int, source: str, now: float | None = None) -> None:
        """Claim an overdue wait for its timeout: the same compare-and-set as an event, so an event and
        a timeout racing at the deadline resolve to exactly one branch."""
        now = _now(now)
        with self._write(session_id) as db:
            session = self._session_in(db, session_id)
            if session.status != "waiting" or session.wait_seq != wait_seq:
                raise not_waiting(session, session_id, wait_seq, self._last_event(db, session_id))
            self._claim(db, session, "timeout", {"deadline": session.deadline}, source, now)

    def take_over(self, session_id: str, *, now: float | None = None) -> EventRecord | None:
        """Make this process the owner of an orphaned session (recovery); return the event that was
        claimed for it and not yet delivered, if any (saved by the claim: nothing is inferred)."""
        now = _now(now)
        with self._write(session_id) as db:
            row = db.execute("SELECT status, owner, pending_event FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise missing(session_id)
            if row["status"] != "running":
                raise not_waiting(self._session_in(db, session_id), session_id, -1, self._last_event(db, session_id))
            cur = db.execute("UPDATE sessions SET owner = ?, attempt = attempt + 1, updated_at = ?, error = NULL "
                             "WHERE id = ? AND status = 'running' AND owner IS ?",
                             (_me(), now, session_id, row["owner"]))
            if cur.rowcount != 1:
                raise NotWaiting(f"session {session_id} was taken over by another process meanwhile; nothing changed")
            if row["pending_event"] is None:
                return None
            pending = db.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (row["pending_event"],)).fetchone()
            return _event(pending) if pending is not None else None

    def reopen(self, session_id: str, *, changes: object | None = None, cursor: str | None = None,
               now: float | None = None) -> None:
        """Failed → running, for `roast retry` (issue 16): a compare-and-set on the status, so of any
        number of concurrent retries exactly one wins. The kept checkpoint is continued; `changes`
        (a delta: the rewound cursor and the outputs dropped by `--from`) is saved in the same
        transaction. Events the failure left `unconsumed` are queued again. Hold the lock first."""
        now = _now(now)
        payload = seal.dumps(changes, f"session {session_id}") if changes is not None else None
        with self._write(session_id) as db:
            row = db.execute("SELECT status, wait_seq, delta_seq FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise missing(session_id)
            if row["status"] != "failed":
                raise refusal(self._session_in(db, session_id), "cannot retry", self._last_event(db, session_id))
            if db.execute("SELECT 1 FROM continuations WHERE session_id = ?", (session_id,)).fetchone() is None:
                raise Refused(f"session {session_id} failed without keeping its state (roast 0.1 did not keep "
                              "it), so it cannot be retried; nothing changed", hint="start the workflow again")
            seq = int(row["delta_seq"])
            if payload is not None:
                seq += 1
                blob = seal.envelope(payload[0], payload[1], self._keyring(db, signing=True),
                                     bind=f"delta:{session_id}:wait:{int(row['wait_seq'])}:{seq}", now=now)
                db.execute("INSERT INTO deltas (session_id, seq, envelope) VALUES (?, ?, ?)", (session_id, seq, blob))
            cur = db.execute("UPDATE sessions SET status = 'running', owner = ?, error = NULL, finished_at = NULL, "
                             "final_output = NULL, updated_at = ?, attempt = attempt + 1, delta_seq = ?, "
                             "cursor = COALESCE(?, cursor) WHERE id = ? AND status = 'failed'",
                             (_me(), now, seq, cursor, session_id))
            if cur.rowcount != 1:
                raise NotWaiting(f"session {session_id} was retried by another process meanwhile; nothing changed")
            db.execute("UPDATE events SET outcome = 'queued' WHERE session_id = ? AND outcome = 'unconsumed'",
                       (session_id,))
        self._delta_seq.pop(session_id, None)

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
        with self._write(session_id) as db:
            _finish_steps(db, session_id, finished)
            cur = db.execute("UPDATE sessions SET status = ?, output = ?, final_output = ?, error = ?, "
                             "awaiting = '[]', deadline = NULL, finished_at = ?, updated_at = ?, pending_event = NULL, "
                             "owner = NULL, cursor = COALESCE(?, cursor) WHERE id = ? AND status = 'running'",
                             (status, output_json, final_output, error, now, now, cursor, session_id))
            if cur.rowcount != 1:
                raise refusal(self._session_in(db, session_id), f"cannot mark as {status}",
                              self._last_event(db, session_id))
            if not keep_state:
                db.execute("DELETE FROM deltas WHERE session_id = ?", (session_id,))
                db.execute("DELETE FROM continuations WHERE session_id = ?", (session_id,))
                db.execute("UPDATE sessions SET delta_seq = 0 WHERE id = ?", (session_id,))
            db.execute("UPDATE events SET outcome = 'unconsumed' WHERE session_id = ? AND outcome = 'queued'",
                       (session_id,))

    def interrupted(self, session_id: str, *, error: str, finished: Sequence[StepDone] = (),
                    now: float | None = None) -> None:
        """Roast is being stopped (a signal): record it and mark the steps in flight `interrupted`.
        The session stays `running`, and is orphaned once this process has exited."""
        now = _now(now)
        with self._write(session_id) as db:
            _finish_steps(db, session_id, finished)
            db.execute("UPDATE steps SET status = 'interrupted', finished_at = ? WHERE session_id = ? AND "
                       "finished_at IS NULL", (now, session_id))
            db.execute("UPDATE sessions SET error = ?, updated_at = ?, owner = NULL WHERE id = ? AND status = 'running'",
                       (error, now, session_id))

    def record_step(self, session_id: str, start: StepStart, done: StepDone | None) -> int:
        """A step that ran outside the session's drive (a `notify:` step of a waiting session): its
        history row, written whole; returns its attempt number."""
        with self._write(session_id) as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
                raise missing(session_id)
            (earlier,) = db.execute("SELECT count(*) FROM steps WHERE session_id = ? AND path = ?",
                                    (session_id, start.path)).fetchone()
            attempt = int(earlier) + 1
            db.execute("INSERT INTO steps (session_id, path, name, attempt, started_at, finished_at, status, output, "
                       "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (session_id, start.path, start.name, attempt, start.started_at,
                        done.finished_at if done else None, done.status if done else "running",
                        done.output if done else None, done.error if done else None))
        return attempt

    def notified(self, session_id: str, *, wait_seq: int) -> None:
        with self._write(session_id) as db:
            db.execute("UPDATE sessions SET notify_pending = 0 WHERE id = ? AND wait_seq = ?", (session_id, wait_seq))

    def cancel(self, session_id: str, *, reason: str | None = None, now: float | None = None) -> Session:
        """Cancel a waiting session, or a running one whose process is gone (orphaned). Accepts a prefix."""
        now = _now(now)
        sid = self.get(session_id).id
        with self.hold(sid, "roast cancel"), self._write(sid) as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (sid,)).fetchone()
            if row is None:
                raise missing(sid)
            session = _session(row, *self._liveness(row, own_hold=False)) if row["status"] == "running" \
                else _session(row)
            if session.status == "running" and not session.orphaned:
                raise Refused(f"session {sid} is running in {session.holder or 'another roast process'}; "
                              "nothing changed", hint="wait for it to finish or reach a wait, then cancel it")
            if session.status not in ("waiting", "running"):
                raise refusal(session, "cannot cancel", self._last_event(db, sid))
            db.execute("UPDATE sessions SET status = 'cancelled', reason = ?, awaiting = '[]', deadline = NULL, "
                       "finished_at = ?, updated_at = ?, pending_event = NULL, owner = NULL WHERE id = ?",
                       (reason, now, now, sid))
            db.execute("DELETE FROM continuations WHERE session_id = ?", (sid,))
            db.execute("DELETE FROM deltas WHERE session_id = ?", (sid,))
            db.execute("UPDATE events SET outcome = 'unconsumed' WHERE session_id = ? AND outcome = 'queued'", (sid,))
            return self._session_in(db, sid)

    def prune(self, *, older_than: float, now: float | None = None) -> int:
        """Delete finished sessions last updated more than `older_than` seconds ago; return how many."""
        if older_than < 0:
            raise UsageError(f"older_than must be zero or more seconds, not {older_than!r}")
        cutoff = _now(now) - older_than
        marks = ", ".join("?" for _ in FINISHED)
        with self._write() as db:
            ids = [r[0] for r in db.execute(f"SELECT id FROM sessions WHERE status IN ({marks}) "
                                            "AND updated_at < ?", (*FINISHED, cutoff))]
            for chunk in range(0, len(ids), 500):
                part = ids[chunk:chunk + 500]
                qs = ", ".join("?" for _ in part)
                for table, column in (("events", "session_id"), ("steps", "session_id"), ("deltas", "session_id"),
                                      ("continuations", "session_id"), ("sessions", "id")):
                    db.execute(f"DELETE FROM {table} WHERE {column} IN ({qs})", part)
            db.execute("DELETE FROM definitions WHERE fingerprint NOT IN "
                       "(SELECT definition FROM sessions WHERE definition IS NOT NULL)")
        for sid in ids:  # after COMMIT: a lock file without a row is harmless, the reverse is not
            if SESSION_ID.fullmatch(sid):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._lock_path(sid))
        return len(ids)

    # -- reads -----------------------------------------------------------------------------------

    def _session(self, row: sqlite3.Row) -> Session:
        orphaned, holder = self._liveness(row) if row["status"] == "running" else (False, None)
        return _session(row, orphaned, holder)

    def _session_in(self, db: sqlite3.Connection, session_id: str) -> Session:
        row = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise missing(session_id)
        return self._session(row)

    def _last_event(self, db: sqlite3.Connection, session_id: str) -> tuple[str, float] | None:
        last = db.execute("SELECT name, received_at FROM events WHERE session_id = ? AND outcome = 'consumed' "
                          "ORDER BY id DESC LIMIT 1", (session_id,)).fetchone()
        return (last[0], last[1]) if last is not None else None

    def get(self, id_or_prefix: str) -> Session:
        """The session with this id, or the only one whose id starts with it (like git's short SHAs)."""
        from roast.errors import Ambiguous

        check_id(id_or_prefix)
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (id_or_prefix,)).fetchall()
            if db is not None and not rows:
                # A range query, never LIKE: '_' is a LIKE wildcard and LIKE ignores case (§5 row 4).
                rows = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id >= ? AND id < ? || '{{' "
                                  "ORDER BY created_at DESC LIMIT 11", (id_or_prefix, id_or_prefix)).fetchall()
        if not rows:
            raise missing(id_or_prefix)
        if len(rows) > 1:
            shown = [f"{r['id']} {r['status']} {r['workflow_name']} (created {when(r['created_at'])})"
                     for r in rows[:10]]
            more = "\n  and more" if len(rows) > 10 else ""
            raise Ambiguous(f"session id prefix {id_or_prefix!r} is ambiguous; the candidates are:\n  "
                            + "\n  ".join(shown) + more, hint="give more characters of the id")
        return self._session(rows[0])

    def history(self, session_id: str) -> list[StepRecord]:
        sid = self.get(session_id).id
        with self._read() as db:
            assert db is not None  # get() found the session
            rows = db.execute("SELECT path, name, attempt, started_at, finished_at, status, output, pgid, host, error "
                              "FROM steps WHERE session_id = ? ORDER BY rowid", (sid,)).fetchall()
        return [StepRecord(*r) for r in rows]

    def events(self, session_id: str) -> list[EventRecord]:
        sid = self.get(session_id).id
        with self._read() as db:
            assert db is not None
            rows = db.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = ? ORDER BY id",
                              (sid,)).fetchall()
        return [_event(r) for r in rows]

    def waiting_for(self, workflow_path: str) -> list[Session]:
        """Waiting sessions of one workflow, newest first (`roast resume` without --session-id)."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE workflow_path = ? AND status = 'waiting' "
                "ORDER BY created_at DESC, id DESC", (workflow_path,)).fetchall()
        return [self._session(r) for r in rows]

    def open_of(self, workflow_path: str) -> list[Session]:
        """Waiting and running sessions of one workflow, newest first."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE workflow_path = ? AND status IN ('waiting', 'running') "
                "ORDER BY created_at DESC, id DESC", (workflow_path,)).fetchall()
        return [self._session(r) for r in rows]

    def with_key(self, workflow_path: str, key: str) -> list[Session]:
        """Open sessions of a workflow with this correlation key (issue 15), newest first."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE workflow_path = ? AND key = ? AND status IN "
                "('waiting', 'running') ORDER BY created_at DESC", (workflow_path, key)).fetchall()
        return [self._session(r) for r in rows]

    def find_event(self, workflow_path: str, event_id: str) -> tuple[Session, EventRecord] | None:
        with self._read() as db:
            if db is None:
                return None
            row = self._prior(db, "", event_id, workflow_path)
            if row is None:
                return None
            return self._session_in(db, row["session_id"]), _event(row)

    def overdue(self, *, now: float | None = None) -> list[Session]:
        """Waiting sessions whose deadline has passed, earliest deadline first."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'waiting' AND deadline IS NOT NULL "
                "AND deadline <= ? ORDER BY deadline, id", (_now(now),)).fetchall()
        return [self._session(r) for r in rows]

    def orphans(self) -> list[Session]:
        """Running sessions whose process is gone."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'running' ORDER BY created_at").fetchall()
        return [s for s in (self._session(r) for r in rows) if s.orphaned]

    def notify_due(self) -> list[Session]:
        """Waiting sessions whose notify steps have not finished (a crash in between: at least once)."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'waiting' AND notify_pending = 1").fetchall()
        return [self._session(r) for r in rows]

    def load_state(self, session: Session) -> Continuation:
        """Verify and unpickle the session's continuation and every delta after it, in order."""
        check_id(session.id)
        with self._read() as db:
            if db is None:
                raise missing(session.id)
            row = db.execute("SELECT envelope FROM continuations WHERE session_id = ?", (session.id,)).fetchone()
            deltas = db.execute("SELECT seq, envelope FROM deltas WHERE session_id = ? ORDER BY seq",
                                (session.id,)).fetchall()
            wait_seq = db.execute("SELECT wait_seq FROM sessions WHERE id = ?", (session.id,)).fetchone()
        if row is None:
            from roast.errors import StateRefused

            raise StateRefused(f"session {session.id} has no saved state (it is {session.status}); nothing can be "
                               "continued from it")
        keys = self._keyring(None, signing=False)
        seq_now = int(wait_seq[0]) if wait_seq is not None else session.wait_seq
        base = seal.unseal(bytes(row[0]), keys, bind=seal.session_bind(session.id, seq_now))
        changes = [seal.unseal(bytes(blob), keys, bind=f"delta:{session.id}:wait:{seq_now}:{seq}")
                   for seq, blob in deltas]
        return Continuation(base, changes)

    def has_definition(self, fingerprint: str) -> bool:
        with self._read() as db:
            return db is not None and db.execute("SELECT 1 FROM definitions WHERE fingerprint = ?",
                                                 (fingerprint,)).fetchone() is not None

    def load_definition(self, fingerprint: str) -> object | None:
        with self._read() as db:
            row = None if db is None else db.execute("SELECT envelope FROM definitions WHERE fingerprint = ?",
                                                     (fingerprint,)).fetchone()
        if row is None:
            return None
        return seal.unseal(bytes(row[0]), self._keyring(None, signing=False), bind=f"definition:{fingerprint}",
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
            where.append(f"status IN ({', '.join('?' for _ in sql_statuses)})")
            args.extend(sql_statuses)
        if workflow is not None:
            where.append("(workflow_path = ? OR workflow_name = ?)")
            args.extend((workflow, workflow))
        if older_than is not None:
            where.append("updated_at < ?")
            args.append(_now(now) - older_than)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ORDER BY (status IN ('running', 'waiting')) DESC, created_at DESC, id DESC" if open_first \
            else "ORDER BY created_at DESC, id DESC"
        with self._read() as db:
            if db is None:
                return [], 0
            if orphaned_only:
                rows = db.execute(f"SELECT {_COLUMNS} FROM sessions {clause} {order}", args).fetchall()
                found = [s for s in (self._session(r) for r in rows) if s.orphaned]
                page = found[offset:] if limit is None else found[offset:offset + limit]
                return page, len(found)
            (total,) = db.execute(f"SELECT count(*) FROM sessions {clause}", args).fetchone()
            rows = db.execute(f"SELECT {_COLUMNS} FROM sessions {clause} {order} LIMIT ? OFFSET ?",
                              (*args, -1 if limit is None else limit, offset)).fetchall()
        return [self._session(r) for r in rows], int(total)

    def all_envelopes(self) -> Iterator[tuple[str, str, bytes]]:
        """Every sealed blob (table, key, envelope): for `roast store copy` and the token checks in tests."""
        with self._read() as db:
            if db is None:
                return
            for table, column in (("continuations", "session_id"), ("deltas", "session_id || ':' || seq"),
                                  ("definitions", "fingerprint")):
                for key, blob in db.execute(f"SELECT {column}, envelope FROM {table}"):
                    yield table, str(key), bytes(blob)

    def dump(self) -> dict[str, builtins.list[dict[str, Any]]]:
        """Every row of every table, for `roast store copy` (envelopes byte-identical)."""
        with self._read() as db:
            if db is None:
                return {}
            out: dict[str, list[dict[str, Any]]] = {}
            for table in ("sessions", "continuations", "deltas", "steps", "events", "definitions"):
                out[table] = [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY rowid"
                                                          if table != "deltas" else
                                                          "SELECT * FROM deltas ORDER BY session_id, seq")]
            return out


# ---------------------------------------------------------------------------------------------
# helpers used inside transactions

def _finish_steps(db: sqlite3.Connection, session_id: str, finished: Sequence[StepDone]) -> None:
    if finished:
        db.executemany("UPDATE steps SET finished_at = ?, status = ?, output = ?, error = ? "
                       "WHERE session_id = ? AND path = ? AND attempt = ?",
                       [(f.finished_at, f.status, f.output, f.error, session_id, f.path, f.attempt)
                        for f in finished])


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        # SQLite may already have rolled back (SQLITE_FULL); closing the connection rolls back too, so a
        # failing ROLLBACK must not hide the error that brought us here.
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _owner(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _session(row: sqlite3.Row, orphaned: bool = False, holder: str | None = None) -> Session:
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


def _event(row: sqlite3.Row) -> EventRecord:
    return EventRecord(row["name"], json.loads(row["data"]), row["received_at"], row["source"], row["wait_seq"],
                       row["event_id"], row["outcome"], row["actor"], row["reason"], row["wait_path"],
                       row["consumed_at"], row["detail"], row["id"])
