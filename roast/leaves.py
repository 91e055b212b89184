"""The leaf nodes of the step tree (a command, a prompt, a Python step, a script, an input, a
sleep, a notify webhook) and the `retry:` machinery they run under (issue 16).

A leaf has no child nodes (`children()` is empty, `child()` None): it yields the requests of
`requests` and records its output in the context. Performs no I/O of its own.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast import expressions
from roast.errors import RoastError, StepFailed
from roast.webhook_aim import links_allowed
from roast.expressions import has_template, render, render_value, to_text
from roast.record import Record
from roast.requests import (Answer, Ask, AskModel, CallPython, Checkpoint, Done, PostWebhook, Shell, Suspend, Timer,
                            WaitInfo)
from roast.shell import render_shell
from roast.steps import AT_RETRY, AT_SLEEP, HERE, coerce, command_output, cursor_level, runtime_path

if TYPE_CHECKING:
    from typing import Any

    from roast.requests import Cursor
    from roast.steps import Ctx, Position, Steps


class Leaf(Record):
    """The base of the leaf nodes: no child nodes, so no cursor level points into one."""

    __slots__ = ()

    def children(self) -> tuple[Any, ...]:
        return ()

    def child(self, at: Cursor, trail: tuple[int, ...] = (), collections: Mapping[str, Any] | None = None
              ) -> Position | None:
        return None


# --------------------------------------------------------------------------- retries (issue 16)


class RetryPolicy(Record):
    """`retry:` of a step (or the top-level default): how many attempts in all, the backoff before
    each new one (`delay`, multiplied by `backoff` after every failure, at most `max_delay`,
    shortened at random by up to half when `jitter`), and which failures count (`on`: exit
    statuses of a command, exception class names of a Python step, `timeout`; empty: all)."""

    attempts: int
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float | None = None
    jitter: bool = True
    on: tuple[Any, ...] = ()

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

    error: StepFailed


def _exit_kinds(done: Done) -> tuple[Any, ...] | None:
    """A command's failure, for `retry.on`: its exit status; None when it succeeded."""
    return None if done.status == 0 else (done.status,)


# --------------------------------------------------------------------------- leaf nodes


class StepOptions(Record):
    """Per-step configuration (SPEC §2): from the top-level key named after the step."""

    exit_on_error: bool = True
    print_response: bool | None = None
    json: bool = False
    coerce_to: str | None = None
    timeout: float | None = None
    model: str | None = None
    params: dict[str, Any] = {}
    retry: RetryPolicy | None = None
    provider: str | None = None
    base_url: str | None = None
    max_tool_rounds: int | None = None


class Command(Leaf):
    """`$(command)` or `name: $(command)`: output is stdout, stripped."""

    path: str
    name: str | None
    template: str
    options: StepOptions
    depth: int = 0

    @property
    def ident(self) -> str:
        return f"{self.name}: $({self.template})" if self.name else f"$({self.template})"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = runtime_path(self.path, self.depth, ctx)

        def attempt() -> Steps:
            line, env = render_shell(self.template, ctx.namespace())
            done = yield Shell(line, env, path, self.name, self.options.timeout)
            return done, _exit_kinds(done)

        done, _ = yield from _retrying(self.options, path, at, attempt)
        output = command_output(done, self.options.exit_on_error, "command", path, f"$({self.template})")
        ctx.record(self.name, coerce(output, self.options.coerce_to),
                   print_response=self.options.print_response)


class Prompt(Leaf):
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

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        prompt = render(self.template, ctx.namespace())
        path = runtime_path(self.path, self.depth, ctx)
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
        value = coerce(value, self.options.coerce_to)
        if self.output_template is not None:
            ns = ctx.namespace()
            ns["response"] = expressions.wrap(value)
            value = render(self.output_template, ns)
        # SPEC §3: a prompt's response prints unless told otherwise (Roast: last step prints).
        ctx.record(self.name, value, print_response=self.options.print_response)


class Python(Leaf):
    """A Python step: `name.py` (`run(ctx)` or a class with `call`) or a callable from `roast.run`."""

    path: str
    name: str | None
    target: Any
    options: StepOptions
    depth: int = 0

    @property
    def ident(self) -> str:
        return self.name or str(getattr(self.target, "__name__", "python"))

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = runtime_path(self.path, self.depth, ctx)

        def attempt() -> Steps:
            value = yield CallPython(self.target, ctx, path, self.name, self.options.params)
            return value, None

        try:
            value, _ = yield from _retrying(self.options, path, at, attempt)
        except StepFailed as err:
            if self.options.exit_on_error:
                raise
            value = f"[Error: {err.message}]"
        ctx.record(self.name, coerce(value, self.options.coerce_to),
                   print_response=self.options.print_response)


class Script(Leaf):
    """An executable `name.sh` step: run with ROAST_* variables; stdout (JSON if it parses) is the output."""

    path: str
    name: str
    file: str
    options: StepOptions
    depth: int = 0

    @property
    def ident(self) -> str:
        return str(self.name)

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = runtime_path(self.path, self.depth, ctx)
        env = {"ROAST_WORKFLOW_NAME": ctx.workflow.name, "ROAST_SESSION_ID": ctx.workflow.session_id,
               "ROAST_TARGET": ctx.workflow.target or "", "ROAST_STEP_NAME": self.name,
               "ROAST_OUTPUT": json.dumps(ctx.output, default=str)[:100_000]}

        def attempt() -> Steps:
            done = yield Shell('"${ROAST_SCRIPT}"', {**env, "ROAST_SCRIPT": self.file}, path, self.name,
                               self.options.timeout)
            return done, _exit_kinds(done)

        done, _ = yield from _retrying(self.options, path, at, attempt)
        output: Any = command_output(done, self.options.exit_on_error, f"{self.name}.sh", path)
        if done.status == 0 and output[:1] in ("[", "{"):
            try:
                output = json.loads(output)
            except ValueError:
                pass
        ctx.record(self.name, coerce(output, self.options.coerce_to),
                   print_response=self.options.print_response)


class Input(Leaf):
    """`input:`: ask the person at the terminal (or read the answer from a pipe)."""

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

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = runtime_path(self.path, self.depth, ctx)
        answer = yield Ask(render(self.prompt, ctx.namespace()), self.kind, path, self.name,
                           self.options_list, self.default)
        ctx.record(self.name, answer, print_response=False)


class Sleep(Leaf):
    """`sleep: 2h`, `sleep: "{{ output.eta }}"` or `sleep: {until: 2027-01-01T09:00:00Z}` (issue 16):
    the session waits until the deadline, saved like a wait's timeout and continued by `roast
    tick`, `--wait` or `roast serve`. Named, its output is the deadline (ISO 8601, UTC)."""

    path: str
    name: str | None = None
    duration: Any = None
    until: str | None = None
    depth: int = 0

    @property
    def ident(self) -> str:
        return f"sleep: until {self.until}" if self.until is not None else f"sleep: {self.duration}"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = runtime_path(self.path, self.depth, ctx)
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
            alarm = yield Timer(path, deadline=cursor_level(at)[1])
        if not alarm.due:
            yield Suspend((AT_SLEEP, alarm.deadline),
                          (WaitInfo(path, self.name or "sleep", (), alarm.deadline, kind="sleep"),))
            raise RuntimeError("a suspended sleep was resumed in place")
        if self.name:
            ctx.record(self.name, expressions.iso(alarm.deadline), print_response=False)




class Webhook(Leaf):
    """`- webhook: URL` inside a wait's `notify:` (issue 15): POSTs the saved wait's details
    (`wait.*`: session, events, deadline, resume commands, links) as JSON, signed with Standard
    Webhooks headers; the effect retries 5xx and timeouts for a bounded time."""

    path: str
    url: str
    depth: int = 0

    @property
    def ident(self) -> str:
        return "webhook"

    def run(self, ctx: Ctx, at: Cursor = HERE) -> Steps:
        path = runtime_path(self.path, self.depth, ctx)
        url = render(self.url, ctx.namespace()).strip()
        if not url.startswith(("https://", "http://")):
            raise StepFailed("a `webhook:` URL must start with https:// or http://", where=path,
                             hint="check the URL (or the template that makes it)")
        wait = dict(getattr(ctx, "wait", None) or {})
        payload = {"type": "roast.wait.started", **wait}
        allowed = ctx.namespace()["env"].get("ROAST_NOTIFY_ALLOWED_HOSTS")
        if "links" in payload and not links_allowed(self.url, url, allowed):  # issue 21: where the author said
            payload["links"] = {}
        msg_id = f"msg_{wait.get('session_id', '')}_{wait.get('seq', '')}_{path}"
        sent = yield PostWebhook(url, payload, msg_id, path)
        ctx.record(None, sent, print_response=False)


