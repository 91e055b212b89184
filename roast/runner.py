"""The runner: the one loop that drives the step tree's generators and services what they yield.

It fast-forwards by handing the root node the saved cursor, answers waits from the pending event
or the clock it is given (`now`), answers pauses (`Timer`: a retry's backoff, a `sleep:`) and
sleeps through the near ones itself, and performs requests through the `perform` function it is given
(subprocesses, model calls and Python steps live in `effects`). A parallel group hands its branch
generators over in one `Fork`; the runner drives them side by side (STYLE: only the runner
schedules): while a group runs, requests are performed on worker threads, which do nothing but
`perform`. Every journal call — step history, checkpoints, process groups — and so every store
write happens on the loop thread, the one that called `drive` (curio's rule: only the kernel
drives tasks). It stops at the first `Suspend` of the whole tree. It touches no store and no
terminal itself.

Errors from `perform` are thrown into the generator that asked (the node decides: exit_on_error);
errors from the journal (the store is unavailable) are not the workflow's: they end the drive.
"""
from __future__ import annotations

import _thread
import time
from collections import deque
from collections.abc import Callable
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.errors import RoastError, StepFailed
from roast.expressions import iso
from roast.record import Record
from roast.requests import (TIMEOUT, Alarm, Answer, Ask, AskModel, CallPython, Checkpoint, Delivery, Done, Ended, Event,
                            Fork, PostWebhook, Receive, Shell, Suspend, Timer, timeout_event)
from roast.steps import DONE

if TYPE_CHECKING:
    from typing import Any, NoReturn, Protocol

    from roast.requests import Cursor, Request
    from roast.steps import Steps

    class Journal(Protocol):
        """Where the runner reports progress (api.py saves it); called on the loop thread only."""

        def started(self, request: Any) -> int: ...
        def finished(self, request: Any, attempt: int, status: str, output: Any, error: str | None = None,
                 usage: tuple[int, int] | None = None) -> None: ...
        def checkpoint(self, cursor: Cursor) -> None: ...
        def flush(self) -> None: ...
        def delivered(self, event: Event) -> None: ...
        def spawned(self, path: str, attempt: int, pgid: int) -> None: ...
        def pausing(self, path: str, seconds: float) -> None: ...


MAX_TOOL_TEXT = 4096  # characters of a tool call's arguments, and of its result, in the history


class _ToolRow(Record):
    """A tool call the model made, as the history records it (no request: the model's effect ran it)."""

    __slots__ = ("path", "name")


class Completed(Record):
    """The tree ran to its end."""

    __slots__ = ()


class Waiting(Record):
    """The tree stopped at one or more waits; `suspend.cursor` is where to come back to."""

    __slots__ = ("suspend",)


class Observer:
    """Progress callbacks for people (the CLI draws a status line from them). Default: silent."""

    def started(self, path: str, name: str | None, attempt: int) -> None:
        pass

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def pause(self) -> None:
        """Stop any live display (a terminal prompt is about to ask something)."""

    def unpause(self) -> None:
        pass


class NullJournal:
    """Keeps nothing: for driving a tree in memory (tests, benchmarks)."""

    def started(self, request: Any) -> int:
        return 1

    def finished(self, request: Any, attempt: int, status: str, output: Any, error: str | None = None,
                 usage: tuple[int, int] | None = None) -> None:
        pass

    def checkpoint(self, cursor: Cursor) -> None:
        pass

    def flush(self) -> None:
        pass

    def delivered(self, event: Event) -> None:
        pass

    def spawned(self, path: str, attempt: int, pgid: int) -> None:
        pass

    def pausing(self, path: str, seconds: float) -> None:
        pass


class _Task:
    """One generator the runner drives: the root, or a branch of a parallel group."""

    __slots__ = ("gen", "frame", "index", "reply", "failure")

    def __init__(self, gen: Steps, frame: _Frame | None, index: int) -> None:
        self.gen, self.frame, self.index = gen, frame, index
        self.reply: Any = None
        self.failure: BaseException | None = None

    def full(self, cursor: Cursor) -> Cursor:
        """This task's cursor as the cursor of the whole tree."""
        frame = self.frame
        if frame is None:
            return cursor
        frame.cursors[self.index] = cursor
        return frame.task.full(frame.wrap(tuple(frame.cursors)))


class _Frame:
    """A running parallel group: its branches' cursors and how each ended."""

    __slots__ = ("task", "wrap", "cursors", "ended", "live")

    def __init__(self, task: _Task, fork: Fork) -> None:
        self.task, self.wrap = task, fork.wrap
        self.cursors: list[Cursor] = list(fork.cursors)
        self.ended: list[Ended | None] = [None] * len(fork.cursors)
        self.live = 0


class Runner:
    """Drive one generator chain until it completes or suspends."""

    def __init__(self, perform: Callable[[Any], Any], *, now: Callable[[], float] = time.time,
                 journal: Journal | None = None, event: Event | None = None, max_workers: int = 8,
                 cancel: Callable[[], None] | None = None, hold_limit: float = 30.0) -> None:
        self.perform = perform
        self.now = now
        self.journal: Journal = journal or NullJournal()
        self.pending = event
        self.max_workers = max_workers
        self.cancel = cancel  # stops whatever `perform` has running (process groups) when the drive is aborted
        self.hold_limit = hold_limit  # a pause this near is slept in process; a longer one suspends (issue 16)
        self._ready: deque[_Task] = deque()
        self._timers: list[tuple[float, int, _Task, float]] = []  # (monotonic wake-up, seq, task, deadline)
        self._inflight: dict[str, int] = {}  # step path -> attempt, for requests being performed
        self._busy = 0  # requests handed to worker threads and not yet answered
        self._tasks: list[_Task] = []
        self._queue: Any = None
        self._pool: Any = None
        self._loop_thread = 0
        self._outcome: Completed | Waiting | None = None
        self._seq = 0
        self._claimed_timeout: Event | None = None  # the claimed `timeout`, once a wait took it

    # -- the loop --------------------------------------------------------------------------------

    def drive(self, steps: Steps) -> Completed | Waiting:
        from _queue import SimpleQueue  # queue.SimpleQueue itself, without importing `queue` (threading)

        self._queue = SimpleQueue()
        self._loop_thread = _thread.get_ident()
        root = _Task(steps, None, 0)
        self._tasks = [root]
        self._ready = deque([root])
        self._outcome = None
        try:
            while True:
                while self._ready:
                    self._advance(self._ready.popleft())
                    if self._outcome is not None:
                        return self._outcome
                self._receive_one()
        except BaseException:
            self._abort()
            raise
        finally:
            for task in self._tasks:
                task.gen.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None

    def _advance(self, task: _Task) -> None:
        """Run one task until it asks for something that takes time, forks, ends or suspends."""
        while True:
            try:
                if task.failure is not None:
                    request = task.gen.throw(task.failure)
                else:
                    request = task.gen.send(task.reply)
            except StopIteration:
                self._end(task, Ended("done", DONE))
                return
            except RoastError as err:
                if task.frame is None:
                    raise
                self._end(task, Ended("failed", DONE, err))
                return
            task.reply = task.failure = None
            if not self._answer(task, request):
                return

    def _answer(self, task: _Task, request: Request) -> bool:
        """Service one request: True when the task has its answer and goes on at once."""
        match request:  # the closed union of `requests`: mypy names an arm left out (assert_never)
            case Checkpoint():
                self.journal.checkpoint(task.full(request.cursor))
                return True
            case Receive():
                task.reply = self._answer_wait(request)
                return True
            case Timer():
                task.reply = self._timer(task, request)
                return task.reply is not None  # None: sleeping, woken by `_wake`
            case Suspend():
                self._end(task, Ended("waiting", request.cursor, None, request.waits))
                return False
            case Fork():
                self._fork(task, request)
                return False
            case Shell() | AskModel() | CallPython() | PostWebhook() | Ask():
                self._start(task, request)
                return False
            case _:
                _unhandled(request)

    def _end(self, task: _Task, ended: Ended) -> None:
        frame = task.frame
        if frame is None:
            self._outcome = (Completed() if ended.how == "done"
                             else Waiting(Suspend(ended.cursor, ended.waits)))
            return
        frame.ended[task.index] = ended
        frame.live -= 1
        if ended.how == "done":
            self.journal.checkpoint(task.full(DONE))  # a finished branch never runs again
        elif ended.how == "waiting":
            self.journal.checkpoint(task.full(ended.cursor))  # its wait (and deadline) as it is now
        # a failed branch keeps the cursor of its last checkpoint: `roast retry` starts it there
        if frame.live == 0:
            frame.task.reply = tuple(frame.ended)
            self._ready.append(frame.task)

    def _fork(self, task: _Task, fork: Fork) -> None:
        frame = _Frame(task, fork)
        for index, gen in enumerate(fork.branches):
            if gen is None:
                frame.ended[index] = Ended("done", DONE)
                continue
            child = _Task(gen, frame, index)
            frame.live += 1
            self._tasks.append(child)
            self._ready.append(child)  # in branch order: an event goes to the first waiting branch (SPEC §6)
        if frame.live == 0:
            task.reply = tuple(frame.ended)
            self._ready.append(task)

    # -- waits -----------------------------------------------------------------------------------

    def _answer_wait(self, request: Receive) -> Delivery:
        """Give a wait its event: only a wait that was already waiting (resumed) gets one."""
        if not request.resumed:
            deadline = self.now() + request.timeout if request.timeout else None
            return Delivery(deadline, None)
        if self.pending is not None and self.pending.name in request.events:
            event, self.pending = self.pending, None
            self.journal.delivered(event)
            return Delivery(request.deadline, event)
        if request.deadline is not None and self.now() >= request.deadline:
            return Delivery(request.deadline, self._timeout(request.deadline, request.events))
        return Delivery(request.deadline, None)

    def _timeout(self, deadline: float, events: tuple[str, ...]) -> Event:
        """The `timeout` event of an overdue wait: the one its claim saved (handed in as the pending
        event: `refused_event` and all, issue 20), for every wait of this drive whose deadline has
        passed, each with its own deadline (and `refused_event` only where it declares that event).
        Only a wait whose deadline passed while another wait's event was claimed (a parallel group)
        has no claim of its own: it gets the same shape."""
        if self.pending is not None and self.pending.name == TIMEOUT:
            self._claimed_timeout, self.pending = self.pending, None
            self.journal.delivered(self._claimed_timeout)
        claimed = self._claimed_timeout
        if claimed is None:
            return Event(TIMEOUT, timeout_event(deadline), iso(self.now()) or "")
        refused = claimed.data.get("refused_event") if isinstance(claimed.data, dict) else None
        return claimed._replace(data=timeout_event(deadline, refused if refused in events else None))

    def undelivered(self) -> bool:
        """An event was claimed for this drive and no wait took it (it goes back to the inbox). A
        claimed timeout never does: a pause's deadline (`sleep:`, a retry) is answered by the clock."""
        return self.pending is not None and self.pending.name != TIMEOUT

    def _timer(self, task: _Task, request: Timer) -> Alarm | None:
        """Fix a pause's deadline, or say whether it has come; a near one is slept here (None)."""
        now = self.now()
        if request.deadline is None:
            seconds = float(request.seconds or 0.0)
            if request.jitter and seconds > 0:
                import random  # only for a retry's backoff

                seconds *= 1.0 - random.random() / 2  # "equal jitter": between half and all of it
            return Alarm(now + seconds, seconds <= 0)
        remaining = request.deadline - now
        if remaining <= 0:
            return Alarm(request.deadline, True)
        if not request.hold or remaining > self.hold_limit:
            return Alarm(request.deadline, False)
        self.journal.flush()  # the pause's position is saved before this process sleeps through it
        self.journal.pausing(request.path, remaining)
        import heapq

        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + remaining, self._seq, task, request.deadline))
        return None

    def _wake(self) -> None:
        """Hand every sleeping task whose pause is over back to the loop."""
        import heapq

        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, task, deadline = heapq.heappop(self._timers)
            task.reply = Alarm(deadline, True)
            self._ready.append(task)

    # -- effects ---------------------------------------------------------------------------------

    def _start(self, task: _Task, request: Any) -> None:
        attempt = 0
        if getattr(request, "step", False):
            attempt = self.journal.started(request)
            if isinstance(request, Shell):
                # reliability G3: a re-run step can tell (attempt ≥ 2) and has a stable key.
                request = request._replace(env={**request.env, "ROAST_STEP_ATTEMPT": str(attempt),
                                                "ROAST_STEP_PATH": request.path})
            self._inflight[request.path] = attempt
        else:
            self.journal.flush()  # a condition's command: what ran before it is saved first
        if not self._ready and not self._busy and not self._timers:
            # nothing else can run meanwhile: perform on this thread (no hand-off cost)
            value, error = self._perform(request)
            self._performed(task, request, attempt, value, error)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # parallel groups only

            self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="roast-step")
        self._busy += 1
        future = self._pool.submit(self._perform, request)
        future.add_done_callback(lambda f: self._queue.put(("done", task, request, attempt, f)))

    def _perform(self, request: Any) -> tuple[Any, RoastError | None]:
        """Perform one request (on any thread); an error is the answer, for the node to decide on."""
        try:
            return self.perform(request), None
        except RoastError as err:
            return None, err
        except Exception as err:  # a bug in a step's effect still ends the step, and says so
            return None, StepFailed(f"{type(err).__name__}: {err}", where=getattr(request, "path", None))

    def _performed(self, task: _Task, request: Any, attempt: int, value: Any, error: RoastError | None) -> None:
        if attempt:
            self._inflight.pop(request.path, None)
            if error is not None:
                self.journal.finished(request, attempt, "failed", str(error), error.message)
            elif isinstance(value, Done):
                if value.status != 0:
                    last = (value.stderr or "").strip().splitlines()[-1:]
                    why = f"exit status {value.status}" + (f": {last[0][:500]}" if last else "")
                    self.journal.finished(request, attempt, "failed", value.stdout.strip(), why)
                else:
                    self.journal.finished(request, attempt, "ok", value.stdout.strip())
            elif isinstance(value, Answer):  # a model's answer: its tool calls, its text, the tokens it used
                self._tool_rows(request.path, value.turns)
                self.journal.finished(request, attempt, "ok", value.text, usage=value.usage)
            else:
                self.journal.finished(request, attempt, "ok", value)
        task.reply, task.failure = value, error
        self._ready.append(task)

    def _receive_one(self) -> None:
        """Wait for a worker thread's message (a request performed, or a process group started) or
        for the next sleeping task's pause to end, whichever comes first."""
        if self._timers:
            from _queue import Empty

            try:
                message = self._queue.get(timeout=max(0.0, self._timers[0][0] - time.monotonic()))
            except Empty:
                self._wake()
                return
            self._wake()
        else:
            message = self._queue.get()
        if message[0] == "spawned":
            _, path, pgid = message
            self.journal.spawned(path, self._inflight.get(path, 0), pgid)
            return
        _, task, request, attempt, future = message
        self._busy -= 1
        value, error = future.result()
        self._performed(task, request, attempt, value, error)

    def _tool_rows(self, path: str, turns: tuple[Any, ...]) -> None:
        """Each tool call of a model's answer as a history row of its own (`PATH.tools[n]`, named
        after the function): its arguments and its result, bounded (issue 17)."""
        results = {t.get("tool_call_id"): t.get("content") or "" for t in turns if t.get("role") == "tool"}
        calls = [c for t in turns if t.get("role") == "assistant" for c in t.get("tool_calls") or ()]
        for n, call in enumerate(calls, 1):
            function = call.get("function") or {}
            row = _ToolRow(f"{path}.tools[{n}]", str(function.get("name")))
            arguments = str(function.get("arguments"))
            result = str(results.get(call.get("id"), ""))
            text = f"{row.name}({arguments[:MAX_TOOL_TEXT]})\n{result[:MAX_TOOL_TEXT]}"
            if len(result) > MAX_TOOL_TEXT:
                text += f"\n[the history keeps the first {MAX_TOOL_TEXT} of {len(result)} characters]"
            self.journal.finished(row, self.journal.started(row), "ok", text)

    def spawned(self, path: str, pgid: int) -> None:
        """Called by `perform` (any thread) once a step's process group exists: recorded on the loop thread."""
        if _thread.get_ident() == self._loop_thread:
            self.journal.spawned(path, self._inflight.get(path, 0), pgid)
        elif self._queue is not None:
            self._queue.put(("spawned", path, pgid))

    def _abort(self) -> None:
        """The drive is ending early (a signal, the store): stop what runs, wait for the workers."""
        if self.cancel is not None:
            self.cancel()
        deadline = time.monotonic() + 10.0
        while self._busy and time.monotonic() < deadline:
            try:
                message = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - _queue.Empty, or a second signal: stop waiting
                break
            if message[0] == "done":
                self._busy -= 1


def _unhandled(request: NoReturn) -> NoReturn:
    """A request no arm of `Runner._answer` takes: mypy reports the missing arm (`request` is not
    `NoReturn` then); at run time, a bug in a node, said at once."""
    raise TypeError(f"the runner cannot perform {type(request).__name__}: add it to `requests.Request` and an arm")
