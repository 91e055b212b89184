"""Keeps sessions moving: runs the branches of claimed events, fires due deadlines, recovers
orphaned sessions and runs the notify steps a crash left unrun — once (`roast tick`: `Worker.tick`),
for one session (`--wait`: `Worker.listen`), or resident (`roast serve`: `Worker.start`).

Deadlines come from the store's ordered `overdue(now=...)` query and a heap of the deadlines this
worker saw its own branches reach (so they fire on time); orphans from one query of orphaned
sessions now and then — never a reload of every waiting session. A job that fails (the store
locked or restarting, old step processes still alive) is retried with a growing backoff, and said
once per session until it works. Stopping is cooperative (`Stop`): no thread is ever interrupted
from outside; running steps' process groups are killed through `Effects.kill_all`.

How a session is claimed and driven is the api's (`jobs`: `fire`, `recover`, `run_claimed`);
imports nothing heavy at load time (`api.tick` and `api.listen` load it).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from roast.errors import Interrupted, NotWaiting, RoastError, StoreUnavailable
from roast.expressions import iso
from roast.store import FINISHED
from roast.views import result_of

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    import threading
    from typing import Any

    from roast.runner import Observer
    from roast.store import Session, SessionStore
    from roast.views import Result

TICK_EVERY = 0.5       # seconds between two `overdue` queries (one cheap ordered query)
ORPHANS_EVERY = 5.0    # seconds between two looks for orphaned sessions
BACKOFF = (0.5, 60.0)  # a failed job is tried again after 0.5 s, 1 s, 2 s … at most 60 s
BRANCH_DEFER = 5.0     # seconds a branch may wait for claims in flight to end before it starts anyway
CLAIMS_CALM = 0.05     # seconds without a claim before a branch starts (while BRANCH_DEFER lasts)


class Stop:
    """A cooperative stop for drives on worker threads (`roast serve` ending): once `set()`, the
    steps' process groups are killed (`Effects.kill_all`), no new step starts, and each drive ends
    through the same `Interrupted` path as a signal, so its session stays recoverable."""

    def __init__(self) -> None:
        import _thread

        self._lock = _thread.allocate_lock()
        self._effects: list[Any] = []
        self.requested = False
        # `roast serve`: a drive's notify job is handed here (to the notify thread) instead of
        # running on the branch worker that drove it (issue 21); None: notify inline
        self.notify_later: Callable[[Any, Any], None] | None = None

    def set(self) -> None:
        with self._lock:
            self.requested, live = True, list(self._effects)
        for effects in live:
            effects.kill_all()

    def guard(self, effects: Any) -> Callable[[Any], Any]:
        """`effects` as the runner's `perform`, ending the drive once the stop is requested."""
        import signal

        with self._lock:
            self._effects.append(effects)
            if self.requested:
                effects.kill_all()

        def perform(request: Any) -> Any:
            try:
                if not self.requested:
                    value = effects(request)
                    if not self.requested:  # else the step was killed by the stop: not its own failure
                        return value
            except RoastError:
                if not self.requested:
                    raise
            raise Interrupted(signal.SIGTERM, restart=True)  # recovered by the next start (issue 20)

        return perform

    def forget(self, effects: Any) -> None:
        with self._lock:
            self._effects.remove(effects)


def notify_pending(store: SessionStore, observer: Observer, now: Callable[[], float],
                   hand_off: Callable[[Any, Any], None] | None = None) -> list[str]:
    """Run the notify steps a crash left unrun (at least once per wait); the ids notified.
    `hand_off` (a resident worker's notify thread): queue each job there instead of running it."""
    from roast.drive import NotifyJob, run_notify
    from roast.reminders import notices_of, wait_info

    done = []
    for session in store.notify_due():
        try:
            ctx, defn, nodes, cwd = notices_of(store, session)
        except RoastError:
            continue
        # each wait the session saved, once (a saved path carries its loop iteration: `steps[1]#2`)
        paths = list(dict.fromkeys(str(a["path"]) for a in session.awaiting if a.get("path") is not None))
        waits = [w for w in (wait_info(session, nodes, path) for path in paths) if w is not None]
        if not waits:
            store.notified(session.id, wait_seq=session.wait_seq)
            continue
        job = NotifyJob(session.id, waits, ctx, defn, cwd, session.wait_seq)
        if hand_off is not None:
            hand_off(job, observer)
        else:
            run_notify(store, job, observer, now)
        done.append(session.id)
    return done


class Worker:
    """Keeps the sessions of one store moving. `jobs` (the api) claims and drives; `log(message,
    **fields)` says what happened; `observer_for(session_id)` gives a drive its progress observer."""

    def __init__(self, jobs: Any, *, workers: int = 1, log: Callable[..., None] | None = None,
                 observer_for: Callable[[str | None], Any] | None = None,
                 now: Callable[[], float] = time.time) -> None:
        import threading

        self.jobs, self.store = jobs, jobs.store
        self.workers, self.now = workers, now
        self.log = log or (lambda message, **fields: None)
        self.observer_for = observer_for or (lambda session_id: jobs.observer)
        self.stop_drives = Stop()
        self.backoff: dict[str, tuple[int, float, str]] = {}  # key -> (failures, not before (monotonic), code said)
        self.running: dict[int, str | None] = {}   # worker thread -> session it runs (None: a pass)
        self.claiming = 0                          # claims in flight in requests (branches wait for them)
        self.idle = threading.Event()              # set when the last claim in flight ends
        self.claimed_at = 0.0                      # when it ended (monotonic)
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # `roast serve` with a claim process: a context in which no claim made for this process is
        # committed and not yet marked as its own (else it would look orphaned); yields False to skip
        self.quiet: Callable[[], Any] | None = None

    # -- one pass (`roast tick`)

    def tick(self, source: str = "tick") -> list[dict[str, Any]]:
        """Fire every overdue wait, then run the notify steps a crash left unrun: one summary dict per
        session. A store error while listing stops the pass (StoreUnavailable). `source`: who fired,
        as the timeout's event records it (`tick`, or `serve` for the resident worker; issue 24)."""
        from roast.firing import fire_batch

        fired: list[dict[str, Any]] = []
        for batch in self._batches():  # issue 25: each batch's timeouts claimed in one transaction
            for session, outcome in fire_batch(self.store, batch, source, observer_for=self.observer_for,
                                               now=self.now, stop=self.stop_drives):
                entry: dict[str, Any] = {"session_id": session.id, "workflow": session.workflow_path,
                                         "deadline": iso(session.deadline), "fired": False, "status": session.status,
                                         "error": None}
                if isinstance(outcome, StoreUnavailable):
                    raise outcome
                if not isinstance(outcome, RoastError):
                    entry.update(fired=True, status=outcome.status, error=outcome.error)
                    self._worked(session.id)
                else:
                    now_row = self._current(session)
                    if now_row is None or (now_row.status, now_row.wait_seq) != ("waiting", session.wait_seq):
                        # an event (or another tick) resolved it between the listing and the claim: not an error
                        entry.update(status=now_row.status if now_row else "gone", resumed_elsewhere=True)
                    else:
                        entry.update(error=str(outcome), code=outcome.code)
                fired.append(entry)
        notify_pending(self.store, self.observer_for(None), self.now, self.stop_drives.notify_later)
        return fired + [timer_entry(entry) for entry in self.fire_timers()]

    def fire_timers(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Fire the due reminders and escalations of open gates (issue 23; only `session_id`'s when
        given), each at most once whoever races or crashes (`roast.reminders`); say what failed."""
        from roast.reminders import fire_timers

        fired = fire_timers(self.store, self.observer_for(session_id), self.now, session_id)
        for entry in fired:
            for problem in ([entry["error"]] if entry.get("error") else []) + entry.get("warnings", []):
                self.log("reminder failed", session=entry["session_id"], warning=problem)
        return fired

    def _batches(self) -> Iterator[list[Session]]:
        """Every overdue session not backing off, `firing.BATCH` at a time, read a listing at a time
        (`overdue()` has a LIMIT, issue 25): the next listing is read after this one is fired; a
        listing that brings no new session ends it."""
        from roast.firing import BATCH

        seen: set[str] = set()
        while True:
            new = [s for s in self.store.overdue(now=self.now()) if s.id not in seen]
            if not new:
                return
            seen.update(s.id for s in new)
            due = [s for s in new if self._due(s.id)]
            for start in range(0, len(due), BATCH):
                yield due[start:start + BATCH]

    def _current(self, session: Session) -> Session | None:
        try:
            return self.store.get(session.id)
        except RoastError:
            return None

    # -- one session (`--wait`)

    def listen(self, session_id: str, *, sleep: Callable[[float], None] = time.sleep, poll: float = 0.25,
               on_update: Callable[[Session, float], None] | None = None) -> Result:
        """Stay with a session until it ends: events come from other processes; this one fires the
        deadline on time. Interrupting it (Ctrl-C) leaves the session exactly as it is."""
        sid = self.store.get(session_id).id
        while True:
            session = self.store.get(sid)
            current = self.now()
            if on_update is not None:
                on_update(session, current)
            if session.status in FINISHED:
                return result_of(session)
            if session.status == "waiting" and session.deadline is not None and session.deadline <= current:
                try:
                    self.jobs.fire(session, self.observer_for(sid), "listen", None)
                except NotWaiting:
                    pass  # an event won the race; follow the session on
                continue
            if session.status == "waiting":
                self.fire_timers(sid)  # issue 23: its reminders and escalations, on time
            if session.status == "running" and session.orphaned:
                return result_of(session, error="the process running this session died; "
                                                f"`roast resume --session-id {sid}` continues it")
            if session.status == "interrupted":  # stopped by a person: nothing continues it by itself
                return result_of(session, error=f"{session.error or 'it was interrupted'}; "
                                                f"`roast resume --session-id {sid}` continues it")
            wait = poll
            if session.status == "waiting" and session.deadline is not None:
                wait = max(0.0, min(poll, session.deadline - current))
            sleep(wait)

    # -- failures: try again later, say it once

    def _due(self, key: str) -> bool:
        entry = self.backoff.get(key)
        return entry is None or entry[1] <= time.monotonic()

    def _failed(self, key: str, what: str, err: RoastError, session: str | None = None) -> float:
        failures, _, said = self.backoff.get(key, (0, 0.0, ""))
        delay = min(BACKOFF[1], BACKOFF[0] * 2 ** failures)
        self.backoff[key] = (failures + 1, time.monotonic() + delay, err.code)
        if said != err.code:  # once per session per outage, not twice a second
            self.log(f"{what} failed; trying again later", session=session, code=err.code, error=err.message)
        return delay

    def _worked(self, key: str) -> None:
        if self.backoff.pop(key, None) is not None and key != "store":
            self.log("working again", session=key)

    # -- resident (`roast serve`)

    def start(self) -> None:
        """Start the worker threads and the scheduler."""
        import collections
        import threading

        self.jobs_queue: collections.deque[tuple[str, str | None]] = collections.deque()
        self.pending: set[str] = set()             # jobs queued or running (no duplicates)
        self.deadlines: list[tuple[float, str]] = []  # heap of deadlines our branches reached
        self.cond = threading.Condition()
        self.wake = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"roast-worker-{i + 1}", daemon=True)
                         for i in range(self.workers)]
        self._threads.append(threading.Thread(target=self._schedule, name="roast-scheduler", daemon=True))
        for thread in self._threads:
            thread.start()
        self._start_notifier()

    def _start_notifier(self) -> None:
        import queue
        import threading

        self.notices: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self.notifying: set[tuple[str, int]] = set()  # (session, wait) queued or running: never twice

        def later(job: Any, observer: Any) -> None:
            with self.cond:
                if (job.session_id, job.wait_seq) in self.notifying:
                    return
                self.notifying.add((job.session_id, job.wait_seq))
            self.notices.put((job, observer))

        self.stop_drives.notify_later = later
        thread = threading.Thread(target=_notifier, args=(self,), name="roast-notify", daemon=True)
        thread.start()

    def submit(self, session_id: str) -> None:
        """A claim committed elsewhere (a request): its branch runs on the next free worker."""
        self._put("run", session_id)

    def queued(self) -> int:
        return len(self.jobs_queue)

    def _put(self, kind: str, session_id: str | None) -> None:
        key = f"{kind}:{session_id}"
        with self.cond:
            if key in self.pending and kind != "run":
                return
            self.pending.add(key)
            self.jobs_queue.append((kind, session_id))
            self.cond.notify()

    def _work(self) -> None:
        import threading

        me = threading.get_ident()
        while True:
            with self.cond:
                while not self.jobs_queue and not self.stopping.is_set():
                    self.cond.wait()
                if self.stopping.is_set():
                    return
                kind, session_id = self.jobs_queue.popleft()
            self.running[me] = session_id
            try:
                self._do(kind, session_id)
            except Exception as err:  # noqa: BLE001 - a bug must not take a worker away; it is logged
                import traceback

                self.log(f"{kind} failed: internal error", session=session_id, error=f"{type(err).__name__}: {err}",
                         traceback=traceback.format_exc(limit=8))
            except Interrupted as err:  # the stop (Stop): the session stays recoverable
                self.log("stopped; the session is recoverable", session=session_id or err.session_id, step=err.step)
            finally:
                self.running.pop(me, None)
                with self.cond:
                    self.pending.discard(f"{kind}:{session_id}")

    def _do(self, kind: str, session_id: str | None) -> None:
        if kind == "pass":
            try:
                entries = self.tick("serve")
            except RoastError as err:
                self._failed("store", "firing deadlines", err)
                return
            self._worked("store")
            for entry in entries:
                if "timer" in entry:  # a reminder or escalation: fire_timers said what failed
                    continue
                if entry.get("code"):  # not fired, and still due: try it again later, say it once
                    self._failed(entry["session_id"], "firing the deadline", RoastError(entry["error"]),
                                 entry["session_id"])
                else:
                    self.log("deadline fired" if entry.get("fired") else "deadline not fired",
                             session=entry["session_id"], status=entry.get("status"), error=entry.get("error"))
            return
        assert session_id is not None
        observer = self.observer_for(session_id)
        try:
            if kind == "run":
                self._claims_first()
                self.log("branch started", session=session_id)
                result = self.jobs.run_claimed(session_id, observer, self.stop_drives)
            else:
                result = self.jobs.recover(session_id, observer, self.stop_drives)
        except RoastError as err:
            if kind == "run":
                from roast.store import mark_running

                # not run here: let go of it, so it is seen orphaned and recovered (with backoff)
                mark_running(session_id, False)
            self._failed(session_id, "branch" if kind == "run" else "recovery", err, session_id)
            return
        self._worked(session_id)
        self.log(f"session {result.status}" if kind == "run" else f"recovered; session {result.status}",
                 session=session_id, error=result.error)
        if result.status == "waiting":
            self._waits_again(session_id)

    def _claims_first(self) -> None:
        """A busy server never delays a claim: a branch starts once no claim is in flight (they share
        one interpreter, and the store's single writer) and none ended in the last CLAIMS_CALM
        seconds (the answers of a batch of claims end together, and their clients send again at
        once), but waits at most BRANCH_DEFER seconds."""
        until = time.monotonic() + BRANCH_DEFER
        while time.monotonic() < until and not self.stopping.is_set():
            if self.claiming:
                self.idle.wait(0.1)  # set when the last claim in flight ends; a stop is seen within 0.1 s
                continue
            calm = self.claimed_at + CLAIMS_CALM - time.monotonic()
            if calm <= 0:
                return
            self.stopping.wait(min(calm, 0.1))

    def _waits_again(self, session_id: str) -> None:
        """A branch this worker ran reached another wait: fire its deadline right on time."""
        import heapq

        try:
            deadline = self.store.get(session_id).deadline
        except RoastError:
            return
        if deadline is not None:
            with self.cond:
                heapq.heappush(self.deadlines, (deadline, session_id))
            self.wake.set()

    def _schedule(self) -> None:
        """A pass (fire what is overdue, notify what a crash left) every TICK_EVERY seconds and at
        each deadline in the heap; a look for orphans every ORPHANS_EVERY seconds (from the start)."""
        import heapq

        next_orphans = next_pass = 0.0
        while not self.stopping.is_set():
            self.wake.clear()
            if time.monotonic() >= next_orphans and self._due("store"):
                self._orphans()
                next_orphans = time.monotonic() + ORPHANS_EVERY
            now = self.now()
            with self.cond:
                due = bool(self.deadlines) and self.deadlines[0][0] <= now
                while self.deadlines and self.deadlines[0][0] <= now:
                    heapq.heappop(self.deadlines)
                ahead = self.deadlines[0][0] - now + 0.005 if self.deadlines else TICK_EVERY
            if due or time.monotonic() >= next_pass:
                if self._due("store"):
                    self._put("pass", None)
                next_pass = time.monotonic() + TICK_EVERY
            self.wake.wait(max(0.005, min(next_pass - time.monotonic(), next_orphans - time.monotonic(), ahead)))

    def _orphans(self) -> None:
        import contextlib

        try:
            with self.quiet() if self.quiet is not None else contextlib.nullcontext(True) as settled:
                if not settled:
                    return  # claims still in flight (a stuck store): look again next time
                rows, _ = self.store.list(statuses=["orphaned"], limit=None)
        except RoastError as err:
            self._failed("store", "looking for orphaned sessions", err)
            return
        self._worked("store")
        for orphan in rows:
            if self._due(orphan.id) and not self.stopping.is_set():
                self._put("recover", orphan.id)

    def stop(self, grace: float, hurry: threading.Event) -> None:
        """Start nothing new; let running branches finish for `grace` seconds; then stop them
        cooperatively (`Stop`: their process groups are killed, their sessions stay recoverable)
        and wait for the workers."""
        self.stopping.set()
        self.wake.set()
        if hasattr(self, "notices"):
            self.notices.put((None, None))  # the notify thread ends; what it had not run stays pending
        with self.cond:
            left = [sid for kind, sid in self.jobs_queue if kind == "run"]
            self.cond.notify_all()
        for sid in left:
            self.log("left claimed for the next start", session=sid)
        until = time.monotonic() + grace
        while self.running and time.monotonic() < until and not hurry.is_set():
            hurry.wait(0.05)
        if self.running:
            self.log("grace period over: stopping running branches", sessions=len(self.running))
            self.stop_drives.set()
        for thread in self._threads:
            thread.join(timeout=15)


def timer_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A reminder or escalation a pass sent (issue 23), as `tick` lists it beside the deadlines:
    `timer` says which ("reminder 2", "escalation 1", "reminder 2, escalation 1")."""
    sent = ([f"reminder {entry['reminder']}"] if entry.get("reminder") else []) + \
        [f"escalation {index + 1}" for index in entry.get("escalations", [])]
    return {"session_id": entry["session_id"], "timer": ", ".join(sent) or "reminder", "fired": "code" not in entry,
            "status": "waiting", "error": entry.get("error"), "warnings": entry.get("warnings", []),
            **({"code": entry["code"]} if "code" in entry else {})}


def _notifier(worker: Worker) -> None:
    """The notify thread of a resident worker (issue 21): the notify steps of the waits its branches
    reach run here, one job at a time, so a slow receiver never holds a branch worker. A job left
    in the queue at a stop is not lost: its wait's `notify_pending` stays set until it has run, and
    the next pass (this server's or the next one's) runs it."""
    from roast.drive import run_notify

    while True:
        job, observer = worker.notices.get()
        if job is None or worker.stopping.is_set():
            return
        try:
            s = worker.store.get(job.session_id)
            if (s.status, s.wait_seq, bool(s.notify_pending)) != ("waiting", job.wait_seq, True):
                continue  # already notified (by an earlier pass), or the wait is over
            for warning in run_notify(worker.store, job, observer, worker.now):
                worker.log("notify failed", session=job.session_id, warning=warning)
        except RoastError as err:
            worker.log("notify failed; a later pass runs it again", session=job.session_id, code=err.code,
                       error=err.message)
        except Exception as err:  # noqa: BLE001 - a bug must not take the notify thread away; it is logged
            worker.log("notify failed: internal error", session=job.session_id, error=f"{type(err).__name__}: {err}")
        finally:
            with worker.cond:
                worker.notifying.discard((job.session_id, job.wait_seq))
