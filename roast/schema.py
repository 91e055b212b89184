"""Typed payloads (issue 14): a wait may declare a JSON Schema per event, and a delivery whose data
does not match is refused before anything is stored.

Uses the `jsonschema` package (python-jsonschema: the reference implementation, every draft up to
2020-12, precise error paths), imported only when a workflow declares a schema: it costs about
0.1-0.2 s to import, which a workflow without schemas never pays. It is the `roast-workflows[schema]` extra.
Pure: performs no I/O.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from roast.errors import UsageError

_INSTALL = "pip install 'roast-workflows[schema]'"


def _library() -> Any:
    try:
        import jsonschema
    except ImportError as err:
        raise UsageError("this workflow declares a JSON Schema (`schema:` in a wait), and the jsonschema "
                         "package is not installed", hint=_INSTALL) from err
    return jsonschema


def _validator(schema: Any) -> Any:
    jsonschema = _library()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls


def check(schema: Any) -> list[str]:
    """What is wrong with a schema itself (for `roast validate`); empty when it is a valid schema."""
    if not isinstance(schema, (dict, bool)):
        return [f"a schema is a mapping (or true/false), not {type(schema).__name__}"]
    jsonschema = _library()
    cls = _validator(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        return [f"it is not a valid JSON Schema{' at ' + where if where else ''}: {err.message}"]
    return []


def problems(data: Any, schema: Any, most: int = 5) -> list[str]:
    """Why `data` does not match `schema` (the JSON path, the rule, the message); empty if it does."""
    cls = _validator(schema)
    found = []
    for err in sorted(cls(schema).iter_errors(data), key=lambda e: list(e.absolute_path)):
        found.append(f"{err.json_path}: {err.message} (rule `{err.validator}`)")
        if len(found) >= most:
            break
    return found
