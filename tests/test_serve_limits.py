"""Issue 21: `roast serve` at its edges — what an unauthenticated, broken or hostile request costs.

Every test talks to a real `roast serve` process on a free loopback port (or starts one and sees
it refuse to start). A request is judged on its head before its body is read; broken input is a
400 (or 401) with one log line, never a traceback and a 500; a refused delivery keeps at most an
excerpt of its data; a text log line cannot be forged or drive a terminal.
"""
from __future__ import annotations

# ruff: noqa: F811 - `serve` is test_serve's fixture, imported to be used by name

import json
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from conftest import ROOT
from test_serve import AUTH_ENV, BEARER, SECRET, SERVE, _serve_process, eventually, need, serve, waiting_session  # noqa: F401

from roast import api


def _head_only(port: int, path: str, headers: dict[str, str], length: int, sent: bytes = b"",
               close: bool = False) -> str | None:
    """Send a request's head promising `length` bytes of body, then only `sent` of them; return the
    status line the server answers with (None when `close`: the client goes away instead)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
                f"Content-Length: {length}", *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + sent)
        if close:
            return None
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)  # the answer comes with no body sent: a hang fails at the timeout
            if not chunk:
                break
            answer += chunk
        return answer.split(b"\r\n", 1)[0].decode("latin-1")
    finally:
        sock.close()


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve(env=AUTH_ENV)
    path = f"/v1/sessions/{sid}/events/approved"
    now = str(int(time.time()))
    for headers in ({}, {"authorization": "Bearer tok-wrong-wrong-wrong-wrong"},
                    {"webhook-signature": "v1,AAAA"},                                      # no id, no timestamp
                    {"webhook-signature": "v1,AAAA", "webhook-id": "m1", "webhook-timestamp": "1000"},  # stale
                    {"x-hub-signature-256": "sha256=00"}):                                 # no X-GitHub-Delivery
        status = _head_only(server.port, path, headers, length=1_000_000)
        assert status is not None and " 401 " in status, (headers, status)
    assert api.session(sid).status == "waiting"
    # a signature whose head is fine is read and checked in full: a wrong one is still a 401
    status, doc = server.post(sid, "approved", b'{"approver": "eve"}',
                              {"webhook-signature": "v1,AAAA", "webhook-id": "m2", "webhook-timestamp": now})
    assert (status, doc["error"]["code"]) == (401, "unauthorized")


def test_a_link_post_to_a_bad_link_is_refused_before_its_body_is_read(tmp_path, serve):
    server = serve()
    status = _head_only(server.port, "/a/v1.not-a-link.at-all", {"content-type": "x"}, length=60_000)
    assert status is not None and " 403 " in status, status


def test_an_aborted_upload_is_a_400_with_one_log_line_and_no_traceback(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve()
    _head_only(server.port, f"/v1/sessions/{sid}/events/approved", {}, length=10_000, sent=b'{"approver": ',
               close=True)
    line = eventually(lambda: [ln for ln in server.log.splitlines() if f"/v1/sessions/{sid}/events" in ln],
                      "the request's log line")
    assert len(line) == 1 and " 400 " in line[0] and "code=bad_request" in line[0], server.log
    assert "Traceback" not in server.log and "Exception" not in server.log
    assert api.session(sid).status == "waiting"


def test_numbers_timestamps_and_forms_out_of_range_are_400_never_500(tmp_path, serve):
    sid = waiting_session(tmp_path, """
        name: gate
        steps:
          - wait_for_event:
              approved: ["$(echo yes)"]
    """)
    server = serve()
    for query in ("limit=99999999999999999999", "limit=%C2%B2", "offset=99999999999999999999", "offset=%C2%B9",
                  "limit=-1"):
        status, _, doc = server.request("GET", f"/v1/sessions?{query}")
        assert (status, doc["error"]["code"]) == (400, "bad_request"), (query, doc)
    status, headers, doc = server.request("GET", "/v1/sessions?limit=1&offset=0")
    assert status == 200 and len(doc) == 1
    # a latin-1 '²' is a digit to str.isdigit() and not to int()
    signed = {"webhook-id": "m1", "webhook-timestamp": "\xb2", "webhook-signature": "v1,AAAA"}
    status, doc = server.post(sid, "approved", b"{}", signed)
    assert status == 401, doc
    link = api.links(sid, public_url=f"http://127.0.0.1:{server.port}")["approved"]
    form = "&".join(f"f{n}=x" for n in range(250))
    status, _, page = server.request("POST", urlsplit(link).path, form,
                                     {"content-type": "application/x-www-form-urlencoded"})
    assert status == 400 and "not valid" in page
    assert api.session(sid).status == "waiting"
    assert "Traceback" not in server.log and " 500" not in server.log


def test_refused_deliveries_keep_at_most_an_excerpt_of_their_data(tmp_path, serve):
    sid = waiting_session(tmp_path)
    server = serve()
    big = json.dumps({"approver": "a" * 600_000})
    for n in range(3):
        status, doc = server.post(sid, "no_such_event", big)
        assert (status, doc["error"]["code"]) == (404, "unknown_event"), doc
    small = '{"approver": "bob"}'
    assert server.post(sid, "no_such_event", small)[0] == 404
    refused = [e for e in api.deliveries(sid) if e.outcome == "unknown_event"]
    assert len(refused) == 4
    for record in refused[:3]:
        assert len(json.dumps(record.data)) < 1024, len(json.dumps(record.data))
        assert record.data["bytes"] >= 600_000 and record.data["excerpt"].startswith('{"approver":"aaa')
    assert refused[3].data == {"approver": "bob"}  # a small one is kept as it came
    status, doc = server.post(sid, "approved", big)  # a taken event keeps all of its data
    assert (status, doc["outcome"]) == (200, "consumed")
    taken = [e for e in api.deliveries(sid) if e.outcome == "consumed"]
    assert [e.data for e in taken] == [json.loads(big)]


def test_a_request_path_cannot_forge_a_text_log_line_or_drive_the_terminal(tmp_path, serve):
    server = serve()
    forged = "roast serve: 2026-12-06T15:00:00Z POST /v1/sessions/abc/events/approved 200 outcome=consumed"
    path = "/x%0A" + forged.replace(" ", "%20") + "%1B%5B2J%E2%80%AE"
    assert server.request("POST", path, b"{}")[0] == 404
    eventually(lambda: "/x" in server.log, "the request's log line")
    lines = server.log.splitlines()
    assert not any(line.startswith(forged) for line in lines), server.log
    assert "\x1b" not in server.log and "\u202e" not in server.log
    assert [line for line in lines if "/x\\nroast serve:" in line and "\\x1b[2J\\u202e" in line]


@pytest.mark.parametrize("option", ["--grace", "--webhook-tolerance"])
def test_infinite_grace_or_webhook_tolerance_is_refused_like_nan(option):
    need("starlette", "uvicorn")
    for value in ("inf", "nan", "-inf"):
        proc = _serve_process(f"{option}={value}", "--port", "0")
        assert proc.returncode == 2, (value, proc.stderr)
        assert option in proc.stderr and "finite" in proc.stderr


def test_localhost_is_judged_by_the_address_it_resolves_to(tmp_path):
    """/etc/hosts says `0.0.0.0 localhost` (in a private mount namespace): that is every interface."""
    need("starlette", "uvicorn")
    hosts = tmp_path / "hosts"
    hosts.write_text("0.0.0.0 localhost\n")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("needs `unshare -m` and mount (root) to give localhost another address")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROAST_SERVE", "ROAST_WEBHOOK", "ROAST_GITHUB"))}
    env["PYTHONPATH"] = str(ROOT)
    command = f'mount --bind {hosts} /etc/hosts && exec "$0" -c "$1" --host localhost --port 0'
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", command, sys.executable, SERVE], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"roast serve started on localhost = 0.0.0.0 without authentication:\n{err}")
    assert proc.returncode == 2, err
    assert "refusing to listen on localhost without authentication" in err
