"""Deliveries (issue 14): `SQLStore.deliver`, the one transaction that decides what becomes of an event
sent to a session (consumed, kept for later, a duplicate, late, refused) and records it, with the
signature binding (issue 21) and a gated wait's policy (issue 23).

Knows no dialect: `roast.sql` gives it the session's row lock and the compare-and-set (`_flip`),
and `SQLStore` mixes it in beside `Reads` and `Grouping`. A dialect may send the consumed event's
INSERT and the compare-and-set as one statement (`_consume`: PostgreSQL, a round trip less a claim).
"""
from __future__ import annotations

import json

from roast import outcomes
from roast.requests import timeout_event
from roast.outcomes import not_waiting
from roast.sql_reads import _event, _now, prior_where
from roast.store import EventRecord, Incoming, Outcome, Session

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any

    from roast.sql_reads import Row, Tx


class Deliveries:
    """`SQLStore`'s deliveries (see the module docstring)."""

    returning: bool  # `UPDATE … RETURNING` and `INSERT … RETURNING` (SQLStore)

    if TYPE_CHECKING:
        def _write(self, session_id: str | None = None, *, durable: bool = True) -> AbstractContextManager[Tx]: ...
        def _event_lock(self, tx: Tx, workflow_scope: str, event_id: str) -> None: ...
        def _locked(self, tx: Tx, session_id: str) -> Row: ...
        def _sessions(self, tx: Tx, rows: Any) -> list[Session]: ...
        def _session_in(self, tx: Tx, session_id: str) -> Session: ...
        def _last_event(self, tx: Tx, session_id: str) -> tuple[str, float] | None: ...
        def _prior(self, tx: Tx, session_id: str, event_id: str, workflow_scope: str | None) -> Row | None: ...
        def _claim(self, tx: Tx, session: Session, data: dict[str, Any], source: str, now: float) -> EventRecord: ...
        def _flip(self, tx: Tx, session: Session, now: float, *, consumer: str | None = None,
                  keep: tuple[str, str | None] | None = None, pending: int | None = None, moved: str | None = None,
                  returning: bool = False) -> Row | None: ...

    def deliver(self, session_id: str, event: Incoming, *, if_waiting: bool = False, workflow_scope: str | None = None,
                holding: bool = True, workflow_path: str | None = None, wait_seq: int | None = None,
                now: float | None = None) -> Outcome:
        """Deliver one event (issue 14), in one transaction; `outcomes.decide` says what becomes of
        it: `consumed` (claimed by the waiting wait: a compare-and-set on status and wait number, so
        exactly one of any number of concurrent deliveries wins; the caller then runs the branch),
        `queued` (kept for a later wait), `duplicate` (this event id was already accepted: nothing
        changes), `late` (the wait's deadline passed: its timeout is claimed instead), `closed`,
        `unknown_event` or `not_waiting` (refused, and recorded), `busy` (without `holding`, the
        session's lock, an event the session waits for is not consumed). `workflow_scope`: an
        event id counts as used if any session of that workflow accepted it (delivery without a
        session id). `workflow_path`: the session's workflow moved there (issue 11); recorded when
        the event is consumed."""
        now = _now(now)
        with self._write(session_id) as tx:
            if event.event_id and workflow_scope is not None:
                self._event_lock(tx, workflow_scope, event.event_id)
            row = self._locked(tx, session_id)
            if event.signature is not None:
                self._bind_signature(tx, session_id, event, now)
            session = self._sessions(tx, [row])[0] if row["status"] == "waiting" else None
            # issue 25: where the event consumes a wait at once, its id is checked by its INSERT
            riding = self._riding(session, event, holding, now, wait_seq, if_waiting)
            if event.event_id and riding is None:
                prior = self._prior(tx, session_id, event.event_id, workflow_scope)
                if prior is not None:
                    return self._duplicate(tx, event, prior)
            session = session or self._sessions(tx, [row])[0]
            verdict = riding or outcomes.decide(session, event.name, holding=holding, now=now, wait_seq=wait_seq,
                                                if_waiting=if_waiting)
            if verdict.outcome == "stale":
                raise not_waiting(session, session_id, wait_seq or 0, self._last_event(tx, session_id))
            if verdict.outcome == "busy":
                return Outcome("busy", None, session)
            if verdict.outcome == "late":
                late = self._record(tx, session_id, event, verdict, now)
                claimed = self._claim(tx, session, timeout_event(verdict.deadline, event.name), "late", now)
                return Outcome("late", late, self._session_in(tx, session_id), claimed=claimed)
            if verdict.outcome == "consumed":
                approvals = None
                gate = outcomes.offered_to(session, event.name, verdict.path)
                if gate is not None and gate.get("policy"):  # issue 23: the wait's policy judges it first
                    judged = self._judge(tx, session, event, gate, now)
                    if isinstance(judged, Outcome):
                        return judged
                    approvals = judged
                taken = self._consume(tx, session, event, verdict, now, approvals, riding is not None, workflow_scope,
                                      workflow_path)
                if taken is None:  # the event id was accepted before: nothing was recorded
                    prior = self._prior(tx, session_id, event.event_id or "", workflow_scope)
                    assert prior is not None
                    return self._duplicate(tx, event, prior)
                consumed, row = taken
                after = self._sessions(tx, [row])[0] if row is not None else self._session_in(tx, session_id)
                return Outcome("consumed", consumed, after)
            return Outcome(verdict.outcome, self._record(tx, session_id, event, verdict, now), session)

    def _riding(self, session: Session | None, event: Incoming, holding: bool, now: float, wait_seq: int | None,
                if_waiting: bool) -> outcomes.Verdict | None:
        """The verdict of an event with an id that consumes a waiting session's wait, with no gate to
        judge it: its id's check then rides on its INSERT (one statement less a claim, issue 25).
        None: the id is looked up first, as for every other verdict."""
        if session is None or not event.event_id or if_waiting or not self.returning:
            return None
        verdict = outcomes.decide(session, event.name, holding=holding, now=now, wait_seq=wait_seq)
        if verdict.outcome != "consumed":
            return None
        gate = outcomes.offered_to(session, event.name, verdict.path)
        return None if gate is not None and gate.get("policy") else verdict

    def _duplicate(self, tx: Tx, event: Incoming, prior: Row) -> Outcome:
        """An event id accepted before: nothing changes (refused if it came with other data)."""
        outcomes.same_event(event.event_id or "", event.digest, prior["digest"], prior["session_id"])
        return Outcome("duplicate", _event(prior), self._session_in(tx, prior["session_id"]))

    def _bind_signature(self, tx: Tx, session_id: str, event: Incoming, now: float) -> None:
        """A signed request works once, where it was sent (issue 21): the first session and event a
        signature reaches keep it, in the delivery's own transaction; anywhere else it is refused."""
        import hashlib

        digest = hashlib.sha256(event.signature.encode("utf-8", "surrogatepass")).hexdigest()
        self._event_lock(tx, "<signature>", digest)  # PostgreSQL: one binding of a signature at a time
        bound = tx.row("SELECT session_id, event FROM signatures WHERE digest = ?", (digest,))
        if bound is None:
            tx.run("INSERT INTO signatures (digest, session_id, event, received_at) VALUES (?, ?, ?, ?)",
                   (digest, session_id, event.name, now))
        elif (bound["session_id"], bound["event"]) != (session_id, event.name):
            raise outcomes.replayed(event.name, session_id)

    _EVENT = ("INSERT INTO events (session_id, wait_seq, name, data, received_at, source, event_id, digest, outcome, "
              "actor, reason, wait_path, consumed_at, detail, verified, approvals) ")
    _EVENT_VALUES = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"

    def _consume(self, tx: Tx, session: Session, event: Incoming, verdict: outcomes.Verdict, now: float,
                 approvals: list[dict[str, Any]] | None, guard: bool, scope: str | None,
                 moved: str | None) -> tuple[EventRecord, Row | None] | None:
        """The consumed event recorded, then the compare-and-set that hands it to the runner (`_flip`;
        if it loses, the transaction is rolled back, the record with it): the record and the session's
        row as the flip left it. None where `guard` found the event id accepted before (nothing
        recorded). A dialect may send both as one statement (PostgreSQL, issue 25)."""
        consumed = self._record(tx, session.id, event, verdict, now, wait_seq=session.wait_seq,
                                approvals=approvals, guard=guard, scope=scope)
        if consumed is None:
            return None
        return consumed, self._flip(tx, session, now, consumer=verdict.path, keep=(event.name, verdict.path),
                                    pending=consumed.row, moved=moved, returning=True)

    def _event_insert(self, session_id: str, event: Incoming, verdict: outcomes.Verdict, now: float,
                      wait_seq: int | None, approvals: list[dict[str, Any]] | None, guard: bool,
                      scope: str | None) -> tuple[str, tuple[object, ...], EventRecord]:
        """`_record`'s INSERT (returning nothing, with `guard`, where the id was accepted before), its
        parameters, and the record it makes but for its row id."""
        consumed_at = now if wait_seq is not None and verdict.outcome != "counted" else None
        path = verdict.path if wait_seq is not None else None
        data = outcomes.recorded_data(verdict.outcome, dict(event.data))  # a refusal: an excerpt at most
        params = (session_id, wait_seq, event.name, json.dumps(data),  # ensure_ascii: no lone surrogate breaks it
                  now, event.source, event.event_id, event.digest, verdict.outcome, event.actor, event.reason, path,
                  consumed_at, verdict.detail, int(bool(event.verified)),
                  json.dumps(approvals) if approvals is not None else None)
        record = EventRecord(event.name, data, now, event.source, wait_seq, event.event_id, verdict.outcome, event.actor,
                             event.reason, path, consumed_at, verdict.detail, None, bool(event.verified), approvals)
        if not guard:
            return f"{self._EVENT}VALUES ({self._EVENT_VALUES})", params, record
        where, args = prior_where(session_id, event.event_id or "", scope)
        return (f"{self._EVENT}SELECT {self._EVENT_VALUES} WHERE NOT EXISTS (SELECT 1 {where})", (*params, *args),
                record)

    def _record(self, tx: Tx, session_id: str, event: Incoming, verdict: outcomes.Verdict, now: float,
                wait_seq: int | None = None, approvals: list[dict[str, Any]] | None = None,
                guard: bool = False, scope: str | None = None) -> EventRecord | None:
        """The event's row, as the verdict left it (a consumed one with its wait; a `counted` one with
        its wait too, not consumed; `approvals`: those that decided a gated wait, issue 23). `guard`:
        None, and nothing recorded, where its id was accepted before (by the session, or by a session
        of the workflow `scope` names: `_prior`)."""
        sql, params, record = self._event_insert(session_id, event, verdict, now, wait_seq, approvals, guard, scope)
        if not guard:
            return record._replace(row=tx.insert(sql, params))
        rows = tx.rows(f"{sql} RETURNING id", params)
        return record._replace(row=int(rows[0]["id"])) if rows else None

    def _judge(self, tx: Tx, session: Session, event: Incoming, gate: dict[str, Any],
               now: float) -> Outcome | list[dict[str, Any]]:
        """Issue 23: a delivery that would consume a gated wait, judged by its policy against the wait's
        counted approvals (read under the session's row lock, so counting is serialized). `forbidden`,
        `duplicate` (the identity was counted already) and `counted` are recorded and returned as the
        outcome, nothing else changing; when it decides, the approvals that did (the branch's
        `delivery.approvals`) are returned, and the caller consumes the wait."""
        from roast import policy

        rule = policy.from_doc(gate["policy"])
        path = gate.get("path")
        prior = [policy.Approval(r["name"], r["actor"], bool(r["verified"]), r["reason"], r["received_at"],
                                 json.loads(r["data"]))
                 for r in tx.rows("SELECT name, actor, verified, reason, received_at, data, wait_path FROM events "
                                  "WHERE session_id = ? AND wait_seq = ? AND outcome = 'counted' ORDER BY id",
                                  (session.id, session.wait_seq)) if r["wait_path"] == path]
        judged = policy.decide(rule, event=event.name, actor=event.actor, verified=bool(event.verified),
                               starter=session.started_by, prior=prior, reason=event.reason, at=now,
                               data=dict(event.data))
        if isinstance(judged, policy.Decides):
            return policy.approval_dicts(judged.approvals)
        verdict = outcomes.gate_verdict(judged, session, event.name, path)
        counted = verdict.outcome == "counted"
        record = self._record(tx, session.id, event, verdict, now, wait_seq=session.wait_seq if counted else None)
        progress = judged.to_dict() if counted else policy.progress(rule, prior, event.name)
        return Outcome(verdict.outcome, record, self._session_in(tx, session.id), quorum=progress)
