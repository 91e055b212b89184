"""The runner: the `send()` loop that services what the step tree yields.

It fast-forwards by handing the root node the saved cursor, performs requests through the
`perform` function it is given (subprocesses, model calls, Python steps live in `effects`),
runs a parallel group's requests concurrently, answers waits from the pending event or the
clock it is given (`now`), records step history and checkpoints through a `Journal`, and stops
at the first `Suspend`. It touches no store and no terminal itself.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from roast.errors import RoastError, StepFailed
from roast.expressions import iso
from roast.steps import Checkpoint, Delivery, Done, Event, Gather, Receive, Shell, Steps, Suspend


@dataclass(frozen=True, slots=True)
class Completed:
    """The tree ran to its end."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """The tree stopped at one or more waits; `suspend.cursor` is where to come back to."""

    suspend: Suspend


Outcome = Completed | Waiting


class Journal(Protocol):
    """Where the runner reports progress: step history rows and checkpoints (api.py saves them)."""

    def started(self, request: Any) -> int: ...
    def finished(self, request: Any, attempt: int, status: str, output: Any) -> None: ...
    def checkpoint(self, cursor: Any) -> None: ...


class Observer:
    """Progress callbacks for people (the CLI draws a status line from them). Default: silent."""

    def started(self, path: str, name: str | None, attempt: int) -> None:
        pass

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class NullJournal:
    """Keeps nothing: for driving a tree in memory (tests, benchmarks)."""

    def started(self, request: Any) -> int:
        return 1

    def finished(self, request: Any, attempt: int, status: str, output: Any) -> None:
        pass

    def checkpoint(self, cursor: Any) -> None:
        pass


class Runner:
    """Drive one generator chain until it completes or suspends."""

    def __init__(self, perform: Callable[[Any], Any], *, now: Callable[[], float] = time.time,
                 journal: Journal | None = None, event: Event | None = None,
                 max_workers: int = 8) -> None:
        self.perform = perform
        self.now = now
        self.journal: Journal = journal or NullJournal()
        self.pending = event
        self.max_workers = max_workers

    def drive(self, steps: Steps) -> Outcome:
        reply: Any = None
        failure: BaseException | None = None
        try:
            while True:
                try:
                    request = steps.throw(failure) if failure is not None else steps.send(reply)
                except StopIteration:
                    return Completed()
                reply, failure = None, None
                if isinstance(request, Suspend):
                    return Waiting(request)  # api.py saves the session, then reports
                try:
                    reply = self.answer(request)
                except RoastError as err:  # the node decides (exit_on_error)
                    failure = err
        finally:
            steps.close()

    def answer(self, request: Any) -> Any:
        if isinstance(request, Checkpoint):
            self.journal.checkpoint(request.cursor)
            return None
        if isinstance(request, Receive):
            return self.receive(request)
        if isinstance(request, Gather):
            return self.gather(request)
        return self.step(request)

    def receive(self, request: Receive) -> Delivery:
        """Give a wait its event: only a wait that was already waiting (resumed) gets one."""
        if not request.resumed:
            deadline = self.now() + request.timeout if request.timeout else None
            return Delivery(deadline, None)
        if self.pending is not None and self.pending.name in request.events:
            event, self.pending = self.pending, None
            return Delivery(request.deadline, event)
        if request.deadline is not None and self.now() >= request.deadline:
            return Delivery(request.deadline, Event("timeout", {"deadline": iso(request.deadline)},
                                                    iso(self.now()) or ""))
        return Delivery(request.deadline, None)

    def gather(self, request: Gather) -> tuple[tuple[Any, BaseException | None], ...]:
        def one(item: Any) -> tuple[Any, BaseException | None]:
            try:
                return self.answer(item), None
            except RoastError as err:
                return None, err

        if len(request.requests) == 1:
            return (one(request.requests[0]),)
        from concurrent.futures import ThreadPoolExecutor  # parallel groups only

        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(request.requests))) as pool:
            return tuple(pool.map(one, request.requests))

    def step(self, request: Any) -> Any:
        if not getattr(request, "step", False):
            return self.perform(request)
        attempt = self.journal.started(request)
        if isinstance(request, Shell):
            # reliability G3: a re-run step can tell (attempt ≥ 2) and has a stable key.
            request = dataclasses.replace(request, env={**request.env, "ROAST_STEP_ATTEMPT": str(attempt),
                                                        "ROAST_STEP_PATH": request.path})
        try:
            value = self.perform(request)
        except RoastError as err:
            self.journal.finished(request, attempt, "failed", str(err))
            raise
        except Exception as err:  # a bug in a step's effect must still end the step's record
            self.journal.finished(request, attempt, "failed", repr(err))
            raise StepFailed(f"{type(err).__name__}: {err}", where=request.path) from err
        status = "failed" if isinstance(value, Done) and value.status != 0 else "ok"
        self.journal.finished(request, attempt, status, value.stdout.strip() if isinstance(value, Done)
                              else value)
        return value
