"""A webhook receiver on loopback for the tests: records every POST (headers, raw body) and answers
with the statuses it is given, then 200."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar


class Receiver(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []  # statuses to answer with, in order; then 200
    seen: ClassVar[list[tuple[dict[str, str], bytes]]] = []  # (lower-cased headers, raw body) per POST

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def receiving(path: str = "/hook") -> Iterator[tuple[str, type[Receiver]]]:
    """`(url, handler)` of a receiver of its own (its `answers` and `seen` lists are fresh)."""
    handler = type("Receiver", (Receiver,), {"answers": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", handler
    finally:
        server.shutdown()
        server.server_close()
