"""The step tree: compile a workflow into frozen nodes whose `run()` methods are generators.

A node never touches a subprocess, a file, the clock or the environment: it yields a request
(`Shell`, `AskModel`, `CallPython`, `Ask`, `Receive`, `Suspend`, `Checkpoint`, `Gather`) and the
runner sends back the answer. Performs no I/O of its own: step files are found through the
`Source` it is compiled from.

**The cursor.** Every composite node reads exactly one level of the cursor `at` it is given and
passes the rest to the child it re-enters, so a resumed run skips straight to the wait without
running a step or re-evaluating a condition, case value or collection (SPEC §6). Levels:

| node          | cursor level                                   |
|---------------|------------------------------------------------|
| `Sequence`    | `(index, child)`; `(len, None)` = finished     |
| `If`          | `("then" or "else", child)`                    |
| `Case`        | `(when index or -1 for else, child)`           |
| `Each`        | `(index, items, child)`: the collection as evaluated |
| `Repeat`      | `(iteration, child)`                           |
| `Parallel`    | `(branch cursor or DONE, ...)`, one per branch |
| `WaitForEvent`| `(AT_WAIT, deadline)` or `(event name, child)` |

`HERE` (None) means "from the start". Suspend and Checkpoint requests carry the cursor of the
node that yielded them; each ancestor prefixes its own level on the way up (`_within`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from roast import expressions
from roast.context import Context
from roast.errors import RoastError, StepFailed, TimedOut
from roast.expressions import has_template, render, render_shell, render_value, to_text, truthy

Cursor = Any
Steps = Generator[Any, Any, Any]
HERE: Cursor = None
DONE = "done"
AT_WAIT = "@wait"
EVENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
RESERVED_WAIT_KEYS = {"timeout", "within", "on_timeout", "schema"}


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Shell:
    """Run `command` with `/bin/sh -c`; interpolated values arrive through `env` (SPEC §4)."""

    command: str
    env: Mapping[str, str]
    path: str
    name: str | None = None
    timeout: float | None = None
    step: bool = True  # False for a condition's or collection's command: not a step of its own


@dataclass(frozen=True, slots=True)
class Done:
    """A finished command: exit status and captured output."""

    status: int
    stdout: str
    stderr: str = ""


@dataclass(frozen=True, slots=True)
class AskModel:
    prompt: str
    path: str
    name: str | None = None
    model: str | None = None
    json: bool = False
    transcript: tuple[Mapping[str, str], ...] = ()
    step: bool = True


@dataclass(frozen=True, slots=True)
class CallPython:
    """Call a Python step: `target` is a file path (`run(ctx)` or a class with `call`) or a callable."""

    target: Any
    ctx: Context
    path: str
    name: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    step: bool = True


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the person at the terminal (an `input:` step)."""

    prompt: str
    kind: str
    path: str
    name: str | None = None
    options: tuple[str, ...] = ()
    default: Any = None
    step: bool = True


@dataclass(frozen=True, slots=True)
class Event:
    """An event delivered to a wait."""

    name: str
    data: Mapping[str, Any]
    received_at: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """The runner's answer to `Receive`: the wait's absolute deadline and the event, if any."""

    deadline: float | None
    event: Event | None


@dataclass(frozen=True, slots=True)
class Receive:
    """A wait asks whether an event (or its deadline) is already there for it."""

    path: str
    wait: str
    events: tuple[str, ...]
    timeout: float | None
    deadline: float | None
    resumed: bool = False  # True when the session was already waiting here (only then is an event delivered)


@dataclass(frozen=True, slots=True)
class WaitInfo:
    path: str
    wait: str
    events: tuple[str, ...]
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Suspend:
    """Stop here: save the cursor and context, report the waits, end the process."""

    cursor: Cursor
    waits: tuple[WaitInfo, ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A step finished: save the cursor and context so a crash loses at most the step in flight."""

    cursor: Cursor


@dataclass(frozen=True, slots=True)
class Gather:
    """Perform these requests concurrently (a parallel group); the reply is one `(value, error)` each."""

    requests: tuple[Any, ...]


# --------------------------------------------------------------------------- helpers


def _within(wrap: Callable[[Cursor], Cursor], steps: Steps) -> Steps:
    """`yield from steps`, prefixing this node's cursor level to Suspend and Checkpoint."""
    reply: Any = None
    failure: BaseException | None = None
    while True:
        try:
            request = steps.throw(failure) if failure is not None else steps.send(reply)
        except StopIteration as stop:
            return stop.value
        if isinstance(request, Suspend):
            request = Suspend(wrap(request.cursor), request.waits)
        elif isinstance(request, Checkpoint):
            request = Checkpoint(wrap(request.cursor))
        try:
            reply, failure = (yield request), None
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as err:  # noqa: BLE001 - handed to the child: the node that asked decides
            reply, failure = None, err


def _runtime_path(path: str, depth: int, ctx: Context) -> str:
    """The step path with the iteration of each enclosing loop: `steps[2].steps[0]#3`."""
    if not depth:
        return path
    return path + "".join(f"#{n + 1}" for n in ctx.loop_index[:depth])


def command_text(text: str) -> str | None:
    """The command inside `$( … )`, or None when the text is not a command step."""
    text = text.strip()
    if text.startswith("$(") and text.endswith(")"):
        return text[2:-1]
    return None


def _run_command(template: str, ctx: Context, path: str) -> Steps:
    line, env = render_shell(template, ctx.namespace())
    done = yield Shell(line, env, path, None, step=False)
    return done


def _decide(cond: Any, ctx: Context, path: str) -> Steps:
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
    return truthy(ctx.output.get(text))  # a step name: the truthiness of its output


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


def _coerce(value: Any, how: str | None) -> Any:
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


def _command_output(done: Done, options: StepOptions, what: str, path: str, shown: str = "") -> str:
    """A command's output (stdout, stripped); a non-zero exit fails the step unless
    `exit_on_error: false`, which keeps going with the status appended (Roast)."""
    output = done.stdout.strip()
    if done.status == 0:
        return output
    if options.exit_on_error:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        raise StepFailed(f"{what} exited with status {done.status}" + (f": {shown}" if shown else "")
                         + (f": {detail[0]}" if detail[0] else ""),
                         where=path, hint="set `exit_on_error: false` in the step's config to carry on")
    return f"{output}\n[Exit status: {done.status}]".lstrip("\n")


# --------------------------------------------------------------------------- leaf nodes


@dataclass(frozen=True, slots=True)
class StepOptions:
    """Per-step configuration (SPEC §2): from the top-level key named after the step."""

    exit_on_error: bool = True
    print_response: bool | None = None
    json: bool = False
    coerce_to: str | None = None
    timeout: float | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Command:
    """`$(command)` or `name: $(command)`: output is stdout, stripped."""

    path: str
    name: str | None
    template: str
    options: StepOptions
    depth: int = 0

    @property
    def ident(self) -> str:
        return f"{self.name}: $({self.template})" if self.name else f"$({self.template})"

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        line, env = render_shell(self.template, ctx.namespace())
        path = _runtime_path(self.path, self.depth, ctx)
        done = yield Shell(line, env, path, self.name, self.options.timeout)
        output = _command_output(done, self.options, "command", path, f"$({self.template})")
        ctx.record(self.name, _coerce(output, self.options.coerce_to),
                   print_response=self.options.print_response)


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt step (inline text or `name/prompt.md`): the model's response is the output."""

    path: str
    name: str | None
    template: str
    options: StepOptions
    output_template: str | None = None
    depth: int = 0

    @property
    def ident(self) -> str:
        return self.name or self.template

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        prompt = render(self.template, ctx.namespace())
        path = _runtime_path(self.path, self.depth, ctx)
        response = yield AskModel(prompt, path, self.name, self.options.model, self.options.json,
                                  tuple(ctx.transcript))
        if isinstance(response, str):
            response = response.strip()
        ctx.transcript.append({"role": "user", "content": prompt})
        ctx.transcript.append({"role": "assistant", "content": to_text(response)})
        value: Any = response
        if self.options.json and isinstance(response, str):
            try:
                value = json.loads(response)
            except ValueError as err:
                raise StepFailed(f"the response is not valid JSON ({err})", where=path,
                                 hint="remove `json: true` from the step's config, or ask for JSON") from err
        value = _coerce(value, self.options.coerce_to)
        if self.output_template is not None:
            ns = ctx.namespace()
            ns["response"] = expressions.wrap(value)
            value = render(self.output_template, ns)
        # SPEC §3: a prompt's response prints unless told otherwise (Roast: last step prints).
        ctx.record(self.name, value, print_response=self.options.print_response)


@dataclass(frozen=True, slots=True)
class Python:
    """A Python step: `name.py` (`run(ctx)` or a class with `call`) or a callable from `roast.run`."""

    path: str
    name: str | None
    target: Any
    options: StepOptions
    depth: int = 0

    @property
    def ident(self) -> str:
        return self.name or getattr(self.target, "__name__", "python")

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        try:
            value = yield CallPython(self.target, ctx, path, self.name, self.options.params)
        except StepFailed as err:
            if self.options.exit_on_error:
                raise
            value = f"[Error: {err.message}]"
        ctx.record(self.name, _coerce(value, self.options.coerce_to),
                   print_response=self.options.print_response)


@dataclass(frozen=True, slots=True)
class Script:
    """An executable `name.sh` step: run with ROAST_* variables; stdout (JSON if it parses) is the output."""

    path: str
    name: str
    file: str
    options: StepOptions
    depth: int = 0

    @property
    def ident(self) -> str:
        return self.name

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        env = {"ROAST_WORKFLOW_NAME": ctx.workflow.name, "ROAST_SESSION_ID": ctx.workflow.session_id,
               "ROAST_TARGET": ctx.workflow.target or "", "ROAST_STEP_NAME": self.name,
               "ROAST_OUTPUT": json.dumps(ctx.output, default=str)[:100_000]}
        done = yield Shell('"${ROAST_SCRIPT}"', {**env, "ROAST_SCRIPT": self.file}, path, self.name,
                           self.options.timeout)
        output: Any = _command_output(done, self.options, f"{self.name}.sh", path)
        if done.status == 0 and output[:1] in ("[", "{"):
            try:
                output = json.loads(output)
            except ValueError:
                pass
        ctx.record(self.name, _coerce(output, self.options.coerce_to),
                   print_response=self.options.print_response)


@dataclass(frozen=True, slots=True)
class Input:
    """`input:`: ask the person at the terminal; refused when stdin is not a terminal."""

    path: str
    name: str | None
    prompt: str
    kind: str
    options_list: tuple[str, ...]
    default: Any
    depth: int = 0

    @property
    def ident(self) -> str:
        return f"input: {self.name or self.prompt}"

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        answer = yield Ask(render(self.prompt, ctx.namespace()), self.kind, path, self.name,
                           self.options_list, self.default)
        ctx.record(self.name, answer, print_response=False)


# --------------------------------------------------------------------------- composite nodes


@dataclass(frozen=True, slots=True)
class Sequence:
    """A steps list: runs in order, checkpointing after each step."""

    path: str
    steps: tuple[Any, ...]

    @property
    def ident(self) -> str:
        return f"[{len(self.steps)} steps]"

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        start, child_at = (0, HERE) if at is HERE else at
        for index in range(start, len(self.steps)):
            step = self.steps[index]
            try:
                yield from _within(lambda c, i=index: (i, c), step.run(ctx, child_at))
            except RoastError as err:
                if err.where is None:  # e.g. a failing {{ }}: say which step it was in
                    err.where = _runtime_path(step.path, getattr(step, "depth", 0), ctx)
                raise
            child_at = HERE
            yield Checkpoint((index + 1, HERE))

    def child(self, at: Cursor) -> tuple[Any, Cursor, str] | None:
        index, child_at = at
        if not isinstance(index, int) or not 0 <= index < len(self.steps):
            return None
        return self.steps[index], child_at, f"{self.path}[{index}]"


@dataclass(frozen=True, slots=True)
class If:
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

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        if at is HERE:
            decided = yield from _decide(self.condition, ctx, self.path)
            branch, child_at = ("then" if decided != self.negate else "else"), HERE
            if command_text(str(self.condition)) is not None:
                yield Checkpoint((branch, HERE))  # a command's answer is never asked twice
        else:
            branch, child_at = at
        body = self.then if branch == "then" else self.otherwise
        if body is not None:
            yield from _within(lambda c: (branch, c), body.run(ctx, child_at))
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    def child(self, at: Cursor) -> tuple[Any, Cursor, str] | None:
        branch, child_at = at
        body = self.then if branch == "then" else self.otherwise if branch == "else" else None
        return (body, child_at, f"{branch}") if body is not None else None


@dataclass(frozen=True, slots=True)
class Case:
    """`case:` / `when:` / `else:`: the matched key is part of the cursor."""

    path: str
    name: str | None
    expression: str
    whens: tuple[tuple[str, Sequence], ...]
    otherwise: Sequence | None

    @property
    def ident(self) -> str:
        return f"case: {self.expression}"

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        if at is HERE:
            command = command_text(self.expression)
            if command is not None:
                value = (yield from _run_command(command, ctx, self.path)).stdout.strip()
            elif has_template(self.expression):
                value = to_text(render_value(self.expression, ctx.namespace()))
            elif self.expression in ctx.output:
                value = to_text(ctx.output[self.expression])
            else:
                value = self.expression
            choice = next((i for i, (key, _) in enumerate(self.whens) if key == value), -1)
            child_at = HERE
            if command is not None:
                yield Checkpoint((choice, HERE))
        else:
            choice, child_at = at
        body = self.whens[choice][1] if choice >= 0 else self.otherwise
        if body is not None:
            yield from _within(lambda c: (choice, c), body.run(ctx, child_at))
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    def child(self, at: Cursor) -> tuple[Any, Cursor, str] | None:
        choice, child_at = at
        if not isinstance(choice, int) or choice >= len(self.whens):
            return None
        body = self.whens[choice][1] if choice >= 0 else self.otherwise
        label = f"when {self.whens[choice][0]}" if choice >= 0 else "else"
        return (body, child_at, label) if body is not None else None


@dataclass(frozen=True, slots=True)
class Each:
    """`each:` / `as:` / `steps:`: the collection is evaluated once and kept in the cursor."""

    path: str
    name: str | None
    expression: str
    var: str
    body: Sequence
    depth: int  # enclosing loops, this one excluded

    @property
    def ident(self) -> str:
        return f"each: {self.expression} as {self.var}"

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        if at is HERE:
            command = command_text(self.expression)
            if command is not None:
                items = _collection((yield from _run_command(command, ctx, self.path)).stdout)
                yield Checkpoint((0, items, HERE))
            else:
                items = _collection(render_value(self.expression, ctx.namespace()))
            start, child_at = 0, HERE
        else:
            start, items, child_at = at
        results = list(ctx.output.get(self.name, [])) if self.name and start else []
        for index in range(start, len(items)):
            ctx.loop[self.var] = items[index]
            ctx.loop_index[self.depth:] = [index]
            yield from _within(lambda c, i=index: (i, items, c), self.body.run(ctx, child_at))
            child_at = HERE
            if self.name:
                results.append(ctx.last)
                ctx.output[self.name] = list(results)
        ctx.loop.pop(self.var, None)
        del ctx.loop_index[self.depth:]
        if self.name:  # the collected results; the last iteration's output stays the one printed
            ctx.output[self.name] = results

    def child(self, at: Cursor) -> tuple[Any, Cursor, str] | None:
        index, items, child_at = at
        if index >= len(items):
            return None
        return self.body, child_at, f"each {self.var}={to_text(items[index])!s:.40} ({index + 1}/{len(items)})"


@dataclass(frozen=True, slots=True)
class Repeat:
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

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        start, child_at = (0, HERE) if at is HERE else at
        for iteration in range(start, self.max_iterations):
            ctx.loop_index[self.depth:] = [iteration]
            yield from _within(lambda c, i=iteration: (i, c), self.body.run(ctx, child_at))
            child_at = HERE
            done = yield from _decide(self.until, ctx, self.path)
            yield Checkpoint((iteration + 1, HERE) if not done else (self.max_iterations, HERE))
            if done:
                break
        del ctx.loop_index[self.depth:]
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    def child(self, at: Cursor) -> tuple[Any, Cursor, str] | None:
        iteration, child_at = at
        if iteration >= self.max_iterations:
            return None
        return self.body, child_at, f"repeat #{iteration + 1}"


@dataclass(frozen=True, slots=True)
class Parallel:
    """A nested list: branches run concurrently until each ends or waits (SPEC §3, §6)."""

    path: str
    branches: tuple[Any, ...]

    @property
    def ident(self) -> str:
        return f"parallel[{len(self.branches)}]"

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        cursors: list[Cursor] = list(at) if at is not HERE else [HERE] * len(self.branches)
        live = {i: self.branches[i].run(ctx.branch(), cursors[i])  # own loop variables, shared outputs
                for i in range(len(self.branches)) if cursors[i] != DONE}
        replies: dict[int, tuple[Any, BaseException | None]] = {}
        waiting: dict[int, tuple[WaitInfo, ...]] = {}
        failure: RoastError | None = None
        while live:
            pending: dict[int, Any] = {}
            for i in sorted(live):
                value, error = replies.pop(i, (None, None))
                while True:
                    try:
                        request = live[i].throw(error) if error is not None else live[i].send(value)
                    except StopIteration:
                        cursors[i] = DONE
                        del live[i]
                        yield Checkpoint(tuple(cursors))  # a finished branch never runs again
                        break
                    except RoastError as err:
                        failure = failure or err  # the group fails once the others stop
                        cursors[i] = DONE
                        del live[i]
                        break
                    value, error = None, None
                    if isinstance(request, Suspend):
                        cursors[i] = request.cursor
                        waiting[i] = request.waits
                        del live[i]
                        break
                    if isinstance(request, Checkpoint):
                        cursors[i] = request.cursor
                        yield Checkpoint(tuple(cursors))
                    elif isinstance(request, Receive):
                        try:
                            value = yield request
                        except RoastError as err:
                            error = err
                    else:
                        pending[i] = request
                        break
            if pending:
                answers = yield Gather(tuple(pending.values()))
                for i, answer in zip(pending, answers):
                    replies[i] = answer
        if failure is not None:
            raise failure
        if waiting:
            # step order: the waits of earlier branches come first (event routing, SPEC §6)
            yield Suspend(tuple(cursors), tuple(w for i in sorted(waiting) for w in waiting[i]))
            raise RuntimeError("a suspended parallel group was resumed in place")

    def children(self, at: Cursor) -> list[tuple[Any, Cursor, str]]:
        return [(b, c, f"[{i}]") for i, (b, c) in enumerate(zip(self.branches, at)) if c != DONE]


@dataclass(frozen=True, slots=True)
class WaitForEvent:
    """`wait_for_event:` maps event names to step lists; the session pauses here (SPEC §6)."""

    path: str
    name: str | None
    branches: tuple[tuple[str, Sequence], ...]
    timeout_branch: Sequence | None
    on_timeout: Sequence | None
    timeout: float | None
    depth: int = 0

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.branches)

    @property
    def ident(self) -> str:
        return f"{self.name or 'wait_for_event'}: {', '.join(self.events)}"

    def run(self, ctx: Context, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        wait = self.name or "wait_for_event"
        if at is HERE or at[0] == AT_WAIT:
            deadline = None if at is HERE else at[1]
            delivery = yield Receive(path, wait, self.events, self.timeout, deadline, at is not HERE)
            if delivery.event is None:
                yield Suspend((AT_WAIT, delivery.deadline),
                              (WaitInfo(path, wait, self.events, delivery.deadline),))
                raise RuntimeError("a suspended wait was resumed in place")
            event = delivery.event
            ctx.event, ctx.event_name = dict(event.data), event.name
            ctx.record(wait, {"event": event.name, "data": dict(event.data),
                              "received_at": event.received_at}, print_response=False)
            yield Checkpoint((event.name, HERE))  # the consumed event is saved before its branch runs
            branch_name, child_at = event.name, HERE
        else:
            branch_name, child_at = at
        body = self._branch(branch_name)
        if body is None:
            raise TimedOut(f"the wait timed out (deadline {ctx.event.get('deadline', '?')}) and "
                           "has neither a `timeout:` branch nor `on_timeout`", where=path)
        yield from _within(lambda c: (branch_name, c), body.run(ctx, child_at))

    def _branch(self, event: str) -> Sequence | None:
        if event == "timeout":
            return self.timeout_branch or self.on_timeout
        return next((body for key, body in self.branches if key == event), None)

    def child(self, at: Cursor) -> tuple[Any, Cursor, str] | None:
        if at[0] == AT_WAIT:
            return None
        body = self._branch(at[0])
        return (body, at[1], f"on {at[0]}") if body is not None else None


COMPOSITES = (Sequence, If, Case, Each, Repeat, WaitForEvent)


# --------------------------------------------------------------------------- cursor views


def describe(node: Any, at: Cursor) -> str:
    """A readable cursor: `steps[2] review › each item=b.py (2/3) › wait_for_event`."""
    parts: list[str] = []
    _describe(node, at, parts)
    return " › ".join(parts) if parts else "start"


def _describe(node: Any, at: Cursor, parts: list[str]) -> None:
    if at is HERE:
        return
    if isinstance(node, Parallel):
        inner = []
        for branch, child_at, label in node.children(at):
            sub: list[str] = []
            _describe(branch, child_at, sub)
            inner.append(label + (" " + " › ".join(sub) if sub else ""))
        parts.append("parallel(" + "; ".join(inner) + ")")
        return
    if isinstance(node, WaitForEvent) and at[0] == AT_WAIT:
        parts.append(node.name or "wait_for_event")
        return
    found = node.child(at) if isinstance(node, COMPOSITES) else None
    if found is None:
        if isinstance(node, Sequence) and at[0] >= len(node.steps):
            parts.append("end")
        return
    child, child_at, label = found
    if isinstance(node, Sequence):
        name = getattr(child, "name", None)
        parts.append(f"{label}" + (f" {name}" if name and not isinstance(child, WaitForEvent) else ""))
    else:
        parts.append(label)
    _describe(child, child_at, parts)


def signature(node: Any, at: Cursor) -> list[str]:
    """What must not change for `at` to mean the same place: each level's earlier siblings and the node on the path."""
    out: list[str] = []
    _signature(node, at, out)
    return out


def _signature(node: Any, at: Cursor, out: list[str]) -> None:
    if at is HERE:
        return
    if isinstance(node, Sequence):
        index, child_at = at
        shown = node.steps[: index + 1]
        out.append(f"{node.path}: " + " | ".join(f"{type(s).__name__}({s.ident})" for s in shown)
                   + (" | <missing>" if index >= len(node.steps) and child_at is not HERE else ""))
        if index < len(node.steps):
            _signature(node.steps[index], child_at, out)
        return
    if isinstance(node, Parallel):
        out.append(f"{node.path}: {node.ident}")
        if isinstance(at, tuple) and len(at) == len(node.branches):
            for branch, child_at, _ in node.children(at):
                _signature(branch, child_at, out)
        else:
            out.append(f"{node.path}: <branches changed>")
        return
    if isinstance(node, WaitForEvent):
        out.append(f"{node.path}: wait {node.ident}")
    else:
        out.append(f"{node.path}: {type(node).__name__}({node.ident})")
    found = node.child(at) if isinstance(node, COMPOSITES) else None
    if found is not None:
        _signature(found[0], found[1], out)
    elif not (isinstance(node, WaitForEvent) and at[0] == AT_WAIT) and isinstance(node, COMPOSITES):
        out.append(f"{node.path}: <cursor does not resolve>")


def wait_at(node: Any, at: Cursor) -> list[WaitForEvent]:
    """The wait nodes the cursor rests on (several inside parallel groups)."""
    if at is HERE:
        return []
    if isinstance(node, Parallel):
        return [w for b, c, _ in node.children(at) for w in wait_at(b, c)]
    if isinstance(node, WaitForEvent) and at[0] == AT_WAIT:
        return [node]
    found = node.child(at) if isinstance(node, COMPOSITES) else None
    return wait_at(found[0], found[1]) if found else []


def all_waits(node: Any) -> Iterable[WaitForEvent]:
    """Every wait in the tree (for `roast validate` and documentation of events)."""
    if isinstance(node, WaitForEvent):
        yield node
        for _, body in node.branches:
            yield from all_waits(body)
        for body in (node.timeout_branch, node.on_timeout):
            if body is not None:
                yield from all_waits(body)
    elif isinstance(node, Sequence):
        for step in node.steps:
            yield from all_waits(step)
    elif isinstance(node, Parallel):
        for branch in node.branches:
            yield from all_waits(branch)
    elif isinstance(node, If):
        for body in (node.then, node.otherwise):
            if body is not None:
                yield from all_waits(body)
    elif isinstance(node, Case):
        for _, body in node.whens:
            yield from all_waits(body)
        if node.otherwise is not None:
            yield from all_waits(node.otherwise)
    elif isinstance(node, (Each, Repeat)):
        yield from all_waits(node.body)
