"""A webhook receiver on loopback for the tests: records every POST (headers, raw body) and answers
with the statuses it is given, then 200. A receiver can also misbehave, as an adversary's would:
`drip` (seconds) sends its answer one byte at a time, forever, until the receiver is closed;
`redirect` (a URL) answers 302 to it."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar


class Receiver(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []  # statuses to answer with, in order; then 200
    seen: ClassVar[list[tuple[dict[str, str], bytes]]] = []  # (lower-cased headers, raw body) per POST
    drip: ClassVar[float | None] = None  # seconds between the bytes of a never-ending answer
    redirect: ClassVar[str | None] = None  # answer 302 with this Location
    closing: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        if type(self).drip is not None:
            self._drip(type(self).drip)
            return
        if type(self).redirect is not None:
            self.send_response(302)
            self.send_header("location", type(self).redirect)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # what a followed 302 would send
        type(self).seen.append(({k.lower(): v for k, v in self.headers.items()}, b"GET"))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def _drip(self, every: float) -> None:
        answer = b"HTTP/1.1 200 OK\r\n" + b"x-drip: " + b"." * 100_000
        for byte in answer:  # bounded: 100 kB, and it stops as soon as the receiver closes
            if type(self).closing.wait(every):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return  # the client gave up: that is what the test wanted

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def receiving(path: str = "/hook", *, drip: float | None = None,
              redirect: str | None = None) -> Iterator[tuple[str, type[Receiver]]]:
    """`(url, handler)` of a receiver of its own (its `answers` and `seen` lists are fresh)."""
    handler = type("Receiver", (Receiver,), {"answers": [], "seen": [], "drip": drip, "redirect": redirect,
                                             "closing": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", handler
    finally:
        handler.closing.set()
        server.shutdown()
        server.server_close()
