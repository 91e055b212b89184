"""What people see: progress while steps run, the waiting notice, session tables and details.

rich is imported only when output goes to a terminal (STYLE: start-up is part of the product);
pipes, `NO_COLOR` and `--json` get plain text. Nothing here decides anything.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from roast.views import COUNT_CAP, ONLY_GATES_AHEAD, iso, quorum_of, quorum_words

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import IO, Any

    from roast.views import Result
    from roast.api import EventRecord, Session, StepRecord

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]}
_CONTROL.update({0x1b: "\\e", 0x0d: "\\r"})
# Bidirectional controls reorder what follows them (`txt.\u202egpj.exe` shows as `txt.exe.jpg`): visible too (issue 21)
_CONTROL.update({c: f"\\u{c:04x}" for c in (0x061c, 0x200e, 0x200f, *range(0x202a, 0x202f), *range(0x2066, 0x206a))})


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
                "timed_out": "magenta", "cancelled": "dim", "interrupted": "red", "moved": "blue"}


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
        self._paused = False
        self._swapped: IO[str] | None = None

    def started(self, path: str, name: str | None, attempt: int) -> None:
        if self.live:  # (markup_safe imports rich: only for the live line)
            label = markup_safe(f"{path} {name}" if name else path)
            text = f"[bold]{label}[/bold]" + (f" (attempt {attempt})" if attempt > 1 else "")
            if self._status is None:
                from rich.console import Console

                self._status = Console(file=self.stream, highlight=False).status(text)
                if not self._paused:
                    self._status.start()
            self._status.update(text)

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        if self.quiet:
            return
        mark = "✓" if status == "ok" else "✗"
        label = f"{path} {name}" if name else path
        if self.live and self._status is not None:
            colour = "green" if status == "ok" else "red"
            self._status.console.print(f"[{colour}]{mark} {markup_safe(label)} ({seconds:.1f}s)[/]")
        else:
            print(f"{mark} {visible(label)} ({seconds:.1f}s)", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.live and self._status is not None:
            self._status.console.print(f"[yellow]note:[/] {markup_safe(message)}")
        else:
            print(f"roast: note: {visible(message)}", file=self.stream, flush=True)

    def pause(self) -> None:
        """A prompt is about to ask something on the terminal: take the live line away, and leave
        the cursor at the start of an empty line, so the question is not drawn over and typed
        answers are not glued to a spinner (issue 11)."""
        self._paused = True
        if self._status is not None:
            self._status.stop()  # the status is transient: stopping erases its line
        self.stream.flush()
        if self.live and _is_tty(sys.stdin) and not _is_tty(sys.stdout) and self._swapped is None:
            # `roast execute wf > out.txt`: input() writes its question to stdout, which is the
            # file; while the prompt asks, stdout is the terminal's stderr, so the question is seen
            # there (and not mixed into the results), as rich's live display redirects it too
            self._swapped, sys.stdout = sys.stdout, self.stream

    def unpause(self) -> None:
        self._paused = False
        if self._swapped is not None:
            sys.stdout, self._swapped = self._swapped, None
        if self._status is not None:
            self._status.start()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _is_tty(stream: IO[str] | None) -> bool:
    return bool(stream is not None and getattr(stream, "isatty", lambda: False)())


def resume_command(result: Result | Session, event: str) -> str:
    is_row = not hasattr(result, "session_id")
    workflow = result.workflow_path if is_row else result.workflow  # type: ignore[union-attr]
    sid = result.id if is_row else result.session_id  # type: ignore[union-attr]
    if workflow.startswith("<dict:"):
        return f"roast.resume({event!r}, session_id={sid!r})"
    # by session id: the command works from any directory, another terminal or cron (issue 24);
    # shown, not run: a control character in a name is made visible (issue 10 §4)
    from shlex import quote

    return visible(f"roast resume -s {sid} -e {quote(event)}")


def waiting_notice(result: Result, links: Mapping[str, str] | None = None, page: str | None = None,
                   pages: Mapping[str, str] | None = None) -> str:
    """The lines printed (stderr) when a session pauses: id, events, deadline, how to continue
    (and each event's signed approval link, when ROAST_PUBLIC_URL makes them; `pages`: the personal
    page of each approver the wait names, issue 23)."""
    pauses = [w for w in result.waits if not w.get("event")]
    if pauses and not result.awaiting:  # a `sleep:` or a retry's backoff (issue 16)
        first = pauses[0]
        what = (f"will retry {first.get('path')} ({first.get('wait')}) at" if first.get("kind") == "retry"
                else f"is sleeping (at {first.get('path')}) until")
        return "\n".join([f"⏸  session {result.session_id} {visible(what)} {result.deadline} "
                          f"({_left(result.deadline)})",
                          "   it continues then under `roast tick` (cron, a systemd timer) or `roast serve`; or stay "
                          f"with it: roast resume -s {result.session_id} --wait"])
    lines = [f"⏸  session {result.session_id} is waiting for: {visible(', '.join(result.awaiting))}"]
    if result.deadline:
        lines.append(f"   deadline: {result.deadline} ({_left(result.deadline)})")
    lines.append("   continue with:")
    for name in result.awaiting:
        lines.append(f"     {resume_command(result, name)}")
    if any(True for _ in result.awaiting):
        lines.append("   (add --event-data '{\"key\": \"value\"}' to pass data to the branch)")
    if page:  # issue 22: one page for the whole wait, every event its own button
        lines.append(f"   or open its page: {visible(page)}")
    lines.extend(personal_pages(pages or {}, "   "))
    if links:
        lines.append("   or open an approval link:")
        lines.extend(f"     {name}: {visible(url)}" for name, url in links.items())
    return "\n".join(lines)


def personal_pages(pages: Mapping[str, str], indent: str) -> list[str]:
    """The personal page of each approver (issue 23): send each person their own; it decides as them."""
    if not pages:
        return []
    return [f"{indent}each approver's own page (send it to them only: it decides as that person):",
            *(f"{indent}  {visible(person)}: {visible(url)}" for person, url in pages.items())]


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


COLUMNS = ("id", "workflow", "status", "outcome", "where", "awaiting", "deadline", "age")


def _cells(s: Session, now: float | None) -> tuple[str, ...]:
    """One row, as plain text safe to show: the cursor carries event data (an `each` item) and the
    names come from files, so every value goes through `visible()` (issue 10 §4)."""
    status = "orphaned" if s.orphaned else s.status
    deadline = _left(s.deadline, now) if s.status == "waiting" and s.deadline is not None else ""
    return (short_id(s.id), visible(s.workflow_name), status, visible(s.decided or ""), visible(s.cursor or ""),
            visible(awaiting_text(s)), deadline, age(s.created_at, now))


def awaiting_text(s: Session) -> str:
    """What a session waits for: its events, `sleeping until …`, a retry's next attempt (issue 16),
    or, for a failed session, the command that retries it."""
    if s.status == "failed":
        return f"roast retry {short_id(s.id)}"
    if s.status == "interrupted":  # issue 20: nothing continues it until asked
        return f"roast resume -s {short_id(s.id)}"
    if s.status != "waiting":
        return ""
    parts = list(s.events)
    for item in s.awaiting:
        if item.get("event"):
            continue
        when = iso(item.get("deadline")) or "?"
        if item.get("kind") == "retry":
            parts.append(f"retry of {item.get('path')} ({item.get('wait')}) at {when}")
        else:
            parts.append(f"sleeping until {when}")
    return ", ".join(parts)


def short_id(session_id: str) -> str:
    """How listings show an id (issue 11); JSON and `roast session` keep all of it, and any unique
    prefix of 4+ characters is accepted back."""
    from roast.api import short_id as short

    return short(session_id)


OPEN = ("running", "waiting", "interrupted")


def _footer(rows: Sequence[Session], total: int, all_shown: bool,
            open_total: int | None = None) -> str | None:
    """What the page leaves out. Open sessions are listed first (issue 11), so what is cut is
    mostly finished sessions: say how many, and how to see them."""
    hidden = total - len(rows)
    if all_shown or hidden <= 0:
        return None
    if total > COUNT_CAP:
        return _capped_footer(rows, open_total)
    how = f"--all lists all {total:,}, or --limit N"
    if open_total is None:
        return f"… and {hidden:,} more ({how})"
    hidden_open = max(0, min(hidden, open_total - sum(1 for s in rows if s.status in OPEN)))
    hidden_done = hidden - hidden_open
    if not hidden_open:
        what = f"finished session{'s' if hidden_done != 1 else ''}"
        return f"… and {hidden_done:,} more {what}, not shown ({how})"
    if not hidden_done:
        return f"… and {hidden_open:,} more open session{'s' if hidden_open != 1 else ''}, not shown ({how})"
    return f"… and {hidden:,} more not shown: {hidden_open:,} open, {hidden_done:,} finished ({how})"


def _capped_footer(rows: Sequence[Session], open_total: int | None) -> str:
    """The footer when the count stopped at COUNT_CAP (issue 25): "100+" instead of a number."""
    how = "--all lists them all, or --limit N"
    many = f"{COUNT_CAP:,}+"
    if open_total is None or open_total > COUNT_CAP:
        return f"… and more not shown: {many} sessions match ({how})"
    hidden_open = max(0, open_total - sum(1 for s in rows if s.status in OPEN))
    if not hidden_open:
        return f"… and more finished sessions, not shown: {many} sessions match ({how})"
    return f"… and more not shown: {hidden_open:,} open and the finished ones, {many} sessions match ({how})"


def sessions_table(rows: Sequence[Session], total: int, *, now: float | None = None, all_shown: bool = False,
                   open_total: int | None = None) -> Any:
    """A rich Table of sessions (render into any Console). Cells are `Text`, never markup: a
    cursor such as `each item=[/bold]x` is shown as it is (issue 10 §4)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, overflow="fold" if column == "where" else "ellipsis",
                         no_wrap=column not in ("where", "awaiting"),
                         min_width=8 if column == "where" else None)
    for s in rows:
        cells = [Text(cell) for cell in _cells(s, now)]
        cells[2].stylize(STATUS_STYLE.get(s.status, ""))
        table.add_row(*cells)
    footer = _footer(rows, total, all_shown, open_total)
    table.caption = Text(footer) if footer else None
    return table


def sessions_text(rows: Sequence[Session], total: int, *, now: float | None = None, all_shown: bool = False,
                  open_total: int | None = None) -> str:
    """The same listing as aligned plain text, for pipes and NO_COLOR (no rich import: fast)."""
    table = [COLUMNS] + [_cells(s, now) for s in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    footer = _footer(rows, total, all_shown, open_total)
    return "\n".join(lines + ([footer] if footer else []))


def session_detail(s: Session, history: Sequence[StepRecord], events: Sequence[EventRecord],
                   links: Mapping[str, str] | None = None) -> str:
    """Everything about one session, as plain text (rich renders it unchanged)."""
    status = "orphaned (its process died)" if s.orphaned else s.status
    lines = [f"session   {s.id}", f"workflow  {s.workflow_name}  ({s.workflow_path})",
             f"target    {s.target or '-'}", f"status    {status}",
             f"created   {iso(s.created_at)}   updated {iso(s.updated_at)}"]
    if s.cursor:
        lines.append(f"cursor    {s.cursor}")
    if s.status == "waiting":
        for item in s.awaiting:
            deadline = item.get("deadline")
            due = f", deadline {iso(deadline)} — {_left(deadline)}" if deadline else ""
            if item.get("event"):
                lines.append(f"awaiting  {item['event']}  (wait {item['wait']} at {item['path']}{due})")
                counted = quorum_words(quorum_of(s, item, events))  # issue 23: the gate's quorum so far
                if counted:
                    lines.append(f"          {visible(counted)}")
            elif item.get("kind") == "retry":
                lines.append(f"awaiting  retry of {item['path']} ({item.get('wait')}) at {iso(deadline)} — "
                             f"{_left(deadline)}")
            else:
                lines.append(f"sleeping  until {iso(deadline)} — {_left(deadline)} (at {item['path']})")
        if s.events:
            lines.append("resume with:")
            for name in s.events:
                lines.append(f"  {resume_command(s, name)}")
        if links:
            lines.append("approval links:")
            lines.extend(f"  {name}: {url}" for name, url in links.items())
        if any(not item.get("event") for item in s.awaiting):
            lines.append("it continues at the deadline under `roast tick` (cron), `roast serve`, or "
                         f"`roast resume -s {s.id} --wait`")
    if s.error:
        lines.append(f"error     {s.error}")
    if s.status == "failed":
        lines.append(f"retry     roast retry {s.id}   (runs the failed step again; --from STEP_PATH starts "
                     "earlier)")
    if s.status == "interrupted":  # issue 20: stopped by a person; neither serve nor tick continues it
        lines.append(f"continue  roast resume -s {s.id}   (or end it: roast cancel {s.id})")
    if s.reason:
        lines.append(f"reason    {s.reason}")
    if history:
        lines.append("steps:")
        for h in history:
            took = f"{h.finished_at - h.started_at:.2f}s" if h.finished_at and h.status != "interrupted" \
                else "interrupted"
            attempt = f" attempt {h.attempt}" if h.attempt > 1 else ""
            out = visible((h.output or "").replace("\n", " "))
            out = out[:60] + "…" if len(out) > 60 else out
            if h.status == "ok" and (h.error or "").startswith("usage: "):  # a prompt's tokens (issue 17)
                out = f"[{h.error[7:]}]" + (f"  {out}" if out else "")
            elif h.error and h.status != "ok":
                why = visible(h.error.replace("\n", " "))
                out = (why[:80] + "…" if len(why) > 80 else why) + (f"  {out}" if out and out not in why else "")
            lines.append(f"  {iso(h.started_at)}  {h.status:<8} {h.path}"
                         f"{' ' + h.name if h.name else ''}{attempt}  {took}  {out}")
    if events:
        lines.append("events:")
        import json

        from roast.views import event_data

        for e in events:  # every delivery that reached the session, and what became of it (issue 14)
            data = json.dumps(event_data(e), ensure_ascii=False)
            who = f" by {e.actor}" if e.actor else ""
            why = f" ({e.reason})" if e.reason else ""
            where = f" → {e.wait_path}" if e.wait_path and e.outcome == "consumed" else ""
            lines.append(f"  {iso(e.received_at)}  {e.name}  {e.outcome}{where}  via {e.source}{who}{why}"
                         f"  id {e.event_id or '-'}  {data[:80]}")
    if s.final_output:
        lines.append("final output:")
        lines.extend("  " + line for line in s.final_output.split("\n"))
    # every value above may hold event data or step output: shown, never obeyed (issue 10 §4)
    return "\n".join(visible(line) for line in lines)


class Listening:
    """`--wait`: a live line with the awaited events and the time left (plain lines off a terminal)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.progress = Progress(self.stream)
        self._last = ""
        self._status: Any = None

    def line(self, session: Session, now: float) -> str:
        if session.status == "waiting":
            events = awaiting_text(session)
            left = f" — {_left(session.deadline, now)}" if session.deadline is not None else ""
            return visible(f"session {session.id} waiting for {events}{left} (Ctrl-C leaves it waiting)")
        return f"session {session.id} is {session.status}"

    def update(self, session: Session, now: float) -> None:
        if session.status not in OPEN:
            return  # the final notice says how it ended, once (issue 24: not "is completed", then "completed")
        text = self.line(session, now)
        if fancy(self.stream):
            self.progress.stop()  # the steps that ran are over: back to the waiting line
            if self._status is None:
                from rich.console import Console

                self._status = Console(file=self.stream).status(markup_safe(text))
                self._status.start()
            self._status.update(markup_safe(text))
        elif text.split(" — ")[0] != self._last.split(" — ")[0]:
            print(f"roast: {text}", file=self.stream, flush=True)
        self._last = text

    def _quiet_line(self) -> None:
        # one live line at a time: two rich displays on one terminal draw over each other, and a
        # prompt would be drawn over by the one `pause()` does not know (issue 11)
        if self._status is not None:
            self._status.stop()
            self._status = None

    def started(self, path: str, name: str | None, attempt: int) -> None:
        self._quiet_line()  # steps run here (a deadline fired): their progress line takes over
        self.progress.started(path, name, attempt)

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        self.progress.finished(path, name, status, seconds)

    def note(self, message: str) -> None:
        self.progress.note(message)

    def pause(self) -> None:
        self._quiet_line()
        self.progress.pause()

    def unpause(self) -> None:
        self.progress.unpause()

    def stop(self) -> None:
        self.progress.stop()
        if self._status is not None:
            self._status.stop()
            self._status = None


def _fetched(fetch: Callable[[], tuple[Any, ...]]) -> tuple[list[Session], int, int | None]:
    """`fetch()` returns (rows, total) or (rows, total, open_total)."""
    rows, total, *rest = fetch()
    return list(rows), int(total), rest[0] if rest else None


def _stamp(now: float | None, refresh: float = 1.0) -> str:
    every = "every second" if refresh == 1 else f"every {refresh:g}s"
    return f"{iso(now if now is not None else time.time())} · refreshing {every} · Ctrl-C to exit"


def watch_frame(fetch: Callable[[], tuple[Any, ...]], *, all_shown: bool = False, now: float | None = None,
                refresh: float = 1.0) -> Any:
    """One refresh of `roast sessions --watch` (tests drive this instead of sleeping)."""
    rows, total, open_total = _fetched(fetch)
    from rich.console import Group
    from rich.text import Text

    return Group(sessions_table(rows, total, now=now, all_shown=all_shown, open_total=open_total),
                 Text(_stamp(now, refresh), style="dim"))


def watch_text(fetch: Callable[[], tuple[Any, ...]], *, all_shown: bool = False, now: float | None = None,
               refresh: float = 1.0) -> str:
    """One refresh as plain text, for a pipe or NO_COLOR: a separator line, then the listing."""
    rows, total, open_total = _fetched(fetch)
    listing = sessions_text(rows, total, now=now, all_shown=all_shown, open_total=open_total) if rows \
        else "no sessions"
    return f"--- {_stamp(now, refresh)}\n{listing}\n"


def watch(fetch: Callable[[], tuple[Any, ...]], *, all_shown: bool = False, refresh: float = 1.0,
          stream: IO[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """`roast sessions --watch`: a live table on a terminal; elsewhere (a pipe, NO_COLOR) a plain
    listing every refresh, each after a `---` line and flushed, so `| cat` or a log shows them as
    they come (issue 11). Ctrl-C ends it."""
    out = stream or sys.stdout
    try:
        if not fancy(out):
            while True:
                out.write(watch_text(fetch, all_shown=all_shown, refresh=refresh) + "\n")
                out.flush()
                sleep(refresh)
        from rich.live import Live

        with Live(watch_frame(fetch, all_shown=all_shown, refresh=refresh), console=console(out),
                  auto_refresh=False) as live:
            while True:
                sleep(refresh)
                live.update(watch_frame(fetch, all_shown=all_shown, refresh=refresh), refresh=True)
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- notices on stderr


def stopped(err: BaseException) -> int:
    """What became of the session when roast was stopped (issue 10: say it for *this* session)."""
    import signal

    signum = getattr(err, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    sid = getattr(err, "session_id", None)
    if sid:
        step = getattr(err, "step", None)
        print(f"roast: interrupted by {name}" + (f" during {step}" if step else "") + f"; session {sid} was "
              f"stopped there and is interrupted (nothing continues it by itself): continue it with roast resume "
              f"--session-id {sid}, or end it with roast cancel {sid}", file=sys.stderr)
    else:
        print(f"roast: interrupted by {name}; no session was running in this command (waiting sessions are "
              "still waiting)", file=sys.stderr)
    return 128 + signum


def notices(results: Sequence[Result], verbose: bool, links: Callable[[str], Mapping[str, str]],
            page: Callable[[str], str | None] | None = None,
            pages: Callable[[str], Mapping[str, str]] | None = None) -> None:
    """A notice per session on stderr: its warnings, then waiting (with how to resume), completed, or
    the error (with the traceback of a failing Python step when `verbose`) and how to retry."""

    for r in results:
        for warning in r.warnings:
            print(f"roast: warning: {visible(warning)}", file=sys.stderr)
        if r.status == "waiting":
            print(waiting_notice(r, links(r.session_id), page(r.session_id) if page else None,
                                 pages(r.session_id) if pages else None), file=sys.stderr)
        elif r.status == "completed":
            print(f"roast: session {r.session_id} completed", file=sys.stderr)
        elif r.status == "cancelled":  # issue 20: `cancelled by ana@host at …`; not a step's failure
            print(f"roast: session {r.session_id} was {visible(r.error or 'cancelled')}", file=sys.stderr)
        else:
            print(f"roast: error: session {r.session_id} {r.status}: {visible(r.error)}", file=sys.stderr)
            if verbose and r.detail:  # the traceback of a failing Python step
                print(visible(r.detail).rstrip("\n"), file=sys.stderr)
            if r.status == "failed":  # issue 16: nothing is lost; say how to go on once it is fixed
                print(f"roast: the session kept its last checkpoint; once fixed, `roast retry {r.session_id}` "
                      "runs the failed step again (the steps before it do not run again)", file=sys.stderr)


def delivery_notice(result: Result) -> str:
    """An event that ran nothing: kept for a later wait, or a repeat of one already delivered."""
    delivery = result.delivery or {}
    quorum = result.quorum or {}
    if result.outcome == "counted":  # issue 23
        return (f"roast: counted: {quorum.get('have')} of {quorum.get('need')} approvals for {result.event!r} "
                f"({', '.join(quorum.get('approvers') or [])}); session {result.session_id} keeps waiting")
    if result.outcome == "duplicate" and result.quorum is not None:
        return (f"roast: {delivery.get('actor')} was already counted for {result.event!r} on session "
                f"{result.session_id} ({quorum.get('have')} of {quorum.get('need')} approvals); not counted again")
    if result.outcome == "queued" and delivery.get("detail") == ONLY_GATES_AHEAD:  # issue 23
        return (f"roast: session {result.session_id} is {result.status}; {result.event!r} (event id "
                f"{result.event_id}) is kept, but no wait ahead will take it: {ONLY_GATES_AHEAD}. Deliver it "
                f"again once the session waits for it (`roast inbox` lists open gates)")
    if result.outcome == "queued":
        return (f"roast: session {result.session_id} is {result.status}; {result.event!r} (event id "
                f"{result.event_id}) is kept and goes to the next wait that declares it")
    what = delivery.get("outcome", "consumed")
    where = f" by {delivery['wait_path']}" if delivery.get("wait_path") else ""
    at = delivery.get("consumed_at") or delivery.get("received_at")
    return (f"roast: event id {result.event_id} was already delivered to session {result.session_id} "
            f"({what}{where} at {at}); not applied again")


# --------------------------------------------------------------------------- `roast serve`'s log


class Log:
    """One line per request and per session transition on stderr (text or JSON); never a body, a
    token or a signature: callers pass only the fields below."""

    def __init__(self, fmt: str, stream: Any = None) -> None:
        import threading

        self.fmt, self.stream = fmt, stream or sys.stderr
        self._lock = threading.Lock()

    def __call__(self, message: str, **fields: Any) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            line = json.dumps({"time": stamp, "msg": message, **fields}, default=str, ensure_ascii=False)
        else:
            extra = " ".join(f"{k}={_log_value(v)}" for k, v in fields.items())
            line = f"roast serve: {stamp} {_log_text(message)}" + (f" {extra}" if extra else "")
        with self._lock:
            print(line, file=self.stream, flush=True)


def _log_value(value: Any) -> str:
    text = str(value)
    # quoted when empty, or holding a space or anything unprintable (split() finds any whitespace)
    return text if text.isprintable() and text.split() == [text] else _log_text(json.dumps(text, ensure_ascii=False))


def _log_text(text: str) -> str:
    """A text log's value with every character that is not printable escaped (`\\n`, `\\x1b`,
    `\\u202e`): a request path cannot start a forged line or drive the terminal (issue 21)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] if c.isascii() or ord(c) < 0x100 else f"\\u{ord(c):04x}"
                   if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in text)


# --------------------------------------------------------------------------- the resident part


class LogObserver:
    """The api's progress callbacks, as log lines for the notes that matter (re-runs, early events)."""

    def __init__(self, log: Log, session_id: str | None) -> None:
        self.log, self.session_id = log, session_id

    def started(self, path: str, name: str | None, attempt: int) -> None:
        pass

    def finished(self, path: str, name: str | None, status: str, seconds: float) -> None:
        pass

    def note(self, message: str) -> None:
        self.log("note", session=self.session_id, note=message)
