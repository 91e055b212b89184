"""Pure functions for `{{ }}` expressions, conditions' truthiness, durations, event data, and
shell-safe interpolation. Performs no I/O of its own.

Expressions come from the workflow file, which is trusted: the restricted builtins below keep
typos and accidents out (no `open`, no `__import__`), they are not a sandbox. Data (event data,
step outputs) only ever arrives as *values*: it is never evaluated and never parsed by a shell.
"""
from __future__ import annotations

import builtins
import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate, count
from types import CodeType
from typing import NoReturn

from roast.errors import BadEventData, StepFailed, UsageError

__all__ = [
    "MAX_DURATION", "MAX_ENV_STRING", "MAX_EVENT_BYTES", "MAX_EVENT_DEPTH", "TEMPLATE", "DotDict",
    "evaluate", "has_template", "parse_duration", "parse_event_data", "render", "render_shell",
    "render_value", "shell_template_problems", "to_text", "truthy", "wrap",
]

# --------------------------------------------------------------------------- DotDict


class DotDict(dict):  # type: ignore[type-arg]
    """A dict whose keys are also attributes: `output.build` is `output["build"]`.

    Data keys always win over dict methods (issue 11 item 8): `event.items` is the event's `items`
    key when it has one, and the method otherwise (`output.keys()`). Nested dicts, and dicts inside
    lists and tuples or given by `values()` and `items()`, come back wrapped on access, so
    `event.pr.author` works on plain JSON data.

    >>> DotDict({"pr": {"number": 7}}).pr.number
    7
    >>> DotDict({"items": [1]}).items
    [1]
    """

    __slots__ = ()

    def __getattribute__(self, name: str) -> object:
        # Keys first, except dunders: protocol probes (pickle, copy, isinstance) go straight to
        # the class and never see data.
        if name[:2] != "__" or name[-2:] != "__":
            value = _dict_get(self, name, _MISSING)
            if value is not _MISSING:
                return wrap(value) if isinstance(value, _CONTAINERS) else value
        return _object_getattribute(self, name)

    def __getattr__(self, name: str) -> object:  # no such key and no such attribute
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)  # stay quiet and fast for protocol probes
        raise AttributeError(f"no key {name!r} (known: {_key_list(self)})") from None

    def __getitem__(self, key: object) -> object:
        return wrap(dict.__getitem__(self, key))

    def __reduce__(self) -> tuple[type[DotDict], tuple[dict[object, object]]]:
        # The default reduction calls self.items(), which a data key named `items` would shadow.
        return DotDict, (dict(self),)

    def get(self, key: object, default: object = None) -> object:  # type: ignore[override]
        return wrap(dict.get(self, key, default))

    def values(self) -> list[object]:  # type: ignore[override]
        return [wrap(v) for v in dict.values(self)]

    def items(self) -> list[tuple[object, object]]:  # type: ignore[override]
        return [(k, wrap(v)) for k, v in dict.items(self)]

    def copy(self) -> DotDict:
        return DotDict(self)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(DotDict)) | {k for k in dict.keys(self) if isinstance(k, str)})


_MISSING = object()
_CONTAINERS = (dict, list, tuple)
_dict_get = dict.get
_object_getattribute = object.__getattribute__


def _key_list(mapping: Mapping[object, object], most: int = 20) -> str:
    keys = [str(k) for k in mapping]
    if not keys:
        return "none"
    if len(keys) > most:
        return ", ".join(keys[:most]) + f", … ({len(keys) - most} more)"
    return ", ".join(keys)


def wrap(value: object) -> object:
    """Return `value` with dicts as `DotDict` (shallow: deeper levels wrap on access)."""
    if isinstance(value, DotDict):
        return value
    if isinstance(value, dict):
        return DotDict(value)
    if isinstance(value, list) and any(isinstance(v, (dict, list, tuple)) for v in value):
        return [wrap(v) for v in value]
    if type(value) is tuple and any(isinstance(v, (dict, list, tuple)) for v in value):
        return tuple(wrap(v) for v in value)
    return value


def _plain(value: object) -> object:
    """`value` with every `DotDict` made a plain dict, for json (whose encoder calls `.items()`)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in dict.items(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- evaluate

_SAFE_NAMES = [
    "len", "str", "int", "float", "bool", "list", "dict", "tuple", "set", "sorted", "reversed", "min",
    "max", "sum", "any", "all", "enumerate", "range", "zip", "abs", "round", "repr", "map", "filter",
    "isinstance",
]
SAFE_BUILTINS: dict[str, object] = {name: getattr(builtins, name) for name in _SAFE_NAMES}
SAFE_BUILTINS.update({"True": True, "False": False, "None": None})


@functools.lru_cache(maxsize=1024)
def _compile(expr: str) -> CodeType:
    try:
        return compile(expr, "<expression>", "eval")
    except SyntaxError:
        if "\n" not in expr:
            raise
        # an expression folded over several YAML lines: parentheses make the newlines insignificant
        return compile(f"(\n{expr}\n)", "<expression>", "eval")


def evaluate(expr: str, namespace: Mapping[str, object]) -> object:
    """Evaluate one expression (the text between `{{` and `}}`) with the namespace's keys as names.

    Any failure is a `StepFailed` naming the expression:

    >>> evaluate("output.build.upper()", {"output": DotDict(build="ok")})
    'OK'
    """
    text = expr.strip()
    # Names go into the globals (not locals) so comprehensions and lambdas can see them.
    scope: dict[str, object] = {name: wrap(value) for name, value in namespace.items()}
    scope["__builtins__"] = SAFE_BUILTINS
    try:
        return eval(_compile(text), scope)  # trusted workflow text, restricted builtins
    except Exception as err:  # every kind of failure becomes one step error
        msg = err.msg if isinstance(err, SyntaxError) else str(err)
        hint = None
        if isinstance(err, NameError):
            hint = "names available here: " + ", ".join(sorted(str(k) for k in namespace) + ["safe builtins"])
        raise StepFailed(f"cannot evaluate {{{{ {text} }}}}: {type(err).__name__}: {msg}",
                         hint=hint) from err


# --------------------------------------------------------------------------- templates

TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def has_template(text: str) -> bool:
    """True when `text` holds at least one `{{ expr }}`."""
    return TEMPLATE.search(text) is not None


def render(text: str, namespace: Mapping[str, object]) -> str:
    """Replace every `{{ expr }}` with its value as text, in one pass.

    Substituted text is never scanned again, so data holding `{{ x }}` stays literal
    (reliability §3.1: Roast interpolated twice).
    """
    return TEMPLATE.sub(lambda m: to_text(evaluate(m.group(1), namespace)), text)


def render_value(text: str, namespace: Mapping[str, object]) -> object:
    """The raw object when `text` is exactly one `{{ expr }}` (for `each:`), else `render(text)`."""
    stripped = text.strip()
    match = TEMPLATE.match(stripped)
    if match and match.end() == len(stripped):
        return evaluate(match.group(1), namespace)
    return render(text, namespace)


def to_text(value: object) -> str:
    """How a value reads inside a string: None → "", booleans lower-case, containers as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_plain(value), ensure_ascii=False, default=str)
    return str(value)


def truthy(value: object) -> bool:
    """Roast's truthiness: None, False, "" and "false" (any case, spaces ignored) are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false")
    return bool(value)


# --------------------------------------------------------------------------- shell

# Linux MAX_ARG_STRLEN is 32 pages (131,072 bytes) per argv/env string, NUL included; the
# string is `NAME=value` [measured: ROAST_ARG_1 holds at most 131,059 bytes].
MAX_ENV_STRING = 131_071
# ARG_MAX (2 MiB by default) covers argv and the whole environment; keep room for the rest.
_MAX_ARGS_TOTAL = 1_048_576

_UNQUOTED, _SINGLE, _DOUBLE, _COMMENT = "unquoted", "single", "double", "comment"
_WORD_BREAKS = frozenset(" \t\n;&|()<>")



@dataclass(slots=True)
class _Frame:
    """A lexing context: the whole command, a `$( )`, a `$(( ))` or a backtick substitution."""

    kind: str  # "top", "cmdsub", "arith" or "backtick"
    state: str = _UNQUOTED  # unquoted, single, double or comment
    depth: int = 0  # "(" opened inside this frame and not yet closed


class _Lexer:
    """Just enough of the POSIX sh grammar to know the quoting context of each placeholder.

    Tracks unquoted, '…' and "…" text (backslash escapes honoured outside single quotes),
    comments, `$( )` (a fresh unquoted context), `$(( ))` and backticks, and notices the start
    of a here-document, after which it stops lexing.
    """

    __slots__ = ("heredoc_pending", "in_heredoc", "prev", "stack")

    def __init__(self) -> None:
        self.stack = [_Frame("top")]
        self.heredoc_pending = False
        self.in_heredoc = False
        self.prev = "\n"  # last character seen: `#` starts a comment only at a word start

    def feed(self, text: str) -> bool:
        """Lex `text`; True when its last character is an unquoted backslash escaping what follows."""
        i, n = 0, len(text)
        while i < n and not self.in_heredoc:
            frame = self.stack[-1]
            c = text[i]
            nxt = text[i + 1] if i + 1 < n else ""
            if frame.kind == "backtick":
                if c == "\\":
                    i += 1
                elif c == "`":
                    self.stack.pop()
            elif frame.state == _SINGLE:
                if c == "'":
                    frame.state = _UNQUOTED
            elif frame.state == _COMMENT:
                if c == "\n":
                    frame.state = _UNQUOTED
                    i = self._newline(i)
            elif frame.state == _DOUBLE:
                if c == "\\" and nxt in ("$", "`", '"', "\\", "\n"):
                    i += 1
                elif c == '"':
                    frame.state = _UNQUOTED
                elif c == "`":
                    self.stack.append(_Frame("backtick"))
                elif c == "$" and nxt == "(":
                    i = self._substitution(text, i)
            elif c == "\\":
                i += 1
            elif c == "'":
                frame.state = _SINGLE
            elif c == '"':
                frame.state = _DOUBLE
            elif c == "`":
                self.stack.append(_Frame("backtick"))
            elif c == "#" and self.prev in _WORD_BREAKS:
                frame.state = _COMMENT
            elif c == "$" and nxt == "(":
                i = self._substitution(text, i)
            elif c == "(":
                frame.depth += 1
            elif c == ")":
                if frame.depth:
                    frame.depth -= 1
                elif frame.kind != "top":
                    self.stack.pop()
            elif c == "<" and text.startswith("<<", i) and not text.startswith("<<<", i):
                self.heredoc_pending = True
                i += 1
            elif c == "\n":
                i = self._newline(i)
            self.prev = text[i] if i < n else c
            i += 1
        return i > n

    def _newline(self, i: int) -> int:
        if self.heredoc_pending:
            self.in_heredoc = True  # the body is data: its quotes and `$` are not ours to lex
        return i

    def _substitution(self, text: str, i: int) -> int:
        """Enter `$(` or `$((` at `text[i]`; return the index of its last `(`."""
        if text.startswith("$((", i):
            self.stack.append(_Frame("arith", depth=1))
            return i + 2
        self.stack.append(_Frame("cmdsub"))
        return i + 1

    def unclosed(self) -> str | None:
        """What is left open at the end of the command, if anything."""
        if self.in_heredoc:
            return None
        frame = self.stack[-1]
        if frame.kind == "backtick":
            return "a backtick (`) substitution is not closed"
        if frame.state == _SINGLE:
            return "a single quote (') is not closed"
        if frame.state == _DOUBLE:
            return 'a double quote (") is not closed'
        if frame.kind == "arith":
            return "a $(( is not closed"
        if frame.kind == "cmdsub":
            return "a $( is not closed"
        return None


@dataclass(frozen=True, slots=True)
class _Slot:
    """One `{{ expr }}` of a command and the quoting state it sits in."""

    expr: str
    state: str


@dataclass(frozen=True, slots=True)
class _Plan:
    parts: tuple[str | _Slot, ...]
    problems: tuple[str, ...]


@functools.lru_cache(maxsize=512)
def _plan(template: str) -> _Plan:
    """Lex `template` once and note each placeholder's quoting context (reliability §3.3)."""
    lexer = _Lexer()
    parts: list[str | _Slot] = []
    problems: list[str] = []
    pos = 0
    for match in TEMPLATE.finditer(template):
        literal = template[pos:match.start()]
        escaped = lexer.feed(literal)
        expr = match.group(1).strip()
        where = f"{{{{ {expr} }}}}"
        frame = lexer.stack[-1]
        if lexer.in_heredoc:
            problems.append(f"{where} is inside a here-document, whose quoting depends on its "
                            f"delimiter; pipe the value in instead: printf '%s\\n' \"{where}\" | command")
        elif frame.kind == "backtick":
            problems.append(f"{where} is inside backticks (`...`), where its quoting cannot be "
                            f"kept; use $( ... ) instead")
        elif frame.kind == "arith":
            problems.append(f"{where} is inside $(( ... )), where the shell would evaluate its "
                            f"value as arithmetic; compute it in the expression instead")
        elif escaped:
            problems.append(f"a backslash escapes {where}; remove the backslash")
        elif frame.state in (_UNQUOTED, _DOUBLE) and _ends_with_bare(literal, "$"):
            # `${{x}}` would become `$"…"` (bash: locale string) or `$${…}` (the shell's pid):
            # keep the dollar a literal dollar, as in render().
            literal = literal[:-1] + "\\$"
        elif frame.state == _DOUBLE and _ends_with_bare(literal, "\\"):
            # Inside "…" `\{` is a backslash and a brace, but `\${…}` would escape the expansion.
            literal += "\\"
        parts += [literal, _Slot(expr, frame.state)]
        lexer.prev = "x"  # a placeholder ends mid-word
        pos = match.end()
    tail = template[pos:]
    lexer.feed(tail)
    parts.append(tail)
    unclosed = lexer.unclosed()
    if unclosed:
        problems.append(unclosed)
    return _Plan(tuple(parts), tuple(problems))


def _ends_with_bare(literal: str, char: str) -> bool:
    """True when `literal` ends with `char` not itself escaped by a backslash."""
    if not literal.endswith(char):
        return False
    body = literal[:-1]
    return (len(body) - len(body.rstrip("\\"))) % 2 == 0


def shell_template_problems(template: str) -> list[str]:
    """What makes a `$( … )` command unsafe or unbalanced (for load time); empty when fine."""
    return list(_plan(template).problems)


def render_shell(template: str, namespace: Mapping[str, object]) -> tuple[str, dict[str, str]]:
    """Turn a command with `{{ }}` into a shell line plus the environment that carries the values.

    Each placeholder becomes a reference to `ROAST_ARG_n` fitted to its quoting context, so the
    shell expands the value but never parses it (SPEC §4, reliability §3.3 option B):

    >>> render_shell('echo "by {{x}}" {{x}}', {"x": "$(id)"})
    ('echo "by ${ROAST_ARG_1}" "${ROAST_ARG_2}"', {'ROAST_ARG_1': '$(id)', 'ROAST_ARG_2': '$(id)'})
    """
    plan = _plan(template)
    if plan.problems:
        raise StepFailed(f"cannot run $({template}): " + "; ".join(plan.problems))
    pieces: list[str] = []
    env: dict[str, str] = {}
    total = 0
    numbers = count(1)
    for part in plan.parts:
        if isinstance(part, str):
            pieces.append(part)
            continue
        name = f"ROAST_ARG_{next(numbers)}"
        value = to_text(evaluate(part.expr, namespace))
        total += _check_arg(part.expr, name, value)
        if total > _MAX_ARGS_TOTAL:
            raise StepFailed(f"the values interpolated into $({_clip(template)}) add up to more than "
                             f"{_MAX_ARGS_TOTAL:,} bytes, too much for one command",
                             hint="read large data from $ROAST_EVENT_FILE instead")
        env[name] = value
        if part.state == _DOUBLE:
            pieces.append(f"${{{name}}}")
        elif part.state == _SINGLE:
            pieces.append(f"'\"${{{name}}}\"'")
        else:
            pieces.append(f'"${{{name}}}"')
    return "".join(pieces), env


def _check_arg(expr: str, name: str, value: str) -> int:
    """Refuse what cannot travel in an environment variable; return its size in bytes."""
    where = f"`{{{{ {expr} }}}}`"
    if "\x00" in value:
        raise StepFailed(f"{where} contains a NUL byte, which a command cannot receive")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as err:
        bad = value[err.start:err.end]
        raise StepFailed(f"{where} contains {bad!r} at position {err.start}, "
                         f"which is not valid Unicode text") from err
    if size + len(name) + 1 > MAX_ENV_STRING:
        raise StepFailed(f"{where} is {size:,} bytes; a command argument is limited to "
                         f"{MAX_ENV_STRING:,} bytes on Linux",
                         hint="read large data from $ROAST_EVENT_FILE instead")
    return size


def _clip(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


# --------------------------------------------------------------------------- durations

MAX_DURATION = 365 * 86_400.0
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_duration(value: object) -> float:
    """Seconds in a duration: `30s`, `15m`, `2h`, `1.5h`, `1d`, or a positive number of seconds.

    >>> parse_duration("1.5h")
    5400.0
    """
    seconds: float | None = None
    hint = None
    if isinstance(value, bool):
        hint = "YAML reads on/off/yes/no/true/false as booleans; quote the value"
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            seconds = None
        elif 0 < value <= MAX_DURATION:
            seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            if not 0 < seconds <= MAX_DURATION:
                seconds = None
        elif re.fullmatch(r"[0-9]+:[0-9]+(:[0-9]+)*", value):
            hint = "write the duration with one unit, e.g. 90s or 90m"
        elif re.fullmatch(r"([0-9.]+[smhd]){2,}", value):
            hint = "use a single unit, e.g. 90m instead of 1h30m"
    if seconds is None:
        raise UsageError(f"timeout {value!r} must be a positive duration like 30s, 15m, 2h or 1d "
                         f"(at most 365d)", hint=hint)
    return seconds


# --------------------------------------------------------------------------- event data

MAX_EVENT_BYTES = 1_048_576
MAX_EVENT_DEPTH = 64
_EVENT_HINT = """pass a JSON object, e.g. --event-data '{"approver": "ana"}'"""
# A string (its brackets do not count; an unterminated one runs to the end), then anything else.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def parse_event_data(raw: str | bytes | None, *, limit: int = MAX_EVENT_BYTES) -> dict[str, object]:
    """Parse event data: a JSON object of at most `limit` bytes (SPEC §10, reliability §5 rows 2-3).

    Refuses, with `BadEventData`, anything else: other JSON types, NaN and Infinity, numbers out
    of range, duplicate keys, nesting deeper than 64, lone surrogates and invalid UTF-8.

    >>> parse_event_data('{"approver": "ana"}')
    {'approver': 'ana'}
    """
    if raw is None or raw in ("", b""):
        return {}
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > limit:
        _refuse(f"event data is {size:,} bytes; the limit is {limit:,}")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")  # a BOM is an encoding marker, not data
        except UnicodeDecodeError as err:
            _refuse(f"event data is not valid UTF-8 (byte {err.start:,}: {err.reason})", err)
    else:
        text = raw
    _check_depth(text)
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        what = err.msg.removesuffix(" at")  # "Unterminated string starting at"
        _refuse(f"event data is not valid JSON: {what} at line {err.lineno} column {err.colno}", err)
    except ValueError as err:  # int() beyond sys.get_int_max_str_digits()
        _refuse(f"event data has a number that is too long ({err})", err)
    if not isinstance(data, dict):
        _refuse(f"event data must be a JSON object, got {_json_kind(data)}")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        bad = err.object[err.start:err.end]
        _refuse(f"event data contains the lone surrogate {bad!r}, which is not valid Unicode", err)
    return data


def _refuse(msg: str, err: BaseException | None = None) -> NoReturn:
    raise BadEventData(msg, hint=_EVENT_HINT) from err


def _check_depth(text: str) -> None:
    # Count before parsing: json's C scanner would recurse ~1,000 levels before failing. The
    # regexes and accumulate() run in C, so a 1 MiB document costs a few tens of milliseconds.
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if brackets and max(accumulate(map(_BRACKET_STEP.__getitem__, brackets))) > MAX_EVENT_DEPTH:
        _refuse(f"event data is nested deeper than {MAX_EVENT_DEPTH} levels")


def _refuse_constant(name: str) -> NoReturn:
    _refuse(f"event data contains {name}, which is not valid JSON; use null or a string")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        _refuse(f"event data has the number {_clip(text)}, which is out of range")
    return number


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            _refuse(f"event data has the key {key!r} more than once in one object")
        result[key] = value
    return result


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    kinds = {list: "an array", str: "a string", int: "a number", float: "a number"}
    return kinds.get(type(value), "a value")


def iso(ts: float | None) -> str | None:
    """A UTC epoch as ISO-8601 with a Z suffix (SPEC §6: received_at; deadlines shown in UTC)."""
    if ts is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def digest(text: str) -> str:
    """sha256 (hex) of a text as UTF-8: how a workflow's files are compared without parsing them."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
