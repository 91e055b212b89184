"""The closed `Request` union a node yields, the answers it is sent back, and the event shape.

`Shell`, `AskModel`, `CallPython`, `PostWebhook`, `Ask` are performed by `effects`; `Receive`,
`Timer`, `Checkpoint`, `Suspend`, `Fork` are answered by the runner itself. `timeout_event` is the
one shape of a fired timeout. Every class is a `Record` with annotated fields. Performs no I/O.
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


class Shell(Record):
    """Run `command` with `/bin/sh -c`; interpolated values arrive through `env` (SPEC §4).
    `step` is False for a condition's or collection's command: not a step of its own."""
    command: str
    env: dict[str, str]
    path: str
    name: str | None = None
    timeout: float | None = None
    step: bool = True


class Done(Record):
    """A finished command: exit status and captured output."""
    status: int
    stdout: str
    stderr: str = ""


class AskModel(Record):
    """Ask the model: `prompt` after the conversation so far (`transcript`); `provider`, `base_url` and
    `max_tool_rounds` are the step's own settings (None: the workflow's)."""
    prompt: str
    path: str
    name: str | None = None
    model: str | None = None
    json: bool = False
    transcript: tuple[dict[str, Any], ...] = ()
    step: bool = True
    provider: str | None = None
    base_url: str | None = None
    max_tool_rounds: int | None = None


class Answer(Record):
    """A model's answer: the final `text`, the `turns` of this exchange (the user message, any assistant
    tool calls and tool results, the final assistant message: what the transcript gains) and the
    token `usage` as (prompt, completion)."""
    text: str
    turns: tuple[dict[str, Any], ...]
    usage: tuple[int, int] = (0, 0)


class CallPython(Record):
    """Call a Python step: `target` is a file path (`run(ctx)` or a class with `call`) or a callable."""
    target: Any
    ctx: Any
    path: str
    name: str | None = None
    params: dict[str, Any] = {}
    step: bool = True


class PostWebhook(Record):
    """POST `payload` (JSON) to `url`, signed (a `webhook:` notify step, issue 15)."""
    url: str
    payload: dict[str, Any]
    msg_id: str
    path: str
    name: str = "webhook"
    step: bool = True


class Ask(Record):
    """Ask the person at the terminal (an `input:` step)."""
    prompt: str
    kind: str
    path: str
    name: str | None = None
    options: tuple[str, ...] = ()
    default: Any = None
    step: bool = True


class Event(Record):
    """An event delivered to a wait; `delivery` says who sent it, why, and its id (issue 14)."""
    name: str
    data: dict[str, Any]
    received_at: str
    delivery: dict[str, Any] = {}


class Delivery(Record):
    """The runner's answer to `Receive`: the wait's absolute deadline and the event, if any."""
    deadline: float | None
    event: Event | None


class Receive(Record):
    """A wait asks whether an event (or its deadline) is already there for it. Only a wait that
    was already waiting (`resumed`) is given an event."""
    path: str
    wait: str
    events: tuple[str, ...]
    timeout: float | None
    deadline: float | None
    resumed: bool = False


class WaitInfo(Record):
    """A wait the session rests on: events, deadline, schemas (event → JSON text), `notify:` steps
    (issue 14); `kind`: `event`, `sleep` or `retry` (issue 16); `title`, `description`, `labels`
    ((event, text) pairs): what a person sees, rendered when the wait was reached (issue 22);
    `policy`: who may decide and how many must agree (issue 23)."""
    path: str
    wait: str
    events: tuple[str, ...]
    deadline: float | None
    schemas: tuple[tuple[str, str], ...] = ()
    notify: Any = None
    kind: str = "event"
    title: str | None = None
    description: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    policy: Any = None  # issue 23: the wait's `roast.policy.Policy` (None: anyone decides, at once)


class Timer(Record):
    """Ask the runner about a pause (issue 16). Without `deadline`, the runner fixes one: now +
    `seconds` (shortened at random by up to half when `jitter`). With one, it answers whether it
    has come; when it has not and `hold` is set and it is near (ROAST_SLEEP_IN_PROCESS), the
    runner first lets it pass in process. The reply is an `Alarm`."""
    path: str
    seconds: float | None = None
    deadline: float | None = None
    hold: bool = False
    jitter: bool = False


class Alarm(Record):
    """The runner's answer to `Timer`: the absolute deadline, and whether it has come."""
    deadline: float
    due: bool


class Suspend(Record):
    """Stop here: save the cursor and context, report the waits, end the process."""
    cursor: Cursor
    waits: tuple[WaitInfo, ...]


class Checkpoint(Record):
    """A step finished: save the cursor and context so a crash loses at most the step in flight."""
    cursor: Cursor


def _same(cursor: Cursor) -> Cursor:
    return cursor


class Fork(Record):
    """Drive these branch generators (None: a branch already finished) concurrently; only the runner
    does that. `cursors`: theirs now; `wrap` turns the group's cursor into the whole tree's (each
    ancestor adds its level, as for Checkpoint). The reply is one `Ended` per branch, in order."""
    branches: tuple[Any, ...]
    cursors: tuple[Cursor, ...]
    wrap: Callable[[Cursor], Cursor] = _same


class Ended(Record):
    """How one branch of a Fork ended: `done`, `failed` (with `error`) or `waiting` (with `waits`)."""
    how: str
    cursor: Cursor
    error: BaseException | None = None
    waits: tuple[WaitInfo, ...] = ()


if TYPE_CHECKING:
    # The closed union of what a node may yield: the runner's `match` over it is checked by mypy.
    Request = Union[Shell, AskModel, CallPython, PostWebhook, Ask, Receive, Timer, Suspend, Checkpoint, Fork]
