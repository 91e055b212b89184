"""Performs the step tree's requests: subprocesses, model calls, Python steps, terminal prompts.

Everything here touches the world. Interpolated values reach the shell only through the
environment (`ROAST_ARG_n`, SPEC §4); commands run with `/bin/sh -c`, stdin closed, in their own
process group. The model interface has an offline provider (it answers with the rendered prompt)
so workflows run with no network and no key.
"""
from __future__ import annotations

import getpass
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from roast.context import Context
from roast.errors import StepFailed, UsageError
from roast.steps import Ask, AskModel, CallPython, Done, Shell


class Model(Protocol):
    """A model provider: one completion for a prompt, given the conversation so far."""

    name: str

    def complete(self, prompt: str, *, model: str | None, transcript: tuple[Mapping[str, str], ...],
                 json_mode: bool) -> str: ...


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
    """The model for `api_provider:`; only the offline provider ships in this version."""
    if provider in (None, "", "offline"):
        return OfflineModel()
    raise UsageError(f"model provider {provider!r} is not available in this version of roast",
                     hint="remove `api_provider:` (or set it to `offline`) to use the offline model")


class Effects:
    """`perform(request)` for one session: the runner calls it, possibly from several threads."""

    def __init__(self, *, ctx: Context, model: Model | None = None, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None, announce: Callable[[str], None] | None = None) -> None:
        self.ctx = ctx
        self.model = model or OfflineModel()
        self.cwd = cwd
        self.base_env = dict(os.environ if env is None else env)
        self.announce = announce
        self._announced = False
        self._modules: dict[str, Any] = {}
        self._event_file: str | None = None

    def __call__(self, request: Any) -> Any:
        if isinstance(request, Shell):
            return self.shell(request)
        if isinstance(request, AskModel):
            return self.ask_model(request)
        if isinstance(request, CallPython):
            return self.call_python(request)
        if isinstance(request, Ask):
            return self.ask(request)
        raise TypeError(f"no effect performs {type(request).__name__}")

    def close(self) -> None:
        if self._event_file:
            try:
                os.unlink(self._event_file)
            except OSError:
                pass
            self._event_file = None

    # -- shell
    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = dict(self.base_env)
        env.update({"ROAST_SESSION_ID": self.ctx.workflow.session_id,
                    "ROAST_WORKFLOW_NAME": self.ctx.workflow.name,
                    "ROAST_WORKFLOW_FILE": self.ctx.workflow.file})
        if self.ctx.event_name:
            env["ROAST_EVENT_NAME"] = self.ctx.event_name
            env["ROAST_EVENT_FILE"] = self._write_event_file()
        env.update(extra)
        if "ROAST_STEP_PATH" in env:
            env["ROAST_IDEMPOTENCY_KEY"] = f"{self.ctx.workflow.session_id}:{env['ROAST_STEP_PATH']}"
        return env

    def _write_event_file(self) -> str:
        """The latest event's data as a 0600 JSON file, for commands that need more than 128 KiB."""
        if self._event_file is None:
            fd, path = tempfile.mkstemp(prefix="roast-event-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.ctx.event, fh, ensure_ascii=False)
            self._event_file = path
        return self._event_file

    def shell(self, request: Shell) -> Done:
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", request.command], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd,
                                    env=self._env(request.env), start_new_session=True)
        except (OSError, ValueError) as err:
            raise StepFailed(f"cannot start the command: {err}", where=request.path) from err
        try:
            out, err_out = proc.communicate(timeout=request.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise StepFailed(f"command timed out after {request.timeout:g} s: {request.command}",
                             where=request.path, hint="raise the step's `timeout:` in its config")
        except BaseException:
            _kill_group(proc)
            raise
        return Done(proc.returncode, out.decode("utf-8", "replace"), err_out.decode("utf-8", "replace"))

    # -- model
    def ask_model(self, request: AskModel) -> str:
        if not self._announced and isinstance(self.model, OfflineModel) and self.announce:
            self.announce("no model provider configured: using the offline model, which answers "
                          "with the prompt itself")
            self._announced = True
        return self.model.complete(request.prompt, model=request.model, transcript=request.transcript,
                                   json_mode=request.json)

    # -- python
    def call_python(self, request: CallPython) -> Any:
        target = request.target
        label = request.name or getattr(target, "__name__", "python step")
        try:
            if callable(target):
                fn = target
            else:
                fn = self._load_step(str(target), request.name or Path(str(target)).stem)
            if request.params and _accepts(fn, 2):
                return fn(request.ctx, dict(request.params))
            return fn(request.ctx)
        except StepFailed:
            raise
        except Exception as err:
            raise StepFailed(f"Python step {label!r} raised {type(err).__name__}: {err}",
                             where=request.path) from err

    def _load_step(self, file: str, name: str) -> Callable[..., Any]:
        import inspect  # Python step files only

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
            return fn
        camel = "".join(part.capitalize() for part in name.split("_"))
        classes = [c for c in vars(module).values()
                   if inspect.isclass(c) and c.__module__ == module.__name__ and callable(getattr(c, "call", None))]
        cls = getattr(module, camel, None) if inspect.isclass(getattr(module, camel, None)) else None
        cls = cls or (classes[0] if len(classes) == 1 else None)
        if cls is None:
            raise StepFailed(f"{file} defines neither `run(ctx)` nor a class with `call(self)`",
                             hint=f"add `def run(ctx): ...` to {Path(file).name}")

        def call_class(ctx: Context, params: Mapping[str, Any] | None = None) -> Any:
            takes_ctx = cls.__init__ is not object.__init__ and _accepts(cls.__init__, 2)
            obj = cls(ctx) if takes_ctx else cls()
            obj.ctx = ctx
            obj.params = dict(params or {})
            return obj.call()

        return call_class

    # -- terminal
    def ask(self, request: Ask) -> Any:
        if not sys.stdin or not sys.stdin.isatty():
            raise StepFailed("this `input` step needs a terminal, and stdin is not one",
                             where=request.path,
                             hint="run the workflow from a terminal, or replace the input with a step")
        prompt = request.prompt.rstrip() + " "
        if request.kind == "password":
            return getpass.getpass(prompt, stream=sys.stderr)
        if request.kind == "confirm":
            while True:
                answer = input(prompt + "[y/n] ").strip().lower()
                if answer in ("y", "yes", "n", "no") or (answer == "" and request.default is not None):
                    return answer.startswith("y") if answer else bool(request.default)
        if request.kind == "select":
            for i, option in enumerate(request.options, 1):
                print(f"  {i}) {option}", file=sys.stderr)
            while True:
                answer = input(prompt).strip()
                if answer.isdigit() and 1 <= int(answer) <= len(request.options):
                    return request.options[int(answer) - 1]
                if answer in request.options:
                    return answer
        answer = input(prompt)
        return answer if answer or request.default is None else request.default


def _accepts(fn: Any, count: int) -> bool:
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= count


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def expand_targets(spec: str, cwd: Path | None = None) -> list[str]:
    """SPEC §5: a file, a glob, or `$(command)` giving one path per line."""
    spec = spec.strip()
    if spec.startswith("$(") and spec.endswith(")"):
        proc = subprocess.run(["/bin/sh", "-c", spec[2:-1]], capture_output=True, text=True,
                              cwd=cwd, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise UsageError(f"target command {spec} exited with status {proc.returncode}: "
                             f"{proc.stderr.strip()[:200]}")
        return [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if any(ch in spec for ch in "*?["):
        matches = sorted(glob.glob(spec, root_dir=cwd, recursive=True))
        return matches or [spec]
    return [spec]


def configured_targets(spec: str, workflow_dir: Path) -> list[str]:
    """A workflow's `target:` key. Roast resolves it from the current directory, where the steps run;
    when nothing matches there, the workflow's own directory is tried and absolute paths returned."""
    found = expand_targets(spec)
    if spec.strip().startswith("$(") or found != [spec] or Path(spec).exists():
        return found
    local = expand_targets(spec, workflow_dir)
    if local == [spec] and not (workflow_dir / spec).exists():
        return found
    return [str((workflow_dir / item).resolve()) for item in local]
