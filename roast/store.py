"""The session store's interface: `SessionStore` (the operations `api` needs, and nothing else),
the records it returns, session ids, and the status words.

The rules are written once, in `roast.outcomes` (pure) and `roast.sql` (every statement); the
backends `store_sqlite` (one machine, the default) and `store_postgres` (shared by hosts) are
only dialects.
Only `api` picks and calls a store; faces never import one (SPEC §11). Imports neither yaml nor
rich, and no backend driver: `roast sessions` starts up through here.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.record import Record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager
    from typing import Any, Protocol

    from roast.errors import RoastError

SESSION_ID = re.compile(r"[0-9a-z][0-9a-z_-]{3,63}")
STATUSES = ("running", "waiting", "interrupted", "completed", "failed", "timed_out", "cancelled", "moved")
# `moved`: copied into another store by `roast store copy` (issue 24); `reason` names that store.
FINISHED = ("completed", "failed", "timed_out", "cancelled", "moved")
# `interrupted` (issue 20): stopped by a person (a signal to the CLI); only `roast resume -s ID`
# continues it and `roast cancel` ends it, never serve or tick on their own (a crash is `orphaned`).
OPEN = ("running", "waiting", "interrupted")
# What became of a delivery (issue 14): the first three are accepted (exit 0).
OUTCOMES = ("consumed", "queued", "duplicate", "late", "closed", "not_waiting", "unknown_event", "invalid",
            "not_found", "unconsumed", "counted", "forbidden")
# issue 23: `counted` toward a gated wait's quorum (the wait still open), `forbidden` by its policy
ACCEPTED = ("consumed", "queued", "unconsumed", "counted")  # outcomes an event id stays bound to
COUNT_CAP = 100  # a listing's count stops past this (issue 25): `count` reads COUNT_CAP + 1 rows at most,
# the same "100+" as `others_waiting`; at 1,000 the count cost a PostgreSQL listing 0.1-0.45 ms more at 1M
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
HOST = os.uname().nodename  # what socket.gethostname() says, without importing socket


# ---------------------------------------------------------------------------------------------
# records

class Session(Record):
    """One session as `roast sessions` shows it; `orphaned` is filled in from liveness."""

    __slots__ = ("id", "workflow_path", "workflow_name", "fingerprint", "target", "status", "cursor", "awaiting",
                 "deadline", "wait_seq", "attempt", "created_at", "updated_at", "finished_at", "error", "output",
                 "final_output", "reason", "has_definition", "orphaned", "cwd", "declares", "key", "definition",
                 "owner", "holder", "notify_pending", "ahead", "schemas", "started_by", "decided", "cancelled_by")
    # decided: in listings, what decided a finished session: the event its last wait took, or
    # `timed out` (issue 24)
    _defaults = {"orphaned": False, "cwd": None, "declares": (), "key": None, "definition": None, "owner": None,
                 "holder": None, "notify_pending": False, "ahead": (), "schemas": {}, "started_by": None,
                 "decided": None, "cancelled_by": None}

    @property
    def events(self) -> list[str]:
        """The event names a waiting session accepts, each once, in step order ([] unless waiting)."""
        if self.status != "waiting":
            return []
        return list(dict.fromkeys(a["event"] for a in self.awaiting or [] if a.get("event")))

    @property
    def shown_status(self) -> str:
        return "orphaned" if self.orphaned else self.status

    def __str__(self) -> str:
        """`session 0mww81wj2g4a3 (deploy) waiting for approved, rejected at steps[2] › wait_for_event`."""
        text = f"session {self.id} ({self.workflow_name}) {self.shown_status}"
        if self.status == "waiting":
            text += " for " + ", ".join(self.events)
        return text + (f" at {self.cursor}" if self.cursor and self.status in OPEN else "")


class StepRecord(Record):
    """One attempt of one step in a session's history."""

    __slots__ = ("path", "name", "attempt", "started_at", "finished_at", "status", "output", "pgid", "host", "error")
    _defaults = {"pgid": None, "host": None, "error": None}


class EventRecord(Record):
    """One delivery that reached a session, and what became of it (issue 14)."""

    __slots__ = ("name", "data", "received_at", "source", "wait_seq", "event_id", "outcome", "actor", "reason",
                 "wait_path", "consumed_at", "detail", "row", "verified", "approvals")
    # approvals: the consuming event of a gated wait (issue 23) lists the approvals that decided it,
    # as `policy.approval_dicts` ({actor, verified, reason, at, data}); None elsewhere
    _defaults = {"event_id": None, "outcome": "consumed", "actor": None, "reason": None, "wait_path": None,
                 "consumed_at": None, "detail": None, "row": None, "verified": False, "approvals": None}


class StepDone(Record):
    """A finished step's history update, written with the next checkpoint (one transaction)."""

    __slots__ = ("path", "attempt", "status", "output", "finished_at", "error")
    _defaults = {"error": None}  # why a failed attempt failed: `exit status 3: …`, the exception


class StepStart(Record):
    """A step about to run: its history row travels with the checkpoint before it (issue 12)."""

    __slots__ = ("path", "name", "started_at")


class NewSession(Record):
    """What `create` writes: the session row of a `running` session."""

    __slots__ = ("id", "workflow_path", "workflow_name", "fingerprint", "target", "cwd", "declares", "key",
                 "definition", "has_definition", "created_at", "schemas", "started_by")
    _defaults = {"key": None, "definition": None, "has_definition": False, "schemas": {}, "started_by": None}


class Incoming(Record):
    """An event as a sender delivers it (`roast resume`, `roast.resume`, a webhook)."""

    __slots__ = ("name", "data", "event_id", "actor", "reason", "source", "received_at", "digest", "verified",
                 "signature")
    # `signature`: what a signed request is known by (`webhook-id:…`, `github:sha256=…`), bound by the
    # store to the first session and event it reaches (issue 21)
    _defaults = {"verified": False, "signature": None}  # issue 22: the actor was proven (a token, a signature, a trusted proxy)


class Outcome(Record):
    """What `deliver` did: the outcome, the event's record, and the session as it now is; `claimed`:
    the timeout a `late` event claimed instead (issue 20: its branch reads it, `refused_event` and all)."""

    __slots__ = ("outcome", "event", "session", "original", "claimed", "quorum")
    # quorum: a gated wait's progress `{event, have, need, approvers}` after a `counted` or a repeated
    # (`duplicate`) approval (issue 23)
    _defaults = {"original": None, "claimed": None, "quorum": None}


class Continuation(Record):
    """A session's saved state: the last sealed record and the deltas sealed after it, in order;
    `definition`: its saved definition, verified, when the store read it with them (issue 25)."""

    __slots__ = ("base", "deltas", "definition")
    _defaults = {"definition": None}


class Suspended(Record):
    """What `suspend` did: the new wait number, and the queued event it took at once, if any."""

    __slots__ = ("wait_seq", "taken")
    _defaults = {"taken": None}


class WaitTimer(Record):
    """A waiting session whose next reminder or escalation is due (issue 23): the wait (`wait_seq`),
    when it opened, the last reminder index sent, the escalations fired, and when the next is due."""

    __slots__ = ("session_id", "wait_seq", "opened_at", "reminded", "escalated", "timer_at")


if TYPE_CHECKING:
    class SessionStore(Protocol):
        """The operations `api` needs. Every write is one transaction: a refused or failed
        operation changes nothing. A store error is raised as `StoreUnavailable` (exit 4), never
        turned into a session outcome (SPEC §11)."""

        shared: bool  # several hosts use it: no implicit key, liveness through the server

        def describe(self) -> str: ...
        def close(self) -> None: ...

        # liveness: held for as long as this process runs the session
        def hold(self, session_id: str, purpose: str) -> AbstractContextManager[None]: ...
        # issue 25: `hold` of many at once (None: held; else why not), each let go by `let_go`
        def hold_many(self, session_ids: Sequence[str], purpose: str) -> dict[str, RoastError | None]: ...
        def let_go(self, session_ids: Sequence[str]) -> None: ...

        # writes
        def create(self, new: NewSession, state: object, *, definition: object | None = None,
                   now: float | None = None) -> None: ...
        def advance(self, session_id: str, *, changes: object | None, cursor: str | None,
                    finished: Sequence[StepDone] = (), start: StepStart | None = None, delivered: bool = False,
                    now: float | None = None) -> int: ...
        def spawned(self, session_id: str, path: str, attempt: int, pgid: int) -> bool: ...
        def record_step(self, session_id: str, start: StepStart, done: StepDone | None) -> int: ...
        def suspend(self, session_id: str, state: object, *, cursor: str, awaiting: list[dict[str, Any]],
                    output: dict[str, Any] | None = None, finished: Sequence[StepDone] = (),
                    definition: tuple[str, object] | None = None, notify: bool = False,
                    ahead: Sequence[str] = (), undelivered: bool = False, now: float | None = None) -> Suspended: ...
        def deliver(self, session_id: str, event: Incoming, *, if_waiting: bool = False,
                    workflow_scope: str | None = None, holding: bool = True, workflow_path: str | None = None,
                    wait_seq: int | None = None, now: float | None = None) -> Outcome: ...
        def fire(self, session_id: str, *, wait_seq: int, source: str, now: float | None = None) -> EventRecord: ...
        def fire_many(self, waits: Sequence[tuple[str, int]], *, source: str,
                      now: float | None = None) -> dict[str, EventRecord | RoastError]: ...  # issue 25
        # issue 25: a batch's writes in one transaction (`roast.sql_group`); `settle`: a side effect follows
        def grouped(self, after_commit: Callable[[], None] = ...) -> AbstractContextManager[Any]: ...
        def settle(self) -> None: ...
        def take_over(self, session_id: str, *, now: float | None = None) -> EventRecord | None: ...
        def reopen(self, session_id: str, *, changes: object | None = None, cursor: str | None = None,
                   now: float | None = None, note: Incoming | None = None) -> None: ...
        def finish(self, session_id: str, status: str, *, output: dict[str, Any] | None = None,
                   final_output: str | None = None, error: str | None = None, finished: Sequence[StepDone] = (),
                   keep_state: bool = False, cursor: str | None = None, now: float | None = None) -> Session: ...
        def interrupted(self, session_id: str, *, error: str, finished: Sequence[StepDone] = (),
                        restart: bool = False, now: float | None = None) -> None: ...
        def claim_notice(self, session_id: str, *, wait_seq: int) -> bool: ...
        def notified(self, session_id: str, *, wait_seq: int) -> None: ...
        def claim_timer(self, session_id: str, *, wait_seq: int, reminded_was: int, escalated_was: int,
                        reminded: int, escalated: int, next_at: float | None) -> bool: ...
        def cancel(self, session_id: str, *, reason: str | None = None, actor: str | None = None,
                   now: float | None = None) -> Session: ...
        def prune(self, *, older_than: float, now: float | None = None) -> int: ...

        # reads
        def get(self, id_or_prefix: str) -> Session: ...
        def history(self, session_id: str) -> list[StepRecord]: ...
        def events(self, session_id: str) -> list[EventRecord]: ...
        def waiting_for(self, workflow_path: str) -> list[Session]: ...
        def open_of(self, workflow_path: str, *, ahead: str | None = None,
                    limit: int | None = None) -> list[Session]: ...
        def waiting_page(self, workflow_path: str, *, before: tuple[float, str] | None = None,
                         limit: int = 100, event: str | None = None) -> list[Session]: ...
        def with_key(self, workflow_path: str, key: str) -> list[Session]: ...
        def workflow_paths(self, workflow: str) -> list[str]: ...
        def soonest_waiting(self, limit: int) -> list[Session]: ...
        def find_event(self, workflow_path: str, event_id: str) -> tuple[Session, EventRecord] | None: ...
        def overdue(self, *, now: float) -> list[Session]: ...
        def orphans(self) -> list[Session]: ...
        def notify_due(self) -> list[Session]: ...
        def timers_due(self, *, now: float, limit: int = 100,
                       session_id: str | None = None) -> list[WaitTimer]: ...
        def load_state(self, session: Session) -> Continuation: ...
        def get_state(self, session_id: str) -> tuple[Session, Continuation | RoastError]: ...
        def load_states(self, sessions: Sequence[Session]) -> dict[str, Continuation | RoastError]: ...
        def has_definition(self, fingerprint: str) -> bool: ...
        def load_definition(self, fingerprint: str) -> object | None: ...
        def all_envelopes(self) -> Iterator[tuple[str, str, bytes]]: ...
        def signing_keys(self) -> Any: ...  # seal.Keyring: for approval-link tokens (issue 15)
        def dump(self) -> dict[str, list[dict[str, Any]]]: ...  # every row, for `roast store copy`
        # (last: below it, `list` in an annotation would name this method)
        def list(self, *, statuses: Sequence[str] = (), workflow: str | None = None,
                 older_than: float | None = None, since: float | None = None, limit: int | None = 50,
                 offset: int = 0, open_first: bool = False, now: float | None = None
                 ) -> tuple[list[Session], int]: ...


# ---------------------------------------------------------------------------------------------
# ids

def new_id() -> str:
    """A session id: 13 random base36 characters, so the first 6 or 7 are unique with
    overwhelming probability, like git's short hashes (issue 11). Listings order by creation
    time, not by id."""
    raw = int.from_bytes(os.urandom(9), "big")
    out = []
    for _ in range(13):
        raw, r = divmod(raw, 36)
        out.append(_DIGITS[r])
    return "".join(out)


def short_id(session_id: str) -> str:
    """How listings show an id (JSON keeps the full one)."""
    return session_id[:8]


def check_id(text: str) -> str:
    """Return `text` if it is a well-formed session id (or prefix); else UsageError (exit 2)."""
    # SPEC §10: checked before any path or SQL use, since lock files are paths.
    from roast.errors import UsageError

    if not isinstance(text, str) or not SESSION_ID.fullmatch(text):
        raise UsageError(f"{text!r} is not a session id",
                         hint="ids are 4-64 characters: lowercase letters, digits, '_' and '-' "
                              "(see `roast sessions`)")
    return text


def roast_home(explicit: str | os.PathLike[str] | None = None) -> str:
    """The store directory: `explicit`, else `$ROAST_HOME`, else `~/.roast`. Creates nothing."""
    from roast.errors import UsageError

    raw = os.fspath(explicit) if explicit is not None else (os.environ.get("ROAST_HOME") or "~/.roast")
    home = os.path.abspath(os.path.expanduser(raw))
    try:
        is_file = os.path.exists(home) and not os.path.isdir(home)
    except (OSError, ValueError):
        is_file = False
    if is_file:
        raise UsageError(f"ROAST_HOME {home!r} is a file, not a directory",
                         hint="point ROAST_HOME (or home=) at a directory; roast creates it if missing")
    return home


def when(t: float | None) -> str:
    return "an unknown time" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def mask_url(url: str) -> str:
    """A store URL without its password: `postgresql://ana:***@db:5432/roast` (issue 13). Everything
    between the user name and the *last* `@` is masked, so a password with an unencoded `@`, `#`,
    `/` or `%` is never shown in part (issue 21); so is a `password=` parameter."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        head = rest.split("?", 1)[0]  # an `@` in the query is not the end of the user info
        userinfo, _, after = (head if "@" in head else rest).rpartition("@")
        after += rest[len(head):] if "@" in head else ""
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        url = f"{scheme}://{userinfo}@{after}"
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


# ---------------------------------------------------------------------------------------------
# sessions this process is running

# A session whose recorded owner is this very process is live while this process drives it (or
# has claimed it to drive soon: `roast serve`); after a drive ends in a store error or a signal it
# is orphaned even though the process lives on, so it can be recovered without a restart.
_RUNNING_HERE: set[str] = set()


def start_ticks(pid: int) -> str | None:
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
    now = start_ticks(pid)
    return now is None or now == start


_OWNER: tuple[int, str] = (0, "")  # (pid, its owner text): described again after a fork


def this_owner() -> str:
    """This process as the owner column records it: `{"host", "pid", "start"}` as JSON."""
    global _OWNER
    if _OWNER[0] != os.getpid():
        _OWNER = (os.getpid(), json.dumps({"host": HOST, "pid": os.getpid(), "start": start_ticks(os.getpid())}))
    return _OWNER[1]


def owner_of(text: str | None) -> dict[str, Any] | None:
    """The owner column's JSON (`{host, pid, start}`), or None."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def mine(owner_text: str | None) -> bool:
    """The recorded owner (a session row's `owner`) is this very process."""
    owner = owner_of(owner_text)
    return bool(owner and owner.get("host") == HOST and owner.get("pid") == os.getpid())


def running_here(session_id: str) -> bool:
    return session_id in _RUNNING_HERE


def mark_running(session_id: str, running: bool = True) -> None:
    (_RUNNING_HERE.add if running else _RUNNING_HERE.discard)(session_id)


def claim_as(owner: str) -> None:
    """Record `owner` (another process's `this_owner()`) as the owner of the sessions this process
    claims: `roast serve`'s claim process claims for the server, which runs their branches."""
    global _OWNER
    _OWNER = (os.getpid(), owner)


# ---------------------------------------------------------------------------------------------
# the fault hook (tests only)

# reliability.md §6 F2, after SQLite's writecrash.test: ROAST_FAULT_AT=n kills this process at the
# n-th write point (before BEGIN, before COMMIT, after COMMIT of every transaction).
_faults_seen = 0
_fault_at: int | None = None


def fault_point() -> None:
    global _faults_seen, _fault_at
    if _fault_at is None:
        raw = os.environ.get("ROAST_FAULT_AT") or "0"
        if not raw.isdigit():
            from roast.errors import UsageError

            raise UsageError(f"ROAST_FAULT_AT must be a whole number (a test hook), not {raw!r}; nothing changed",
                             hint="unset ROAST_FAULT_AT")
        _fault_at = int(raw)
    if _fault_at:
        _faults_seen += 1
        if _faults_seen == _fault_at:
            import signal

            also = os.environ.get("ROAST_FAULT_ALSO")  # `roast serve`'s claim process: the server dies with it
            if also and also.isdigit():
                os.kill(int(also), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
