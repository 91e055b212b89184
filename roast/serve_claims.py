"""`roast serve`'s claims: where the requests' claims are made, in a process of their own.

The deliveries (`together=True`) are made in the server's **claim process** (`Process`, issue 25):
a child that runs `api.together` on its own store connection and answers over a pipe, so claims
use the machine's second core instead of sharing one interpreter with the HTTP side. The event
loop writes each delivery to the pipe and reads the answers as they arrive (`add_reader`): no
thread hands a claim or an answer over, so no claim waits for the GIL between two threads. A
claim process takes every delivery waiting when it is free (at most `MOST`) and claims them
together, in one write transaction and one commit, each answered after the commit that made it
durable. A store with one writer (SQLite) has one claim process; a shared store (PostgreSQL) has
`processes` of them (`roast serve`: 2), since one waits for the server's answer to each of a
claim's statements in turn. A delivery goes to the least busy one, except that while a claim for
its session (or workflow) is in flight the next goes to the same process, so two processes' batches
do not wait for each other's row locks. 3,000 deliveries from 16 clients on the bench machine:
about 1,650 claims/s with a p99 of 13–18 ms on SQLite, from about 900/s and 26 ms in one process;
about 780/s and 33–35 ms on PostgreSQL, from about 430/s and 64 ms with one process making 8 claims
at once on threads, each its own transaction.

It claims *for the server*: each claimed session records the server as its owner, and the server
marks it as its own (`api.claimed_here`) before the request is answered and its branch handed to
the worker, which runs it in the server, as before. The server's look for orphans waits for the
claims in flight (`Process.quiet`), so a session claimed and not yet marked is never taken for
one. The claim process gets no credential, ignores SIGINT and SIGTERM, and ends when the server
closes its pipe (or dies); if it dies first, the requests it had not answered get a 503 (a claim
among them may have been made: the sender tries again with its idempotency key and gets
`duplicate`), their sessions are recovered as orphans are, and the next delivery starts a new one.

Other claims (an approval page's form, a closure) are made in the server, on one claim thread
(`Claims`), each alone. A request that is cancelled while it waits (its client went away, the
server stops) still has its claim made and its answer decided: the wait is shielded, as
`anyio.to_thread.run_sync` shields a thread's work, so a consumed event's branch is always handed
to the worker.
"""
from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    import asyncio
    import subprocess
    from collections.abc import Iterator
    from contextlib import AbstractContextManager
    from typing import Any

MOST = 32  # claims in one batch: one write transaction holds SQLite's write lock for all of them
QUIET_WAIT = 10.0  # seconds the look for orphans waits for the claims in flight before it skips a turn
# what the claim process is not given: the server's credentials (it verifies nothing, it claims)
_NOT_FOR_CLAIMS = ("ROAST_SERVE_TOKENS", "ROAST_WEBHOOK_SECRET", "ROAST_GITHUB_WEBHOOK_SECRET")


class Bound:
    """The api functions, each called with this server's one store (a connection per thread, not
    one per call: a claim is ~25 % cheaper)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        from roast import api
        return functools.partial(getattr(api, name), store=self.store)


class _Job:
    __slots__ = ("call", "future", "loop", "parts")

    def __init__(self, call: Callable[[], Any], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop,
                 parts: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> None:
        self.call, self.future, self.loop, self.parts = call, future, loop, parts


def _settle(answers: list[tuple[_Job, bool, Any]]) -> None:
    """On the event loop: each waiting request gets its claim's value or exception."""
    for job, ok, value in answers:
        if not job.future.done():
            job.future.set_result(value) if ok else job.future.set_exception(value)


def _answer(answers: list[tuple[_Job, bool, Any]]) -> None:
    """From a claim thread: hand each answer to its request's event loop, once per loop."""
    by_loop: dict[Any, list[tuple[_Job, bool, Any]]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].loop, []).append(answer)
    for loop, theirs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, theirs)
        except RuntimeError:  # that loop is closed: nobody waits for these answers any more
            pass


class Claims:
    """The claims of one `roast serve` (see the module docstring); `api` is the server's `Bound`
    api: the deliveries in its claim processes (`processes` of them), the others on one claim thread
    here."""

    def __init__(self, api: Any, most: int = MOST, log: Callable[..., None] | None = None,
                 sends: tuple[Callable[..., Any], ...] = (), processes: int = 1) -> None:
        self.api = api
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        # `sends`: the functions deliveries are made with, imported by the claim processes at their start
        self.processes = [Process(api, most, log, sends) for _ in range(max(1, processes))]
        self.routes: dict[str, list[Any]] = {}  # route -> [its claim process, its claims in flight]

    async def __call__(self, fn: Callable[..., Any], *args: Any, together: bool = False, route: str | None = None,
                       **kwargs: Any) -> Any:
        """Claim with `fn(*args, **kwargs)`; `together`: a delivery that may share a transaction with
        the others waiting (`resume(..., run=False)`), made in a claim process (`fn` and its
        arguments pickle; the server's api and store are passed as the claim process's own).
        `route`: the session (or workflow) it is for: while a claim for it is in flight, the next
        ones go to the same claim process (two processes' batches would wait for each other's row
        locks); otherwise a claim goes to the least busy one."""
        import asyncio

        import anyio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = _Job(functools.partial(fn, *args, **kwargs), future, loop, (fn, args, kwargs))
        if not together:
            self._start()
            self.jobs.put(job)
        elif route is None:
            min(self.processes, key=Process.in_flight).put(job)  # on this loop, straight to the pipe
        else:  # `routes` is only touched on the event loop's thread
            taken = self.routes.setdefault(route, [min(self.processes, key=Process.in_flight), 0])
            taken[1] += 1
            future.add_done_callback(lambda _: self._done(route))
            taken[0].put(job)
        with anyio.CancelScope(shield=True):
            return await future

    def _done(self, route: str) -> None:
        taken = self.routes[route]
        taken[1] -= 1
        if not taken[1]:
            del self.routes[route]

    def start(self) -> None:
        """Start the claim processes now (a server starts them before it listens), not at the first claim."""
        for process in self.processes:
            process.start()

    def _start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="roast-serve-claims", daemon=True)
                self.thread.start()

    def quiet(self) -> AbstractContextManager[bool]:
        """A context in which no claim is in flight in any claim process (the look for orphans): True
        when that was reached (each process waits at most QUIET_WAIT for its own)."""
        import contextlib

        @contextlib.contextmanager
        def quiet() -> Iterator[bool]:
            with contextlib.ExitStack() as stack:
                yield all([stack.enter_context(process.quiet()) for process in self.processes])

        return quiet()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the claim thread and the claim processes once the claims given to them are made."""
        with self.lock:
            thread, self.thread = self.thread, None
        if thread is not None:
            self.jobs.put(None)
            thread.join(timeout)
        for process in self.processes:
            process.close(timeout)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:  # alone: `together` of one call makes it in its own transaction
                (ok, value), = self.api.together([job.call])
            except BaseException as err:  # noqa: BLE001 - whatever stopped it is the request's answer
                ok, value = False, err
            _answer([(job, ok, value)])


# --------------------------------------------------------------------------- the claim process


class _Here:
    """Stands, in a pickled claim, for the server's api or store: the claim process puts its own."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> Any:
        return (_here, (self.name,))


def _here(name: str) -> _Here:
    return _Here(name)


def _frame(value: Any) -> bytes:
    import pickle

    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


class _Frames:
    """Length-prefixed pickles read from a pipe: `next()` blocks for one and `more()` is True when a
    whole one is already here (the claim process); `ready` is the server's side."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf = fd, bytearray()

    def _whole(self) -> bool:
        return len(self.buf) >= 4 and len(self.buf) >= 4 + int.from_bytes(self.buf[:4], "big")

    def _take(self) -> Any:
        import pickle

        size = int.from_bytes(self.buf[:4], "big")
        value = pickle.loads(bytes(self.buf[4:4 + size]))
        del self.buf[:4 + size]
        return value

    def more(self) -> bool:
        import select

        while not self._whole() and select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 1 << 20)
            if not data:
                return False
            self.buf += data
        return self._whole()

    def next(self) -> Any:
        """The next frame (blocking); None at the end of the pipe."""
        while not self._whole():
            data = os.read(self.fd, 1 << 20)
            if not data:
                return None
            self.buf += data
        return self._take()

    def ready(self, data: bytes) -> list[Any]:
        """The frames whole once `data` is added."""
        self.buf += data
        found = []
        while self._whole():
            found.append(self._take())
        return found


def _revive(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """An exception from the claim process, as it was raised there (without running its __init__)."""
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


def _portable(err: BaseException) -> tuple[Any, ...]:
    import pickle

    try:
        pickle.dumps((type(err), err.args, err.__dict__))
        return (type(err), err.args, err.__dict__)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its text, as an internal error
        return (RuntimeError, (f"{type(err).__name__}: {err}",), {})


class Process:
    """The server's side of its claim process (see the module docstring). The event loop writes
    each delivery to the process's pipe and reads the answers as they come (`add_reader`), so no
    thread stands between a request and its claim; the look for orphans (the worker's thread)
    shares `sent` under `lock`."""

    def __init__(self, api: Any, most: int = MOST, log: Callable[..., None] | None = None,
                 sends: tuple[Callable[..., Any], ...] = ()) -> None:
        self.api, self.most, self.sends = api, most, sends
        self.log = log or (lambda message, **fields: None)
        self.lock = threading.Lock()
        self.answered = threading.Condition(self.lock)  # notified as `sent` empties
        self.sent: dict[int, _Job] = {}  # job number -> job, sent and not yet answered
        self.held: list[_Job] = []       # given while a look for orphans runs: sent after it
        self.paused = 0
        self.number = 0
        self.child: subprocess.Popen[bytes] | None = None
        self.frames: _Frames | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.out = bytearray()  # frames the pipe did not take yet
        self.writing = False
        self.closing = False

    def start(self) -> None:
        """Start the claim process now (the server, before it listens), not at the first claim."""
        with self.lock:
            if self.child is None and not self.closing:
                try:
                    self._spawn()
                except OSError:
                    pass  # started again at the first claim, which says why if it fails again

    def _spawn(self) -> None:
        import subprocess
        import sys

        from roast import api

        env = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_CLAIMS}
        if env.get("ROAST_FAULT_AT"):  # the fault hook (tests): a kill in the claims kills the server too
            env["ROAST_FAULT_ALSO"] = str(os.getpid())
        # the server's own import path: the same roast, whatever installed it or wherever it runs from
        boot = f"import sys; sys.path[:] = {sys.path!r}; from roast.serve_claims import child; child()"
        child = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 env=env, close_fds=True)
        assert child.stdin is not None and child.stdout is not None
        self.out = bytearray(_frame((api.claims_owner(), self.most, self.sends)))
        os.set_blocking(child.stdin.fileno(), False)
        os.set_blocking(child.stdout.fileno(), False)
        self.child, self.frames, self.loop, self.writing = child, _Frames(child.stdout.fileno()), None, False

    def in_flight(self) -> int:
        """The claims sent to it and not yet answered (read on the event loop, without the lock)."""
        return len(self.sent) + len(self.held)

    def put(self, job: _Job) -> None:
        """On the event loop: send a delivery to the claim process (after a look for orphans ends)."""
        self._send([job])

    def _send(self, jobs: list[_Job]) -> None:
        dead: list[tuple[_Job, bool, Any]] = []
        with self.lock:
            if self.paused:  # checked under the lock that `quiet` holds while it waits: none slips past
                self.held += jobs
                return
            if self.child is not None and self.child.poll() is not None:  # it died while nothing was sent
                dead = self._ended(self.child)
            if self.child is None:
                try:
                    self._spawn()
                except OSError as err:
                    failed = self._gone(f"could not start: {err}")
                    _settle([(job, False, failed) for job in jobs])
                    return
            numbered = []
            for job in jobs:
                self.number += 1
                self.sent[self.number] = job
                numbered.append((self.number, *self._wire(job.parts)))
            loop = jobs[0].loop
            if self.loop is not loop:
                assert self.child is not None and self.child.stdout is not None
                self.loop = loop
                loop.add_reader(self.child.stdout.fileno(), self._readable, self.child)
        _settle(dead)
        try:
            self.out += _frame(numbered)
        except Exception:  # noqa: BLE001 - a claim that does not pickle (a bug): each is sent alone
            for item in numbered:
                self.out += self._alone(item)
        self._flush()

    def _alone(self, item: tuple[Any, ...]) -> bytes:
        """One claim's frame, or b"" and its answer (the error) if it does not pickle."""
        try:
            return _frame([item])
        except Exception as err:  # noqa: BLE001
            with self.lock:
                job = self.sent.pop(item[0], None)
                self.answered.notify_all()
            if job is not None:
                _settle([(job, False, err)])
            return b""

    def _flush(self) -> None:
        """On the event loop: write what the pipe takes; the rest when it is writable again."""
        child, loop = self.child, self.loop
        if child is None or child.stdin is None or loop is None:
            return
        fd = child.stdin.fileno()
        while self.out:
            try:
                del self.out[:os.write(fd, self.out)]
            except BlockingIOError:
                break
            except OSError:  # it died: its answers' reader fails what it had not answered
                self.out.clear()
        if self.out and not self.writing:
            loop.add_writer(fd, self._flush)
            self.writing = True
        elif not self.out and self.writing:
            loop.remove_writer(fd)
            self.writing = False

    def _wire(self, parts: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> tuple[Any, ...]:
        fn, args, kwargs = parts

        def swap(value: Any) -> Any:
            if value is self.api:
                return _Here("api")
            if value is self.api.store:
                return _Here("store")
            return value

        return fn, tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}

    def _readable(self, child: subprocess.Popen[bytes]) -> None:
        """On the event loop: the answers the claim process wrote; at its end, its lost claims."""
        from roast import api

        assert child.stdout is not None and self.frames is not None
        try:
            data = os.read(child.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            answers = [a for frame in self.frames.ready(data) for a in frame] if data else []
        except Exception:  # noqa: BLE001 - a broken frame: as if it died
            answers, data = [], b""
        settled = []
        with self.lock:
            for number, ok, value, claimed in answers:
                job = self.sent.pop(number, None)
                if claimed:  # the server's now: before its request is answered and its branch queued
                    api.claimed_here(claimed)
                if job is not None:
                    settled.append((job, ok, value if ok else _revive(*value)))
            if not data:
                settled += self._ended(child)
            self.answered.notify_all()
        _settle(settled)

    def _ended(self, child: subprocess.Popen[bytes]) -> list[tuple[_Job, bool, Any]]:
        """Under `lock`, on the event loop: forget a claim process that closed its pipe; the answers
        of the claims it had not answered (made or not, nobody can say)."""
        assert child.stdout is not None and child.stdin is not None
        if self.loop is not None:
            self.loop.remove_reader(child.stdout.fileno())
            if self.writing:
                self.loop.remove_writer(child.stdin.fileno())
        for pipe in (child.stdin, child.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        threading.Thread(target=child.wait, name="roast-serve-claims-reap", daemon=True).start()
        if not self.closing:
            self.log("the claim process stopped; the next delivery starts another", pid=child.pid,
                     unanswered=len(self.sent))
        if self.child is child:
            self.child, self.loop, self.out, self.writing = None, None, bytearray(), False
        lost, self.sent = list(self.sent.values()), {}
        return [(job, False, self._gone("it exited")) for job in lost]

    @staticmethod
    def _gone(why: str) -> Exception:
        from roast.errors import StoreUnavailable

        return StoreUnavailable(f"the server's claim process stopped ({why}) before it answered; the event "
                                "may or may not have been delivered",
                                hint="send it again with the same Idempotency-Key: a delivery made is answered "
                                     "`duplicate`")

    def quiet(self) -> AbstractContextManager[bool]:
        import contextlib

        @contextlib.contextmanager
        def quiet() -> Iterator[bool]:
            import time

            until = time.monotonic() + QUIET_WAIT
            with self.lock:
                self.paused += 1
                while self.sent and time.monotonic() < until:
                    self.answered.wait(0.1)
                still = bool(self.sent)
            try:
                yield not still  # False: claims are still in flight (a stuck store); skip this turn
            finally:
                with self.lock:
                    self.paused -= 1
                    held, self.held = (self.held, []) if not self.paused else ([], self.held)
                if held:
                    try:
                        held[0].loop.call_soon_threadsafe(self._send, held)
                    except RuntimeError:  # the loop is closed: nobody waits for them any more
                        pass

        return quiet()

    def close(self, timeout: float = 30.0) -> None:
        """After the event loop: end the claim process's pipe, so it makes what it has and exits."""
        with self.lock:
            self.closing = True
            child, self.child = self.child, None
        if child is None:
            return
        import select
        import time

        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        until = time.monotonic() + timeout
        fd = child.stdout.fileno()
        while time.monotonic() < until:  # its last answers (nobody waits for them now), to its end
            if select.select([fd], [], [], max(0.0, until - time.monotonic()))[0]:
                try:
                    if not os.read(fd, 1 << 20):
                        break
                except BlockingIOError:
                    continue
                except OSError:
                    break
        child.stdout.close()
        try:
            child.wait(max(0.1, until - time.monotonic()))
        except Exception:  # noqa: BLE001 - it did not end: stop it (a batch not committed is rolled back whole)
            child.kill()
            child.wait()


def child() -> None:
    """The claim process (`python -c 'from roast.serve_claims import child; child()'`): claims what
    the server sends, for the server, until the server closes the pipe."""
    import signal
    import sys

    from roast import api

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the server stops it, by closing the pipe, after its last claim
    answers_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to the server's stderr, never into the answers
    sys.stdout = sys.stderr
    frames = _Frames(0)
    hello = frames.next()
    if hello is None:
        return
    owner, most, _ = hello  # (the functions it will be sent: imported with the hello)
    api.claims_owner(owner)
    store = api.open_store()
    try:
        api.ready_to_claim(store=store)  # the first deliveries after a start pay no imports
    except Exception:  # noqa: BLE001 - a store not reachable yet: each claim says so itself
        pass
    here = {"api": Bound(store), "store": store}

    def real(value: Any) -> Any:
        return here[value.name] if isinstance(value, _Here) else value

    def make(batch: list[tuple[Any, ...]]) -> None:
        """Claim `batch` (together, `most` at a time) and answer each of its claims, whatever happens."""
        outcomes: list[tuple[bool, Any]] = []
        try:
            calls = [functools.partial(fn, *map(real, args), **{k: real(v) for k, v in kwargs.items()})
                     for _, fn, args, kwargs in batch]
            for start in range(0, len(calls), most):
                try:
                    outcomes += api.together(calls[start:start + most], store=store)
                except Exception as err:  # noqa: BLE001 - whatever stopped the batch is each claim's answer
                    outcomes += [(False, err)] * len(calls[start:start + most])
        except Exception as err:  # noqa: BLE001 - a bug here: every request still gets its answer
            outcomes = [(False, err)] * len(batch)
        out = []
        for (number, *_), (ok, value) in zip(batch, outcomes):
            claimed = _claimed(ok, value)
            if claimed:
                api.claimed_here(claimed, False)  # the server runs it, not this process
            out.append((number, ok, value if ok else _portable(value), claimed))
        try:
            data = _frame(out)
        except Exception:  # noqa: BLE001 - a value that does not pickle (a bug): found and answered alone
            data = _frame([_answerable(*answer) for answer in out])
        try:
            while data:
                data = data[os.write(answers_fd, data):]
        except BrokenPipeError:  # the server is gone: what was claimed is recovered as orphans are
            os._exit(0)

    # what waits is claimed together, in turn (one thread: no claim waits for the GIL)
    while True:
        batch = frames.next()
        if batch is None:
            break
        while len(batch) < most and frames.more():
            batch += frames.next()
        make(batch)


def _answerable(number: int, ok: bool, value: Any, claimed: str | None) -> tuple[Any, ...]:
    """One answer as it crosses the pipe: a value that does not pickle becomes an internal error."""
    import pickle

    if not ok:
        return number, False, value, claimed  # already `_portable`
    try:
        pickle.dumps(value)
    except Exception as err:  # noqa: BLE001 - a bug: its request gets a 500, its claim stands
        return number, False, _portable(err), claimed
    return number, True, value, claimed


def _claimed(ok: bool, value: Any) -> str | None:
    """The session a claim left to be run (a consumed event, or a late one whose timeout it claimed)."""
    if ok:
        return value.session_id if getattr(value, "outcome", None) == "consumed" else None
    return getattr(value, "session_id", None) if getattr(value, "claimed", False) else None
