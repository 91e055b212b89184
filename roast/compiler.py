"""Compiling: a workflow definition (YAML through `workflow.Workflow`, or a dict) into the frozen
node tree of `roast.steps`, reporting every mistake at once with file:line and a did-you-mean.

Performs no I/O of its own: step files are found through the `Source` it is given.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any, Protocol

from roast import expressions, shell
from roast.errors import RoastError, UsageError, WorkflowInvalid
from roast.expressions import has_template, to_text
from roast.leaves import Command, Input, Prompt, Python, RetryPolicy, Script, Sleep, StepOptions, Webhook
from roast.steps import EVENT_NAME, RESERVED_WAIT_KEYS, Case, Each, If, Parallel, Repeat, Sequence, WaitForEvent, command_text


class Source(Protocol):
    """Where a definition comes from: `workflow.Workflow`, or `DictSource` for `roast.run(dict)`."""

    name: str

    @property
    def data(self) -> Mapping[str, Any]: ...  # read-only here, so a dict subclass fits

    def where(self, node: Any) -> str: ...
    def config_for(self, name: str) -> Mapping[str, Any] | None: ...
    def find_step(self, name: str, search_path: str | None = None) -> Any: ...
    def looked_for(self, name: str, search_path: str | None = None) -> list[str]: ...
    def step_candidates(self, search_path: str | None = None) -> list[str]: ...
    def read_json(self, relative: str) -> tuple[Any, str | None]: ...


class DictSource:
    """A workflow given as a Python dict: steps may be callables `fn(ctx)` or `{name: fn}`."""

    def __init__(self, data: Mapping[str, Any], name: str | None = None) -> None:
        self.data = data
        self.name = str(name or data.get("name") or "workflow")
        self.path = None

    def where(self, node: Any) -> str:
        return f"workflow {self.name!r}"

    def config_for(self, name: str) -> Mapping[str, Any] | None:
        value = self.data.get(name)
        return value if isinstance(value, Mapping) else None

    def find_step(self, name: str, search_path: str | None = None) -> Any:
        return None

    def looked_for(self, name: str, search_path: str | None = None) -> list[str]:
        return []

    def step_candidates(self, search_path: str | None = None) -> list[str]:
        return []

    def read_json(self, relative: str) -> tuple[Any, str | None]:
        return None, "a dict workflow gives its schemas inline, not as file names"

    def fingerprint(self) -> str:
        return ""


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

# The keys a step's config (the top-level key named after the step) may hold (SPEC §2, issue 11).
STEP_CONFIG_KEYS = ("model", "json", "print_response", "exit_on_error", "timeout", "coerce_to", "params",
                    "path", "if", "unless", "retry", "api_provider", "base_url", "max_tool_rounds")
# `retry:` (issue 16): of a step's config, or at the top level as every step's default.
RETRY_KEYS = ("attempts", "delay", "backoff", "max_delay", "jitter", "on")
MAX_ATTEMPTS = 100
# A named wait's config, and the top-level `wait_for_event:` defaults (SPEC §6).
WAIT_CONFIG_KEYS = ("timeout", "on_timeout")
# The model providers `api_provider:` may name (roast.providers owns what they mean, issue 17).
PROVIDERS = ("offline", "openai", "openrouter")


class _Lines(dict):  # type: ignore[type-arg]
    """A mapping with its keys renamed, keeping where each key was (for problems)."""

    def __init__(self, data: Mapping[Any, Any], key_lines: Mapping[Any, Any], origin: Any) -> None:
        super().__init__(data)
        self.key_lines = dict(key_lines)
        self.line = getattr(origin, "line", 0)
        self.file = getattr(origin, "file", None)


def _at(mapping: Any, key: Any) -> Any:
    """Where to report a problem with `mapping[key]`: the key's own line when it is known."""
    return getattr(mapping, "key_lines", {}).get(key) or mapping


def _close(word: str, choices: Any) -> str | None:
    import difflib  # only on error paths

    found = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return found[0] if found else None


def _edits(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute, swap two neighbours: optimal string alignment)."""
    before: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], before[j - 2] + 1)
        before, prev = prev, cur
    return prev[-1]


def _misspelt_reserved(key: str) -> str | None:
    """The reserved wait key that `key` is a near miss of (`withn` → `within`), else None.

    One edit away, two for the long `on_timeout`: close enough to be a typo, far enough that
    event names such as `timed_out` or `on_time` stay events."""
    lowered = key.lower()
    for reserved in sorted(RESERVED_WAIT_KEYS):
        allowed = 2 if len(reserved) >= 8 else 1
        if abs(len(lowered) - len(reserved)) <= allowed and _edits(lowered, reserved) <= allowed:
            return reserved
    return None


class _Compiler:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.problems: list[RoastError] = []
        self.warnings: list[str] = []  # for `roast validate` (SPEC §2; issue 10: bash arithmetic)
        defaults = source.data.get("wait_for_event")
        self.wait_defaults = defaults if isinstance(defaults, Mapping) else {}
        self.model = source.data.get("model")
        # every step name whose config was looked up, and whether by a step or a wait
        self.used: dict[str, set[str]] = {}
        # checked once here, used by every wait without a duration of its own
        self.default_timeout = (self.duration(self.wait_defaults["timeout"],
                                              _at(self.wait_defaults, "timeout"), "wait_for_event.timeout")
                                if self.wait_defaults.get("timeout") is not None else None)
        self.default_retry = (self.retry_policy(source.data["retry"], _at(source.data, "retry"), "retry")
                              if source.data.get("retry") is not None else None)

    def problem(self, node: Any, msg: str, hint: str | None = None) -> None:
        self.problems.append(WorkflowInvalid(msg, where=self.source.where(node), hint=hint))

    def problem_in(self, file: str, line: int, msg: str, hint: str | None = None) -> None:
        """A problem inside a step file (prompt.md, output.txt, a .py step)."""
        self.problems.append(WorkflowInvalid(msg, where=f"{file}:{line}", hint=hint))

    # -- checks of things that would otherwise fail only at run time (issue 11)
    def templates(self, text: Any, node: Any, path: str, file: str | None = None) -> None:
        """Compile every `{{ expr }}` of `text` as `expressions.evaluate` will (names exist only at
        run time, so only the syntax is checked). With `file`, `text` is that file's content."""
        if not isinstance(text, str):
            return
        node = text if getattr(text, "line", 0) else node
        for match in expressions.TEMPLATE.finditer(text):
            expr = match.group(1).strip()
            try:
                expressions._compile(expr)  # the very function evaluate() uses, multi-line fallback too
            except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
                detail = err.msg if isinstance(err, SyntaxError) else str(err) or type(err).__name__
                msg = f"{path}: {{{{ {expr} }}}} is not a valid expression ({detail})"
                hint = "`{{ }}` holds one Python expression, e.g. {{ output.build }}"
                if file is None:
                    self.problem(node, msg, hint)
                else:
                    self.problem_in(file, text.count("\n", 0, match.start()) + 1, msg, hint)

    def python_syntax(self, found: Any, label: str, path: str) -> None:
        """Compile (never import or run) a `.py` step's source, as read by the loader."""
        import warnings

        shown = found.shown or str(found.path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarnings are the import's to show, not ours
                compile(found.text, shown, "exec", dont_inherit=True)
        except SyntaxError as err:
            code = (err.text or "").strip()
            self.problem_in(shown, err.lineno or 1, f"{path}: step {label!r} has a Python syntax error: "
                            f"{err.msg}" + (f" in {code!r}" if code else ""),
                            hint="fix the file; roast compiles step files, without running them, "
                                 "before it starts a session")
        except ValueError as err:  # a NUL byte (Python < 3.12)
            self.problem_in(shown, 1, f"{path}: step {label!r} cannot be compiled: {err}",
                            hint="save the file as plain text")

    def model_settings(self, config: Mapping[str, Any], node: Any, label: str | None = None,
                       origin: Any = None) -> None:
        """`api_provider:`, `api_token:`, `model:`, `base_url:` (top level, or a step's config): what
        roast.providers says about them, with no network and no command run (issue 17). The token's
        value is never in a message."""
        from roast import providers

        warnings = self.warnings if label is None else None
        for found in providers.check_settings(config, warnings):
            key = next((k for k in ("api_provider", "base_url", "uri_base", "model", "api_token")
                        if found.startswith(k) and k in config), None)
            at = _at(config if origin is None else origin, key) if key else node
            self.problem(at, f"`{label}`: {found}" if label else found,
                         hint=f"api_provider is one of {', '.join(PROVIDERS)}")

    def tools(self, spec: Any, node: Any) -> None:
        """`tools:`: Roast's tool names and their configuration (roast.tools), each problem where it is."""
        if spec is None:
            return
        from roast import tools

        for found in tools.check_tools(spec):
            at = node
            index = re.match(r"tools\[(\d+)\]", found)
            if index and isinstance(spec, (list, tuple)) and int(index.group(1)) < len(spec):
                item = spec[int(index.group(1))]
                at = item if getattr(item, "line", 0) else node
            self.problem(at, found, hint=f"the tools are {', '.join(tools.TOOLS)}")

    def config_keys(self) -> None:
        """Every key of a used step or wait config, and of the `wait_for_event:` defaults, is known."""
        for name, kinds in self.used.items():
            config = self.source.config_for(name)
            if not config:
                continue
            known = ((STEP_CONFIG_KEYS if "step" in kinds else ())
                     + (WAIT_CONFIG_KEYS if "wait" in kinds else ()))
            kind = "step" if "step" in kinds else "wait"
            for key in config:
                if key not in known:
                    self.unknown_key(config, key, f"`{name}.{key}` is not a {kind} config key", known)
            if "step" in kinds:
                keys = {k: config[k] for k in ("api_provider", "base_url", "model") if k in config}
                self.model_settings(keys, config, name, config)
        for key in self.wait_defaults:
            if key not in WAIT_CONFIG_KEYS:
                self.unknown_key(self.wait_defaults, key, f"`wait_for_event.{key}` is not a key of the "
                                 "top-level `wait_for_event:` defaults", WAIT_CONFIG_KEYS)

    def unknown_key(self, config: Any, key: Any, msg: str, known: tuple[str, ...]) -> None:
        close = _close(str(key), known)
        if close:
            hint = f"did you mean {close!r}?"
        elif key == "within":
            hint = "`within:` goes inside the wait itself; a config sets the duration with `timeout:`"
        else:
            hint = f"known keys: {', '.join(known)}; remove it or fix its spelling"
        self.problem(_at(config, key), msg, hint)

    def wait_schema(self, spec: Mapping[str, Any], path: str, events: list[str]) -> tuple[tuple[str, str], ...]:
        """`schema: {event: {…JSON Schema…} or "file.json"}` (issue 14): each schema checked to be a
        valid schema now, so a bad one is found by `roast validate`, never at delivery."""
        declared = spec.get("schema")
        if declared is None:
            return ()
        at = _at(spec, "schema")
        if not isinstance(declared, Mapping):
            self.problem(at, f"{path}: `schema:` maps event names to JSON Schemas, not {declared!r}",
                         hint="e.g.  schema: {approved: {type: object, required: [approver]}}")
            return ()
        import json

        from roast import schema as schema_mod  # imported only when a workflow declares a schema

        out: list[tuple[str, str]] = []
        for event, value in declared.items():
            where = _at(declared, event)
            if str(event) not in events:
                close = _close(str(event), tuple(events))
                self.problem(where, f"{path}: `schema:` names {str(event)!r}, which this wait does not declare",
                             hint=f"did you mean {close!r}?" if close else f"it declares {', '.join(events)}")
                continue
            if isinstance(value, str):
                loaded, error = self.source.read_json(value)
                if error is not None:
                    self.problem(where, f"{path}: the schema of {str(event)!r}: {error}",
                                 hint="give a .json file beside the workflow, or the schema inline")
                    continue
                value = loaded
            value = _plain_json(value)
            try:
                found = schema_mod.check(value)
            except UsageError as err:
                self.problem(where, f"{path}: {err.message}", hint=err.hint)
                return ()
            for problem in found:
                self.problem(where, f"{path}: the schema of {str(event)!r}: {problem}")
            if not found:
                out.append((str(event), json.dumps(value, sort_keys=True, separators=(",", ":"))))
        return tuple(out)

    # -- options
    def options(self, name: str | None, node: Any, *, wait: bool = False) -> StepOptions:
        if name:
            self.used.setdefault(str(name), set()).add("step")
        config = self.source.config_for(name) if name else None
        if not config:
            return StepOptions(model=self.model if isinstance(self.model, str) else None, retry=self.default_retry)
        kw: dict[str, Any] = {"retry": self.default_retry}
        if "retry" in config:  # a step's own `retry:` wins over the top-level default, whole
            kw["retry"] = self.retry_policy(config["retry"], _at(config, "retry"), f"{name}.retry")
        for key in ("exit_on_error", "json", "print_response"):
            if key in config:
                if not isinstance(config[key], bool):
                    self.problem(_at(config, key),
                                 f"`{name}.{key}` must be true or false, not {config[key]!r}")
                else:
                    kw[key] = config[key]
        if "coerce_to" in config:
            if config["coerce_to"] not in ("boolean", "llm_boolean", "iterable"):
                self.problem(_at(config, "coerce_to"), f"`{name}.coerce_to` must be boolean, llm_boolean "
                                                       f"or iterable, not {config['coerce_to']!r}")
            else:
                kw["coerce_to"] = config["coerce_to"]
        if "timeout" in config and not wait:
            kw["timeout"] = self.duration(config["timeout"], _at(config, "timeout"), f"{name}.timeout")
        if "params" in config:
            if not isinstance(config["params"], Mapping):
                self.problem(_at(config, "params"), f"`{name}.params` must be a mapping")
            else:
                kw["params"] = dict(config["params"])
        if "path" in config and not isinstance(config["path"], str):
            self.problem(_at(config, "path"), f"`{name}.path` must be a path (text), not {config['path']!r}",
                         hint="a directory to look in, or the step's file, relative to the workflow")
        model = config.get("model", self.model)
        kw["model"] = model if isinstance(model, str) else None
        for key, field in (("api_provider", "provider"), ("base_url", "base_url")):
            if isinstance(config.get(key), str):  # checked by model_settings
                kw[field] = config[key]
        if "max_tool_rounds" in config:
            rounds = config["max_tool_rounds"]
            if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 1000:
                self.problem(_at(config, "max_tool_rounds"), f"`{name}.max_tool_rounds` must be a whole "
                             f"number from 1 to 1000, not {rounds!r}",
                             hint="the default is 10 rounds of tool calls")
            else:
                kw["max_tool_rounds"] = rounds
        return StepOptions(**kw)

    def retry_policy(self, value: Any, node: Any, what: str) -> RetryPolicy | None:
        """`retry: 3`, `retry: false`, or `retry: {attempts, delay, backoff, max_delay, jitter, on}`."""
        if value is False:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"attempts": value}
        if not isinstance(value, Mapping):
            self.problem(node, f"`{what}` must be a number of attempts or a mapping, not {value!r}",
                         hint="e.g.  retry: {attempts: 3, delay: 10s, on: [75]}")
            return None
        if True in value and "on" not in value:  # YAML 1.1 reads a bare `on:` key as the boolean true
            lines = getattr(value, "key_lines", {})
            fixed = {("on" if key is True else key): item for key, item in value.items()}
            value = _Lines(fixed, {("on" if k is True else k): v for k, v in lines.items()}, value)
        for key in value:
            if key not in RETRY_KEYS:
                self.unknown_key(value, key, f"`{what}.{key}` is not a retry key", RETRY_KEYS)
        kw: dict[str, Any] = {}
        attempts = value.get("attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_ATTEMPTS:
            self.problem(_at(value, "attempts"), f"`{what}.attempts` must be a whole number from 1 to "
                         f"{MAX_ATTEMPTS} (the attempts in all, the first included), not {attempts!r}")
            attempts = 1
        if "attempts" not in value:
            self.warnings.append(f"{self.source.where(node)}: `{what}` gives no `attempts:`, so the step is tried "
                                 "once and never retried (say how many attempts in all, e.g. attempts: 3)")
        kw["attempts"] = attempts
        for key in ("delay", "max_delay"):
            if value.get(key) is not None:
                try:
                    kw[key] = expressions.parse_duration(value[key], f"`{what}.{key}`", zero=True)
                except UsageError as err:
                    self.problems.append(WorkflowInvalid(err.message, where=self.source.where(_at(value, key)),
                                                         hint=err.hint))
        if "backoff" in value:
            backoff = value["backoff"]
            if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 1 <= backoff <= 100:
                self.problem(_at(value, "backoff"), f"`{what}.backoff` must be a number from 1 (a fixed delay) "
                                                    f"to 100, not {backoff!r}", hint="the default, 2, doubles it")
            else:
                kw["backoff"] = float(backoff)
        if "jitter" in value:
            if not isinstance(value["jitter"], bool):
                self.problem(_at(value, "jitter"), f"`{what}.jitter` must be true or false, not {value['jitter']!r}")
            else:
                kw["jitter"] = value["jitter"]
        if value.get("on") is not None:
            kw["on"] = self.retry_on(value["on"], _at(value, "on"), f"{what}.on")
        return RetryPolicy(**kw)

    def retry_on(self, value: Any, node: Any, what: str) -> tuple[Any, ...]:
        """`on:`: exit statuses (1-255) and names (exception classes, `timeout`)."""
        items = value if isinstance(value, list) else [value]
        out: list[Any] = []
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 255:
                out.append(item)
            elif isinstance(item, str) and NAME.fullmatch(item.strip()):
                out.append(str(item).strip())
            else:
                self.problem(node, f"`{what}` lists {item!r}, which is neither an exit status (1 to 255) nor a "
                                   "name (an exception class such as TimeoutError, or `timeout`)",
                             hint="e.g.  on: [75, timeout]  or  on: [ConnectionError]")
        return tuple(out)

    def duration(self, value: Any, node: Any, what: str) -> float | None:
        try:
            return expressions.parse_duration(value)
        except UsageError as err:
            self.problems.append(WorkflowInvalid(f"`{what}`: {err.message}", where=self.source.where(node),
                                                 hint=err.hint))
            return None

    # -- lists
    def notify(self, items: Any, path: str, depth: int, owner: Any) -> Sequence:
        """A wait's `notify:`: steps, where `webhook: URL` (or `notify: {webhook: URL}`) is a signed
        POST of the wait's details (issue 15), not a step named `webhook`."""
        if isinstance(items, Mapping) and set(items) == {"webhook"}:
            items = [items]
        if not isinstance(items, list) or not items:
            return self.sequence(items, path, depth, owner)
        steps: list[Any] = []
        for i, item in enumerate(items):
            here = f"{path}[{i}]"
            if isinstance(item, Mapping) and set(item) == {"webhook"}:
                url = item["webhook"]
                if not isinstance(url, str) or not (url.strip().startswith(("https://", "http://"))
                                                    or has_template(url)):
                    self.problem(_at(item, "webhook"), f"{here}: `webhook:` takes an https:// or http:// URL, "
                                 f"not {url!r}", hint="e.g.  notify: [webhook: https://hooks.example.com/roast]")
                    continue
                self.templates(url, _at(item, "webhook"), f"{here}.webhook")
                steps.append(Webhook(here, url, depth))
            else:
                steps.append(self.step(item, here, depth, items))
        return Sequence(path, tuple(steps))

    def sequence(self, items: Any, path: str, depth: int, owner: Any) -> Sequence:
        if not isinstance(items, list) or not items:
            self.problem(owner, f"{path} must be a non-empty list of steps, not {items!r}",
                         hint="e.g.  steps:\n    - $(echo hello)")
            return Sequence(path, ())
        return Sequence(path, tuple(self.step(item, f"{path}[{i}]", depth, items)
                                    for i, item in enumerate(items)))

    def step(self, item: Any, path: str, depth: int, parent: Any) -> Any:
        if callable(item) and not isinstance(item, (str, Mapping, list)):
            name = getattr(item, "__name__", None)
            return Python(path, None if name == "<lambda>" else name, item, StepOptions(retry=self.default_retry),
                          depth)
        if isinstance(item, str):
            return self.string_step(item, None, path, depth, parent)
        if isinstance(item, list):
            if not item:
                self.problem(parent, f"{path}: an empty parallel group")
            branches = []
            for i, branch in enumerate(item):
                bpath = f"{path}[{i}]"
                branches.append(self.sequence(branch, bpath, depth, item) if isinstance(branch, list)
                                else self.step(branch, bpath, depth, item))
            return Parallel(path, tuple(branches))
        if isinstance(item, Mapping):
            return self.mapping_step(item, path, depth)
        self.problem(parent, f"{path}: a step must be a string, a list or a mapping, not {item!r}",
                     hint="quote values YAML reads as numbers or booleans")
        return Sequence(path, ())

    def string_step(self, text: str, name: str | None, path: str, depth: int, node: Any) -> Any:
        if getattr(text, "line", 0):
            node = text  # report at the step's own line, not its list's
        text_s = str(text)
        command = command_text(text_s)
        if command is not None:
            for msg in shell.shell_template_problems(command):
                self.problem(node, f"{path}: {msg}")
            where = self.source.where(node)
            self.warnings += [f"{where}: {path}: {w}" for w in shell.shell_template_warnings(command)]
            self.templates(command, node, path)
            return Command(path, name, command, self.options(name, node), depth)
        if " " in text_s.strip() or "\n" in text_s or (name and has_template(text_s)):
            self.templates(text_s, node, path)
            return Prompt(path, name, text_s, self.options(name, node), None, depth)
        step_name = text_s.strip()
        if name is None and not NAME.fullmatch(step_name):
            self.problem(node, f"{path}: {step_name!r} is not a step name, a $(command) or a prompt")
            return Sequence(path, ())
        config = self.source.config_for(name or step_name) or {}
        search = config.get("path") if isinstance(config.get("path"), str) else None
        found = self.source.find_step(step_name, search)
        options = self.options(name or step_name, node)
        label = name or step_name
        if found is None:
            self.not_found(step_name, label, search, node)
            return Sequence(path, ())
        if found.kind == "prompt":
            self.templates(found.text, node, path, found.shown or str(found.path))
            if found.output_template is not None:
                self.templates(found.output_template, node, path, found.output_shown or "output.txt")
            return Prompt(path, label, found.text, options, found.output_template, depth)
        if found.kind == "python":
            self.python_syntax(found, label, path)
            return Python(path, label, str(found.path), options, depth)
        if not getattr(found, "executable", True):
            shown = found.shown or str(found.path)
            self.problem(node, f"{path}: step {label!r}: {shown} is not executable; run chmod +x "
                               f"{shlex.quote(shown)}",
                         hint="roast runs a .sh step as a program, so the file needs its executable bit")
        return Script(path, label, str(found.path), options, depth)

    def not_found(self, step_name: str, label: str, search: str | None, node: Any) -> None:
        tried = self.source.looked_for(step_name, search)
        # never suggest the name that was just not found (issue 11)
        close = _close(step_name, [c for c in self.source.step_candidates(search) if c != step_name])
        if close:
            hint = f"did you mean {close!r}?"
        elif search is not None:
            hint = f"fix `{label}.path` ({search!r}): a directory to look in, or the step's own file"
        elif tried:
            hint = "create one of those files, or write a $(command) or a prompt with spaces"
        else:
            hint = "write a $(command), a prompt with spaces, or (in a dict workflow) a callable"
        looked = f" (looked for {', '.join(tried)})" if tried else ""
        self.problem(node, f"step {step_name!r} not found{looked}", hint=hint)

    def mapping_step(self, item: Mapping[str, Any], path: str, depth: int) -> Any:
        keys = list(item)
        first = keys[0] if keys else None
        if first in KEYWORDS:  # an unnamed composite step: its keyword comes first
            return KEYWORDS[first](self, item, None, path, depth)
        if len(keys) != 1:
            self.problem(item, f"{path}: a named step has exactly one key, found {len(keys)} ({keys!r})",
                         hint="write each step as its own list item")
            return Sequence(path, ())
        name, value = first, item[keys[0]]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            self.problem(item, f"{path}: {name!r} is not a valid step name")
            return Sequence(path, ())
        if callable(value):
            return Python(path, name, value, self.options(name, item), depth)
        if isinstance(value, str):
            return self.string_step(value, name, path, depth, item)
        if isinstance(value, Mapping) and value and next(iter(value)) in KEYWORDS:  # a named composite step
            return KEYWORDS[next(iter(value))](self, value, name, path, depth)
        self.problem(item, f"{path}: step {name!r} has a value roast cannot run: {value!r}",
                     hint="use $(command), a prompt, or one of " + "/".join(k for k in KEYWORDS if k != "unless"))
        return Sequence(path, ())

    def if_step(self, item: Mapping[str, Any], name: str | None, path: str, depth: int) -> If:
        negate = "unless" in item and "if" not in item
        cond = item.get("unless" if negate else "if")
        self.templates(cond, item, path)
        if cond is None or (isinstance(cond, str) and not cond.strip()):
            self.problem(item, f"{path}: `{'unless' if negate else 'if'}` needs a condition")
        elif isinstance(cond, str) and " " in cond.strip() and not has_template(cond) \
                and command_text(cond) is None:
            self.problem(item, f"{path}: condition {cond!r} is not a {{{{ expression }}}}, a $(command), "
                               "a step name or true/false", hint="wrap an expression in {{ }}")
        if "then" not in item:
            self.problem(item, f"{path}: `{'unless' if negate else 'if'}` needs a `then:` list")
        then = self.sequence(item.get("then"), f"{path}.then", depth, item) if "then" in item else None
        other = self.sequence(item["else"], f"{path}.else", depth, item) if "else" in item else None
        return If(path, name, cond, then, other, negate)

    def case_step(self, item: Mapping[str, Any], name: str | None, path: str, depth: int) -> Case:
        whens = item.get("when")
        if not isinstance(whens, Mapping) or not whens:
            self.problem(item, f"{path}: `case` needs a `when:` mapping of values to step lists")
            whens = {}
        compiled = tuple((to_text(key), self.sequence(steps, f"{path}.when.{to_text(key)}", depth, whens))
                         for key, steps in whens.items())
        other = self.sequence(item["else"], f"{path}.else", depth, item) if "else" in item else None
        self.templates(item.get("case"), item, path)
        return Case(path, name, to_text(item.get("case")), compiled, other)

    def each_step(self, item: Mapping[str, Any], name: str | None, path: str, depth: int) -> Each:
        var = item.get("as")
        if not isinstance(var, str) or not NAME.fullmatch(var):
            self.problem(item, f"{path}: `each` needs `as:` naming the loop variable, e.g. `as: file`")
            var = "item"
        if "steps" not in item:
            self.problem(item, f"{path}: `each` needs a `steps:` list")
        body = self.sequence(item.get("steps"), f"{path}.steps", depth + 1, item)
        self.templates(item.get("each"), item, path)
        return Each(path, name, to_text(item.get("each")), var, body, depth)

    def repeat_step(self, item: Mapping[str, Any], name: str | None, path: str, depth: int) -> Repeat:
        spec = item["repeat"]
        if not isinstance(spec, Mapping):
            self.problem(item, f"{path}: `repeat` needs a mapping with `steps:` and `until:`")
            return Repeat(path, name, Sequence(f"{path}.steps", ()), "false", 1, depth)
        limit = spec.get("max_iterations", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            self.problem(spec, f"{path}: `max_iterations` must be a positive whole number, not {limit!r}")
            limit = 1
        if "until" not in spec:
            self.problem(spec, f"{path}: `repeat` needs an `until:` condition")
        body = self.sequence(spec.get("steps"), f"{path}.steps", depth + 1, spec)
        self.templates(spec.get("until"), spec, path)
        return Repeat(path, name, body, spec.get("until", "false"), limit, depth)

    def input_step(self, item: Mapping[str, Any], name: str | None, path: str, depth: int) -> Input:
        spec = item["input"]
        if not isinstance(spec, Mapping) or not isinstance(spec.get("prompt"), str):
            self.problem(item, f"{path}: `input` needs a `prompt:` text")
            spec = {"prompt": ""}
        kind = spec.get("type", "text")
        kind = {"boolean": "confirm", "choice": "select"}.get(kind, kind)
        if kind not in ("text", "confirm", "select", "password"):
            self.problem(spec, f"{path}: input type {kind!r} is not one of text, confirm, select, password")
        options = spec.get("options") or ()
        if kind == "select" and not options:
            self.problem(spec, f"{path}: a `select` input needs `options:`")
        self.templates(spec["prompt"], spec, path)
        return Input(path, name or spec.get("name"), spec["prompt"], kind,
                     tuple(to_text(o) for o in options), spec.get("default"), depth)

    def sleep_step(self, item: Mapping[str, Any], name: str | None, path: str, depth: int) -> Sleep:
        """`sleep: 2h`, `sleep: "{{ output.eta }}"` or `sleep: {until: 2027-01-01T09:00:00Z}` (issue 16)."""
        import datetime as dt

        if len(item) != 1:
            self.problem(item, f"{path}: `sleep:` stands alone in its step, found {list(item)!r}",
                         hint="e.g.  - sleep: 2h")
        spec = item.get("sleep")
        at = _at(item, "sleep")
        example = "e.g.  - sleep: 2h   or   - sleep: {until: \"2027-01-01T09:00:00Z\"}"
        if isinstance(spec, Mapping):
            if list(spec) != ["until"]:
                self.problem(at, f"{path}: `sleep:` as a mapping holds `until:` only, found {list(spec)!r}",
                             hint=example)
                return Sleep(path, name, None, "", depth)
            until = spec["until"]
            if isinstance(until, dt.datetime):
                if until.tzinfo is None:
                    self.problem(_at(spec, "until"), f"{path}: `sleep: until` {until.isoformat()} has no time zone",
                                 hint=f"add one: \"{until.isoformat()}Z\" for UTC, or an offset such as +01:00")
                until = until.isoformat()
            elif isinstance(until, dt.date):
                self.problem(_at(spec, "until"), f"{path}: `sleep: until` {until.isoformat()} is a date; give a time",
                             hint=f"e.g.  until: \"{until.isoformat()}T09:00:00Z\"")
                until = until.isoformat()
            elif not isinstance(until, str):
                self.problem(_at(spec, "until"), f"{path}: `sleep: until` must be an ISO 8601 time, not {until!r}",
                             hint=example)
                until = ""
            elif not has_template(until):
                try:
                    expressions.parse_instant(until, "`sleep: until`")
                except UsageError as err:
                    self.problem(_at(spec, "until"), f"{path}: {err.message}", hint=err.hint)
            else:
                self.templates(until, spec, path)
            return Sleep(path, name, None, str(until), depth)
        if isinstance(spec, str) and has_template(spec):
            self.templates(spec, item, path)
            return Sleep(path, name, str(spec), None, depth)
        try:
            expressions.parse_duration(spec, "`sleep:`", zero=True)
        except UsageError as err:
            hint = err.hint or (example + "; a step named `sleep` needs another name"
                                if isinstance(spec, str) and spec.strip().startswith("$(") else example)
            self.problem(at, f"{path}: {err.message}", hint=hint)
        return Sleep(path, name, spec if isinstance(spec, (int, float, str)) else None, None, depth)

    def wait_step(self, item: Mapping[str, Any], name: str | None, path: str, depth: int) -> WaitForEvent:
        spec = item["wait_for_event"]
        if not isinstance(spec, Mapping) or not spec:
            self.problem(item, f"{path}: `wait_for_event` needs a mapping of event names to step lists",
                         hint="e.g.  wait_for_event:\n      approved: [deploy]\n      rejected: [rollback]")
            spec = {}
        branches: list[tuple[str, Sequence]] = []
        for key, steps in spec.items():
            at = _at(spec, key)
            if isinstance(key, bool):
                self.problem(at, f"{path}: event name {key!r} was read by YAML as a boolean "
                                 "(on/off/yes/no/true/false)", hint="quote it: \"on\": [...]")
                continue
            key_s = str(key)
            if key_s in RESERVED_WAIT_KEYS:
                continue
            meant = _misspelt_reserved(key_s)
            if meant is not None:  # issue 11: a typo must not silently become an event name
                self.problem(at, f"{path}: {key_s!r} looks like a misspelt `{meant}`",
                             hint=f"write `{meant}:`; an event name may not be this close to the keys a "
                                  f"wait reserves ({', '.join(sorted(RESERVED_WAIT_KEYS))})")
                continue
            if not EVENT_NAME.fullmatch(key_s):
                self.problem(at, f"{path}: event name {key_s!r} may use only letters, digits, _ and -")
                continue
            branches.append((key_s, self.sequence(steps, f"{path}.{key_s}", depth, at)))
        if not branches and spec:
            self.problem(spec, f"{path}: `wait_for_event` declares no event")
        schemas = self.wait_schema(spec, path, [event for event, _ in branches])
        timeout_branch = (self.sequence(spec["timeout"], f"{path}.timeout", depth, _at(spec, "timeout"))
                          if isinstance(spec.get("timeout"), list) else None)
        if "timeout" in spec and not isinstance(spec["timeout"], list):
            self.problem(_at(spec, "timeout"), f"{path}: inside a wait, `timeout:` is the list of steps run "
                                               "when the deadline passes",
                         hint="set the duration with `within: 2h`")
        # SPEC §6 + issue 6: the wait's own `within` > the named wait's config > top-level default.
        if name:
            self.used.setdefault(str(name), set()).add("wait")
        config = (self.source.config_for(name) or {}) if name else {}
        own = (self.duration(spec["within"], _at(spec, "within"), "within")
               if spec.get("within") is not None else None)
        named = (self.duration(config["timeout"], _at(config, "timeout"), f"{name}.timeout")
                 if config.get("timeout") is not None else None)
        timeout = own if own is not None else named if named is not None else self.default_timeout
        # issue 11: the `timeout:` branch > the wait's own `on_timeout:` > the named wait's config >
        # the top-level default (the runner takes the branch first, see WaitForEvent._branch).
        on_timeout = None
        for origin in (spec, config, self.wait_defaults):
            if origin.get("on_timeout") is not None:
                on_timeout = self.sequence(origin["on_timeout"], f"{path}.on_timeout", depth,
                                           _at(origin, "on_timeout"))
                break
        # issue 14: `notify:` runs once the wait is saved; the wait's own > its config > the default
        notify = None
        for origin in (spec, config, self.wait_defaults):
            if origin.get("notify") is not None:
                notify = self.notify(origin["notify"], f"{path}.notify", depth, _at(origin, "notify"))
                break
        return WaitForEvent(path, name, tuple(branches), timeout_branch, on_timeout, timeout, depth, schemas,
                            notify)


# The one table of the step keywords: keyword -> the method that compiles a step it starts (named
# or not). A new node type is one node class and one row here.
KEYWORDS = {
    "if": _Compiler.if_step,
    "unless": _Compiler.if_step,
    "case": _Compiler.case_step,
    "each": _Compiler.each_step,
    "repeat": _Compiler.repeat_step,
    "input": _Compiler.input_step,
    "wait_for_event": _Compiler.wait_step,
    "sleep": _Compiler.sleep_step,
}

# SPEC §2's top-level keys, plus Roast 0.4 keys that roast reads past without running.
TOP_LEVEL = {"name", "description", "model", "api_provider", "api_token", "base_url", "uri_base", "target",
             "tools", "steps",
             "inputs", "wait_for_event", "retry", "pre_processing", "post_processing", "context_management"}


def compile_workflow(source: Source, warnings: list[str] | None = None) -> Sequence:
    """Compile the whole definition; every mistake is reported at once (WorkflowInvalid, exit 2).

    With `warnings`, it also receives SPEC §2's warnings (`roast validate` prints them): a top-level
    mapping that configures no step and is no known option, most often a misspelt step name."""
    compiler = _Compiler(source)
    compiler.model_settings(source.data, source.data)
    compiler.tools(source.data.get("tools"), _at(source.data, "tools"))
    steps = source.data.get("steps")
    root = compiler.sequence(steps, "steps", 0, source.data)
    defaults = source.data.get("wait_for_event")
    if defaults is not None and not isinstance(defaults, Mapping):
        compiler.problem(_at(source.data, "wait_for_event"), "the top-level `wait_for_event:` key holds "
                         "the default config of waits and must be a mapping (timeout, on_timeout)")
    compiler.config_keys()
    if compiler.problems:
        compiler.problems = list({str(p): p for p in compiler.problems}.values())
        compiler.problems.sort(key=_place)  # in file order, whichever check found them
        count = len(compiler.problems)
        raise WorkflowInvalid(f"the workflow has {count} problem{'s' if count > 1 else ''}",
                              problems=compiler.problems)
    if warnings is not None:
        warnings.extend(compiler.warnings)
        warnings.extend(_unused_configs(source, set(compiler.used)))
    return root


def _plain_json(value: Any) -> Any:
    """A schema as plain JSON data (the YAML loader's line-tracking types made plain)."""
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _place(problem: RoastError) -> tuple[str, int]:
    place = problem.to_dict()
    line = place["line"]
    return str(place["file"] or ""), line if isinstance(line, int) else 0


def _unused_configs(source: Source, names: set[str]) -> list[str]:
    import difflib

    found = []
    key_lines = getattr(source.data, "key_lines", {})
    for key, value in source.data.items():
        if not isinstance(key, str) or key in TOP_LEVEL or key in names or not isinstance(value, Mapping):
            continue
        close = difflib.get_close_matches(key, sorted(names), n=1)
        where = source.where(key_lines.get(key) or source.data)
        found.append(f"{where}: top-level key {key!r} configures no step of this workflow; it is ignored"
                     + (f" (did you mean {close[0]!r}?)" if close else ""))
    return found
