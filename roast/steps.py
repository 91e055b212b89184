"""The step tree: frozen nodes whose `run()` methods are generators.

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
from collections.abc import Callable, Generator, Iterable, Mapping
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast import expressions
from roast.errors import RoastError, StepFailed, TimedOut
from roast.expressions import has_template, render, render_value, to_text, truthy
from roast.shell import render_shell
from roast.record import Record

if TYPE_CHECKING:
    from typing import Any, Union

    from roast.context import BranchContext, Context

    Ctx = Union[Context, BranchContext]
    # A cursor is nested tuples of step indices, branch and event names and deadlines (table above).
    Cursor = Union[None, str, tuple[Any, ...]]
    Steps = Generator[Any, Any, Any]

HERE: Cursor = None
DONE = "done"
AT_WAIT = "@wait"
AT_SLEEP = "@sleep"
AT_RETRY = "@retry"
COLLECTED = "@collected"
EVENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
RESERVED_WAIT_KEYS = {"timeout", "within", "on_timeout", "schema", "notify"}


# --------------------------------------------------------------------------- requests


class Shell(Record):
    """Run `command` with `/bin/sh -c`; interpolated values arrive through `env` (SPEC §4).
    `step` is False for a condition's or collection's command: not a step of its own."""

    __slots__ = ("command", "env", "path", "name", "timeout", "step")
    _defaults = {"name": None, "timeout": None, "step": True}


class Done(Record):
    """A finished command: exit status and captured output."""

    __slots__ = ("status", "stdout", "stderr")
    _defaults = {"stderr": ""}


class AskModel(Record):
    """Ask the model: `prompt` after the conversation so far (`transcript`); `provider`, `base_url` and
    `max_tool_rounds` are the step's own settings (None: the workflow's)."""

    __slots__ = ("prompt", "path", "name", "model", "json", "transcript", "step", "provider", "base_url",
                 "max_tool_rounds")
    _defaults = {"name": None, "model": None, "json": False, "transcript": (), "step": True, "provider": None,
                 "base_url": None, "max_tool_rounds": None}


class Answer(Record):
    """A model's answer: the final `text`, the `turns` of this exchange (the user message, any assistant
    tool calls and tool results, the final assistant message: what the transcript gains) and the
    token `usage` as (prompt, completion)."""

    __slots__ = ("text", "turns", "usage")
    _defaults = {"usage": (0, 0)}


class CallPython(Record):
    """Call a Python step: `target` is a file path (`run(ctx)` or a class with `call`) or a callable."""

    __slots__ = ("target", "ctx", "path", "name", "params", "step")
    _defaults = {"name": None, "params": {}, "step": True}


class PostWebhook(Record):
    """POST `payload` (JSON) to `url`, signed (a `webhook:` notify step, issue 15)."""

    __slots__ = ("url", "payload", "msg_id", "path", "name", "step")
    _defaults = {"name": "webhook", "step": True}


class Ask(Record):
    """Ask the person at the terminal (an `input:` step)."""

    __slots__ = ("prompt", "kind", "path", "name", "options", "default", "step")
    _defaults = {"name": None, "options": (), "default": None, "step": True}


class Event(Record):
    """An event delivered to a wait; `delivery` says who sent it, why, and its id (issue 14)."""

    __slots__ = ("name", "data", "received_at", "delivery")
    _defaults = {"delivery": {}}


class Delivery(Record):
    """The runner's answer to `Receive`: the wait's absolute deadline and the event, if any."""

    __slots__ = ("deadline", "event")


class Receive(Record):
    """A wait asks whether an event (or its deadline) is already there for it. Only a wait that
    was already waiting (`resumed`) is given an event."""

    __slots__ = ("path", "wait", "events", "timeout", "deadline", "resumed")
    _defaults = {"resumed": False}


class WaitInfo(Record):
    """A wait the session now rests on: its events, deadline, schemas (event → JSON text) and the
    `notify:` steps to run once it is saved (issue 14). `kind`: `event` (a `wait_for_event`),
    `sleep` (a `sleep:` step) or `retry` (a step's backoff before its next attempt, issue 16)."""

    __slots__ = ("path", "wait", "events", "deadline", "schemas", "notify", "kind")
    _defaults = {"schemas": (), "notify": None, "kind": "event"}


class Timer(Record):
    """Ask the runner about a pause (issue 16). Without `deadline`, the runner fixes one: now +
    `seconds` (shortened at random by up to half when `jitter`). With one, it answers whether it
    has come; when it has not and `hold` is set and it is near (ROAST_SLEEP_IN_PROCESS), the
    runner first lets it pass in process. The reply is an `Alarm`."""

    __slots__ = ("path", "seconds", "deadline", "hold", "jitter")
    _defaults = {"seconds": None, "deadline": None, "hold": False, "jitter": False}


class Alarm(Record):
    """The runner's answer to `Timer`: the absolute deadline, and whether it has come."""

    __slots__ = ("deadline", "due")


class Suspend(Record):
    """Stop here: save the cursor and context, report the waits, end the process."""

    __slots__ = ("cursor", "waits")


class Checkpoint(Record):
    """A step finished: save the cursor and context so a crash loses at most the step in flight."""

    __slots__ = ("cursor",)


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


class Ended(Record):
    """How one branch of a Fork ended: `done`, `failed` (with `error`) or `waiting` (with `waits`)."""

    __slots__ = ("how", "cursor", "error", "waits")
    _defaults = {"error": None, "waits": ()}


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


def _runtime_path(path: str, depth: int, ctx: Ctx) -> str:
    """The step path with the iteration of each enclosing loop: `steps[2].steps[0]#3`."""
    if not depth:
        return path
    return path + "".join(f"#{n + 1}" for n in ctx.loop_index[:depth])


def _trail_path(path: str, depth: int, trail: tuple[int, ...]) -> str:
    """`_runtime_path` for the cursor views, which know the loop positions from the cursor."""
    if not depth:
        return path
    return path + "".join(f"#{n + 1}" for n in trail[:depth])


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


def _command_output(done: Done, exit_on_error: bool, what: str, path: str, shown: str = "") -> str:
    """A command's output (stdout, stripped); a non-zero exit fails the step unless
    `exit_on_error: false`, which keeps going with the status appended (Roast)."""
    output = done.stdout.strip()
    if done.status == 0:
        return output
    if exit_on_error:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        raise StepFailed(f"{what} exited with status {done.status}" + (f": {shown}" if shown else "")
                         + (f": {detail[0]}" if detail[0] else ""),
                         where=path, hint="set `exit_on_error: false` in the step's config to carry on")
    return f"{output}\n[Exit status: {done.status}]".lstrip("\n")


# --------------------------------------------------------------------------- retries (issue 16)


class RetryPolicy(Record):
    """`retry:` of a step (or the top-level default): how many attempts in all, the backoff before
    each new one (`delay`, multiplied by `backoff` after every failure, at most `max_delay`,
    shortened at random by up to half when `jitter`), and which failures count (`on`: exit
    statuses of a command, exception class names of a Python step, `timeout`; empty: all)."""

    __slots__ = ("attempts", "delay", "backoff", "max_delay", "jitter", "on")
    _defaults = {"delay": 1.0, "backoff": 2.0, "max_delay": None, "jitter": True, "on": ()}

    def pause(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1 = the first)."""
        seconds = self.delay * self.backoff ** max(0, failures - 1)
        return min(seconds, self.max_delay) if self.max_delay is not None else seconds

    def covers(self, kinds: tuple[Any, ...]) -> bool:
        """Whether a failure of these kinds (an exit status, exception class names, `timeout`) is retried."""
        return not self.on or any(kind in self.on for kind in kinds)


def failure_kinds(err: BaseException) -> tuple[Any, ...]:
    """What `retry.on` matches a failure against: `err.kinds` if the effect said (a Python step's
    exception classes, `timeout`), else the class names of the error itself."""
    kinds = getattr(err, "kinds", None)
    return tuple(kinds) if kinds else tuple(c.__name__ for c in type(err).__mro__)


def _retrying(options: StepOptions, path: str, at: Cursor, attempt: Callable[[], Steps]) -> Steps:
    """Run `attempt()` (one try of a leaf step: a generator that returns `(value, None)` or
    `(value, kinds)` for a failed try whose value still stands, e.g. a command's non-zero exit)
    under the step's `retry:` policy. The number of failures and the next attempt's deadline are
    this leaf's cursor level, saved before each backoff, so a crash during one resumes at the
    same attempt, never from the first. A backoff near enough is slept in process; a longer one
    suspends the session (`awaiting` a retry). Returns the last attempt's `(value, kinds)`."""
    policy: RetryPolicy | None = options.retry
    error: StepFailed | None
    failures, deadline = (at[1], at[2]) if isinstance(at, tuple) and at[0] == AT_RETRY else (0, None)
    while True:
        if deadline is not None:
            alarm = yield Timer(path, deadline=deadline, hold=True)
            if not alarm.due:
                yield Suspend((AT_RETRY, failures, deadline),
                              (WaitInfo(path, f"attempt {failures + 1}", (), deadline, kind="retry"),))
                raise RuntimeError("a suspended retry was resumed in place")
        try:
            value, kinds = yield from attempt()
        except StepFailed as err:
            value, kinds, error = None, failure_kinds(err), err
        else:
            error = None
            if kinds is None:
                return value, None
        if policy is None or failures + 1 >= policy.attempts or not policy.covers(kinds):
            if failures:
                yield Checkpoint(HERE)  # `roast retry` starts the policy afresh at this step
            if error is not None:
                raise error
            return value, kinds
        failures += 1
        alarm = yield Timer(path, seconds=policy.pause(failures), jitter=policy.jitter)
        deadline = alarm.deadline
        yield Checkpoint((AT_RETRY, failures, deadline))  # saved before the pause begins


# A prompt step without `retry:` retries what is usually temporary at a provider (issue 17).
PROMPT_RETRY = RetryPolicy(3, 1.0, 2.0, on=("rate_limit", "server_error", "timeout", "connection"))


class _Fatal(Record):
    """A failure no `retry:` policy retries (a rejected token, an unknown model), carried past it."""

    __slots__ = ("error",)


def _exit_kinds(done: Done) -> tuple[Any, ...] | None:
    """A command's failure, for `retry.on`: its exit status; None when it succeeded."""
    return None if done.status == 0 else (done.status,)


# --------------------------------------------------------------------------- leaf nodes


class StepOptions(Record):
    """Per-step configuration (SPEC §2): from the top-level key named after the step."""

    __slots__ = ("exit_on_error", "print_response", "json", "coerce_to", "timeout", "model", "params",
                 "retry", "provider", "base_url", "max_tool_rounds")
    _defaults = {"exit_on_error": True, "print_response": None, "json": False, "coerce_to": None,
                 "timeout": None, "model": None, "params": {}, "retry": None, "provider": None,
                 "base_url": None, "max_tool_rounds": None}


class Command(Record):
    """`$(command)` or `name: $(command)`: output is stdout, stripped."""

    __slots__ = ("path", "name", "template", "options", "depth")
    _defaults = {"depth": 0}

    @property
    def ident(self) -> str:
        return f"{self.name}: $({self.template})" if self.name else f"$({self.template})"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)

        def attempt() -> Steps:
            line, env = render_shell(self.template, ctx.namespace())
            done = yield Shell(line, env, path, self.name, self.options.timeout)
            return done, _exit_kinds(done)

        done, _ = yield from _retrying(self.options, path, at, attempt)
        output = _command_output(done, self.options.exit_on_error, "command", path, f"$({self.template})")
        ctx.record(self.name, _coerce(output, self.options.coerce_to),
                   print_response=self.options.print_response)


class Prompt(Record):
    """A prompt step (inline text or `name/prompt.md`): the model's response is the output."""

    __slots__ = ("path", "name", "template", "options", "output_template", "depth")
    _defaults = {"output_template": None, "depth": 0}

    @property
    def ident(self) -> str:
        return self.name or self.template

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        prompt = render(self.template, ctx.namespace())
        path = _runtime_path(self.path, self.depth, ctx)
        options = self.options
        request = AskModel(prompt, path, self.name, options.model, options.json, tuple(ctx.transcript),
                           provider=options.provider, base_url=options.base_url,
                           max_tool_rounds=options.max_tool_rounds)

        def attempt() -> Steps:
            try:
                answer = yield request
            except StepFailed as err:
                if getattr(err, "retryable", None) is False:  # a rejected token, an unknown model: at once
                    return _Fatal(err), None
                raise
            return answer, None

        if options.retry is None:
            options = options._replace(retry=PROMPT_RETRY)
        response, _ = yield from _retrying(options, path, at, attempt)
        if isinstance(response, _Fatal):
            raise response.error
        # a provider's turns are kept exactly as they came; only the output is stripped
        turns = response.turns if isinstance(response, Answer) else None
        if isinstance(response, Answer):
            response = response.text
        if isinstance(response, str):
            response = response.strip()
        if turns is None:  # a plain text answer (the offline model)
            turns = ({"role": "user", "content": prompt}, {"role": "assistant", "content": to_text(response)})
        ctx.add_turns(*turns)
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


class Python(Record):
    """A Python step: `name.py` (`run(ctx)` or a class with `call`) or a callable from `roast.run`."""

    __slots__ = ("path", "name", "target", "options", "depth")
    _defaults = {"depth": 0}

    @property
    def ident(self) -> str:
        return self.name or getattr(self.target, "__name__", "python")

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)

        def attempt() -> Steps:
            value = yield CallPython(self.target, ctx, path, self.name, self.options.params)
            return value, None

        try:
            value, _ = yield from _retrying(self.options, path, at, attempt)
        except StepFailed as err:
            if self.options.exit_on_error:
                raise
            value = f"[Error: {err.message}]"
        ctx.record(self.name, _coerce(value, self.options.coerce_to),
                   print_response=self.options.print_response)


class Script(Record):
    """An executable `name.sh` step: run with ROAST_* variables; stdout (JSON if it parses) is the output."""

    __slots__ = ("path", "name", "file", "options", "depth")
    _defaults = {"depth": 0}

    @property
    def ident(self) -> str:
        return str(self.name)

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        env = {"ROAST_WORKFLOW_NAME": ctx.workflow.name, "ROAST_SESSION_ID": ctx.workflow.session_id,
               "ROAST_TARGET": ctx.workflow.target or "", "ROAST_STEP_NAME": self.name,
               "ROAST_OUTPUT": json.dumps(ctx.output, default=str)[:100_000]}

        def attempt() -> Steps:
            done = yield Shell('"${ROAST_SCRIPT}"', {**env, "ROAST_SCRIPT": self.file}, path, self.name,
                               self.options.timeout)
            return done, _exit_kinds(done)

        done, _ = yield from _retrying(self.options, path, at, attempt)
        output: Any = _command_output(done, self.options.exit_on_error, f"{self.name}.sh", path)
        if done.status == 0 and output[:1] in ("[", "{"):
            try:
                output = json.loads(output)
            except ValueError:
                pass
        ctx.record(self.name, _coerce(output, self.options.coerce_to),
                   print_response=self.options.print_response)


class Input(Record):
    """`input:`: ask the person at the terminal (or read the answer from a pipe)."""

    __slots__ = ("path", "name", "prompt", "kind", "options_list", "default", "depth")
    _defaults = {"depth": 0}

    @property
    def ident(self) -> str:
        return f"input: {self.name or self.prompt}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        answer = yield Ask(render(self.prompt, ctx.namespace()), self.kind, path, self.name,
                           self.options_list, self.default)
        ctx.record(self.name, answer, print_response=False)


class Sleep(Record):
    """`sleep: 2h`, `sleep: "{{ output.eta }}"` or `sleep: {until: 2027-01-01T09:00:00Z}` (issue 16):
    the session waits until the deadline, saved like a wait's timeout and continued by `roast
    tick`, `--wait` or `roast serve`. Named, its output is the deadline (ISO 8601, UTC)."""

    __slots__ = ("path", "name", "duration", "until", "depth")
    _defaults = {"name": None, "duration": None, "until": None, "depth": 0}

    @property
    def ident(self) -> str:
        return f"sleep: until {self.until}" if self.until is not None else f"sleep: {self.duration}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        if at is HERE:
            raw = self.until if self.until is not None else self.duration
            try:
                value = render_value(raw, ctx.namespace()) if isinstance(raw, str) and has_template(raw) else raw
                if self.until is not None:
                    alarm = yield Timer(path, deadline=expressions.parse_instant(value, "`sleep: until`"))
                else:
                    alarm = yield Timer(path, seconds=expressions.parse_duration(value, "`sleep:`", zero=True))
            except RoastError as err:
                if isinstance(err, StepFailed):
                    raise
                raise StepFailed(err.message, where=path, hint=err.hint) from err
        else:
            alarm = yield Timer(path, deadline=_level(at)[1])
        if not alarm.due:
            yield Suspend((AT_SLEEP, alarm.deadline),
                          (WaitInfo(path, self.name or "sleep", (), alarm.deadline, kind="sleep"),))
            raise RuntimeError("a suspended sleep was resumed in place")
        if self.name:
            ctx.record(self.name, expressions.iso(alarm.deadline), print_response=False)


# --------------------------------------------------------------------------- composite nodes


class Sequence(Record):
    """A steps list: runs in order, checkpointing after each step."""

    __slots__ = ("path", "steps")

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
                    err.where = _runtime_path(step.path, getattr(step, "depth", 0), ctx)
                raise
            child_at = HERE
            yield Checkpoint((index + 1, HERE))

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> tuple[Any, Cursor, str, tuple[int, ...]] | None:
        index, child_at = _level(at)
        if not isinstance(index, int) or not 0 <= index < len(self.steps):
            return None
        return self.steps[index], child_at, f"{self.path}[{index}]", trail


class If(Record):
    """`if:`/`unless:` with `then:`/`else:`; the branch taken is part of the cursor."""

    __slots__ = ("path", "name", "condition", "then", "otherwise", "negate")
    _defaults = {"negate": False}

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
            branch, child_at = _level(at)
        body = self.then if branch == "then" else self.otherwise
        if body is not None:
            yield from _within(lambda c: (branch, c), body.run(ctx, child_at))
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> tuple[Any, Cursor, str, tuple[int, ...]] | None:
        branch, child_at = _level(at)
        body = self.then if branch == "then" else self.otherwise if branch == "else" else None
        return (body, child_at, f"{branch}", trail) if body is not None else None


class Case(Record):
    """`case:` / `when:` / `else:`: the matched key is part of the cursor."""

    __slots__ = ("path", "name", "expression", "whens", "otherwise", "exit_on_error")
    _defaults = {"exit_on_error": True}

    @property
    def ident(self) -> str:
        return f"case: {self.expression}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        if at is HERE:
            command = command_text(self.expression)
            if command is not None:
                done = yield from _run_command(command, ctx, self.path)
                # issue 11: a failing case command fails the step instead of silently taking `else`
                value = _command_output(done, self.exit_on_error, "the `case` command", self.path,
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
            choice, child_at = _level(at)
        body = self.whens[choice][1] if choice >= 0 else self.otherwise
        if body is not None:
            yield from _within(lambda c: (choice, c), body.run(ctx, child_at))
        if self.name:
            ctx.record(self.name, ctx.last, print_response=None if ctx.last_printable else False)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> tuple[Any, Cursor, str, tuple[int, ...]] | None:
        choice, child_at = _level(at)
        if not isinstance(choice, int) or choice >= len(self.whens):
            return None
        body = self.whens[choice][1] if choice >= 0 else self.otherwise
        label = f"when {self.whens[choice][0]}" if choice >= 0 else "else"
        return (body, child_at, label, trail) if body is not None else None


class Each(Record):
    """`each:` / `as:` / `steps:`: the collection is evaluated once and kept in the context."""

    __slots__ = ("path", "name", "expression", "var", "body", "depth", "exit_on_error")
    _defaults = {"exit_on_error": True}  # `depth`: enclosing loops, this one excluded

    @property
    def ident(self) -> str:
        return f"each: {self.expression} as {self.var}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        key = _runtime_path(self.path, self.depth, ctx)
        if at is HERE:
            command = command_text(self.expression)
            if command is not None:
                done = yield from _run_command(command, ctx, self.path)
                # issue 11: `each: $(ls /missing/*.py)` fails instead of iterating zero times
                items = _collection(_command_output(done, self.exit_on_error, "the `each` command", self.path,
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
            start, stored, child_at = _level(at)
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

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> tuple[Any, Cursor, str, tuple[int, ...]] | None:
        index, stored, child_at = _level(at)
        if stored == COLLECTED:
            items = (collections or {}).get(_trail_path(self.path, self.depth, trail))
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

    __slots__ = ("path", "name", "body", "until", "max_iterations", "depth")

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

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> tuple[Any, Cursor, str, tuple[int, ...]] | None:
        iteration, child_at = _level(at)
        if not isinstance(iteration, int) or iteration >= self.max_iterations:
            return None
        return self.body, child_at, f"repeat #{iteration + 1}", trail[:self.depth] + (iteration,)


class Parallel(Record):
    """A nested list: branches run concurrently until each ends or waits (SPEC §3, §6)."""

    __slots__ = ("path", "branches")

    @property
    def ident(self) -> str:
        return f"parallel[{len(self.branches)}]"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        cursors = _level(at) if at is not HERE else (HERE,) * len(self.branches)
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

    def children(self, at: Cursor, trail: tuple[int, ...] = ()) -> list[tuple[Any, Cursor, str, tuple[int, ...]]]:
        return [(b, c, f"[{i}]", trail) for i, (b, c) in enumerate(zip(self.branches, _level(at))) if c != DONE]


class Webhook(Record):
    """`- webhook: URL` inside a wait's `notify:` (issue 15): POSTs the saved wait's details
    (`wait.*`: session, events, deadline, resume commands, links) as JSON, signed with Standard
    Webhooks headers; the effect retries 5xx and timeouts for a bounded time."""

    __slots__ = ("path", "url", "depth")
    _defaults = {"depth": 0}

    @property
    def ident(self) -> str:
        return "webhook"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        url = render(self.url, ctx.namespace()).strip()
        if not url.startswith(("https://", "http://")):
            raise StepFailed("a `webhook:` URL must start with https:// or http://", where=path,
                             hint="check the URL (or the template that makes it)")
        wait = dict(getattr(ctx, "wait", None) or {})
        payload = {"type": "roast.wait.started", **wait}
        msg_id = f"msg_{wait.get('session_id', '')}_{wait.get('seq', '')}_{path}"
        sent = yield PostWebhook(url, payload, msg_id, path)
        ctx.record(None, sent, print_response=False)


class WaitForEvent(Record):
    """`wait_for_event:` maps event names to step lists; the session pauses here (SPEC §6).
    `schemas`: (event, JSON Schema as text) pairs; `notify`: steps run once the wait is saved."""

    __slots__ = ("path", "name", "branches", "timeout_branch", "on_timeout", "timeout", "depth", "schemas",
                 "notify")
    _defaults = {"depth": 0, "schemas": (), "notify": None}

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.branches)

    @property
    def ident(self) -> str:
        return f"{self.name or 'wait_for_event'}: {', '.join(self.events)}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = _runtime_path(self.path, self.depth, ctx)
        wait = self.name or "wait_for_event"
        if not isinstance(at, tuple) or at[0] == AT_WAIT:
            deadline = at[1] if isinstance(at, tuple) else None
            delivery = yield Receive(path, wait, self.events, self.timeout, deadline, at is not HERE)
            if delivery.event is None:
                yield Suspend((AT_WAIT, delivery.deadline),
                              (WaitInfo(path, wait, self.events, delivery.deadline, self.schemas, self.notify),))
                raise RuntimeError("a suspended wait was resumed in place")
            event = delivery.event
            ctx.set_event(event.name, event.data, event.delivery)
            ctx.record(wait, {"event": event.name, "data": dict(event.data),
                              "received_at": event.received_at}, print_response=False)
            yield Checkpoint((event.name, HERE))  # the consumed event is saved before its branch runs
            branch_name, child_at = event.name, HERE
        else:
            branch_name, child_at = _level(at)
        body = self._branch(branch_name)
        if body is None:
            raise TimedOut(f"the wait timed out (deadline {ctx.event.get('deadline', '?')}) and "
                           "has neither a `timeout:` branch nor `on_timeout`", where=path)
        yield from _within(lambda c: (branch_name, c), body.run(ctx, child_at))

    def _branch(self, event: str) -> Sequence | None:
        if event == "timeout":
            return self.timeout_branch or self.on_timeout
        return next((body for key, body in self.branches if key == event), None)

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> tuple[Any, Cursor, str, tuple[int, ...]] | None:
        if not isinstance(at, tuple) or at[0] == AT_WAIT:
            return None
        body = self._branch(at[0])
        return (body, at[1], f"on {at[0]}", trail) if body is not None else None


COMPOSITES = (Sequence, If, Case, Each, Repeat, WaitForEvent)


# --------------------------------------------------------------------------- cursor views


def describe(node: Any, at: Cursor, collections: Mapping[str, Any] | None = None) -> str:
    """A readable cursor: `steps[2] review › each item=b.py (2/3) › wait_for_event`."""
    parts: list[str] = []
    _describe(node, at, parts, (), collections)
    return " › ".join(parts) if parts else "start"


def _describe(node: Any, at: Cursor, parts: list[str], trail: tuple[int, ...],
              collections: Mapping[str, Any] | None) -> None:
    if at is HERE:
        return
    if isinstance(node, Parallel):
        inner = []
        for branch, child_at, label, _ in node.children(at, trail):
            sub: list[str] = []
            _describe(branch, child_at, sub, trail, collections)
            inner.append(label + (" " + " › ".join(sub) if sub else ""))
        parts.append("parallel(" + "; ".join(inner) + ")")
        return
    if isinstance(node, WaitForEvent) and isinstance(at, tuple) and at[0] == AT_WAIT:
        parts.append(node.name or "wait_for_event")
        return
    if isinstance(at, tuple) and at and at[0] == AT_RETRY:
        parts.append(f"retry (attempt {at[1] + 1})")
        return
    if isinstance(at, tuple) and at and at[0] == AT_SLEEP:
        parts.append("sleep")
        return
    found = node.child(at, trail, collections) if isinstance(node, COMPOSITES) else None
    if found is None:
        if isinstance(node, Sequence) and isinstance(at, tuple) and at[0] >= len(node.steps):
            parts.append("end")
        return
    child, child_at, label, child_trail = found
    if isinstance(node, Sequence):
        name = getattr(child, "name", None)
        parts.append(f"{label}" + (f" {name}" if name and not isinstance(child, WaitForEvent) else ""))
    else:
        parts.append(label)
    _describe(child, child_at, parts, child_trail, collections)


def signature(node: Any, at: Cursor) -> list[str]:
    """What must not change for `at` to mean the same place: each level's earlier siblings and the node on the path."""
    out: list[str] = []
    _signature(node, at, out)
    return out


def _signature(node: Any, at: Cursor, out: list[str]) -> None:
    if at is HERE:
        return
    if isinstance(node, Sequence):
        index, child_at = _level(at)
        # a step the cursor is about to start (`(index, HERE)`: after a crash, or a failed step that
        # `roast retry` runs again) may be edited: it runs from its start, as it now reads (issue 16)
        shown = node.steps[: index + (0 if child_at is HERE else 1)]
        out.append(f"{node.path}: " + " | ".join(f"{type(s).__name__}({s.ident})" for s in shown)
                   + (" | <missing>" if index >= len(node.steps) and child_at is not HERE else ""))
        if index < len(node.steps):
            _signature(node.steps[index], child_at, out)
        return
    if isinstance(node, Parallel):
        out.append(f"{node.path}: {node.ident}")
        if isinstance(at, tuple) and len(at) == len(node.branches):
            for branch, child_at, _, _ in node.children(at):
                _signature(branch, child_at, out)
        else:
            out.append(f"{node.path}: <branches changed>")
        return
    if isinstance(node, WaitForEvent):
        out.append(f"{node.path}: wait {node.ident}")
    else:
        out.append(f"{node.path}: {type(node).__name__}({node.ident})")
    found = _safe_child(node, at)
    if found is not None:
        _signature(found[0], found[1], out)
    elif not (isinstance(node, WaitForEvent) and isinstance(at, tuple) and at[0] == AT_WAIT) \
            and isinstance(node, COMPOSITES):
        out.append(f"{node.path}: <cursor does not resolve>")


def _level(at: Cursor) -> tuple[Any, ...]:
    """A composite's own cursor level (a tuple); anything else is not a position in it (TypeError,
    as unpacking would raise)."""
    if isinstance(at, list):  # (never written so; read as a tuple all the same)
        return tuple(at)
    if not isinstance(at, tuple):
        raise TypeError(f"not a cursor level: {at!r}")
    return at


def _safe_child(node: Any, at: Cursor) -> tuple[Any, Cursor, str, tuple[int, ...]] | None:
    """`node.child(at)`, or None when the cursor's shape does not fit the node (an edited workflow)."""
    if not isinstance(node, COMPOSITES):
        return None
    try:
        return node.child(at)  # type: ignore[no-any-return]
    except (TypeError, ValueError, IndexError):
        return None


def wait_at(node: Any, at: Cursor) -> list[WaitForEvent]:
    """The wait nodes the cursor rests on (several inside parallel groups)."""
    if at is HERE:
        return []
    if isinstance(node, Parallel):
        if not isinstance(at, tuple) or len(at) != len(node.branches):
            return []
        return [w for b, c, _, _ in node.children(at) for w in wait_at(b, c)]
    if isinstance(node, WaitForEvent) and isinstance(at, tuple) and at and at[0] == AT_WAIT:
        return [node]
    found = _safe_child(node, at)
    return wait_at(found[0], found[1]) if found else []


def all_waits(node: Any) -> Iterable[WaitForEvent]:
    """Every wait in the tree (for `roast validate` and for the events a workflow declares)."""
    return (each for each in subtree(node) if isinstance(each, WaitForEvent))


def subtree(node: Any) -> Iterable[Any]:
    """`node` and every node below it, in step order."""
    yield node
    if isinstance(node, Sequence):
        for step in node.steps:
            yield from subtree(step)
    elif isinstance(node, Parallel):
        for branch in node.branches:
            yield from subtree(branch)
    elif isinstance(node, If):
        for body in (node.then, node.otherwise):
            if body is not None:
                yield from subtree(body)
    elif isinstance(node, Case):
        for _, body in node.whens:
            yield from subtree(body)
        if node.otherwise is not None:
            yield from subtree(node.otherwise)
    elif isinstance(node, (Each, Repeat)):
        yield from subtree(node.body)
    elif isinstance(node, WaitForEvent):
        for _, body in node.branches:
            yield from subtree(body)
        for body in (node.timeout_branch, node.on_timeout):
            if body is not None:
                yield from subtree(body)


def output_names(node: Any) -> set[str]:
    """The output names the steps of `node`'s subtree record (an unnamed wait records `wait_for_event`)."""
    names = set()
    for each in subtree(node):
        if isinstance(each, WaitForEvent):
            names.add(each.name or "wait_for_event")
        elif getattr(each, "name", None) and not isinstance(each, (Sequence, Parallel)):
            names.add(each.name)
    return names


def rewind(node: Any, at: Cursor, target: str) -> tuple[Cursor, list[Any]] | None:
    """`at` moved back to the start of the step at static path `target`, which must lie on the way
    to `at` (an earlier step of a list the cursor is in, or a step the cursor is inside), with the
    steps that then run again (their outputs are dropped; `roast retry --from`, issue 16). None
    when `target` is not on the way."""
    if isinstance(node, Parallel):
        if at is HERE or not isinstance(at, tuple) or len(at) != len(node.branches):
            return None
        for i, (branch, child_at) in enumerate(zip(node.branches, at)):
            if branch.path == target:
                return at[:i] + (HERE,) + at[i + 1:], [branch]
            if child_at == DONE:
                if isinstance(branch, Sequence):
                    child_at = (len(branch.steps), HERE)  # a finished branch: every step of it ran
                else:
                    continue
            found = rewind(branch, child_at, target)
            if found is not None:
                return at[:i] + (found[0],) + at[i + 1:], found[1]
        return None
    if at is HERE or not isinstance(at, tuple):
        return None
    if isinstance(node, Sequence):
        index, child_at = _level(at)
        if not isinstance(index, int):
            return None
        for j in range(min(index, len(node.steps) - 1) + 1):
            if node.steps[j].path == target:
                return (j, HERE), list(node.steps[j:index + 1])
        if index < len(node.steps):
            found = rewind(node.steps[index], child_at, target)
            if found is not None:
                return (index, found[0]), found[1]
        return None
    child = _safe_child(node, at)
    if child is None:
        return None
    found = rewind(child[0], child[1], target)
    if found is None:
        return None
    return at[:-1] + (found[0],), found[1]


def on_the_way(node: Any, at: Cursor) -> list[str]:
    """The static paths `rewind` accepts for `at` (for the hint of a refused `--from`), in step order."""
    return [each.path for each in subtree(node) if each is not node and rewind(node, at, each.path) is not None]


def event_schemas(node: Any) -> dict[str, list[str]]:
    """Every JSON Schema a wait declares, by event name (a queued event must match them all)."""
    out: dict[str, list[str]] = {}
    for wait in all_waits(node):
        for event, text in getattr(wait, "schemas", ()) or ():
            out.setdefault(event, []).append(text)
    return out


def declared_events(node: Any) -> list[str]:
    """Every event name some wait of the tree declares, each once, in step order."""
    return list(dict.fromkeys(name for wait in all_waits(node) for name in wait.events))


def _all_events(node: Any) -> set[str]:
    return {name for wait in all_waits(node) for name in wait.events}


def events_ahead(node: Any, at: Cursor) -> set[str]:
    """The events some wait could still take after `at`, not counting the waits `at` rests on
    (they are the session's `awaiting`): an event for one of them is kept, not refused (issue 14).
    A loop around the position counts whole: its next pass may reach any wait in it again."""
    if at is HERE:
        return _all_events(node)
    if isinstance(node, Parallel):
        if not isinstance(at, tuple) or len(at) != len(node.branches):
            return _all_events(node)
        return {e for b, c, _, _ in node.children(at) for e in events_ahead(b, c)}
    if isinstance(node, WaitForEvent):
        if not isinstance(at, tuple):
            return set()
        if at[0] == AT_WAIT:
            bodies = [body for _, body in node.branches] + [node.timeout_branch, node.on_timeout]
            return {e for body in bodies if body is not None for e in _all_events(body)}
        body = node._branch(at[0])
        return events_ahead(body, at[1]) if body is not None else set()
    if isinstance(node, Sequence):
        index, child_at = _level(at)
        out: set[str] = set()
        if isinstance(index, int) and index < len(node.steps):
            out |= events_ahead(node.steps[index], child_at)
            for later in node.steps[index + 1:]:
                out |= _all_events(later)
        return out
    found = _safe_child(node, at)
    if found is None:
        return set()
    ahead = events_ahead(found[0], found[1])
    if isinstance(node, (Each, Repeat)):
        ahead |= _all_events(node.body)
    return ahead
