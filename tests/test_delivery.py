"""Event delivery done right (issue 14), through real `roast` processes: early events kept and taken
by the right wait, idempotent delivery with event ids, an outcome for every delivery, typed
payloads, who and why, and `notify:` when a gate opens."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _resume_helpers import dump_all, lines, poll
from conftest import ROOT

import roast
from roast import api


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def roast_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roast", *args], env=_env(**env), capture_output=True, text=True,
                          timeout=120, check=False)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "roast", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def doc(proc: subprocess.CompletedProcess[str]) -> dict:
    text = proc.stdout.strip()
    value = json.loads(text) if text else {}
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def workflow(tmp_path: Path, text: str, name: str = "wf", **values: Path) -> Path:
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    path = directory / "workflow.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log"


# --------------------------------------------------------------------------- early events


def test_an_event_sent_while_execute_still_runs_before_the_wait_is_kept_and_taken_at_the_wait(
        tmp_path: Path, log: Path) -> None:
    go = tmp_path / "go"
    path = workflow(tmp_path, """
        steps:
          - build: "$(echo build >> @LOG@; while [ ! -e @GO@ ]; do sleep 0.05; done)"
          - wait_for_event:
              approved: ["$(echo 'branch {{ event.who }}' >> @LOG@)"]
    """, LOG=log, GO=go)
    proc = start("execute", str(path), "--json")
    poll(lambda: lines(log) == ["build"], "the first step to run")
    [s] = roast.sessions()
    early = roast_cli("resume", str(path), "-e", "approved", "-s", s.id, "-d", '{"who": "ana"}', "--json")
    assert early.returncode == 0, early.stderr
    assert doc(early)["outcome"] == "queued" and doc(early)["status"] == "running"
    go.touch()
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    assert doc(subprocess.CompletedProcess([], 0, out, err))["status"] == "completed"  # no pause at all
    assert lines(log) == ["build", "branch ana"]
    [event] = api.deliveries(s.id)
    assert (event.outcome, event.wait_path) == ("consumed", "steps[1]")


def test_an_event_for_a_later_wait_sent_while_an_earlier_one_waits_is_kept_for_it(tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - first:
              wait_for_event:
                one: ["$(echo one >> @LOG@)"]
          - second:
              wait_for_event:
                two: ["$(echo two {{ event.n }} >> @LOG@)"]
    """, LOG=log)
    assert roast_cli("execute", str(path)).returncode == 0
    kept = roast_cli("resume", str(path), "-e", "two", "-d", '{"n": 2}', "--json")
    assert kept.returncode == 0, kept.stderr
    assert doc(kept)["outcome"] == "queued" and doc(kept)["awaiting"] == ["one"]
    done = roast_cli("resume", str(path), "-e", "one", "--json")
    assert done.returncode == 0, done.stderr
    assert doc(done)["status"] == "completed"
    assert lines(log) == ["one", "two 2"]
    [s] = roast.sessions()
    assert [(e.name, e.outcome, e.wait_path) for e in api.deliveries(s.id)] == [
        ("two", "consumed", "steps[1]"), ("one", "consumed", "steps[0]")]


def test_an_event_no_wait_declares_is_refused_with_the_names_it_does_and_a_did_you_mean(tmp_path: Path) -> None:
    path = workflow(tmp_path, "steps:\n  - wait_for_event: {approved: ['$(echo ok)']}\n")
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    r = roast_cli("resume", str(path), "-e", "aproved", "-s", sid, "--json")
    assert r.returncode == 3, r.stderr
    assert doc(r)["outcome"] == "unknown_event" and doc(r)["error"]["code"] == "unknown_event"
    assert "approved" in r.stderr and "did you mean 'approved'" in r.stderr
    assert [e.outcome for e in api.deliveries(sid)] == ["unknown_event"]  # recorded: the audit trail


def test_if_waiting_refuses_instead_of_keeping_the_event(tmp_path: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event: {one: ['$(echo 1)']}
          - wait_for_event: {two: ['$(echo 2)']}
    """)
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    before = dump_all()
    r = roast_cli("resume", str(path), "-e", "two", "-s", sid, "--if-waiting")
    assert r.returncode == 3 and "--if-waiting" in r.stderr
    assert dump_all() == before


def test_events_still_kept_when_the_session_ends_are_marked_unconsumed(tmp_path: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event:
              one: ['$(echo 1)']
              skip: ['$(echo skipped)']
          - if: "{{ output.wait_for_event.event == 'one' }}"
            then:
              - wait_for_event: {two: ['$(echo 2)']}
    """)
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    assert doc(roast_cli("resume", str(path), "-e", "two", "-s", sid, "--json"))["outcome"] == "queued"
    assert doc(roast_cli("resume", str(path), "-e", "skip", "-s", sid, "--json"))["status"] == "completed"
    assert [(e.name, e.outcome) for e in api.deliveries(sid)] == [("two", "unconsumed"), ("skip", "consumed")]
    shown = roast_cli("session", sid)
    assert "unconsumed" in shown.stdout


# --------------------------------------------------------------------------- idempotent delivery


def test_a_repeated_event_id_is_a_duplicate_and_runs_the_branch_once(tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, "steps:\n  - wait_for_event: {approved: ['$(echo branch >> @LOG@)']}\n", LOG=log)
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    first = roast_cli("resume", str(path), "-e", "approved", "-s", sid, "--event-id", "deploy-1842", "--json")
    again = roast_cli("resume", str(path), "-e", "approved", "-s", sid, "--event-id", "deploy-1842", "--json")
    assert first.returncode == 0 and doc(first)["outcome"] == "consumed" and doc(first)["event_id"] == "deploy-1842"
    assert again.returncode == 0, again.stderr
    assert doc(again)["outcome"] == "duplicate"
    assert doc(again)["delivery"]["outcome"] == "consumed" and doc(again)["delivery"]["wait_path"] == "steps[0]"
    assert lines(log) == ["branch"]
    other = roast_cli("resume", str(path), "-e", "approved", "-s", sid, "--event-id", "deploy-1842", "-d", '{"x": 1}')
    assert other.returncode == 2 and "already used with other data" in other.stderr


def test_without_a_session_id_a_repeated_event_id_never_approves_a_second_session(tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, "steps:\n  - wait_for_event: {approved: ['$(echo branch $ROAST_SESSION_ID >> @LOG@)']}\n",
                    LOG=log)
    older = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    newer = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    first = roast_cli("resume", str(path), "-e", "approved", "--event-id", "K-1", "--json")
    retry = roast_cli("resume", str(path), "-e", "approved", "--event-id", "K-1", "--json")
    assert doc(first)["outcome"] == "consumed" and doc(first)["session_id"] == newer
    assert retry.returncode == 0 and doc(retry)["outcome"] == "duplicate" and doc(retry)["session_id"] == newer
    assert lines(log) == [f"branch {newer}"]
    assert roast.session(older).status == "waiting"


def test_a_generated_event_id_is_reported(tmp_path: Path) -> None:
    path = workflow(tmp_path, "steps:\n  - wait_for_event: {approved: ['$(echo ok)']}\n")
    roast_cli("execute", str(path))
    r = roast_cli("resume", str(path), "-e", "approved", "--json")
    assert len(doc(r)["event_id"]) == 36  # a UUID
    assert api.deliveries(doc(r)["session_id"])[0].event_id == doc(r)["event_id"]


def test_an_event_id_longer_than_200_characters_is_refused(tmp_path: Path) -> None:
    path = workflow(tmp_path, "steps:\n  - wait_for_event: {approved: ['$(echo ok)']}\n")
    roast_cli("execute", str(path))
    r = roast_cli("resume", str(path), "-e", "approved", "--event-id", "k" * 201)
    assert r.returncode == 2 and "200 characters" in r.stderr


# --------------------------------------------------------------------------- outcomes and exit codes


def test_every_outcome_has_its_exit_code_and_json_document(tmp_path: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event: {approved: ['$(echo yes)']}
          - wait_for_event: {later: ['$(echo later)']}
          - wait_for_event: {last: ['$(echo last)']}
    """)
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    seen = {}

    def deliver(*args: str) -> tuple[int, dict]:
        proc = roast_cli("resume", str(path), *args, "-s", sid, "--json")
        return proc.returncode, doc(proc)

    seen["unknown_event"] = deliver("-e", "nope")
    seen["invalid"] = (roast_cli("resume", str(path), "-e", "approved", "-s", sid, "-d", "[1]").returncode, {})
    seen["consumed"] = deliver("-e", "approved", "--event-id", "a1")   # now waiting for `later`
    seen["duplicate"] = deliver("-e", "approved", "--event-id", "a1")
    seen["queued"] = deliver("-e", "last", "--event-id", "z1")          # a wait ahead declares it
    seen["not_waiting"] = deliver("-e", "approved", "--event-id", "a2")  # no wait ahead does
    assert deliver("-e", "later")[1]["status"] == "completed"           # `last` was kept: taken at once
    seen["closed"] = deliver("-e", "last", "--event-id", "z2")
    seen["not_found"] = (roast_cli("resume", str(path), "-e", "approved", "-s", "zzzzzz0000000").returncode, {})
    codes = {name: code for name, (code, _) in seen.items()}
    assert codes == {"queued": 0, "unknown_event": 3, "invalid": 2, "consumed": 0, "duplicate": 0,
                     "not_waiting": 3, "closed": 3, "not_found": 3}, codes
    for name in ("queued", "unknown_event", "consumed", "duplicate", "not_waiting", "closed"):
        document = seen[name][1]
        assert document["outcome"] == name, (name, document)
        assert {"outcome", "session_id", "event_id", "event", "status"} <= set(document), document
    # every delivery that reached the session is in its record, in order (duplicates are not applied)
    assert [(e.name, e.outcome) for e in api.deliveries(sid)] == [
        ("nope", "unknown_event"), ("approved", "consumed"), ("last", "consumed"), ("approved", "not_waiting"),
        ("later", "consumed"), ("last", "closed")]


def test_a_late_event_runs_the_timeout_path_never_its_branch(tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved: ['$(echo approved >> @LOG@)']
              timeout: ['$(echo timeout >> @LOG@)']
              within: 1s
    """, LOG=log)
    import time

    sid = roast.run(path, now=lambda: time.time() - 60).session_id
    r = roast_cli("resume", str(path), "-e", "approved", "-s", sid, "--json")
    assert r.returncode == 3 and doc(r)["outcome"] == "late"
    assert lines(log) == ["timeout"]
    assert [e.outcome for e in api.deliveries(sid)] == ["late", "consumed"]


# --------------------------------------------------------------------------- typed payloads


SCHEMA_WF = """
    steps:
      - wait_for_event:
          approved: ["$(echo 'by {{ event.approver }}' >> @LOG@)"]
          schema:
            approved:
              type: object
              required: [approver]
              properties:
                approver: {type: string}
"""


def test_data_that_fails_the_schema_is_invalid_exit_2_and_the_store_is_byte_identical(
        tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, SCHEMA_WF, LOG=log)
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    before = dump_all()
    for data, says in (('{"approver": 7}', "$.approver: 7 is not of type 'string' (rule `type`)"),
                       ("{}", "'approver' is a required property (rule `required`)")):
        r = roast_cli("resume", str(path), "-e", "approved", "-d", data, "--json")
        assert r.returncode == 2, r.stderr
        assert says in r.stderr and doc(r)["outcome"] == "invalid"
        assert dump_all() == before
    assert roast.session(sid).status == "waiting"
    ok = roast_cli("resume", str(path), "-e", "approved", "-d", '{"approver": "ana"}')
    assert ok.returncode == 0 and lines(log) == ["by ana"]


def test_validate_checks_that_the_schemas_are_schemas(tmp_path: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved: ["$(echo ok)"]
              schema:
                approved: {type: strnig}
                aproved: {type: object}
    """)
    r = roast_cli("validate", str(path))
    assert r.returncode == 2, r.stderr
    assert "not a valid JSON Schema" in r.stderr and "'aproved', which this wait does not declare" in r.stderr


def test_a_schema_may_be_a_json_file_beside_the_workflow(tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved: ["$(echo ok >> @LOG@)"]
              schema: {approved: approved.schema.json}
    """, LOG=log)
    (path.parent / "approved.schema.json").write_text('{"type": "object", "required": ["approver"]}')
    roast_cli("execute", str(path))
    assert roast_cli("resume", str(path), "-e", "approved").returncode == 2
    assert roast_cli("resume", str(path), "-e", "approved", "-d", '{"approver": "x"}').returncode == 0


# --------------------------------------------------------------------------- who and why


def test_actor_and_reason_are_recorded_shown_and_given_to_the_branch(tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved: ["$(echo '{{ delivery.actor }}|{{ delivery.reason }}|{{ delivery.id }}' >> @LOG@)"]
    """, LOG=log)
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    r = roast_cli("resume", str(path), "-e", "approved", "--actor", "ana@ops", "--reason", "tests green",
                  "--event-id", "ev-7")
    assert r.returncode == 0, r.stderr
    assert lines(log) == ["ana@ops|tests green|ev-7"]
    shown = json.loads(roast_cli("session", sid, "--json").stdout)
    [event] = shown["events"]
    assert (event["actor"], event["reason"], event["event_id"], event["outcome"]) == \
        ("ana@ops", "tests green", "ev-7", "consumed")
    assert event["wait_path"] == "steps[0]" and event["source"] == "cli" and event["received_at"]
    text = roast_cli("session", sid).stdout
    assert "ana@ops" in text and "tests green" in text


def test_the_default_actor_is_user_at_host(tmp_path: Path) -> None:
    path = workflow(tmp_path, "steps:\n  - wait_for_event: {approved: ['$(echo ok)']}\n")
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    roast_cli("resume", str(path), "-e", "approved", USER="dana", LOGNAME="dana")
    assert api.deliveries(sid)[0].actor == f"dana@{os.uname().nodename}"


# --------------------------------------------------------------------------- notify


def test_notify_runs_after_the_wait_is_saved_and_sees_the_wait(tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - gate:
              wait_for_event:
                approved: ["$(echo approved)"]
                rejected: ["$(echo rejected)"]
                within: 2h
                notify:
                  - "$(echo '{{ wait.session_id }} {{ wait.events }} {{ wait.deadline }}' >> @LOG@)"
                  - "$(printf '%s\\\\n' '{{ wait.resume.approved }}' >> @LOG@)"
    """, LOG=log)
    r = roast_cli("execute", str(path), "--json")
    assert r.returncode == 0, r.stderr
    sid, deadline = doc(r)["session_id"], doc(r)["deadline"]
    first, second = lines(log)
    assert first == f'{sid} ["approved", "rejected"] {deadline}'
    assert second == f"roast resume -s {sid} -e approved"  # works from anywhere (issue 24)
    assert [h.path for h in api.history(sid)] == ["steps[0].notify[0]", "steps[0].notify[1]"]
    assert roast.tick() == []  # notified once: nothing left for tick


def test_a_failing_notify_step_is_a_warning_and_the_wait_is_kept(tmp_path: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved: ["$(echo approved)"]
              notify: ["$(echo 'mail server down' >&2; exit 7)"]
    """)
    r = roast_cli("execute", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "notify step" in r.stderr and "still waiting" in r.stderr
    assert roast.session(doc(r)["session_id"]).status == "waiting"


def test_notify_interrupted_by_a_crash_runs_again_from_tick(tmp_path: Path, log: Path) -> None:
    once = tmp_path / "crashed"
    path = workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved: ["$(echo approved)"]
              notify:
                - "$(if [ ! -e @ONCE@ ]; then touch @ONCE@; kill -9 $PPID; fi; echo notified >> @LOG@)"
    """, LOG=log, ONCE=once)
    r = roast_cli("execute", str(path))
    assert r.returncode == -9  # roast died while notifying; the wait had been saved before
    [s] = roast.sessions()
    assert s.status == "waiting" and s.notify_pending
    poll(lambda: lines(log) == ["notified"], "the killed notifier's shell to finish")
    assert roast_cli("tick").returncode == 0
    assert lines(log) == ["notified", "notified"]  # at least once: again after the crash
    assert not roast.session(s.id).notify_pending


# --------------------------------------------------------------------------- concurrency


def test_sixteen_concurrent_deliveries_with_distinct_ids_consume_exactly_once_and_lose_none(
        tmp_path: Path, log: Path) -> None:
    path = workflow(tmp_path, """
        steps:
          - first:
              wait_for_event:
                go: ["$(echo first {{ event.n }} >> @LOG@)"]
          - second:
              wait_for_event:
                go: ["$(echo second {{ event.n }} >> @LOG@)"]
    """, LOG=log)
    sid = doc(roast_cli("execute", str(path), "--json"))["session_id"]
    procs = [start("resume", str(path), "-e", "go", "-s", sid, "--event-id", f"go-{n}", "-d", json.dumps({"n": n}),
                   "--json") for n in range(16)]
    results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else "", p.stderr.read() if p.stderr else "")
               for p in procs]
    for code, _, err in results:
        assert code in (0, 3) and "Traceback" not in err, err
    outcomes = sorted(e.outcome for e in api.deliveries(sid))
    assert len(outcomes) == 16, (outcomes, [(c, o[-300:], e[-300:]) for c, o, e in results])  # none lost
    assert outcomes.count("consumed") == 2  # one per wait, exactly once
    assert set(outcomes) <= {"consumed", "unconsumed", "not_waiting", "closed"}, outcomes
    assert roast.session(sid).status == "completed"
    assert len([x for x in lines(log) if x.startswith("first")]) == 1
    assert len([x for x in lines(log) if x.startswith("second")]) == 1
