"""ROAST_HOME, the SQLite schema and migrations, sealing continuations (cloudpickle + HMAC), the
exactly-once claim, and session liveness locks.

Every write is one `BEGIN IMMEDIATE … COMMIT` on a short-lived connection (reliability §1.6), so a
refused or failed operation changes nothing. Reads never touch the `continuations` table, except
`load_state`, which verifies the HMAC before anything is unpickled (reliability §2.2). Must not
import yaml or rich: `roast sessions` starts up through this module; cloudpickle is imported only
by the functions that pickle.
"""
from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from roast.errors import NotFound, NotWaiting, Refused, RoastError, StateRefused, StoreUnavailable, UsageError

SESSION_ID = re.compile(r"[0-9a-z][0-9a-z_-]{3,63}")
STATUSES = ("running", "waiting", "completed", "failed", "timed_out", "cancelled")
FINISHED = ("completed", "failed", "timed_out", "cancelled")

# Read at load time to decide whether a code-bearing continuation may be unpickled here (§2.4);
# tests monkeypatch them to fake another interpreter.
PYTHON_VERSION = ".".join(str(part) for part in sys.version_info[:3])
PYTHON_IMPL = sys.implementation.name

MAGIC = b"ROAST"
FORMAT = 1
KEY_ID = "k1"
_TAG_CONTEXT = b"roast-state-v1\x00"
_TAG_LEN = 32
_PREFIX = len(MAGIC) + 1 + 4  # magic, format byte, u32 header length
_MAX_HEADER = 64 * 1024
_KEY_LEN = 32
_DEFAULT_BUSY_TIMEOUT = 5.0
_IMPL_NAMES = {"cpython": "CPython", "pypy": "PyPy"}

# Numbered migrations, applied in order and recorded in PRAGMA user_version. Never edit an entry
# that has shipped: append a new one.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: the first schema
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
]

_COLUMNS = ("id, workflow_path, workflow_name, fingerprint, target, status, cursor, awaiting, deadline, "
            "wait_seq, attempt, created_at, updated_at, finished_at, error, output, final_output, reason, "
            "has_definition")


@dataclass(frozen=True, slots=True)
class Session:
    """One row of `roast sessions`; `orphaned` is filled in by the store from the lock file."""

    id: str
    workflow_path: str
    workflow_name: str
    fingerprint: str
    target: str | None
    status: str
    cursor: str | None
    awaiting: list[dict[str, Any]]
    deadline: float | None
    wait_seq: int
    attempt: int
    created_at: float
    updated_at: float
    finished_at: float | None
    error: str | None
    output: dict[str, Any] | None
    final_output: str | None
    reason: str | None
    has_definition: bool
    orphaned: bool = False  # status 'running' and no process holds its lock file

    @property
    def events(self) -> list[str]:
        """The event names a waiting session accepts, each once, in step order ([] unless waiting)."""
        if self.status != "waiting":
            return []
        return list(dict.fromkeys(a["event"] for a in self.awaiting or []))

    def __str__(self) -> str:
        """`session 0mww81wj2g4a3 (deploy) waiting for approved, rejected at steps[2] › wait_for_event`."""
        status = "orphaned" if self.orphaned else self.status
        text = f"session {self.id} ({self.workflow_name}) {status}"
        if self.status == "waiting":
            text += " for " + ", ".join(self.events)
        return text + (f" at {self.cursor}" if self.cursor and self.status in ("waiting", "running") else "")


@dataclass(frozen=True, slots=True)
class StepRecord:
    path: str
    name: str
    attempt: int
    started_at: float
    finished_at: float | None
    status: str
    output: str | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    name: str
    data: dict[str, Any]
    received_at: float
    source: str
    wait_seq: int


# ---------------------------------------------------------------------------------------------
# ROAST_HOME and ids

def roast_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store directory: `explicit`, else `$ROAST_HOME`, else `~/.roast`. Creates nothing."""
    raw = explicit if explicit is not None else (os.environ.get("ROAST_HOME") or "~/.roast")
    home = Path(raw).expanduser()
    if home.exists() and not home.is_dir():
        raise UsageError(f"ROAST_HOME {str(home)!r} is a file, not a directory",
                         hint="point ROAST_HOME (or home=) at a directory; roast creates it if missing")
    return home


def new_id(now: float | None = None) -> str:
    """A sortable session id: base36 epoch milliseconds (9 chars) + 4 random base36 chars."""
    ms = int((time.time() if now is None else now) * 1000)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    head = ""
    while ms:
        ms, r = divmod(ms, 36)
        head = digits[r] + head
    return head.rjust(9, "0") + "".join(secrets.choice(digits) for _ in range(4))


def check_id(text: str) -> str:
    """Return `text` if it is a well-formed session id (or prefix); else UsageError (exit 2)."""
    # SPEC §10: checked before any path or SQL use, since lock files are paths.
    if not isinstance(text, str) or not SESSION_ID.fullmatch(text):
        raise UsageError(f"{text!r} is not a session id",
                         hint="ids are 4-64 characters: lowercase letters, digits, '_' and '-' "
                              "(see `roast sessions`)")
    return text


def _when(t: float | None) -> str:
    return "an unknown time" if t is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _now(now: float | None) -> float:
    return time.time() if now is None else now


# ---------------------------------------------------------------------------------------------
# Sealing (reliability §2.2-§2.4)

def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _has_code(payload: bytes) -> bool:
    """True if the pickle rebuilds functions or classes by value (cloudpickle reducers, CodeType)."""
    if b"cloudpickle" not in payload and b"CodeType" not in payload and b"FunctionType" not in payload:
        return False  # every global's name appears as a string at least once
    memo: dict[int, object] = {}
    recent: list[object] = []  # values pushed lately; None for anything not a string
    import pickletools  # only when sealing state that might hold code

    for op, arg, _pos in pickletools.genops(payload):
        name = op.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(arg)
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(int(arg)))  # type: ignore[arg-type]
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = recent[-1] if recent else None  # type: ignore[arg-type]
        elif name in ("GLOBAL", "INST", "STACK_GLOBAL"):
            if name == "STACK_GLOBAL":
                module, qual = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            else:
                module, _, qual = str(arg).partition(" ")
            if isinstance(module, str) and (module.startswith("cloudpickle")
                                            or (module == "types" and qual in ("CodeType", "FunctionType"))):
                return True
            recent.append(None)
        else:
            recent.append(None)
        del recent[:-4]
    return False


def _pickle(state: object, session_id: str) -> tuple[bytes, bool]:
    """Pickle a state. Plain data (every YAML workflow's) goes through the standard pickler, so
    neither saving nor resuming it imports cloudpickle (start-up, reliability §2.4); cloudpickle
    takes what the standard one cannot do portably: code, local classes, `__main__` functions."""
    import pickle

    try:
        plain: bytes | None = pickle.dumps(state, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        plain = None  # code, local classes...: cloudpickle below
    if plain is not None and b"__main__" not in plain:  # a script's globals would not load elsewhere
        return plain, False
    import cloudpickle

    try:
        payload = cloudpickle.dumps(state)
    except Exception as err:  # cloudpickle raises PicklingError, TypeError, AttributeError, ...
        raise UsageError(f"the state of session {session_id} cannot be saved: "
                         f"{type(err).__name__}: {err}",
                         hint="keep step outputs plain data (strings, numbers, lists, dicts)") from err
    return payload, _has_code(payload)


def _envelope(payload: bytes, has_code: bool, key: bytes, *, session_id: str, wait_seq: int,
              now: float) -> bytes:
    header = _canonical({
        "v": FORMAT, "kid": KEY_ID, "session": session_id, "wait_seq": wait_seq, "created": now,
        "py": PYTHON_VERSION, "impl": PYTHON_IMPL, "cloudpickle": _cloudpickle_version(),
        "payload_len": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(), "has_code": has_code,
    })
    body = MAGIC + bytes([FORMAT]) + struct.pack(">I", len(header)) + header + payload
    return body + hmac.new(key, _TAG_CONTEXT + body, hashlib.sha256).digest()


def seal(state: object, *, key: bytes, session_id: str, wait_seq: int, now: float | None = None) -> bytes:
    """Pickle `state` and sign it, bound to one session and one wait.

    >>> env = seal({"x": 1}, key=b"k" * 32, session_id="abcd1234", wait_seq=1)
    >>> unseal(env, key=b"k" * 32, session_id="abcd1234", wait_seq=1)
    {'x': 1}
    """
    payload, has_code = _pickle(state, session_id)
    return _envelope(payload, has_code, key, session_id=session_id, wait_seq=wait_seq, now=_now(now))


def _cloudpickle_version(load: bool = False) -> str | None:
    """cloudpickle's version if this process uses it (None in a header: the state never needed it)."""
    module = sys.modules.get("cloudpickle")
    if module is None and load:
        import cloudpickle as module
    return getattr(module, "__version__", None)


def _major_minor(version: object) -> str:
    return ".".join(str(version).split(".")[:2])


def unseal(envelope: bytes, *, key: bytes, session_id: str, wait_seq: int) -> object:
    """Verify `envelope` (lengths, HMAC, binding, versions), then unpickle it; else StateRefused.

    Nothing is unpickled unless every check passes (reliability §2.2: never `loads` on a refusal).
    """
    who = f"the state of session {session_id}"
    size = len(envelope)
    if size < len(MAGIC) + 1 or envelope[:len(MAGIC)] != MAGIC:
        if size < len(MAGIC) and MAGIC.startswith(bytes(envelope)):
            raise StateRefused(f"{who} is truncated ({size:,} bytes): disk or copy damage; it was not loaded")
        raise StateRefused(f"{who} is not a roast state envelope (bad magic); it was not loaded")
    if envelope[len(MAGIC)] != FORMAT:
        raise StateRefused(f"{who} was written by a newer roast (format v{envelope[len(MAGIC)]}); "
                           "it was not loaded", hint="upgrade roast")
    if size < _PREFIX + _TAG_LEN:
        raise StateRefused(f"{who} is truncated ({size:,} bytes): disk or copy damage; it was not loaded")
    (header_len,) = struct.unpack(">I", envelope[len(MAGIC) + 1:_PREFIX])
    header: dict[str, Any] | None = None
    if header_len <= _MAX_HEADER and _PREFIX + header_len <= size:
        try:
            parsed = json.loads(envelope[_PREFIX:_PREFIX + header_len])
        except ValueError:
            parsed = None  # unauthenticated bytes: reported as an integrity failure below
        header = parsed if isinstance(parsed, dict) else None
    if header is not None:
        payload_len = header.get("payload_len")
        if isinstance(payload_len, int) and not isinstance(payload_len, bool) and payload_len >= 0:
            expected = _PREFIX + header_len + payload_len + _TAG_LEN
            if size < expected:
                raise StateRefused(f"{who} is truncated ({size:,} of {expected:,} bytes): disk or copy "
                                   "damage; it was not loaded")
    elif header_len <= _MAX_HEADER and _PREFIX + header_len + _TAG_LEN > size:
        raise StateRefused(f"{who} is truncated ({size:,} bytes, header alone needs "
                           f"{_PREFIX + header_len + _TAG_LEN:,}): disk or copy damage; it was not loaded")
    body, tag = envelope[:-_TAG_LEN], envelope[-_TAG_LEN:]
    good = hmac.new(key, _TAG_CONTEXT + body, hashlib.sha256).digest()
    if not hmac.compare_digest(good, tag) or header is None:
        raise StateRefused(f"{who} failed its integrity check (modified outside roast?); it was not loaded",
                           hint=f"`roast cancel {session_id}` still works; other sessions are not affected")
    payload = body[_PREFIX + header_len:]
    if (header.get("v") != FORMAT or len(payload) != header.get("payload_len")
            or hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")):
        raise StateRefused(f"{who} has an inconsistent header although it is signed; it was not loaded")
    if header.get("session") != session_id or header.get("wait_seq") != wait_seq:
        raise StateRefused(f"{who} holds the state of session {header.get('session')} at wait "
                           f"#{header.get('wait_seq')}, not of session {session_id} at wait #{wait_seq} "
                           "(copied between sessions or waits?); it was not loaded")
    saved_impl = _IMPL_NAMES.get(str(header.get("impl")), str(header.get("impl")))
    here_impl = _IMPL_NAMES.get(PYTHON_IMPL, PYTHON_IMPL)
    saved = f"{saved_impl} {header.get('py')}" + (f" / cloudpickle {header['cloudpickle']}"
                                                  if header.get("cloudpickle") else "")
    here = f"{here_impl} {PYTHON_VERSION}" + (f" / cloudpickle {_cloudpickle_version(load=True)}"
                                              if header.get("has_code") else "")
    # §2.4: code pickled by value breaks across minor versions (cloudpickle#293, #451, #505), and some
    # such loads segfault, so refuse before trying. Plain data is portable and loads anywhere.
    if header.get("has_code") and (header.get("impl") != PYTHON_IMPL
                                   or _major_minor(header.get("py")) != _major_minor(PYTHON_VERSION)):
        raise StateRefused(f"session {session_id} was saved by {saved}; this is {here}, and its state holds "
                           "code that cannot be loaded here; it was not loaded",
                           hint=f"resume it with {saved_impl} {_major_minor(header.get('py'))}, "
                                f"or `roast cancel {session_id}`")
    try:
        if not header.get("has_code"):
            import pickle  # no cloudpickle reducer in it: the standard unpickler loads it, and faster

            return pickle.loads(payload)
        import cloudpickle

        return cloudpickle.loads(payload)
    except Exception as err:  # the signature was good: version drift or a module that moved
        raise StateRefused(f"session {session_id} was saved by {saved}; this is {here}, and its state "
                           f"cannot be loaded here ({type(err).__name__}: {err})",
                           hint=f"resume it with {saved_impl} {_major_minor(header.get('py'))}, "
                                f"or `roast cancel {session_id}`") from err


# ---------------------------------------------------------------------------------------------
# The store

class Store:
    """The session store in ROAST_HOME: cheap to construct, creates nothing until first written.

    >>> import tempfile
    >>> store = Store(tempfile.mkdtemp())
    >>> sid = store.create(workflow_path="/w/workflow.yml", workflow_name="w", fingerprint="f", target=None)
    >>> store.get(sid[:6]).status
    'running'
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = roast_home(home)
        self.db_path = self.home / "sessions.db"
        # True once a read had to fall back to an immutable read-only view (reliability §5 row 12);
        # the CLI warns that what it shows may be stale.
        self.read_only_view = False
        # Private test hook: run on every new connection (e.g. PRAGMA max_page_count for disk full).
        self._on_connect: Callable[[sqlite3.Connection], None] | None = None
        # One connection per thread, reopened after a fork: opening and closing per operation cost
        # a connect, the schema check and a WAL checkpoint on every close (bench/README.md).
        self._local = threading.local()

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
                                    f"({err.strerror or err}); nothing changed")
        if "locked" in low or "busy" in low or name.startswith("SQLITE_BUSY"):
            return StoreUnavailable(f"the session store {db} is busy (another roast process has held the "
                                    f"write lock for more than {self._busy_timeout():g} s); nothing changed, "
                                    "try again")
        if "full" in low or name.startswith("SQLITE_FULL"):
            what = f"could not save session {session_id}" if session_id else "could not write"
            still = f"; session {session_id} is still at its previous step" if session_id else ""
            return StoreUnavailable(f"{what} (disk full at {db}); nothing changed{still}",
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
        # pathlib gives missing parents default permissions, but the home itself is private (§2.2).
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _create_files(self) -> None:
        self._make_home()
        try:
            # Created 0600 before the first connect: SQLite gives -wal/-shm the DB file's mode (§2.2).
            os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass

    def _open(self, uri: str | None = None) -> sqlite3.Connection:
        target = uri if uri is not None else str(self.db_path)
        db = sqlite3.connect(target, timeout=self._busy_timeout(), isolation_level=None,
                             uri=uri is not None)
        db.row_factory = sqlite3.Row
        try:
            if uri is None:
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
            if self._on_connect is not None:
                self._on_connect(db)
            if uri is None:
                self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        latest = len(MIGRATIONS)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == latest:
            return
        if version > latest:
            raise StoreUnavailable(f"the session store {self.db_path} was written by a newer roast (schema "
                                   f"v{version}; this roast knows v{latest}); nothing changed",
                                   hint="upgrade roast")
        if version == 0:
            db.execute("PRAGMA journal_mode=WAL")  # persists in the file; cannot change inside a transaction
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
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == os.getpid():
            return db
        return None

    def _keep(self, db: sqlite3.Connection) -> sqlite3.Connection:
        self._local.db, self._local.pid = db, os.getpid()
        return db

    def _drop(self) -> None:
        db = self._connection()
        self._local.db = None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def close(self) -> None:
        """Close this thread's connection (it is also closed when the store is garbage-collected)."""
        self._drop()

    @contextmanager
    def _write(self, session_id: str | None = None) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE … COMMIT`; any error rolls it back and nothing changes."""
        with self._errors(session_id):
            db = self._connection()
            if db is None:
                self._create_files()
                db = self._keep(self._open())
            _fault_point()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                self._drop()
                raise
            try:
                yield db
                _fault_point()
                db.execute("COMMIT")
            except sqlite3.Error:
                _rollback(db)
                self._drop()  # a connection that failed (busy, full, damaged) is not reused
                raise
            except BaseException:
                _rollback(db)
                raise
            _fault_point()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A connection for reading, or None when no store exists yet (reads create nothing)."""
        with self._errors():
            cached = self._connection()
            if cached is not None:
                yield cached
                return
            if not self.db_path.exists():
                yield None
                return
            try:
                db = self._open()
            except sqlite3.OperationalError as err:
                # §5 row 12: a WAL database in a read-only directory cannot even be read normally.
                low = str(err).lower()
                if "readonly" not in low and "unable to open" not in low:
                    raise
                with closing(self._open(f"file:{quote(str(self.db_path))}?mode=ro&immutable=1")) as view:
                    self.read_only_view = True
                    yield view
                return
            yield self._keep(db)

    # -- locks -----------------------------------------------------------------------------------

    def _lock_path(self, session_id: str) -> Path:
        return self.home / "locks" / f"{check_id(session_id)}.lock"

    def _lock_free(self, session_id: str) -> bool:
        """True if no process holds the session's lock file (a shared probe, released at once)."""
        try:
            fd = os.open(self._lock_path(session_id), os.O_RDONLY)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell: never call a session orphaned on a guess
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def _try_lock(self, session_id: str, tries: int = 5) -> int | None:
        path = self._lock_path(session_id)
        with self._errors():
            self._make_home()
            path.parent.mkdir(mode=0o700, exist_ok=True)
            # os.open fds are not inherited by step subprocesses (O_CLOEXEC), so a child that outlives
            # roast cannot keep the session looking alive.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                # A `roast sessions` probe holds LOCK_SH for microseconds; don't mistake it for a run.
                if attempt + 1 < tries:
                    time.sleep(0.02)
        os.close(fd)
        return None

    @contextmanager
    def hold(self, session_id: str) -> Iterator[None]:
        """Hold the session's liveness lock for the whole run; the kernel drops it if we die.

        Take it *before* `create`/`claim`, so a running session is never seen without its lock:
        `with store.hold(sid): store.claim(sid, ...); ...`.
        """
        fd = self._try_lock(session_id)
        if fd is None:
            raise NotWaiting(f"session {session_id} is being run by another roast process; nothing changed")
        try:
            yield
        finally:
            os.close(fd)  # closing the only fd on the open file description releases the flock

    # -- writes ----------------------------------------------------------------------------------

    def create(self, *, workflow_path: str, workflow_name: str, fingerprint: str, target: str | None,
               has_definition: bool = False, now: float | None = None, session_id: str | None = None,
               state: object = None, cursor: str = "start") -> str:
        """Insert a `running` session (before step 1, so a crashed execute is visible); return its id.

        With `state`, its first continuation is sealed in the same transaction, so a session is never
        seen without something to recover from (the fault sweep in tests/test_faults.py found that gap).
        """
        now = _now(now)
        if session_id is not None:
            check_id(session_id)
        payload, has_code = _pickle(state, session_id or "new") if state is not None else (b"", False)
        with self._write() as db:
            sid = session_id or new_id(now)
            while db.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone():
                if session_id is not None:
                    raise UsageError(f"session {session_id} already exists")
                sid = new_id(now)
            db.execute("INSERT INTO sessions (id, workflow_path, workflow_name, fingerprint, target, status, "
                       "awaiting, wait_seq, attempt, created_at, updated_at, has_definition) "
                       "VALUES (?, ?, ?, ?, ?, 'running', '[]', 0, 1, ?, ?, ?)",
                       (sid, workflow_path, workflow_name, fingerprint, target, now, now, int(has_definition)))
            if state is not None:
                envelope = _envelope(payload, has_code, self._signing_key(db), session_id=sid, wait_seq=0, now=now)
                db.execute("INSERT INTO continuations (session_id, envelope) VALUES (?, ?)", (sid, envelope))
                db.execute("UPDATE sessions SET cursor = ? WHERE id = ?", (cursor, sid))
        return sid

    def step_started(self, session_id: str, *, path: str, name: str, now: float | None = None) -> int:
        """Record that a step starts (before it runs); return its attempt number (1, 2 after a crash…)."""
        check_id(session_id)
        now = _now(now)
        with self._write(session_id) as db:
            _require(db, session_id)
            (earlier,) = db.execute("SELECT count(*) FROM steps WHERE session_id = ? AND path = ?",
                                    (session_id, path)).fetchone()
            db.execute("INSERT INTO steps (session_id, path, name, attempt, started_at, status) "
                       "VALUES (?, ?, ?, ?, ?, 'running')", (session_id, path, name, earlier + 1, now))
        return int(earlier) + 1

    def checkpoint(self, session_id: str, state: object, *, cursor: str, finished: Sequence[StepDone] = (),
                   now: float | None = None) -> None:
        """Save the cursor and the sealed context of a running session (after each completed step),
        with the history rows of the steps that finished since the last save."""
        check_id(session_id)
        now = _now(now)
        payload, has_code = _pickle(state, session_id)  # outside the write lock: pickling may be slow
        with self._write(session_id) as db:
            _finish_steps(db, session_id, finished)
            row = _require(db, session_id)
            if row["status"] != "running":
                raise _refusal(db, session_id, "cannot save a checkpoint of")
            key = self._signing_key(db)
            envelope = _envelope(payload, has_code, key, session_id=session_id, wait_seq=row["wait_seq"],
                                 now=now)
            db.execute("INSERT OR REPLACE INTO continuations (session_id, envelope) VALUES (?, ?)",
                       (session_id, envelope))
            db.execute("UPDATE sessions SET cursor = ?, updated_at = ? WHERE id = ?", (cursor, now, session_id))

    def suspend(self, session_id: str, state: object, *, cursor: str, awaiting: list[dict[str, Any]],
                output: dict[str, Any] | None = None, finished: Sequence[StepDone] = (),
                now: float | None = None) -> int:
        """Running → waiting: save cursor, awaited events, deadline and sealed state; return the wait_seq."""
        check_id(session_id)
        now = _now(now)
        deadlines = [w["deadline"] for w in awaiting if w.get("deadline") is not None]
        awaiting_json = json.dumps(awaiting)
        payload, has_code = _pickle(state, session_id)
        with self._write(session_id) as db:
            _finish_steps(db, session_id, finished)
            row = _require(db, session_id)
            if row["status"] != "running":
                raise _refusal(db, session_id, "cannot suspend")
            wait_seq = int(row["wait_seq"]) + 1
            key = self._signing_key(db)
            envelope = _envelope(payload, has_code, key, session_id=session_id, wait_seq=wait_seq, now=now)
            db.execute("INSERT OR REPLACE INTO continuations (session_id, envelope) VALUES (?, ?)",
                       (session_id, envelope))
            db.execute("UPDATE sessions SET status = 'waiting', wait_seq = ?, awaiting = ?, deadline = ?, "
                       "cursor = ?, updated_at = ?, output = COALESCE(?, output) WHERE id = ?",
                       (wait_seq, awaiting_json, min(deadlines) if deadlines else None, cursor, now,
                        None if output is None else json.dumps(output, default=str), session_id))
        return wait_seq

    def claim(self, session_id: str, *, wait_seq: int, event: str, data: dict[str, Any], source: str = "cli",
              now: float | None = None) -> None:
        """Consume one event exactly once: a compare-and-set on (status, wait_seq), then the event row.

        Exactly one of any number of concurrent claims of one wait succeeds; the others get NotWaiting
        describing the current state (reliability G1). The caller has already checked the event name
        and the deadline; a timeout is claimed as the event 'timeout'.
        """
        check_id(session_id)
        if not isinstance(data, dict):
            raise UsageError(f"event data must be a JSON object, not {type(data).__name__}")
        now = _now(now)
        data_json = json.dumps(data)  # ensure_ascii: a lone surrogate cannot break the INSERT
        with self._write(session_id) as db:
            cur = db.execute("UPDATE sessions SET status = 'running', attempt = attempt + 1, awaiting = '[]', "
                             "deadline = NULL, updated_at = ? WHERE id = ? AND status = 'waiting' AND wait_seq = ?",
                             (now, session_id, wait_seq))
            if cur.rowcount != 1:
                raise _not_waiting(db, session_id, wait_seq)
            db.execute("INSERT INTO events (session_id, wait_seq, name, data, received_at, source) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (session_id, wait_seq, event, data_json, now, source))

    def finish(self, session_id: str, status: str, *, output: dict[str, Any] | None = None,
               final_output: str | None = None, error: str | None = None, finished: Sequence[StepDone] = (),
               now: float | None = None) -> None:
        """Running → completed/failed/timed_out; the continuation is deleted (SPEC §7), the row stays."""
        check_id(session_id)
        if status not in ("completed", "failed", "timed_out"):
            raise UsageError(f"cannot finish a session as {status!r}; use completed, failed or timed_out")
        now = _now(now)
        output_json = None if output is None else json.dumps(output)
        with self._write(session_id) as db:
            _finish_steps(db, session_id, finished)
            cur = db.execute("UPDATE sessions SET status = ?, output = ?, final_output = ?, error = ?, "
                             "awaiting = '[]', deadline = NULL, finished_at = ?, updated_at = ? "
                             "WHERE id = ? AND status = 'running'",
                             (status, output_json, final_output, error, now, now, session_id))
            if cur.rowcount != 1:
                _require(db, session_id)
                raise _refusal(db, session_id, f"cannot mark as {status}")
            db.execute("DELETE FROM continuations WHERE session_id = ?", (session_id,))

    def cancel(self, session_id: str, *, reason: str | None = None, now: float | None = None) -> Session:
        """Cancel a waiting session, or a running one whose process is gone (orphaned). Accepts a prefix."""
        now = _now(now)
        sid = self.get(session_id).id
        fd = self._try_lock(sid)  # held while cancelling, so nobody starts running it meanwhile
        try:
            with self._write(sid) as db:
                row = _require(db, sid)
                if row["status"] == "running" and fd is None:
                    raise Refused(f"session {sid} is running in another roast process; nothing changed",
                                  hint="wait for it to finish or reach a wait, then cancel it")
                if row["status"] not in ("waiting", "running"):
                    raise _refusal(db, sid, "cannot cancel")
                db.execute("UPDATE sessions SET status = 'cancelled', reason = ?, awaiting = '[]', "
                           "deadline = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
                           (reason, now, now, sid))
                db.execute("DELETE FROM continuations WHERE session_id = ?", (sid,))
                result = _session(db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?",
                                             (sid,)).fetchone())
        finally:
            if fd is not None:
                os.close(fd)
        return result

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
                for table, column in (("events", "session_id"), ("steps", "session_id"),
                                      ("continuations", "session_id"), ("sessions", "id")):
                    db.execute(f"DELETE FROM {table} WHERE {column} IN ({qs})", part)
        for sid in ids:  # after COMMIT: a lock file without a row is harmless, the reverse is not
            if SESSION_ID.fullmatch(sid):
                with contextlib.suppress(FileNotFoundError):
                    self._lock_path(sid).unlink()
        return len(ids)

    # -- the key ---------------------------------------------------------------------------------

    def key_path(self) -> Path:
        explicit = os.environ.get("ROAST_SECRET_KEY_FILE")
        return Path(explicit).expanduser() if explicit else self.home / "secret.key"

    def _read_key(self, path: Path, error: type[RoastError]) -> bytes:
        st = path.stat()
        if st.st_mode & 0o077:
            raise error(f"{path} is readable by others ({st.st_mode & 0o777:04o}); it was not used",
                        hint=f"run chmod 600 {path}")
        if st.st_uid != os.geteuid():
            raise error(f"{path} is owned by uid {st.st_uid}, not by you; it was not used",
                        hint="the signing key must belong to the user who runs roast")
        key = path.read_bytes()
        if len(key) != _KEY_LEN:
            raise error(f"{path} is not a roast signing key ({len(key)} bytes, expected {_KEY_LEN})",
                        hint="restore it from backup or set ROAST_SECRET_KEY_FILE")
        return key

    def _missing_key(self, path: Path, error: type[RoastError]) -> RoastError:
        return error(f"signing key {path} is missing; restore it from backup or set ROAST_SECRET_KEY_FILE",
                     hint="a new key would make every saved session look tampered, so none was created")

    def _verification_key(self) -> bytes:
        path = self.key_path()
        try:
            return self._read_key(path, StateRefused)
        except FileNotFoundError:
            raise self._missing_key(path, StateRefused) from None
        except OSError as err:
            raise StateRefused(f"cannot read signing key {path} ({err.strerror}); nothing was loaded") from err

    def _signing_key(self, db: sqlite3.Connection) -> bytes:
        """The key, created on first use. Signing problems are StoreUnavailable (exit 4): nothing was
        saved, and fixing the key file and retrying works."""
        path = self.key_path()
        try:
            return self._read_key(path, StoreUnavailable)
        except FileNotFoundError:
            pass
        # §2.3: generate a key only when the store has no signed rows (checked under the write lock).
        if db.execute("SELECT 1 FROM continuations LIMIT 1").fetchone():
            raise self._missing_key(path, StoreUnavailable)
        self._make_home()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Write a private temp file, then link it into place: another process never sees a short key.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_LEN))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        finally:
            tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self._read_key(path, StoreUnavailable)

    # -- reads (never the continuations table, except load_state) --------------------------------

    def _with_liveness(self, rows: Sequence[sqlite3.Row]) -> builtins.list[Session]:
        return [_session(r, orphaned=r["status"] == "running" and self._lock_free(r["id"])) for r in rows]

    def get(self, id_or_prefix: str) -> Session:
        """The session with this id, or the only one whose id starts with it (like git's short SHAs)."""
        check_id(id_or_prefix)
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (id_or_prefix,)).fetchall()
            if db is not None and not rows:
                # A range query, never LIKE: '_' is a LIKE wildcard and LIKE ignores case (§5 row 4).
                rows = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id >= ? AND id < ? || '{{' "
                                  "ORDER BY id LIMIT 11", (id_or_prefix, id_or_prefix)).fetchall()
        if not rows:
            raise NotFound(f"no session {id_or_prefix!r}", hint="`roast sessions` lists sessions")
        if len(rows) > 1:
            shown = [f"{r['id']} {r['status']} {r['workflow_name']} (created {_when(r['created_at'])})"
                     for r in rows[:10]]
            more = "\n  and more" if len(rows) > 10 else ""
            raise NotFound(f"session id prefix {id_or_prefix!r} is ambiguous; the candidates are:\n  "
                           + "\n  ".join(shown) + more, hint="give more characters of the id")
        return self._with_liveness(rows)[0]

    def history(self, session_id: str) -> builtins.list[StepRecord]:
        sid = self.get(session_id).id
        with self._read() as db:
            assert db is not None  # get() found the session
            rows = db.execute("SELECT path, name, attempt, started_at, finished_at, status, output FROM steps "
                              "WHERE session_id = ? ORDER BY rowid", (sid,)).fetchall()
        return [StepRecord(*r) for r in rows]

    def events(self, session_id: str) -> builtins.list[EventRecord]:
        sid = self.get(session_id).id
        with self._read() as db:
            assert db is not None
            rows = db.execute("SELECT name, data, received_at, source, wait_seq FROM events "
                              "WHERE session_id = ? ORDER BY id", (sid,)).fetchall()
        return [EventRecord(name, json.loads(data), received_at, source, wait_seq)
                for name, data, received_at, source, wait_seq in rows]

    def waiting_for(self, workflow_path: str) -> builtins.list[Session]:
        """Waiting sessions of one workflow, newest first (`roast resume` without --session-id)."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE workflow_path = ? AND status = 'waiting' "
                "ORDER BY created_at DESC, id DESC", (workflow_path,)).fetchall()
        return self._with_liveness(rows)

    def overdue(self, *, now: float | None = None) -> builtins.list[Session]:
        """Waiting sessions whose deadline has passed, earliest deadline first."""
        with self._read() as db:
            rows = [] if db is None else db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE status = 'waiting' AND deadline IS NOT NULL "
                "AND deadline <= ? ORDER BY deadline, id", (_now(now),)).fetchall()
        return self._with_liveness(rows)

    def load_state(self, session: Session) -> object:
        """Verify and unpickle the session's continuation (bound to its id and wait_seq)."""
        check_id(session.id)
        with self._read() as db:
            row = None if db is None else db.execute(
                "SELECT envelope FROM continuations WHERE session_id = ?", (session.id,)).fetchone()
        if row is None:
            raise NotFound(f"session {session.id} has no saved state (it is {session.status})")
        envelope = bytes(row[0])
        return unseal(envelope, key=self._verification_key(), session_id=session.id,
                      wait_seq=session.wait_seq)

    def list(self, *, statuses: Sequence[str] = (), workflow: str | None = None,
             older_than: float | None = None, since: float | None = None, limit: int | None = 50,
             offset: int = 0, now: float | None = None) -> tuple[builtins.list[Session], int]:
        """A page of sessions, newest first, and how many match in all.

        `workflow` matches the path or the name; `since` is an epoch (created at or after);
        `older_than` is seconds (last updated before now - older_than, as `prune` counts).
        """
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise UsageError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUSES)}")
        where: builtins.list[str] = []
        args: builtins.list[object] = []
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args.extend(statuses)
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
        with self._read() as db:
            if db is None:
                return [], 0
            (total,) = db.execute(f"SELECT count(*) FROM sessions {clause}", args).fetchone()
            rows = db.execute(f"SELECT {_COLUMNS} FROM sessions {clause} ORDER BY created_at DESC, id DESC "
                              "LIMIT ? OFFSET ?", (*args, -1 if limit is None else limit, offset)).fetchall()
        return self._with_liveness(rows), int(total)


# ---------------------------------------------------------------------------------------------
# helpers used inside transactions

# Tests only (reliability.md §6 F2, after SQLite's writecrash.test): ROAST_FAULT_AT=n kills this
# process at the n-th write point — before BEGIN, before COMMIT, after COMMIT of every transaction.
_FAULT_AT = int(os.environ.get("ROAST_FAULT_AT") or 0)
_faults_seen = 0


def _fault_point() -> None:
    global _faults_seen
    if _FAULT_AT:
        _faults_seen += 1
        if _faults_seen == _FAULT_AT:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class StepDone:
    """A finished step's history update, written with the next checkpoint (one transaction)."""

    path: str
    attempt: int
    status: str
    output: str | None
    finished_at: float


def _finish_steps(db: sqlite3.Connection, session_id: str, finished: Sequence[StepDone]) -> None:
    if finished:
        db.executemany("UPDATE steps SET finished_at = ?, status = ?, output = ? "
                       "WHERE session_id = ? AND path = ? AND attempt = ?",
                       [(f.finished_at, f.status, f.output, session_id, f.path, f.attempt) for f in finished])


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        # SQLite may already have rolled back (SQLITE_FULL); closing the connection rolls back too, so a
        # failing ROLLBACK must not hide the error that brought us here.
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _row(db: sqlite3.Connection, session_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?",
                                         (session_id,)).fetchone()
    return row


def _require(db: sqlite3.Connection, session_id: str) -> sqlite3.Row:
    row = _row(db, session_id)
    if row is None:
        raise NotFound(f"no session {session_id!r}", hint="`roast sessions` lists sessions")
    return row


def _session(row: sqlite3.Row | tuple[Any, ...], orphaned: bool = False) -> Session:
    (sid, workflow_path, workflow_name, fingerprint, target, status, cursor, awaiting, deadline, wait_seq,
     attempt, created_at, updated_at, finished_at, error, output, final_output, reason, has_definition) = tuple(row)
    return Session(sid, workflow_path, workflow_name, fingerprint, target, status, cursor,
                   json.loads(awaiting or "[]"), deadline, int(wait_seq), int(attempt), created_at, updated_at,
                   finished_at, error, None if output is None else json.loads(output), final_output, reason,
                   bool(has_definition), orphaned)


def _state_phrase(db: sqlite3.Connection, row: sqlite3.Row) -> str:
    """'it is running (resumed at … with 'approved')', 'it completed at …', …"""
    status = row["status"]
    last = db.execute("SELECT name, received_at FROM events WHERE session_id = ? ORDER BY id DESC LIMIT 1",
                      (row["id"],)).fetchone()
    if status == "running":
        if last is not None:
            return f"it is running (resumed at {_when(last[1])} with {last[0]!r})"
        return f"it is running (started at {_when(row['created_at'])})"
    if status == "waiting":
        names = ", ".join(repr(w.get("event")) for w in json.loads(row["awaiting"] or "[]"))
        return f"it now waits for {names or 'an event'} (wait #{row['wait_seq']})"
    verb = {"completed": "completed", "failed": "failed", "timed_out": "timed out",
            "cancelled": "was cancelled"}.get(status, f"is {status}")
    text = f"it {verb} at {_when(row['finished_at'] or row['updated_at'])}"
    if status == "cancelled" and row["reason"]:
        text += f" ({row['reason']})"
    elif last is not None:
        text += f" (after {last[0]!r})"
    return text


def _not_waiting(db: sqlite3.Connection, session_id: str, wait_seq: int) -> RoastError:
    row = _row(db, session_id)
    if row is None:
        return NotFound(f"no session {session_id!r}", hint="`roast sessions` lists sessions")
    if row["status"] == "waiting":  # a later wait than the caller saw
        return NotWaiting(f"session {session_id} is no longer at wait #{wait_seq}: "
                          f"{_state_phrase(db, row)}; nothing changed")
    return NotWaiting(f"session {session_id} is no longer waiting: {_state_phrase(db, row)}; nothing changed")


def _refusal(db: sqlite3.Connection, session_id: str, what: str) -> Refused:
    row = _require(db, session_id)
    return Refused(f"{what} session {session_id}: {_state_phrase(db, row)}; nothing changed")
