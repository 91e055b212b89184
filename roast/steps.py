"""The step tree's composite nodes and the helpers every node shares: frozen nodes whose `run()`
methods are generators. The leaf nodes are in `leaves`; the requests they yield in `requests`;
the walkers over the tree (describe, signature, wait_at, …) in `tree`.

Every node has `run(ctx, at)`, `ident`, `children()` (its child nodes in step order: the walkers
in `tree` see a node's subtree only through it, so a wait inside a new node is never lost) and
`child(at)` (the child the cursor level `at` points into, or None).

A node never touches a subprocess, a file, the clock or the environment: it yields a request
(`Shell`, `AskModel`, `CallPython`, `Ask`, `Receive`, `Suspend`, `Checkpoint`, `Fork`) and the
runner sends back the answer. Performs no I/O of its own.

**The cursor.** Every composite node reads exactly one level of the cursor `at` it is given and
passes the rest to the child it re-enters, so a resumed run skips straight to the wait without
running a step or re-evaluating a condition, case value or collection (SPEC §6). Levels:

| node          | cursor level                                   |
|---------------|------------------------------------------------|
| `Sequence`    | `(index, child)`; `(len, None)` = finished     |
| `If`          | `("then" or "else", child)`                    |
| `Case`        | `(when index or -1 for else, child)`           |
| `Each`        | `(index, COLLECTED, child)`: the collection as evaluated is in `ctx.collections` (roast 0.1 kept the items themselves in the cursor; such cursors still resume) |
| `Repeat`      | `(iteration, child)`                           |
| `Parallel`    | `(branch cursor or DONE, ...)`, one per branch |
| `WaitForEvent`| `(AT_WAIT, deadline)` or `(event name, child)` |
| `Sleep`       | `(AT_SLEEP, deadline)`                         |
| a leaf with `retry:` | `(AT_RETRY, failures so far, deadline of the next attempt)`; HERE before the first |

`HERE` (None) means "from the start". Suspend, Checkpoint and Fork requests carry the cursor of
the node that yielded them; each ancestor prefixes its own level on the way up (`_within`).

**Scheduling.** Only the runner drives generators: a parallel group yields one `Fork` holding its
branch generators and is told how each ended (STYLE: "only the runner schedules").

Every class is a `Record`: immutable, slotted and cheap to define (start-up, issue 12).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator, Mapping
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.errors import RoastError, StepFailed, TimedOut
from roast.expressions import TEMPLATE, evaluate, has_template, render_value, to_text, truthy
from roast.record import Record
from roast.requests import Checkpoint, Done, Ended, Fork, Receive, Shell, Suspend, WaitInfo
from roast.shell import render_shell

if TYPE_CHECKING:
    from typing import Any, Union

    from roast.context import BranchContext, Context
    from roast.requests import Cursor

    Ctx = Union[Context, BranchContext]
    Steps = Generator[Any, Any, Any]
    # What `child()` returns: the child node, the rest of the cursor, a label for `describe`, and
    # the loop positions so far (for the collection an `each` evaluated).
    Position = tuple[Any, Cursor, str, tuple[int, ...]]

HERE: Cursor = None
DONE = "done"
AT_WAIT = "@wait"
AT_SLEEP = "@sleep"
AT_RETRY = "@retry"
COLLECTED = "@collected"
EVENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
RESERVED_WAIT_KEYS = {"timeout", "within", "on_timeout", "schema", "notify", "title", "description", "labels",
                      # issue 23: a wait's gate policy (roast.policy.POLICY_KEYS)
                      "approvers", "quorum", "self_approval", "require_verified", "remind", "escalate"}


# --------------------------------------------------------------------------- helpers


def _within(wrap: Callable[[Cursor], Cursor], steps: Steps) -> Steps:
    """`yield from steps`, prefixing this node's cursor level to Suspend, Checkpoint and Fork."""
    reply: Any = None
    failure: BaseException | None = None
    while True:
        try:
            request = steps.throw(failure) if failure is not None else steps.send(reply)
        except StopIteration as stop:
            return stop.value
        kind = type(request)
        if kind is Checkpoint:
            request = Checkpoint(wrap(request.cursor))
        elif kind is Suspend:
            request = Suspend(wrap(request.cursor), request.waits)
        elif kind is Fork:
            inner = request.wrap
            request = Fork(request.branches, request.cursors, lambda c, inner=inner: wrap(inner(c)))
        try:
            reply, failure = (yield request), None
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as err:  # noqa: BLE001 - handed to the child: the node that asked decides
            reply, failure = None, err


def runtime_path(path: str, depth: int, ctx: Ctx) -> str:
    """The step path with the iteration of each enclosing loop: `steps[2].steps[0]#3`."""
    if not depth:
        return path
    return path + "".join(f"#{n + 1}" for n in ctx.loop_index[:depth])


def trail_path(path: str, depth: int, trail: tuple[int, ...]) -> str:
    """`runtime_path` for the cursor views, which know the loop positions from the cursor."""
    if not depth:
        return path
    return path + "".join(f"#{n + 1}" for n in trail[:depth])


def cursor_level(at: Cursor) -> tuple[Any, ...]:
    """A composite's own cursor level (a tuple); anything else is not a position in it (TypeError,
    as unpacking would raise)."""
    if isinstance(at, list):  # (never written so; read as a tuple all the same)
        return tuple(at)
    if not isinstance(at, tuple):
        raise TypeError(f"not a cursor level: {at!r}")
    return at


def command_text(text: str) -> str | None:
    """The command inside `$( … )`, or None when the text is not a command step."""
    text = text.strip()
    if text.startswith("$(") and text.endswith(")"):
        return text[2:-1]
    return None


def _run_command(template: str, ctx: Ctx, path: str) -> Steps:
    line, env = render_shell(template, ctx.namespace())
    done = yield Shell(line, env, path, None, step=False)
    return done


def _decide(cond: Any, ctx: Ctx, path: str) -> Steps:
    """Evaluate a condition (SPEC §4): `{{ }}` truthiness, `$(cmd)` exit 0, a step's output, a literal."""
    if isinstance(cond, bool):
        return cond
    text = str(cond).strip()
    command = command_text(text)
    if command is not None:
        done = yield from _run_command(command, ctx, path)
        return done.status == 0
    if has_template(text):
        return truthy(render_value(text, ctx.namespace()))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return truthy(dict.get(ctx.output, text))  # a step name: the truthiness of its output


def _collection(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [line for line in value.splitlines() if line.strip()]
    if isinstance(value, Mapping):
        return list(value)
    try:
        return list(value)
    except TypeError:
        return [value]


def coerce(value: Any, how: str | None) -> Any:
    if how is None:
        return value
    if how == "boolean":
        return truthy(value)
    if how == "llm_boolean":
        text = to_text(value).strip().lower()
        return bool(re.match(r"^(yes|true|y|1|correct|affirmative)\b", text))
    if how == "iterable":
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
                if isinstance(parsed, list):
                    return parsed
            except ValueError:
                pass
        return _collection(value)
    return value


def command_output(done: Done, exit_on_error: bool, what: str, path: str, shown: str = "") -> str:
    """A command's output (stdout, stripped); a non-zero exit fails the step unless
    `exit_on_error: false`, which keeps going with the status appended (Roast)."""
    output = done.stdout.strip()
    if done.status == 0:
        return output
    if exit_on_error:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        # issue 24: offered only for a quiet "no" (status 1, nothing on stderr: grep, test, diff), where
        # carrying on may be meant; a command that reported an error (a failed migration) is fixed and retried
        quiet_no = done.status == 1 and not (done.stderr or "").strip()
        raise StepFailed(f"{what} exited with status {done.status}" + (f": {shown}" if shown else "")
                         + (f": {detail[0]}" if detail[0] else ""), where=path,
                         hint="set `exit_on_error: false` in the step's config to carry on" if quiet_no else None)
    return f"{output}\n[Exit status: {done.status}]".lstrip("\n")


def _gate_text(text: str | None, ns: Mapping[str, Any]) -> str | None:
    """A wait's title, description or label rendered when the wait is reached (issue 22). Each
    `{{ }}` that fails to evaluate is kept as written, so the person still sees the gate and the
    session still waits: a heading must never fail a session."""
    if not text or not has_template(text):
        return text

    def one(match: re.Match[str]) -> str:
        try:
            return to_text(evaluate(match.group(1), ns))
        except RoastError:
            return match.group(0)

    return TEMPLATE.sub(one, text)


# --------------------------------------------------------------------------- composite nodes


class Sequence(Record):
    """A steps list: runs in order, checkpointing after each step."""

    path: str
    steps: tuple[Any, ...]

    @property
    def ident(self) -> str:
        return f"[{len(self.steps)} steps]"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        start, child_at = at if isinstance(at, tuple) else (0, HERE)
        for index in range(start, len(self.steps)):
            step = self.steps[index]
            try:
                yield from _within(lambda c, i=index: (i, c), step.run(ctx, child_at))  # type: ignore[misc]
            except RoastError as err:
                if err.where is None:  # e.g. a failing {{ }}: say which step it was in
                    err.where = runtime_path(step.path, getattr(step, "depth", 0), ctx)
                raise
            child_at = HERE
            yield Checkpoint((index + 1, HERE))

    def children(self) -> tuple[Any, ...]:
        return tuple(self.steps)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        index, child_at = cursor_level(at)
        if not isinstance(index, int) or not 0 <= index < len(self.steps):
            return None
        step = self.steps[index]
        name = getattr(step, "name", None) if not isinstance(step, WaitForEvent) else None  # a wait says its own
        return step, child_at, f"{self.path}[{index}]" + (f" {name}" if name else ""), trail


class If(Record):
    """`if:`/`unless:` with `then:`/`else:`; the branch taken is part of the cursor."""

    path: str
    name: str | None
    condition: Any
    then: Sequence | None
    otherwise: Sequence | None
    negate: bool = False

    @property
    def ident(self) -> str:
        return f"{'unless' if self.negate else 'if'}: {self.condition}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        if at is HERE:
            decided = yield from _decide(self.condition, ctx, self.path)
            branch, child_at = ("then" if decided != self.negate else "else"), HERE
            if command_text(str(self.condition)) is not None:
                yield Checkpoint((branch, HERE))  # a command's answer is never asked twice
        else:
            branch, child_at = cursor_level(at)
        body = self.then if branch == "then" else self.otherwise
        if body is not None:
            yield from _within(lambda c: (branch, c), body.run(ctx, child_at))
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    def children(self) -> tuple[Any, ...]:
        return tuple(body for body in (self.then, self.otherwise) if body is not None)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        branch, child_at = cursor_level(at)
        body = self.then if branch == "then" else self.otherwise if branch == "else" else None
        return (body, child_at, f"{branch}", trail) if body is not None else None


class Case(Record):
    """`case:` / `when:` / `else:`: the matched key is part of the cursor."""

    path: str
    name: str | None
    expression: str
    whens: tuple[tuple[str, Sequence], ...]
    otherwise: Sequence | None
    exit_on_error: bool = True

    @property
    def ident(self) -> str:
        return f"case: {self.expression}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        if at is HERE:
            command = command_text(self.expression)
            if command is not None:
                done = yield from _run_command(command, ctx, self.path)
                # issue 11: a failing case command fails the step instead of silently taking `else`
                value = command_output(done, self.exit_on_error, "the `case` command", self.path,
                                        self.expression)
            elif has_template(self.expression):
                value = to_text(render_value(self.expression, ctx.namespace()))
            elif self.expression in ctx.output:
                value = to_text(dict.__getitem__(ctx.output, self.expression))
            else:
                value = self.expression
            choice = next((i for i, (key, _) in enumerate(self.whens) if key == value), -1)
            child_at = HERE
            if command is not None:
                yield Checkpoint((choice, HERE))
        else:
            choice, child_at = cursor_level(at)
        body = self.whens[choice][1] if choice >= 0 else self.otherwise
        if body is not None:
            yield from _within(lambda c: (choice, c), body.run(ctx, child_at))
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    def children(self) -> tuple[Any, ...]:
        return tuple(body for _, body in self.whens) + ((self.otherwise,) if self.otherwise is not None else ())

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        choice, child_at = cursor_level(at)
        if not isinstance(choice, int) or choice >= len(self.whens):
            return None
        body = self.whens[choice][1] if choice >= 0 else self.otherwise
        label = f"when {self.whens[choice][0]}" if choice >= 0 else "else"
        return (body, child_at, label, trail) if body is not None else None


class Each(Record):
    """`each:` / `as:` / `steps:`: the collection is evaluated once and kept in the context."""

    path: str
    name: str | None
    expression: str
    var: str
    body: Sequence
    depth: int
    exit_on_error: bool = True

    @property
    def ident(self) -> str:
        return f"each: {self.expression} as {self.var}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        key = runtime_path(self.path, self.depth, ctx)
        if at is HERE:
            command = command_text(self.expression)
            if command is not None:
                done = yield from _run_command(command, ctx, self.path)
                # issue 11: `each: $(ls /missing/*.py)` fails instead of iterating zero times
                items = _collection(command_output(done, self.exit_on_error, "the `each` command", self.path,
                                                    self.expression))
            else:
                items = _collection(render_value(self.expression, ctx.namespace()))
            ctx.set_collection(key, items)  # saved once; cursors refer to it (issue 12)
            if self.name:
                ctx.set_output(self.name, [])
            if command is not None:
                yield Checkpoint((0, COLLECTED, HERE))
            start, child_at = 0, HERE
        else:
            start, stored, child_at = cursor_level(at)
            if stored == COLLECTED:
                if key not in ctx.collections:
                    raise RoastError(f"the saved position of {self.path} refers to a collection that is not in "
                                     "the saved context", where=self.path)
                items = ctx.collections[key]
            else:
                items = list(stored)  # a cursor saved by roast 0.1 holds the items themselves
                ctx.set_collection(key, items)
        for index in range(start, len(items)):
            ctx.loop[self.var] = items[index]
            ctx.loop_index[self.depth:] = [index]
            yield from _within(lambda c, i=index: (i, COLLECTED, c),  # type: ignore[misc]
                               self.body.run(ctx, child_at))
            child_at = HERE
            if self.name:
                ctx.append_output(self.name, ctx.last)
        ctx.loop.pop(self.var, None)
        del ctx.loop_index[self.depth:]
        ctx.set_collection(key, None)

    repeats = True  # a loop: its next pass may reach any step of its body again (tree.events_ahead)

    def children(self) -> tuple[Any, ...]:
        return (self.body,)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        index, stored, child_at = cursor_level(at)
        if stored == COLLECTED:
            items = (collections or {}).get(trail_path(self.path, self.depth, trail))
        else:
            items = stored
        if not isinstance(index, int) or (items is not None and index >= len(items)):
            return None
        inner = trail[:self.depth] + (index,)
        if items is None:
            return self.body, child_at, f"each {self.var} ({index + 1})", inner
        return self.body, child_at, f"each {self.var}={to_text(items[index])!s:.40} ({index + 1}/{len(items)})", inner


class Repeat(Record):
    """`repeat:` runs its body, then checks `until` (do-until, SPEC §4), at most `max_iterations`."""

    path: str
    name: str | None
    body: Sequence
    until: Any
    max_iterations: int
    depth: int

    @property
    def ident(self) -> str:
        return f"repeat until: {self.until}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        start, child_at = at if isinstance(at, tuple) else (0, HERE)
        for iteration in range(start, self.max_iterations):
            ctx.loop_index[self.depth:] = [iteration]
            yield from _within(lambda c, i=iteration: (i, c), self.body.run(ctx, child_at))  # type: ignore[misc]
            child_at = HERE
            done = yield from _decide(self.until, ctx, self.path)
            yield Checkpoint((iteration + 1, HERE) if not done else (self.max_iterations, HERE))
            if done:
                break
        del ctx.loop_index[self.depth:]
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    repeats = True  # a loop: its next pass may reach any step of its body again (tree.events_ahead)

    def children(self) -> tuple[Any, ...]:
        return (self.body,)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        iteration, child_at = cursor_level(at)
        if not isinstance(iteration, int) or iteration >= self.max_iterations:
            return None
        return self.body, child_at, f"repeat #{iteration + 1}", trail[:self.depth] + (iteration,)


class Parallel(Record):
    """A nested list: branches run concurrently until each ends or waits (SPEC §3, §6)."""

    path: str
    branches: tuple[Any, ...]

    @property
    def ident(self) -> str:
        return f"parallel[{len(self.branches)}]"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        cursors = cursor_level(at) if at is not HERE else (HERE,) * len(self.branches)
        # each branch gets its own loop variables, and shares outputs (BranchContext)
        generators = tuple(None if cursors[i] == DONE else self.branches[i].run(ctx.branch(), cursors[i])
                           for i in range(len(self.branches)))
        ended: tuple[Ended, ...] = yield Fork(generators, cursors)
        failure = next((e.error for e in ended if e.how == "failed"), None)
        if failure is not None:
            raise failure  # the group fails once every branch has stopped
        waits = tuple(w for e in ended if e.how == "waiting" for w in e.waits)
        if waits:
            # step order: the waits of earlier branches come first (event routing, SPEC §6)
            yield Suspend(tuple(e.cursor for e in ended), waits)
            raise RuntimeError("a suspended parallel group was resumed in place")

    def children(self) -> tuple[Any, ...]:
        return tuple(self.branches)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        return None  # the cursor points into every branch at once: see `branches_at`

    def fits(self, at: Cursor) -> bool:
        """Whether `at` is a cursor level of this group: one cursor per branch (not so after an edit)."""
        return isinstance(at, tuple) and len(at) == len(self.branches)

    def branches_at(self, at: Cursor, trail: tuple[int, ...] = ()) -> list[Position]:
        """Where each unfinished branch is."""
        return [(b, c, f"[{i}]", trail) for i, (b, c) in enumerate(zip(self.branches, cursor_level(at))) if c != DONE]


class WaitForEvent(Record):
    """`wait_for_event:` maps event names to step lists; the session pauses here (SPEC §6).
    `schemas`: (event, JSON Schema as text) pairs; `notify`: steps run once the wait is saved;
    `title`, `description`, `labels` (event, text): what a person sees, templates (issue 22)."""

    path: str
    name: str | None
    branches: tuple[tuple[str, Sequence], ...]
    timeout_branch: Sequence | None
    on_timeout: Sequence | None
    timeout: float | None
    depth: int = 0
    schemas: tuple[tuple[str, str], ...] = ()
    notify: Sequence | None = None
    title: str | None = None
    description: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    policy: Any = None  # issue 23: a `roast.policy.Policy`, or None (anyone may decide, at once)

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.branches)

    @property
    def ident(self) -> str:
        return f"{self.name or 'wait_for_event'}: {', '.join(self.events)}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = runtime_path(self.path, self.depth, ctx)
        wait = self.name or "wait_for_event"
        if not isinstance(at, tuple) or at[0] == AT_WAIT:
            deadline = at[1] if isinstance(at, tuple) else None
            delivery = yield Receive(path, wait, self.events, self.timeout, deadline, at is not HERE)
            if delivery.event is None:
                ns = ctx.namespace() if self.title or self.description or self.labels else {}
                yield Suspend((AT_WAIT, delivery.deadline),
                              (WaitInfo(path, wait, self.events, delivery.deadline, self.schemas, self.notify,
                                        title=_gate_text(self.title, ns), description=_gate_text(self.description, ns),
                                        labels=tuple((e, str(_gate_text(t, ns))) for e, t in self.labels),
                                        policy=self.policy),))
                raise RuntimeError("a suspended wait was resumed in place")
            event = delivery.event
            ctx.set_event(event.name, event.data, event.delivery)
            ctx.record(wait, {"event": event.name, "data": dict(event.data),
                              "received_at": event.received_at}, print_response=False)
            yield Checkpoint((event.name, HERE))  # the consumed event is saved before its branch runs
            branch_name, child_at = event.name, HERE
        else:
            branch_name, child_at = cursor_level(at)
        body = self._branch(branch_name)
        if body is None:
            raise TimedOut(f"the wait timed out (deadline {ctx.event.get('deadline', '?')}) and "
                           "has neither a `timeout:` branch nor `on_timeout`", where=path)
        yield from _within(lambda c: (branch_name, c), body.run(ctx, child_at))

    def _branch(self, event: str) -> Sequence | None:
        if event == "timeout":
            return self.timeout_branch or self.on_timeout
        return next((body for key, body in self.branches if key == event), None)

    def children(self) -> tuple[Any, ...]:
        # not `notify`: its steps run once the wait is saved, outside the cursor (api)
        bodies = tuple(body for _, body in self.branches) + (self.timeout_branch, self.on_timeout)
        return tuple(body for body in bodies if body is not None)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        if not isinstance(at, tuple) or at[0] == AT_WAIT:
            return None
        body = self._branch(at[0])
        return (body, at[1], f"on {at[0]}", trail) if body is not None else None




# Sessions saved before the leaves and the requests had modules of their own pickled their tree
# (and requests) as `roast.steps.<name>`: those names still resolve here, lazily (PEP 562), so a
# session that waited across an upgrade resumes.
_MOVED = {
    "roast.leaves": ("StepOptions", "RetryPolicy", "PROMPT_RETRY", "failure_kinds", "_Fatal", "Command", "Prompt",
                     "Python", "Script", "Input", "Sleep", "Webhook"),
    "roast.requests": ("Shell", "Done", "AskModel", "Answer", "CallPython", "PostWebhook", "Ask", "Event",
                       "Delivery", "Receive", "WaitInfo", "Timer", "Alarm", "Suspend", "Checkpoint", "Fork", "Ended",
                       "_same"),
}

if not TYPE_CHECKING:  # to mypy, `steps.Command` stays an error: the new home is the name to use

    def __getattr__(name: str) -> Any:
        for module, names in _MOVED.items():
            if name in names:
                import sys

                __import__(module)
                return getattr(sys.modules[module], name)
        raise AttributeError(f"module 'roast.steps' has no attribute {name!r}")
