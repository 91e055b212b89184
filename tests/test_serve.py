"""`roast serve` (issue 15), tested against a real server process over HTTP on a free loopback port.

Every server is started with `--port 0` (the OS picks the port; the server logs it) and killed at
the end of its test. Nothing waits by sleeping: tests poll with a deadline.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli, write_workflow

import roast
from roast import api, webhooks

SERVE = "import sys; from roast import serve; sys.exit(serve.run_from_argv(sys.argv[1:]))"
TOKEN = "ci:tok-aaaaaaaaaaaaaaaaaaaa"
OTHER_TOKEN = "tok-bbbbbbbbbbbbbbbbbbbbbbbb"
SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()
GITHUB_SECRET = "gh-secret-0123456789abcdef"
AUTH_ENV = {"ROAST_SERVE_TOKENS": f"{TOKEN} {OTHER_TOKEN}", "ROAST_WEBHOOK_SECRET": SECRET,
            "ROAST_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
BEARER = {"authorization": "Bearer tok-aaaaaaaaaaaaaaaaaaaa"}


def need(*modules: str) -> None:
    """Skip when an optional piece is missing, except in CI, where a missing piece is a failure."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        message = f"needs {', '.join(missing)} (pip install -e '.[test,serve]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Server:
    """One `roast serve` process: started on a free port, killed at the end of the test."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str]) -> None:
        self.cwd, self.args, self.env = cwd, args, env
        self.log_path = cwd / f"serve-{uuid.uuid4().hex[:6]}.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("ROAST_SERVE", "ROAST_WEBHOOK",
                                                                         "ROAST_GITHUB"))}
        full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
        full.update(env)
        self.log_file = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE, "--port", "0", *args], cwd=cwd, env=full,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log_file)
        self.port = 0

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self) -> Server:
        def listening() -> int | None:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log)
            if found is None and self.proc.poll() is not None:
                pytest.fail(f"roast serve exited {self.proc.returncode}:\n{self.log}")
            return int(found.group(1)) if found else None

        self.port = eventually(listening, "roast serve to listen")
        return self

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            raw = body.encode() if isinstance(body, str) else body
            sent = dict(headers or {})
            if raw and not any(k.lower() == "content-type" for k in sent):
                sent["content-type"] = "application/json"
            conn.request(method, path, body=raw, headers=sent)
            response = conn.getresponse()
            data = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        doc = json.loads(data) if got.get("content-type", "").startswith("application/json") else data.decode()
        return response.status, got, doc

    def post(self, session_id: str, event: str, body: bytes | str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, doc = self.request("POST", f"/v1/sessions/{session_id}/events/{event}", body, headers)
        return status, doc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log_file.close()


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Server]]:
    """`serve(*args, env={...})` starts a server in tmp_path (the sessions' working directory too)."""
    need("starlette", "uvicorn")
    monkeypatch.chdir(tmp_path)
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Server:
        server = Server(tmp_path, list(args), env or {})
        started.append(server)
        return server.wait_ready() if ready else server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def store_dump(home: Path) -> str:
    with sqlite3.connect(f"file:{home / 'sessions.db'}?mode=ro", uri=True) as db:
        return "\n".join(db.iterdump())


def waiting_session(tmp_path: Path, yaml_text: str | None = None, target: str | None = None,
                    name: str = "wf") -> str:
    wf = write_workflow(tmp_path, yaml_text or """
        name: deploy
        steps:
          - build: $(echo built)
          - wait_for_event:
              approved: ["$(echo approved by {{event.approver}})"]
          - $(echo done)
    """, name=name)
    result = roast.run(wf, target)
    assert result.status == "waiting", result
    return result.session_id


def finished(session_id: str) -> api.Session | None:
    s = api.session(session_id)
    return s if s.status not in ("running", "waiting") else None


def release_script(tmp_path: Path) -> None:
    """A step that says it started and waits for `release` (at most 30 s, so nothing lingers)."""
    (tmp_path / "slow.sh").write_text('touch "started-$ROAST_STEP_ATTEMPT"\n'
                                      'i=0\nwhile [ ! -f release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n'
                                      'echo "attempt $ROAST_STEP_ATTEMPT"\n')


SLOW = """
    name: slow
    steps:
      - wait_for_event:
          go:
            - slow: $(sh slow.sh)
      - $(echo after)
"""


# --------------------------------------------------------------------------- delivery


def test_an_event_over_http_is_claimed_and_the_branch_runs_in_the_server(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve()
    status, doc = server.post(sid, "approved", '{"approver": "ana"}', {"idempotency-key": "deploy-1"})
    assert status == 200, doc
    assert (doc["outcome"], doc["session_id"], doc["event_id"], doc["event"]) == ("consumed", sid, "deploy-1",
                                                                                  "approved")
    assert doc["delivery"]["actor"] == "local"
    done = eventually(lambda: finished(sid), "the branch to run in the server")
    assert done.status == "completed"
    assert "approved by ana" in [h.output for h in api.history(sid)]
    assert "session completed" in server.log


def test_the_answer_comes_before_the_branch_runs(tmp_path, serve):
    release_script(tmp_path)
    sid = waiting_session(tmp_path, SLOW)
    server = serve()
    status, doc = server.post(sid, "go")
    assert status == 200 and doc["outcome"] == "consumed" and doc["status"] == "running", doc
    assert not (tmp_path / "release").exists()  # the branch cannot have finished: it waits for this file
    eventually(lambda: (tmp_path / "started-1").exists(), "the branch to start in the server")
    (tmp_path / "release").touch()
    assert eventually(lambda: finished(sid), "the session to complete").status == "completed"


def test_refusals_have_the_cli_document_and_their_http_status(tmp_path, serve):
    server = serve()
    sid = waiting_session(tmp_path, """
        name: two
        steps:
          - wait_for_event: {first: ["$(echo one)"]}
          - wait_for_event: {second: ["$(echo two)"]}
    """)
    status, doc = server.post(sid, "nonsense")
    assert (status, doc["error"]["code"], doc["outcome"]) == (404, "unknown_event", "unknown_event")
    assert server.post("zzzzzzzz", "first")[0] == 404
    status, doc = server.post(sid, "first", "[1, 2]")
    assert (status, doc["error"]["code"]) == (422, "invalid")
    status, doc = server.post(sid, "first", '{"a": 1, "a": 2}')
    assert (status, doc["error"]["code"]) == (422, "invalid")
    status, doc = server.post(sid, "second")
    assert (status, doc["outcome"]) == (200, "queued")  # a later wait declares it: kept (issue 14)
    status, doc = server.post(sid, "first")
    assert (status, doc["outcome"]) == (200, "consumed")
    eventually(lambda: finished(sid), "both branches to run")
    status, doc = server.post(sid, "first")
    assert (status, doc["error"]["code"]) == (409, "closed")
    cli = run_cli("resume", "--session-id", sid, "--event", "first", "--json")
    assert cli.returncode == 3
    by_cli = json.loads(cli.stdout)
    assert set(by_cli) == set(doc) and by_cli["error"]["code"] == doc["error"]["code"]
    assert {k: v for k, v in by_cli.items() if k not in ("event_id", "delivery")} == \
           {k: v for k, v in doc.items() if k not in ("event_id", "delivery")}


def test_thirty_two_concurrent_deliveries_to_one_wait_consume_exactly_one(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve()
    barrier = threading.Barrier(32)
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def deliver(n: int) -> None:
        barrier.wait()
        answer = server.post(sid, "approved", json.dumps({"approver": f"p{n}"}), {"idempotency-key": f"k{n}"})
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == 32
    consumed = [doc for status, doc in answers if status == 200 and doc["outcome"] == "consumed"]
    assert len(consumed) == 1, [(s, d.get("outcome")) for s, d in answers]
    refused = sorted({(status, doc["error"]["code"]) for status, doc in answers if doc is not consumed[0]})
    assert set(refused) <= {(409, "not_waiting"), (409, "closed")}, refused  # closed: the branch already ended
    eventually(lambda: finished(sid), "the one branch to run")
    assert [e.outcome for e in api.deliveries(sid)].count("consumed") == 1
    assert [h.path for h in api.history(sid)].count("steps[1].approved[0]") == 1


def test_concurrent_deliveries_to_many_sessions_each_get_their_own_answer_and_run_once(tmp_path, serve):
    """Issue 25: on SQLite the claims waiting at once commit together; each request still gets its
    own outcome (consumed, duplicate, refused), and every consumed event's branch runs once."""
    sids = [waiting_session(tmp_path) for _ in range(12)]
    server = serve()
    asks = [(sid, "approved", f"k-{sid}") for sid in sids] + [(sid, "approved", f"k-{sid}") for sid in sids[:6]] \
        + [(sid, "rejectd", None) for sid in sids[6:]] + [("zzzzzzzzzzzzz", "approved", None)]
    barrier = threading.Barrier(len(asks))
    answers: dict[int, tuple[int, Any]] = {}

    def deliver(n: int, sid: str, event: str, key: str | None) -> None:
        barrier.wait()
        answers[n] = server.post(sid, event, json.dumps({"approver": "ana"}) if key else None,
                                 {"idempotency-key": key} if key else {})

    threads = [threading.Thread(target=deliver, args=(n, *ask)) for n, ask in enumerate(asks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == len(asks)
    for sid in sids:
        mine = [answers[n] for n, ask in enumerate(asks) if ask[0] == sid and ask[1] == "approved"]
        outcomes = sorted(doc["outcome"] for _, doc in mine)
        # the same key twice: one claim, and the other its duplicate (before or after the branch ran)
        assert outcomes in (["consumed"], ["consumed", "duplicate"]), (sid, mine)
        assert all(status == 200 for status, _ in mine), mine
    for n, (sid, event, _) in enumerate(asks):
        if event == "rejectd":
            assert (answers[n][0], answers[n][1]["error"]["code"]) == (404, "unknown_event"), answers[n]
    assert answers[len(asks) - 1][0] == 404
    for sid in sids:
        assert eventually(lambda sid=sid: finished(sid), "every branch to run").status == "completed"
        assert [e.outcome for e in api.deliveries(sid)].count("consumed") == 1
        assert [h.path for h in api.history(sid)].count("steps[1].approved[0]") == 1
    assert sum(e.outcome == "unknown_event" for sid in sids[6:] for e in api.deliveries(sid)) == 6


@pytest.mark.parametrize("fault", [1, 3, 5, 8, 10])
def test_a_server_killed_inside_claims_taken_together_loses_none_and_consumes_none_twice(tmp_path, serve, fault):
    """Issue 25: a server SIGKILLed at a write point while it claims (ROAST_FAULT_AT 1-10: eight
    claims have at least ten write points, all of them in one group at most, so every kill lands
    in a claim, alone or inside a group, before any branch runs). Every `consumed` it answered is
    durable; a sender with no answer sends again with its key and gets `consumed` or `duplicate`
    from the next server; in the end each session took its event exactly once and completed."""
    _killed_inside_claims(tmp_path, serve, fault)


@pytest.mark.parametrize("fault", [1, 2, 4])
def test_on_postgresql_a_server_killed_inside_its_claim_processes_loses_none_and_consumes_none_twice(
        tmp_path, serve, pg_url, monkeypatch, fault):
    """The same on PostgreSQL, where two claim processes each claim in batches: a kill in either
    kills the server (ROAST_FAULT_ALSO), and the other commits or drops its batch whole."""
    from conftest import TEST_KEY

    monkeypatch.setenv("ROAST_STORE", pg_url)
    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    _killed_inside_claims(tmp_path, serve, fault)


def _killed_inside_claims(tmp_path: Path, serve: Any, fault: int) -> None:
    sids = [waiting_session(tmp_path) for _ in range(8)]
    server = serve(env={"ROAST_FAULT_AT": str(fault)})
    answers: dict[str, Any] = {}

    def deliver(sid: str) -> None:
        try:
            answers[sid] = server.post(sid, "approved", '{"approver": "ana"}', {"idempotency-key": f"k-{sid}"})
        except (OSError, http.client.HTTPException) as err:  # killed before it answered
            answers[sid] = ("no answer", type(err).__name__)

    threads = [threading.Thread(target=deliver, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    eventually(lambda: server.proc.poll() is not None, "the fault to kill the server")
    for sid, (status, doc) in answers.items():
        if status == 200:  # answered: already durable, before any recovery
            assert doc["outcome"] == "consumed", doc
            assert [e.outcome for e in api.deliveries(sid)].count("consumed") == 1
    assert any(status != 200 for status, _ in answers.values()), "the fault hit no claim"
    again = serve()
    for sid, (status, _) in answers.items():
        if status != 200:
            code, doc = again.post(sid, "approved", '{"approver": "ana"}', {"idempotency-key": f"k-{sid}"})
            assert code == 200 and doc["outcome"] in ("consumed", "duplicate"), doc
    for sid in sids:
        assert eventually(lambda sid=sid: finished(sid), "every session to complete").status == "completed"
        assert [e.outcome for e in api.deliveries(sid)].count("consumed") == 1, api.deliveries(sid)
        assert [h.path for h in api.history(sid)].count("steps[1].approved[0]") == 1


def test_correlation_by_key_reaches_the_one_keyed_session_and_never_fans_out(tmp_path, serve):
    yaml_text = """
        name: review
        key: "{{ target }}"
        steps:
          - wait_for_event:
              approved: ["$(echo approved)"]
    """
    first = waiting_session(tmp_path, yaml_text, target="pr-1")
    second = waiting_session(tmp_path, yaml_text, target="pr-2")
    server = serve()
    status, _, doc = server.request("POST", "/v1/workflows/review/events/approved?key=pr-2", b"")
    assert (status, doc["outcome"], doc["session_id"]) == (200, "consumed", second), doc
    eventually(lambda: finished(second), "the keyed session to complete")
    assert api.session(first).status == "waiting"
    status, _, doc = server.request("POST", "/v1/workflows/review/events/approved?key=pr-9", b"")
    assert (status, doc["error"]["code"]) == (404, "not_found")
    status, _, doc = server.request("POST", "/v1/workflows/..%2F..%2Fetc/events/approved?key=pr-1", b"")
    assert (status, doc["error"]["code"]) == (404, "not_found")
    status, _, doc = server.request("POST", "/v1/workflows/review/events/approved", b"")
    assert status == 422
    assert api.session(first).status == "waiting"


def test_listings_are_what_the_cli_prints(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve()
    status, headers, listed = server.request("GET", "/v1/sessions?status=waiting")
    cli = run_cli("sessions", "--status", "waiting", "--json")
    assert status == 200 and listed == json.loads(cli.stdout) and headers["x-total-count"] == "1"
    assert server.request("GET", "/v1/sessions?workflow=deploy")[2] == listed
    assert server.request("GET", "/v1/sessions?workflow=other")[2] == []
    status, _, one = server.request("GET", f"/v1/sessions/{sid}")
    assert status == 200 and one == json.loads(run_cli("session", sid, "--json").stdout)
    status, _, health = server.request("GET", "/healthz")
    assert status == 200 and health["ok"] is True


def test_a_deadline_fires_while_serve_runs_without_any_tick(tmp_path, serve):
    server = serve()
    sid = waiting_session(tmp_path, """
        name: short
        steps:
          - wait_for_event:
              approved: ["$(echo approved)"]
              timeout: ["$(echo timed out)"]
              within: 1s
    """)
    done = eventually(lambda: finished(sid), "the deadline to fire")
    assert done.status == "completed"
    assert [(e.name, e.source) for e in api.deliveries(sid)] == [("timeout", "serve")]  # not "tick" (issue 24)
    assert "deadline fired" in server.log


# --------------------------------------------------------------------------- authentication


@pytest.mark.sqlite_only("compares the SQLite file before and after")
def test_without_a_valid_token_requests_are_401_and_change_nothing(tmp_path, serve, roast_home):
    sid = waiting_session(tmp_path)
    server = serve(env=AUTH_ENV)
    before = store_dump(roast_home)
    for headers in ({}, {"authorization": "Bearer tok-wrong-wrong-wrong-wrong"}, {"authorization": "tok-aaaa"},
                    {"authorization": "Basic Y2k6dG9rLWFhYWFhYWFhYWFhYWFhYWFhYWFh"}):
        status, doc = server.post(sid, "approved", '{"approver": "eve"}', headers)
        assert (status, doc["error"]["code"]) == (401, "unauthorized"), headers
        assert server.request("GET", "/v1/sessions", headers=headers)[0] == 401
        assert server.request("GET", f"/v1/sessions/{sid}", headers=headers)[0] == 401
    assert store_dump(roast_home) == before
    assert server.request("GET", "/healthz")[0] == 200  # liveness needs no credential
    status, doc = server.post(sid, "approved", '{"approver": "ana"}', {"authorization": f"Bearer {OTHER_TOKEN}"})
    assert status == 200 and doc["outcome"] == "consumed"
    assert doc["delivery"]["actor"].startswith("token-")  # a token without a name is named by its hash
    sid2 = waiting_session(tmp_path, name="wf2")
    status, doc = server.post(sid2, "approved", '{"approver": "ana"}', BEARER)
    assert (status, doc["delivery"]["actor"]) == (200, "ci")
    assert server.request("GET", f"/v1/sessions/{sid2}", headers=BEARER)[0] == 200


@pytest.mark.sqlite_only("compares the SQLite file before and after")
def test_bad_or_stale_signatures_are_401_and_change_nothing(tmp_path, serve, roast_home):
    sid = waiting_session(tmp_path)
    server = serve(env=AUTH_ENV)
    body = b'{"approver": "eve-the-intruder"}'
    wrong = "whsec_" + base64.b64encode(b"x" * 32).decode()
    attempts = [
        webhooks.sign([wrong], "msg_1", body, now=time.time()),                      # another secret
        webhooks.sign([SECRET], "msg_2", body, now=time.time() - 3600),              # stale
        webhooks.sign([SECRET], "msg_3", body, now=time.time() + 3600),              # from the future
        {**webhooks.sign([SECRET], "msg_4", b'{"approver": "ana"}', now=time.time())},  # signed other bytes
        {**webhooks.sign([SECRET], "msg_5", body, now=time.time()), "webhook-id": "msg_6"},
        {**webhooks.sign([wrong], "msg_7", body, now=time.time()), **BEARER},       # a token does not save it
        {"x-hub-signature-256": webhooks.github_signature("not-the-secret-000000", body)},
        {"x-hub-signature-256": webhooks.github_signature(GITHUB_SECRET, body + b" ")},
    ]
    before = store_dump(roast_home)
    for headers in attempts:
        status, doc = server.post(sid, "approved", body, headers)
        assert (status, (doc.get("error") or {}).get("code")) == (401, "unauthorized"), headers
    assert store_dump(roast_home) == before
    assert "eve-the-intruder" not in server.log


def _hand_signed(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    """A Standard Webhooks sender written here from the spec, independent of roast.webhooks (what
    `curl -H "webhook-signature: v1,$(printf '%s.%s.%s' "$id" "$ts" "$body" | openssl dgst -sha256
    -hmac ... -binary | base64)"` sends)."""
    ts = str(int(time.time()))
    key = base64.b64decode(secret[len("whsec_"):])
    mac = base64.b64encode(hmac.new(key, b".".join([msg_id.encode(), ts.encode(), body]), hashlib.sha256).digest())
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{mac.decode()}"}


def test_standard_webhooks_signatures_are_accepted_and_a_repeated_webhook_id_is_a_duplicate(tmp_path, serve):
    server = serve(env=AUTH_ENV)
    first = waiting_session(tmp_path)
    body = b'{"approver": "ana"}'
    status, doc = server.post(first, "approved", body, webhooks.sign([SECRET], "msg_a", body, now=time.time()))
    assert (status, doc["outcome"], doc["event_id"]) == (200, "consumed", "msg_a"), doc
    assert doc["delivery"]["actor"] == "webhook:msg_a" and doc["delivery"]["source"] == "webhook"
    # the sender retries (a new timestamp, the same id and body): duplicate, nothing runs twice
    status, doc = server.post(first, "approved", body, _hand_signed(SECRET, "msg_a", body))
    assert (status, doc["outcome"]) == (200, "duplicate")
    other = b'{"approver": "bob"}'
    status, doc = server.post(first, "approved", other, _hand_signed(SECRET, "msg_a", other))
    assert (status, doc["error"]["code"]) == (422, "invalid")  # the same id with other data
    second = waiting_session(tmp_path, name="wf2")
    status, doc = server.post(second, "approved", body, _hand_signed(SECRET, "msg_b", body))
    assert (status, doc["outcome"], doc["event_id"]) == (200, "consumed", "msg_b")
    eventually(lambda: finished(first) and finished(second), "both branches")


def test_github_signatures_are_accepted_with_the_delivery_as_event_id(tmp_path, serve):
    server = serve(env=AUTH_ENV)
    sid = waiting_session(tmp_path)
    body = b'{"approver": "octocat"}'
    by_hand = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"x-hub-signature-256": by_hand, "x-github-delivery": "72d3162e-cc78", "x-github-event": "review"}
    status, doc = server.post(sid, "approved", body, headers)
    assert (status, doc["outcome"], doc["event_id"]) == (200, "consumed", "72d3162e-cc78"), doc
    assert doc["delivery"]["actor"] == "github"
    assert (by_hand == webhooks.github_signature(GITHUB_SECRET, body))  # roast's own signer agrees
    status, doc = server.post(sid, "approved", body, headers)
    assert (status, doc["outcome"]) == (200, "duplicate")
    eventually(lambda: finished(sid), "the branch")


@pytest.mark.sqlite_only("compares the SQLite file before and after")
def test_browser_style_cross_site_requests_are_refused(tmp_path, serve, roast_home):
    sid = waiting_session(tmp_path)
    server = serve()
    before = store_dump(roast_home)
    status, doc = server.post(sid, "approved", "{}", {"origin": "http://evil.example"})
    assert (status, doc["error"]["code"]) == (403, "cross_origin")
    status, doc = server.post(sid, "approved", "{}", {"content-type": "text/plain"})
    assert (status, doc["error"]["code"]) == (415, "unsupported_media_type")
    status, doc = server.post(sid, "approved", "{}", {"host": "rebound.evil.example:8765"})
    assert (status, doc["error"]["code"]) == (421, "misdirected")
    assert store_dump(roast_home) == before


@pytest.mark.sqlite_only("compares the SQLite file before and after")
def test_a_body_over_the_event_limit_is_413_and_changes_nothing(tmp_path, serve, roast_home):
    sid = waiting_session(tmp_path)
    server = serve(env={"ROAST_MAX_EVENT_BYTES": "64"})
    before = store_dump(roast_home)
    status, doc = server.post(sid, "approved", json.dumps({"approver": "a" * 100}))
    assert (status, doc["error"]["code"]) == (413, "too_large")
    assert store_dump(roast_home) == before


def test_logs_have_a_line_per_request_and_never_a_body_or_a_credential(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve("--log-format", "json", env=AUTH_ENV)
    server.post(sid, "approved", '{"approver": "very-secret-approver"}', BEARER)
    server.post(sid, "approved", '{"approver": "x"}', {"authorization": "Bearer tok-typo-typo-typo-typo"})
    eventually(lambda: finished(sid), "the branch")
    eventually(lambda: "session completed" in server.log, "the transition's log line")
    lines = [json.loads(line) for line in server.log.splitlines()]
    requests = [line for line in lines if line["msg"].startswith("POST ")]
    assert [r["msg"].split()[-1] for r in requests] == ["200", "401"]
    assert requests[0]["actor"] == "ci" and requests[0]["outcome"] == "consumed"
    for secret in ("very-secret-approver", "tok-aaaaaaaaaaaaaaaaaaaa", "tok-typo", SECRET):
        assert secret not in server.log


# --------------------------------------------------------------------------- refusing to start


def _serve_process(*args: str, env: dict[str, str] | None = None, code: str = SERVE) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ROAST_SERVE", "ROAST_WEBHOOK"))}
    full.update({"PYTHONPATH": str(ROOT)}, **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=full,
                          timeout=60, check=False)


def test_listening_on_all_interfaces_without_auth_exits_2():
    need("starlette", "uvicorn")
    proc = _serve_process("--host", "0.0.0.0", "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert "refusing to listen on 0.0.0.0 without authentication" in proc.stderr
    assert "ROAST_SERVE_TOKENS" in proc.stderr
    proc = _serve_process("--host", "0.0.0.0", "--port", "0", env={"ROAST_SERVE_TOKENS": "short"})
    assert proc.returncode == 2 and "shorter than 16" in proc.stderr


def test_without_the_serve_extra_it_says_what_to_install():
    blocked = "import sys; sys.modules['starlette'] = None; " + SERVE
    proc = _serve_process(code=blocked)
    assert proc.returncode == 2
    assert "pip install 'roast-workflows[serve]'" in proc.stderr


# --------------------------------------------------------------------------- the resident process


def test_a_server_killed_mid_branch_is_continued_by_the_next_one_at_attempt_2(tmp_path, serve):
    release_script(tmp_path)
    sid = waiting_session(tmp_path, SLOW)
    first = serve()
    assert first.post(sid, "go")[0] == 200
    eventually(lambda: (tmp_path / "started-1").exists(), "the step to start")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=30)
    eventually(lambda: api.session(sid).orphaned, "the session to be orphaned")
    (tmp_path / "release").touch()  # attempt 1's process (left by the kill) can end now
    second = serve()
    done = eventually(lambda: finished(sid), "the restarted server to continue the session")
    assert done.status == "completed"
    attempts = [(h.attempt, h.status) for h in api.history(sid) if h.name == "slow"]
    assert attempts[-1] == (2, "ok") and [a for a, _ in attempts] == [1, 2], attempts
    assert "recovered" in second.log


def test_sigterm_lets_a_running_branch_finish_and_stops_accepting(tmp_path, serve):
    release_script(tmp_path)
    sid = waiting_session(tmp_path, SLOW)
    server = serve()
    assert server.post(sid, "go")[0] == 200
    eventually(lambda: (tmp_path / "started-1").exists(), "the step to start")
    server.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            server.request("GET", "/healthz")
        except OSError:
            return True
        return False

    eventually(refused, "the server to stop accepting connections")
    assert server.proc.poll() is None  # still finishing the branch
    (tmp_path / "release").touch()
    assert server.proc.wait(timeout=60) == 0
    assert api.session(sid).status == "completed"
    assert [h.attempt for h in api.history(sid) if h.name == "slow"] == [1]


def test_a_branch_past_the_grace_is_stopped_recoverably_and_the_next_server_continues_it(tmp_path, serve):
    release_script(tmp_path)
    sid = waiting_session(tmp_path, SLOW)
    server = serve("--grace", "0.2")
    assert server.post(sid, "go")[0] == 200
    eventually(lambda: (tmp_path / "started-1").exists(), "the step to start")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    stopped = api.session(sid)
    assert stopped.status == "running" and stopped.orphaned
    assert "interrupted by SIGTERM" in (stopped.error or "")
    assert [h.status for h in api.history(sid) if h.name == "slow"] == ["interrupted"]
    (tmp_path / "release").touch()
    serve()
    assert eventually(lambda: finished(sid), "the next server to continue").status == "completed"
    assert [h.attempt for h in api.history(sid) if h.name == "slow"] == [1, 2]


def test_a_postgresql_restart_between_two_requests_is_not_seen_by_the_second(tmp_path, serve, pg_server, pg_url,
                                                                               monkeypatch):
    """Issue 25: roast serve keeps one connection per thread; one the server ended while it was idle
    (a restart, a failover) is replaced before use, so the next claim is 200, not 503."""
    from conftest import TEST_KEY

    monkeypatch.setenv("ROAST_STORE", pg_url)
    monkeypatch.setenv("ROAST_KEY", TEST_KEY)
    first, second = waiting_session(tmp_path), waiting_session(tmp_path)
    server = serve()
    assert server.post(first, "approved", '{"approver": "ana"}')[1]["outcome"] == "consumed"
    assert eventually(lambda: finished(first), "the first branch").status == "completed"
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with pg_server.admin(pg_url) as admin:  # what a restart does to every connection roast serve holds
        assert admin.execute(f"SELECT pg_terminate_backend(pid) {others}").fetchall()
        eventually(lambda: not admin.execute(f"SELECT pid {others}").fetchall(), "the restart to end them")
    status, doc = server.post(second, "approved", '{"approver": "bo"}')
    assert (status, doc.get("outcome")) == (200, "consumed"), doc
    assert eventually(lambda: finished(second), "the second branch").status == "completed"
    assert "lost the connection" not in server.log
