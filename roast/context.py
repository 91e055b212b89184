"""The context: outputs, the latest event, loop variables, collections and the model transcript.

This is what gets pickled into a continuation, so it holds plain data only. The process
environment is attached for expressions (`{{ env.HOME }}`) but never pickled: secrets in the
environment must not end up in the session store.

A checkpoint saves only what changed since the previous one (issue 12): every change goes
through `record`, `set_output`, `append_output`, `set_event`, `set_collection`, `add_turns` or a
plain assignment into `output` (tracked), and `take_changes()` hands the runner's journal a small
dict that `apply()` replays on top of the last sealed context.
"""
from __future__ import annotations

from collections.abc import Mapping
TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)

from roast.expressions import DotDict, to_text, wrap
from roast.record import Record

if TYPE_CHECKING:
    from typing import Any

_REMOVED = "\x00roast:removed"  # a deleted output or collection in a change set


class WorkflowInfo(Record):
    """What `{{ workflow.* }}` shows: the workflow's name and file, the session and target."""

    __slots__ = ("name", "file", "session_id", "target")
    _defaults = {"session_id": "", "target": None}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "session_id": self.session_id, "target": self.target}


class Outputs(DotDict):
    """`output`: step outputs by name (attribute access, data keys first). Remembers which keys
    changed since the last `take()`, so a checkpoint writes only those (issue 12).

    The record of changes lives in a slot read through its descriptor, never as `self.…`: a step
    may be named like any attribute, and data keys win attribute lookups (SPEC §11)."""

    __slots__ = ("_changes",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _CHANGES.__set__(self, {})  # key -> -1 (set or removed) or how many items were appended

    def __reduce__(self) -> Any:
        return Outputs, (dict(self),)

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        _CHANGES.__get__(self)[key] = -1

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        _CHANGES.__get__(self)[key] = -1

    def pop(self, key: Any, *default: Any) -> Any:  # type: ignore[override]
        _CHANGES.__get__(self)[key] = -1
        return dict.pop(self, key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def clear(self) -> None:
        changed = _CHANGES.__get__(self)
        for key in list(self):
            changed[key] = -1
        dict.clear(self)

    def append(self, key: Any, value: Any) -> None:
        """Append to the list under `key` (created if missing): a checkpoint writes only the new item."""
        current = dict.get(self, key)
        if not isinstance(current, list):
            self[key] = [value]
            return
        current.append(value)
        changed = _CHANGES.__get__(self)
        if changed.get(key, 0) >= 0:
            changed[key] = changed.get(key, 0) + 1

    def take(self) -> dict[Any, Any]:
        changes: dict[Any, Any] = {}
        for key, mode in _CHANGES.__get__(self).items():
            if not dict.__contains__(self, key):
                changes[key] = _REMOVED
            elif mode < 0:
                value = dict.__getitem__(self, key)
                # a list is copied: `append` may grow it before this change set is written
                changes[key] = ("set", list(value) if isinstance(value, list) else value)
            else:
                changes[key] = ("append", dict.__getitem__(self, key)[-mode:])
        _CHANGES.__set__(self, {})
        return changes


_CHANGES: Any = Outputs.__dict__["_changes"]  # the slot's member descriptor


class Context:
    """Everything a step can read or write; mutated by the nodes, saved by the runner."""

    __slots__ = ("workflow", "output", "event", "event_name", "loop", "loop_index", "transcript", "printed",
                 "last", "last_printable", "collections", "delivery", "env", "_marks", "_base")

    def __init__(self, workflow: WorkflowInfo, output: Mapping[str, Any] | None = None) -> None:
        self.workflow = workflow
        self.output = Outputs(output or {})
        self.event: dict[str, Any] = {}
        self.event_name: str | None = None
        self.delivery: dict[str, Any] = {}   # who sent the latest event, why, its id (issue 14)
        self.loop: dict[str, Any] = {}
        self.loop_index: list[int] = []      # iteration of each enclosing loop
        self.transcript: list[dict[str, Any]] = []
        self.printed: list[str] = []
        self.last: Any = None
        self.last_printable = False
        self.collections: dict[str, list[Any]] = {}  # `each` collections as evaluated, by runtime path
        self.env: Mapping[str, str] = {}
        self._base: dict[str, Any] | None = None
        self._marks = self._now_marks()
        _CHANGES.__set__(self.output, {})

    def _now_marks(self) -> dict[str, Any]:
        return {"transcript": len(self.transcript), "printed": len(self.printed), "event": False,
                "last": False, "collections": {}}

    # -- pickling: the environment is never stored (SPEC §7)
    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if name not in ("env", "_marks", "_base")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, None)
        for name, value in state.items():
            if name in self.__slots__:
                object.__setattr__(self, name, value)
        if not isinstance(self.output, Outputs):  # saved by roast 0.1: a plain dict
            self.output = Outputs(self.output or {})
        _CHANGES.__set__(self.output, {})
        for name, empty in (("event", dict), ("loop", dict), ("loop_index", list), ("transcript", list),
                            ("printed", list), ("collections", dict), ("delivery", dict)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, empty())
        self.last_printable = bool(self.last_printable)
        self.env = {}
        self._base = None
        self._marks = self._now_marks()

    # -- what expressions see
    def namespace(self) -> dict[str, Any]:
        """The names a `{{ }}` expression sees (SPEC §4)."""
        if self._base is None:
            info = self.workflow.as_dict()
            self._base = {"workflow": DotDict(info), "target": self.workflow.target,
                          "file": self.workflow.target, "env": DotDict(self.env)}
        ns: dict[str, Any] = dict(self._base)
        ns["output"] = self.output
        ns["event"] = DotDict(self.event)
        ns["event_name"] = self.event_name
        ns["delivery"] = DotDict(self.delivery)
        for key, value in self.loop.items():
            ns[key] = wrap(value)
        return ns

    def attach_env(self, env: Mapping[str, str]) -> None:
        self.env = env
        self._base = None

    # -- changes
    def record(self, name: str | None, value: Any, *, print_response: bool | None = None) -> None:
        """Store a step's output under its name and remember it as the latest output."""
        if name:
            self.output[name] = value
        self.last = value
        self.last_printable = print_response is not False
        self._marks["last"] = True
        if print_response:
            self.printed.append(to_text(value))

    def set_output(self, name: str, value: Any) -> None:
        self.output[name] = value

    def append_output(self, name: str, value: Any) -> None:
        Outputs.append(self.output, name, value)

    def set_event(self, name: str | None, data: Mapping[str, Any], delivery: Mapping[str, Any] | None = None) -> None:
        self.event, self.event_name = dict(data), name
        self.delivery = dict(delivery or {})
        self._marks["event"] = True

    def set_collection(self, key: str, items: list[Any] | None) -> None:
        """Keep (or, with None, drop) an `each` collection as it was evaluated."""
        if items is None:
            self.collections.pop(key, None)
        else:
            self.collections[key] = items
        self._marks["collections"][key] = True

    def add_turns(self, *turns: Mapping[str, Any]) -> None:
        self.transcript.extend(dict(t) for t in turns)

    def take_changes(self) -> dict[str, Any]:
        """What changed since the last call (or since the context was sealed or loaded)."""
        marks = self._marks
        changes: dict[str, Any] = {}
        if _CHANGES.__get__(self.output):
            changes["output"] = Outputs.take(self.output)
        if len(self.transcript) != marks["transcript"]:
            changes["transcript"] = ((marks["transcript"], self.transcript[marks["transcript"]:])
                                     if len(self.transcript) > marks["transcript"] else (0, list(self.transcript)))
        if len(self.printed) != marks["printed"]:
            changes["printed"] = ((marks["printed"], self.printed[marks["printed"]:])
                                  if len(self.printed) > marks["printed"] else (0, list(self.printed)))
        if marks["event"]:
            changes["event"] = (self.event_name, self.event, self.delivery)
        if marks["last"]:
            changes["last"] = (self.last, self.last_printable)
        if marks["collections"]:
            changes["collections"] = {k: self.collections.get(k, _REMOVED) for k in marks["collections"]}
        self._marks = self._now_marks()
        return changes

    def forget_changes(self) -> None:
        """The whole context was just sealed: nothing is pending."""
        _CHANGES.__set__(self.output, {})
        self._marks = self._now_marks()

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Replay `take_changes()` output (recovery: the sealed context plus each delta, in order)."""
        for key, change in changes.get("output", {}).items():
            if change == _REMOVED:
                dict.pop(self.output, key, None)
            elif change[0] == "set":
                dict.__setitem__(self.output, key, change[1])
            else:
                current = dict.get(self.output, key)
                dict.__setitem__(self.output, key, (current if isinstance(current, list) else []) + list(change[1]))
        for name in ("transcript", "printed"):
            if name in changes:
                start, items = changes[name]
                setattr(self, name, getattr(self, name)[:start] + list(items))
        if "event" in changes:
            self.event_name, self.event, self.delivery = changes["event"][0], dict(changes["event"][1]), \
                dict(changes["event"][2])
        if "last" in changes:
            self.last, self.last_printable = changes["last"]
        for key, items in changes.get("collections", {}).items():
            if items == _REMOVED:
                self.collections.pop(key, None)
            else:
                self.collections[key] = items
        self.forget_changes()

    @staticmethod
    def merge_changes(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
        """One change set equal to applying `first`, then `then` (checkpoints not yet written)."""
        out = dict(first)
        for name, change in then.items():
            if name == "output":
                merged = dict(first.get("output", {}))
                for key, item in change.items():
                    prev = merged.get(key)
                    if item != _REMOVED and item[0] == "append" and prev is not None and prev != _REMOVED:
                        merged[key] = (prev[0], list(prev[1]) + list(item[1]))
                    else:
                        merged[key] = item
                out["output"] = merged
            elif name in ("transcript", "printed") and name in first:
                start, items = first[name]
                later_start, later_items = change
                if later_start == start + len(items):
                    out[name] = (start, list(items) + list(later_items))
                elif later_start >= start:
                    out[name] = (start, list(items)[:later_start - start] + list(later_items))
                else:
                    out[name] = change
            elif name == "collections":
                out["collections"] = {**first.get("collections", {}), **change}
            else:
                out[name] = change
        return out

    def branch(self) -> BranchContext:
        """A parallel branch's view of this context (see `BranchContext`)."""
        return BranchContext(self)

    def final_output(self) -> str:
        """What the workflow prints at the end: steps marked `print_response: true`, then the last step."""
        pieces = list(self.printed)
        if self.last_printable and self.last is not None:
            last = to_text(self.last)
            if not pieces or pieces[-1] != last:
                pieces.append(last)
        return "\n\n".join(p for p in pieces if p != "")


class BranchContext:
    """A parallel branch's view of the group's context.

    Outputs, the latest event, the transcript, collections and the final output are shared with
    the whole workflow (Roast's parallel steps share state); loop variables and loop positions are
    the branch's own, so an `each` in one branch never sees another branch's `{{ item }}`. It is
    never pickled: on resume each branch's loops set their variables again from the cursor.
    """

    __slots__ = ("_parent", "loop", "loop_index")

    def __init__(self, parent: Context | BranchContext) -> None:
        object.__setattr__(self, "_parent", parent)
        object.__setattr__(self, "loop", dict(parent.loop))
        object.__setattr__(self, "loop_index", list(parent.loop_index))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parent, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in BranchContext.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self._parent, name, value)

    def namespace(self) -> dict[str, Any]:
        ns = self._parent.namespace()
        for key, value in self.loop.items():
            ns[key] = wrap(value)
        return ns

    def record(self, name: str | None, value: Any, *, print_response: bool | None = None) -> None:
        self._parent.record(name, value, print_response=print_response)

    def branch(self) -> BranchContext:
        return BranchContext(self)

    def __reduce__(self) -> Any:
        raise TypeError("a parallel branch's context is not saved; the group's context is")


class NotifyContext(BranchContext):
    """What `notify:` steps see (issue 14): the session's context, plus `wait` (the saved wait's
    session id, events, deadline, resume commands and links). Their outputs are their own: the
    session was already saved, and notifying changes nothing in it."""

    __slots__ = ("wait", "own")

    def __init__(self, parent: Context, wait: Mapping[str, Any]) -> None:
        super().__init__(parent)
        object.__setattr__(self, "wait", dict(wait))
        object.__setattr__(self, "own", {})

    def namespace(self) -> dict[str, Any]:
        ns = super().namespace()
        ns["wait"] = DotDict(self.wait)
        ns["output"] = DotDict({**dict(self._parent.output), **self.own})
        return ns

    def record(self, name: str | None, value: Any, *, print_response: bool | None = None) -> None:
        if name:
            self.own[name] = value

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("loop", "loop_index", "wait", "own"):
            object.__setattr__(self, name, value)
        # anything else a notify step would change in the session is dropped (it is already saved)
