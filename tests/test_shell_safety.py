"""Interpolated values stay data (SPEC §4): `DotDict`'s data keys win over dict methods (issue 11 item 8)."""
from __future__ import annotations

import copy
import json
import pickle

import cloudpickle
import pytest

from roast.errors import StepFailed
from roast.expressions import DotDict, evaluate, render, render_shell, to_text

# --------------------------------------------------------------------------- DotDict: data keys win

EVENT = {"items": [1, 2], "keys": "k", "get": "g", "values": "v", "pop": "p", "copy": "c", "update": "u",
         "pr": {"items": ["i"], "number": 7}, "prs": [{"items": "first"}], "__typename": "PullRequest"}


@pytest.mark.parametrize("expr, shown", [
    ("event.items", "[1, 2]"), ("event.keys", "k"), ("event.get", "g"), ("event.pop", "p"),
    ("event.copy", "c"), ("event.update", "u"), ("output.values", "v"), ("event.pr.items", '["i"]'),
    ("event.prs[0].items", "first"), ("event.__typename", "PullRequest"),
])
def test_data_keys_win_over_dict_methods_in_templates(expr, shown):
    assert render(f"{{{{ {expr} }}}}", {"event": EVENT, "output": {"values": "v"}}) == shown
    _, env = render_shell(f"printf %s {{{{ {expr} }}}}", {"event": EVENT, "output": {"values": "v"}})
    assert env == {"ROAST_ARG_1": shown}


def test_dict_methods_still_work_where_no_key_shadows_them():
    ns = {"event": {"a": 1, "b": {"c": 2}}, "output": {"x": "y"}}
    assert evaluate("sorted(event.keys())", ns) == ["a", "b"]
    assert evaluate("event.get('a')", ns) == 1 and evaluate("event.get('b').c", ns) == 2
    assert evaluate("output.values()", ns) == ["y"] and evaluate("output.items()", ns) == [("x", "y")]
    assert evaluate("event.copy().b.c", ns) == 2
    with pytest.raises(StepFailed, match=r"no key 'nope' \(known: a, b\)"):
        evaluate("event.nope", ns)


def test_dicts_reached_through_lists_tuples_values_and_items_follow_the_same_rule():
    ns = {"event": {"m": {"a": {"items": 1}}, "l": [[{"keys": 2}]]}, "output": {"t": ({"get": 3},)}}
    assert evaluate("[p.items for p in event.m.values()]", ns) == [1]
    assert evaluate("[p.items for _, p in event.m.items()]", ns) == [1]
    assert evaluate("event.l[0][0].keys", ns) == 2
    assert evaluate("output.t[0].get", ns) == 3
    assert evaluate("event.copy().m.a.items", ns) == 1


def test_dunder_names_are_never_data():
    d = DotDict({"__class__": "x", "__reduce_ex__": "y", "__dict__": "z"})
    assert d.__class__ is DotDict and callable(d.__reduce_ex__) and isinstance(d, dict)
    with pytest.raises(AttributeError):
        _ = d.__dict__  # slotted: no instance dict, and never the key


def test_a_dotdict_with_keys_that_shadow_methods_pickles_copies_compares_and_serialises():
    d = DotDict(EVENT)
    for module in (pickle, cloudpickle):
        back = module.loads(module.dumps(d))
        assert type(back) is DotDict and back == EVENT and back.items == [1, 2]
    assert copy.copy(d) == EVENT and type(copy.deepcopy(d)) is DotDict and copy.deepcopy(d).pr.items == ["i"]
    assert json.loads(to_text(d)) == EVENT and json.loads(to_text([d, (d,)])) == [EVENT, [EVENT]]
    assert dict(d) == EVENT and {**d} == EVENT and d == DotDict(EVENT)
