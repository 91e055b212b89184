"""Compiling: a workflow definition (YAML through `workflow.Workflow`, or a dict) into the frozen
node tree of `roast.steps`/`roast.leaves`, reporting every mistake at once with file:line and a
did-you-mean. A step keyword is dispatched through the one `KEYWORDS` table; the value checks are `checks`.

Performs no I/O of its own: step files are found through the `Source` it is given.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from roast import expressions, shell
from roast.checks import NAME, Checks, Source, closest, edits, key_at, misspelt_reserved
from roast.errors import RoastError, UsageError, WorkflowInvalid
from roast.expressions import has_template, to_text
from roast.webhook_aim import aimed_problem
from roast.leaves import Command, Input, Prompt, Python, Script, Sleep, StepOptions, Webhook
from roast.steps import (EVENT_NAME, RESERVED_WAIT_KEYS, Case, Each, If, Parallel, Repeat, Sequence, WaitForEvent,
                         command_text)

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

class _Compiler(Checks):
    """Builds the node tree; the checks it makes along the way are `Checks`'."""

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
                    self.problem(key_at(item, "webhook"), f"{here}: `webhook:` takes an https:// or http:// URL, "
                                 f"not {url!r}", hint="e.g.  notify: [webhook: https://hooks.example.com/roast]")
                    continue
                self.templates(url, key_at(item, "webhook"), f"{here}.webhook")
                if (aimed := aimed_problem(url, f"{here}.webhook")) is not None:  # issue 21
                    self.problem(key_at(item, "webhook"), aimed, hint="e.g.  webhook: \"{{ env.HOOK_URL }}\"")
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
            self.python_sources.append(None)  # a callable: the outputs it writes cannot be known
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
        if self.unclosed(text_s, node, path):  # issue 24: not a prompt sent to the model
            return Sequence(path, ())
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
            self.python_sources.append(found.text)
            return Python(path, label, str(found.path), options, depth)
        if not getattr(found, "executable", True):
            shown = found.shown or str(found.path)
            self.problem(node, f"{path}: step {label!r}: {shown} is not executable; run chmod +x "
                               f"{shlex.quote(shown)}",
                         hint="roast runs a .sh step as a program, so the file needs its executable bit")
        return Script(path, label, str(found.path), options, depth)

    def unclosed(self, value: Any, node: Any, path: str) -> bool:
        """Issue 24: `$(ls -la` with no `)` is a mistake, never a prompt, a step name or a literal."""
        if not isinstance(value, str) or not value.lstrip().startswith("$(") or ")" in value:
            return False
        self.problem(value if getattr(value, "line", 0) else node,
                     f"{path}: `$(` is never closed, so this is neither a command nor a prompt",
                     hint=f"end the command with `)`: {value.strip()})")
        return True

    def not_found(self, step_name: str, label: str, search: str | None, node: Any) -> None:
        tried = self.source.looked_for(step_name, search)
        # never suggest the name that was just not found (issue 11)
        close = closest(step_name, [c for c in self.source.step_candidates(search) if c != step_name])
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
            self.python_sources.append(None)
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
        elif self.unclosed(cond, item, path):
            pass  # said once, as the unclosed command it is
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
        self.unclosed(item.get("case"), item, path)
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
        self.unclosed(item.get("each"), item, path)
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
        self.unclosed(spec.get("until"), spec, path)
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
        at = key_at(item, "sleep")
        example = "e.g.  - sleep: 2h   or   - sleep: {until: \"2027-01-01T09:00:00Z\"}"
        if isinstance(spec, Mapping):
            if list(spec) != ["until"]:
                self.problem(at, f"{path}: `sleep:` as a mapping holds `until:` only, found {list(spec)!r}",
                             hint=example)
                return Sleep(path, name, None, "", depth)
            until = spec["until"]
            if isinstance(until, dt.datetime):
                if until.tzinfo is None:
                    self.problem(key_at(spec, "until"), f"{path}: `sleep: until` {until.isoformat()} has no time zone",
                                 hint=f"add one: \"{until.isoformat()}Z\" for UTC, or an offset such as +01:00")
                until = until.isoformat()
            elif isinstance(until, dt.date):
                self.problem(key_at(spec, "until"), f"{path}: `sleep: until` {until.isoformat()} is a date; give a time",
                             hint=f"e.g.  until: \"{until.isoformat()}T09:00:00Z\"")
                until = until.isoformat()
            elif not isinstance(until, str):
                self.problem(key_at(spec, "until"), f"{path}: `sleep: until` must be an ISO 8601 time, not {until!r}",
                             hint=example)
                until = ""
            elif not has_template(until):
                try:
                    expressions.parse_instant(until, "`sleep: until`")
                except UsageError as err:
                    self.problem(key_at(spec, "until"), f"{path}: {err.message}", hint=err.hint)
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
            at = key_at(spec, key)
            if isinstance(key, bool):
                self.problem(at, f"{path}: event name {key!r} was read by YAML as a boolean "
                                 "(on/off/yes/no/true/false)", hint="quote it: \"on\": [...]")
                continue
            key_s = str(key)
            if key_s in RESERVED_WAIT_KEYS:
                continue
            meant = misspelt_reserved(key_s)
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
        timeout_branch = (self.sequence(spec["timeout"], f"{path}.timeout", depth, key_at(spec, "timeout"))
                          if isinstance(spec.get("timeout"), list) else None)
        if "timeout" in spec and not isinstance(spec["timeout"], list):
            self.problem(key_at(spec, "timeout"), f"{path}: inside a wait, `timeout:` is the list of steps run "
                                               "when the deadline passes",
                         hint="set the duration with `within: 2h`")
        # SPEC §6 + issue 6: the wait's own `within` > the named wait's config > top-level default.
        if name:
            self.used.setdefault(str(name), set()).add("wait")
        config = (self.source.config_for(name) or {}) if name else {}
        own = (self.duration(spec["within"], key_at(spec, "within"), "within")
               if spec.get("within") is not None else None)
        named = (self.duration(config["timeout"], key_at(config, "timeout"), f"{name}.timeout")
                 if config.get("timeout") is not None else None)
        timeout = own if own is not None else named if named is not None else self.default_timeout
        # issue 11: the `timeout:` branch > the wait's own `on_timeout:` > the named wait's config >
        # the top-level default (the runner takes the branch first, see WaitForEvent._branch).
        on_timeout = None
        for origin in (spec, config, self.wait_defaults):
            if origin.get("on_timeout") is not None:
                on_timeout = self.sequence(origin["on_timeout"], f"{path}.on_timeout", depth,
                                           key_at(origin, "on_timeout"))
                break
        # issue 14: `notify:` runs once the wait is saved; the wait's own > its config > the default
        notify = None
        for origin in (spec, config, self.wait_defaults):
            if origin.get("notify") is not None:
                notify = self.notify(origin["notify"], f"{path}.notify", depth, key_at(origin, "notify"))
                break
        if timeout is None and spec:
            self.warnings.append(f"{self.source.where(item)}: {path}: this wait has no deadline, so it waits "
                                 "forever; give it `within: 2h`" + (f", `{name}: {{timeout: 2h}}`" if name else "")
                                 + " or a top-level `wait_for_event: {timeout: 2h}`")
        title, description, labels = self.gate(spec, path, [event for event, _ in branches])
        policy = self.wait_policy(spec, config, item, path, depth, [event for event, _ in branches],
                                  notify is not None, timeout)
        return WaitForEvent(path, name, tuple(branches), timeout_branch, on_timeout, timeout, depth, schemas,
                            notify, title, description, labels, policy)

    def wait_policy(self, spec: Mapping[str, Any], config: Mapping[str, Any], item: Any, path: str, depth: int,
                    events: list[str], has_notify: bool, within: float | None) -> Any:
        """Issue 23: the wait's gate policy (`approvers`, `quorum`, `self_approval`, `require_verified`,
        `remind`, `escalate`), from the wait, else its named config; every problem reported in place."""
        from roast.policy import POLICY_KEYS, parse_policy

        raw = {key: origin[key] for origin in (config, spec) for key in POLICY_KEYS if key in origin}
        if not raw:
            return None

        def where_of(key: str) -> str:
            return self.source.where(key_at(spec, key) if key in spec else key_at(config, key))

        def compile_notify(value: Any, what: str) -> Any:
            origin = spec if "escalate" in spec else config
            return self.notify(value, f"{path}.{what}.notify", depth, key_at(origin, "escalate"))

        try:
            return parse_policy(raw, where=self.source.where(item), events=events, has_notify=has_notify,
                                where_of=where_of, within=within, compile_notify=compile_notify)
        except WorkflowInvalid as err:
            for found in err.problems or [err]:
                self.problems.append(WorkflowInvalid(f"{path}: {found.message}", where=found.where, hint=found.hint))
            return None

    def gate(self, spec: Mapping[str, Any], path: str, events: list[str]
             ) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
        """Issue 22: what a person sees of the wait: `title:`, `description:` (templates, rendered
        when the wait is reached) and `labels:` (a button's text per declared event)."""
        texts: list[str | None] = []
        for key in ("title", "description"):
            value = spec.get(key)
            if value is not None and not isinstance(value, str):
                self.problem(key_at(spec, key), f"{path}: `{key}:` is text, not {value!r}",
                             hint=f'quote it: {key}: "Deploy {{{{ output.version }}}}?"')
                value = None
            self.templates(value, key_at(spec, key), f"{path}.{key}")
            texts.append(None if value is None else str(value))
        labels: list[tuple[str, str]] = []
        declared = spec.get("labels")
        if declared is not None and not isinstance(declared, Mapping):
            self.problem(key_at(spec, "labels"), f"{path}: `labels:` maps event names to button texts, not "
                         f"{declared!r}", hint="e.g.  labels: {approved: \"Approve and deploy\"}")
        elif declared is not None:
            for event, text in declared.items():
                at = key_at(declared, event)
                if str(event) not in events:
                    close = closest(str(event), events)
                    self.problem(at, f"{path}: `labels:` names {str(event)!r}, which this wait does not declare",
                                 hint=f"did you mean {close!r}?" if close else f"it declares {', '.join(events)}")
                elif not isinstance(text, str):
                    self.problem(at, f"{path}: the label of {str(event)!r} is text, not {text!r}",
                                 hint="quote it")
                else:
                    self.templates(text, at, f"{path}.labels.{event}")
                    labels.append((str(event), str(text)))
        return texts[0], texts[1], tuple(labels)


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
    compiler.tools(source.data.get("tools"), key_at(source.data, "tools"))
    steps = source.data.get("steps")
    root = compiler.sequence(steps, "steps", 0, source.data)
    defaults = source.data.get("wait_for_event")
    if defaults is not None and not isinstance(defaults, Mapping):
        compiler.problem(key_at(source.data, "wait_for_event"), "the top-level `wait_for_event:` key holds "
                         "the default config of waits and must be a mapping (timeout, on_timeout)")
    compiler.config_keys()
    compiler.check_reads(root)
    unused = _unused_configs(source, set(compiler.used), compiler)
    if compiler.problems:
        compiler.problems = list({str(p): p for p in compiler.problems}.values())
        compiler.problems.sort(key=_place)  # in file order, whichever check found them
        count = len(compiler.problems)
        raise WorkflowInvalid(f"the workflow has {count} problem{'s' if count > 1 else ''}",
                              problems=compiler.problems)
    if warnings is not None:
        warnings.extend(compiler.warnings)
        warnings.extend(unused)
    return root

def _place(problem: RoastError) -> tuple[str, int]:
    place = problem.to_dict()
    line = place["line"]
    return str(place["file"] or ""), line if isinstance(line, int) else 0


def _unused_configs(source: Source, names: set[str], compiler: _Compiler) -> list[str]:
    """SPEC §2: a top-level mapping that configures no step is ignored, with a warning; issue 24:
    an error when it is one edit away from a step or wait name (`aproval:` would leave the wait
    `approval` with no deadline)."""
    import difflib

    found = []
    key_lines = getattr(source.data, "key_lines", {})
    for key, value in source.data.items():
        if not isinstance(key, str) or key in TOP_LEVEL or key in names or not isinstance(value, Mapping):
            continue
        near = [name for name in sorted(names) if len(key) >= 3 and edits(key, name) <= 1]
        if near:
            compiler.problem(key_lines.get(key) or source.data, f"top-level key {key!r} configures no step of "
                             "this workflow", hint=f"did you mean {near[0]!r}? (as written, its settings "
                                                   "would be ignored)")
            continue
        close = difflib.get_close_matches(key, sorted(names), n=1)
        where = source.where(key_lines.get(key) or source.data)
        found.append(f"{where}: top-level key {key!r} configures no step of this workflow; it is ignored"
                     + (f" (did you mean {close[0]!r}?)" if close else ""))
    return found
