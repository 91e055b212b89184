"""`Record`: the base of roast's immutable, slotted value classes (nodes, requests, rows).

Defining a class is start-up time: a frozen dataclass costs ~1.3 ms at import (and `dataclasses`
imports `inspect`, ~10 ms), a `typing.NamedTuple` ~0.2 ms; a plain slotted class ~0.02 ms
(issue 12, measured in the closing note). A subclass annotates its fields, in order, with their
defaults as values, as for a dataclass; the annotations become its `__slots__` and the values its
`_defaults` (the annotations are read as the strings `from __future__ import annotations` leaves,
never evaluated: no `typing` at run time), and mypy checks them. Instances are immutable, compare
and hash by value, pickle by value, and print like a dataclass:

    >>> class Point(Record):
    ...     x: int
    ...     y: int = 0
    >>> Point(1), Point(1) == Point(x=1, y=0)
    (Point(x=1, y=0), True)

A class may still list `__slots__` and `_defaults` itself (then its annotations are for mypy only).

Imports nothing.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R", bound="Record")

_set = object.__setattr__


class _Fields(type):
    """Makes a Record subclass's annotated fields its `__slots__` (unless it lists them itself)."""

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> _Fields:
        if "__slots__" not in ns:
            if "__annotations__" not in ns and "__annotate__" in ns:  # Python 3.14 defers them (PEP 649)
                raise TypeError(f"{name}: a module defining a Record needs `from __future__ import annotations`")
            fields = tuple(field for field in ns.get("__annotations__", {}) if not field.startswith("_"))
            # a field's value in the class body is its default (a slot cannot keep a class value)
            defaults = {field: ns.pop(field) for field in fields if field in ns}
            if defaults:
                ns["_defaults"] = {**ns.get("_defaults", {}), **defaults}
            ns["__slots__"] = fields
        return super().__new__(mcls, name, bases, ns)


class Record(metaclass=_Fields):
    """Immutable slotted record: fields are the class's `__slots__`, defaults in `_defaults`."""

    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    if TYPE_CHECKING:
        # A class that lists `__slots__` without annotating them (mypy does not read `__slots__`):
        # its fields are Any to mypy, through this.
        def __getattr__(self, name: str) -> Any: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self.__slots__
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes {len(fields)} fields, got {len(args)}")
        for name, value in zip(fields, args):
            _set(self, name, value)
        if len(args) < len(fields):
            defaults = self._defaults
            for name in fields[len(args):]:
                if name in kwargs:
                    _set(self, name, kwargs.pop(name))
                elif name in defaults:
                    value = defaults[name]
                    # a mutable default is copied, as dataclasses' default_factory would
                    _set(self, name, type(value)() if isinstance(value, (dict, list)) else value)
                else:
                    raise TypeError(f"{type(self).__name__} needs the field {name!r}")
            if kwargs:
                raise TypeError(f"{type(self).__name__} has no field {next(iter(kwargs))!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (cannot delete {name!r})")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def _replace(self: R, **changes: Any) -> R:
        """A copy with some fields changed: `request._replace(env=...)`."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self._values()
