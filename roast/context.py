"""The context: outputs, the latest event, loop variables and the model transcript.

This is what gets pickled into a continuation, so it holds plain data only. The process
environment is attached for expressions (`{{ env.HOME }}`) but never pickled: secrets in the
environment must not end up in the session store.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from roast.expressions import DotDict, wrap


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """What `{{ workflow.* }}` shows: the workflow's name and file, the session and target."""

    name: str
    file: str
    session_id: str = ""
    target: str | None = None


@dataclass(slots=True)
class Context:
    """Everything a step can read or write; mutated by the nodes, saved by the runner."""

    workflow: WorkflowInfo
    output: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)
    event_name: str | None = None
    loop: dict[str, Any] = field(default_factory=dict)
    loop_index: list[int] = field(default_factory=list)  # iteration of each enclosing loop
    transcript: list[dict[str, str]] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)
    last: Any = None
    last_printable: bool = False
    env: Mapping[str, str] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        # SPEC §7: the continuation is data; the environment (tokens, keys) is never stored.
        return {name: getattr(self, name) for name in self.__slots__ if name != "env"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, state.get(name, {} if name == "env" else None))
        if self.env is None:
            self.env = {}

    def namespace(self) -> dict[str, Any]:
        """The names a `{{ }}` expression sees (SPEC §4)."""
        ns: dict[str, Any] = {
            "output": DotDict(self.output),
            "event": DotDict(self.event),
            "event_name": self.event_name,
            "workflow": DotDict(asdict(self.workflow)),
            "target": self.workflow.target,
            "file": self.workflow.target,
            "env": DotDict(self.env),
        }
        ns.update({k: wrap(v) for k, v in self.loop.items()})
        return ns

    def record(self, name: str | None, value: Any, *, print_response: bool | None = None) -> None:
        """Store a step's output under its name and remember it as the latest output."""
        if name:
            self.output[name] = value
        self.last = value
        self.last_printable = print_response is not False
        if print_response:
            from roast.expressions import to_text

            self.printed.append(to_text(value))

    def branch(self) -> BranchContext:
        """A parallel branch's view of this context (see `BranchContext`)."""
        return BranchContext(self)

    def final_output(self) -> str:
        """What the workflow prints at the end: steps marked `print_response: true`, then the last step."""
        from roast.expressions import to_text

        pieces = list(self.printed)
        if self.last_printable and self.last is not None:
            last = to_text(self.last)
            if not pieces or pieces[-1] != last:
                pieces.append(last)
        return "\n\n".join(p for p in pieces if p != "")


class BranchContext:
    """A parallel branch's view of the group's context.

    Outputs, the latest event, the transcript and the final output are shared with the whole
    workflow (Roast's parallel steps share state); loop variables and loop positions are the
    branch's own, so an `each` in one branch never sees another branch's `{{ item }}`. It is never
    pickled: on resume each branch's loops set their variables again from the cursor.
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
        ns.update({k: wrap(v) for k, v in self.loop.items()})
        return ns

    def record(self, name: str | None, value: Any, *, print_response: bool | None = None) -> None:
        self._parent.record(name, value, print_response=print_response)

    def branch(self) -> BranchContext:
        return BranchContext(self)

    def __reduce__(self) -> Any:
        raise TypeError("a parallel branch's context is not saved; the group's context is")
