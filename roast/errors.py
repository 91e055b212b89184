"""Every error roast raises on purpose: `RoastError` and its subclasses.

Each subclass sets `exit_code` (SPEC §8) and a stable `code` for `--json`; a refusal a caller acts
on carries typed, declared fields (`document`, `EventLate.claimed`), never attributes set on the fly.
Messages say what went wrong, `where` says where (file:line, step path, session),
and `hint` says how to fix it. The CLI catches these once, in `cli.main`.
"""
from __future__ import annotations


class RoastError(Exception):
    """Base class: one clear sentence, optionally a place and a hint."""

    exit_code = 1
    code = "error"
    detail: str | None = None  # a failing Python step's traceback (shown with -v)

    def __init__(self, msg: str, *, where: str | None = None, hint: str | None = None,
                 document: dict[str, object] | None = None) -> None:
        super().__init__(msg)
        self.where, self.hint = where, hint
        # what a refused delivery answers with (`roast resume --json`, `roast serve`): its outcome,
        # session and event; the `error` object is added by views.refusal_document
        self.document: dict[str, object] = dict(document or {})

    @property
    def message(self) -> str:
        return str(self.args[0])

    def __str__(self) -> str:
        text = f"{self.where}: {self.args[0]}" if self.where else str(self.args[0])
        return f"{text}\n  hint: {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        """`{"file", "line", "message", "hint"}` for `--json` (file and line from `where`, if any)."""
        file: str | None = self.where
        line: int | None = None
        if self.where:
            head, sep, tail = self.where.rpartition(":")
            if sep and tail.isdigit():
                file, line = head, int(tail)
        return {"file": file, "line": line, "message": self.message, "hint": self.hint}


class StepFailed(RoastError):
    """A step failed while running (command exit status, Python exception, bad expression)."""

    exit_code = 1
    code = "step_failed"


class TimedOut(RoastError):
    """A wait's deadline passed and nothing handles the timeout."""

    exit_code = 1
    code = "timed_out"


class UsageError(RoastError):
    """Bad command-line or API input: nothing ran, nothing changed."""

    exit_code = 2
    code = "usage"


class WorkflowInvalid(UsageError):
    """The workflow cannot be loaded; `problems` lists every mistake found."""

    code = "workflow_invalid"
    shown = 20  # issue 11: the text lists this many problems; `problems` keeps all of them (--json)

    def __init__(self, msg: str, *, where: str | None = None, hint: str | None = None,
                 problems: list[RoastError] | None = None) -> None:
        super().__init__(msg, where=where, hint=hint)
        self.problems = problems or []

    def __str__(self) -> str:
        if len(self.problems) <= 1:
            return str(self.problems[0]) if self.problems else super().__str__()
        lines = [f"{self.args[0]}:"] + [f"  - {p}".replace("\n", "\n    ")
                                         for p in self.problems[:self.shown]]
        if len(self.problems) > self.shown:
            lines.append(f"  … and {len(self.problems) - self.shown} more")
        return "\n".join(lines)


class BadEventData(UsageError):
    """Event data is not an acceptable JSON object (size, syntax, depth, NaN, duplicates, schema)."""

    code = "invalid"

    def __init__(self, msg: str, *, where: str | None = None, hint: str | None = None,
                 document: dict[str, object] | None = None) -> None:
        super().__init__(msg, where=where, hint=hint, document=document)
        self.document.setdefault("outcome", "invalid")  # every refused delivery has an outcome (issue 24)


class NotFound(RoastError):
    """No session (or workflow file) by that name."""

    exit_code = 3
    code = "not_found"


class Ambiguous(NotFound):
    """A session id prefix matches more than one session."""

    code = "ambiguous"


class Refused(RoastError):
    """The session exists but cannot do what was asked: it changed nothing."""

    exit_code = 3
    code = "refused"


class NotWaiting(Refused):
    code = "not_waiting"


class EventRefused(Refused):
    code = "unknown_event"


class EventLate(Refused):
    """An event came after its wait's deadline: refused, and the wait's timeout was claimed instead.
    `claimed`: the timeout path is claimed but not yet run (the caller runs it, e.g. `roast serve`'s
    worker); `session_id` says which session."""

    code = "late"

    def __init__(self, msg: str, *, session_id: str, claimed: bool, hint: str | None = None,
                 document: dict[str, object] | None = None) -> None:
        super().__init__(msg, hint=hint, document=document)
        self.session_id, self.claimed = session_id, claimed


class Cancelled(Refused):
    """The session was cancelled (`roast cancel`, issue 20) while this process ran it: its next
    write is refused, and the drive stops there (reported as the cancel, not as a step failure)."""

    code = "cancelled"


class StepsStillRunning(Refused):
    """Recovery refused: a step of the dead process still has processes running. Worth trying again
    later (the worker does), unlike other refusals."""

    code = "refused"


class Closed(NotWaiting):
    """The session has finished: nothing more can be delivered to it."""

    code = "closed"


class StateRefused(Refused):
    """A saved continuation failed its integrity or compatibility check; it was not loaded."""

    code = "state_refused"


class DefinitionChanged(Refused):
    code = "definition_changed"


class Unauthorized(Refused):
    """`roast serve`: no valid credential: 401, and nothing changed."""

    code = "unauthorized"


class Replayed(Refused):
    """A signed request already delivered to another session or event (issue 21): a signature
    works once, where it was sent."""

    code = "replayed"


class Forbidden(Refused):
    """A gated wait's policy (issue 23) does not let this actor deliver its event: not an approver,
    the session's starter under `self_approval: false`, or unverified under `require_verified: true`.
    Recorded with the actor; nothing else changed (HTTP 403)."""

    code = "forbidden"


class RequestRefused(UsageError):
    """`roast serve`: a request it cannot take (too large, not JSON, no key): nothing changed.
    `code` says which (`too_large`, `unsupported_media_type`, `usage`)."""

    def __init__(self, code: str, msg: str, hint: str | None = None) -> None:
        super().__init__(msg, hint=hint)
        self.code = code


class StoreUnavailable(RoastError):
    """The session store cannot be used right now (locked, full, read-only, corrupt)."""

    exit_code = 4
    code = "store_unavailable"


class Interrupted(BaseException):
    """roast was told to stop (SIGTERM, SIGHUP; SIGINT is KeyboardInterrupt). Not an error of the
    workflow: the session stays recoverable. `session_id` and `step` say what was interrupted."""

    def __init__(self, signum: int, *, restart: bool = False) -> None:
        super().__init__(signum)
        self.signum = signum
        self.session_id: str | None = None
        self.step: str | None = None
        # roast stopped the drive itself (`roast serve` shutting down, issue 20): the session stays
        # recoverable automatically, unlike one a person stopped (`interrupted`)
        self.restart = restart

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
