"""Performs the step tree's requests: subprocesses, model calls, Python steps, terminal prompts.

Everything here touches the world. Interpolated values reach the shell only through the
environment (`ROAST_ARG_n`, SPEC §4); commands run with `/bin/sh -c`, stdin closed, each in a
process group of its own, which is killed whole when the step times out or roast is stopped
(issue 10). The model interface has an offline provider (it answers with the rendered prompt) so
workflows run with no network and no key.

`perform` may be called from several threads at once (a parallel group's worker threads): the
registry of running process groups and the event file are guarded by a lock.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import _thread
import time
from collections.abc import Callable, Mapping
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.errors import StepFailed, UsageError
from roast.requests import Answer, Ask, AskModel, CallPython, Done, PostWebhook, Shell

if TYPE_CHECKING:
    from typing import Any, Protocol

    from roast.context import Context

    class Model(Protocol):
        """A model provider: one completion for a prompt, given the conversation so far."""

        name: str

        def complete(self, prompt: str, *, model: str | None, transcript: tuple[Mapping[str, str], ...],
                     json_mode: bool) -> str: ...

SHELL = "/bin/sh"
_READ = 65536


class OfflineModel:
    """Needs no network and no key: the response is the rendered prompt (JSON-wrapped when JSON is asked)."""

    name = "offline"

    def complete(self, prompt: str, *, model: str | None, transcript: tuple[Mapping[str, str], ...],
                 json_mode: bool) -> str:
        if json_mode:
            try:
                json.loads(prompt)
                return prompt
            except ValueError:
                return json.dumps({"response": prompt})
        return prompt


def choose_model(provider: str | None) -> Model:
    """The model that answers when no provider is configured: the offline one. A configured provider
    (openai, openrouter) is asked through `ModelSetup` when a prompt step runs."""
    if provider in (None, "", "offline", "openai", "openrouter"):
        return OfflineModel()
    raise UsageError(f"model provider {provider!r} is not known to this version of roast",
                     hint="api_provider is one of offline, openai, openrouter")


DEFAULT_TOOL_ROUNDS = 10


class ModelSetup:
    """A workflow's model keys (`api_provider`, `model`, `base_url`, `tools`; `api_token: True` marks
    that one is set) and `token()`, which gives the `api_token:` as written, read when a call needs it.
    The resolved token stays in the Effects' memory: never in the context, a request or a message."""

    def __init__(self, config: Mapping[str, Any] | None = None,
                 token: Callable[[], str | None] | None = None) -> None:
        self.config = dict(config or {})
        self.token = token or (lambda: None)


class Effects:
    """`perform(request)` for one session: the runner calls it, possibly from several threads."""

    def __init__(self, *, ctx: Context, model: Model | None = None, cwd: str | None = None,
                 env: Mapping[str, str] | None = None, announce: Callable[[str], None] | None = None,
                 pause: Callable[[], None] | None = None, unpause: Callable[[], None] | None = None,
                 models: ModelSetup | None = None) -> None:
        self.ctx = ctx
        self.model = model or OfflineModel()
        self.models = models or ModelSetup()
        self._settings: dict[tuple[Any, ...], Any] = {}  # resolved ProviderSettings, token included
        self.cwd = cwd
        self._given_env = env  # copied when a step first needs it (a branch with no command never does)
        self._base_env: dict[str, str] | None = None
        self._base_bytes: dict[bytes, bytes] | None = None
        self.announce = announce
        self.pause, self.unpause = pause, unpause
        self.on_spawn: Callable[[str, int], None] | None = None  # (step path, pgid): the runner records it
        self._announced = False
        self._modules: dict[str, Any] = {}
        self._lock = _thread.allocate_lock()
        self._groups: set[int] = set()
        self._event_files: dict[int, str] = {}  # id of the event data it holds -> path
        self._stopping = False

    @property
    def base_env(self) -> dict[str, str]:
        """The environment steps start from: the one given, else this process's (copied once)."""
        if self._base_env is None:
            self._base_env = dict(os.environ if self._given_env is None else self._given_env)
        return self._base_env

    def __call__(self, request: Any) -> Any:
        kind = type(request)
        if kind is Shell:
            return self.shell(request)
        if kind is CallPython:
            return self.call_python(request)
        if kind is AskModel:
            return self.ask_model(request)
        if kind is Ask:
            return self.ask(request)
        if kind is PostWebhook:
            return post_webhook(request)
        raise TypeError(f"no effect performs {kind.__name__}")

    def close(self) -> None:
        """Remove what this session's commands were given (the event file): no file of roast's
        outlives the command that made it (issue 10)."""
        with self._lock:
            files, self._event_files = list(self._event_files.values()), {}
        for path in files:
            try:
                os.unlink(path)
            except OSError:
                pass

    def kill_all(self) -> None:
        """Kill every process group still running (roast is being stopped) and refuse new ones."""
        with self._lock:
            self._stopping = True
            groups = list(self._groups)
        for pgid in groups:
            _kill_group(pgid)

    # -- shell
    def _env(self, extra: Mapping[str, str]) -> dict[Any, Any]:
        if self._base_bytes is None:
            # encoded once: subprocess would encode every variable again for every command
            self._base_bytes = {os.fsencode(k): os.fsencode(v) for k, v in self.base_env.items()}
        ours: dict[str, str] = {"ROAST_SESSION_ID": self.ctx.workflow.session_id,
                                "ROAST_WORKFLOW_NAME": self.ctx.workflow.name,
                                "ROAST_WORKFLOW_FILE": self.ctx.workflow.file}
        if self.ctx.event_name:
            ours["ROAST_EVENT_NAME"] = self.ctx.event_name
            ours["ROAST_EVENT_FILE"] = self._event_file()
        ours.update(extra)
        if "ROAST_STEP_PATH" in ours:
            ours["ROAST_IDEMPOTENCY_KEY"] = f"{self.ctx.workflow.session_id}:{ours['ROAST_STEP_PATH']}"
        env: dict[Any, Any] = dict(self._base_bytes)
        for key, value in ours.items():
            env.pop(os.fsencode(key), None)  # ours win over an inherited variable of the same name
            env[key] = value
        return env

    def _event_file(self) -> str:
        """The latest event's data as a 0600 JSON file, for commands that need more than 128 KiB.
        One file per event (a later wait may deliver another), made once under the lock."""
        event = self.ctx.event
        with self._lock:
            path = self._event_files.get(id(event))
            if path is None:
                # a private file (0600, O_EXCL) in $TMPDIR; tempfile is not imported for it (start-up)
                directory = os.environ.get("TMPDIR") or "/tmp"
                path = os.path.join(directory, f"roast-event-{os.urandom(8).hex()}.json")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(event, fh, ensure_ascii=False)
                self._event_files[id(event)] = path
            return path

    def shell(self, request: Shell) -> Done:
        with self._lock:
            if self._stopping:
                raise StepFailed("roast is stopping; the command was not started", where=request.path)
        try:
            proc = subprocess.Popen([SHELL, "-c", request.command], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd,
                                    env=self._env(request.env), start_new_session=True)
        except (OSError, ValueError) as err:
            raise StepFailed(f"cannot start the command: {err}", where=request.path,
                             hint="check the session's working directory and /bin/sh") from err
        with self._lock:
            self._groups.add(proc.pid)  # start_new_session: the child leads a group of its own
        try:
            if self.on_spawn is not None and request.step:
                self.on_spawn(request.path, proc.pid)
            out, err_out, timed_out = _communicate(proc, request.timeout)
        except BaseException:
            _kill_group(proc.pid)
            _reap(proc)
            raise
        finally:
            with self._lock:
                self._groups.discard(proc.pid)
        if timed_out:
            failure = StepFailed(f"command timed out after {request.timeout:g} s: {request.command}",
                                 where=request.path, hint="raise the step's `timeout:` in its config")
            failure.kinds = ("timeout",)  # type: ignore[attr-defined]  # what `retry.on` matches
            raise failure
        return Done(proc.returncode, out.decode("utf-8", "replace"), err_out.decode("utf-8", "replace"))

    # -- model
    def ask_model(self, request: AskModel) -> Any:
        config = dict(self.models.config)
        for key, value in (("api_provider", request.provider), ("base_url", request.base_url),
                           ("model", request.model)):
            if value is not None:
                config[key] = value
        if config.get("base_url") and "uri_base" in config:
            del config["uri_base"]  # a step's base_url wins over the workflow's uri_base
        from roast.providers import implied_provider

        provider = implied_provider(config, self.base_env)
        if provider != "offline":
            return self._ask_provider(request, config)
        if not self._announced and isinstance(self.model, OfflineModel) and self.announce:
            self.announce("no model provider configured: using the offline model, which answers "
                          "with the prompt itself")
            self._announced = True
        return self.model.complete(request.prompt, model=request.model, transcript=request.transcript,
                                   json_mode=request.json)

    def _ask_provider(self, request: AskModel, config: dict[str, Any]) -> Answer:
        """One turn with an OpenAI-compatible provider: the transcript and the new user message, then
        the function-calling loop over the workflow's `tools:` (each call run inside the session's
        working directory), at most `max_tool_rounds` rounds."""
        from pathlib import Path  # (tools has loaded it)

        from roast import providers, tool_calls, tools

        settings = self._provider_settings(config)
        specs = tools.parse_tools(config.get("tools"))
        offered = tools.function_definitions(specs) if specs else None
        root = self.cwd or os.getcwd()
        limit = request.max_tool_rounds or DEFAULT_TOOL_ROUNDS
        messages = [dict(turn) for turn in request.transcript]
        start = len(messages)
        messages.append({"role": "user", "content": request.prompt})
        used = [0, 0]
        rounds = 0
        while True:
            try:
                done = providers.complete(settings, messages, tools=offered, json_mode=request.json)
            except providers.ProviderError as err:
                raise _classified(err, request.path) from None
            used[0] += done.usage.prompt_tokens
            used[1] += done.usage.completion_tokens
            messages.append(done.message)
            if not done.tool_calls:
                return Answer(done.content or "", tuple(messages[start:]), tuple(used))
            rounds += 1
            if rounds > limit:
                failure = StepFailed(f"the model still asked for tools after {limit} rounds of tool calls "
                                     f"({settings.provider} model {settings.model!r})", where=request.path,
                                     hint="raise the step's `max_tool_rounds:` (default "
                                          f"{DEFAULT_TOOL_ROUNDS}), or ask for an answer without tools")
                failure.retryable = False  # type: ignore[attr-defined]
                raise failure
            for call in done.tool_calls:
                result = tool_calls.run_call(specs, call.name, call.arguments, root=Path(root),
                                             workflow=self.ctx.workflow.file)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})

    def _provider_settings(self, config: dict[str, Any]) -> Any:
        """ProviderSettings for these keys, the `api_token:` command run once per session run."""
        from roast import providers

        key = tuple(sorted((k, repr(v)) for k, v in config.items() if k != "tools"))
        settings = self._settings.get(key)
        if settings is None:
            if config.get("api_token"):
                config = {**config, "api_token": self.models.token()}
            settings = providers.settings_from(config, self.base_env, self._token_command)
            self._settings[key] = settings
        return settings

    def _token_command(self, command: str) -> str:
        """Run an `api_token: $(cmd)` command; its output is the token. Nothing of it is ever shown."""
        try:
            proc = subprocess.run([SHELL, "-c", command], stdin=subprocess.DEVNULL, capture_output=True,
                                  cwd=self.cwd, env=self.base_env, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise UsageError(f"the api_token command could not run ({type(err).__name__})",
                             hint="run it in a terminal: it should print the API token") from None
        if proc.returncode != 0:
            raise UsageError(f"the api_token command exited with status {proc.returncode}",
                             hint="run it in a terminal: it should print the API token")
        return proc.stdout.decode("utf-8", "replace")

    # -- python
    def call_python(self, request: CallPython) -> Any:
        target = request.target
        label = request.name or getattr(target, "__name__", "python step")
        try:
            if callable(target):
                fn = target
            else:
                fn = self._load_step(str(target), request.name or os.path.splitext(os.path.basename(str(target)))[0])
            if request.params and _accepts(fn, 2):
                value = fn(request.ctx, dict(request.params))
            else:
                value = fn(request.ctx)
            if _is_iterator(value):
                value = list(value)  # a generator's items are the output, not its repr (issue 11)
            return value
        except StepFailed:
            raise
        except Exception as err:
            where, detail = _user_frame(err)
            failure = StepFailed(f"Python step {label!r} raised {type(err).__name__}: {err}"
                                 + (f" (at {where})" if where else ""), where=request.path)
            failure.detail = detail  # type: ignore[attr-defined]  # shown with -v
            failure.kinds = tuple(c.__name__ for c in type(err).__mro__)  # type: ignore[attr-defined]  # retry.on
            raise failure from err

    def _load_step(self, file: str, name: str) -> Callable[..., Any]:
        import importlib.util  # Python step files only
        import inspect

        module = self._modules.get(file)
        if module is None:
            spec = importlib.util.spec_from_file_location(f"roast_step_{name}", file)
            if spec is None or spec.loader is None:
                raise StepFailed(f"cannot import {file}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._modules[file] = module
        fn = getattr(module, "run", None)
        if callable(fn) and not inspect.isclass(fn):
            return fn  # type: ignore[no-any-return]
        camel = "".join(part.capitalize() for part in name.split("_"))
        classes = [c for c in vars(module).values()
                   if inspect.isclass(c) and c.__module__ == module.__name__ and callable(getattr(c, "call", None))]
        cls: Any = getattr(module, camel, None) if inspect.isclass(getattr(module, camel, None)) else None
        cls = cls or (classes[0] if len(classes) == 1 else None)
        if cls is None:
            raise StepFailed(f"{file} defines neither `run(ctx)` nor a class with `call(self)`",
                             hint=f"add `def run(ctx): ...` to {os.path.basename(file)}")

        def call_class(ctx: Context, params: Mapping[str, Any] | None = None) -> Any:
            takes_ctx = cls.__init__ is not object.__init__ and _accepts(cls.__init__, 2)
            obj = cls(ctx) if takes_ctx else cls()
            obj.ctx = ctx
            obj.params = dict(params or {})
            return obj.call()

        return call_class

    # -- terminal
    def ask(self, request: Ask) -> Any:
        """An `input:` step: asked on the terminal (the live status line paused meanwhile), or read
        from stdin when it is a pipe; `default:` answers an empty reply (issue 11)."""
        stdin = sys.stdin
        if stdin is None or stdin.closed:
            raise StepFailed("this `input` step needs an answer, and there is no stdin", where=request.path,
                             hint="run the workflow from a terminal, or pipe the answers in")
        tty = stdin.isatty()
        if self.pause is not None:
            self.pause()
        try:
            return _ask(request, tty)
        finally:
            if self.unpause is not None:
                self.unpause()


def _classified(err: Any, path: str) -> Any:
    """A provider's failure with the kinds `retry.on` matches (`rate_limit`, `server_error`, `timeout`,
    `connection`) and `retryable` (False: no policy retries it), placed at the step."""
    status = err.status
    if status == 429:
        kinds: tuple[str, ...] = ("rate_limit",)
    elif status is not None and status >= 500:
        kinds = ("server_error",)
    elif status is None and err.retryable:
        kinds = ("timeout",) if "no answer within" in err.message else ("connection",)
    else:
        kinds = ("provider_error",) + ((str(status),) if status else ())
    err.kinds = kinds + ("ProviderError",)
    err.where = err.where or path
    return err


def _ask(request: Ask, tty: bool) -> Any:
    prompt = request.prompt.rstrip() + " "

    def read(text: str) -> str:
        if tty:
            # the question on stderr (input() would write it to stdout, which may be a file)
            print(text, end="", file=sys.stderr, flush=True)
            return input()
        print(text, end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            if request.default is not None:
                print("", file=sys.stderr)
                return ""
            raise StepFailed(f"no answer for the `input` step {request.prompt!r}: stdin ended",
                             where=request.path, hint="give the step a `default:`, or pipe an answer in")
        print("", file=sys.stderr)
        return line.rstrip("\n")

    if request.kind == "password":
        if tty:
            import getpass

            return getpass.getpass(prompt, stream=sys.stderr)
        return read(prompt)
    if request.kind == "confirm":
        for _ in range(100):
            answer = read(prompt + "[y/n] ").strip().lower()
            if answer in ("y", "yes", "n", "no") or (answer == "" and request.default is not None):
                return answer.startswith("y") if answer else bool(request.default)
        raise StepFailed("no valid answer (y or n) to the `input` step", where=request.path)
    if request.kind == "select":
        for i, option in enumerate(request.options, 1):
            print(f"  {i}) {option}", file=sys.stderr)
        for _ in range(100):
            answer = read(prompt).strip()
            if answer.isdigit() and 1 <= int(answer) <= len(request.options):
                return request.options[int(answer) - 1]
            if answer in request.options:
                return answer
            if answer == "" and request.default is not None:
                return request.default
        raise StepFailed("no valid choice for the `input` step", where=request.path)
    answer = read(prompt)
    return answer if answer or request.default is None else request.default


def _communicate(proc: subprocess.Popen[bytes], timeout: float | None) -> tuple[bytes, bytes, bool]:
    """Read a command's output until it ends. A timeout is a hard limit: the whole process group is
    killed and reading stops, even if a process that left the group still holds the pipes
    (issue 10: `timeout: 2s` took 25 s when a `setsid` child kept stdout open). The command's exit
    is watched through a pidfd where there is one, so nothing polls with sleeps."""
    import selectors

    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = _pidfd(proc.pid)
    exited = False
    timed_out = False
    try:
        with selectors.DefaultSelector() as selector:
            for stream in (proc.stdout, proc.stderr):
                selector.register(stream, selectors.EVENT_READ)
            if pidfd is not None:
                selector.register(pidfd, selectors.EVENT_READ)
            while len(selector.get_map()) > (1 if pidfd is not None and not exited else 0):
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(wait):
                    if key.fd == pidfd:
                        exited = True
                        selector.unregister(pidfd)
                        continue
                    data = os.read(key.fd, _READ)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fileobj)
            # the pipes are closed (or the time is up); the command itself may still be running
            while pidfd is not None and not exited and not timed_out:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    timed_out = True
                    break
                exited = bool(selector.select(wait))
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if timed_out:
        _kill_group(proc.pid)
    proc.stdout.close()
    proc.stderr.close()
    if pidfd is None and not timed_out and deadline is not None:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
    _reap(proc)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), timed_out


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (Linux 5.3+), or None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Collect the command's exit status (it has exited, or was killed with SIGKILL)."""
    proc.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _is_iterator(value: Any) -> bool:
    import types

    return isinstance(value, (types.GeneratorType, map, filter, zip, enumerate, reversed)) or \
        type(value).__name__ in ("dict_keyiterator", "list_iterator", "generator")


def _user_frame(err: BaseException) -> tuple[str | None, str]:
    """Where in the user's code the exception was raised (the last frame outside roast), and the
    whole traceback as text (issue 11: file and line always, the traceback with -v)."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    here = os.path.dirname(os.path.abspath(__file__))
    user = [f for f in frames if not os.path.abspath(f.filename).startswith(here + os.sep)]
    where = f"{user[-1].filename}:{user[-1].lineno}" if user else None
    return where, "".join(traceback.format_exception(type(err), err, err.__traceback__))


def _accepts(fn: Any, count: int) -> bool:
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= count


def expand_targets(spec: str, cwd: str | None = None) -> list[str]:
    """SPEC §5: a file, a glob, or `$(command)` giving one path per line. A glob that matches
    nothing is an error (issue 11: it ran once with the literal pattern)."""
    import glob

    spec = spec.strip()
    if spec.startswith("$(") and spec.endswith(")"):
        proc = subprocess.run([SHELL, "-c", spec[2:-1]], capture_output=True, text=True,
                              cwd=cwd, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise UsageError(f"target command {spec} exited with status {proc.returncode}: "
                             f"{proc.stderr.strip()[:200]}")
        return [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if any(ch in spec for ch in "*?["):
        matches = sorted(glob.glob(spec, root_dir=cwd, recursive=True))
        if not matches:
            raise UsageError(f"target pattern {spec!r} matches no file"
                             + (f" (in {cwd})" if cwd else ""),
                             hint="check the pattern; quote it so your shell does not expand it first")
        return matches
    return [spec]


def configured_targets(spec: str, workflow_dir: str) -> list[str]:
    """A workflow's `target:` key. Roast resolves it from the current directory, where the steps run;
    when nothing matches there, the workflow's own directory is tried and absolute paths returned."""
    try:
        found = expand_targets(spec)
    except UsageError:
        found = []
    if spec.strip().startswith("$(") or (found and found != [spec]) or os.path.exists(spec):
        return found
    try:
        local = expand_targets(spec, workflow_dir)
    except UsageError:
        local = []
    if not local or (local == [spec] and not os.path.exists(os.path.join(workflow_dir, spec))):
        if not found:
            raise UsageError(f"the workflow's `target:` {spec!r} matches no file (looked in the current "
                             f"directory and in {workflow_dir})")
        return found
    return [os.path.realpath(os.path.join(workflow_dir, item)) for item in local]


def post_webhook(request: PostWebhook, **send: Any) -> str:
    """A `webhook:` notify step: POST the wait's details, signed with ROAST_NOTIFY_SECRET (unsigned
    when unset), retrying 5xx, 429, timeouts and refused connections for up to a minute. Every
    attempt is in the returned text (the step's history row); the URL is shown without its path
    and query, which often hold a token (chat webhooks)."""
    from roast import webhooks

    shown = _shown_url(request.url)
    try:
        attempts = webhooks.send(request.url, request.payload, msg_id=request.msg_id, **send)
    except (ValueError, UnicodeError) as err:  # a URL urllib cannot use
        raise StepFailed(f"cannot POST to {shown}: {err}", where=request.path) from err
    summary = ", ".join(f"{a.status if a.status is not None else a.error} ({a.seconds:g} s)" for a in attempts)
    last = attempts[-1]
    if last.status is not None and 200 <= last.status < 300:
        return f"POST {shown}: {summary}"
    raise StepFailed(f"webhook POST to {shown} failed after {len(attempts)} attempt(s): {summary}",
                     where=request.path, hint="check the receiver; the session is still waiting")


def _shown_url(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the webhook URL"
    return f"{parts.scheme}://{host}{port}/…" if parts.path not in ("", "/") or parts.query else \
        f"{parts.scheme}://{host}{port}/"
