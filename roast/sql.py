"""The session store written once: every SELECT/INSERT/UPDATE/DELETE of the `SessionStore`
operations, the compare-and-set claims, the inbox, retries, deadlines, listings, and rows turned
into records, over a transaction `Tx` of five methods (`run`, `row`, `rows`, `insert`, `batch`). The
queries live in `roast.sql_reads` (`Reads`, which `SQLStore` extends), with `Tx` itself.

SQL is written with `?` placeholders and named columns only (a PostgreSQL `Tx` rewrites the
placeholders). What is decided about an event is `roast.outcomes`; what differs per database is
the dialect (`store_sqlite`, `store_postgres`): connecting, the write transaction and the row
lock (`_write`, `_lock`), liveness (`_sessions`), keys, migrations, error mapping, and a few
fragments (`_skip_locked`, `_step_order`, `_prune_tables`).

Must not import yaml or rich: `roast sessions` starts up through this module.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from roast import outcomes, seal
from roast.errors import NotWaiting, Refused, RoastError, StoreUnavailable, UsageError
from roast.outcomes import missing, not_waiting, refusal
from roast.requests import TIMEOUT, timeout_event
from roast.sql_deliver import Deliveries
from roast.sql_group import INVARIANT, Grouping
from roast.sql_reads import (  # noqa: F401  (COLUMNS, Tx, _session and marks are also this module's names)
    COLUMNS,
    EVENT_COLUMNS,
    PAUSE_ENDED,
    S_COLUMNS,
    Reads,
    Tx,
    _event,
    _now,
    _session,
    busy_timeout,
    marks,
    prior_where,
)
from roast.store import (
    FINISHED,
    HOST,
    EventRecord,
    Incoming,
    NewSession,
    Session,
    StepDone,
    StepStart,
    Suspended,
    check_id,
    this_owner,
)

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

if TYPE_CHECKING:
    from typing import Any

    Row = Any  # sqlite3.Row or a psycopg dict row: read by column name only


def _finish_steps(session_id: str, finished: Sequence[StepDone]) -> list[tuple[str, tuple[object, ...]]]:
    """The statements that record the end of each step in `finished` (for a `Tx.batch`)."""
    return [("UPDATE steps SET finished_at = ?, status = ?, output = ?, error = ? "
             "WHERE session_id = ? AND path = ? AND attempt = ?",
             (f.finished_at, f.status, f.output, f.error, session_id, f.path, f.attempt)) for f in finished]


class SQLStore(Grouping, Deliveries, Reads):
    """The `SessionStore` operations over a dialect's transactions (see the module docstring)."""

    _prune_tables: tuple[tuple[str, str], ...] = (
        ("events", "session_id"), ("steps", "session_id"), ("deltas", "session_id"),
        ("continuations", "session_id"), ("sessions", "id"))
    # session -> (wait_seq, last delta) while this process holds it: one statement less per step
    _delta_seq: dict[str, tuple[int, int]]
    returning = True  # `UPDATE … RETURNING` (SQLite from 3.35): a claim reads its session from its flip

    def _event_lock(self, tx: Tx, workflow_scope: str, event_id: str) -> None:
        """One workflow-wide check of an event id at a time (SQLite: every write is serial)."""

    def _pruned(self, ids: Sequence[str]) -> None:
        """After a prune's COMMIT (SQLite: the sessions' lock files)."""

    def _busy_timeout(self) -> float:
        return busy_timeout()

    # -- inside transactions ---------------------------------------------------------------------

    def _lock_many(self, tx: Tx, session_ids: Sequence[str]) -> list[Row | None]:
        """`_lock` of each session, in this order (a dialect may send them at once)."""
        return [self._lock(tx, sid) for sid in session_ids]

    def _locked(self, tx: Tx, session_id: str) -> Row:
        row = self._lock(tx, session_id)
        if row is None:
            raise missing(session_id)
        return row

    def _running(self, tx: Tx, session_id: str, what: str) -> Row:
        row = self._locked(tx, session_id)
        if row["status"] != "running":
            raise refusal(self._sessions(tx, [row])[0], what, self._last_event(tx, session_id))
        return row

    def _refuse(self, tx: Tx, session_id: str, what: str) -> Refused:
        return refusal(self._session_in(tx, session_id), what, self._last_event(tx, session_id))

    def _put_definition(self, tx: Tx, keys: seal.Keyring, fingerprint: str, payload: tuple[bytes, bool],
                        now: float) -> None:
        if tx.row("SELECT 1 AS one FROM definitions WHERE fingerprint = ?", (fingerprint,)):
            return
        blob = seal.envelope(payload[0], payload[1], keys, bind=f"definition:{fingerprint}", now=now)
        tx.run("INSERT INTO definitions (fingerprint, envelope, created_at) VALUES (?, ?, ?) "
               "ON CONFLICT (fingerprint) DO NOTHING", (fingerprint, blob, now))

    def _delta(self, tx: Tx, session_id: str, payload: tuple[bytes, bool], wait_seq: int, seq: int,
               now: float) -> None:
        blob = seal.envelope(payload[0], payload[1], self._keyring(tx, signing=True),
                             bind=f"delta:{session_id}:wait:{wait_seq}:{seq}", now=now)
        tx.run("INSERT INTO deltas (session_id, seq, envelope) VALUES (?, ?, ?)", (session_id, seq, blob))

    def _start(self, tx: Tx, session_id: str, start: StepStart, done: StepDone | None = None) -> int:
        """A step's history row; returns its attempt number."""
        counted = tx.row("SELECT count(*) AS n FROM steps WHERE session_id = ? AND path = ?",
                         (session_id, start.path))
        attempt = int(counted["n"] if counted else 0) + 1
        tx.run("INSERT INTO steps (session_id, path, name, attempt, started_at, finished_at, status, output, "
               "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (session_id, start.path, start.name, attempt, start.started_at, done.finished_at if done else None,
                done.status if done else "running", done.output if done else None, done.error if done else None))
        return attempt

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
        with self._write() as tx:
            if tx.row("SELECT 1 AS one FROM sessions WHERE id = ?", (new.id,)):
                raise UsageError(f"session {new.id} already exists")
            keys = self._keyring(tx, signing=True)
            declares = json.dumps(list(new.declares))
            tx.run("INSERT INTO sessions (id, workflow_path, workflow_name, fingerprint, target, status, awaiting, "
                   "wait_seq, attempt, created_at, updated_at, has_definition, cwd, declares, key, definition, owner, "
                   "cursor, ahead, schemas, started_by) VALUES (?, ?, ?, ?, ?, 'running', '[]', 0, 1, ?, ?, ?, ?, ?, "
                   "?, ?, ?, 'start', ?, ?, ?)",
                   (new.id, new.workflow_path, new.workflow_name, new.fingerprint, new.target, now, now,
                    int(new.has_definition), new.cwd, declares, new.key, new.definition, this_owner(), declares,
                    json.dumps(dict(new.schemas)), new.started_by))
            tx.run("INSERT INTO continuations (session_id, envelope) VALUES (?, ?)",
                   (new.id, seal.envelope(payload, has_code, keys, bind=seal.session_bind(new.id, 0), now=now)))
            if definition_bytes is not None and new.definition:
                self._put_definition(tx, keys, new.definition, definition_bytes, now)

    def advance(self, session_id: str, *, changes: object | None, cursor: str | None,
                finished: Sequence[StepDone] = (), start: StepStart | None = None, delivered: bool = False,
                now: float | None = None) -> int:
        """One step's transaction: the history rows of the steps that finished, the changes since the
        last save (a delta, sealed), the cursor, and the start row of the next step; returns that
        step's attempt number (0 without `start`)."""
        now = _now(now)
        payload = seal.dumps(changes, f"session {session_id}") if changes is not None else None
        written = None
        with self._write(session_id) as tx:
            if payload is not None:
                # only the process holding the session writes its deltas: their number is kept here
                # after the first read; the UPDATE is the compare-and-set (and takes the row lock)
                known = self._delta_seq.get(session_id)
                if known is None:
                    row = self._running(tx, session_id, "cannot save a checkpoint of")
                    known = (int(row["wait_seq"]), int(row["delta_seq"]))
                wait_seq, seq = known[0], known[1] + 1
                count = tx.run("UPDATE sessions SET delta_seq = ?, cursor = COALESCE(?, cursor), updated_at = ?, "
                               "pending_event = CASE WHEN ? = 1 THEN NULL ELSE pending_event END "
                               "WHERE id = ? AND status = 'running' AND wait_seq = ?",
                               (seq, cursor, now, int(delivered), session_id, wait_seq))
                if count != 1:
                    self._delta_seq.pop(session_id, None)
                    raise self._refuse(tx, session_id, "cannot save a checkpoint of")
                tx.batch(_finish_steps(session_id, finished))
                self._delta(tx, session_id, payload, wait_seq, seq, now)
                written = (wait_seq, seq)
            else:
                self._running(tx, session_id, "cannot record a step of")
                tx.batch(_finish_steps(session_id, finished))
            attempt = self._start(tx, session_id, start) if start is not None else 0
        if written is not None:
            self._delta_seq[session_id] = written  # after COMMIT: a rolled-back delta does not count
        return attempt

    def spawned(self, session_id: str, path: str, attempt: int, pgid: int) -> bool:
        """Record a step's process group, so recovery can refuse to start another attempt while it
        lives (issue 10). Not made durable: a process group does not outlive a power loss either.
        False: the session was cancelled meanwhile (issue 20), and the caller stops the group."""
        with self._write(session_id, durable=False) as tx:
            tx.run("UPDATE steps SET pgid = ?, host = ? WHERE session_id = ? AND path = ? AND attempt = ?",
                   (pgid, HOST, session_id, path, attempt))
            row = tx.row("SELECT status FROM sessions WHERE id = ?", (session_id,))
            return row is None or row["status"] != "cancelled"

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
        # issue 23: a gated wait never takes a queued event as it opens (an approval is given to an open gate)
        names = [a["event"] for a in awaiting if a.get("event") and not outcomes.gated(a)]
        with self._write(session_id) as tx:
            row = self._running(tx, session_id, "cannot suspend")
            tx.batch(_finish_steps(session_id, finished))
            keys = self._keyring(tx, signing=True)
            wait_seq = int(row["wait_seq"]) + 1
            if row["pending_event"] is not None and undelivered:  # claimed, but no wait took it: back to the inbox
                tx.run("UPDATE events SET outcome = 'queued', wait_seq = NULL, wait_path = NULL, consumed_at = NULL "
                       "WHERE id = ?", (row["pending_event"],))
            envelope = seal.envelope(payload[0], payload[1], keys, bind=seal.session_bind(session_id, wait_seq),
                                     now=now)
            tx.run("INSERT INTO continuations (session_id, envelope) VALUES (?, ?) "
                   "ON CONFLICT (session_id) DO UPDATE SET envelope = excluded.envelope", (session_id, envelope))
            tx.run("DELETE FROM deltas WHERE session_id = ?", (session_id,))
            self._delta_seq.pop(session_id, None)
            if definition_bytes is not None:
                self._put_definition(tx, keys, definition_bytes[0], definition_bytes[1], now)
            taken = None
            if names:
                taken = tx.row(f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? AND outcome = 'queued' "
                               f"AND name IN ({marks(names)}) ORDER BY id LIMIT 1", (session_id, *names))
            output_json = None if output is None else json.dumps(output, default=str)
            if taken is not None:
                path, still = outcomes.taken_at_suspend(sorted(awaiting, key=outcomes.gated), ahead, taken["name"])
                tx.run("UPDATE events SET outcome = 'consumed', wait_seq = ?, wait_path = ?, consumed_at = ? "
                       "WHERE id = ?", (wait_seq, path, now, taken["id"]))
                tx.run("UPDATE sessions SET wait_seq = ?, delta_seq = 0, cursor = ?, updated_at = ?, "
                       "output = COALESCE(?, output), pending_event = ?, attempt = attempt + 1, ahead = ? WHERE id = ?",
                       (wait_seq, cursor, now, output_json, taken["id"], json.dumps(still), session_id))
                record = _event(taken)._replace(outcome="consumed", wait_seq=wait_seq, wait_path=path,
                                                consumed_at=now)
                return Suspended(wait_seq, record)
            deadlines = [w["deadline"] for w in awaiting if w.get("deadline") is not None]
            tx.run("UPDATE sessions SET status = 'waiting', wait_seq = ?, delta_seq = 0, awaiting = ?, deadline = ?, "
                   "cursor = ?, updated_at = ?, output = COALESCE(?, output), pending_event = NULL, "
                   "notify_pending = ?, owner = NULL, ahead = ? WHERE id = ?",
                   (wait_seq, json.dumps(awaiting), min(deadlines) if deadlines else None, cursor, now,
                    output_json, int(notify), json.dumps(sorted(set(ahead))), session_id))
            self._open_timers(tx, session_id, awaiting, now)  # issue 23: reminders and escalations
        return Suspended(wait_seq)

    def _unconsume(self, tx: Tx, session: Session, keep: tuple[str, str | None] | None) -> None:
        """Issue 23: a gated wait consumed (by another event, its timeout, a cancel): the approvals still
        `counted` toward it become `unconsumed`; those of the quorum that decided it (`keep`: the event
        and wait path) stay `counted`, listed in the consuming event's `approvals`."""
        if not any((a.get("policy") or {}).get("quorum") for a in session.awaiting):
            return  # no quorum here: nothing was counted (and ungated claims pay no statement)
        name, path = keep if keep is not None else ("", "")
        tx.run("UPDATE events SET outcome = 'unconsumed' WHERE session_id = ? AND wait_seq = ? AND outcome = 'counted' "
               "AND NOT (name = ? AND COALESCE(wait_path, '') = ?)", (session.id, session.wait_seq, name, path or ""))

    _FLIP = ("UPDATE sessions SET status = 'running', attempt = attempt + 1, awaiting = '[]', deadline = NULL, "
             "updated_at = ?, owner = ?, notify_pending = 0, ahead = ?, timer_at = NULL, "
             "pending_event = COALESCE(?, pending_event), workflow_path = COALESCE(?, workflow_path) "
             "WHERE id = ? AND status = 'waiting' AND wait_seq = ?")
    _CLAIM = ("INSERT INTO events (session_id, wait_seq, name, data, received_at, source, outcome, consumed_at, "
              "detail) VALUES (?, ?, ?, ?, ?, ?, 'consumed', ?, ?)")

    @staticmethod
    def _flip_params(session: Session, now: float, ahead: list[str], pending: int | None,
                     moved: str | None = None) -> tuple[object, ...]:
        """`_FLIP`'s parameters; `ahead`: `outcomes.still_ahead` of the session for this claim."""
        return now, this_owner(), json.dumps(ahead), pending, moved, session.id, session.wait_seq

    def _flip(self, tx: Tx, session: Session, now: float, *, consumer: str | None = None,
              keep: tuple[str, str | None] | None = None, pending: int | None = None, moved: str | None = None,
              returning: bool = False) -> Row | None:
        """The compare-and-set that consumes a wait: exactly one caller wins (reliability G1). `keep`:
        the event and wait that consume it, whose counted approvals stay `counted` (issue 23);
        `pending`: the event the runner is handed; `moved`: the workflow's new path (issue 11).
        `returning`: the session's row as it left it, where the dialect can (else None)."""
        params = self._flip_params(session, now, outcomes.still_ahead(session, now, consumer), pending, moved)
        rows = tx.rows(f"{self._FLIP} RETURNING {COLUMNS}", params) if returning and self.returning else None
        row = rows[0] if rows else None  # (all fetched: the statement has ended)
        self._flipped(tx, session, (len(rows) if rows is not None else tx.run(self._FLIP, params)) == 1, keep)
        return row

    def _flipped(self, tx: Tx, session: Session, won: bool, keep: tuple[str, str | None] | None) -> None:
        """After the compare-and-set: refused (the transaction rolled back) when it lost; else the
        approvals counted toward the wait it consumed are settled (`_unconsume`)."""
        if not won:
            raise not_waiting(self._session_in(tx, session.id), session.id, session.wait_seq,
                              self._last_event(tx, session.id))
        self._unconsume(tx, session, keep)

    def _claim(self, tx: Tx, session: Session, data: dict[str, Any], source: str, now: float) -> EventRecord:
        """A late event's wait, claimed for its timeout: the runner is handed it, and so is recovery
        (pending_event, issue 20). The caller read the session under its row lock."""
        row_id = tx.insert(self._CLAIM, (session.id, session.wait_seq, TIMEOUT, json.dumps(data), now, source, now, None))
        self._flip(tx, session, now, pending=row_id)
        return EventRecord(TIMEOUT, data, now, source, session.wait_seq, None, "consumed", consumed_at=now, row=row_id)

    def fire(self, session_id: str, *, wait_seq: int, source: str, now: float | None = None) -> EventRecord:
        """Claim an overdue wait for its timeout: the same compare-and-set as an event, so an event and
        a timeout racing at the deadline resolve to exactly one branch. Returns the claimed event."""
        got = self.fire_many([(session_id, wait_seq)], source=source, now=now)[session_id]
        if isinstance(got, RoastError):
            raise got
        return got

    def fire_many(self, waits: Sequence[tuple[str, int]], *, source: str,
                  now: float | None = None) -> dict[str, EventRecord | RoastError]:
        """Claim many overdue waits, (session id, wait number) each, for their timeouts in ONE
        transaction (`roast tick`, issue 25): per session the same check and compare-and-set as
        `fire`, so each wait still resolves exactly once. A session no longer waiting at that wait
        gets its refusal (nothing of it was written) and the others are claimed all the same. The
        row locks, the events and the compare-and-sets are one `batch` each (one round trip)."""
        now = _now(now)
        claimed: dict[str, EventRecord | RoastError] = {}
        order = sorted(waits)  # one order of row locks for every claimer
        with self._write(order[0][0] if len(order) == 1 else None) as tx:
            rows = self._lock_many(tx, [sid for sid, _ in order])
            found = iter(self._sessions(tx, [r for r in rows if r is not None]))
            due: list[tuple[Session, dict[str, Any], str | None, list[str]]] = []
            for (session_id, wait_seq), row in zip(order, rows):
                session = None if row is None else next(found)
                if session is None or session.status != "waiting" or session.wait_seq != wait_seq:
                    claimed[session_id] = missing(session_id) if session is None else \
                        not_waiting(session, session_id, wait_seq, self._last_event(tx, session_id))
                    continue  # nothing of this session is written
                # a pause's deadline (a sleep, a retry's backoff) ended: not a decision
                ended = [a for a in session.awaiting if a.get("deadline") is not None and a["deadline"] <= now]
                detail = PAUSE_ENDED if ended and not any(a.get("event") for a in ended) else None
                due.append((session, timeout_event(session.deadline), detail, outcomes.still_ahead(session, now, None)))
            inserted = tx.batch([(self._CLAIM, (s.id, s.wait_seq, TIMEOUT, json.dumps(data), now, source, now, detail))
                                 for s, data, detail, _ in due])
            # the rows are locked by this transaction: each compare-and-set applies
            flipped = tx.batch([(self._FLIP, self._flip_params(session, now, ahead, int(rows[0]["id"])))
                                for (session, _, _, ahead), (_, rows) in zip(due, inserted)])
            group = self._joined()
            for (session, data, detail, ahead), (_, rows), (count, _) in zip(due, inserted, flipped):
                if count != 1:
                    raise StoreUnavailable(f"session {session.id} changed under its row lock; nothing changed",
                                           hint=INVARIANT)
                self._unconsume(tx, session, None)
                if group is not None:  # as the claim left it (`_FLIP`), for a `finish` that joins (issue 25)
                    group.claim(session._replace(status="running", attempt=session.attempt + 1, awaiting=[],
                                                 deadline=None, updated_at=now, owner=this_owner(),
                                                 notify_pending=False, ahead=tuple(ahead)))
                claimed[session.id] = EventRecord(TIMEOUT, data, now, source, session.wait_seq, None, "consumed",
                                                  consumed_at=now, row=int(rows[0]["id"]), detail=detail)
        return claimed

    def take_over(self, session_id: str, *, now: float | None = None) -> EventRecord | None:
        """Make this process the owner of an orphaned (or interrupted) session; return the event that was
        claimed for it and not yet delivered, if any (saved by the claim: nothing is inferred)."""
        now = _now(now)
        with self._write(session_id) as tx:
            row = self._locked(tx, session_id)
            if row["status"] not in ("running", "interrupted"):
                raise not_waiting(self._sessions(tx, [row])[0], session_id, -1, self._last_event(tx, session_id))
            count = tx.run("UPDATE sessions SET status = 'running', owner = ?, attempt = attempt + 1, updated_at = ?, "
                           "error = NULL WHERE id = ? AND status = ? AND COALESCE(owner, '') = ?",
                           (this_owner(), now, session_id, row["status"], row["owner"] or ""))
            if count != 1:
                raise NotWaiting(f"session {session_id} was taken over by another process meanwhile; nothing changed")
            if row["pending_event"] is None:
                return None
            pending = tx.row(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (row["pending_event"],))
            return _event(pending) if pending is not None else None

    def reopen(self, session_id: str, *, changes: object | None = None, cursor: str | None = None,
               now: float | None = None, note: Incoming | None = None) -> None:
        """Failed → running, for `roast retry` (issue 16): a compare-and-set on the status, so of any
        number of concurrent retries exactly one wins. The kept checkpoint is continued; `changes`
        (a delta: the rewound cursor and the outputs dropped by `--from`) is saved in the same
        transaction. Events the failure left `unconsumed` are queued again. Hold the lock first."""
        now = _now(now)
        payload = seal.dumps(changes, f"session {session_id}") if changes is not None else None
        with self._write(session_id) as tx:
            row = self._locked(tx, session_id)
            if row["status"] != "failed":
                raise refusal(self._sessions(tx, [row])[0], "cannot retry", self._last_event(tx, session_id))
            if tx.row("SELECT 1 AS one FROM continuations WHERE session_id = ?", (session_id,)) is None:
                raise Refused(f"session {session_id} failed without keeping its state (roast 0.1 did not keep "
                              "it), so it cannot be retried; nothing changed", hint="start the workflow again")
            seq = int(row["delta_seq"])
            if payload is not None:
                seq += 1
                self._delta(tx, session_id, payload, int(row["wait_seq"]), seq, now)
            count = tx.run("UPDATE sessions SET status = 'running', owner = ?, error = NULL, finished_at = NULL, "
                           "final_output = NULL, updated_at = ?, attempt = attempt + 1, delta_seq = ?, "
                           "cursor = COALESCE(?, cursor) WHERE id = ? AND status = 'failed'",
                           (this_owner(), now, seq, cursor, session_id))
            if count != 1:
                raise NotWaiting(f"session {session_id} was retried by another process meanwhile; nothing changed")
            # never the approvals a closed gate left `unconsumed` (issue 23): they were for that wait only
            tx.run("UPDATE events SET outcome = 'queued' WHERE session_id = ? AND outcome = 'unconsumed' "
                   "AND wait_seq IS NULL", (session_id,))
            if note is not None:  # `roast retry --event-data`: the replaced data, who and why (issue 24)
                self._record(tx, session_id, note, outcomes.Verdict("consumed", "the retry's replacement data"), now)
        self._delta_seq.pop(session_id, None)

    def finish(self, session_id: str, status: str, *, output: dict[str, Any] | None = None,
               final_output: str | None = None, error: str | None = None, finished: Sequence[StepDone] = (),
               keep_state: bool = False, cursor: str | None = None, now: float | None = None) -> Session:
        """Running → completed/failed/timed_out; returns the session as it ends. The continuation is
        deleted (SPEC §7) unless `keep_state` (a failed session keeps its last checkpoint, for `roast
        retry`); events still queued are marked `unconsumed`."""
        if status not in ("completed", "failed", "timed_out"):
            raise UsageError(f"cannot finish a session as {status!r}; use completed, failed or timed_out")
        now = _now(now)
        output_json = None if output is None else json.dumps(output, default=str)
        end = ("UPDATE sessions SET status = ?, output = ?, final_output = ?, error = ?, awaiting = '[]', deadline = "
               "NULL, finished_at = ?, updated_at = ?, pending_event = NULL, owner = NULL, cursor = COALESCE(?, cursor), "
               "delta_seq = CASE WHEN ? = 1 THEN delta_seq ELSE 0 END WHERE id = ? AND status = 'running'",
               (status, output_json, final_output, error, now, now, cursor, int(keep_state), session_id))
        gone = [] if keep_state else [("DELETE FROM deltas WHERE session_id = ?", (session_id,)),
                                      ("DELETE FROM continuations WHERE session_id = ?", (session_id,))]
        rest = [*_finish_steps(session_id, finished), *gone,
                ("UPDATE events SET outcome = 'unconsumed' WHERE session_id = ? AND outcome = 'queued'", (session_id,))]
        group = self._joined()
        claimed = group.claimed(session_id) if group is not None else None
        if claimed is not None:  # its row locked by the group's open transaction since its claim (issue 25)
            group.defer(session_id, end, rest)  # type: ignore[union-attr]
            return claimed._replace(status=status, output=None if output_json is None else json.loads(output_json),
                                    final_output=final_output, error=error, awaiting=[], deadline=None,
                                    finished_at=now, updated_at=now, owner=None, cursor=cursor or claimed.cursor)
        with self._write(session_id) as tx:
            # the compare-and-set first (it takes the row lock): refused, it has changed nothing (a
            # write group goes on); then the rest in one batch (one round trip), the session last
            if tx.run(*end) != 1:
                raise self._refuse(tx, session_id, f"cannot mark as {status}")
            done = tx.batch([*rest, (f"SELECT {COLUMNS} FROM sessions WHERE id = ?", (session_id,))])
            return _session(done[-1][1][0])

    def interrupted(self, session_id: str, *, error: str, finished: Sequence[StepDone] = (),
                    restart: bool = False, now: float | None = None) -> None:
        """Roast is being stopped (a signal): record it and mark the steps in flight `interrupted`.
        Stopped by a person, it is `interrupted` (issue 20): only `roast resume -s ID` continues it. `restart`
        (`roast serve` past its grace): it stays `running`, orphaned once this process exits, recovered."""
        now = _now(now)
        with self._write(session_id) as tx:
            self._lock(tx, session_id)
            tx.batch(_finish_steps(session_id, finished))
            tx.run("UPDATE steps SET status = 'interrupted', finished_at = ? WHERE session_id = ? AND "
                   "finished_at IS NULL", (now, session_id))
            tx.run("UPDATE sessions SET status = ?, error = ?, updated_at = ?, owner = NULL WHERE id = ? "
                   "AND status = 'running'", ("running" if restart else "interrupted", error, now, session_id))

    def record_step(self, session_id: str, start: StepStart, done: StepDone | None) -> int:
        """A step that ran outside the session's drive (a `notify:` step of a waiting session): its
        history row, written whole; returns its attempt number."""
        with self._write(session_id) as tx:
            self._locked(tx, session_id)
            return self._start(tx, session_id, start, done)

    def claim_notice(self, session_id: str, *, wait_seq: int) -> bool:
        """Claim the notify steps of wait `wait_seq` (issue 20), holding the notify lock: exactly one caller
        wins. A notice claimed (2) and never `notified` belongs to a process that died: due again."""
        with self._write(session_id) as tx:
            return tx.run("UPDATE sessions SET notify_pending = 2 WHERE id = ? AND wait_seq = ? AND status = 'waiting' "
                          "AND notify_pending <> 0", (session_id, wait_seq)) == 1

    def notified(self, session_id: str, *, wait_seq: int) -> None:
        with self._write(session_id) as tx:
            tx.run("UPDATE sessions SET notify_pending = 0 WHERE id = ? AND wait_seq = ?", (session_id, wait_seq))

    def cancel(self, session_id: str, *, reason: str | None = None, actor: str | None = None,
               now: float | None = None) -> Session:
        """Cancel a session that has not finished, even a running one (issue 20; accepts a prefix): its steps
        in flight are `cancelled` (the caller stops them); the status is what every writer checks, so
        its owner's next write is refused and it stops there. No lock is taken."""
        now = _now(now)
        sid = self.get(session_id).id
        with self._write(sid) as tx:
            row = self._locked(tx, sid)
            if row["status"] not in ("waiting", "running", "interrupted"):
                raise refusal(_session(row), "cannot cancel", self._last_event(tx, sid))
            if row["status"] == "waiting":  # issue 23: the approvals counted toward its wait
                self._unconsume(tx, _session(row), None)
            tx.run("UPDATE sessions SET status = 'cancelled', reason = ?, cancelled_by = ?, awaiting = '[]', "
                   "deadline = NULL, finished_at = ?, updated_at = ?, pending_event = NULL, owner = NULL WHERE id = ?",
                   (reason, actor, now, now, sid))
            tx.run("UPDATE steps SET status = 'cancelled', finished_at = ? WHERE session_id = ? AND "
                   "finished_at IS NULL", (now, sid))
            tx.run("DELETE FROM continuations WHERE session_id = ?", (sid,))
            tx.run("DELETE FROM deltas WHERE session_id = ?", (sid,))
            tx.run("UPDATE events SET outcome = 'unconsumed' WHERE session_id = ? AND outcome = 'queued'", (sid,))
            return self._session_in(tx, sid)

    def prune(self, *, older_than: float, now: float | None = None) -> int:
        """Delete finished sessions last updated more than `older_than` seconds ago; return how many."""
        if older_than < 0:
            raise UsageError(f"older_than must be zero or more seconds, not {older_than!r}")
        cutoff = _now(now) - older_than
        with self._write() as tx:
            # PostgreSQL skips a finished session being written right now (a refused delivery): next prune
            ids = [r["id"] for r in tx.rows(f"SELECT id FROM sessions WHERE status IN ({marks(FINISHED)}) "
                                            f"AND updated_at < ? ORDER BY id{self._skip_locked}", (*FINISHED, cutoff))]
            for chunk in range(0, len(ids), 500):
                part = ids[chunk:chunk + 500]
                for table, column in self._prune_tables:
                    tx.run(f"DELETE FROM {table} WHERE {column} IN ({marks(part)})", part)
            tx.run("DELETE FROM definitions WHERE fingerprint NOT IN "
                   "(SELECT definition FROM sessions WHERE definition IS NOT NULL)")
        self._pruned(ids)
        return len(ids)

    # -- issue 23: a wait's reminders and escalations (durable timers the worker fires) ----------

    def _open_timers(self, tx: Tx, session_id: str, awaiting: list[dict[str, Any]], now: float) -> None:
        """A wait opened at `now`: its timer counters start again, and the first one is due then."""
        timer_at = None
        if any(entry.get("policy") for entry in awaiting):
            from roast.timers import first_timer

            timer_at = first_timer(awaiting, now)
        tx.run("UPDATE sessions SET opened_at = ?, reminded = 0, escalated = 0, timer_at = ? WHERE id = ?",
               (now, timer_at, session_id))

    def claim_timer(self, session_id: str, *, wait_seq: int, reminded_was: int, escalated_was: int,
                    reminded: int, escalated: int, next_at: float | None) -> bool:
        """Claim a wait's due reminder and escalations before running them: a compare-and-set on the wait
        and its counters, so of any number of workers exactly one wins, and a worker that dies after
        its claim never runs them again (at most once). `next_at`: the next one due (None: none)."""
        with self._write(session_id) as tx:
            return tx.run("UPDATE sessions SET reminded = ?, escalated = ?, timer_at = ? WHERE id = ? AND "
                          "wait_seq = ? AND status = 'waiting' AND reminded = ? AND escalated = ?",
                          (reminded, escalated, next_at, session_id, wait_seq, reminded_was, escalated_was)) == 1
