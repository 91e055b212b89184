"""A batch's writes joined into one transaction (`roast tick` firing many overdue waits, issue 25).

`SQLStore.grouped()` opens a group on this thread: from then on each write of the store's operations
on this thread (`_write`) joins ONE transaction of the dialect, begun at the first of them and
committed when the caller says that a side effect follows (`settle()`: a step starts, a condition's
command runs, the drive sleeps) and when the group ends. After `settle()` the writes stop joining
until `join()` (the next drive of the batch): what a drive writes after its first step is its own
transaction, as without a group. So no step runs while a group's transaction is open (the SQLite
write lock and PostgreSQL's row locks are held across computation only), and a crash before the
commit undoes writes none of whose consequences have left the process.

An operation refused before it changed anything (a refusal says "nothing changed") leaves the group
as it was. Any other error inside a joined write — a store error, a refusal after a change, an
interrupt — rolls the whole group back: `failed` then says so, every later write of the group is
refused, and the caller reports every session of the group as not fired.

Inside the group, a session's row stays locked from its claim to the commit, so nobody else can
change it meanwhile: the end of a branch that ends at once (`finish`) is not sent then but at the
commit (`defer`), the same statement of every session of the batch in one `Tx.batch` (one round trip
on PostgreSQL). `hold_many` and `let_go` take and give back a batch's session locks (a dialect may do
each in one round trip).

Knows no dialect: the group's transaction is the dialect's own `_write()`, entered and left here
(with its fault points, so the crash sweeps kill a process inside a group as well).
"""
from __future__ import annotations

import _thread
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from roast.errors import RoastError, StoreUnavailable, UsageError
from roast.store import fault_point

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any

    from roast.sql_reads import Tx


# the hint of an error that means a row lock did not hold (a bug, or a database that lost a lock):
# a batch's claim (`SQLStore.fire_many`) or its deferred ends (`Group._flush`)
INVARIANT = ("nothing of the batch was kept: run `roast tick` again (each overdue wait fires once); if it "
             "happens again, report it with `roast session ID` of that session")


class _Counted:
    """A joined operation's view of the group's transaction: it notes whether the operation changed
    anything (conservatively: any statement that is not a SELECT, and any nonzero row count)."""

    __slots__ = ("tx", "changed")

    def __init__(self, tx: Tx) -> None:
        self.tx, self.changed = tx, False

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        count = self.tx.run(sql, params)
        self.changed = self.changed or count != 0
        return count

    def row(self, sql: str, params: Sequence[object] = ()) -> Any:
        self.changed = self.changed or not sql.lstrip().upper().startswith("SELECT")
        return self.tx.row(sql, params)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        self.changed = self.changed or not sql.lstrip().upper().startswith(("SELECT", "WITH RECURSIVE"))
        return self.tx.rows(sql, params)

    def insert(self, sql: str, params: Sequence[object]) -> int:
        self.changed = True
        return self.tx.insert(sql, params)

    def batch(self, statements: Sequence[tuple[str, Sequence[object]]]) -> list[tuple[int, list[Any]]]:
        done = self.tx.batch(statements)
        self.changed = self.changed or any(count != 0 and not sql.lstrip().upper().startswith("SELECT")
                                           for (sql, _), (count, _) in zip(statements, done))
        return done


class Group:
    """The writes of one batch on one thread (see the module docstring)."""

    __slots__ = ("store", "after_commit", "joining", "failed", "_cm", "_tx", "_claimed", "_later")

    def __init__(self, store: Grouping, after_commit: Callable[[], None]) -> None:
        self.store, self.after_commit = store, after_commit
        self.joining = True
        self.failed: StoreUnavailable | None = None  # set once the group was rolled back
        self._cm: AbstractContextManager[Tx] | None = None
        self._tx: Tx | None = None
        # sessions whose rows the open transaction locked when it claimed them, as the claim left them,
        # and the writes deferred to its commit (`defer`): [(compare-and-set, the rest)]
        self._claimed: dict[str, Any] = {}
        self._later: dict[str, tuple[tuple[str, Sequence[object]], Sequence[tuple[str, Sequence[object]]]]] = {}

    def claim(self, session: Any) -> None:
        """The open transaction claimed `session` (and holds its row lock until it commits)."""
        self._claimed[session.id] = session

    def claimed(self, session_id: str) -> Any:
        """The session as this group's claim left it, if nothing else of it joined since (then its
        writes may be deferred to the commit: nobody else can change its row before that)."""
        return self._claimed.pop(session_id, None) if self.joining and self._tx is not None else None

    def defer(self, session_id: str, check: tuple[str, Sequence[object]],
              rest: Sequence[tuple[str, Sequence[object]]]) -> None:
        """A claimed session's writes, sent at the commit (or before any other write of it), the same
        statements of every session at once (`Tx.batch`): `check` a compare-and-set that must change
        one row (else the whole group is rolled back)."""
        self._later[session_id] = (check, rest)

    def _flush(self) -> None:
        """The deferred writes, statement by statement in the order they were first given (each
        session's own writes keep their order: `finish` gives them in one order always)."""
        later, self._later = list(self._later.values()), {}
        if not later:
            return
        assert self._tx is not None
        checks = self._tx.batch([check for check, _ in later])
        if any(count != 1 for count, _ in checks):
            raise StoreUnavailable("a session claimed by this batch changed under its row lock; nothing was written",
                                   hint=INVARIANT)
        fault_point()  # a kill with the ends half sent: the group is lost whole
        alike: dict[str, list[tuple[str, Sequence[object]]]] = {}
        for _, rest in later:
            for sql, params in rest:
                alike.setdefault(sql, []).append((sql, params))
        for statements in alike.values():
            self._tx.batch(statements)

    @property
    def open(self) -> bool:
        """Writes joined and not yet committed."""
        return self._cm is not None

    def join(self) -> None:
        """Writes join the group again (the next drive of the batch begins)."""
        self.joining = self.failed is None

    @contextmanager
    def write(self, session_id: str | None) -> Iterator[Any]:
        """One operation's writes, joined to the group's transaction (begun by the first of them)."""
        if self.failed is not None:
            raise StoreUnavailable(f"{self.failed.message}; nothing more was written", hint=self.failed.hint)
        if self._tx is None:
            self._begin(session_id)
        else:
            fault_point()  # a kill between two joined operations: the group is lost whole
        counted = _Counted(self._tx)  # type: ignore[arg-type]
        try:
            if session_id is None or session_id in self._later:
                self._flush()  # a write of no session or of one with deferred writes: after those
            if session_id is not None:
                self._claimed.pop(session_id, None)  # its row may change: no more deferred writes
            yield counted
        except RoastError as err:
            if counted.changed or isinstance(err, StoreUnavailable):
                raised = self.rollback(err)
                if raised is err:
                    raise
                raise raised from err
            raise  # refused before it changed anything: the group goes on
        except BaseException as err:
            raised = self.rollback(err)
            if raised is err:
                raise
            raise raised from err

    def _begin(self, session_id: str | None) -> None:
        self.joining = False  # the dialect's own transaction, entered here, must not join itself
        try:
            cm = self.store._write(session_id)
            self._tx = cm.__enter__()
        except StoreUnavailable as err:
            self.failed = err
            raise
        self._cm, self.joining = cm, True

    def commit(self) -> None:
        """Commit what joined (nothing when nothing did), then call `after_commit`."""
        if self._cm is None:
            return
        try:
            self._flush()
        except BaseException as err:
            raised = self.rollback(err)
            if raised is err:
                raise
            raise raised from err
        cm, self._cm, self._tx = self._cm, None, None
        self._claimed.clear()
        try:
            cm.__exit__(None, None, None)
        except StoreUnavailable as err:
            self.failed, self.joining = err, False
            raise
        self.after_commit()

    def rollback(self, err: BaseException) -> BaseException:
        """Roll back what joined, because of `err`; returns what to raise (a store error as the
        dialect words it, else `err` itself). From here on the group refuses every write."""
        cm, self._cm, self._tx = self._cm, None, None
        self._claimed.clear()
        self._later.clear()
        raised = err
        if cm is not None:
            try:
                cm.__exit__(type(err), err, err.__traceback__)
            except BaseException as mapped:  # the dialect re-raises (or maps) what rolled it back
                raised = mapped
        self.joining = False
        if isinstance(raised, StoreUnavailable):
            self.failed = raised
        else:
            self.failed = StoreUnavailable(f"the batch's writes were rolled back ({type(err).__name__}: {err}); "
                                           "its sessions are as they were before it")
        return raised


class Grouping:
    """`SQLStore`'s part: open a group, settle it, and tell `_write` whether to join one."""

    _groups: dict[int, Group]  # thread -> its open group (set by the dialect's __init__)
    _batch_holds: dict[str, Any]  # session -> its hold taken by `hold_many` (set by the dialect's __init__)

    if TYPE_CHECKING:
        def _write(self, session_id: str | None = None, *, durable: bool = True) -> AbstractContextManager[Tx]: ...
        def hold(self, session_id: str, purpose: str = "roast") -> AbstractContextManager[None]: ...

    def hold_many(self, session_ids: Sequence[str], purpose: str) -> dict[str, RoastError | None]:
        """`hold` of each session, kept until `let_go` (a batch of `roast tick`, issue 25): None where
        it is held, else why not. A dialect may take them all at once."""
        got: dict[str, RoastError | None] = {}
        for sid in session_ids:
            hold = self.hold(sid, purpose)
            try:
                hold.__enter__()
            except RoastError as err:
                got[sid] = err
                continue
            self._batch_holds[sid], got[sid] = hold, None
        return got

    def let_go(self, session_ids: Sequence[str]) -> None:
        """Let go of sessions `hold_many` held."""
        for sid in session_ids:
            hold = self._batch_holds.pop(sid, None)
            if hold is not None:
                hold.__exit__(None, None, None)

    @contextmanager
    def grouped(self, after_commit: Callable[[], None] = lambda: None) -> Iterator[Group]:
        """Join this thread's writes into one transaction until `settle()` or the end of the block
        (`roast tick`'s batches, issue 25); committed at the end, rolled back on an error.
        `after_commit` runs after each commit (the caller lets go of what the commit made durable)."""
        ident = _thread.get_ident()
        if ident in self._groups:
            raise UsageError("a write group is already open on this thread")
        group = self._groups[ident] = Group(self, after_commit)
        try:
            yield group
            group.commit()
        except BaseException as err:
            group.rollback(err)
            raise
        finally:
            del self._groups[ident]

    def settle(self) -> None:
        """A side effect follows (a step starts, a command or a sleep): commit this thread's group
        first, and stop joining it until its `join()`. Without a group, nothing."""
        if self._groups:
            group = self._groups.get(_thread.get_ident())
            if group is not None and group.joining:
                group.joining = False
                group.commit()

    def _joined(self) -> Group | None:
        """The group this thread's writes join now, if any (`_write` hands its `write()` out)."""
        if self._groups:
            group = self._groups.get(_thread.get_ident())
            if group is not None and (group.joining or group.failed is not None):
                return group
        return None
