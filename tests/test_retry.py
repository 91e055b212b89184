"""Retries, durable timers and `roast retry` (issue 16), through real `roast` processes and the API.

A flaky step here is a command that counts its runs in a file and fails (exit 75) until a given
run: what it logs is what ran, and the step history must show each attempt. Backoffs are tiny or,
where a backoff must outlast the process, `ROAST_SLEEP_IN_PROCESS=0` makes every backoff durable.
Where a test waits for a real deadline it polls the store, and asserts nothing about time.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Ran, run_cli

import roast
from roast import api
from roast.errors import Closed, NotWaiting, UsageError, WorkflowInvalid

T0 = 1_900_000_000.0


def flaky(count: Path, log: Path, succeed_at: int, status: int = 75) -> str:
    """A command that fails with `status` until its `succeed_at`-th run, logging each run."""
    return (f'$(n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}; '
            f'echo "run$n attempt=$ROAST_STEP_ATTEMPT key=$ROAST_IDEMPOTENCY_KEY" >> {log}; '
            f'if [ $n -ge {succeed_at} ]; then echo ok$n; else echo "try $n failed" >&2; exit {status}; fi)')


def cli(*args: Any, env: dict[str, str] | None = None) -> Ran:
    proc = run_cli(*[str(a) for a in args], env=env)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def only_session() -> Any:
    found = roast.sessions(limit=None)
    assert len(found) == 1, found
    return found[0]


def runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def until_done(session_id: str, *, tick: bool = True, limit: int = 2000) -> Any:
    """Fire deadlines (as cron would) until the session ends; returns it."""
    for _ in range(limit):
        s = roast.session(session_id)
        if s.status not in ("waiting", "running"):
            return s
        if tick and s.status == "waiting":
            roast.tick()
        time.sleep(0.01)
    raise AssertionError(f"session {session_id} did not end: {roast.session(session_id)}")


# --------------------------------------------------------------------------- per-step retries


def test_a_step_failing_twice_then_succeeding_completes_with_three_history_rows(wf, tmp_path: Path) -> None:
    count, log = tmp_path / "count", tmp_path / "log"
    path = wf(f"""
        steps:
          - fetch: {flaky(count, log, 3)}
          - after: $(echo "got {{{{ output.fetch }}}}")
        fetch:
          retry: {{attempts: 3, delay: 0.01s}}
        """)
    ran = cli("execute", path)
    assert ran.code == 0, ran
    assert ran.out.strip() == "got ok3"
    assert "retrying step steps[0] fetch (attempt 2)" in ran.err and "(attempt 3)" in ran.err
    assert "step steps[0] fetch failed; next attempt in" in ran.err
    s = only_session()
    assert s.status == "completed"
    rows = [h for h in api.history(s.id) if h.path == "steps[0]"]
    assert [(h.attempt, h.status) for h in rows] == [(1, "failed"), (2, "failed"), (3, "ok")]
    assert rows[0].error == "exit status 75: try 1 failed" and rows[2].error is None
    assert all(h.finished_at is not None and h.started_at <= h.finished_at for h in rows)
    # ROAST_STEP_ATTEMPT counts attempts; the idempotency key stays the same for all of them
    lines = runs(log)
    assert [line.split()[1] for line in lines] == ["attempt=1", "attempt=2", "attempt=3"]
    assert len({line.split()[2] for line in lines}) == 1 and f"key={s.id}:steps[0]" in lines[0]
    detail = cli("session", s.id)
    assert "exit status 75: try 1 failed" in detail.out and "attempt 3" in detail.out
    doc = cli("session", s.id, "--json").json
    assert [step["error"] for step in doc["steps"][:2]] == ["exit status 75: try 1 failed",
                                                            "exit status 75: try 2 failed"]


def test_on_restricts_retries_to_the_exit_statuses_listed(wf, tmp_path: Path) -> None:
    count, log = tmp_path / "count", tmp_path / "log"
    path = wf(f"""
        steps:
          - fetch: {flaky(count, log, 3, status=1)}
        fetch:
          retry:
            attempts: 3
            delay: 0s
            on: [75, 69]
        """)
    ran = cli("execute", path)
    assert ran.code == 1, ran
    assert len(runs(log)) == 1  # exit 1 is not in `on:`: no second attempt
    s = only_session()
    assert s.status == "failed"
    assert f"roast retry {s.id}" in ran.err
    assert [(h.attempt, h.status) for h in api.history(s.id)] == [(1, "failed")]


def test_the_top_level_retry_is_every_steps_default_and_a_steps_own_wins(wf, tmp_path: Path) -> None:
    a_count, b_count, log = tmp_path / "a", tmp_path / "b", tmp_path / "log"
    path = wf(f"""
        retry: {{attempts: 2, delay: 0s}}
        steps:
          - one: {flaky(a_count, log, 2)}
          - two: {flaky(b_count, log, 2)}
        two:
          retry: false
        """)
    ran = cli("execute", path)
    assert ran.code == 1, ran
    s = only_session()
    assert [(h.path, h.attempt, h.status) for h in api.history(s.id)] == [
        ("steps[0]", 1, "failed"), ("steps[0]", 2, "ok"), ("steps[1]", 1, "failed")]


def test_a_python_step_retries_only_the_exception_classes_in_on(tmp_path: Path) -> None:
    calls: list[str] = []

    def shaky(ctx: Any) -> str:
        calls.append("shaky")
        if len(calls) < 3:
            raise ConnectionResetError("the server hung up")
        return "fine"

    def broken(ctx: Any) -> str:
        calls.append("broken")
        raise KeyError("missing")

    policy = {"attempts": 5, "delay": 0, "on": ["ConnectionError"]}  # a base class of ConnectionResetError
    result = roast.run({"name": "py", "steps": [{"shaky": shaky}, {"broken": broken}],
                        "shaky": {"retry": policy}, "broken": {"retry": policy}})
    assert result.status == "failed"
    assert calls == ["shaky", "shaky", "shaky", "broken"]
    rows = api.history(result.session_id)
    assert [(h.path, h.attempt, h.status) for h in rows] == [
        ("steps[0]", 1, "failed"), ("steps[0]", 2, "failed"), ("steps[0]", 3, "ok"), ("steps[1]", 1, "failed")]
    assert "ConnectionResetError" in (rows[0].error or "")


def test_a_command_timeout_is_retried_when_on_names_timeout(wf, tmp_path: Path) -> None:
    count, log = tmp_path / "count", tmp_path / "log"
    path = wf(f"""
        steps:
          - slow: $(n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}; echo run$n >> {log}; [ $n -ge 2 ] || sleep 30; echo done)
        slow:
          timeout: 0.3s
          retry: {{attempts: 2, delay: 0s, on: [timeout]}}
        """)
    ran = cli("execute", path)
    assert ran.code == 0, ran
    assert runs(log) == ["run1", "run2"]
    s = only_session()
    assert [(h.attempt, h.status) for h in api.history(s.id)] == [(1, "failed"), (2, "ok")]
    assert "timed out" in (api.history(s.id)[0].error or "")


def test_validate_reports_every_bad_retry_setting(wf) -> None:
    path = wf("""
        retry: often
        steps:
          - a: $(true)
          - b: $(true)
        a:
          retry: {attempts: 0, delay: soon, backoff: 0.5, jitter: maybe, on: [0, "no such"], tries: 3}
        b:
          retry: {delay: 1s}
        """)
    ran = cli("validate", path)
    assert ran.code == 2, ran
    for text in ("`retry` must be a number of attempts or a mapping", "`a.retry.attempts` must be a whole number",
                 "`a.retry.delay`", "`a.retry.backoff` must be a number from 1", "`a.retry.jitter` must be true",
                 "lists 0", "lists 'no such'", "`a.retry.tries` is not a retry key"):
        assert text in ran.err, (text, ran)
    good = wf("""
        steps:
          - b: $(true)
        b:
          retry: {delay: 1s}
        """, name="good")
    ran = cli("validate", good)
    assert ran.code == 0, ran
    assert "gives no `attempts:`" in ran.err  # a warning: tried once, never retried


def test_a_long_backoff_suspends_the_session_and_tick_continues_it(wf, tmp_path: Path) -> None:
    count, log = tmp_path / "count", tmp_path / "log"
    path = wf(f"""
        steps:
          - fetch: {flaky(count, log, 2)}
        fetch:
          retry: {{attempts: 3, delay: 1h}}
        """)
    clock = [T0]
    first = roast.run(path, now=lambda: clock[0])
    assert first.status == "waiting", first
    assert first.awaiting == [] and first.waits[0]["kind"] == "retry" and first.waits[0]["wait"] == "attempt 2"
    s = roast.session(first.session_id)
    assert s.deadline is not None and T0 + 1800 <= s.deadline <= T0 + 3600  # jitter: half to all of it
    listing = cli("sessions")
    assert "retry of steps[0] (attempt 2)" in listing.out, listing
    assert runs(log) == ["run1 attempt=1 key=" + f"{s.id}:steps[0]"]
    # a tick before the deadline fires nothing; after it, the second attempt runs
    assert roast.tick(now=lambda: T0 + 60) == []
    fired = roast.tick(now=lambda: T0 + 3601)
    assert [(f["session_id"], f["status"]) for f in fired] == [(s.id, "completed")]
    assert [(h.attempt, h.status) for h in api.history(s.id)] == [(1, "failed"), (2, "ok")]


def test_a_durable_backoff_in_real_processes_is_continued_by_tick(wf, tmp_path: Path) -> None:
    count, log = tmp_path / "count", tmp_path / "log"
    path = wf(f"""
        steps:
          - fetch: {flaky(count, log, 3)}
        fetch:
          retry: {{attempts: 3, delay: 0.05s, jitter: false}}
        """)
    env = {"ROAST_SLEEP_IN_PROCESS": "0"}  # every backoff suspends the session
    ran = cli("execute", path, env=env)
    assert ran.code == 0, ran
    assert "will retry steps[0] (attempt 2) at" in ran.err
    sid = only_session().id
    for _ in range(2000):
        s = roast.session(sid)
        if s.status == "completed":
            break
        if s.status == "waiting" and s.deadline is not None and s.deadline <= time.time():
            assert cli("tick", env=env).code == 0
        time.sleep(0.01)
    assert roast.session(sid).status == "completed"
    assert [(h.attempt, h.status) for h in api.history(sid)] == [(1, "failed"), (2, "failed"), (3, "ok")]


def test_kill_9_during_a_backoff_resumes_at_the_same_attempt(wf, tmp_path: Path) -> None:
    """attempts: 2 and a step that would succeed only on its third run: the right end is `failed`
    after exactly two attempts. Restarting the policy after the kill would run a third, and pass."""
    count, log = tmp_path / "count", tmp_path / "log"
    path = wf(f"""
        steps:
          - before: $(echo before >> {log})
          - fetch: {flaky(count, log, 3)}
        fetch:
          retry: {{attempts: 2, delay: 20s, jitter: false}}
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "roast", "execute", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(3000):  # until the backoff's position is saved (the process then sleeps 20 s)
            found = roast.sessions(limit=None)
            if found and "retry (attempt 2)" in (found[0].cursor or ""):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the backoff was never saved")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    s = only_session()
    assert s.status == "running" and s.orphaned
    # the deadline was saved with the position; recovery waits out what is left of it, in process
    state = api._load_state(api.open_store(), s)
    assert state["cursor"][0] == 1 and state["cursor"][1][:2] == ("@retry", 1)
    result = roast.resume(session_id=s.id, now=lambda: time.time() + 25)  # as if the backoff had passed
    assert result.status == "failed", result
    assert [(h.path, h.attempt, h.status) for h in api.history(s.id)] == [
        ("steps[0]", 1, "ok"), ("steps[1]", 1, "failed"), ("steps[1]", 2, "failed")]
    assert [line.split()[0] for line in runs(log)] == ["before", "run1", "run2"]


# --------------------------------------------------------------------------- sleep


def test_sleep_pauses_the_session_and_tick_completes_it(wf, tmp_path: Path) -> None:
    path = wf("""
        steps:
          - eta: $(echo 1s)
          - sleep: 1s
          - nap:
              sleep: "{{ output.eta }}"
          - gone:
              sleep: {until: "2020-01-01T00:00:00Z"}
          - $(echo "woke, {{ output.gone }}")
        """)
    ran = cli("execute", path)
    assert ran.code == 0, ran
    assert "is sleeping (at steps[1]) until" in ran.err
    s = only_session()
    assert s.status == "waiting" and s.awaiting[0]["kind"] == "sleep"
    listing = cli("sessions")
    assert "sleeping until" in listing.out, listing
    resume = cli("resume", "-s", s.id)
    assert resume.code == 3 and "sleeping until" in resume.err and "roast tick" in resume.err, resume
    by_workflow = cli("resume", path, "-e", "go")  # no session id: says the session sleeps
    assert by_workflow.code == 3 and "1 session(s) sleep or back off until a deadline" in by_workflow.err, \
        by_workflow
    assert "wait for: ;" not in by_workflow.err
    done = until_done(s.id)
    assert done.status == "completed"
    assert done.final_output == "woke, 2020-01-01T00:00:00Z"
    history = [h.path for h in api.history(s.id)]
    assert history == ["steps[0]", "steps[4]"]  # a sleep is not a step of the history


def test_sleep_with_resume_wait_stays_until_the_deadline(wf) -> None:
    path = wf("""
        steps:
          - sleep: 0.3s
          - $(echo awake)
        """)
    assert cli("execute", path).code == 0
    s = only_session()
    ran = cli("resume", "-s", s.id, "--wait")
    assert ran.code == 0, ran
    assert ran.out.strip() == "awake"
    assert roast.session(s.id).status == "completed"


def test_a_sleep_until_an_absolute_instant_in_the_api(wf) -> None:
    path = wf("""
        steps:
          - sleep: {until: "2030-03-17T18:46:40+01:00"}
          - $(echo later)
        """)
    result = roast.run(path, now=lambda: T0 - 10)
    assert result.status == "waiting" and result.deadline == "2030-03-17T17:46:40Z"
    assert roast.tick(now=lambda: T0 - 1) == []
    assert roast.tick(now=lambda: T0)[0]["status"] == "completed"


def test_validate_refuses_bad_sleeps(wf) -> None:
    path = wf("""
        steps:
          - sleep: soon
          - sleep: {until: "2027-01-01T09:00:00"}
          - sleep: {until: 2027-01-01}
          - sleep: {for: 2h}
          - sleep: $(echo 5)
        """)
    ran = cli("validate", path)
    assert ran.code == 2, ran
    for text in ("steps[0]: `sleep:` 'soon' must be a duration", "steps[1]: `sleep: until` '2027-01-01T09:00:00' "
                 "has no time zone", "steps[2]: `sleep: until` '2027-01-01' is a date", "holds `until:` only",
                 "a step named `sleep` needs another name"):
        assert text in ran.err, (text, ran)


def test_a_template_sleep_that_is_not_a_duration_fails_the_step(wf) -> None:
    path = wf("""
        steps:
          - eta: $(echo tomorrow)
          - sleep: "{{ output.eta }}"
        """)
    ran = cli("execute", path)
    assert ran.code == 1, ran
    assert "steps[1]: `sleep:` 'tomorrow' must be a duration" in ran.err


# --------------------------------------------------------------------------- roast retry


def test_roast_retry_after_a_fix_runs_only_the_failed_step_and_what_follows(wf, tmp_path: Path) -> None:
    log, fixed = tmp_path / "log", tmp_path / "fixed"
    path = wf(f"""
        steps:
          - first: $(echo first >> {log}; echo one)
          - build: $(test -e {fixed} || {{ echo "not fixed" >&2; exit 3; }}; echo build >> {log}; echo two)
          - last: $(echo last >> {log}; echo "{{{{ output.first }}}}+{{{{ output.build }}}}")
        """)
    ran = cli("execute", path)
    assert ran.code == 1 and "roast retry" in ran.err, ran
    s = only_session()
    assert s.status == "failed"
    listing = cli("sessions")
    assert f"roast retry {s.id[:8]}" in listing.out, listing
    assert f"roast retry {s.id}" in cli("session", s.id).out
    again = cli("retry", s.id[:6])  # a failure that is not fixed fails again, as the next attempt
    assert again.code == 1, again
    fixed.touch()
    ran = cli("retry", s.id)
    assert ran.code == 0, ran
    assert ran.out.strip() == "one+two"
    assert runs(log) == ["first", "build", "last"]
    assert [(h.path, h.attempt, h.status) for h in api.history(s.id)] == [
        ("steps[0]", 1, "ok"), ("steps[1]", 1, "failed"), ("steps[1]", 2, "failed"), ("steps[1]", 3, "ok"),
        ("steps[2]", 1, "ok")]
    assert roast.session(s.id).attempt >= 2
    closed = cli("retry", s.id)
    assert closed.code == 3 and "only a failed session can be retried" in closed.err, closed


def test_editing_the_failed_step_is_fine_and_an_edit_before_it_needs_force(wf, tmp_path: Path) -> None:
    log = tmp_path / "log"
    text = f"""
        steps:
          - first: $(echo first >> {log})
          - build: $(exit 3)
          - last: $(echo last >> {log})
        """
    path = wf(text)
    assert cli("execute", path).code == 1
    sid = only_session().id
    path.write_text(path.read_text().replace("$(exit 3)", f"$(echo fixed >> {log})"))
    ran = cli("retry", sid)
    assert ran.code == 0, ran
    assert "changed since session" in ran.err  # a warning: the change is where the retry starts
    assert runs(log) == ["first", "fixed", "last"]

    log.unlink()
    path2 = wf(text, name="wf2")
    assert cli("execute", path2).code == 1
    sid2 = next(s.id for s in roast.sessions(status="failed"))
    path2.write_text(path2.read_text().replace("echo first", "echo FIRST").replace("$(exit 3)", "$(true)"))
    refused = cli("retry", sid2)
    assert refused.code == 3 and "changed on the path" in refused.err and "--force" in refused.err, refused
    assert roast.session(sid2).status == "failed"  # nothing changed
    forced = cli("retry", sid2, "--force")
    assert forced.code == 0, forced
    assert runs(log) == ["first", "last"]  # the edited first step did not run again


def test_retry_from_an_earlier_step_drops_the_later_outputs(wf, tmp_path: Path) -> None:
    log, fixed = tmp_path / "log", tmp_path / "fixed"
    path = wf(f"""
        steps:
          - a: $(echo a >> {log}; echo A)
          - b: $(echo b >> {log}; echo B-$(cat {fixed} 2>/dev/null || echo old))
          - c: $(test -e {fixed} || exit 4; echo c >> {log}; echo C)
          - out: $(echo "{{{{ output.a }}}} {{{{ output.b }}}} {{{{ output.c }}}}")
        """)
    assert cli("execute", path).code == 1
    sid = only_session().id
    assert roast.session(sid).output == {"a": "A", "b": "B-old"}
    bad = cli("retry", sid, "--from", "steps[3]")
    assert bad.code == 2 and "not a step on the way" in bad.err and "steps[0], steps[1], steps[2]" in bad.err, bad
    fixed.write_text("new")
    ran = cli("retry", sid, "--from", "steps[1]")
    assert ran.code == 0, ran
    assert ran.out.strip() == "A B-new C"
    assert runs(log) == ["a", "b", "b", "c"]


def test_retry_from_drops_outputs_durably_even_if_the_retry_is_killed(wf, tmp_path: Path) -> None:
    path = wf("""
        steps:
          - a: $(echo A)
          - b: $(echo B)
          - c: $(exit 4)
        """)
    result = roast.run(path)
    assert result.status == "failed" and result.output == {"a": "A", "b": "B"}
    store = api.open_store()
    session = roast.session(result.session_id)
    state = api._load_state(store, session)
    # what `retry --from steps[1]` saves before it runs anything: the rewound cursor, without `b`
    from roast import tree as steps_mod
    from roast.definition import load

    cursor, again = steps_mod.rewind(load(str(path)).root, state["cursor"], "steps[1]")
    assert cursor == (1, None) and [n.path for n in again] == ["steps[1]", "steps[2]"]
    with pytest.raises(UsageError, match="not a step on the way"):
        roast.retry(result.session_id, from_step="steps[9]")
    assert roast.session(result.session_id).status == "failed"


def test_retry_is_refused_for_sessions_that_did_not_fail(wf) -> None:
    waiting = roast.run(wf("""
        steps:
          - wait_for_event: {go: [$(echo go)]}
        """))
    with pytest.raises(NotWaiting, match="has not failed: it is waiting"):
        roast.retry(waiting.session_id)
    done = roast.run(wf("""
        steps:
          - $(echo done)
        """, name="done"))
    with pytest.raises(Closed, match="only a failed session can be retried"):
        roast.retry(done.session_id)


def test_two_retries_at_once_run_the_failed_step_once(wf, tmp_path: Path) -> None:
    log, fixed = tmp_path / "log", tmp_path / "fixed"
    path = wf(f"""
        steps:
          - b: $(test -e {fixed} || exit 3; echo b >> {log}; sleep 0.2)
        """)
    assert cli("execute", path).code == 1
    sid = only_session().id
    fixed.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "roast", "retry", sid], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    codes = [p.wait(timeout=60) for p in procs]
    assert sorted(codes) == [0, 3, 3, 3], [p.stderr.read() for p in procs]
    assert runs(log) == ["b"]


def test_a_failed_event_branch_is_retried_with_its_event_still_there(wf, tmp_path: Path) -> None:
    log, fixed = tmp_path / "log", tmp_path / "fixed"
    path = wf(f"""
        steps:
          - wait_for_event:
              approved:
                - got: $(echo "got {{{{ event.approver }}}}" >> {log})
                - ship: $(test -e {fixed} || exit 3; echo "ship by {{{{ event.approver }}}}" >> {log})
          - $(echo "done {{{{ event.approver }}}}")
        """)
    sid = roast.run(path).session_id
    failed = roast.resume("approved", data={"approver": "ana"}, session_id=sid)
    assert failed.status == "failed"
    fixed.touch()
    done = roast.retry(sid)
    assert done.status == "completed" and done.final_output == "done ana"
    assert runs(log) == ["got ana", "ship by ana"]
    consumed = [e for e in api.deliveries(sid) if e.outcome == "consumed"]
    assert [e.name for e in consumed] == ["approved"]  # consumed once, not again


def test_retries_inside_each_and_parallel_never_rerun_what_came_before(wf, tmp_path: Path) -> None:
    log, count = tmp_path / "log", tmp_path / "count"
    path = wf(f"""
        steps:
          - each: $(printf 'a\\nb\\nc\\n')
            as: item
            steps:
              - seen: $(echo "{{{{ item }}}}" >> {log})
              - check: $(if [ "{{{{ item }}}}" = b ]; then {flaky(count, log, 2)[2:-1]}; fi)
          - - left: $(echo left >> {log})
            - right: $(test -e {tmp_path}/fixed || exit 5; echo right >> {log})
        check:
          retry: {{attempts: 2, delay: 0s}}
        """)
    result = roast.run(path)
    assert result.status == "failed"  # `right` has no retry and fails
    assert [line.split()[0] for line in runs(log)] == ["a", "b", "run1", "run2", "c", "left"]
    (tmp_path / "fixed").touch()
    assert roast.retry(result.session_id).status == "completed"
    assert [line.split()[0] for line in runs(log)] == ["a", "b", "run1", "run2", "c", "left", "right"]
    rows = [(h.path, h.attempt, h.status) for h in api.history(result.session_id) if "steps[1]" in h.path
            and h.path.startswith("steps[0]")]
    assert rows == [("steps[0].steps[1]#1", 1, "ok"), ("steps[0].steps[1]#2", 1, "failed"),
                    ("steps[0].steps[1]#2", 2, "ok"), ("steps[0].steps[1]#3", 1, "ok")]


def test_retry_of_a_dict_workflow_step_through_the_api(tmp_path: Path) -> None:
    """A dict workflow's steps are saved with the session (by value): what fixes it here is the
    world it reads, a file."""
    flag, calls = tmp_path / "fixed", tmp_path / "calls"

    def step(ctx: Any) -> str:
        with open(calls, "a") as out:
            out.write("call\n")
        if not flag.exists():
            raise RuntimeError("bug")
        return "ok"

    result = roast.run({"name": "d", "steps": [{"first": lambda ctx: "1"}, {"step": step}]})
    assert result.status == "failed"
    flag.touch()
    again = roast.retry(result.session_id)
    assert again.status == "completed" and again.output == {"first": "1", "step": "ok"}
    assert calls.read_text().split() == ["call", "call"]


def test_a_workflow_without_retry_is_unchanged_and_validates(wf) -> None:
    path = wf("""
        steps:
          - $(exit 2)
        """)
    result = roast.run(path)
    assert result.status == "failed"
    assert [(h.attempt, h.status, h.error) for h in api.history(result.session_id)] == [(1, "failed", "exit status 2")]
    with pytest.raises(WorkflowInvalid):
        roast.run({"name": "bad", "steps": ["$(true)"], "retry": {"attempts": "three"}})
