"""Durable wait_for_event end to end (issue 4 "Done when"): resume, sessions, refusals, crashes.

Everything goes through the public surfaces: `roast ...` in this process (`cli`) or as real
processes (`run_cli`, `subprocess.Popen`) where processes matter, `roast.run`/`roast.resume`, and
the SQLite file itself to prove that a refusal changed nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _resume_helpers import (
    Ran,
    cli,
    clone_session,
    dump,
    dump_all,
    envelope,
    events_rows,
    fill,
    lines,
    poll,
    set_envelope,
)
from conftest import ROOT, run_cli

import roast
from roast import api
from roast.errors import DefinitionChanged

DEPLOY = """
name: deploy
steps:
  - build: $(echo build >> @LOG@; echo built)
  - wait_for_event:
      approved:
        - deploy: "$(echo deploy {{event.approver}} >> @LOG@; echo deployed by {{event.approver}})"
      rejected:
        - rollback: "$(echo rollback {{event.reason}} >> @LOG@; echo rolled back)"
  - cleanup: "$(echo cleanup {{event_name}} {{output.wait_for_event.event}} >> @LOG@; echo cleanup after {{event_name}})"
"""


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def deploy(wf, log: Path) -> Path:
    return wf(fill(DEPLOY, LOG=log), name="deploy")


def execute(workflow: Path, *more: str) -> str:
    """`roast execute WF --json` that must stop at a wait; returns the session id."""
    r = cli("execute", workflow, "--json", *more)
    assert r.code == 0, r
    [doc] = r.json  # execute --json is a list, one object per target
    assert doc["status"] == "waiting", r
    return doc["session_id"]


def session_json(sid: str) -> dict:
    r = cli("session", sid, "--json")
    assert r.code == 0, r
    return r.json


def assert_no_traceback(r: Ran) -> None:
    assert "Traceback" not in r.err and "Traceback" not in r.out, r


# --------------------------------------------------------------------------- each event


def test_approved_runs_its_branch_with_the_approver_then_the_steps_after_the_wait(deploy: Path, log: Path) -> None:
    sid = execute(deploy)
    assert lines(log) == ["build"]

    r = cli("resume", deploy, "--event", "approved", "--event-data", '{"approver": "ana"}', "--json")

    assert r.code == 0, r
    doc = r.json
    assert doc["session_id"] == sid and doc["status"] == "completed"
    assert doc["output"]["deploy"] == "deployed by ana"
    assert doc["output"]["cleanup"] == "cleanup after approved"
    assert "rollback" not in doc["output"]
    wait = doc["output"]["wait_for_event"]
    assert wait["event"] == "approved" and wait["data"] == {"approver": "ana"}
    assert wait["received_at"].startswith("20")
    assert doc["final_output"] == "cleanup after approved"
    assert lines(log) == ["build", "deploy ana", "cleanup approved approved"]
    assert [(e["name"], e["data"]) for e in session_json(sid)["events"]] == [("approved", {"approver": "ana"})]


def test_rejected_runs_the_other_branch_and_never_the_approved_one(deploy: Path, log: Path) -> None:
    sid = execute(deploy)

    r = cli("resume", deploy, "-e", "rejected", "-s", sid, "-d", '{"reason": "flaky tests"}')

    assert r.code == 0, r
    assert r.out.strip() == "cleanup after rejected"
    assert lines(log) == ["build", "rollback flaky tests", "cleanup rejected rejected"]
    s = session_json(sid)
    assert s["status"] == "completed"
    assert "deploy" not in s["output"] and s["output"]["rollback"] == "rolled back"
    assert s["output"]["wait_for_event"]["data"] == {"reason": "flaky tests"}


def test_event_data_read_from_stdin_reaches_the_branch_in_a_real_process(deploy: Path, log: Path) -> None:
    execute(deploy)

    p = run_cli("resume", str(deploy), "-e", "approved", "-d", "-", input='{"approver": "bo"}')

    assert p.returncode == 0, p.stderr
    assert "completed" in p.stderr
    assert lines(log) == ["build", "deploy bo", "cleanup approved approved"]


def test_a_named_wait_stores_its_result_under_its_name_and_takes_its_config(wf, log: Path) -> None:
    path = wf(fill("""
        steps:
          - approval:
              wait_for_event:
                approved: ["$(echo approved by {{event.approver}} >> @LOG@)"]
                rejected: ["$(echo rejected >> @LOG@)"]
          - after: "$(echo {{output.approval.event}}/{{output.approval.data.approver}}/{{event_name}} >> @LOG@; echo done)"
        approval:
          timeout: 2h
    """, LOG=log))
    r = cli("execute", path, "--json")
    assert r.code == 0 and r.json[0]["status"] == "waiting", r
    assert r.json[0]["awaiting"] == ["approved", "rejected"]
    assert r.json[0]["deadline"], "the 2h timeout from the top-level `approval:` key gives a deadline"
    assert "roast resume" in r.err and "-e approved" in r.err  # by session id (issue 24)

    r = cli("resume", path, "-e", "approved", "-d", '{"approver": "cy"}', "--json")

    assert r.code == 0, r
    assert r.json["output"]["approval"]["event"] == "approved"
    assert r.json["output"]["approval"]["data"] == {"approver": "cy"}
    assert "wait_for_event" not in r.json["output"]
    assert lines(log) == ["approved by cy", "approved/cy/approved"]


def test_two_sequential_waits_each_resume_continues_after_the_previous_branch(wf, log: Path) -> None:
    path = wf(fill("""
        steps:
          - $(echo start >> @LOG@)
          - wait_for_event:
              approved: ["$(echo first {{event.approver}} >> @LOG@)"]
          - $(echo middle {{output.wait_for_event.data.approver}} >> @LOG@)
          - release:
              wait_for_event:
                go: ["$(echo second {{event.who}} {{event_name}} >> @LOG@)"]
                stop: ["$(echo stopped >> @LOG@)"]
          - last: "$(echo end {{output.wait_for_event.event}} {{output.release.event}} >> @LOG@; echo fin)"
    """, LOG=log))
    sid = execute(path)
    assert lines(log) == ["start"]

    r = cli("resume", path, "-e", "approved", "-d", '{"approver": "ana"}', "--json")
    assert r.code == 0, r
    assert r.json["session_id"] == sid and r.json["status"] == "waiting"
    assert r.json["awaiting"] == ["go", "stop"]
    assert lines(log) == ["start", "first ana", "middle ana"]

    refused = cli("resume", path, "-e", "approved", "-s", sid)
    assert refused.code == 3, refused
    assert "go" in refused.err and "stop" in refused.err
    assert lines(log) == ["start", "first ana", "middle ana"]

    r = cli("resume", path, "-e", "go", "-d", '{"who": "bo"}', "--json")
    assert r.code == 0, r
    assert r.json["status"] == "completed"
    assert lines(log) == ["start", "first ana", "middle ana", "second bo go", "end approved go"]
    assert r.json["output"]["last"] == "fin"
    s = session_json(sid)
    # issue 14: the refused delivery is in the record too, with its outcome
    assert [(e["name"], e["outcome"]) for e in s["events"]] == [
        ("approved", "consumed"), ("approved", "not_waiting"), ("go", "consumed")]
    assert sum(1 for step in s["steps"] if step["path"] == "steps[0]") == 1


# --------------------------------------------------------------------------- several sessions


def test_without_a_session_id_the_most_recent_waiting_session_is_resumed_and_the_others_are_named(
        deploy: Path, log: Path) -> None:
    old, middle, newest = execute(deploy), execute(deploy), execute(deploy)

    r = cli("resume", deploy, "-e", "approved", "-d", '{"approver": "ana"}', "--json")

    assert r.code == 0, r
    assert r.json["session_id"] == newest
    assert sorted(r.json["others_waiting"]) == sorted([old, middle])
    assert old in r.err and middle in r.err, "stderr warns that other sessions are waiting too"
    statuses = {s: session_json(s)["status"] for s in (old, middle, newest)}
    assert statuses == {old: "waiting", middle: "waiting", newest: "completed"}


def test_the_others_waiting_notice_is_printed_once(deploy: Path) -> None:
    old, newest = execute(deploy), execute(deploy)

    r = cli("resume", deploy, "-e", "approved", "-d", '{"approver": "ana"}')

    assert r.code == 0, r
    assert newest not in r.out
    assert r.err.count(old) == 1, r.err


def test_a_session_is_resumed_by_its_full_id_or_a_unique_prefix_of_four_characters(
        deploy: Path, log: Path) -> None:
    month_ago = roast.run(str(deploy), now=lambda: time.time() - 40 * 86400)
    assert month_ago.status == "waiting"
    recent, newest = execute(deploy), execute(deploy)
    assert month_ago.session_id[:4] != recent[:4], "40 days apart, ids differ within 4 characters"

    r = cli("resume", deploy, "-e", "rejected", "-s", month_ago.session_id[:4], "-d", '{"reason": "old"}', "--json")
    assert r.code == 0, r
    assert r.json["session_id"] == month_ago.session_id and r.json["status"] == "completed"

    r = cli("resume", "-e", "approved", "-s", recent, "-d", '{"approver": "ana"}', "--json")
    assert r.code == 0, r
    assert r.json["session_id"] == recent
    assert session_json(newest)["status"] == "waiting"


def test_an_ambiguous_prefix_is_refused_with_the_candidates_and_changes_nothing(deploy: Path) -> None:
    a = execute(deploy)
    # ids are random (issue 11): make a second session whose id shares the first 6 characters
    b = a[:6] + "zzzzzzz"
    clone_session(a, b)
    common = a[:6]
    before = dump_all()

    r = cli("resume", deploy, "-e", "approved", "-s", common[:4])

    assert r.code == 3, r
    assert "ambiguous" in r.err and a in r.err and b in r.err
    assert dump_all() == before

    r = cli("resume", deploy, "-e", "approved", "-s", common[:3] + "_")  # no LIKE wildcard
    assert r.code == 3, r
    assert "no session" in r.err
    assert dump_all() == before


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "AB", "abc", "x" * 65, "abcd efgh"])
def test_a_malformed_session_id_is_a_usage_error(deploy: Path, bad_id: str) -> None:
    sid = execute(deploy)
    before = dump(sid)

    r = cli("resume", deploy, "-e", "approved", "-s", bad_id)

    assert r.code == 2, r
    assert "not a session id" in r.err
    assert_no_traceback(r)
    assert dump(sid) == before


# --------------------------------------------------------------------------- bad input changes nothing


DEEP = '{"a": ' * 64 + "{}" + "}" * 64  # 65 levels of objects


@pytest.mark.parametrize("args, code, fragments", [
    (["-e", "aproved"], 3, ["approved", "rejected", "did you mean 'approved'"]),
    (["-e", "ship_it"], 3, ["approved", "rejected", "'ship_it'"]),
    (["-e", "approved", "-d", '{"approver": ana}'], 2, ["not valid JSON", "line 1 column 14"]),
    (["-e", "approved", "-d", '{\n  "approver": "ana",\n}'], 2, ["line 3 column 1"]),
    (["-e", "approved", "-d", '["ana"]'], 2, ["JSON object", "array"]),
    (["-e", "approved", "-d", '"ana"'], 2, ["JSON object"]),
    (["-e", "approved", "-d", '{"n": NaN}'], 2, ["NaN"]),
    (["-e", "approved", "-d", '{"n": -Infinity}'], 2, ["Infinity"]),
    (["-e", "approved", "-d", '{"n": 1e999}'], 2, ["out of range"]),
    (["-e", "approved", "-d", '{"approver": "ana", "approver": "eve"}'], 2, ["'approver' more than once"]),
    (["-e", "approved", "-d", DEEP], 2, ["64"]),
    (["-e", "approved", "-s", "zzzzzzzzz"], 3, ["no session 'zzzzzzzzz'"]),
    (["-e", "approved", "-d", "@/nonexistent/event.json"], 2, ["/nonexistent/event.json"]),
    (["-e", "appro ved"], 2, ["event name"]),
], ids=["typo", "undeclared", "not-json", "trailing-comma", "array", "string", "nan", "infinity",
        "huge-number", "duplicate-keys", "depth-65", "unknown-session", "missing-file", "bad-name"])
def test_a_bad_resume_is_refused_and_leaves_the_session_byte_for_byte_unchanged(
        deploy: Path, log: Path, args: list[str], code: int, fragments: list[str]) -> None:
    sid = execute(deploy)
    before = dump(sid)
    assert before["continuations"], "a waiting session has its sealed state"

    r = cli("resume", deploy, *args)

    assert r.code == code, r
    for fragment in fragments:
        assert fragment in r.err, (fragment, r.err)
    assert r.err.startswith("roast: error: ")
    assert_no_traceback(r)
    assert dump(sid) == before
    assert lines(log) == ["build"]


def test_the_json_error_document_carries_the_code_and_the_message(deploy: Path) -> None:
    sid = execute(deploy)
    before = dump(sid)

    r = cli("resume", deploy, "-e", "aproved", "--json")

    assert r.code == 3, r
    error = r.json["error"]
    assert error["exit_code"] == 3 and error["code"]
    assert "approved" in error["message"] and "rejected" in error["message"]
    assert error["hint"] and "approved" in error["hint"]  # the did-you-mean, as its own field
    assert "hint:" not in error["message"]  # and not a second time inside the message
    assert dump(sid) == before


def test_event_data_over_one_mebibyte_from_a_file_is_refused_and_changes_nothing(
        deploy: Path, log: Path, tmp_path: Path) -> None:
    sid = execute(deploy)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"approver": "x" * (1024 * 1024)}))
    before = dump(sid)

    r = cli("resume", deploy, "-e", "approved", "-d", f"@{big}")

    assert r.code == 2, r
    assert "limit" in r.err and "1,048,576" in r.err
    assert dump(sid) == before
    assert lines(log) == ["build"]


def test_event_data_just_under_the_limit_from_a_file_is_accepted(deploy: Path, log: Path, tmp_path: Path) -> None:
    sid = execute(deploy)
    data = tmp_path / "ok.json"
    data.write_text(json.dumps({"approver": "ana", "pad": "x" * (1024 * 1024 - 100)}))

    r = cli("resume", deploy, "-e", "approved", "-d", f"@{data}", "--json")

    assert r.code == 0, r
    assert lines(log) == ["build", "deploy ana", "cleanup approved approved"]
    assert len(events_rows(sid)) == 1


@pytest.mark.parametrize("stdin, fragment", [
    ('{"approver": ', "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"a": NaN}', "NaN"),
    ('{"a": 1, "a": 1}', "more than once"),
], ids=["truncated", "array", "nan", "duplicate"])
def test_bad_event_data_on_stdin_is_refused_in_a_real_process_and_changes_nothing(
        deploy: Path, log: Path, stdin: str, fragment: str) -> None:
    sid = execute(deploy)
    before = dump(sid)

    p = run_cli("resume", str(deploy), "-e", "approved", "-d", "-", input=stdin)

    assert p.returncode == 2, p.stderr
    assert fragment in p.stderr
    assert "Traceback" not in p.stderr
    assert dump(sid) == before
    assert lines(log) == ["build"]


def test_resuming_a_completed_session_says_when_and_how_it_finished_and_changes_nothing(
        deploy: Path, log: Path) -> None:
    sid = execute(deploy)
    assert cli("resume", deploy, "-e", "approved", "-d", '{"approver": "ana"}').code == 0
    finished_at = session_json(sid)["finished_at"]
    before = dump(sid)

    r = cli("resume", deploy, "-e", "approved", "-s", sid, "--json")

    assert r.code == 3, r
    assert "completed" in r.err and finished_at in r.err
    assert r.json["outcome"] == "closed" and r.json["error"]["code"] == "closed"
    after = dump(sid)
    # issue 14: nothing changed but the record of the refused delivery
    assert {k: v for k, v in after.items() if k != "events"} == {k: v for k, v in before.items() if k != "events"}
    assert after["events"][:-1] == before["events"] and len(after["events"]) == len(before["events"]) + 1
    assert lines(log).count("deploy ana") == 1

    r = cli("resume", deploy, "-e", "approved")
    assert r.code == 3, r
    assert "no session" in r.err and "waiting" in r.err


# --------------------------------------------------------------------------- exactly once


def test_of_eight_concurrent_resumes_exactly_one_runs_the_branch(wf, log: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    # The branch holds the session (running) until the test has seen all losers exit, so every loser
    # meets a session that is taken, never one that already completed.
    path = wf(fill("""
        steps:
          - $(echo build >> @LOG@)
          - wait_for_event:
              approved:
                - "$(echo branch {{event.n}} >> @LOG@; i=0; while [ ! -f @RELEASE@ ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done)"
          - $(echo after >> @LOG@)
    """, LOG=log, RELEASE=release))
    sid = execute(path)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-m", "roast", "resume", str(path), "-e", "approved",
                               "-s", sid, "-d", json.dumps({"n": n})],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for n in range(8)]
    try:
        poll(lambda: sum(p.poll() is not None for p in procs) >= 7, "seven resumers to give up", timeout=120)
        release.touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    finally:
        release.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1, results
    assert [code for code, _, _ in losers] == [3] * 7, results
    for _, out, err in losers:
        assert "no longer waiting" in err or "being handled by" in err, err
        assert "Traceback" not in err
    branch = [line for line in lines(log) if line.startswith("branch")]
    assert len(branch) == 1, lines(log)
    assert lines(log) == ["build", branch[0], "after"]
    rows = [r for r in events_rows(sid) if r[9] == "consumed"]
    assert len(rows) == 1
    assert json.loads(rows[0][4]) == {"n": int(branch[0].split()[1])}, "the winner's event was recorded"
    # the losers' deliveries are in the record, refused (issue 14)
    refused = [r[9] for r in events_rows(sid) if r[9] != "consumed"]
    assert set(refused) <= {"not_waiting"} and len(refused) <= 7, refused
    assert session_json(sid)["status"] == "completed"


# --------------------------------------------------------------------------- sealed continuations


class _Pwn:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.target}",))


def _forge(real: bytes, payload: bytes) -> bytes:
    """A roast envelope around `payload` with a consistent header, keeping the real (now wrong) tag."""
    prefix = 5 + 1 + 4
    (header_len,) = struct.unpack(">I", real[6:10])
    header = json.loads(real[prefix:prefix + header_len])
    header.update(payload_len=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest(), has_code=False)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return real[:5] + real[5:6] + struct.pack(">I", len(raw)) + raw + payload + real[-32:]


@pytest.mark.parametrize("how", ["forged-header", "bare-pickle", "random-tag"])
def test_a_tampered_continuation_is_refused_and_never_unpickled(deploy: Path, log: Path, tmp_path: Path,
                                                                how: str) -> None:
    sid = execute(deploy)
    pwned = tmp_path / "PWNED"
    payload = pickle.dumps({"cursor": _Pwn(pwned)}, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"system" in payload
    real = envelope(sid)
    if how == "forged-header":
        blob = _forge(real, payload)
    elif how == "bare-pickle":
        blob = payload
    else:
        blob = _forge(real, payload)[:-32] + os.urandom(32)
    set_envelope(sid, blob)
    before = dump(sid)

    p = run_cli("resume", str(deploy), "-e", "approved", "-s", sid, "-d", '{"approver": "eve"}')

    assert p.returncode == 3, p.stderr
    assert not pwned.exists(), "the payload was unpickled"
    expected = "not a roast state envelope" if how == "bare-pickle" else "integrity check"
    assert expected in p.stderr
    assert "Traceback" not in p.stderr
    assert dump(sid) == before
    assert session_json(sid)["status"] == "waiting"
    assert lines(log) == ["build"]


@pytest.mark.parametrize("where", ["header", "payload", "tag", "truncated"])
def test_a_damaged_real_continuation_is_refused_and_the_session_stays(deploy: Path, log: Path, where: str) -> None:
    sid = execute(deploy)
    real = bytearray(envelope(sid))
    if where == "header":
        real[20] ^= 0x01
    elif where == "payload":
        real[len(real) - 40] ^= 0x01
    elif where == "tag":
        real[-1] ^= 0x80
    else:
        real = real[:-50]
    set_envelope(sid, bytes(real))
    before = dump(sid)

    r = cli("resume", deploy, "-e", "approved", "-s", sid)

    assert r.code == 3, r
    assert ("integrity check" if where != "truncated" else "truncated") in r.err
    assert "was not loaded" in r.err
    assert dump(sid) == before
    assert lines(log) == ["build"]
    assert cli("cancel", sid).code == 0, "a session with damaged state can still be cancelled"


# --------------------------------------------------------------------------- edited workflows


EDIT_BASE = """
steps:
  - prepare: $(echo prepare >> @LOG@)
  - wait_for_event:
      approved: ["$(echo approved >> @LOG@)"]
      rejected: ["$(echo rejected >> @LOG@)"]
  - finish: $(echo finish >> @LOG@)
"""


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_an_unchanged_workflow_resumes_without_a_warning(wf, log: Path) -> None:
    path = wf(fill(EDIT_BASE, LOG=log))
    execute(path)
    path.write_text(path.read_text())  # touched, same bytes

    r = cli("resume", path, "-e", "approved")

    assert r.code == 0, r
    assert "warning" not in r.err
    assert lines(log) == ["prepare", "approved", "finish"]


def test_a_step_added_after_the_wait_resumes_with_a_warning_and_runs_the_new_step(wf, log: Path) -> None:
    path = wf(fill(EDIT_BASE, LOG=log))
    execute(path)
    with path.open("a") as fh:
        fh.write(f"  - extra: $(echo extra >> {log})\n")

    r = cli("resume", path, "-e", "approved", "--json")

    assert r.code == 0, r
    assert "roast: warning:" in r.err and "changed" in r.err
    assert r.json["warnings"]
    assert lines(log) == ["prepare", "approved", "finish", "extra"]


def test_an_edit_keeping_size_and_mtime_is_seen_after_a_resume_in_this_process_read_the_file(
        wf, log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25: a process keeps a workflow file's digest while the file's stat says it is the same
    file; any write changes its ctime, so an edit that restores size and mtime is still seen."""
    from roast import definition

    monkeypatch.setattr(definition, "SETTLED_NS", 50_000_000)  # the file settles in 50 ms, not 2 s
    path = wf(fill(EDIT_BASE, LOG=log))
    first, second = execute(path), execute(path)
    time.sleep(0.2)  # settled: the next read keeps its digest
    assert roast.resume("approved", session_id=first).status == "completed"
    before = os.stat(path)
    _edit(path, "  - prepare:", "  - prepaer:")  # same size, same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    kept = dump(second)

    with pytest.raises(DefinitionChanged, match="prepaer"):
        roast.resume("approved", session_id=second)
    assert dump(second) == kept
    assert lines(log) == ["prepare", "prepare", "approved", "finish"]


@pytest.mark.parametrize("old, new, moved", [
    ("  - prepare:", "  - lint: $(true)\n  - prepare:", "lint"),
    ("  - prepare:", "  - get_ready:", "get_ready"),
], ids=["added-before", "renamed-before"])
def test_a_change_on_the_path_to_the_wait_is_refused_naming_what_moved(wf, log: Path, old: str, new: str,
                                                                       moved: str) -> None:
    path = wf(fill(EDIT_BASE, LOG=log))
    sid = execute(path)
    _edit(path, old, new)
    before = dump(sid)

    r = cli("resume", path, "-e", "approved")

    assert r.code == 3, r
    assert "changed" in r.err and moved in r.err and "prepare" in r.err
    assert "--force" in r.err
    assert dump(sid) == before
    assert lines(log) == ["prepare"]


def test_an_event_no_longer_declared_by_the_wait_is_refused(wf, log: Path) -> None:
    path = wf(fill(EDIT_BASE, LOG=log))
    sid = execute(path)
    _edit(path, '      approved: ["$(echo approved >> ' + str(log) + ')"]\n', "")
    before = dump(sid)

    r = cli("resume", path, "-e", "approved")

    assert r.code == 3, r
    assert "approved" in r.err and "no longer declares" in r.err
    assert dump(sid) == before
    assert lines(log) == ["prepare"]

    forced = cli("resume", path, "-e", "approved", "--force")
    assert forced.code == 3, "--force cannot deliver an event the wait no longer declares"
    assert dump(sid) == before


def test_force_resumes_a_session_whose_earlier_step_was_renamed(wf, log: Path) -> None:
    path = wf(fill(EDIT_BASE, LOG=log))
    sid = execute(path)
    _edit(path, "  - prepare:", "  - get_ready:")

    r = cli("resume", path, "-e", "approved", "--force", "--json")

    assert r.code == 0, r
    assert "roast: warning:" in r.err and "--force" in r.err
    assert r.json["session_id"] == sid and r.json["status"] == "completed"
    assert lines(log) == ["prepare", "approved", "finish"], "nothing before the wait ran again"


def test_force_is_refused_when_a_step_added_before_the_wait_moved_the_cursor_off_it(wf, log: Path) -> None:
    path = wf(fill(EDIT_BASE, LOG=log))
    sid = execute(path)
    _edit(path, "  - prepare:", "  - lint: $(echo lint >> " + str(log) + ")\n  - prepare:")
    before = dump(sid)

    r = cli("resume", path, "-e", "approved", "--force")

    # issue 4 item 5: --force only when the cursor still resolves to a wait declaring the event;
    # here steps[1] is now `prepare`, so nothing may run.
    assert r.code == 3, r
    assert "lint" in r.err and "steps[1]" in r.err
    assert dump(sid) == before
    assert lines(log) == ["prepare"]


# --------------------------------------------------------------------------- kill -9


def _start(*args: str) -> subprocess.Popen[bytes]:
    """A real `roast ARGS` process in its own process group (so kill -9 takes its steps too)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "roast", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _kill9_when(proc: subprocess.Popen[bytes], predicate, what: str,  # type: ignore[no-untyped-def]
                steps_too: bool = True) -> None:
    """kill -9 roast once `predicate` holds; with `steps_too`, the step it was running as well (each
    step has a process group of its own, which recovery waits for: see test_signals.py)."""
    try:
        poll(predicate, what, timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    if steps_too:
        _kill_step_groups()


def _kill_step_groups() -> None:
    from roast.stop import group_alive

    for s in roast.sessions(limit=None):
        for h in api.history(s.id):
            if h.pgid and group_alive(h.pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(h.pgid, signal.SIGKILL)
                poll(lambda pgid=h.pgid: not group_alive(pgid), f"process group {h.pgid} to end", timeout=30)


def test_a_session_killed_during_a_step_is_orphaned_and_continues_from_its_checkpoint(
        wf, log: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    path = wf(fill("""
        steps:
          - one: $(echo one >> @LOG@; echo first)
          - two: $(echo two $ROAST_STEP_ATTEMPT >> @LOG@; test -f @GO@ || sleep 30; echo second)
          - three: "$(echo three {{output.one}} {{output.two}} >> @LOG@)"
    """, LOG=log, GO=go))
    _kill9_when(_start("execute", str(path)), lambda: lines(log) == ["one", "two 1"], "step two to start")

    listed = cli("sessions", "--json")
    assert listed.code == 0, listed
    [row] = listed.json
    sid = row["session_id"]
    assert row["status"] == "orphaned"
    assert "orphaned" in cli("session", sid).out
    go.touch()

    p = run_cli("resume", "--session-id", sid)

    assert p.returncode == 0, p.stderr
    assert lines(log) == ["one", "two 1", "two 2", "three first second"], "step one did not run again"
    s = session_json(sid)
    assert s["status"] == "completed"
    attempts = [(step["path"], step["attempt"], step["status"]) for step in s["steps"]]
    assert [a for a in attempts if a[0] == "steps[0]"] == [("steps[0]", 1, "ok")]
    assert [a[1] for a in attempts if a[0] == "steps[1]"] == [1, 2]
    assert ("steps[1]", 2, "ok") in attempts


def test_a_resume_killed_inside_its_branch_is_continued_with_the_same_event(wf, log: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    path = wf(fill("""
        steps:
          - $(echo build >> @LOG@)
          - wait_for_event:
              approved:
                - "$(echo deploy {{event.approver}} $ROAST_EVENT_NAME $ROAST_STEP_ATTEMPT >> @LOG@; test -f @GO@ || sleep 30)"
          - "$(echo after {{event.approver}} {{output.wait_for_event.event}} >> @LOG@)"
    """, LOG=log, GO=go))
    sid = execute(path)
    _kill9_when(_start("resume", str(path), "-e", "approved", "-d", '{"approver": "ana"}'),
                lambda: len(lines(log)) == 2, "the branch to start")
    assert session_json(sid)["status"] == "orphaned"
    r = cli("resume", path, "-e", "approved", "-s", sid, "-d", '{"approver": "eve"}')
    assert r.code == 3, r
    assert "no longer waiting" in r.err and "without --event" in r.err
    go.touch()

    p = run_cli("resume", "-s", sid)

    assert p.returncode == 0, p.stderr
    assert lines(log) == ["build", "deploy ana approved 1", "deploy ana approved 2", "after ana approved"]
    assert [(e[3], json.loads(e[4]), e[9]) for e in events_rows(sid)] == [
        ("approved", {"approver": "ana"}, "consumed"), ("approved", {"approver": "eve"}, "not_waiting")]
    assert session_json(sid)["status"] == "completed"


def test_an_orphaned_session_can_be_cancelled(wf, log: Path) -> None:
    path = wf(fill("""
        steps:
          - $(echo one >> @LOG@; sleep 30)
    """, LOG=log))
    _kill9_when(_start("execute", str(path)), lambda: lines(log) == ["one"], "the step to start")
    [row] = cli("sessions", "--json").json
    assert row["status"] == "orphaned"

    r = cli("cancel", row["session_id"], "--json")

    assert r.code == 0, r
    assert r.json["status"] == "cancelled"
    r = cli("resume", "-s", row["session_id"])
    assert r.code == 3 and "cancelled" in r.err, r


def test_a_running_session_whose_process_lives_cannot_be_resumed_and_cancel_stops_it(wf, log: Path,
                                                                                      tmp_path: Path) -> None:
    go = tmp_path / "go"
    path = wf(fill("""
        steps:
          - $(echo one >> @LOG@; i=0; while [ ! -f @GO@ ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done)
    """, LOG=log, GO=go))
    proc = _start("execute", str(path))
    try:
        poll(lambda: lines(log) == ["one"], "the step to start", timeout=60)
        [row] = cli("sessions", "--json").json
        assert row["status"] == "running"
        before = dump(row["session_id"])
        r = cli("resume", "--session-id", row["session_id"])
        assert r.code == 3, r
        assert "running" in r.err and "roast execute (pid" in r.err  # names what holds it (issue 10)
        assert dump(row["session_id"]) == before
        r = cli("cancel", row["session_id"])  # issue 20: stops its step, and the process running it
        assert r.code == 0, r
    finally:
        proc.communicate(timeout=60)
        go.touch()
    assert proc.returncode == 3
    assert lines(log) == ["one"]


def test_a_session_id_of_another_workflow_is_refused(deploy: Path, wf) -> None:
    sid = execute(deploy)
    other = wf(fill(EDIT_BASE, LOG="/dev/null"), name="other")
    before = dump(sid)

    r = cli("resume", other, "-e", "approved", "-s", sid)

    assert r.code == 2, r
    assert "belongs to" in r.err and str(deploy) in r.err
    assert dump(sid) == before


# --------------------------------------------------------------------------- hostile event data


HOSTILE = {
    "double-quote-break": '"; touch @P@; echo "',
    "command-substitution": "$(touch @P@)",
    "backticks": "`touch @P@`",
    "single-quote-break": "'; touch @P@; echo '",
    "newline": "x\ntouch @P@\n",
    "mixed": "a'b\"c$(touch @P@)`touch @P@`;touch @P@ & \\ $HOME *",
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_event_data_reaches_shell_steps_literally_in_every_quoting_context(
        wf, tmp_path: Path, value: str) -> None:
    pwned = tmp_path / "P"
    value = value.replace("@P@", str(pwned))
    out = tmp_path / "out"
    path = wf(fill("""
        steps:
          - wait_for_event:
              go:
                - bare: $(printf '%s' {{event.x}} > @OUT@.bare; printf '%s' {{event.x}})
                - double: $(printf '%s' "{{event.x}}" > @OUT@.double)
                - single: $(printf '%s' '{{event.x}}' > @OUT@.single)
                - mixed: $(printf '%s' "<{{event.x}}>" '[{{event.x}}]' > @OUT@.mixed)
                - file: $(cat "$ROAST_EVENT_FILE" > @OUT@.json; printf '%s' "$ROAST_EVENT_NAME" > @OUT@.name)
    """, OUT=out))
    execute(path)

    r = cli("resume", path, "-e", "go", "-d", json.dumps({"x": value}), "--json")

    assert r.code == 0, r
    assert not pwned.exists(), "event data was run as code"
    assert Path(f"{out}.double").read_text() == value
    assert Path(f"{out}.single").read_text() == value
    assert Path(f"{out}.mixed").read_text() == f"<{value}>[{value}]"
    assert Path(f"{out}.bare").read_text() == value
    assert r.json["output"]["bare"] == value.strip()
    assert json.loads(Path(f"{out}.json").read_text()) == {"x": value}
    assert Path(f"{out}.name").read_text() == "go"


# --------------------------------------------------------------------------- cancel


def test_cancel_ends_a_waiting_session_and_resume_is_then_refused(deploy: Path, log: Path) -> None:
    sid = execute(deploy)

    r = cli("cancel", sid, "--reason", "superseded", "--json")

    assert r.code == 0, r
    assert r.json["status"] == "cancelled" and r.json["reason"] == "superseded"
    assert session_json(sid)["status"] == "cancelled"
    assert dump(sid)["continuations"] == [], "the state of a cancelled session is dropped"
    before = dump(sid)

    r = cli("resume", deploy, "-e", "approved", "-s", sid)
    assert r.code == 3, r
    assert "cancelled" in r.err
    after = dump(sid)
    assert [e[9] for e in after["events"]] == ["closed"]  # recorded, refused (issue 14)
    assert {k: v for k, v in after.items() if k != "events"} == {k: v for k, v in before.items() if k != "events"}
    assert lines(log) == ["build"]

    again = cli("cancel", sid)
    assert again.code == 3, again
    assert dump(sid) == after


def test_cancelling_a_completed_session_is_refused_and_changes_nothing(deploy: Path) -> None:
    sid = execute(deploy)
    assert cli("resume", deploy, "-e", "rejected", "-d", '{"reason": "no"}').code == 0
    before = dump(sid)

    r = cli("cancel", sid[:6])

    assert r.code == 3, r
    assert "completed" in r.err
    assert dump(sid) == before
    assert session_json(sid)["status"] == "completed"


# --------------------------------------------------------------------------- dict workflows


DICT_RUN = '''
import json, roast

def build(ctx):
    return "built"

wf = {"name": "dictwf", "steps": [
    {"build": build},
    {"wait_for_event": {
        "approved": [{"ship": lambda ctx: "shipped by " + ctx.event["approver"] + " on " + ctx.event_name}],
        "rejected": ["$(echo rejected)"],
    }},
    {"after": lambda ctx: ctx.output["build"] + "+" + ctx.output["wait_for_event"]["event"]},
]}
r = roast.run(wf)
print(json.dumps(r.to_json()))
'''

DICT_RESUME = '''
import json, sys, roast
r = roast.resume("approved", data={"approver": "ana"}, session_id=sys.argv[1])
print(json.dumps(r.to_json()))
'''


def test_a_dict_workflow_resumes_by_session_id_alone_in_another_process(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def python(code: str, *args: str) -> dict:
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], check=False,
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    started = python(DICT_RUN)
    assert started["status"] == "waiting" and started["awaiting"] == ["approved", "rejected"]
    assert started["workflow"].startswith("<dict:")

    done = python(DICT_RESUME, started["session_id"])

    assert done["status"] == "completed", done
    assert done["output"]["ship"] == "shipped by ana on approved"
    assert done["output"]["after"] == "built+approved"
    history = api.history(started["session_id"])
    assert [h.name for h in history].count("build") == 1, "nothing before the wait ran again"


def test_a_dict_workflow_resumes_in_process_without_the_workflow_argument() -> None:
    calls: list[str] = []
    wf = {"steps": [{"one": lambda ctx: calls.append("one") or "1"},
                    {"wait_for_event": {"approved": [{"two": lambda ctx: f"by {ctx.event['approver']}"}]}}]}
    r = roast.run(wf)
    assert r.status == "waiting"

    done = roast.resume("approved", data={"approver": "bo"}, session_id=r.session_id)

    assert done.status == "completed"
    assert done.output["two"] == "by bo"
    assert calls == ["one"]


def test_a_dict_workflow_session_is_not_resumed_through_a_workflow_path(deploy: Path) -> None:
    r = roast.run({"steps": [{"wait_for_event": {"approved": ["$(true)"]}}]})
    before = dump(r.session_id)

    with pytest.raises(roast.errors.RoastError) as err:
        roast.resume("approved", workflow=str(deploy))

    assert err.value.exit_code == 3
    assert dump(r.session_id) == before


def _orphan(wf, log: Path, go: Path) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    path = wf(fill("""
        steps:
          - $(echo one >> @LOG@)
          - $(echo two >> @LOG@; test -f @GO@ || sleep 30)
    """, LOG=log, GO=go))
    _kill9_when(_start("execute", str(path)), lambda: lines(log) == ["one", "two"], "step two to start")
    [row] = cli("sessions", "--json").json
    assert row["status"] == "orphaned"
    return path, row["session_id"]


def test_an_orphaned_session_whose_workflow_changed_before_its_checkpoint_is_not_continued_without_force(
        wf, log: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    path, sid = _orphan(wf, log, go)
    _edit(path, "  - $(echo one", "  - $(echo zero)\n  - $(echo one")
    go.touch()
    before = dump(sid)

    r = cli("resume", "-s", sid)

    assert r.code == 3, r
    assert "changed" in r.err and "--force" in r.err
    assert dump(sid) == before
    assert lines(log) == ["one", "two"]


def test_an_orphaned_session_whose_workflow_only_gained_a_last_step_continues_with_a_warning(
        wf, log: Path, tmp_path: Path) -> None:
    # the definition it was saved with is kept (once per fingerprint), so the edit check works for a
    # crash checkpoint as for a wait: a change after the position is fine (roast 0.1 needed --force)
    go = tmp_path / "go"
    path, sid = _orphan(wf, log, go)
    with path.open("a") as fh:
        fh.write(f"  - $(echo three >> {log})\n")
    go.touch()

    r = cli("resume", "-s", sid, "--json")

    assert r.code == 0, r
    assert r.json["status"] == "completed"
    assert "roast: warning:" in r.err and "after its last checkpoint" in r.err
    assert r.err.count("changed since") == 1  # said once (issue 11)
    assert lines(log) == ["one", "two", "two", "three"]
