"""`roast serve`'s claims on a store with one writer (SQLite): one thread, in turn, in batches.

Each claim an HTTP request makes waits here for the claim thread. The thread takes every claim
waiting when it is free (at most `MOST`) and runs the deliveries among them together, in one write
transaction and one commit (`api.together`, issue 25), then any other claim alone; each request is
answered after the commit that made its own claim durable. With one claim waiting this is a claim
on its own thread, as before; with sixteen clients each waiting for its answer, a batch carries
most of them: 940 claims/s instead of 567 on the bench machine (bench/serve_bench.py).

A request that is cancelled while it waits (its client went away, the server stops) still has its
claim made and its answer decided: the wait is shielded, as `anyio.to_thread.run_sync` shields a
thread's work, so a consumed event's branch is always handed to the worker.
"""
from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    import asyncio
    from typing import Any

MOST = 32  # claims in one batch: one write transaction holds SQLite's write lock for all of them


class _Job:
    __slots__ = ("call", "together", "future", "loop")

    def __init__(self, call: Callable[[], Any], together: bool, future: asyncio.Future[Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.call, self.together, self.future, self.loop = call, together, future, loop


def _settle(answers: list[tuple[_Job, bool, Any]]) -> None:
    """On the event loop: each waiting request gets its claim's value or exception."""
    for job, ok, value in answers:
        if not job.future.done():
            job.future.set_result(value) if ok else job.future.set_exception(value)


class Claims:
    """The claim thread of one `roast serve` (see the module docstring); `api` is the server's
    `Bound` api (its `together` runs with the server's store)."""

    def __init__(self, api: Any, most: int = MOST) -> None:
        self.api, self.most = api, most
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    async def __call__(self, fn: Callable[..., Any], *args: Any, together: bool = False, **kwargs: Any) -> Any:
        """Claim with `fn(*args, **kwargs)` on the claim thread; `together`: a delivery that may share
        a transaction with the others waiting (`resume(..., run=False)`)."""
        import asyncio

        import anyio

        self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.jobs.put(_Job(functools.partial(fn, *args, **kwargs), together, future, loop))
        with anyio.CancelScope(shield=True):
            return await future

    def _start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="roast-serve-claims", daemon=True)
                self.thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the claim thread once the claims given to it are made."""
        with self.lock:
            thread, self.thread = self.thread, None
        if thread is not None:
            self.jobs.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.most:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                batch.append(job)
            joined = [job for job in batch if job.together]
            self._answer(joined, lambda: self.api.together([job.call for job in joined]))
            for job in batch:
                if not job.together:  # alone: `together` of one call makes it in its own transaction
                    self._answer([job], functools.partial(self.api.together, [job.call]))

    @staticmethod
    def _answer(jobs: list[_Job], run: Callable[[], list[tuple[bool, Any]]]) -> None:
        if not jobs:
            return
        try:
            answers = [(job, ok, value) for job, (ok, value) in zip(jobs, run())]
        except BaseException as err:  # noqa: BLE001 - whatever stopped the batch is every request's answer
            answers = [(job, False, err) for job in jobs]
        by_loop: dict[Any, list[tuple[_Job, bool, Any]]] = {}
        for answer in answers:
            by_loop.setdefault(answer[0].loop, []).append(answer)
        for loop, theirs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, theirs)
            except RuntimeError:  # that loop is closed: nobody waits for these answers any more
                pass
