"""Pure functions for `{{ }}` expressions, conditions' truthiness, durations and event data
(shell-safe interpolation is `roast.shell`). Performs no I/O of its own.

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
from itertools import accumulate
from types import CodeType
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import NoReturn

from roast.errors import BadEventData, StepFailed, UsageError

__all__ = [
    "MAX_DURATION", "MAX_EVENT_BYTES", "MAX_EVENT_DEPTH", "TEMPLATE", "DotDict",
    "evaluate", "has_template", "parse_duration", "parse_event_data", "render",
    "edits", "plain", "render_value", "to_text", "truthy", "wrap",
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


def plain(value: object) -> object:
    """`value` as plain JSON-shaped data: every dict (a `DotDict` too) a plain dict, tuples as lists.

    The json encoder and pickle ask a dict subclass for `.items()` by attribute, where a `DotDict`
    answers with the data's own `items` key (issue 24): anything saved or printed goes through here.
    """
    if isinstance(value, dict):
        return {key: plain(item) for key, item in dict.items(value)}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


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


# --------------------------------------------------------------------------- durations

MAX_DURATION = 365 * 86_400.0
# One or more parts, largest unit first, each unit at most once: 90s, 1.5h, 1h30m, 2d12h, 1w.
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?w)?(?:[0-9]+(?:\.[0-9]+)?d)?(?:[0-9]+(?:\.[0-9]+)?h)?"
                       r"(?:[0-9]+(?:\.[0-9]+)?m)?(?:[0-9]+(?:\.[0-9]+)?s)?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([wdhms])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(value: object, what: str = "timeout", *, zero: bool = False) -> float:
    """Seconds in a duration: `30s`, `15m`, `2h`, `1.5h`, `1d`, `1w`, parts combined largest first
    (`1h30m`, `2d12h`), or a positive number of seconds (`zero`: 0 too, for `sleep:` and a retry's `delay`).

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
        elif 0 < value <= MAX_DURATION or (zero and value == 0):
            seconds = float(value)
    elif isinstance(value, str):
        if value and _DURATION.fullmatch(value):
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
            if not (0 < seconds <= MAX_DURATION or (zero and seconds == 0)):
                seconds = None
        elif re.fullmatch(r"[0-9]+:[0-9]+(:[0-9]+)*", value):
            hint = "write the duration with units, e.g. 1h30m or 90s"
        elif re.fullmatch(r"([0-9.]+[wdhms])+", value.replace(" ", "")):
            hint = "write the parts largest first, each unit once and without spaces, e.g. 1h30m or 2d12h"
    if seconds is None:
        raise UsageError(f"{what} {value!r} must be a {'' if zero else 'positive '}duration like 30s, 15m, 2h, "
                         f"1h30m, 1d or 1w (at most 365d)", hint=hint)
    return seconds


def parse_instant(value: object, what: str = "time") -> float:
    """An absolute instant as a UTC epoch: ISO 8601 with a time zone, `2027-01-01T09:00:00Z` or
    `2027-01-01T10:00:00+01:00` (a time without one would mean a different instant on every
    machine, so it is refused).

    >>> parse_instant("2027-01-01T09:00:00Z")
    1798794000.0
    """
    from datetime import datetime

    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, datetime):
        parsed: datetime | None = value
    else:
        parsed = None
        if text:
            try:
                parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
            except ValueError:
                parsed = None
    if parsed is not None and text is not None and re.fullmatch(r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}", text):
        raise UsageError(f"{what} {value!r} is a date; give a time with a time zone", hint=f"e.g. {text}T09:00:00Z")
    if parsed is None:
        raise UsageError(f"{what} {value!r} is not an ISO 8601 time such as 2027-01-01T09:00:00Z")
    if parsed.tzinfo is None:
        raise UsageError(f"{what} {value!r} has no time zone",
                         hint=f"add one: {text or parsed.isoformat()}Z for UTC, or an offset such as +01:00")
    return parsed.timestamp()


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
        raise BadEventData(f"event data is too large ({size:,} bytes, limit {limit:,})",
                           hint="send less data, or raise ROAST_MAX_EVENT_BYTES")
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


def _clip(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


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


def edits(a: str, b: str) -> int:
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
