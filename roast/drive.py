"""One drive of a session: run its step tree from a cursor until the end or the next wait, save
every step and checkpoint through the store (the journal), and hand back what the wait's `notify:`
steps still have to do — as a value (`NotifyJob`), run by the caller once it has let go of the session.

Knows nothing of how a session was claimed (that is `deliver` and `api._continue`); never prints.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

from roast.errors import Cancelled, Interrupted, NotWaiting, RoastError, StoreUnavailable, TimedOut
from roast.expressions import iso
from roast.settings import link_max_age, public_url, sleep_in_process
from roast.store import EventRecord, StepDone, StepStart
from roast.views import Result, plain, result_of, resume_commands

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

    from roast.context import Context
    from roast.definition import Definition
    from roast.runner import Observer
    from roast.requests import Event, WaitInfo
    from roast.store import Session, SessionStore

STATE_VERSION = 2


class _Journal:
    """Saves step history and checkpoints through the store, and tells the observer. A checkpoint
    is held until the next effect, so its transaction also carries the next step's start row
    (one transaction per step, issue 12); only what changed since the last save is written."""

    def __init__(self, store: SessionStore, session_id: str, defn: Definition, ctx: Context,
                 observer: Observer, now: Callable[[], float]) -> None:
        self.store, self.session_id, self.defn, self.ctx, self.observer = store, session_id, defn, ctx, observer
        self.now = now
        self._began: dict[tuple[str, int], float] = {}
        self.done: list[StepDone] = []      # finished steps not yet written
        self.changes: dict[str, Any] | None = None
        self.cursor: Any = None
        self.dirty = False
        self.delivered_now = False
        self.clear_pending = False
        self.saved_at: str | None = None    # the last cursor written, for messages
        self.running: list[str] = []        # steps in flight
        self.failed: set[str] = set()       # steps whose attempt failed in this drive (a retry follows)
        self.names: dict[str, str | None] = {}  # step path -> its name, for notes

    def checkpoint(self, cursor: Any) -> None:
        change = self.ctx.take_changes()
        self.changes = change if self.changes is None else self.ctx.merge_changes(self.changes, change)
        self.cursor, self.dirty = cursor, True
        if self.delivered_now:
            self.clear_pending, self.delivered_now = True, False

    def delivered(self, event: Event) -> None:
        self.delivered_now = True

    def _write(self, start: StepStart | None) -> int:
        from roast import tree

        cursor_text = tree.describe(self.defn.root, self.cursor, self.ctx.collections) if self.dirty else None
        delta = {"cursor": self.cursor, "changes": self.changes} if self.dirty else None
        attempt = self.store.advance(self.session_id, changes=delta,
                                     cursor=cursor_text, finished=self.done, start=start,
                                     delivered=self.clear_pending, now=self.now())
        if self.dirty:
            self.saved_at = cursor_text
        self.done, self.changes, self.dirty, self.clear_pending = [], None, False, False
        return attempt

    def started(self, request: Any) -> int:
        attempt = self._write(StepStart(request.path, request.name or "", self.now()))
        self.store.settle()  # issue 25: a batch's writes (`roast tick`) are committed before any step runs
        self._began[(request.path, attempt)] = time.monotonic()
        self.running.append(request.path)
        self.names[request.path] = request.name
        label = self._label(request.path)
        if request.path in self.failed:
            self.observer.note(f"retrying step {label} (attempt {attempt})")
        elif attempt > 1:
            self.observer.note(f"step {label} ran before; running it again (attempt {attempt})")
        self.observer.started(request.path, request.name, attempt)
        return attempt

    def flush(self) -> None:
        if self.dirty or self.done:
            self._write(None)
        self.store.settle()  # a command or a sleep follows (the runner flushes first): committed first

    def finished(self, request: Any, attempt: int, status: str, output: Any, error: str | None = None,
                 usage: tuple[int, int] | None = None) -> None:
        text = _text(output)
        if usage and status == "ok" and error is None:  # an ok row's note: the tokens a prompt used
            error = usage_note(usage)
        self.done.append(StepDone(request.path, attempt, status, text[:65536], self.now(),
                                  error[:4096] if error else None))
        if status == "failed":
            self.failed.add(request.path)
        began = self._began.pop((request.path, attempt), time.monotonic())
        if request.path in self.running:
            self.running.remove(request.path)
        self.observer.finished(request.path, request.name, status, time.monotonic() - began)

    def spawned(self, path: str, attempt: int, pgid: int) -> None:
        if attempt and not self.store.spawned(self.session_id, path, attempt, pgid):
            from roast.stop import stop_groups

            stop_groups([pgid], 0.0)  # cancelled as it started (issue 20): the next write stops the drive

    def pausing(self, path: str, seconds: float) -> None:
        self.observer.note(f"step {self._label(path)} failed; next attempt in {seconds:.1f} s")

    def _label(self, path: str) -> str:
        name = self.names.get(path)
        return f"{path} {name}" if name else path

    def take_done(self) -> list[StepDone]:
        done, self.done = self.done, []
        return done


def usage_note(usage: tuple[int, int]) -> str:
    """How a prompt step's token usage is kept in its history row (issue 17): the note of an ok row."""
    return f"{USAGE_NOTE}{usage[0]} prompt + {usage[1]} completion tokens"


USAGE_NOTE = "usage: "


def _text(value: Any) -> str:
    from roast.expressions import to_text

    return to_text(value)


def state_of(ctx: Context, cursor: Any) -> dict[str, Any]:
    return {"v": STATE_VERSION, "cursor": cursor, "context": ctx}


def _awaiting(waits: Sequence[WaitInfo], about: str | None = None) -> list[dict[str, Any]]:
    """What a session awaits, as saved: each event with its wait, deadline, schema and what a person
    sees of the gate (`about`: the workflow's own description, issue 22)."""
    out = []
    for w in waits:
        schemas = dict(w.schemas or ())
        for name in w.events:
            entry: dict[str, Any] = {"event": name, "wait": w.wait, "path": w.path, "deadline": w.deadline}
            entry.update(_shown(w))
            if about:
                entry["about"] = about
            if name in schemas:
                entry["schema"] = json.loads(schemas[name])
            if w.policy is not None:  # issue 23: what the delivery's transaction decides with
                from roast.policy import to_doc

                entry["policy"] = to_doc(w.policy)
            out.append(entry)
    # a pause (a `sleep:`, a retry's backoff) awaits no event, only its deadline (issue 16)
    return out + [{"event": None, "wait": w.wait, "path": w.path, "deadline": w.deadline, "kind": w.kind}
                  for w in waits if not w.events]


def _ahead(defn: Definition, cursor: Any) -> list[str]:
    """`Session.ahead`: the events the waits ahead declare, those only gates declare marked (issue 23)."""
    from roast import outcomes, tree

    def takes_queued(wait: Any) -> bool:  # a gated wait never takes a queued event as it opens
        if wait.policy is None:
            return True
        from roast.policy import to_doc

        return not outcomes.gated({"policy": to_doc(wait.policy)})

    return outcomes.ahead_of(tree.events_ahead(defn.root, cursor), tree.events_ahead(defn.root, cursor, takes_queued))


def _model(defn: Definition) -> Any:
    from roast.effects import choose_model

    return choose_model(defn.provider)


def _models(defn: Definition) -> Any:
    """The workflow's model keys for the effects; the token is read only when a call needs it."""
    from roast.definition import api_token
    from roast.effects import ModelSetup

    return ModelSetup(defn.models, lambda: api_token(defn))


class NotifyJob:
    """A saved wait's `notify:` steps, still to run: returned by `drive` and run by `notify` after
    the session's lock is released (a delivery is never kept waiting by a notifier, issue 14)."""

    __slots__ = ("session_id", "waits", "ctx", "defn", "cwd", "wait_seq")

    def __init__(self, session_id: str, waits: Sequence[WaitInfo], ctx: Context, defn: Definition, cwd: str | None,
                 wait_seq: int) -> None:
        self.session_id, self.waits, self.ctx, self.defn, self.cwd = session_id, list(waits), ctx, defn, cwd
        self.wait_seq = wait_seq


def drive(store: SessionStore, session_id: str, defn: Definition, ctx: Context, cursor: Any,
          event: Event | None, observer: Observer, now: Callable[[], float],
          cwd: str | None, stop: Any = None) -> tuple[Result, NotifyJob | None]:
    """Run from `cursor` until the end or the next wait; save, then return what happened, and the
    notify job of the wait it saved (if its waits have `notify:` steps). `stop`: a `worker.Stop`."""
    from roast.store import mark_running

    mark_running(session_id)  # live while this process drives it, even after a store error (store.py)
    try:
        return _drive_marked(store, session_id, defn, ctx, cursor, event, observer, now, cwd, stop)
    finally:
        mark_running(session_id, False)


def _drive_marked(store: SessionStore, session_id: str, defn: Definition, ctx: Context, cursor: Any,
                  event: Event | None, observer: Observer, now: Callable[[], float],
                  cwd: str | None, stop: Any) -> tuple[Result, NotifyJob | None]:
    from roast import tree
    from roast.effects import Effects
    from roast.runner import Completed, Runner, Waiting

    model = _model(defn)
    while True:
        effects = Effects(ctx=ctx, model=model, cwd=cwd, announce=observer.note,
                          pause=getattr(observer, "pause", None), unpause=getattr(observer, "unpause", None),
                          models=_models(defn))
        journal = _Journal(store, session_id, defn, ctx, observer, now)
        runner = Runner(effects if stop is None else stop.guard(effects), now=now, journal=journal, event=event,
                        cancel=effects.kill_all, hold_limit=sleep_in_process())
        effects.on_spawn = runner.spawned
        ending: tuple[str, RoastError] | None = None
        try:
            outcome: Completed | Waiting | None = runner.drive(defn.root.run(ctx, cursor))
        except StoreUnavailable as err:
            raise _stopped(err, session_id, journal) from err
        except (KeyboardInterrupt, Interrupted) as err:
            _interrupted(store, session_id, journal, err, now)
            raise
        except Cancelled:  # `roast cancel` (issue 20): a write was refused; nothing after it runs
            return cancelled(store, session_id), None
        except TimedOut as err:
            outcome, ending = None, ("timed_out", err)
        except RoastError as err:  # only a step decides `failed`
            outcome, ending = None, ("failed", err)
        finally:
            effects.close()
            if stop is not None:
                stop.forget(effects)
        try:
            if ending is not None:
                status, failure = ending
                if status == "failed":
                    journal.flush()  # the last checkpoint is kept, for `roast retry`
                ended = store.finish(session_id, status, output=plain(ctx.output), final_output=ctx.final_output(),
                                     error=str(failure), finished=journal.take_done(), keep_state=status == "failed",
                                     now=now())
                return result_of(ended, error=str(failure))._replace(detail=failure.detail), None
            if isinstance(outcome, Completed):
                ended = store.finish(session_id, "completed", output=plain(ctx.output), final_output=ctx.final_output(),
                                     finished=journal.take_done(), cursor="end", now=now())
                return result_of(ended), None
            assert isinstance(outcome, Waiting)
            suspend = outcome.suspend
            # SPEC §6: saved before it is reported, so a crash after the print cannot lose the wait.
            notify = [w for w in suspend.waits if w.notify is not None]
            held = store.suspend(session_id, state_of(ctx, suspend.cursor),
                                 cursor=tree.describe(defn.root, suspend.cursor, ctx.collections),
                                 awaiting=_awaiting(suspend.waits, defn.about), output=plain(ctx.output),
                                 finished=journal.take_done(), undelivered=runner.undelivered(),
                                 ahead=_ahead(defn, suspend.cursor), notify=bool(notify),
                                 now=now())
        except StoreUnavailable as err:
            raise _stopped(err, session_id, journal) from err
        except Cancelled:  # a step killed by the cancel ends here as the cancel, not as its failure
            return cancelled(store, session_id), None
        ctx.forget_changes()
        if held.taken is None:
            # the notify steps run once the caller has let go of the session (see `notify`)
            job = NotifyJob(session_id, notify, ctx, defn, cwd, held.wait_seq) if notify else None
            return result_of(store.get(session_id)), job
        # an event that arrived early was waiting in the inbox: its branch runs now (issue 14)
        taken = held.taken
        observer.note(f"session {session_id}: {taken.name!r} arrived before the wait (at {iso(taken.received_at)}) "
                      "and was kept; its branch runs now")
        event, cursor = event_of(taken), suspend.cursor



def notify(store: SessionStore, job: NotifyJob | None, result: Result, observer: Observer,
           now: Callable[[], float]) -> Result:
    """Run the `notify:` steps of the wait a drive just saved (call it with the session's lock
    released). A failing notify step is a warning: the wait is saved, and the command still succeeds."""
    if job is None:
        return result
    warnings = run_notify(store, job, observer, now)
    return result._replace(warnings=list(result.warnings) + warnings) if warnings else result


def run_notify(store: SessionStore, job: NotifyJob, observer: Observer, now: Callable[[], float]) -> list[str]:
    """Run a notify job's steps, once per wait (another process notifying the same wait wins);
    return the warnings of the steps that failed."""
    session_id, wait_seq = job.session_id, job.wait_seq
    try:
        hold = store.hold(f"{session_id}-notify", "roast notify")
        hold.__enter__()
    except NotWaiting:
        return []  # another process is notifying for this wait right now
    warnings: list[str] = []
    try:
        if not store.claim_notice(session_id, wait_seq=wait_seq):
            return []  # notified already (by another process), or an event came first: the wait is passed
        warnings = run_notices(store, job, observer, now, {"reminder": 0})  # issue 23: the first notice is 0
        store.notified(session_id, wait_seq=wait_seq)
    finally:
        hold.__exit__(None, None, None)
    return warnings


def run_notices(store: SessionStore, job: NotifyJob, observer: Observer, now: Callable[[], float],
                extra: dict[str, Any]) -> list[str]:
    """Run the `notify:` steps of each wait of `job` once, with `extra` added to `{{ wait }}` (issue 23:
    `reminder`, `escalation`); the caller has claimed them. The warnings of the steps that failed."""
    from roast.context import NotifyContext
    from roast.effects import Effects
    from roast.runner import Runner

    session_id, wait_seq, ctx, defn = job.session_id, job.wait_seq, job.ctx, job.defn
    warnings: list[str] = []
    session = store.get(session_id)
    commands = {e: c for e, c in zip(session.events, resume_commands(session))}
    try:
        links_now = signed_links(store, session)
        page = page_link(store, session)
        pages = person_pages(store, session)  # issue 23: one page per person `approvers:` names
    except RoastError:
        links_now, page, pages = {}, None, {}
    for wait in job.waits:
        value = {"session_id": session_id, "events": list(wait.events), "deadline": iso(wait.deadline),
                 "resume": {e: commands.get(e, "") for e in wait.events},
                 "links": {e: links_now[e] for e in wait.events if e in links_now}, "path": wait.path,
                 "name": wait.wait, "workflow": defn.name, "seq": wait_seq, "page": page, "escalation": None,
                 "pages": pages, **extra}
        view = NotifyContext(ctx, value)
        effects = Effects(ctx=ctx, model=_model(defn), cwd=job.cwd, announce=observer.note,
                          models=_models(defn))
        journal = _NotifyJournal(store, session_id, observer, now)
        try:
            Runner(effects, now=now, journal=journal).drive(wait.notify.run(view))  # type: ignore[union-attr]
            for text in journal.outputs:
                if text:
                    observer.note(f"notify: {text}")
        except StoreUnavailable:
            raise
        except RoastError as err:
            warnings.append(f"a notify step of {wait.path} failed ({err.message}); the session is still "
                            "waiting")
        finally:
            effects.close()
    return warnings


class _NotifyJournal:
    """History rows for notify steps (the session is waiting: no checkpoints, no cursor)."""

    def __init__(self, store: SessionStore, session_id: str, observer: Observer, now: Callable[[], float]) -> None:
        self.store, self.session_id, self.observer, self.now = store, session_id, observer, now
        self.began: dict[str, float] = {}
        self.outputs: list[str] = []

    def started(self, request: Any) -> int:
        self.began[request.path] = self.now()
        self.observer.started(request.path, request.name, 1)
        return 1

    def finished(self, request: Any, attempt: int, status: str, output: Any, error: str | None = None,
                 usage: tuple[int, int] | None = None) -> None:
        text = _text(output)
        start = StepStart(request.path, request.name or "", self.began.pop(request.path, self.now()))
        self.store.record_step(self.session_id, start, StepDone(request.path, 1, status, text[:65536], self.now(),
                                                                error[:4096] if error else None))
        self.outputs.append(text.strip())
        self.observer.finished(request.path, request.name, status, 0.0)

    def checkpoint(self, cursor: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def delivered(self, event: Any) -> None:
        pass

    def spawned(self, path: str, attempt: int, pgid: int) -> None:
        pass

    def pausing(self, path: str, seconds: float) -> None:
        self.observer.note(f"notify step {path} failed; next attempt in {seconds:.1f} s")


def event_of(record: EventRecord) -> Event:
    """A claimed delivery as the event its branch reads."""
    from roast.requests import Event

    from roast.requests import TIMEOUT, timeout_event

    delivery = {"id": record.event_id, "actor": record.actor, "reason": record.reason, "source": record.source,
                "received_at": iso(record.received_at), "verified": bool(record.verified)}
    if record.approvals is not None:  # issue 23: who decided a gated wait, `{{ delivery.approvals }}`
        delivery["approvals"] = record.approvals
    data = record.data
    if record.name == TIMEOUT and isinstance(data, dict):  # a claim of roast < 0.3 kept the deadline as an epoch
        data = timeout_event(data.get("deadline"), data.get("refused_event"))
    return Event(record.name, data, iso(record.received_at) or "", delivery)


def cancelled(store: SessionStore, session_id: str) -> Result:
    """A session cancelled while this process ran it (issue 20): `cancelled by WHO (REASON)`."""
    session = store.get(session_id)
    who = f" by {session.cancelled_by}" if session.cancelled_by else ""
    why = f" ({session.reason})" if session.reason else ""
    return result_of(session, error=f"cancelled{who} at {iso(session.finished_at)}{why}; nothing after it ran")


def _stopped(err: StoreUnavailable, session_id: str, journal: _Journal) -> StoreUnavailable:
    """SPEC §11: a store error stops the process; the session stays recoverable, and the message
    says what is true (issue 10)."""
    last = journal.saved_at or "its last saved step"
    return StoreUnavailable(f"{err.message}; session {session_id} is stopped after {last} (nothing after it was "
                            f"saved), and `roast resume -s {session_id}` continues it from there once the store "
                            "works again", hint=err.hint)


def _interrupted(store: SessionStore, session_id: str, journal: _Journal, err: BaseException,
                 now: Callable[[], float]) -> None:
    """Record that roast was stopped (the runner has already killed the steps' process groups)."""
    import signal

    signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
    name = signal.Signals(signum).name
    step = ", ".join(journal.running) or None
    if isinstance(err, Interrupted):
        err.session_id, err.step = session_id, step
    else:
        err.session_id, err.step = session_id, step  # type: ignore[attr-defined]
    try:
        journal.flush()
        store.interrupted(session_id, error=f"interrupted by {name}" + (f" during {step}" if step else ""),
                          finished=journal.take_done(), restart=isinstance(err, Interrupted) and err.restart,
                          now=now())
    except RoastError:
        pass  # the store is unavailable too: the session is orphaned all the same, and recoverable




def signed_links(store: SessionStore, row: Session, public: str | None = None) -> dict[str, str]:
    """One signed approval link per event a waiting session accepts, under `public` (default
    `ROAST_PUBLIC_URL`); `{}` without a public URL or when the session is not waiting."""
    from roast import links as links_mod
    from roast import seal

    public = public or public_url()
    if not public or row.status != "waiting":
        return {}
    key = seal.link_key(store.signing_keys())
    expires = row.updated_at + link_max_age()
    if row.deadline is not None:
        expires = min(expires, row.deadline)
    base = public.rstrip("/")
    return {event: f"{base}/a/{links_mod.make(key, row.id, row.wait_seq, event, expires)}" for event in row.events}


def check_link(store: SessionStore, token: str, now: float) -> tuple[Any, Session, str]:
    """What an approval link grants: `(link, session, csrf_token)`, or `links.BadLink`."""
    from roast import links as links_mod
    from roast import seal

    key = seal.link_key(store.signing_keys())
    link = links_mod.check(key, token, now=now)
    return link, store.get(link.session_id), links_mod.csrf(key, token)


def correlation_key(defn: Definition, ctx: Context) -> str | None:
    """`key:` evaluated when the session starts (issue 15): events can then find it by key."""
    if not defn.key_template:
        return None
    from roast.expressions import render

    ctx.attach_env(dict(os.environ))
    return render(defn.key_template, ctx.namespace())


# --------------------------------------------------------------------------- gate pages (issue 22)

def _shown(wait: WaitInfo) -> dict[str, Any]:
    """What a person sees of a wait (`title`, `description`, `labels`), kept with each awaited
    event when the wait says it (the compiler renders these keys when the wait is reached)."""
    shown = {}
    for name in ("title", "description", "labels"):
        value = getattr(wait, name, None)
        if value:
            shown[name] = dict(value) if name == "labels" else str(value)
    return shown


def page_link(store: SessionStore, row: Session, public: str | None = None) -> str | None:
    """The signed page of the wait a session rests on (every event its own button), under `public`
    (default `ROAST_PUBLIC_URL`); None without a public URL or when it awaits no event."""
    from roast import links as links_mod
    from roast import seal

    public = public or public_url()
    if not public or row.status != "waiting" or not row.events:
        return None
    key = seal.link_key(store.signing_keys())
    # not cut at the deadline (unlike an event link): after it, the page says how the wait ended, and
    # a POST is refused by the claim's wait check all the same
    expires = row.updated_at + link_max_age()
    return f"{public.rstrip('/')}/g/{links_mod.make_page(key, row.id, row.wait_seq, expires)}"


def check_page(store: SessionStore, token: str, now: float) -> tuple[Any, Session, str]:
    """What a page link opens: `(link, session, csrf_token)`, or `links.BadLink`."""
    from roast import links as links_mod
    from roast import seal

    key = seal.link_key(store.signing_keys())
    link = links_mod.check_page(key, token, now=now)
    return link, store.get(link.session_id), links_mod.csrf(key, token)


# --------------------------------------------------------------------------- per-person links (issue 23)

def person_identities(row: Session) -> tuple[str, ...]:
    """The people a waiting session's wait names exactly in `approvers:` (one personal link each),
    in the order the policies list them; () when no policy names anyone exactly."""
    from roast.policy import exact_approvers, from_doc, identity_key

    seen: dict[str, str] = {}
    for entry in row.awaiting or ():
        if entry.get("event") and entry.get("policy"):
            for who in exact_approvers(from_doc(entry["policy"])):
                seen.setdefault(identity_key(who), who)
    return tuple(seen.values())


def person_pages(store: SessionStore, row: Session, public: str | None = None) -> dict[str, str]:
    """One signed page per person its wait's `approvers:` lists exactly (identity → URL), each bound to
    that identity and to a digest of what the page shows, under `public` (default `ROAST_PUBLIC_URL`);
    `{}` without a public URL, when the session awaits no event, or when nobody is named."""
    from roast import links as links_mod
    from roast import seal

    public = public or public_url()
    if not public or row.status != "waiting" or not row.events:
        return {}
    people = person_identities(row)
    if not people:
        return {}
    key = seal.link_key(store.signing_keys())
    expires = row.updated_at + link_max_age()  # as a page link: after the deadline it says how the wait ended
    digest = links_mod.content_digest(row.workflow_name, row.awaiting)
    base = public.rstrip("/")
    return {who: f"{base}/p/{links_mod.make_person(key, row.id, row.wait_seq, who, digest, expires)}"
            for who in people}


def check_person(store: SessionStore, token: str, now: float) -> tuple[Any, Session, str]:
    """What a person's page link opens: `(link, session, csrf_token)`, or `links.BadLink`."""
    from roast import links as links_mod
    from roast import seal

    key = seal.link_key(store.signing_keys())
    link = links_mod.check_person(key, token, now=now)
    return link, store.get(link.session_id), links_mod.csrf(key, token)
