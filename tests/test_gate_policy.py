"""A wait's gate policy enforced on every delivery (issue 23): `approvers:`, `quorum:`,
`self_approval:` and `require_verified:` hold for `roast resume`, `roast.resume()` and `roast serve`,
on SQLite and PostgreSQL, with the exactly-once claim — `forbidden` changes nothing, `counted`
approvals are in the store (a fresh process, `roast store copy`, a race of 16 deliveries), and the
branch reads who decided in `{{ delivery.approvals }}`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import test_serve
from conftest import ON_POSTGRES, ROOT, TEST_KEY, run_cli, write_workflow
from test_serve import eventually, finished

import roast
from roast import api, gates, outcomes
from roast.errors import Forbidden

serve = test_serve.serve

GATED = """
    name: promote
    steps:
      - build: $(echo b-17)
      - gate:
          wait_for_event:
            title: "Promote {{ output.build }}?"
            approvers: [ana@example.com, bo@example.com, "*@sre.example.com"]
            quorum: {approved: 2}
            self_approval: false
            approved:
              - who: "$(echo {{ ' '.join(a.actor for a in delivery.approvals) }})"
              - why: "$(echo {{ ' '.join(str(a.reason) for a in delivery.approvals) }})"
              - verified: "$(echo {{ delivery.verified }})"
            rejected:
              - vetoed: "$(echo vetoed by {{ delivery.approvals[0].actor }})"
"""
STARTER = "cy@sre.example.com"  # an approver by pattern, but the session's starter


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here on SQLite (ROAST_HOME) and on a fresh PostgreSQL database (ROAST_STORE)."""
    if request.param == "postgres" and not ON_POSTGRES:
        monkeypatch.setenv("ROAST_STORE", request.getfixturevalue("pg_url"))
        monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    return str(request.param)


def _env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("ROAST_STORE", "ROAST_KEY", "ROAST_HOME") if k in os.environ}


def _started(tmp_path: Path, yaml_text: str = GATED) -> tuple[Path, str]:
    wf = write_workflow(tmp_path, yaml_text)
    result = roast.run(wf, started_by=STARTER)
    assert result.status == "waiting", result
    return wf, result.session_id


def _resume(sid: str, actor: str, event: str = "approved", **kw: Any) -> roast.Result:
    return roast.resume(event, session_id=sid, actor=actor, **kw)


def _rows(sid: str) -> list[tuple[str, str | None, str]]:
    return [(e.outcome, e.actor, e.name) for e in api.deliveries(sid)]


def _outputs(sid: str) -> dict[str, str]:
    return {h.name: h.output for h in api.history(sid) if h.status == "ok"}


# --------------------------------------------------------------------------- the pure rules


@pytest.mark.parametrize("doc, expected", [
    (None, False),
    ({"approvers": None, "quorum": {}, "self_approval": True, "require_verified": False, "remind": 60.0}, False),
    ({"approvers": ["ana"]}, True),
    ({"approvers": None, "quorum": {"approved": 2}}, True),
    ({"self_approval": False}, True),
    ({"require_verified": True}, True),
])
def test_a_wait_is_gated_by_approvers_a_quorum_no_self_approval_or_verified_only(doc, expected):
    assert outcomes.gated({"event": "approved", "path": "steps[0]", "policy": doc}) is expected


def test_a_forbidden_hint_says_who_may_deliver_the_event():
    doc = {"approvers": ["ana@example.com", "*@sre.example.com"], "quorum": {"approved": 2},
           "self_approval": False, "require_verified": True}
    assert outcomes.who_may(doc, "approved") == (
        "'approved' may be delivered by ana@example.com, *@sre.example.com (not the session's starter; verified "
        "identities only: an API token, a per-person link or an SSH-signed approval); 2 distinct approvers must "
        "deliver it")
    assert outcomes.who_may({"self_approval": False}, "rejected") == \
        "'rejected' may be delivered by anyone (not the session's starter)"


# --------------------------------------------------------------------------- quorum


def test_two_distinct_approvers_are_needed_and_the_branch_sees_both(tmp_path, backend):
    _, sid = _started(tmp_path)
    first = _resume(sid, "ana@example.com", reason="looks good")
    assert (first.outcome, first.status) == ("counted", "waiting")
    assert first.quorum == {"event": "approved", "have": 1, "need": 2, "approvers": ["ana@example.com"]}
    assert first.to_json()["quorum"] == first.quorum
    again = _resume(sid, "ANA@example.com")  # the same person, whatever the case
    assert (again.outcome, again.status) == ("duplicate", "waiting")
    assert again.quorum["have"] == 1
    assert api.session(sid).status == "waiting"
    second = _resume(sid, "ops@sre.example.com", reason="canary ok")
    assert (second.outcome, second.status) == ("consumed", "completed")
    assert _outputs(sid)["who"] == "ana@example.com ops@sre.example.com"
    assert _outputs(sid)["why"] == "looks good canary ok"
    [consumed] = [e for e in api.deliveries(sid) if e.outcome == "consumed"]
    assert [(a["actor"], a["verified"], a["reason"]) for a in consumed.approvals] == [
        ("ana@example.com", False, "looks good"), ("ops@sre.example.com", False, "canary ok")]
    assert second.delivery["approvals"] == consumed.approvals
    # the approvals that met the quorum stay `counted`; the consuming event lists them
    assert _rows(sid) == [("counted", "ana@example.com", "approved"), ("duplicate", "ANA@example.com", "approved"),
                          ("consumed", "ops@sre.example.com", "approved")]


def test_an_outsider_and_the_starter_are_forbidden_with_exit_3_and_nothing_changes(tmp_path, backend):
    wf, sid = _started(tmp_path)
    before = api.session(sid)
    outsider = run_cli("resume", "-s", sid, "-e", "approved", "--actor", "mallory@example.com", "--json",
                       env=_env())
    assert outsider.returncode == 3, outsider.stderr
    doc = json.loads(outsider.stdout)
    assert (doc["outcome"], doc["actor"], doc["error"]["code"]) == ("forbidden", "mallory@example.com", "forbidden")
    assert "not among the approvers" in doc["reason"]
    assert "ana@example.com, bo@example.com, *@sre.example.com" in doc["error"]["hint"]
    starter = run_cli("resume", "-s", sid, "-e", "approved", "--actor", STARTER, env=_env())
    assert starter.returncode == 3
    assert "starter may not approve" in starter.stderr and "nothing changed" in starter.stderr
    with pytest.raises(Forbidden) as info:
        _resume(sid, STARTER, "rejected")  # a veto is a decision too: the starter may not make it
    assert info.value.exit_code == 3 and info.value.document["outcome"] == "forbidden"
    after = api.session(sid)
    assert (after.status, after.wait_seq, after.attempt, after.awaiting) == \
        (before.status, before.wait_seq, before.attempt, before.awaiting)
    assert [o for o, _, _ in _rows(sid)] == ["forbidden"] * 3  # recorded with the actor, nothing counted
    assert _resume(sid, "ana@example.com").outcome == "counted"  # the gate still works


def test_one_rejection_vetoes_at_once_and_the_counted_approval_is_unconsumed(tmp_path, backend):
    _, sid = _started(tmp_path)
    assert _resume(sid, "ana@example.com").outcome == "counted"
    vetoed = _resume(sid, "bo@example.com", "rejected", reason="not on a Friday")
    assert (vetoed.outcome, vetoed.status) == ("consumed", "completed")
    assert _outputs(sid)["vetoed"] == "vetoed by bo@example.com"
    assert [(a["actor"], a["reason"]) for a in vetoed.delivery["approvals"]] == [("bo@example.com",
                                                                                  "not on a Friday")]
    assert _rows(sid) == [("unconsumed", "ana@example.com", "approved"), ("consumed", "bo@example.com", "rejected")]


def test_require_verified_refuses_an_unverified_cli_actor_and_takes_a_verified_one(tmp_path, backend):
    _, sid = _started(tmp_path, """
        steps:
          - wait_for_event:
              require_verified: true
              approved: ["$(echo ok by {{ delivery.approvals[0].actor }})"]
    """)
    ran = run_cli("resume", "-s", sid, "-e", "approved", "--actor", "ana@example.com", env=_env())
    assert ran.returncode == 3, ran.stderr
    assert "only verified identities" in ran.stderr and "verified identities only" in ran.stderr  # message, hint
    assert api.session(sid).status == "waiting"
    done = _resume(sid, "ana@example.com", verified=True)
    assert (done.outcome, done.status) == ("consumed", "completed")
    assert done.delivery["approvals"][0]["verified"] is True


def test_a_counted_approval_is_in_the_store_and_a_fresh_process_completes_the_quorum(tmp_path, backend):
    _, sid = _started(tmp_path)
    first = run_cli("resume", "-s", sid, "-e", "approved", "--actor", "ana@example.com", env=_env())
    assert first.returncode == 0, first.stderr
    assert f"counted: 1 of 2 approvals for 'approved' (ana@example.com); session {sid} keeps waiting" in first.stderr
    repeat = run_cli("resume", "-s", sid, "-e", "approved", "--actor", "ana@example.com", "--json", env=_env())
    assert repeat.returncode == 0, repeat.stderr
    assert (json.loads(repeat.stdout)["outcome"], json.loads(repeat.stdout)["quorum"]["have"]) == ("duplicate", 1)
    second = run_cli("resume", "-s", sid, "-e", "approved", "--actor", "bo@example.com", "--json", env=_env())
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["status"] == "completed"
    assert _outputs(sid)["who"] == "ana@example.com bo@example.com"


def test_recovery_of_a_claimed_quorum_hands_the_branch_the_same_approvals(tmp_path, backend):
    _, sid = _started(tmp_path)
    assert _resume(sid, "ana@example.com").outcome == "counted"
    # a process claims the quorum as `roast serve` does (the branch runs later) and dies before running it
    claim = ("import sys, roast; r = roast.resume('approved', session_id=sys.argv[1], actor='bo@example.com', "
             "run=False); print(r.status)")
    died = subprocess.run([sys.executable, "-c", claim, sid], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert died.stdout.strip() == "running", died.stderr
    recovered = run_cli("resume", "-s", sid, env=_env())  # the pending event is read back from the store
    assert recovered.returncode == 0, recovered.stderr
    assert api.session(sid).status == "completed"
    assert _outputs(sid)["who"] == "ana@example.com bo@example.com"


def test_a_deadline_and_a_cancel_leave_the_counted_approvals_unconsumed(tmp_path, backend):
    _, sid = _started(tmp_path)
    assert _resume(sid, "ana@example.com").outcome == "counted"
    roast.cancel(sid, reason="superseded")
    assert _rows(sid) == [("unconsumed", "ana@example.com", "approved")]
    _, timed = _started(tmp_path, GATED.replace("self_approval: false", "self_approval: false\n            within: 1s"))
    opened, deadline = api.session(timed).created_at, api.session(timed).deadline
    assert _resume(timed, "ana@example.com", now=lambda: opened).outcome == "counted"
    api.tick(now=lambda: deadline + 1)
    assert api.session(timed).status in ("timed_out", "failed")
    assert _rows(timed)[0] == ("unconsumed", "ana@example.com", "approved")


GATE_LATER = """
    steps:
      - wait_for_event: {ready: ["$(echo ready)"]}
      - wait_for_event:
          approvers: [ana@example.com]
          approved: ["$(echo approved)"]
"""  # a gated wait after an ungated one


def test_a_gated_wait_never_takes_a_queued_event_as_it_opens(tmp_path, backend):
    _, sid = _started(tmp_path, GATE_LATER)
    early = _resume(sid, "ana@example.com")  # before the gate opens: kept, and it says no wait ahead takes it
    assert early.outcome == "queued" and early.delivery["detail"] == outcomes.ONLY_GATES_AHEAD
    assert _resume(sid, "ana@example.com", "ready").status == "waiting"  # the gate opened, the queue kept
    assert api.session(sid).events == ["approved"]
    assert _resume(sid, "ana@example.com").status == "completed"  # given to the open gate


def test_an_early_approval_is_told_no_wait_ahead_will_take_it_unless_one_without_a_gate_will(tmp_path, backend):
    """The notice of a queued event said it "goes to the next wait that declares it", also when that
    wait was a gate, which never takes a queued event: the person thought they had approved."""
    _, sid = _started(tmp_path, GATE_LATER)
    early = run_cli("resume", "-s", sid, "-e", "approved", "--actor", "ana@example.com", env=_env())
    assert early.returncode == 0, early.stderr
    assert "is kept, but no wait ahead will take it: only a gate ahead declares it" in early.stderr
    assert "goes to the next wait" not in early.stderr
    shown = run_cli("resume", "-s", sid, "-e", "approved", "--actor", "ana@example.com", "--json", env=_env())
    assert json.loads(shown.stdout)["delivery"]["detail"] == outcomes.ONLY_GATES_AHEAD
    # a wait without a gate further on that declares it too takes it: the usual notice
    _, other = _started(tmp_path / "b", """
        steps:
          - wait_for_event: {ready: ["$(echo ready)"]}
          - wait_for_event:
              approvers: [ana@example.com]
              approved: ["$(echo gate)"]
          - wait_for_event: {approved: ["$(echo later)"]}
    """)
    kept = run_cli("resume", "-s", other, "-e", "approved", "--actor", "ana@example.com", env=_env())
    assert kept.returncode == 0 and "is kept and goes to the next wait that declares it" in kept.stderr, kept.stderr
    assert api.resume("approved", session_id=other, actor="bo").delivery["detail"] is None


def test_a_counted_approval_survives_roast_store_copy_to_postgres(tmp_path, roast_home, pg_url, monkeypatch):
    if ON_POSTGRES:
        pytest.skip("copies a SQLite store")
    _, sid = _started(tmp_path)
    assert _resume(sid, "ana@example.com").outcome == "counted"
    monkeypatch.setenv("ROAST_KEY_FILE", str(roast_home / "secret.key"))
    copied = run_cli("store", "copy", "--to", pg_url, env={"ROAST_KEY_FILE": str(roast_home / "secret.key")})
    assert copied.returncode == 0, copied.stderr
    monkeypatch.setenv("ROAST_STORE", pg_url)
    assert _resume(sid, "ana@example.com").outcome == "duplicate"  # the count came along
    done = _resume(sid, "bo@example.com")
    assert (done.outcome, done.status) == ("consumed", "completed")
    assert _outputs(sid)["who"] == "ana@example.com bo@example.com"


def test_roast_session_and_roast_inbox_show_the_quorum_progress(tmp_path, backend):
    _, sid = _started(tmp_path)
    assert _resume(sid, "ana@example.com").outcome == "counted"
    shown = run_cli("session", sid, env=_env())
    assert shown.returncode == 0, shown.stderr
    assert "awaiting  approved" in shown.stdout and "1 of 2 approvals: ana@example.com" in shown.stdout
    waits = json.loads(run_cli("session", sid, "--json", env=_env()).stdout)["waits"]
    assert [w["quorum"] for w in waits] == [
        {"event": "approved", "have": 1, "need": 2, "approvers": ["ana@example.com"]}, None]  # rejected: a veto
    inbox = run_cli("inbox", env=_env())
    assert "1 of 2 approvals: ana@example.com" in inbox.stdout, inbox
    [listed] = json.loads(run_cli("inbox", "--json", env=_env()).stdout)
    assert listed["progress"] == "1 of 2 approvals: ana@example.com"


# --------------------------------------------------------------------------- races


def test_sixteen_racing_approvals_from_four_people_run_the_branch_once_with_two_approvals(tmp_path, backend):
    """The race suite's quorum scenario: 16 `roast resume` processes, 4 identities, quorum 2."""
    runs = tmp_path / "runs.txt"
    _, sid = _started(tmp_path, GATED.replace('- who: "$(echo', f'- who: "$(echo run >> {runs}; echo'))
    people = ["ana@example.com", "bo@example.com", "x@sre.example.com", "y@sre.example.com"]
    results: list[Any] = [None] * 16
    go = threading.Barrier(16)

    def racer(i: int) -> None:
        go.wait()
        results[i] = run_cli("resume", "-s", sid, "-e", "approved", "--actor", people[i % 4], "--json",
                             cwd=tmp_path, env=_env(), timeout=180)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode in (0, 3) for r in results), [str(r.stderr) for r in results]
    assert api.session(sid).status == "completed"
    assert runs.read_text() == "run\n"  # exactly one branch run
    consumed = [e for e in api.deliveries(sid) if e.outcome == "consumed"]
    assert len(consumed) == 1 and len(consumed[0].approvals) == 2
    assert len({a["actor"] for a in consumed[0].approvals}) == 2
    counted = [e for e in api.deliveries(sid) if e.outcome == "counted"]
    assert len(counted) == 1 and counted[0].actor != consumed[0].actor


# --------------------------------------------------------------------------- roast serve


def test_over_http_a_token_counts_an_outsider_gets_403_and_the_second_token_decides(tmp_path, serve):
    # a token's name is its verified identity, and may be the address `approvers:` lists
    _, sid = _started(tmp_path)
    tokens = {"ana@example.com": "a" * 24, "bo@example.com": "b" * 24, "mallory@evil.example": "m" * 24}
    server = serve(env={"ROAST_SERVE_TOKENS": " ".join(f"{who}:{tok}" for who, tok in tokens.items())})

    def post(who: str, event: str = "approved") -> tuple[int, Any]:
        return server.post(sid, event, "{}", {"authorization": f"Bearer {tokens[who]}"})

    status, doc = post("ana@example.com")
    assert status == 200, doc
    assert doc["outcome"] == "counted"
    assert doc["quorum"] == {"event": "approved", "have": 1, "need": 2, "approvers": ["ana@example.com"]}
    link = gates.page(sid, public_url=f"http://127.0.0.1:{server.port}")
    page = server.request("GET", link[link.index("/g/"):])[2]
    assert "1 of 2 approvals: ana@example.com" in page  # the gate page shows the progress
    status, doc = post("mallory@evil.example")
    assert status == 403, doc
    assert (doc["outcome"], doc["actor"], doc["error"]["code"]) == ("forbidden", "mallory@evil.example", "forbidden")
    status, doc = post("ana@example.com")
    assert (status, doc["outcome"]) == (200, "duplicate")
    status, doc = post("bo@example.com")
    assert (status, doc["outcome"]) == (200, "consumed"), doc
    eventually(lambda: finished(sid), "the branch")
    assert _outputs(sid)["who"] == "ana@example.com bo@example.com"
    assert _outputs(sid)["verified"] == "true"  # {{ delivery.verified }}: the deciding delivery's
    [consumed] = [e for e in api.deliveries(sid) if e.outcome == "consumed"]
    assert [a["verified"] for a in consumed.approvals] == [True, True]  # a token's identity is verified


def test_two_people_behind_the_trusted_proxy_meet_the_quorum_on_one_page(tmp_path, serve):
    """The page's event id (a second click is a duplicate) is per person: the same form posted by two
    people is two approvals, and the page shows the progress between them."""
    _, sid = _started(tmp_path)
    server = serve(env={"ROAST_TRUSTED_PROXIES": "127.0.0.1", "ROAST_IDENTITY_HEADER": "X-Forwarded-Email"})
    link = gates.page(sid, public_url=f"http://127.0.0.1:{server.port}")
    path = link[link.index("/g/"):]

    def click(who: str) -> int:
        html = server.request("GET", path, headers={"x-forwarded-email": who})[2]
        csrf = html.split('name=_csrf value="', 1)[1].split('"', 1)[0]
        form = urlencode({"_csrf": csrf, "_event": "approved", "_reason": ""})
        return server.request("POST", path, form, {"content-type": "application/x-www-form-urlencoded",
                                                   "x-forwarded-email": who})[0]

    assert click("ana@example.com") == 303
    assert click("ana@example.com") == 303  # a second click: not counted again
    assert "1 of 2 approvals: ana@example.com" in server.request("GET", path)[2]
    assert click("mallory@example.com") == 403
    assert api.session(sid).status == "waiting"
    assert click("bo@example.com") == 303
    eventually(lambda: finished(sid), "the branch")
    assert _outputs(sid)["who"] == "ana@example.com bo@example.com"
    assert [a["verified"] for a in [e for e in api.deliveries(sid) if e.outcome == "consumed"][0].approvals] == \
        [True, True]


def test_a_signed_webhook_decides_as_its_named_secret_and_another_secret_is_forbidden(tmp_path, serve):
    import base64
    import time

    from roast import webhooks

    ci, other = ("whsec_" + base64.b64encode(c * 32).decode() for c in (b"c", b"o"))
    _, sid = _started(tmp_path, """
        steps:
          - wait_for_event:
              approvers: [ci-bot]
              require_verified: true
              approved: ["$(echo released by {{ delivery.approvals[0].actor }})"]
    """)
    server = serve(env={"ROAST_WEBHOOK_SECRET": f"ci-bot:{ci} intruder:{other}"})
    body = b'{"build": 17}'
    status, doc = server.post(sid, "approved", body, webhooks.sign([other], "msg_gate_1", body, now=time.time()))
    assert (status, doc["outcome"], doc["actor"]) == (403, "forbidden", "intruder"), doc
    assert api.session(sid).status == "waiting"
    status, doc = server.post(sid, "approved", body, webhooks.sign([ci], "msg_gate_2", body, now=time.time()))
    assert (status, doc["outcome"]) == (200, "consumed"), doc
    eventually(lambda: finished(sid), "the branch")
    assert "released by ci-bot" in [h.output for h in api.history(sid)]


def test_a_named_waits_config_may_hold_its_policy_and_the_wait_s_own_keys_win(tmp_path):
    wf = write_workflow(tmp_path, """
        name: configured
        gate:
          approvers: [ana@example.com]
          quorum: {approved: 1}
          timeout: 1h
        steps:
          - gate:
              wait_for_event:
                quorum: {approved: 1}
                approved: ["$(echo ok)"]
        """)
    assert run_cli("validate", str(wf), cwd=tmp_path).returncode == 0, "a named wait's config may hold its policy"
    sid = roast.run(wf).session_id
    with pytest.raises(Forbidden):
        roast.resume("approved", session_id=sid, actor="bo@example.com")
    assert roast.resume("approved", session_id=sid, actor="Ana@Example.com").status == "completed"
