"""The delivery rules, decided from plain values with no database (`roast.outcomes`): every
outcome an event can have, the events left ahead by a claim, and the refusal wording. The
store contract (tests/test_store.py) checks that both stores write what is decided here."""
from __future__ import annotations

from typing import Any

import pytest

from roast import outcomes
from roast.errors import BadEventData, NotFound, NotWaiting, Refused
from roast.outcomes import (
    decide,
    missing,
    not_waiting,
    refusal,
    same_event,
    state_phrase,
    still_ahead,
    taken_at_suspend,
)
from roast.store import Session

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def session(status: str = "waiting", *, awaiting: list[dict[str, Any]] | None = None, wait_seq: int = 1,
            declares: tuple[str, ...] = ("approved", "rejected", "later"), ahead: tuple[str, ...] = ("later",),
            finished_at: float | None = None, reason: str | None = None, holder: str | None = None,
            orphaned: bool = False) -> Session:
    waits = awaiting if awaiting is not None else [
        {"event": "approved", "path": "1", "deadline": None}, {"event": "rejected", "path": "1", "deadline": None}]
    return Session("s0mww81wj2g4a", "/w/flow.yml", "flow", "fp", None, status, "steps[1]",
                   waits if status == "waiting" else [], None, wait_seq, 1, T0, T0 + 1, finished_at, None, None,
                   None, reason, False, orphaned, None, declares, None, None, None, holder, False, ahead, {})


DUE = [{"event": "approved", "path": "1", "deadline": T0 + 5}, {"event": "rejected", "path": "1", "deadline": T0 + 5}]

# (session, event name, holding, now) -> outcome, and a piece of the detail recorded with it
TABLE = [
    (session(), "approved", True, T0, "consumed", None),
    (session(), "approved", False, T0, "busy", None),
    (session(awaiting=DUE), "approved", True, T0 + 6, "late", "the wait's deadline passed at 2026-09-21T14:13:25Z"),
    (session(awaiting=DUE), "approved", True, T0 + 4, "consumed", None),
    (session(), "later", True, T0, "queued", None),
    (session("running"), "approved", True, T0, "not_waiting", "it is running, and no wait still ahead"),
    (session("running"), "later", True, T0, "queued", None),
    (session(), "nobody", True, T0, "unknown_event", "no wait of the workflow declares it"),
    (session(declares=()), "nobody", True, T0, "not_waiting", "it is waiting for approved, rejected"),
    (session("completed", finished_at=T0 + 9), "approved", True, T0, "closed",
     "the session completed at 2026-09-21T14:13:29Z"),
    (session("cancelled", finished_at=T0 + 9), "nobody", True, T0, "closed", "the session cancelled"),
]


@pytest.mark.parametrize(("state", "name", "holding", "now", "outcome", "detail"), TABLE,
                         ids=[f"{row[0].status}-{row[1]}-{row[4]}" for row in TABLE])
def test_every_delivery_outcome_is_decided_from_the_session_alone(state: Session, name: str, holding: bool,
                                                                   now: float, outcome: str,
                                                                   detail: str | None) -> None:
    verdict = decide(state, name, holding=holding, now=now)
    assert verdict.outcome == outcome
    assert (detail is None and verdict.detail is None) or (detail is not None and detail in verdict.detail)


def test_a_consumed_event_names_the_wait_that_takes_it_and_a_late_one_its_deadline() -> None:
    two = session(awaiting=[{"event": "a", "path": "0/0", "deadline": None},
                            {"event": "b", "path": "0/1", "deadline": T0 + 1}], declares=("a", "b"))
    assert decide(two, "b", holding=True, now=T0).path == "0/1"
    assert decide(two, "b", holding=True, now=T0 + 2).deadline == T0 + 1


def test_a_link_for_an_earlier_wait_is_stale_and_queueing_under_if_waiting_is_refused() -> None:
    assert decide(session(wait_seq=2), "approved", holding=True, now=T0, wait_seq=1).outcome == "stale"
    assert decide(session("running"), "approved", holding=True, now=T0, wait_seq=1).outcome == "stale"
    assert decide(session(wait_seq=2), "approved", holding=True, now=T0, wait_seq=2).outcome == "consumed"
    with pytest.raises(NotWaiting, match=r"is running, not waiting for 'later'; nothing changed \(--if-waiting\)"):
        decide(session("running"), "later", holding=True, now=T0, if_waiting=True)


def test_an_event_id_reused_with_other_data_is_refused_and_with_the_same_data_is_a_duplicate() -> None:
    same_event("e1", "d1", "d1", "s1")
    same_event("e1", None, "d1", "s1")  # a sender that sends no digest cannot be checked
    with pytest.raises(BadEventData, match="event id 'e1' was already used with other data \\(for session s1\\)"):
        same_event("e1", "d2", "d1", "s1")


def test_a_claim_leaves_ahead_the_other_branches_waits_and_a_timeout_the_waits_not_yet_due() -> None:
    state = session(awaiting=[{"event": "a", "path": "0/0", "deadline": T0 + 1},
                              {"event": "b", "path": "0/1", "deadline": T0 + 9},
                              {"event": None, "path": "0/2", "deadline": T0 + 1}], ahead=("z",))
    assert still_ahead(state, T0, "0/0") == ["b", "z"]
    assert still_ahead(state, T0 + 2, None) == ["b", "z"]
    assert still_ahead(state, T0 + 10, None) == ["z"]
    waits = [{"event": "a", "path": "0/0"}, {"event": "b", "path": "0/1"}]
    assert taken_at_suspend(waits, ["z"], "b") == ("0/1", ["a", "z"])


def test_refusals_name_the_session_say_what_it_is_doing_and_that_nothing_changed() -> None:
    assert state_phrase(session(wait_seq=3), None) == "it now waits for 'approved', 'rejected' (wait #3)"
    assert state_phrase(session("running", holder="pid 7 on h"), ("go", T0)) == \
        "it is running in pid 7 on h (resumed at 2026-09-21T14:13:20Z with 'go')"
    assert "is orphaned" in state_phrase(session("running", orphaned=True), None)
    assert state_phrase(session("cancelled", finished_at=T0, reason="by ana"), None) == \
        "it was cancelled at 2026-09-21T14:13:20Z (by ana)"
    refused = refusal(session("completed", finished_at=T0), "cannot retry", ("go", T0))
    assert isinstance(refused, Refused)
    assert str(refused) == ("cannot retry session s0mww81wj2g4a: it completed at 2026-09-21T14:13:20Z "
                            "(after 'go'); nothing changed")
    assert "is no longer at wait #1: it now waits" in str(not_waiting(session(wait_seq=2), "s0mww81wj2g4a", 1, None))
    assert "is no longer waiting: it timed out" in str(not_waiting(session("timed_out"), "s0mww81wj2g4a", 1, None))
    assert isinstance(not_waiting(None, "s0mww81wj2g4a", 1, None), NotFound)
    assert str(missing("abcd")).startswith("no session 'abcd'")


def test_a_wait_without_a_gate_in_another_branch_clears_the_only_gates_mark():
    """Issue 23: `gate:NAME` in `ahead` says only gated waits ahead declare NAME (a queued NAME is kept,
    and told no wait ahead takes it). After a claim, NAME still awaited by an open wait without a gate
    (another parallel branch) is one a wait ahead takes: the mark goes."""
    waits = [{"event": "go", "path": "b0", "deadline": None}, {"event": "approved", "path": "b1", "deadline": None}]
    marked = session(awaiting=waits, ahead=("approved", "gate:approved"))
    assert outcomes.still_ahead(marked, T0, "b0") == ["approved"]
    gated = session(awaiting=[{**w, "policy": {"approvers": ["ana"]}} for w in waits], ahead=("approved", "gate:approved"))
    assert outcomes.still_ahead(gated, T0, "b0") == ["approved", "gate:approved"]
    assert outcomes.ahead_of({"approved", "rejected"}, {"rejected"}) == ["approved", "gate:approved", "rejected"]
    later = session("running", ahead=("approved", "gate:approved"))
    assert outcomes.decide(later, "approved", holding=True, now=T0) == \
        outcomes.Verdict("queued", outcomes.ONLY_GATES_AHEAD)
    assert outcomes.decide(session("running", ahead=("approved",)), "approved", holding=True, now=T0) == \
        outcomes.Verdict("queued")
