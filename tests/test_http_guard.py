"""`roast serve` under slowloris and friends (issue 21, adversary P4), against a real server process on a
free loopback port: trickling request heads and bodies are cut at their deadlines however slowly their
bytes come, `/healthz` and ordinary requests keep answering, and one address gets only so many
connections. Deadlines are shortened through the environment; waits are bounded polls, never sleeps
asserted on."""
from __future__ import annotations

import http.client
import importlib.util
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_serve import Server, eventually

SERVE = "import sys; from roast import serve; sys.exit(serve.run_from_argv(sys.argv[1:]))"

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn")),
                                reason="needs starlette and uvicorn (pip install -e '.[test,serve]')")


_eventually = eventually


class _Serve(Server):
    """test_serve's `Server`, plus the two things these tests need: a bare GET and a raw socket."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        super().__init__(cwd, [], env)
        self.wait_ready()

    def get(self, path: str) -> tuple[int, Any]:
        status, _headers, doc = self.request("GET", path)
        return status, doc

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.log_file.close()


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., _Serve]]:
    monkeypatch.chdir(tmp_path)
    started: list[_Serve] = []

    def start(**env: str) -> _Serve:
        started.append(_Serve(tmp_path, env))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def _closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing `sock` (b"" for nothing), or None while it is still open."""
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return None
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except OSError:
        pass
    return got


HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def test_trickling_request_heads_are_cut_at_the_header_deadline_and_healthz_keeps_answering(serve):
    server = serve(ROAST_SERVE_HEADER_TIMEOUT="1", ROAST_SERVE_MAX_CONNECTIONS_PER_IP="100")
    socks = [server.connect() for _ in range(60)]
    for sock in socks:
        sock.sendall(HEAD)
    answers: dict[int, bytes] = {}
    for _ in range(600):  # bounded: a byte every 0.05 s from every connection, far under any idle timeout
        for i, sock in enumerate(socks):
            if i in answers:
                continue
            got = _closed_by_server(sock)
            if got is not None:
                answers[i] = got
                continue
            try:
                sock.sendall(b"X")
            except OSError:
                answers[i] = b""
        if len(answers) == len(socks):
            break
        if len(answers) == 0:
            assert server.get("/healthz")[0] == 200  # while all 60 trickle
        time.sleep(0.05)
    assert len(answers) == len(socks), f"{len(socks) - len(answers)} trickling connections were never closed"
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers.values() if a), answers
    status, doc = server.get("/healthz")
    assert status == 200, doc
    assert server.get("/v1/sessions")[0] == 200
    for sock in socks:
        sock.close()
    assert "Traceback" not in server.log


def test_a_trickling_body_is_cut_at_the_body_deadline_without_a_traceback(serve):
    server = serve(ROAST_SERVE_BODY_TIMEOUT="1")
    sock = server.connect()
    sock.sendall(b"POST /v1/sessions/abc/events/go HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    got = None
    for _ in range(600):  # bounded: a byte every 0.05 s
        got = _closed_by_server(sock)
        if got is not None:
            break
        try:
            sock.sendall(b" ")
        except OSError:
            got = b""
            break
        time.sleep(0.05)
    sock.close()
    assert got is not None, "the trickling body was never cut off"
    assert got.startswith(b"HTTP/1.1 408 ") and b"nothing was delivered" in got, got
    assert server.get("/healthz")[0] == 200
    assert "Traceback" not in server.log and "Exception in ASGI" not in server.log, server.log


def test_one_address_gets_at_most_the_per_ip_cap_of_open_connections(serve):
    server = serve(ROAST_SERVE_MAX_CONNECTIONS_PER_IP="5", ROAST_SERVE_HEADER_TIMEOUT="60")
    held = []
    for _ in range(5):  # each answered once (so the server has it), then left with half a head
        sock = server.connect()
        sock.sendall(HEAD + b"\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(HEAD)
        held.append(sock)
    extra = server.connect()
    extra.sendall(HEAD + b"\r\n")
    refused = b""
    while chunk := extra.recv(65536):
        refused += chunk
    extra.close()
    assert refused.startswith(b"HTTP/1.1 429 ") and b"too_many_connections" in refused, refused
    held.pop().close()
    _eventually(lambda: _status_of_a_new_connection(server) == 200, "a freed slot to be usable again")
    for sock in held:
        sock.close()


def _status_of_a_new_connection(server: _Serve) -> int:
    try:
        return server.get("/healthz")[0]
    except (OSError, http.client.HTTPException):
        return 0


@pytest.mark.parametrize("variable, value", [("ROAST_SERVE_HEADER_TIMEOUT", "0"),
                                             ("ROAST_SERVE_BODY_TIMEOUT", "soon"),
                                             ("ROAST_SERVE_MAX_CONNECTIONS_PER_IP", "-3")])
def test_a_bad_limit_stops_serve_before_it_listens_naming_the_variable(tmp_path, variable, value):
    env = {**os.environ, variable: value, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SERVE, "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and variable in proc.stderr and "listening" not in proc.stderr, proc.stderr
