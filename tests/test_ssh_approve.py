"""`roast approve` and the `Roast-Signature` header (issue 23): SSH-signed approvals with the real
OpenSSH `ssh-keygen`, keys made in tmp_path, ROAST_ALLOWED_SIGNERS per test. Accepted from an allowed
key (the actor is the principal, verified); refused — store unchanged — from another key, for another
session or event, replayed; and through a real `roast serve`."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import run_cli, write_workflow
from test_signed import _key, _public

import roast
from roast import api, approvals
from roast.cli import main
from roast.errors import UsageError
from roast.signed import SignatureRefused, sign_approval, to_header

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")

WORKFLOW = """
    name: deploy
    steps:
      - build: $(echo built)
      - wait_for_event:
          approved: ["$(echo approved by {{ delivery.actor }} for {{ event.build }})"]
          rejected: ["$(echo rejected by {{ delivery.actor }})"]
      - $(echo done)
"""


@pytest.fixture
def ana(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ana's key, listed in ROAST_ALLOWED_SIGNERS (set for this test) as ana@example.com."""
    key = _key(tmp_path, "ana")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"ana@example.com {_public(key)}\n")
    monkeypatch.setenv("ROAST_ALLOWED_SIGNERS", str(allowed))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return key


def _waiting(tmp_path: Path, name: str = "wf") -> str:
    result = roast.run(write_workflow(tmp_path, WORKFLOW, name=name))
    assert result.status == "waiting", result
    return result.session_id


def _unchanged(session_id: str, before: list) -> None:
    """Still waiting at the same wait, with no delivery recorded since `before`."""
    s = api.session(session_id)
    assert (s.status, s.events) == ("waiting", ["approved", "rejected"])
    assert api.deliveries(session_id) == before
    assert all(e.outcome != "consumed" for e in api.deliveries(session_id))


def _signed_header(session_id: str, key: Path, event: str = "approved", data: object = None, wait: object = None,
                   reason: str | None = None) -> str:
    wait = api.session(session_id).wait_seq if wait is None else wait
    text, signature = sign_approval(session_id, wait, event, data, key, now=time.time(), reason=reason)
    return to_header(text, signature)


# --------------------------------------------------------------------------- roast approve


def test_an_approval_signed_by_an_allowed_key_is_delivered_as_its_principal_verified(tmp_path, ana):
    sid = _waiting(tmp_path)
    proc = run_cli("approve", sid, "-e", "approved", "-d", '{"build": "b-17"}', "--reason", "looks good",
                   "--key", str(ana), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["status"], doc["outcome"], doc["event"]) == ("completed", "consumed", "approved")
    assert doc["delivery"]["actor"] == "ana@example.com" and doc["delivery"]["verified"] is True
    assert doc["delivery"]["reason"] == "looks good" and doc["event_id"].startswith("ssh:")
    assert "approved by ana@example.com for b-17" in [h.output for h in api.history(sid)]
    shown = run_cli("session", sid, "--json", cwd=tmp_path)
    consumed = [e for e in json.loads(shown.stdout)["events"] if e["outcome"] == "consumed"]
    assert [(e["actor"], e["verified"], e["source"]) for e in consumed] == [("ana@example.com", True, "ssh")]


def test_an_approval_signed_by_a_key_not_in_the_allowed_signers_is_refused_and_changes_nothing(tmp_path, ana):
    sid = _waiting(tmp_path)
    eve = _key(tmp_path, "eve")
    before = api.deliveries(sid)
    proc = run_cli("approve", sid, "-e", "approved", "--key", str(eve), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "not in the allowed signers" in proc.stderr and "nothing changed" in proc.stderr
    _unchanged(sid, before)


def test_a_signed_approval_for_another_session_or_event_is_refused_and_changes_nothing(tmp_path, ana):
    sid, other = _waiting(tmp_path), _waiting(tmp_path, "other")
    before = api.deliveries(sid)
    text, signature = sign_approval(other, api.session(other).wait_seq, "approved", None, ana, now=time.time())
    with pytest.raises(SignatureRefused, match=f"signed for session '{other}', not '{sid}'") as info:
        approvals.deliver_signed(sid, "approved", None, text, signature)
    assert info.value.exit_code == 3 and info.value.document["outcome"] == "signature_refused"
    text, signature = sign_approval(sid, api.session(sid).wait_seq, "rejected", None, ana, now=time.time())
    with pytest.raises(SignatureRefused, match="signed for event 'rejected', not 'approved'"):
        approvals.deliver_signed(sid, "approved", None, text, signature)
    with pytest.raises(SignatureRefused, match="signed for wait"):
        text, signature = sign_approval(sid, 7, "approved", None, ana, now=time.time())
        approvals.deliver_signed(sid, "approved", None, text, signature)
    with pytest.raises(SignatureRefused, match="not the data that was signed"):
        text, signature = sign_approval(sid, api.session(sid).wait_seq, "approved", {"build": "b-1"}, ana,
                                        now=time.time())
        approvals.deliver_signed(sid, "approved", {"build": "b-2"}, text, signature)
    with pytest.raises(SignatureRefused, match="more than 3600 s ago"):
        text, signature = sign_approval(sid, api.session(sid).wait_seq, "approved", None, ana,
                                        now=time.time() - 7200)
        approvals.deliver_signed(sid, "approved", None, text, signature)
    _unchanged(sid, before)
    _unchanged(other, api.deliveries(other))


def test_a_signed_approval_replayed_to_the_same_session_and_event_is_refused(tmp_path, ana):
    """A statement is usable once: the wait it approved is gone, and a later wait of the same session
    for the same event (a loop) does not take it again either."""
    wf = write_workflow(tmp_path, """
        name: twice
        steps:
          - wait_for_event: {approved: ["$(echo first by {{ delivery.actor }})"]}
          - wait_for_event: {approved: ["$(echo second)"]}
    """)
    sid = roast.run(wf).session_id
    header = _signed_header(sid, ana)
    from roast.signed import from_header

    text, signature = from_header(header)
    first = approvals.deliver_signed(sid, "approved", None, text, signature)
    assert (first.outcome, first.status, first.delivery["actor"]) == ("consumed", "waiting", "ana@example.com")
    before = api.deliveries(sid)
    with pytest.raises(SignatureRefused, match="already delivered .* usable once") as info:
        approvals.deliver_signed(sid, "approved", None, text, signature)
    assert info.value.exit_code == 3
    assert api.deliveries(sid) == before and api.session(sid).status == "waiting"


def test_two_racing_deliveries_of_one_signed_approval_consume_it_once(tmp_path, ana):
    sid = _waiting(tmp_path)
    from roast.signed import from_header

    text, signature = from_header(_signed_header(sid, ana, data={"build": "b-3"}))
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def deliver() -> None:
        start.wait()
        try:
            outcomes.append(approvals.deliver_signed(sid, "approved", {"build": "b-3"}, text, signature).outcome)
        except SignatureRefused:
            outcomes.append("refused")
        except roast.errors.NotWaiting:
            outcomes.append("not_waiting")

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("consumed") == 1, outcomes
    assert [e.outcome for e in api.deliveries(sid)].count("consumed") == 1
    assert [h.output for h in api.history(sid)].count("approved by ana@example.com for b-3") == 1


def test_a_replay_the_early_check_misses_is_refused_by_the_store(tmp_path, ana, monkeypatch):
    """The race the early check cannot close (two deliveries both read before either writes): the
    store keeps one event id per session, so the second comes back `duplicate`, refused here."""
    sid = _waiting(tmp_path)
    from roast.signed import from_header

    text, signature = from_header(_signed_header(sid, ana))
    assert approvals.deliver_signed(sid, "approved", None, text, signature).outcome == "consumed"
    before = api.deliveries(sid)
    monkeypatch.setattr(approvals, "_refuse_replay", lambda *args: None)
    with pytest.raises(SignatureRefused, match="already delivered .*consumed"):
        approvals.deliver_signed(sid, "approved", None, text, signature)
    assert api.deliveries(sid) == before


def test_without_allowed_signers_roast_approve_is_refused_with_a_hint(tmp_path, ana, monkeypatch, capsys):
    sid = _waiting(tmp_path)
    monkeypatch.delenv("ROAST_ALLOWED_SIGNERS")
    assert main(["approve", sid, "-e", "approved", "--key", str(ana)]) == 2
    err = capsys.readouterr().err
    assert "ROAST_ALLOWED_SIGNERS is not set" in err and "hint: set ROAST_ALLOWED_SIGNERS" in err
    monkeypatch.setenv("ROAST_ALLOWED_SIGNERS", str(tmp_path / "missing"))
    assert main(["approve", sid, "-e", "approved", "--key", str(ana)]) == 2
    assert "is not a readable file" in capsys.readouterr().err
    assert api.session(sid).status == "waiting" and api.deliveries(sid) == []


def test_a_missing_unreadable_or_locked_key_is_a_usage_error(tmp_path, ana, capsys):
    sid = _waiting(tmp_path)
    assert main(["approve", sid, "-e", "approved"]) == 2
    assert "say which with --key" in capsys.readouterr().err
    assert main(["approve", sid, "-e", "approved", "--key", str(tmp_path / "nope")]) == 2
    assert "no SSH key at" in capsys.readouterr().err
    locked = _key(tmp_path, "locked", passphrase="correct horse")
    assert main(["approve", sid, "-e", "approved", "--key", str(locked)]) == 2
    assert "needs a passphrase" in capsys.readouterr().err
    assert api.session(sid).status == "waiting" and api.deliveries(sid) == []


def test_approving_an_event_the_session_does_not_wait_for_signs_nothing(tmp_path, ana, capsys):
    sid = _waiting(tmp_path)
    assert main(["approve", sid, "-e", "merged", "--key", str(ana)]) == 3
    err = capsys.readouterr().err
    assert "not 'merged'" in err and f"roast approve {sid} -e approved" in err
    assert api.deliveries(sid) == []


def test_header_prints_a_statement_a_bot_can_relay_without_touching_the_store(tmp_path, ana, capsys):
    sid = _waiting(tmp_path)
    wait = api.session(sid).wait_seq
    assert main(["approve", sid, "-e", "approved", "--key", str(ana), "--header", "--wait-seq", str(wait),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["session_id"], doc["wait"], doc["event"]) == (sid, wait, "approved")
    assert api.deliveries(sid) == []
    from roast.signed import from_header

    text, signature = from_header(doc["header"])
    assert approvals.deliver_signed(sid, "approved", None, text, signature).outcome == "consumed"
    with pytest.raises(UsageError, match="--wait-seq goes with --header"):
        from roast.cli_approve import cmd_approve

        cmd_approve(type("A", (), {"event_data": None, "wait_seq": 1, "header": False, "session_id": sid,
                                   "event": "approved"})(), lambda a, r: 0)


# --------------------------------------------------------------------------- over HTTP


def test_a_relayed_signed_approval_over_http_needs_no_token_and_a_foreign_key_is_403(tmp_path, ana, monkeypatch):
    from test_serve import AUTH_ENV, eventually, need

    need("starlette", "uvicorn")
    monkeypatch.chdir(tmp_path)
    from test_serve import Server

    sid, other = _waiting(tmp_path), _waiting(tmp_path, "other")
    import os

    server = Server(tmp_path, [], {**AUTH_ENV, "ROAST_ALLOWED_SIGNERS": os.environ["ROAST_ALLOWED_SIGNERS"]})
    try:
        server.wait_ready()
        eve = _key(tmp_path, "eve")
        status, doc = server.post(sid, "approved", '{"build": "b-9"}',
                                  {"roast-signature": _signed_header(sid, eve, data={"build": "b-9"})})
        assert status == 403 and doc["error"]["code"] == "signature_refused", doc
        assert "not in the allowed signers" in doc["error"]["message"]
        # another session's statement, and a body other than the data signed
        status, doc = server.post(sid, "approved", "{}", {"roast-signature": _signed_header(other, ana)})
        assert status == 403 and "signed for session" in doc["error"]["message"], doc
        header = _signed_header(sid, ana, data={"build": "b-9"}, reason="ship it")
        status, doc = server.post(sid, "approved", '{"build": "b-10"}', {"roast-signature": header})
        assert status == 403 and "not the data that was signed" in doc["error"]["message"], doc
        status, doc = server.post(sid, "approved", '{"build": "b-9"}', {"roast-signature": "bm90IGpzb24"})
        assert status == 403 and doc["error"]["code"] == "signature_refused", doc
        assert api.deliveries(sid) == [] and api.session(sid).status == "waiting"
        # no bearer token: the signature is the credential; the body's keys in another order hash the same
        status, doc = server.post(sid, "approved", '{ "build" : "b-9" }', {"roast-signature": header})
        assert status == 200 and doc["outcome"] == "consumed", doc
        assert (doc["delivery"]["actor"], doc["delivery"]["verified"], doc["delivery"]["reason"]) == (
            "ana@example.com", True, "ship it")
        done = eventually(lambda: api.session(sid).status == "completed", "the branch to run in the server")
        assert done
        assert "approved by ana@example.com for b-9" in [h.output for h in api.history(sid)]
        # the same header again: a replay
        status, doc = server.post(sid, "approved", '{"build": "b-9"}', {"roast-signature": header})
        assert status == 403 and "already delivered" in doc["error"]["message"], doc
        assert [e.outcome for e in api.deliveries(sid)] == ["consumed"]
        # a bearer token still works as before; without one, an unsigned request is 401
        assert server.post(other, "approved", "{}")[0] == 401
    finally:
        server.stop()


def test_over_http_without_allowed_signers_a_signed_approval_is_403_never_500(tmp_path, ana, monkeypatch):
    from test_serve import Server, need

    need("starlette", "uvicorn")
    monkeypatch.chdir(tmp_path)
    sid = _waiting(tmp_path)
    header = _signed_header(sid, ana)
    monkeypatch.delenv("ROAST_ALLOWED_SIGNERS")
    server = Server(tmp_path, [], {})
    try:
        server.wait_ready()
        status, doc = server.post(sid, "approved", None, {"roast-signature": header})
        assert status == 403 and "ROAST_ALLOWED_SIGNERS is not set" in doc["error"]["message"], doc
        status, doc = server.request("POST", f"/v1/workflows/deploy/events/approved?key={sid}", None,
                                     {"roast-signature": header})[::2]
        assert status == 422 and "names its session" in doc["error"]["message"], doc
        assert api.deliveries(sid) == [] and api.session(sid).status == "waiting"
    finally:
        server.stop()


def test_a_flood_of_signed_requests_never_takes_the_threads_that_serve_listings_and_pages(tmp_path, ana, monkeypatch):
    """Anyone may POST a signed approval (no token: the signature is the credential), and checking it
    runs ssh-keygen. Those checks have threads of their own (two at once): while twenty wait on a
    stuck ssh-keygen, a listing is still answered (they took the readers' threads before)."""
    import os

    from test_serve import AUTH_ENV, BEARER, Server, eventually, need

    need("starlette", "uvicorn")
    monkeypatch.chdir(tmp_path)
    sid = _waiting(tmp_path)
    header = _signed_header(sid, ana)  # signed for real, by this process's ssh-keygen
    fake, release, calls = tmp_path / "bin", tmp_path / "release", tmp_path / "calls"
    fake.mkdir()
    (fake / "ssh-keygen").write_text(f'#!/bin/sh\necho "$$" >> "{calls}"\n'
                                     f'while [ ! -f "{release}" ]; do sleep 0.05; done\nexit 1\n')
    (fake / "ssh-keygen").chmod(0o755)
    server = Server(tmp_path, [], {**AUTH_ENV, "ROAST_ALLOWED_SIGNERS": os.environ["ROAST_ALLOWED_SIGNERS"],
                                   "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"})
    answers: list[int] = []
    try:
        server.wait_ready()
        flood = [threading.Thread(target=lambda: answers.append(server.post(sid, "approved", None,
                                                                            {"roast-signature": header})[0]))
                 for _ in range(20)]
        for thread in flood:
            thread.start()
        eventually(lambda: len(lines(calls)) >= 2, "two signature checks to be stuck in ssh-keygen")
        for _ in range(3):  # answered while every signed request still waits
            status, _, doc = server.request("GET", "/v1/sessions?status=waiting",
                                            headers=BEARER)
            assert status == 200 and [s["session_id"] for s in doc] == [sid], doc
        assert len(lines(calls)) == 2, lines(calls)  # never more than two at once
    finally:
        release.write_text("")
        for thread in flood if "flood" in dir() else []:
            thread.join(timeout=60)
        server.stop()
    assert len(answers) == 20 and set(answers) == {403}, answers  # each refused, none a 500 or lost
    assert api.session(sid).status == "waiting" and api.deliveries(sid) == []


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
