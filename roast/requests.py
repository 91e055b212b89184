"""The requests a node yields and the answers it gets back: the closed `Request` union and the event shape.

A node asks for everything that takes time or touches the world by yielding one of these
(`Shell`, `AskModel`, `CallPython`, `PostWebhook`, `Ask` are performed by `effects`; `Receive`,
`Timer`, `Checkpoint`, `Suspend`, `Fork` are answered by the runner itself) and is sent back the
answer (`Done`, `Answer`, `Delivery`, `Alarm`, a tuple of `Ended`, …). `timeout_event` is the one
shape of a fired timeout, whoever fires it. Performs no I/O.

Every class is a `Record` (immutable, slotted, cheap to define); its fields are annotated so mypy
checks them.
"""
from __future__ import annotations

from collections.abc import Callable
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.expressions import iso
from roast.record import Record

if TYPE_CHECKING:
    from typing import Any, Union

    # A cursor is nested tuples of step indices, branch and event names and deadlines (see steps).
    Cursor = Union[None, str, tuple[Any, ...]]

TIMEOUT = "timeout"  # the event a wait's deadline delivers


def timeout_event(deadline: float | str | None, refused: str | None = None) -> dict[str, Any]:
    """The data of the `timeout` event a passed deadline delivers: `deadline` as ISO-8601 UTC (an
    epoch is converted, so a branch sees the same text whoever fired it: the runner, `roast tick`,
    a late event) and, when a late event was refused in its favour, `refused_event` (SPEC §6)."""
    data: dict[str, Any] = {"deadline": iso(deadline) if isinstance(deadline, (int, float)) else deadline}
    if refused is not None:
        data["refused_event"] = refused
    return data


# --------------------------------------------------------------------------- performed by effects


class Shell(Record):
    """Run `command` with `/bin/sh -c`; interpolated values arrive through `env` (SPEC §4).
    `step` is False for a condition's or collection's command: not a step of its own."""

    __slots__ = ("command", "env", "path", "name", "timeout", "step")
    _defaults = {"name": None, "timeout": None, "step": True}
    command: str
    env: dict[str, str]
    path: str
    name: str | None
    timeout: float | None
    step: bool


class Done(Record):
    """A finished command: exit status and captured output."""

    __slots__ = ("status", "stdout", "stderr")
    _defaults = {"stderr": ""}
    status: int
    stdout: str
    stderr: str


class AskModel(Record):
    """Ask the model: `prompt` after the conversation so far (`transcript`); `provider`, `base_url` and
    `max_tool_rounds` are the step's own settings (None: the workflow's)."""

    __slots__ = ("prompt", "path", "name", "model", "json", "transcript", "step", "provider", "base_url",
                 "max_tool_rounds")
    _defaults = {"name": None, "model": None, "json": False, "transcript": (), "step": True, "provider": None,
                 "base_url": None, "max_tool_rounds": None}
    prompt: str
    path: str
    name: str | None
    model: str | None
    json: bool
    transcript: tuple[dict[str, Any], ...]
    step: bool
    provider: str | None
    base_url: str | None
    max_tool_rounds: int | None


class Answer(Record):
    """A model's answer: the final `text`, the `turns` of this exchange (the user message, any assistant
    tool calls and tool results, the final assistant message: what the transcript gains) and the
    token `usage` as (prompt, completion)."""

    __slots__ = ("text", "turns", "usage")
    _defaults = {"usage": (0, 0)}
    text: str
    turns: tuple[dict[str, Any], ...]
    usage: tuple[int, int]


class CallPython(Record):
    """Call a Python step: `target` is a file path (`run(ctx)` or a class with `call`) or a callable."""

    __slots__ = ("target", "ctx", "path", "name", "params", "step")
    _defaults = {"name": None, "params": {}, "step": True}
    target: Any
    ctx: Any
    path: str
    name: str | None
    params: dict[str, Any]
    step: bool


class PostWebhook(Record):
    """POST `payload` (JSON) to `url`, signed (a `webhook:` notify step, issue 15)."""

    __slots__ = ("url", "payload", "msg_id", "path", "name", "step")
    _defaults = {"name": "webhook", "step": True}
    url: str
    payload: dict[str, Any]
    msg_id: str
    path: str
    name: str
    step: bool


class Ask(Record):
    """Ask the person at the terminal (an `input:` step)."""

    __slots__ = ("prompt", "kind", "path", "name", "options", "default", "step")
    _defaults = {"name": None, "options": (), "default": None, "step": True}
    prompt: str
    kind: str
    path: str
    name: str | None
    options: tuple[str, ...]
    default: Any
    step: bool


# --------------------------------------------------------------------------- answered by the runner


class Event(Record):
    """An event delivered to a wait; `delivery` says who sent it, why, and its id (issue 14)."""

    __slots__ = ("name", "data", "received_at", "delivery")
    _defaults = {"delivery": {}}
    name: str
    data: dict[str, Any]
    received_at: str
    delivery: dict[str, Any]


class Delivery(Record):
    """The runner's answer to `Receive`: the wait's absolute deadline and the event, if any."""

    __slots__ = ("deadline", "event")
    deadline: float | None
    event: Event | None


class Receive(Record):
    """A wait asks whether an event (or its deadline) is already there for it. Only a wait that
    was already waiting (`resumed`) is given an event."""

    __slots__ = ("path", "wait", "events", "timeout", "deadline", "resumed")
    _defaults = {"resumed": False}
    path: str
    wait: str
    events: tuple[str, ...]
    timeout: float | None
    deadline: float | None
    resumed: bool


class WaitInfo(Record):
    """A wait the session now rests on: its events, deadline, schemas (event → JSON text) and the
    `notify:` steps to run once it is saved (issue 14). `kind`: `event` (a `wait_for_event`),
    `sleep` (a `sleep:` step) or `retry` (a step's backoff before its next attempt, issue 16)."""

    __slots__ = ("path", "wait", "events", "deadline", "schemas", "notify", "kind")
    _defaults = {"schemas": (), "notify": None, "kind": "event"}
    path: str
    wait: str
    events: tuple[str, ...]
    deadline: float | None
    schemas: tuple[tuple[str, str], ...]
    notify: Any
    kind: str


class Timer(Record):
    """Ask the runner about a pause (issue 16). Without `deadline`, the runner fixes one: now +
    `seconds` (shortened at random by up to half when `jitter`). With one, it answers whether it
    has come; when it has not and `hold` is set and it is near (ROAST_SLEEP_IN_PROCESS), the
    runner first lets it pass in process. The reply is an `Alarm`."""

    __slots__ = ("path", "seconds", "deadline", "hold", "jitter")
    _defaults = {"seconds": None, "deadline": None, "hold": False, "jitter": False}
    path: str
    seconds: float | None
    deadline: float | None
    hold: bool
    jitter: bool


class Alarm(Record):
    """The runner's answer to `Timer`: the absolute deadline, and whether it has come."""

    __slots__ = ("deadline", "due")
    deadline: float
    due: bool


class Suspend(Record):
    """Stop here: save the cursor and context, report the waits, end the process."""

    __slots__ = ("cursor", "waits")
    cursor: Cursor
    waits: tuple[WaitInfo, ...]


class Checkpoint(Record):
    """A step finished: save the cursor and context so a crash loses at most the step in flight."""

    __slots__ = ("cursor",)
    cursor: Cursor


def _same(cursor: Cursor) -> Cursor:
    return cursor


class Fork(Record):
    """Drive these branch generators concurrently (a parallel group); only the runner does that.

    `branches` holds one generator per branch (None for a branch already finished), `cursors`
    their cursors now, and `wrap` turns the group's cursor (one per branch) into the cursor of the
    whole tree: each ancestor adds its level on the way up, as for Checkpoint. The reply is one
    `Ended` per branch, in order."""

    __slots__ = ("branches", "cursors", "wrap")
    _defaults = {"wrap": _same}
    branches: tuple[Any, ...]
    cursors: tuple[Cursor, ...]
    wrap: Callable[[Cursor], Cursor]


class Ended(Record):
    """How one branch of a Fork ended: `done`, `failed` (with `error`) or `waiting` (with `waits`)."""

    __slots__ = ("how", "cursor", "error", "waits")
    _defaults = {"error": None, "waits": ()}
    how: str
    cursor: Cursor
    error: BaseException | None
    waits: tuple[WaitInfo, ...]


if TYPE_CHECKING:
    # The closed union of what a node may yield: the runner's `match` over it is checked by mypy.
    Request = Union[Shell, AskModel, CallPython, PostWebhook, Ask, Receive, Timer, Suspend, Checkpoint, Fork]
