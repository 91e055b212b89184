"""Deadlines (issue 6): where a wait's duration comes from, which branch a timeout runs, and the
three ways a deadline fires — a late `resume`, `roast tick`, and staying with `--wait`/`listen`.

Most tests use a fake clock (a `Clock` passed as `now=`; `listen` gets a fake `sleep` that moves
it), so nothing sleeps. A few end-to-end tests use real sub-second deadlines and real processes,
and one races 8 resuming processes against a `roast tick` loop at a real deadline.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Ran, run_cli

import roast
from roast import api
from roast.cli import main
from roast.errors import EventLate, NotWaiting, WorkflowInvalid

T0 = 1_900_000_000.0  # 2030-03-17T17:46:40Z: a fake "now", far from the real clock
HOUR = 3600.0


class Clock:
    """A fake `now`: returns `t` until a test moves it."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")




def at(workflow: Path, line: int) -> str:
    """`FILE:LINE:` as roast names the workflow: relative to the current directory or absolute,
    whichever is shorter, so the test passes wherever the checkout lives (issue 11)."""
    absolute = os.path.abspath(workflow)
    relative = os.path.relpath(absolute)
    return f"{relative if len(relative) < len(absolute) else absolute}:{line}:"


def cli(*args: Any) -> Ran:
    """`roast ARGS` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


def fill(template: str, **values: Any) -> str:
    text = textwrap.dedent(template)
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    return text


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def step_outputs(sid: str) -> list[str]:
    """The output of every step in the session's history, in order."""
    return [(h.output or "").strip() for h in api.history(sid)]


def event_names(sid: str) -> list[str]:
    """The events a wait took (refused deliveries are in the record too, with their outcome)."""
    return [e.name for e in api.deliveries(sid) if e.outcome == "consumed"]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log"


# The wait is named `approval` so its top-level config key can carry `timeout`/`on_timeout`.
APPROVAL = """
name: deploy
@TOP@
steps:
  - $(echo start >> @LOG@)
  - approval:
      wait_for_event:
        approved:
          - $(echo approved >> @LOG@; echo deployed)
@INLINE@
  - $(echo "after {{event_name}}" >> @LOG@; echo "finished after {{event_name}}")
"""


def approval(wf, log: Path, top: str = "", inline: str = "") -> Path:
    inline_block = textwrap.indent(textwrap.dedent(inline).strip("\n"), " " * 8) if inline else ""
    return wf(fill(APPROVAL, LOG=log, TOP=textwrap.dedent(top).strip("\n"), INLINE=inline_block))


# --------------------------------------------------------------------------- where the duration comes from


@pytest.mark.parametrize(("top", "inline", "seconds"), [
    pytest.param("approval: {timeout: 2h}\nwait_for_event: {timeout: 1d}", "within: 30m", 1800,
                 id="inline within beats the named config and the default"),
    pytest.param("approval: {timeout: 2h}\nwait_for_event: {timeout: 1d}", "", 7200,
                 id="the named config beats the default"),
    pytest.param("wait_for_event: {timeout: 1d}", "", 86400, id="the top-level default alone"),
    pytest.param("wait_for_event: {timeout: 1d}", "within: 45s", 45, id="inline within beats the default"),
    pytest.param("approval: {timeout: 90}", "", 90, id="a bare number is seconds"),
    pytest.param("approval: {timeout: 1.5h}", "", 5400, id="a fractional duration"),
    pytest.param("", "within: 365d", 365 * 86400, id="365 days is the longest allowed"),
])
def test_a_waits_deadline_is_now_plus_the_duration_from_the_most_specific_place(
        wf, log: Path, top: str, inline: str, seconds: float) -> None:
    workflow = approval(wf, log, top, inline)
    clock = Clock()

    r = roast.run(workflow, now=clock)

    assert r.status == "waiting", r
    assert r.deadline == iso(T0 + seconds)
    assert [w["deadline"] for w in r.waits] == [iso(T0 + seconds)]
    assert api.session(r.session_id).deadline == pytest.approx(T0 + seconds)  # absolute epoch, stored
    # one second before the deadline nothing fires; at the deadline it does
    clock.t = T0 + seconds - 1
    assert roast.tick(now=clock) == []
    clock.t = T0 + seconds
    fired = roast.tick(now=clock)
    assert [(f["session_id"], f["fired"]) for f in fired] == [(r.session_id, True)]


def test_a_wait_without_any_duration_has_no_deadline_and_tick_never_fires_it(wf, log: Path) -> None:
    workflow = approval(wf, log, "approval: {on_timeout: [$(echo nope)]}", "timeout:\n  - $(echo nope)")
    clock = Clock()

    r = roast.run(workflow, now=clock)

    assert r.status == "waiting" and r.deadline is None and r.waits[0]["deadline"] is None
    clock.advance(400 * 86400)
    assert roast.tick(now=clock) == []
    assert roast.session(r.session_id).status == "waiting"


def test_roast_validate_json_shows_each_waits_resolved_timeout(wf, log: Path) -> None:
    workflow = approval(wf, log, "approval: {timeout: 2h}\nwait_for_event: {timeout: 1d}")

    r = cli("validate", workflow, "--json")

    assert r.code == 0, r
    assert [w["timeout"] for w in r.json["waits"]] == [7200]


# --------------------------------------------------------------------------- which branch a timeout runs


BRANCHES = """
name: deploy
@TOP@
steps:
  - approval:
      wait_for_event:
        within: 1h
        approved:
          - $(echo approved >> @LOG@)
@INLINE@
"""


@pytest.mark.parametrize(("top", "inline", "ran"), [
    pytest.param("approval:\n  on_timeout:\n    - $(echo named >> @LOG@)\n"
                 "wait_for_event:\n  on_timeout:\n    - $(echo default >> @LOG@)",
                 "        timeout:\n          - $(echo branch >> @LOG@)", "branch",
                 id="the inline timeout branch beats on_timeout"),
    pytest.param("approval:\n  on_timeout:\n    - $(echo named >> @LOG@)\n"
                 "wait_for_event:\n  on_timeout:\n    - $(echo default >> @LOG@)", "", "named",
                 id="the named on_timeout beats the default"),
    pytest.param("wait_for_event:\n  on_timeout:\n    - $(echo default >> @LOG@)", "", "default",
                 id="the default on_timeout"),
])
def test_a_fired_deadline_runs_the_most_specific_timeout_handler_only(wf, log: Path, top: str, inline: str,
                                                                      ran: str) -> None:
    workflow = wf(fill(BRANCHES, TOP=fill(top, LOG=log), INLINE=inline.replace("@LOG@", str(log)), LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    clock.advance(HOUR)

    [fired] = roast.tick(now=clock)

    assert fired == {**fired, "session_id": sid, "fired": True, "status": "completed", "error": None}
    assert lines(log) == [ran]
    assert roast.session(sid).status == "completed"


def test_a_deadline_with_neither_a_timeout_branch_nor_on_timeout_ends_the_session_timed_out(
        wf, log: Path) -> None:
    workflow = wf(fill(BRANCHES, TOP="", INLINE="", LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    clock.advance(HOUR)

    [fired] = roast.tick(now=clock)

    assert fired["fired"] is True and fired["status"] == "timed_out"
    assert "timed out" in fired["error"] and "timeout:" in fired["error"]
    s = roast.session(sid)
    assert s.status == "timed_out" and "timed out" in (s.error or "")
    assert lines(log) == []
    assert event_names(sid) == ["timeout"]


def test_the_late_resume_that_ends_a_session_timed_out_reports_it(wf, log: Path) -> None:
    workflow = wf(fill(BRANCHES, TOP="", INLINE="", LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    clock.advance(HOUR + 1)

    with pytest.raises(EventLate) as caught:
        roast.resume("approved", session_id=sid, now=clock)

    assert caught.value.exit_code == 3
    assert "now timed_out" in str(caught.value)
    assert roast.session(sid).status == "timed_out"
    assert lines(log) == []


def test_the_timeout_branch_sees_event_name_timeout_and_the_deadline_as_event_deadline(wf, log: Path) -> None:
    workflow = approval(wf, log, "", """
        within: 2h
        timeout:
          - $(echo "timeout branch {{event_name}} {{event.deadline}}" >> @LOG@; echo late)
    """.replace("@LOG@", str(log)))
    clock = Clock()
    r = roast.run(workflow, now=clock)
    clock.advance(3 * HOUR)  # fired an hour after the deadline: event.deadline is still the deadline

    roast.tick(now=clock)

    deadline = iso(T0 + 2 * HOUR)
    assert lines(log) == ["start", f"timeout branch timeout {deadline}", "after timeout"]
    s = roast.session(r.session_id)
    assert s.status == "completed"
    assert s.output["approval"]["event"] == "timeout"
    assert s.output["approval"]["data"]["deadline"] == deadline


# --------------------------------------------------------------------------- (a) a late resume


TIMEOUT_BRANCH = """
    within: 1h
    timeout:
      - $(echo "timeout {{event.deadline}}" >> @LOG@; echo timeout-branch-ran)
"""


def test_an_event_after_the_deadline_is_refused_and_the_timeout_branch_runs_once_in_the_same_call(
        wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    clock.advance(HOUR + 60)

    with pytest.raises(EventLate) as caught:
        roast.resume("approved", data={"approver": "ana"}, session_id=sid, now=clock)

    message = str(caught.value)
    assert f"timed out at {iso(T0 + HOUR)}" in message and "'approved' was refused" in message
    assert "now completed" in message
    assert lines(log) == ["start", f"timeout {iso(T0 + HOUR)}", "after timeout"]
    assert step_outputs(sid).count("timeout-branch-ran") == 1
    assert "deployed" not in step_outputs(sid)
    late, event = api.deliveries(sid)
    assert (late.name, late.outcome) == ("approved", "late")  # the refused event, recorded (issue 14)
    assert event.name == "timeout" and event.data.get("refused_event") == "approved"
    # fired exactly once: nothing is left for tick, and the event cannot be delivered again
    assert roast.tick(now=clock) == []
    with pytest.raises(NotWaiting):
        roast.resume("approved", session_id=sid, now=clock)
    assert lines(log) == ["start", f"timeout {iso(T0 + HOUR)}", "after timeout"]


def test_an_event_exactly_at_the_deadline_is_late_and_one_a_second_before_is_not(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    early = roast.run(workflow, now=clock).session_id
    on_time = roast.run(workflow, now=clock).session_id

    clock.t = T0 + HOUR - 1
    assert roast.resume("approved", session_id=early, now=clock).status == "completed"
    clock.t = T0 + HOUR
    with pytest.raises(EventLate):
        roast.resume("approved", session_id=on_time, now=clock)

    assert event_names(early) == ["approved"] and event_names(on_time) == ["timeout"]


def test_a_late_roast_resume_exits_3_saying_when_it_timed_out_and_the_timeout_branch_ran(
        wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    past = time.time() - 2 * HOUR  # created two (real) hours ago: its 1 h deadline has passed
    sid = roast.run(workflow, now=lambda: past).session_id

    r = cli("resume", workflow, "-e", "approved", "-d", '{"approver": "ana"}')

    assert r.code == 3, r
    assert re.search(r"roast: error: .*the wait timed out at \d{4}-\d\d-\d\dT[\d:]+Z", r.err), r
    assert iso(past + HOUR) in r.err and "'approved' was refused" in r.err
    assert lines(log) == ["start", f"timeout {iso(past + HOUR)}", "after timeout"]
    assert step_outputs(sid).count("timeout-branch-ran") == 1
    assert roast.session(sid).status == "completed"


def test_a_late_roast_resume_json_prints_one_error_document_with_code_late(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    past = time.time() - 2 * HOUR
    roast.run(workflow, now=lambda: past)

    r = cli("resume", workflow, "-e", "approved", "--json")

    assert r.code == 3, r
    assert r.json["error"]["code"] == "late" and r.json["error"]["exit_code"] == 3
    assert "timed out at" in r.json["error"]["message"]
    # the document says what the timeout path left, not the state before it ran
    assert r.json["outcome"] == "late" and r.json["status"] == "completed"
    assert r.json["final_output"] == roast.session(r.json["session_id"]).final_output
    assert "hint:" not in r.json["error"]["message"]  # the hint is its own field, once


def test_a_late_roast_resume_prints_what_the_timeout_path_printed(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    past = time.time() - 2 * HOUR
    sid = roast.run(workflow, now=lambda: past).session_id

    r = cli("resume", workflow, "-e", "approved")

    assert r.code == 3, r
    final = roast.session(sid).final_output
    assert final and r.out.strip() == final.strip()


# --------------------------------------------------------------------------- (b) roast tick


def test_tick_fires_an_overdue_wait_exactly_once(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    clock.advance(2 * HOUR)

    first = roast.tick(now=clock)
    second = roast.tick(now=clock)

    assert [{k: f[k] for k in ("session_id", "fired", "status", "error")} for f in first] == [
        {"session_id": sid, "fired": True, "status": "completed", "error": None}]
    assert second == []
    assert lines(log) == ["start", f"timeout {iso(T0 + HOUR)}", "after timeout"]
    assert step_outputs(sid).count("timeout-branch-ran") == 1
    assert event_names(sid) == ["timeout"]


def test_tick_fires_every_overdue_session_and_leaves_the_others_waiting(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    overdue = [roast.run(workflow, now=clock).session_id for _ in range(3)]
    clock.advance(HOUR)
    fresh = roast.run(workflow, now=clock).session_id

    fired = roast.tick(now=clock)

    assert sorted(f["session_id"] for f in fired) == sorted(overdue)
    assert all(f["fired"] and f["status"] == "completed" for f in fired)
    assert roast.session(fresh).status == "waiting"
    assert [roast.session(s).status for s in overdue] == ["completed"] * 3


def test_roast_tick_json_lists_what_fired_and_exits_0(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    past = time.time() - 2 * HOUR
    sid = roast.run(workflow, now=lambda: past).session_id

    r = cli("tick", "--json")
    again = cli("tick")

    assert r.code == 0, r
    [entry] = r.json
    assert entry["session_id"] == sid and entry["fired"] is True
    assert entry["status"] == "completed" and entry["error"] is None
    assert again.code == 0 and "no overdue waits" in again.err, again
    assert step_outputs(sid).count("timeout-branch-ran") == 1


def test_roast_tick_exits_0_when_a_fired_session_ends_timed_out_by_design(wf, log: Path) -> None:
    # issue 11: a deadline that fires as designed is success (cron mails on exit 1)
    workflow = wf(fill(BRANCHES, TOP="", INLINE="", LOG=log))
    past = time.time() - 2 * HOUR
    sid = roast.run(workflow, now=lambda: past).session_id

    r = cli("tick")

    assert r.code == 0, r
    assert f"session {sid}" in r.err and "timed_out" in r.err
    assert roast.session(sid).status == "timed_out"


class DuringStep:
    """An observer that runs `action` once, when the first step starts (another process's turn)."""

    def __init__(self, action) -> None:
        self.action = action

    def started(self, path: str, name: str | None, attempt: int) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass


def test_tick_does_not_report_an_error_for_a_session_an_event_resolved_while_tick_was_running(
        wf, log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from roast import firing

    # a batch claims all its timeouts before any branch runs (issue 25): one session per batch, so the
    # event reaches `second` between the listing and its claim, while `first`'s branch runs
    monkeypatch.setattr(firing, "BATCH", 1)
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    first = roast.run(workflow, now=clock).session_id
    clock.advance(1)
    second = roast.run(workflow, now=clock).session_id
    clock.advance(2 * HOUR)

    def another_process_resumes_second() -> None:
        # its event arrived before the deadline (its clock says so); it finishes while tick handles `first`
        assert roast.resume("approved", session_id=second, now=lambda: T0 + 60).status == "completed"

    fired = roast.tick(now=clock, observer=DuringStep(another_process_resumes_second))

    by_id = {f["session_id"]: f for f in fired}
    assert by_id[first]["fired"] is True and by_id[first]["error"] is None
    assert roast.session(second).status == "completed" and event_names(second) == ["approved"]
    assert by_id[second]["error"] is None, by_id[second]  # lost the race to an event: not an error


# --------------------------------------------------------------------------- (c) listen / --wait


class FakeSleep:
    """`sleep` for `listen`: moves the fake clock instead of waiting, optionally doing something."""

    def __init__(self, clock: Clock, action=None) -> None:
        self.clock, self.action, self.calls = clock, action, []

    def __call__(self, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append(seconds)
        assert len(self.calls) < 1000, "listen did not stop"
        self.clock.advance(seconds)
        if self.action is not None:
            self.action(len(self.calls))


def test_listen_fires_the_deadline_on_time_and_returns_the_finished_session(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    sleep = FakeSleep(clock)
    seen: list[tuple[str, float]] = []

    result = roast.listen(sid, now=clock, sleep=sleep, poll=300,
                          on_update=lambda s, now: seen.append((s.status, now)))

    assert result.status == "completed" and result.session_id == sid
    assert sum(sleep.calls) == pytest.approx(HOUR)  # slept exactly up to the deadline, not past it
    assert clock.t == pytest.approx(T0 + HOUR)
    assert lines(log) == ["start", f"timeout {iso(T0 + HOUR)}", "after timeout"]
    assert step_outputs(sid).count("timeout-branch-ran") == 1
    [event] = api.deliveries(sid)
    assert event.name == "timeout" and event.received_at == pytest.approx(T0 + HOUR)
    assert seen[0][0] == "waiting" and seen[-1][0] == "completed"
    assert roast.tick(now=clock) == []


def test_listen_follows_an_event_delivered_by_another_process_and_runs_its_branch_once(
        wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id

    def deliver(call: int) -> None:
        if call == 3:  # as if `roast resume` ran in another terminal meanwhile
            assert roast.resume("approved", session_id=sid, now=clock).status == "completed"

    sleep = FakeSleep(clock, deliver)
    result = roast.listen(sid, now=clock, sleep=sleep, poll=60)

    assert result.status == "completed"
    assert len(sleep.calls) == 3
    assert lines(log) == ["start", "approved", "after approved"]
    assert step_outputs(sid).count("deployed") == 1
    assert "timeout-branch-ran" not in step_outputs(sid)
    assert event_names(sid) == ["approved"]


def test_listen_stays_through_a_second_wait_and_fires_its_deadline_too(wf, log: Path) -> None:
    workflow = wf(fill("""
        name: two
        steps:
          - first:
              wait_for_event:
                within: 1h
                go:
                  - $(echo go >> @LOG@)
          - second:
              wait_for_event:
                within: 2h
                done:
                  - $(echo done >> @LOG@)
                timeout:
                  - $(echo "second timeout {{event.deadline}}" >> @LOG@)
    """, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id

    def deliver(call: int) -> None:
        if call == 1:
            roast.resume("go", session_id=sid, now=clock)

    result = roast.listen(sid, now=clock, sleep=FakeSleep(clock, deliver), poll=600)

    assert result.status == "completed"
    # `go` arrived at T0+600; the second wait's 2 h run from then
    assert lines(log) == ["go", f"second timeout {iso(T0 + 600 + 2 * HOUR)}"]
    assert event_names(sid) == ["go", "timeout"]


def test_listen_on_a_session_that_already_ended_returns_it_without_sleeping(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    roast.resume("approved", session_id=sid, now=clock)
    sleep = FakeSleep(clock)

    result = roast.listen(sid, now=clock, sleep=sleep)

    assert result.status == "completed" and sleep.calls == []


# --------------------------------------------------------------------------- parallel waits


PARALLEL = """
name: both
steps:
  - - - first:
          wait_for_event:
            within: 1h
            a_ok:
              - $(echo a_ok >> @LOG@)
            timeout:
              - $(echo "a timeout {{event.deadline}}" >> @LOG@; echo a-timed-out)
    - - second:
          wait_for_event:
            within: 3h
            b_ok:
              - $(echo b_ok >> @LOG@)
            timeout:
              - $(echo "b timeout" >> @LOG@)
  - $(echo end >> @LOG@)
"""


def test_in_a_parallel_group_tick_fires_only_the_overdue_wait_and_the_session_keeps_waiting(
        wf, log: Path) -> None:
    workflow = wf(fill(PARALLEL, LOG=log))
    clock = Clock()
    r = roast.run(workflow, now=clock)
    assert sorted(r.awaiting) == ["a_ok", "b_ok"] and r.deadline == iso(T0 + HOUR)
    clock.advance(HOUR + 5)

    [fired] = roast.tick(now=clock)

    assert fired["fired"] is True and fired["status"] == "waiting"
    s = roast.session(r.session_id)
    assert s.status == "waiting"
    assert [a["event"] for a in s.awaiting] == ["b_ok"]
    assert s.deadline == pytest.approx(T0 + 3 * HOUR)
    assert lines(log) == [f"a timeout {iso(T0 + HOUR)}"]
    assert roast.tick(now=clock) == []  # the other deadline has not passed

    done = roast.resume("b_ok", session_id=r.session_id, now=clock)

    assert done.status == "completed"
    assert lines(log) == [f"a timeout {iso(T0 + HOUR)}", "b_ok", "end"]
    assert step_outputs(r.session_id).count("a-timed-out") == 1


def test_in_a_parallel_group_an_event_for_the_waiting_branch_still_fires_the_other_overdue_wait_once(
        wf, log: Path) -> None:
    workflow = wf(fill(PARALLEL, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    clock.advance(2 * HOUR)  # first is overdue, second is not

    r = roast.resume("b_ok", session_id=sid, now=clock)

    assert r.status == "completed", r
    ran = lines(log)
    assert sorted(ran[:2]) == sorted([f"a timeout {iso(T0 + HOUR)}", "b_ok"]) and ran[2:] == ["end"], ran
    assert event_names(sid) == ["b_ok"]
    assert roast.tick(now=clock) == []


def test_a_late_event_for_the_overdue_parallel_branch_is_refused_and_only_that_branch_times_out(
        wf, log: Path) -> None:
    workflow = wf(fill(PARALLEL, LOG=log))
    clock = Clock()
    sid = roast.run(workflow, now=clock).session_id
    clock.advance(2 * HOUR)

    with pytest.raises(EventLate):
        roast.resume("a_ok", session_id=sid, now=clock)

    s = roast.session(sid)
    assert s.status == "waiting" and [a["event"] for a in s.awaiting] == ["b_ok"]
    assert lines(log) == [f"a timeout {iso(T0 + HOUR)}"]


# --------------------------------------------------------------------------- invalid durations


BAD_DURATIONS = ["0", "-5", "nan", ".nan", ".inf", "1:30", "yes", "on", "366d", "30m1h", '"2 h"']

# Each template puts the bad value on the first line of its mapping, at line @LINE@.
PLACES = {
    "within": ("""
        name: bad
        steps:
          - approval:
              wait_for_event:
                within: @BAD@
                approved:
                  - $(echo approved >> @LOG@)
    """, 5, "within"),
    "named config": ("""
        name: bad
        approval:
          timeout: @BAD@
        steps:
          - approval:
              wait_for_event:
                approved:
                  - $(echo approved >> @LOG@)
    """, 3, "timeout"),
    "top-level default": ("""
        name: bad
        wait_for_event:
          timeout: @BAD@
        steps:
          - approval:
              wait_for_event:
                approved:
                  - $(echo approved >> @LOG@)
    """, 3, "timeout"),
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("bad", BAD_DURATIONS)
def test_an_invalid_duration_is_rejected_at_load_time_with_exit_2_and_its_file_and_line(
        wf, log: Path, bad: str, place: str) -> None:
    template, line, key = PLACES[place]
    workflow = wf(fill(template, BAD=bad, LOG=log))

    r = cli("execute", workflow)

    assert r.code == 2, r
    assert at(workflow, line) in r.err, r
    assert f"`{key}`" in r.err or f"{key}`" in r.err
    assert "must be a positive duration" in r.err
    assert lines(log) == [] and roast.sessions() == []  # nothing ran, no session was created
    with pytest.raises(WorkflowInvalid):
        roast.run(workflow)


@pytest.mark.parametrize("bad", ["yes", "on"])
def test_a_yaml_boolean_as_a_duration_gets_a_hint_to_quote_it(wf, log: Path, bad: str) -> None:
    template, _, _ = PLACES["within"]
    workflow = wf(fill(template, BAD=bad, LOG=log))

    r = cli("validate", workflow)

    assert r.code == 2 and "boolean" in r.err, r


def test_an_invalid_default_timeout_is_reported_once_however_many_waits_use_it(wf, log: Path) -> None:
    workflow = wf("""
        name: bad
        wait_for_event:
          timeout: 0
        steps:
          - wait_for_event:
              a: [$(echo a)]
          - wait_for_event:
              b: [$(echo b)]
    """)

    r = cli("validate", workflow)

    assert r.code == 2, r
    assert r.err.count("timeout 0 must be a positive duration") == 1, r


def test_an_invalid_named_timeout_is_rejected_even_when_the_wait_has_its_own_within(wf, log: Path) -> None:
    workflow = wf("""
        name: bad
        approval:
          timeout: 0
        steps:
          - approval:
              wait_for_event:
                within: 1h
                approved: [$(echo a)]
    """)

    r = cli("validate", workflow)

    assert r.code == 2, r
    assert at(workflow, 3) in r.err


def test_a_duration_inside_a_wait_must_be_within_not_timeout(wf, log: Path) -> None:
    workflow = wf("""
        name: bad
        steps:
          - wait_for_event:
              timeout: 2h
              approved: [$(echo a)]
    """)

    r = cli("validate", workflow)

    assert r.code == 2, r
    assert at(workflow, 4) in r.err and "within: 2h" in r.err


# --------------------------------------------------------------------------- real processes


def popen(*args: Any) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "roast", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str], timeout: float = 15) -> Ran:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"roast did not exit within {timeout}s\n--- stdout\n{out}\n--- stderr\n{err}")
    return Ran(proc.returncode, out, err)


def test_execute_wait_stays_and_fires_a_one_second_deadline_by_itself(wf, log: Path) -> None:
    workflow = approval(wf, log, "", """
        within: 1s
        timeout:
          - $(echo "timeout {{event.deadline}}" >> @LOG@; echo the approval timed out)
    """.replace("@LOG@", str(log)))

    r = finish(popen("execute", workflow, "--wait"))

    assert r.code == 0, r
    assert r.out.strip() == "finished after timeout", r
    assert "is waiting for: approved" in r.err and "completed" in r.err, r
    assert "Traceback" not in r.err
    [session] = roast.sessions()
    assert session.status == "completed"
    assert [ln.split()[0] for ln in lines(log)] == ["start", "timeout", "after"]
    assert event_names(session.id) == ["timeout"]


def test_execute_wait_exits_1_when_the_deadline_ends_the_session_timed_out(wf, log: Path) -> None:
    workflow = wf(fill(BRANCHES, TOP="", INLINE="", LOG=log).replace("within: 1h", "within: 1s"))

    r = finish(popen("execute", workflow, "--wait"))

    assert r.code == 1, r
    assert "timed_out" in r.err and "Traceback" not in r.err, r
    assert [s.status for s in roast.sessions()] == ["timed_out"]


def test_execute_wait_delivers_an_event_sent_by_another_process(wf, log: Path) -> None:
    workflow = approval(wf, log, "", fill(TIMEOUT_BRANCH, LOG=log))
    proc = popen("execute", workflow, "--wait")
    try:
        sid = None
        give_up = time.monotonic() + 15
        while sid is None and time.monotonic() < give_up and proc.poll() is None:
            listed = run_cli("sessions", "--json")
            waiting = [s for s in json.loads(listed.stdout or "[]") if s["status"] == "waiting"]
            sid = waiting[0]["session_id"] if waiting else None
            if sid is None:
                time.sleep(0.05)  # polling the store, not synchronising by sleeping
        assert sid is not None, "execute --wait never reached the wait"

        sent = run_cli("resume", workflow, "-e", "approved")
        assert sent.returncode == 0, sent.stderr

        r = finish(proc, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert r.code == 0, r
    assert f"session {sid} completed" in r.err, r
    assert r.out.strip() == "finished after approved", r
    assert "Traceback" not in r.err
    assert lines(log) == ["start", "approved", "after approved"]
    assert event_names(sid) == ["approved"]


def test_resume_wait_stays_through_the_next_wait_and_fires_its_deadline(wf, log: Path) -> None:
    workflow = wf(fill("""
        name: two
        steps:
          - first:
              wait_for_event:
                go:
                  - $(echo go >> @LOG@)
          - second:
              wait_for_event:
                within: 1s
                done:
                  - $(echo done >> @LOG@)
                timeout:
                  - $(echo second timeout >> @LOG@; echo second timed out)
    """, LOG=log))
    sid = roast.run(workflow).session_id

    r = finish(popen("resume", workflow, "-e", "go", "--wait"))

    assert r.code == 0, r
    assert "second timed out" in r.out and f"session {sid} completed" in r.err, r
    assert lines(log) == ["go", "second timeout"]
    assert event_names(sid) == ["go", "timeout"]


# --------------------------------------------------------------------------- the race at the deadline


RACE = """
name: race
steps:
  - approval:
      wait_for_event:
        within: 1h
        approved:
          - $(echo "$ROAST_SESSION_ID approved" >> @LOG@)
        timeout:
          - $(echo "$ROAST_SESSION_ID timeout" >> @LOG@)
"""

RESUMER = """
import random, sys, time, roast
from roast import api, store  # import everything now, not at the first resume
from roast.errors import RoastError
roast.sessions(limit=1)
ids, start = sys.argv[1].split(","), float(sys.argv[2])
random.shuffle(ids)
time.sleep(max(0.0, start - time.time()))  # begin together, just before the deadline
for sid in ids:
    try:
        roast.resume("approved", session_id=sid)
    except RoastError:
        pass  # late (EventLate, the timeout branch ran), resolved elsewhere, or being run elsewhere
print("resumer done")
"""

TICKER = """
import sys, time, roast
give_up = time.time() + 25
while time.time() < give_up:
    roast.tick()
    if not roast.sessions(status=["waiting", "running"], limit=None):
        break
    time.sleep(0.01)
print("ticker done")
"""


def test_eight_resumers_racing_tick_at_the_deadline_resolve_each_of_50_sessions_exactly_once(
        wf, log: Path) -> None:
    workflow = wf(fill(RACE, LOG=log))
    roast.cancel(roast.run(workflow).session_id)  # the first run also sets up the store
    began = time.time()
    roast.cancel(roast.run(workflow).session_id)  # how long does creating one take here?
    per_run = time.time() - began
    # leave time to create them all and to start 9 interpreters on a busy machine
    deadline = time.time() + 50 * per_run * 1.5 + 2.5
    ticks = iter(range(10**6))
    # each created "an hour before" one shared real deadline a few seconds ahead
    ids = [roast.run(workflow, now=lambda: deadline - HOUR + next(ticks) * 1e-6).session_id for _ in range(50)]
    assert {api.session(s).status for s in ids} == {"waiting"}
    assert time.time() < deadline - 0.5, "creating the sessions took too long for this test"

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([sys.executable, "-c", TICKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)]
    for _ in range(8):
        procs.append(subprocess.Popen([sys.executable, "-c", RESUMER, ",".join(ids), str(deadline - 1.0)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [finish(p, timeout=40) for p in procs]

    for r in results:
        assert r.code == 0 and "Traceback" not in r.err and "done" in r.out, r
    outcomes: dict[str, list[str]] = {sid: [] for sid in ids}
    for line in lines(log):
        sid, branch = line.split()
        outcomes[sid].append(branch)
    for sid in ids:
        assert outcomes[sid] in (["approved"], ["timeout"]), (sid, outcomes[sid])
        rows = [e for e in api.deliveries(sid) if e.outcome == "consumed"]
        assert len(rows) == 1 and rows[0].name == outcomes[sid][0], (sid, rows)
        assert api.session(sid).status == "completed"
