"""roast.tree, roast.requests and the node interface: every node says its children, so no walker
can lose a wait; the walkers are table-tested on cursors reached by driving real trees with
canned replies (no subprocess, no mocks)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from roast import leaves, requests, steps, tree
from roast.compiler import KEYWORDS, DictSource, compile_workflow
from roast.context import Context, WorkflowInfo
from roast.record import Record
from roast.requests import AskModel, Done, Event, Shell, timeout_event
from roast.runner import Completed, Runner, Waiting

ROAST = Path(__file__).resolve().parent.parent / "roast"


def compiled(data: dict[str, Any]) -> steps.Sequence:
    return compile_workflow(DictSource(data))


def perform(request: Any) -> Any:
    if isinstance(request, Shell):
        return Done(0, request.command.removeprefix("echo ") + "\n")
    if isinstance(request, AskModel):
        return "an answer"
    raise AssertionError(f"unexpected {request!r}")


def cursor_after(root: Any, events: list[str], now: float = 1000.0) -> tuple[Any, Context]:
    """Run `root` to its first wait, then deliver each event in turn; the cursor it rests on."""
    ctx = Context(WorkflowInfo("t", "t.yml"))
    outcome = Runner(perform, now=lambda: now).drive(root.run(ctx))
    for name in events:
        assert isinstance(outcome, Waiting), outcome
        outcome = Runner(perform, now=lambda: now, event=Event(name, {}, "t")).drive(
            root.run(ctx, outcome.suspend.cursor))
    assert isinstance(outcome, Waiting), outcome
    return outcome.suspend.cursor, ctx


def node_classes() -> list[type]:
    found = []
    for module in (steps, leaves):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Record) and value.__module__ == module.__name__ \
                    and "run" in vars(value):
                found.append(value)
    return found


# every construct, named and not, so the introspection below sees every node type
EVERYTHING = {
    "steps": [
        "$(echo a)",
        "say hello please",
        {"py": lambda ctx: 1},
        {"if": "true", "then": ["$(echo t)"], "else": ["$(echo e)"]},
        {"unless": "false", "then": ["$(echo u)"]},
        {"pick": {"case": "x", "when": {"x": ["$(echo x)"]}, "else": ["$(echo y)"]}},
        {"each": "{{ [1, 2] }}", "as": "n", "steps": ["$(echo {{ n }})"]},
        {"repeat": {"steps": ["$(echo r)"], "until": "true"}},
        {"input": {"prompt": "name?"}},
        {"sleep": "1s"},
        [["$(echo p)"], {"wait_for_event": {"inner": ["$(echo i)"]}}],
        {"gate": {"wait_for_event": {"ok": ["$(echo ok)"], "timeout": ["$(echo late)"], "within": "1h",
                                     "on_timeout": ["$(echo ot)"],
                                     "notify": [{"webhook": "https://example.invalid/hook"}]}}},
    ],
}


def test_every_node_class_defines_children_or_is_a_leaf():
    classes = node_classes()
    assert len(classes) >= 14, [c.__name__ for c in classes]
    missing = [c.__name__ for c in classes
               if "children" not in vars(c) and not issubclass(c, leaves.Leaf)]
    assert not missing, f"these nodes would hide their subtree from every walker: {missing}"
    for cls in classes:
        assert "child" in vars(cls) or issubclass(cls, leaves.Leaf), cls.__name__


def _nodes_in(value: Any) -> list[Any]:
    """The nodes a field holds: a node, or nodes inside tuples (also `(key, node)` pairs)."""
    if isinstance(value, Record) and hasattr(value, "run"):
        return [value]
    if isinstance(value, (tuple, list)):
        return [node for item in value for node in _nodes_in(item)]
    return []


def test_children_hold_every_node_a_node_holds_so_no_wait_is_lost():
    root = compiled(EVERYTHING)
    seen = {type(node).__name__ for node in tree.subtree(root)}
    assert {"Sequence", "Command", "Prompt", "Python", "If", "Case", "Each", "Repeat", "Input", "Sleep",
            "Parallel", "WaitForEvent"} <= seen
    for node in tree.subtree(root):
        held = [n for field in node.__slots__ if field != "notify"  # notify runs outside the cursor
                for n in _nodes_in(getattr(node, field))]
        assert all(any(h is c for c in node.children()) for h in held), (type(node).__name__, node.path)
    assert tree.declared_events(root) == ["inner", "ok"]


def test_a_leaf_holds_no_node():
    for node in tree.subtree(compiled(EVERYTHING)):
        if isinstance(node, leaves.Leaf):
            assert node.children() == () and node.child((0, None)) is None
            assert not [n for field in node.__slots__ for n in _nodes_in(getattr(node, field))]


@pytest.mark.parametrize("keyword", sorted(KEYWORDS))
def test_every_keyword_compiles_through_the_one_table_named_or_not(keyword: str):
    bodies = {"if": {"if": "true", "then": ["$(echo a)"]}, "unless": {"unless": "true", "then": ["$(echo a)"]},
              "case": {"case": "x", "when": {"x": ["$(echo a)"]}},
              "each": {"each": "{{ [1] }}", "as": "i", "steps": ["$(echo a)"]},
              "repeat": {"repeat": {"steps": ["$(echo a)"], "until": "true"}},
              "input": {"input": {"prompt": "?"}}, "wait_for_event": {"wait_for_event": {"go": ["$(echo a)"]}},
              "sleep": {"sleep": "1s"}}
    unnamed = compiled({"steps": [bodies[keyword]]}).steps[0]
    named = compiled({"steps": [{"mine": bodies[keyword]}]}).steps[0]
    assert type(unnamed) is type(named)
    assert named.name == "mine" and unnamed.name in (None, "")


NESTED = {"steps": [
    "$(echo a)",
    {"if": "true", "then": [{"each": "{{ ['x', 'y'] }}", "as": "item", "steps": [
        {"review": {"wait_for_event": {"ok": ["$(echo ok)"], "no": [{"wait_for_event": {"again": ["$(echo z)"]}}],
                                       "within": "1h", "timeout": ["$(echo t)"]}}}]}]},
    {"wait_for_event": {"later": ["$(echo l)"]}}]}
PARALLEL = {"steps": [
    [{"wait_for_event": {"a": ["$(echo a)"]}},
     [{"case": "x", "when": {"x": [{"wait_for_event": {"b": ["$(echo b)"]}}]}, "else": ["$(echo e)"]}],
     "$(echo done)"],
    {"repeat": {"steps": [{"wait_for_event": {"c": ["$(echo c)"]}}], "until": "true", "max_iterations": 3}}]}
SLEEP = {"steps": ["$(echo a)", {"nap": {"sleep": "2h"}}, {"wait_for_event": {"w": ["$(echo w)"]}}]}

# (workflow, events delivered, describe, the waits it rests on, events ahead, `retry --from` candidates)
WALKS = [
    (NESTED, [], "steps[1] › then › steps[1].then[0] › each item=x (1/2) › steps[1].then[0].steps[0] › review",
     ["steps[1].then[0].steps[0]"], {"again", "later", "no", "ok"},
     ["steps[0]", "steps[1]", "steps[1].then[0]", "steps[1].then[0].steps[0]"]),
    (NESTED, ["ok"], "steps[1] › then › steps[1].then[0] › each item=y (2/2) › steps[1].then[0].steps[0] › review",
     ["steps[1].then[0].steps[0]"], {"again", "later", "no", "ok"},
     ["steps[0]", "steps[1]", "steps[1].then[0]", "steps[1].then[0].steps[0]"]),
    (NESTED, ["ok", "ok"], "steps[2] › wait_for_event", ["steps[2]"], set(), ["steps[0]", "steps[1]", "steps[2]"]),
    (PARALLEL, [], "steps[0] › parallel([0] wait_for_event; [1] steps[0][1][0] › when x › "
                   "steps[0][1][0].when.x[0] › wait_for_event)",
     ["steps[0][0]", "steps[0][1][0].when.x[0]"], {"c"},
     ["steps[0]", "steps[0][0]", "steps[0][1]", "steps[0][1][0]", "steps[0][1][0].when.x[0]", "steps[0][2]"]),
    (PARALLEL, ["a"], "steps[0] › parallel([1] steps[0][1][0] › when x › steps[0][1][0].when.x[0] › wait_for_event)",
     ["steps[0][1][0].when.x[0]"], {"c"},
     ["steps[0]", "steps[0][0]", "steps[0][1]", "steps[0][1][0]", "steps[0][1][0].when.x[0]", "steps[0][2]"]),
    (PARALLEL, ["a", "b"], "steps[1] › repeat #1 › steps[1].steps[0] › wait_for_event", ["steps[1].steps[0]"], {"c"},
     ["steps[0]", "steps[1]", "steps[1].steps[0]"]),
    (SLEEP, [], "steps[1] nap › sleep", [], {"w"}, ["steps[0]", "steps[1]"]),
]


@pytest.mark.parametrize(("flow", "events", "described", "waits", "ahead", "way"), WALKS)
def test_the_walkers_read_a_cursor_reached_by_driving_the_tree(flow, events, described, waits, ahead, way):
    root = compiled(flow)
    cursor, ctx = cursor_after(root, events)
    assert tree.describe(root, cursor, ctx.collections) == described
    assert [w.path for w in tree.wait_at(root, cursor)] == waits
    assert tree.events_ahead(root, cursor) == ahead
    assert tree.on_the_way(root, cursor) == way
    for path in way:  # every step on the way rewinds to a cursor that starts at it
        again_cursor, again = tree.rewind(root, cursor, path)
        assert again[0].path == path and again_cursor != cursor
    assert tree.rewind(root, cursor, "steps[42]") is None


@pytest.mark.parametrize(("at", "described"), [(None, "start"), ((0, None), "steps[0]"), ((3, None), "end")])
def test_describe_names_the_start_and_the_end(at, described):
    assert tree.describe(compiled(SLEEP), at) == described


def test_a_cursor_that_no_longer_fits_an_edited_tree_says_so_in_the_signature():
    root = compiled({"steps": [{"if": "true", "then": ["$(echo a)"]}]})
    assert tree.signature(root, (0, ("nowhere", None)))[-1] == "steps[0]: <cursor does not resolve>"
    group = compiled({"steps": [["$(echo a)", "$(echo b)"]]})
    assert tree.signature(group, (0, (None,)))[-1] == "steps[0]: <branches changed>"
    assert tree.wait_at(group, (0, (None,))) == []


def test_output_names_and_event_schemas_walk_every_child():
    root = compiled({"steps": [{"each": "{{ [1] }}", "as": "i", "steps": [
        {"gate": {"wait_for_event": {"go": ["$(echo a)"], "schema": {"go": {"type": "object"}}}}}, {"x": "$(echo x)"}]}]})
    assert tree.output_names(root) == {"gate", "x"}
    assert list(tree.event_schemas(root)) == ["go"]


def test_timeout_event_is_the_one_shape_of_a_fired_timeout():
    assert timeout_event(1060.0) == {"deadline": "1970-01-01T00:17:40Z"}
    assert timeout_event(1060.0, "approved") == {"deadline": "1970-01-01T00:17:40Z", "refused_event": "approved"}
    assert timeout_event("1970-01-01T00:17:40Z") == {"deadline": "1970-01-01T00:17:40Z"}


def test_the_runner_delivers_a_passed_deadline_as_timeout_event():
    root = compiled({"steps": [{"wait_for_event": {"ok": ["$(echo ok)"], "timeout": ["$(echo late)"]}}]})
    ctx = Context(WorkflowInfo("t", "t.yml"))
    outcome = Runner(perform, now=lambda: 1060.0).drive(root.run(ctx, (0, (steps.AT_WAIT, 1060.0))))
    assert outcome == Completed()
    assert ctx.output["wait_for_event"]["data"] == timeout_event(1060.0)


def test_the_runner_refuses_a_request_it_does_not_know():
    def node() -> Any:
        yield object()

    with pytest.raises(TypeError, match="cannot perform object"):
        Runner(perform).drive(node())


def test_the_step_tree_modules_do_no_io():
    forbidden = {"subprocess", "os", "sqlite3", "time", "socket", "shutil", "pathlib", "open"}
    for module in ("requests", "steps", "leaves", "tree", "checks", "compiler"):
        parsed = ast.parse((ROAST / f"{module}.py").read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(parsed) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(parsed) if isinstance(n, ast.ImportFrom) and n.module}
        calls = {n.func.id for n in ast.walk(parsed) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not (imported | calls) & forbidden, f"roast/{module}.py touches {(imported | calls) & forbidden}"


def test_the_fields_of_requests_and_nodes_are_annotated_for_mypy():
    for module in (requests, steps, leaves):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Record) and value.__module__ == module.__name__:
                assert set(value.__slots__) <= set(value.__dict__.get("__annotations__", {})), value.__name__


def test_a_tree_pickled_before_the_split_still_loads():
    """A session that waited across the upgrade pickled its nodes as `roast.steps.<name>`."""
    import pickle

    assert pickle.loads(b"croast.steps\nCommand\n.") is leaves.Command
    assert pickle.loads(b"croast.steps\nWaitInfo\n.") is requests.WaitInfo
    for module, names in steps._MOVED.items():
        for name in names:
            assert getattr(steps, name) is getattr(leaves if module == "roast.leaves" else requests, name)
    with pytest.raises(AttributeError):
        steps.Nothing  # noqa: B018
