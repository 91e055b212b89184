"""The checks of a workflow's values while it compiles: step and wait config keys, `retry:`,
durations, model settings, tools, `{{ }}` templates, Python step syntax, event schemas. Each
problem is collected (with its file:line and a did-you-mean) rather than raised, so `compile`
reports every mistake at once. `compiler` builds the nodes on top of these (`_Compiler(Checks)`).

Performs no I/O of its own: step files are read through the `Source` it is given.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from roast import expressions
from roast.expressions import edits
from roast.errors import RoastError, UsageError, WorkflowInvalid
from roast.leaves import RetryPolicy, StepOptions
from roast.steps import RESERVED_WAIT_KEYS


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


def key_at(mapping: Any, key: Any) -> Any:
    """Where to report a problem with `mapping[key]`: the key's own line when it is known."""
    return getattr(mapping, "key_lines", {}).get(key) or mapping


def closest(word: str, choices: Any) -> str | None:
    import difflib  # only on error paths

    found = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return found[0] if found else None


def misspelt_reserved(key: str) -> str | None:
    """The reserved wait key that `key` is a near miss of (`withn` → `within`), else None.

    One edit away, two for the long `on_timeout`: close enough to be a typo, far enough that
    event names such as `timed_out` or `on_time` stay events."""
    from roast.policy import POLICY_KEYS, misspelt_key

    lowered = key.lower()
    for reserved in sorted(RESERVED_WAIT_KEYS.difference(POLICY_KEYS)):
        allowed = 2 if len(reserved) >= 8 else 1
        if abs(len(lowered) - len(reserved)) <= allowed and edits(lowered, reserved) <= allowed:
            return reserved
    # issue 23: the policy keys have their own rule (`approved` is an event, not a misspelt `approvers`)
    return misspelt_key(key)

class Checks:
    """The compiler's state and its checks; `problems` collects what is wrong."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.problems: list[RoastError] = []
        self.warnings: list[str] = []  # for `roast validate` (SPEC §2; issue 10: bash arithmetic)
        defaults = source.data.get("wait_for_event")
        self.wait_defaults = defaults if isinstance(defaults, Mapping) else {}
        self.model = source.data.get("model")
        # every step name whose config was looked up, and whether by a step or a wait
        self.used: dict[str, set[str]] = {}
        # issue 24: every `output.X` / `event.X` a template reads: (root, X, node, path, file, line)
        self.reads: list[tuple[str, str, Any, str, str | None, int]] = []
        # the source of each Python step (None: a callable, whose outputs cannot be known)
        self.python_sources: list[str | None] = []
        # (file, source) -> its compile problem (line, what) or None: each file compiled once
        self._compiled: dict[tuple[str, str], tuple[int, str] | None] = {}
        # checked once here, used by every wait without a duration of its own
        self.default_timeout = (self.duration(self.wait_defaults["timeout"],
                                              key_at(self.wait_defaults, "timeout"), "wait_for_event.timeout")
                                if self.wait_defaults.get("timeout") is not None else None)
        self.default_retry = (self.retry_policy(source.data["retry"], key_at(source.data, "retry"), "retry")
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
                continue
            line = text.count("\n", 0, match.start()) + 1 if file is not None else 0
            self.reads += [(root, key, node, path, file, line) for root, key in _reads(expr)]

    def python_syntax(self, found: Any, label: str, path: str) -> None:
        """Compile (never import or run) a `.py` step's source, as read by the loader; a file that
        several steps name is compiled once (issue 25), its problem reported at each of them."""
        shown = found.shown or str(found.path)
        key = (shown, found.text)
        if key not in self._compiled:
            self._compiled[key] = _compile_problem(found.text, shown)
        problem = self._compiled[key]
        if problem is None:
            return
        line, what = problem
        if line:
            self.problem_in(shown, line, f"{path}: step {label!r} has a Python syntax error: {what}",
                            hint="fix the file; roast compiles step files, without running them, "
                                 "before it starts a session")
        else:
            self.problem_in(shown, 1, f"{path}: step {label!r} cannot be compiled: {what}",
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
            at = key_at(config if origin is None else origin, key) if key else node
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
            from roast.policy import POLICY_KEYS  # issue 23: a named wait's config may hold its policy

            known = ((STEP_CONFIG_KEYS if "step" in kinds else ())
                     + (WAIT_CONFIG_KEYS + POLICY_KEYS if "wait" in kinds else ()))
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

    def check_reads(self, root: Any) -> None:
        """Issue 24: an `output.X` no step can write is an error (a did-you-mean), found before a
        person approves rather than after; a branch's `event.X` its event's schema does not
        declare is a warning. The first is only for file workflows, and skipped when a Python step
        writes names no one can read off its source (see `writes_known`)."""
        from roast import tree

        # a dict workflow is a Python program: its caller and callables may set any output
        checked = getattr(self.source, "path", None) is not None
        names = tree.output_names(root) | set(self.used)  # a step not found is reported once, as such
        for wait in tree.all_waits(root):
            if wait.notify is not None:
                names |= tree.output_names(wait.notify)
        for source in dict.fromkeys(self.python_sources):  # a file several steps name is read once
            known = writes_known(source) if source is not None else None
            if known is None:
                checked = False
                break
            names |= known
        branches = {f"{wait.path}.{event}": (event, dict(wait.schemas).get(event))
                    for wait in tree.all_waits(root) for event in (*wait.events, "timeout", "on_timeout")}
        for root_name, key, node, path, file, line in self.reads:
            if root_name == "output" and checked and key not in names:
                close = closest(key, sorted(names))
                hint = (f"did you mean {close!r}?" if close else
                        f"the steps that write outputs are {', '.join(sorted(names))}" if names else
                        f"name the step that makes it: `- {key}: $(…)`")
                msg = f"{path}: no step writes `output.{key}`, so this fails when it runs"
                if file is None:
                    self.problem(node, msg, hint)
                else:
                    self.problem_in(file, line, msg, hint)
            elif root_name == "event":
                self.event_read(branches, key, node, path, file, line)

    def event_read(self, branches: Mapping[str, tuple[str, str | None]], key: str, node: Any, path: str,
                   file: str | None, line: int) -> None:
        """`event.X` read in a branch whose event has a schema (the innermost wait's) that does not declare X."""
        import json

        inside = [prefix for prefix in branches if path == prefix or path.startswith((prefix + ".", prefix + "["))]
        if not inside:
            return
        event, text = branches[max(inside, key=len)]  # the innermost wait's event is the one read
        if text is None:
            return
        schema = json.loads(text)
        props = schema.get("properties") if isinstance(schema, dict) else None
        declared = list(props) if isinstance(props, dict) else []
        if key in declared:
            return
        close = closest(key, declared)
        where = self.source.where(node) if file is None else f"{file}:{line}"
        self.warnings.append(f"{where}: {path}: the {event!r} branch reads `event.{key}`, which the schema of "
                             f"{event!r} does not declare" + (f" (did you mean {close!r}?)" if close else
                                                              f" (it declares {', '.join(declared) or 'nothing'})"))

    def unknown_key(self, config: Any, key: Any, msg: str, known: tuple[str, ...]) -> None:
        close = closest(str(key), known)
        if close:
            hint = f"did you mean {close!r}?"
        elif key == "within":
            hint = "`within:` goes inside the wait itself; a config sets the duration with `timeout:`"
        else:
            hint = f"known keys: {', '.join(known)}; remove it or fix its spelling"
        self.problem(key_at(config, key), msg, hint)

    def wait_schema(self, spec: Mapping[str, Any], path: str, events: list[str]) -> tuple[tuple[str, str], ...]:
        """`schema: {event: {…JSON Schema…} or "file.json"}` (issue 14): each schema checked to be a
        valid schema now, so a bad one is found by `roast validate`, never at delivery."""
        declared = spec.get("schema")
        if declared is None:
            return ()
        at = key_at(spec, "schema")
        if not isinstance(declared, Mapping):
            self.problem(at, f"{path}: `schema:` maps event names to JSON Schemas, not {declared!r}",
                         hint="e.g.  schema: {approved: {type: object, required: [approver]}}")
            return ()
        import json

        from roast import pages  # imported only when a workflow declares a schema
        from roast import schema as schema_mod

        out: list[tuple[str, str]] = []
        for event, value in declared.items():
            where = key_at(declared, event)
            if str(event) not in events:
                close = closest(str(event), tuple(events))
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
            # issue 22: a page (a signed link) cannot send this event; the CLI and webhooks still can
            for line in pages.unsupported(value) if not found else ():
                self.warnings.append(f"{self.source.where(where)}: {path}: a page cannot send {str(event)!r}: {line}")
            if not found:
                # in the order written: a page lays its form out in the schema's own order (issue 22)
                out.append((str(event), json.dumps(value, separators=(",", ":"))))
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
            kw["retry"] = self.retry_policy(config["retry"], key_at(config, "retry"), f"{name}.retry")
        for key in ("exit_on_error", "json", "print_response"):
            if key in config:
                if not isinstance(config[key], bool):
                    self.problem(key_at(config, key),
                                 f"`{name}.{key}` must be true or false, not {config[key]!r}")
                else:
                    kw[key] = config[key]
        if "coerce_to" in config:
            if config["coerce_to"] not in ("boolean", "llm_boolean", "iterable"):
                self.problem(key_at(config, "coerce_to"), f"`{name}.coerce_to` must be boolean, llm_boolean "
                                                       f"or iterable, not {config['coerce_to']!r}")
            else:
                kw["coerce_to"] = config["coerce_to"]
        if "timeout" in config and not wait:
            kw["timeout"] = self.duration(config["timeout"], key_at(config, "timeout"), f"{name}.timeout")
        if "params" in config:
            if not isinstance(config["params"], Mapping):
                self.problem(key_at(config, "params"), f"`{name}.params` must be a mapping")
            else:
                kw["params"] = dict(config["params"])
        if "path" in config and not isinstance(config["path"], str):
            self.problem(key_at(config, "path"), f"`{name}.path` must be a path (text), not {config['path']!r}",
                         hint="a directory to look in, or the step's file, relative to the workflow")
        model = config.get("model", self.model)
        kw["model"] = model if isinstance(model, str) else None
        for key, field in (("api_provider", "provider"), ("base_url", "base_url")):
            if isinstance(config.get(key), str):  # checked by model_settings
                kw[field] = config[key]
        if "max_tool_rounds" in config:
            rounds = config["max_tool_rounds"]
            if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 1000:
                self.problem(key_at(config, "max_tool_rounds"), f"`{name}.max_tool_rounds` must be a whole "
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
            self.problem(key_at(value, "attempts"), f"`{what}.attempts` must be a whole number from 1 to "
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
                    self.problems.append(WorkflowInvalid(err.message, where=self.source.where(key_at(value, key)),
                                                         hint=err.hint))
        if "backoff" in value:
            backoff = value["backoff"]
            if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 1 <= backoff <= 100:
                self.problem(key_at(value, "backoff"), f"`{what}.backoff` must be a number from 1 (a fixed delay) "
                                                    f"to 100, not {backoff!r}", hint="the default, 2, doubles it")
            else:
                kw["backoff"] = float(backoff)
        if "jitter" in value:
            if not isinstance(value["jitter"], bool):
                self.problem(key_at(value, "jitter"), f"`{what}.jitter` must be true or false, not {value['jitter']!r}")
            else:
                kw["jitter"] = value["jitter"]
        if value.get("on") is not None:
            kw["on"] = self.retry_on(value["on"], key_at(value, "on"), f"{what}.on")
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


def _reads(expr: str) -> list[tuple[str, str]]:
    """The `output.X`, `output['X']`, `event.X` and `event['X']` an expression reads (issue 24);
    `output.get('X')` and other method calls are lookups that may miss, so they are not reads."""
    import ast  # only while compiling

    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:  # folded over several lines, as expressions._compile allows
        tree = ast.parse(f"(\n{expr}\n)", mode="eval")
    found = []
    for node in ast.walk(tree):
        base = getattr(node, "value", None)
        if not isinstance(base, ast.Name) or base.id not in ("output", "event"):
            continue
        if isinstance(node, ast.Attribute):
            key = node.attr
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            key = node.slice.value
        else:
            continue
        if key not in _DICT_NAMES:
            found.append((base.id, key))
    return found


def _compile_problem(text: str, shown: str) -> tuple[int, str] | None:
    """None when `text` compiles; else (line, what) for a syntax error, (0, what) when it cannot be
    compiled at all (a NUL byte, Python < 3.12)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings are the import's to show, not ours
            compile(text, shown, "exec", dont_inherit=True)
    except SyntaxError as err:
        code = (err.text or "").strip()
        return err.lineno or 1, err.msg + (f" in {code!r}" if code else "")
    except ValueError as err:
        return 0, str(err)
    return None


_DICT_NAMES = frozenset(dir(dict))  # `output.get`, `event.items`: the mapping's own methods


def writes_known(source: str) -> set[str] | None:
    """The output names a Python step's source could write, or None when it could write names
    that cannot be read off it (issue 24; decided conservatively): every string literal in the
    file counts as a name it may write, and any item assignment with a computed key
    (`out[name] = …`), `.update(…)`, `setattr(…)`, `set_output(name, …)` makes it unknowable."""
    import ast  # only while compiling

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and not (
                isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            return None
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("update", "setattr", "__setitem__", "setdefault", "set_output", "append_output", "record") \
                    and not (node.args and isinstance(node.args[0], ast.Constant)
                             and isinstance(node.args[0].value, str) and called not in ("update", "setattr")):
                return None
    return names


def _plain_json(value: Any) -> Any:
    """A schema as plain JSON data (the YAML loader's line-tracking types made plain)."""
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value
