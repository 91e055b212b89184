"""roast.record: a Record declares each field once, annotated, with its default as its value."""
from __future__ import annotations

import pickle

import pytest

from roast.record import Record


class Point(Record):
    x: int
    y: int = 0
    tags: dict[str, str] = {}


class Listed(Record):  # the older form: fields listed in __slots__, defaults in _defaults
    __slots__ = ("a", "b")
    _defaults = {"b": 2}


def test_annotated_fields_are_the_slots_in_order_and_their_values_the_defaults():
    assert Point.__slots__ == ("x", "y", "tags")
    assert Point(1) == Point(x=1, y=0, tags={}) and repr(Point(1, 2)) == "Point(x=1, y=2, tags={})"
    assert not hasattr(Point(1), "__dict__")


def test_a_mutable_default_is_not_shared_between_records():
    assert Point(1).tags is not Point(1).tags


def test_a_record_stays_immutable_and_needs_its_fields():
    with pytest.raises(AttributeError, match="immutable"):
        Point(1).x = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="needs the field 'x'"):
        Point()
    with pytest.raises(TypeError, match="has no field 'z'"):
        Point(1, z=3)


def test_records_pickle_by_value_in_both_forms():
    assert pickle.loads(pickle.dumps(Point(1, 2, {"a": "b"}))) == Point(1, 2, {"a": "b"})
    assert pickle.loads(pickle.dumps(Listed(1))) == Listed(1, 2)
