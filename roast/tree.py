"""Walkers over the step tree: what a cursor means (describe, signature, wait_at, rewind,
events_ahead) and what a tree holds (subtree, all_waits, declared_events, event_schemas,
output_names).

A walker sees a node's subtree only through `children()` and where a cursor points only through
`child()`, so a new node needs no line here. Three shapes are told apart because their cursors
differ: a steps list (`Sequence`: earlier siblings, the end), a parallel group (its cursor points
into every branch at once: `Parallel.branches_at`) and a wait (`WaitForEvent`, the only node that
takes events); a wait's, a sleep's and a retry's own levels (`AT_WAIT`, `AT_SLEEP`, `AT_RETRY`) end
a cursor. Performs no I/O.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.steps import (AT_RETRY, AT_SLEEP, AT_WAIT, DONE, HERE, Parallel, Sequence, WaitForEvent,
                         cursor_level)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from roast.requests import Cursor
    from roast.steps import Position


def subtree(node: Any) -> Iterable[Any]:
    """`node` and every node below it, in step order."""
    yield node
    for child in node.children():
        yield from subtree(child)


def all_waits(node: Any) -> Iterable[WaitForEvent]:
    """Every wait in the tree (for `roast validate` and for the events a workflow declares)."""
    return (each for each in subtree(node) if isinstance(each, WaitForEvent))


def declared_events(node: Any) -> list[str]:
    """Every event name some wait of the tree declares, each once, in step order."""
    return list(dict.fromkeys(name for wait in all_waits(node) for name in wait.events))


def _all_events(node: Any, take: Callable[[WaitForEvent], bool] | None = None) -> set[str]:
    return {name for wait in all_waits(node) if take is None or take(wait) for name in wait.events}


def event_schemas(node: Any) -> dict[str, list[str]]:
    """Every JSON Schema a wait declares, by event name (a queued event must match them all)."""
    out: dict[str, list[str]] = {}
    for wait in all_waits(node):
        for event, text in getattr(wait, "schemas", ()) or ():
            out.setdefault(event, []).append(text)
    return out


def output_names(node: Any) -> set[str]:
    """The output names the steps of `node`'s subtree record (an unnamed wait records `wait_for_event`)."""
    names = set()
    for each in subtree(node):
        if isinstance(each, WaitForEvent):
            names.add(each.name or "wait_for_event")
        elif getattr(each, "name", None):
            names.add(each.name)
    return names


def _at_own_level(at: Cursor, *marks: str) -> bool:
    """Whether `at` is a node's own resting level (a wait, a sleep, a retry), not a child's."""
    return isinstance(at, tuple) and bool(at) and at[0] in marks


def _safe_child(node: Any, at: Cursor, trail: tuple[int, ...] = (),
                collections: Mapping[str, Any] | None = None) -> Position | None:
    """`node.child(at)`, or None when the cursor's shape does not fit the node (an edited workflow)."""
    try:
        return node.child(at, trail, collections)  # type: ignore[no-any-return]
    except (TypeError, ValueError, IndexError):
        return None


def describe(node: Any, at: Cursor, collections: Mapping[str, Any] | None = None) -> str:
    """A readable cursor: `steps[2] review › each item=b.py (2/3) › wait_for_event`."""
    parts: list[str] = []
    _describe(node, at, parts, (), collections)
    return " › ".join(parts) if parts else "start"


def _describe(node: Any, at: Cursor, parts: list[str], trail: tuple[int, ...],
              collections: Mapping[str, Any] | None) -> None:
    if at is HERE:
        return
    if isinstance(node, Parallel):
        inner = []
        for branch, child_at, label, _ in node.branches_at(at, trail):
            sub: list[str] = []
            _describe(branch, child_at, sub, trail, collections)
            inner.append(label + (" " + " › ".join(sub) if sub else ""))
        parts.append("parallel(" + "; ".join(inner) + ")")
        return
    if _at_own_level(at, AT_WAIT):
        parts.append(getattr(node, "name", None) or "wait_for_event")
        return
    if isinstance(at, tuple) and _at_own_level(at, AT_RETRY):
        parts.append(f"retry (attempt {at[1] + 1})")
        return
    if _at_own_level(at, AT_SLEEP):
        parts.append("sleep")
        return
    found = node.child(at, trail, collections)
    if found is None:
        if isinstance(node, Sequence) and isinstance(at, tuple) and at[0] >= len(node.steps):
            parts.append("end")
        return
    child, child_at, label, child_trail = found
    parts.append(label)
    _describe(child, child_at, parts, child_trail, collections)


def signature(node: Any, at: Cursor) -> list[str]:
    """What must not change for `at` to mean the same place: each level's earlier siblings and the node on the path."""
    out: list[str] = []
    _signature(node, at, out)
    return out


def _signature(node: Any, at: Cursor, out: list[str]) -> None:
    if at is HERE:
        return
    if isinstance(node, Sequence):
        index, child_at = cursor_level(at)
        # a step the cursor is about to start (`(index, HERE)`: after a crash, or a failed step that
        # `roast retry` runs again) may be edited: it runs from its start, as it now reads (issue 16)
        shown = node.steps[: index + (0 if child_at is HERE else 1)]
        out.append(f"{node.path}: " + " | ".join(f"{type(s).__name__}({s.ident})" for s in shown)
                   + (" | <missing>" if index >= len(node.steps) and child_at is not HERE else ""))
        if index < len(node.steps):
            _signature(node.steps[index], child_at, out)
        return
    if isinstance(node, Parallel):
        out.append(f"{node.path}: {node.ident}")
        if node.fits(at):
            for branch, child_at, _, _ in node.branches_at(at):
                _signature(branch, child_at, out)
        else:
            out.append(f"{node.path}: <branches changed>")
        return
    if isinstance(node, WaitForEvent):
        out.append(f"{node.path}: wait {node.ident}")
    else:
        out.append(f"{node.path}: {type(node).__name__}({node.ident})")
    found = _safe_child(node, at)
    if found is not None:
        _signature(found[0], found[1], out)
    elif node.children() and not _at_own_level(at, AT_WAIT):
        out.append(f"{node.path}: <cursor does not resolve>")


def wait_at(node: Any, at: Cursor) -> list[WaitForEvent]:
    """The wait nodes the cursor rests on (several inside parallel groups)."""
    if at is HERE:
        return []
    if isinstance(node, Parallel):
        return [w for b, c, _, _ in node.branches_at(at) for w in wait_at(b, c)] if node.fits(at) else []
    if _at_own_level(at, AT_WAIT) and isinstance(node, WaitForEvent):
        return [node]
    found = _safe_child(node, at)
    return wait_at(found[0], found[1]) if found else []


def rewind(node: Any, at: Cursor, target: str) -> tuple[Cursor, list[Any]] | None:
    """`at` moved back to the start of the step at static path `target`, which must lie on the way
    to `at` (an earlier step of a list the cursor is in, or a step the cursor is inside), with the
    steps that then run again (their outputs are dropped; `roast retry --from`, issue 16). None
    when `target` is not on the way."""
    if isinstance(node, Parallel):
        if not node.fits(at):
            return None
        assert isinstance(at, tuple)
        for i, (branch, child_at) in enumerate(zip(node.branches, at)):
            if branch.path == target:
                return at[:i] + (HERE,) + at[i + 1:], [branch]
            if child_at == DONE:
                if not isinstance(branch, Sequence):
                    continue
                child_at = (len(branch.steps), HERE)  # a finished branch: every step of it ran
            found = rewind(branch, child_at, target)
            if found is not None:
                return at[:i] + (found[0],) + at[i + 1:], found[1]
        return None
    if at is HERE or not isinstance(at, tuple):
        return None
    if isinstance(node, Sequence):  # an earlier step of the list, or one inside the current one
        index, child_at = cursor_level(at)
        if not isinstance(index, int):
            return None
        for j in range(min(index, len(node.steps) - 1) + 1):
            if node.steps[j].path == target:
                return (j, HERE), list(node.steps[j:index + 1])
        if index < len(node.steps):
            found = rewind(node.steps[index], child_at, target)
            if found is not None:
                return (index, found[0]), found[1]
        return None
    child = _safe_child(node, at)
    if child is None:
        return None
    found = rewind(child[0], child[1], target)
    if found is None:
        return None
    return at[:-1] + (found[0],), found[1]


def on_the_way(node: Any, at: Cursor) -> list[str]:
    """The static paths `rewind` accepts for `at` (for the hint of a refused `--from`), in step order."""
    return [each.path for each in subtree(node) if each is not node and rewind(node, at, each.path) is not None]


def events_ahead(node: Any, at: Cursor, take: Callable[[WaitForEvent], bool] | None = None) -> set[str]:
    """The events some wait could still take after `at`, not counting the waits `at` rests on
    (they are the session's `awaiting`): an event for one of them is kept, not refused (issue 14).
    A loop around the position counts whole: its next pass may reach any wait in it again. `take`:
    only the waits it accepts count (the ones that take a queued event, issue 23)."""
    if at is HERE:
        return _all_events(node, take)
    if isinstance(node, Parallel):
        if not node.fits(at):
            return _all_events(node, take)
        return {e for b, c, _, _ in node.branches_at(at) for e in events_ahead(b, c, take)}
    if _at_own_level(at, AT_WAIT):  # resting on a wait: any of its branches may still run
        return {e for body in node.children() for e in _all_events(body, take)}
    if isinstance(node, Sequence):
        index, child_at = cursor_level(at)
        out: set[str] = set()
        if isinstance(index, int) and index < len(node.steps):
            out |= events_ahead(node.steps[index], child_at, take)
            for later in node.steps[index + 1:]:
                out |= _all_events(later, take)
        return out
    found = _safe_child(node, at)
    if found is None:
        return set()
    ahead = events_ahead(found[0], found[1], take)
    if getattr(node, "repeats", False):
        ahead |= _all_events(node, take)
    return ahead
