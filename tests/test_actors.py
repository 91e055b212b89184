"""Who decided (issue 22): every delivery records an actor and whether it was verified, per channel —
a bearer token, a named webhook secret, a trusted proxy's identity header, a page link, the CLI —
and who started a session (`started_by`)."""
from __future__ import annotations

import base64
import json
import time
from urllib.parse import urlencode

import test_serve
from conftest import run_cli, write_workflow
from test_serve import eventually, finished, waiting_session

from roast import api, gates, webhooks

serve = test_serve.serve
TOKEN = "ana:" + "t" * 24
SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _consumed(sid: str) -> api.EventRecord:
    [d] = [d for d in api.deliveries(sid) if d.outcome == "consumed"]
    return d


def test_a_named_bearer_token_is_the_verified_actor_and_a_header_gives_the_reason(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve(env={"ROAST_SERVE_TOKENS": TOKEN})
    status, _, doc = server.request("POST", f"/v1/sessions/{sid}/events/approved", '{"approver": "ana"}',
                                    {"authorization": "Bearer " + "t" * 24, "roast-reason": "tests are green"})
    assert status == 200, doc
    eventually(lambda: finished(sid), "the branch")
    d = _consumed(sid)
    assert (d.actor, d.verified, d.reason, d.source) == ("ana", True, "tests are green", "http")
    _, _, shown = server.request("GET", f"/v1/sessions/{sid}", headers={"authorization": "Bearer " + "t" * 24})
    [event] = [e for e in shown["events"] if e["outcome"] == "consumed"]
    assert (event["actor"], event["verified"]) == ("ana", True)


def test_a_named_webhook_secret_is_the_verified_actor(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve(env={"ROAST_WEBHOOK_SECRET": f"ci-bot:{SECRET}"})
    body = b'{"approver": "ci"}'
    headers = webhooks.sign([SECRET], "msg_actor_1", body, now=time.time())
    status, _, doc = server.request("POST", f"/v1/sessions/{sid}/events/approved?reason=pipeline+passed",
                                    body, headers)
    assert status == 200, doc
    eventually(lambda: finished(sid), "the branch")
    d = _consumed(sid)
    assert (d.actor, d.verified, d.reason, d.source) == ("ci-bot", True, "pipeline passed", "webhook")


def test_a_trusted_proxys_identity_decides_on_the_page_and_is_ignored_from_elsewhere(tmp_path, serve):
    sid = waiting_session(tmp_path)
    proxy = {"ROAST_TRUSTED_PROXIES": "127.0.0.1", "ROAST_IDENTITY_HEADER": "X-Forwarded-Email"}
    server = serve(env=proxy)
    link = gates.page(sid, public_url=f"http://127.0.0.1:{server.port}")
    path = link[link.index("/g/"):]
    html = server.request("GET", path)[2]
    csrf = html.split('name=_csrf value="', 1)[1].split('"', 1)[0]
    post = urlencode({"_csrf": csrf, "_event": "approved", "_reason": "ok by me"})
    status, _, _ = server.request("POST", path, post, {**FORM, "x-forwarded-email": "ana@example.com"})
    assert status == 303
    eventually(lambda: finished(sid), "the branch")
    d = _consumed(sid)
    assert (d.actor, d.verified, d.reason) == ("ana@example.com", True, "ok by me")
    assert "ana@example.com" in server.request("GET", path)[2]  # the page says who decided
    # the same header from an address that is not the proxy is ignored: the API wants a credential
    other = waiting_session(tmp_path, name="wf2")
    untrusted = serve(env={"ROAST_TRUSTED_PROXIES": "10.9.9.9", "ROAST_IDENTITY_HEADER": "X-Forwarded-Email"})
    status, _, doc = untrusted.request("POST", f"/v1/sessions/{other}/events/approved", "{}",
                                       {"x-forwarded-email": "mallory@example.com"})
    assert status == 401, doc
    assert api.session(other).status == "waiting"


def test_the_cli_records_its_actor_unverified_and_who_started_the_session(tmp_path):
    wf = write_workflow(tmp_path, """
        name: deploy
        steps:
          - wait_for_event:
              approved: ["$(echo ok)"]
    """)
    started = run_cli("execute", str(wf), "--actor", "carol", "--json")
    assert started.returncode == 0, started.stderr
    sid = json.loads(started.stdout)[0]["session_id"] if started.stdout.lstrip().startswith("[") else \
        json.loads(started.stdout)["session_id"]
    done = run_cli("resume", str(wf), "--event", "approved", "--session-id", sid, "--actor", "bob")
    assert done.returncode == 0, done.stderr
    doc = json.loads(run_cli("session", sid, "--json").stdout)
    assert doc["started_by"] == "carol"
    [event] = [e for e in doc["events"] if e["outcome"] == "consumed"]
    assert (event["actor"], event["verified"]) == ("bob", False)
    other = json.loads(run_cli("execute", str(wf), "--json").stdout)
    other_id = other[0]["session_id"] if isinstance(other, list) else other["session_id"]
    assert api.session(other_id).started_by  # the OS user by default
    assert api.session(other_id).started_by != "carol"
