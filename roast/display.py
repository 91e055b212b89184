"""What people see: progress while steps run, the waiting notice, session tables and details.

rich is imported only when output goes to a terminal (STYLE: start-up is part of the product);
pipes, `NO_COLOR` and `--json` get plain text. Nothing here decides anything.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from roast.expressions import iso

if TYPE_CHECKING:
    from roast.api import Result
    from roast.store import EventRecord, Session, StepRecord

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]}
_CONTROL.update({0x1b: "\\e", 0x0d: "\\r"})


def visible(text: object) -> str:
    """User or event data as it may be shown: control characters (escape sequences, bells,
    carriage returns) made visible, so a value can never drive the terminal (issue 10)."""
    shown = str(text)
    if shown.isprintable():
        return shown
    return shown.translate(_CONTROL)


def markup_safe(text: object) -> str:
    """`visible()`, escaped for rich markup: `[/bold]` or `[link=…]` in data is shown, not parsed."""
    from rich.markup import escape

    return escape(visible(text))

STATUS_STYLE = {"waiting": "yellow", "running": "cyan", "completed": "green", "failed": "red",
                "timed_out": "magenta", "cancelled": "dim"}


def fancy(stream: IO[str]) -> bool:
    """Colour and live updates only on a terminal, and never with NO_COLOR (no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR") \
        and os.environ.get("TERM") != "dumb"


def console(stream: IO[str] | None = None, width: int | None = None) -> Any:
    from rich.console import Console

    stream = stream or sys.stdout
    return Console(file=stream, width=width, no_color=not fancy(stream), highlight=False,
                   soft_wrap=False)


class Progress:
    """Step progress on stderr: a rich status line on a terminal, plain lines elsewhere."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = fancy(self.stream) and not quiet
        self._status: Any = None

    def started(self, path: str, name: str | None, attempt: int) -> None:
        label = f"{path} {name}" if name else path
        if self.live:
            if self._status is None:
                from rich.console import Console

                self._status = Console(file=self.stream).status(label)
                self._status.start()
            self._status.update(f"[bold]{label}[/bold]" + (f" (attempt {attempt})" if attempt > 1 else ""))

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        if self.quiet:
            return
        mark = "✓" if status == "ok" else "✗"
        label = f"{path} {name}" if name else path
        line = f"{mark} {label} ({seconds:.1f}s)"
        if self.live and self._status is not None:
            self._status.console.print(f"[{'green' if status == 'ok' else 'red'}]{line}[/]")
        else:
            print(line, file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.live and self._status is not None:
            self._status.console.print(f"[yellow]note:[/] {message}")
        else:
            print(f"roast: note: {message}", file=self.stream, flush=True)

    def pause(self) -> None:
        """A prompt is about to ask something on the terminal: take the live line away (issue 11)."""
        if self._status is not None:
            self._status.stop()
            self._paused = True

    def unpause(self) -> None:
        if self._status is not None and getattr(self, "_paused", False):
            self._status.start()
            self._paused = False

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def resume_command(result: Result | Session, event: str) -> str:
    is_row = not hasattr(result, "session_id")
    workflow = result.workflow_path if is_row else result.workflow  # type: ignore[union-attr]
    sid = result.id if is_row else result.session_id  # type: ignore[union-attr]
    if workflow.startswith("<dict:"):
        return f"roast.resume({event!r}, session_id={sid!r})"
    try:
        shown = os.path.relpath(workflow)
        shown = workflow if shown.startswith("../..") else shown
    except ValueError:
        shown = workflow
    return f"roast resume {shlex.quote(shown)} --event {event} --session-id {sid}"


def waiting_notice(result: Result) -> str:
    """The lines printed (stderr) when a session pauses: id, events, deadline, how to continue."""
    lines = [f"⏸  session {result.session_id} is waiting for: {', '.join(result.awaiting)}"]
    if result.deadline:
        lines.append(f"   deadline: {result.deadline} ({_left(result.deadline)})")
    lines.append("   continue with:")
    for name in result.awaiting:
        lines.append(f"     {resume_command(result, name)}")
    if any(True for _ in result.awaiting):
        lines.append("   (add --event-data '{\"key\": \"value\"}' to pass data to the branch)")
    return "\n".join(lines)


def _left(deadline: str | float | None, now: float | None = None) -> str:
    if deadline is None:
        return ""
    from datetime import datetime

    ts = deadline if isinstance(deadline, (int, float)) else \
        datetime.fromisoformat(str(deadline).replace("Z", "+00:00")).timestamp()
    delta = ts - (now if now is not None else time.time())
    text = _span(abs(delta))
    return f"{text} left" if delta >= 0 else f"overdue by {text}"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def age(ts: float, now: float | None = None) -> str:
    return _span((now if now is not None else time.time()) - ts) + " ago"


def session_json(s: Session) -> dict[str, Any]:
    return {"session_id": s.id, "status": "orphaned" if s.orphaned else s.status, "workflow": s.workflow_path,
            "workflow_name": s.workflow_name, "target": s.target,
            "awaiting": s.events, "deadline": iso(s.deadline),
            "cursor": s.cursor, "created_at": iso(s.created_at), "updated_at": iso(s.updated_at),
            "finished_at": iso(s.finished_at), "output": s.output or {}, "error": s.error,
            "reason": s.reason}


COLUMNS = ("id", "workflow", "status", "where", "awaiting", "deadline", "age")


def _cells(s: Session, now: float | None) -> tuple[str, ...]:
    status = "orphaned" if s.orphaned else s.status
    deadline = _left(s.deadline, now) if s.status == "waiting" and s.deadline is not None else ""
    events = ", ".join(s.events)
    return (s.id, s.workflow_name, status, s.cursor or "", events, deadline, age(s.created_at, now))


def _footer(shown: int, total: int, all_shown: bool) -> str | None:
    if not all_shown and total > shown:
        return f"… and {total - shown:,} more (--all, or --limit N)"
    return None


def sessions_table(rows: Sequence[Session], total: int, *, now: float | None = None, all_shown: bool = False) -> Any:
    """A rich Table of sessions (render into any Console)."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, overflow="fold" if column == "where" else "ellipsis",
                         no_wrap=column not in ("where", "awaiting"), min_width=8 if column == "where" else None)
    for s in rows:
        cells = list(_cells(s, now))
        style = STATUS_STYLE.get(s.status, "")
        if style:
            cells[2] = f"[{style}]{cells[2]}[/]"
        table.add_row(*cells)
    table.caption = _footer(len(rows), total, all_shown)
    return table


def sessions_text(rows: Sequence[Session], total: int, *, now: float | None = None, all_shown: bool = False) -> str:
    """The same listing as aligned plain text, for pipes and NO_COLOR (no rich import: fast)."""
    table = [COLUMNS] + [_cells(s, now) for s in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    footer = _footer(len(rows), total, all_shown)
    return "\n".join(lines + ([footer] if footer else []))


def session_detail(s: Session, history: Sequence[StepRecord], events: Sequence[EventRecord]) -> str:
    """Everything about one session, as plain text (rich renders it unchanged)."""
    status = "orphaned (its process died)" if s.orphaned else s.status
    lines = [f"session   {s.id}", f"workflow  {s.workflow_name}  ({s.workflow_path})",
             f"target    {s.target or '-'}", f"status    {status}",
             f"created   {iso(s.created_at)}   updated {iso(s.updated_at)}"]
    if s.cursor:
        lines.append(f"cursor    {s.cursor}")
    if s.status == "waiting":
        for item in s.awaiting:
            lines.append(f"awaiting  {item['event']}  (wait {item['wait']} at {item['path']}"
                         + (f", deadline {iso(item['deadline'])} — {_left(item['deadline'])}" if item.get("deadline") else "")
                         + ")")
        lines.append("resume with:")
        for name in s.events:
            lines.append(f"  {resume_command(s, name)}")
    if s.error:
        lines.append(f"error     {s.error}")
    if s.reason:
        lines.append(f"reason    {s.reason}")
    if history:
        lines.append("steps:")
        for h in history:
            took = f"{h.finished_at - h.started_at:.2f}s" if h.finished_at and h.status != "interrupted" \
                else "interrupted"
            attempt = f" attempt {h.attempt}" if h.attempt > 1 else ""
            out = (h.output or "").replace("\n", " ")
            out = out[:60] + "…" if len(out) > 60 else out
            lines.append(f"  {iso(h.started_at)}  {h.status:<8} {h.path}"
                         f"{' ' + h.name if h.name else ''}{attempt}  {took}  {out}")
    if events:
        lines.append("events:")
        import json

        for e in events:  # every delivery that reached the session, and what became of it (issue 14)
            data = json.dumps(e.data, ensure_ascii=False)
            who = f" by {e.actor}" if e.actor else ""
            why = f" ({e.reason})" if e.reason else ""
            where = f" → {e.wait_path}" if e.wait_path and e.outcome == "consumed" else ""
            lines.append(visible(f"  {iso(e.received_at)}  {e.name}  {e.outcome}{where}  via {e.source}{who}{why}"
                                 f"  id {e.event_id or '-'}  {data[:80]}"))
    if s.final_output:
        lines.append("final output:")
        lines.extend("  " + line for line in s.final_output.splitlines())
    return "\n".join(lines)


class Listening:
    """`--wait`: a live line with the awaited events and the time left (plain lines off a terminal)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.progress = Progress(self.stream)
        self._last = ""
        self._status: Any = None

    def line(self, session: Session, now: float) -> str:
        if session.status == "waiting":
            events = ", ".join(session.events)
            left = f" — {_left(session.deadline, now)}" if session.deadline is not None else ""
            return f"session {session.id} waiting for {events}{left} (Ctrl-C leaves it waiting)"
        return f"session {session.id} is {session.status}"

    def update(self, session: Session, now: float) -> None:
        text = self.line(session, now)
        if fancy(self.stream):
            if self._status is None:
                from rich.console import Console

                self._status = Console(file=self.stream).status(text)
                self._status.start()
            self._status.update(text)
        elif text.split(" — ")[0] != self._last.split(" — ")[0]:
            print(f"roast: {text}", file=self.stream, flush=True)
        self._last = text

    def started(self, path: str, name: str | None, attempt: int) -> None:
        self.progress.started(path, name, attempt)

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        self.progress.finished(path, name, status, seconds)

    def note(self, message: str) -> None:
        self.progress.note(message)

    def pause(self) -> None:
        self.progress.pause()

    def unpause(self) -> None:
        self.progress.unpause()

    def stop(self) -> None:
        self.progress.stop()
        if self._status is not None:
            self._status.stop()
            self._status = None


def watch_frame(fetch: Any, *, all_shown: bool = False, now: float | None = None) -> Any:
    """One refresh of `roast sessions --watch` (tests drive this instead of sleeping)."""
    rows, total = fetch()
    from rich.console import Group
    from rich.text import Text

    stamp = iso(now if now is not None else time.time())
    return Group(sessions_table(rows, total, now=now, all_shown=all_shown),
                 Text(f"{stamp} · refreshing every second · Ctrl-C to exit", style="dim"))


def watch(fetch: Any, *, all_shown: bool = False, refresh: float = 1.0) -> None:
    from rich.live import Live

    try:
        with Live(watch_frame(fetch, all_shown=all_shown), console=console(), auto_refresh=False) as live:
            while True:
                time.sleep(refresh)
                live.update(watch_frame(fetch, all_shown=all_shown), refresh=True)
    except KeyboardInterrupt:
        pass
