"""The SQLite dialect of the session store: one file under ROAST_HOME (`sessions.db`), for one
machine. The operations and their SQL are `roast.sql`'s; this module connects, migrates, runs the
write transaction, maps errors, keeps the key file and tells whether a session is live.

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
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast import seal
from roast.errors import NotWaiting, RoastError, StoreUnavailable
from roast.migrations import SQLITE as MIGRATIONS
from roast.sql import COLUMNS, SQLStore, Tx, _session
from roast.store import HOST, SESSION_ID, Session, check_id, fault_point, mine, owner_of, process_alive
from roast.store import roast_home, running_here

if TYPE_CHECKING:
    import builtins
    from typing import Any


__all__ = ["MIGRATIONS", "SQLiteStore", "process_alive"]


class SQLiteStore(SQLStore):
    """The session store in ROAST_HOME: cheap to construct, creates nothing until first written.

    >>> import tempfile
    >>> store = SQLiteStore(tempfile.mkdtemp())
    >>> store.list()[1]
    0
    """

    shared = False
    returning = sqlite3.sqlite_version_info >= (3, 35)  # older SQLite: the claim reads its session again

    def __init__(self, home: str | os.PathLike[str] | None = None, db_path: str | None = None) -> None:
        self.home = roast_home(home)
        self.db_path = db_path or os.path.join(self.home, "sessions.db")
        # True once a read had to fall back to an immutable read-only view (reliability §5 row 12);
        # the CLI warns that what it shows may be stale.
        self.read_only_view = False
        # Private test hook: run on every new connection (e.g. PRAGMA max_page_count for disk full).
        self._on_connect: Any = None
        self._keys: seal.Keyring | None = None
        self._definitions: dict[str, tuple[bytes, object]] = {}
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._conn_thread = 0
        self._local: Any = None  # threading.local, made when a second thread uses the store
        self._held: set[str] = set()  # sessions whose lock this process holds (through this store)
        self._delta_seq = {}
        self._groups, self._batch_holds = {}, {}

    def describe(self) -> str:
        return self.db_path

    # -- connections -----------------------------------------------------------------------------

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
    def _write(self, session_id: str | None = None, *, durable: bool = True) -> Iterator[Tx]:
        """One `BEGIN IMMEDIATE … COMMIT`; any error rolls it back and nothing changes. Inside a
        write group (`roast.sql_group`), the group's transaction instead."""
        group = self._joined()
        if group is not None:
            with group.write(session_id) as tx:
                yield tx
            return
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
                yield Tx(db)
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
    def _read(self) -> Iterator[Tx | None]:
        """A connection for reading, or None when no store exists yet (reads create nothing)."""
        with self._errors():
            cached = self._connection()
            if cached is not None:
                yield Tx(cached)
                return
            if not os.path.exists(self.db_path):
                yield None
                return
            if not self._writable():
                # a read-only DB: an immutable view, so no -wal/-shm is created with its mode (issue 10)
                self._check_file()
                with contextlib.closing(self._open(self._ro_uri())) as view:
                    self.read_only_view = True
                    yield Tx(view)
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
                    yield Tx(view)
                return
            yield Tx(self._keep(db))

    def _ro_uri(self) -> str:
        from urllib.parse import quote  # only for a read-only store

        return f"file:{quote(self.db_path)}?mode=ro&immutable=1"

    # -- keys ------------------------------------------------------------------------------------

    def key_path(self) -> str:
        return os.path.join(self.home, "secret.key")

    def _own_keys(self, tx: Tx | None, *, signing: bool) -> seal.Keyring:
        """The key file in ROAST_HOME, made by the first write to a store with nothing sealed yet."""
        def may_create() -> bool:
            return signing and tx is not None and not any(
                tx.row(f"SELECT 1 AS one FROM {table} LIMIT 1") for table in ("continuations", "deltas", "definitions"))

        try:
            return seal.local_keys(self.key_path(), may_create=may_create)
        except StoreUnavailable as err:
            if signing:
                raise
            from roast.errors import StateRefused  # reading: the state cannot be verified

            raise StateRefused(err.message, hint=err.hint) from err

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

    def _liveness(self, row: Any, *, own_hold: bool = True) -> tuple[bool, str | None]:
        """(orphaned, holder) of a running row: orphaned when no process holds its lock file and
        the process recorded as its owner is gone. `own_hold=False`: this process's own hold does
        not count (it took the lock to act on the session: cancel)."""
        held = row["id"] in self._held
        if held and own_hold:
            return False, f"this process (pid {os.getpid()})"
        holder = None if held else self._probe(row["id"])  # (our own lock would look taken)
        if holder is not None:
            return False, holder
        owner = owner_of(row["owner"])
        if mine(row["owner"]):
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
            # os.open fds are not inherited by step subprocesses (O_CLOEXEC), so a child that outlives
            # roast cannot keep the session looking alive.
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:  # the first lock of this home (issue 25: not two makedirs per claim)
                self._make_home()
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(5):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A `roast sessions` probe holds LOCK_SH for microseconds; don't mistake it for a run.
                if attempt < 4:
                    self.settle()  # a batch's writes (roast.claiming) never keep the write lock while it waits
                    time.sleep(0.02)
        else:
            holder = os.read(fd, 400).decode("utf-8", "replace").strip() or "another roast process"
            os.close(fd)
            raise NotWaiting(f"session {session_id} is being handled by {holder}; nothing changed",
                             hint="wait for it to finish or reach a wait, then try again")
        try:
            text = f"{purpose} (pid {os.getpid()} on {HOST})".encode()
            os.pwrite(fd, text, 0)  # then cut to its length: truncating to 0 first costs a flush on ext4
            os.ftruncate(fd, len(text))
            self._held.add(session_id)
            self._delta_seq.pop(session_id, None)
            yield
        finally:
            self._held.discard(session_id)
            self._delta_seq.pop(session_id, None)
            os.close(fd)  # closing the only fd on the open file description releases the flock

    # -- the dialect's part of roast.sql ---------------------------------------------------------

    def _lock(self, tx: Tx, session_id: str) -> Any:
        return tx.row(f"SELECT {COLUMNS}, pending_event, delta_seq FROM sessions WHERE id = ?", (session_id,))

    def _sessions(self, tx: Tx, rows: Sequence[Any]) -> builtins.list[Session]:
        return [_session(r, *self._liveness(r)) if r["status"] == "running" else _session(r) for r in rows]

    def _pruned(self, ids: Sequence[str]) -> None:
        for sid in ids:  # after COMMIT: a lock file without a row is harmless, the reverse is not
            if SESSION_ID.fullmatch(sid):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._lock_path(sid))

    def signing_keys(self) -> seal.Keyring:
        """The store's keys (for approval-link tokens, issue 15). Never creates one."""
        try:
            return self._keyring(None, signing=False)
        except RoastError as err:
            raise StoreUnavailable(err.message, hint=err.hint) from err


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        # SQLite may already have rolled back (SQLITE_FULL); closing the connection rolls back too, so a
        # failing ROLLBACK must not hide the error that brought us here.
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")

