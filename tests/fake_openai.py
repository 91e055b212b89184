"""A small OpenAI-compatible HTTP server on loopback, for tests through the real `openai` SDK.

It is a real server (stdlib `ThreadingHTTPServer` in a thread, bound to port 0): the SDK, httpx and
the sockets all run for real; nothing is mocked. It answers `POST /v1/chat/completions` from a
**script** — the responses the test wants, in order — and records every request (path, headers,
JSON body) so the test can assert on what was actually sent. `GET /v1/models` lists the models the
script answers with.

    from fake_openai import fake_openai_fixture, reply, status  # noqa: F401  (the fixture `fake_openai`)

    def test_a_rate_limit_then_an_answer(fake_openai, monkeypatch):
        fake_openai.script(status(429, "slow down"), reply("hello"))
        monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)  # integration tests: point roast here
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        ...
        assert len(fake_openai.requests) == 2
        assert fake_openai.requests[1].headers["authorization"] == "Bearer sk-test"
        assert fake_openai.requests[1].body["messages"][-1] == {"role": "user", "content": "hi"}

Script entries: `reply(text)` (also JSON text), `tool_calls(tool_call(name, args), ...)`,
`status(code, message)` (an OpenAI-shaped error body), `slow(seconds, then)` (answers after a delay,
for client timeouts; closing the server releases it at once), or any callable taking the `Recorded`
request and returning one of these (e.g. an error body echoing the request's `Authorization`).
A request beyond the end of the script gets a 500 whose message says so.
"""
from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

import pytest


class Recorded(NamedTuple):
    """One request as the server received it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or the raw text when it is not JSON


class Response(NamedTuple):
    status: int
    body: Any  # a JSON-able value; a chat completion's "model": None is filled from the request
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


Entry = Response | Callable[[Recorded], Response]


def reply(content: str, *, model: str | None = None, prompt_tokens: int = 11, completion_tokens: int = 7,
          finish_reason: str = "stop") -> Response:
    """A chat completion whose assistant message is `content` (plain or JSON text)."""
    return _completion({"role": "assistant", "content": content}, model, prompt_tokens, completion_tokens,
                       finish_reason)


def tool_call(name: str, arguments: Any, *, id: str = "call_1") -> dict[str, Any]:
    """One tool call for `tool_calls`; `arguments` is JSON-encoded unless it is already a string."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id, "type": "function", "function": {"name": name, "arguments": text}}


def tool_calls(*calls: dict[str, Any], content: str | None = None, model: str | None = None) -> Response:
    """A chat completion asking for tool calls (finish_reason "tool_calls")."""
    message = {"role": "assistant", "content": content, "tool_calls": list(calls)}
    return _completion(message, model, 23, 9, "tool_calls")


def status(code: int, message: str, *, type: str = "invalid_request_error", error_code: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    """An HTTP error with the body OpenAI sends: {"error": {"message", "type", "code"}}."""
    body = {"error": {"message": message, "type": type, "param": None, "code": error_code}}
    return Response(code, body, tuple((headers or {}).items()))


def slow(seconds: float, then: Response | None = None) -> Response:
    """`then` (default: a reply), sent only after `seconds`; closing the server cuts the wait short."""
    return (then or reply("too late"))._replace(delay=seconds)


def _completion(message: dict[str, Any], model: str | None, prompt_tokens: int, completion_tokens: int,
                finish_reason: str) -> Response:
    return Response(200, {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


class FakeOpenAI:
    """The server: `url` (ends in /v1, like OPENAI_BASE_URL), `script(...)`, `requests`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Entry] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *entries: Entry) -> FakeOpenAI:
        """Append responses; each chat completion request takes the next one."""
        with self._lock:
            self._script.extend(entries)
        return self

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # releases any `slow` answer still waiting
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- called by the handler threads
    def _answer(self, request: Recorded) -> Response:
        with self._lock:
            self.requests.append(request)
            if request.method == "GET" and request.path.rstrip("/").endswith("/models"):
                return Response(200, {"object": "list", "data": [
                    {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "fake"}]})
            if not (request.method == "POST" and request.path.endswith("/chat/completions")):
                return status(404, f"fake_openai: no route for {request.method} {request.path}")
            if not self._script:
                return status(500, f"fake_openai: the script has no response left for chat request "
                                   f"#{len(self.chat_requests)}", type="server_error")
            entry = self._script.popleft()
        response = entry(request) if callable(entry) else entry
        body = response.body
        if isinstance(body, dict) and body.get("object") == "chat.completion" and body.get("model") is None:
            requested = request.body.get("model") if isinstance(request.body, dict) else None
            response = response._replace(body={**body, "model": requested or "gpt-4o-mini"})
        return response

    def _wait(self, seconds: float) -> None:
        self._closing.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        response = fake._answer(Recorded(self.command, self.path, headers, body))
        if response.delay:
            fake._wait(response.delay)
        data = json.dumps(response.body).encode()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); that is what the test wanted

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


@pytest.fixture(name="fake_openai")
def fake_openai_fixture() -> Iterator[FakeOpenAI]:
    """A started `FakeOpenAI`, closed after the test; point the SDK (or OPENAI_BASE_URL) at its `url`."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.close()
