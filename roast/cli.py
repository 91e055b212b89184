"""The `roast` command: `build_parser()` and `main(argv) -> int`.

stdout carries results (exactly one JSON document with `--json`); stderr carries progress,
notices and errors. Errors are one clear sentence (a traceback only with `-v`); exit codes
follow SPEC §8: 0 ok (completed or waiting), 1 the workflow failed, 2 usage or validation,
3 not found / not waiting / refused, 4 the store is unavailable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

TYPE_CHECKING = False  # typing is not imported at run time (start-up, issue 12)
if TYPE_CHECKING:
    from typing import Any

if __name__ not in ("roast.cli", "__main__"):
    # argparse-manpage loads this file by path while building the wheel (setup.cfg), before roast
    # is installed: let it import the package from this source tree.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from roast import __version__
from roast.errors import RoastError, UsageError
from roast.people import page_of, pages_of

EPILOG = """exit codes: 0 completed or waiting, 1 the workflow failed, 2 usage or validation error,
3 not found / not waiting / refused event / cancelled, 4 the session store is unavailable.
State lives in $ROAST_HOME (default ~/.roast)."""


_WIDTH: list[int] = []


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's help formatter, told the terminal width up front: argparse would import shutil
    for it at every `add_argument` (~5 ms of every command's start-up, issue 12)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            if not _WIDTH:
                try:
                    columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
                except (ValueError, OSError, AttributeError):
                    columns = 80
                _WIDTH.append(max(columns - 2, 40))
            width = _WIDTH[0]
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; no side effects (the man page is built from it)."""
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="show tracebacks on errors and more detail (default: off)")
    common.add_argument("--json", action="store_true",
                        help="print exactly one JSON document on stdout (default: human text)")

    parser = _Parser(
        prog="roast", description="Run YAML workflows that can pause at `wait_for_event` and resume "
                                  "exactly once when the event arrives.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"roast {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("execute", parents=[common], help="run a workflow (once per target)",
                       description="Run a workflow until it completes, fails or reaches a wait_for_event. "
                                   "With --json, stdout is a JSON list with one session object per target "
                                   "(one element without targets).")
    p.add_argument("workflow", metavar="WORKFLOW",
                   help="a workflow.yml, its directory, or NAME for roast/NAME/workflow.yml")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="files to run the workflow on, one session each")
    p.add_argument("-t", "--target", action="append", default=[], metavar="T",
                   help="a file, a glob, or $(command) printing one path per line (repeatable; default: "
                        "the workflow's `target:` key, else no target)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the final output to FILE instead of stdout; with --json the JSON still goes "
                        "to stdout (default: stdout)")
    p.add_argument("--wait", action="store_true",
                   help="after pausing, stay in the foreground: follow events delivered by other processes "
                        "and fire the deadline on time; Ctrl-C leaves the session waiting (default: exit)")
    p.add_argument("--actor", metavar="NAME", help="who starts the session, recorded as its started_by "
                                                   "(default: $USER@host; not verified)")
    p.set_defaults(handler=cmd_execute)

    p = sub.add_parser("resume", parents=[common], help="deliver an event to a waiting session",
                       description="Deliver an event to a waiting session and run the steps mapped to "
                                   "it, then the rest of the workflow.")
    p.add_argument("workflow", nargs="?", metavar="WORKFLOW",
                   help="the workflow; its most recent waiting session is resumed unless --session-id is "
                        "given")
    p.add_argument("-e", "--event", metavar="NAME",
                   help="the event name, one the wait declares (required unless continuing an orphaned "
                        "session)")
    p.add_argument("-s", "--session-id", metavar="ID",
                   help="the session (any unique prefix of 4+ characters; default: the most recent waiting "
                        "one)")
    p.add_argument("-d", "--event-data", metavar="JSON",
                   help="event data: a JSON object, @FILE to read it from a file, or - for stdin "
                        "(default: {}); limit 1 MiB")
    p.add_argument("--event-id", metavar="KEY",
                   help="an id for this delivery (at most 200 characters): a repeat with the same id is not "
                        "applied again (outcome `duplicate`); default: a new random id, reported")
    p.add_argument("--actor", metavar="NAME",
                   help="who delivers the event, kept with it and shown to the branch as "
                        "{{ delivery.actor }} (default: $USER@host)")
    p.add_argument("--reason", metavar="TEXT",
                   help="why, kept with the event ({{ delivery.reason }}; default: none)")
    p.add_argument("--if-waiting", action="store_true",
                   help="refuse (exit 3) instead of keeping the event for a later wait when the session is "
                        "not waiting for it now (default: keep it)")
    p.add_argument("--key", metavar="K",
                   help="the session of WORKFLOW whose correlation `key:` is K (default: the newest waiting "
                        "one)")
    p.add_argument("--force", action="store_true",
                   help="resume even if the workflow changed on the path to the wait, as long as the wait "
                        "still declares the event (default: refuse)")
    p.add_argument("--wait", action="store_true",
                   help="if the session pauses again, stay and follow it as `execute --wait` does; when "
                        "continuing an interrupted session, first wait for its earlier step's processes to "
                        "end (default: exit, and refuse while they run)")
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("sessions", parents=[common], help="list sessions, open ones first, then newest first",
                       description="List sessions: open ones (waiting, running, orphaned, interrupted) first, "
                                   "then the rest, each group newest first; 50 by default. Ids are shown by their "
                                   "first 8 characters (--json gives them whole).")
    p.add_argument("--status", action="append", default=[],
                   choices=["running", "waiting", "orphaned", "interrupted", "completed", "failed", "timed_out",
                            "cancelled", "moved"],
                   help="only sessions in this state; orphaned means running, but its process died; "
                        "interrupted means stopped by a signal, continued only by `roast resume -s ID` "
                        "(repeatable; default: all)")
    p.add_argument("--workflow", metavar="W",
                   help="only sessions of this workflow, by path or by name (default: all workflows)")
    p.add_argument("--limit", type=_limit, default=50, metavar="N",
                   help=f"show at most N sessions, a whole number from 1 to {MAX_LIMIT:,} (default: 50)")
    p.add_argument("--all", action="store_true", help="show every session (default: the 50 newest)")
    p.add_argument("--older-than", metavar="D",
                   help="only sessions last updated more than D ago (30s, 15m, 2h, 7d; default: any age)")
    p.add_argument("--since", metavar="D",
                   help="only sessions created within D (2h, 7d) or since an ISO date (default: any)")
    p.add_argument("--prune", action="store_true",
                   help="delete finished sessions (completed, failed, timed_out, cancelled) matching "
                        "--older-than, which is required; waiting and running ones are never deleted")
    p.add_argument("--watch", action="store_true",
                   help="keep the table on screen, refreshed every second (off a terminal: a plain listing "
                        "every second, each after a --- line); Ctrl-C exits (default: print once)")
    p.set_defaults(handler=cmd_sessions)

    p = sub.add_parser("session", parents=[common], help="show one session in full",
                       description="Show one session: status, cursor, steps, events, and how to resume it.")
    p.add_argument("session_id", metavar="ID", help="session id or a unique prefix of 4+ characters")
    p.set_defaults(handler=cmd_session)

    p = sub.add_parser("cancel", parents=[common], help="end a session that has not finished, even a running one",
                       description="End a waiting, running, interrupted or orphaned session (finished ones are "
                                   "refused); a running one's steps are stopped and the process running it exits 3.")
    p.add_argument("session_id", metavar="ID", help="session id or a unique prefix of 4+ characters")
    p.add_argument("--reason", metavar="TEXT", help="why, kept with the session (default: none)")
    p.add_argument("--actor", metavar="WHO", help="who cancels it, kept as cancelled_by (default: $USER@host)")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("retry", parents=[common], help="run a failed session again from the step that failed",
                       description="Run a failed session again from the step that failed, as that step's next "
                                   "attempt: the steps before it do not run again and nothing before it is "
                                   "evaluated again (a failed session keeps its last checkpoint). Fix the "
                                   "workflow first if need be: a change after the failed step is used; a "
                                   "change on the way to it is refused unless --force. Exit status as for "
                                   "execute: 0 completed or waiting, 1 failed again.")
    p.add_argument("session_id", metavar="ID", help="session id or a unique prefix of 4+ characters")
    p.add_argument("--from", dest="from_step", metavar="STEP_PATH",
                   help="start from this earlier step on the way to the failed one instead (a path as "
                        "`roast session ID` shows it, e.g. steps[2]); the outputs of the steps that run "
                        "again are dropped (default: the failed step)")
    p.add_argument("--force", action="store_true",
                   help="retry even if the workflow changed on the path to the failed step (default: refuse)")
    p.add_argument("--wait", action="store_true",
                   help="if the session pauses again, stay and follow it as `execute --wait` does "
                        "(default: exit)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("-d", "--event-data", metavar="JSON",
                      help="replace the data of the latest event (the one whose data broke the branch): a JSON "
                           "object, @FILE, or - for stdin; recorded with --actor and --reason (default: keep it)")
    data.add_argument("--drop-event", action="store_true",
                      help="retry with the latest event's data emptied ({}), recorded likewise (default: keep it)")
    p.add_argument("--actor", metavar="NAME",
                   help="who replaced the event data, kept with it (default: $USER@host)")
    p.add_argument("--reason", metavar="TEXT", help="why the event data was replaced, kept with it (default: none)")
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser("tick", parents=[common], help="fire every overdue wait (for cron or a systemd timer)",
                       description="Fire the deadline of every waiting session that is overdue: its timeout "
                                   "branch (or on_timeout) runs, or it ends timed_out. Safe to run often and "
                                   "concurrently with resumes: each wait resolves exactly once. Exit status "
                                   "0 when every overdue wait fired as designed (ending timed_out included), "
                                   "1 when one could not be fired or its timeout branch failed.")
    p.set_defaults(handler=cmd_tick)

    p = sub.add_parser("validate", parents=[common], help="check a workflow without running it",
                       description="Load and compile a workflow, reporting every problem; runs nothing.")
    p.add_argument("workflow", metavar="WORKFLOW", help="a workflow.yml, its directory, or NAME")
    p.set_defaults(handler=cmd_validate)

    from roast import people, serve  # its parser only: starlette and uvicorn load when `roast serve` runs

    serve.add_parser(sub, parents=[common])
    people.add_parser(sub, parents=[common])

    from roast import cli_store  # `roast store copy`, `roast key new` (issue 13)

    cli_store.add_parsers(sub, common, _Parser)
    from roast import cli_approve  # `roast approve` (issue 23)
    cli_approve.add_parser(sub, [common], _report)
    return parser


MAX_LIMIT = 1_000_000


def _limit(text: str) -> int:
    """`--limit N`: a positive whole number, at most MAX_LIMIT (issue 11: 0, -1 and 1e20 were taken)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"takes a whole number from 1 to {MAX_LIMIT:,}, not {text!r} "
                                         "(--all shows every session)")
    return int(text)


def _on_signal(signum: int, frame: Any) -> None:
    from roast.errors import Interrupted

    raise Interrupted(signum)


def _install_signals() -> list[tuple[int, Any]]:
    """SIGTERM and SIGHUP stop roast the way Ctrl-C does: the step's process group is killed, the
    interruption recorded, the recovery command printed (issue 10). Only in the main thread."""
    import signal

    saved: list[tuple[int, Any]] = []
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            saved.append((signum, signal.signal(signum, _on_signal)))
    except ValueError:  # not the main thread (main() called from a worker): leave signals alone
        pass
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    from roast.errors import Interrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    saved = _install_signals()
    try:
        return int(args.handler(args))
    except RoastError as err:
        if args.verbose:
            detail = getattr(err, "detail", None)
            if detail:
                print(detail, file=sys.stderr, end="")
            raise
        _error(args, err, str(err), err.exit_code)
        return err.exit_code
    except (KeyboardInterrupt, Interrupted) as err:
        from roast.display import stopped

        return stopped(err)
    except BrokenPipeError:
        # stdout was closed early (`roast execute wf | head -1`); the session was saved before printing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:
        if args.verbose:
            raise
        from roast.display import visible

        where = f": {err.filename!r}" if err.filename else ""
        print(f"roast: error: {visible(err.strerror or err)}{where}; nothing changed", file=sys.stderr)
        return 4
    except Exception as err:  # the last resort: never a traceback without -v (issue 10)
        if args.verbose:
            raise
        from roast.display import visible

        print(f"roast: internal error: {type(err).__name__}: {visible(err)}\n  hint: this is a bug in roast; "
              "run the same command with -v for the traceback and report it", file=sys.stderr)
        return 70
    finally:
        import signal

        for signum, handler in saved:
            signal.signal(signum, handler)


def _error(args: argparse.Namespace, err: RoastError, message: str, exit_code: int) -> None:
    from roast.display import visible

    print(f"roast: error: {visible(message)}", file=sys.stderr)
    final = err.document.get("final_output")
    if final and not getattr(args, "json", False):  # a late event: what the timeout path printed
        print(visible(final))
    if getattr(args, "json", False):
        document = dict(err.document)
        if document.get("outcome") == "invalid" and getattr(args, "event", None):
            document.setdefault("event", args.event)  # refused before any session was read (issue 24)
        from roast.errors import WorkflowInvalid
        from roast.views import error_fields

        error = error_fields(err, message, exit_code)
        problems = err.problems if isinstance(err, WorkflowInvalid) else None
        if problems:
            error["problems"] = [p.to_dict() for p in problems]
        document["error"] = error
        print(json.dumps(document))


def _emit_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def _progress(args: argparse.Namespace) -> Any:
    from roast.display import Progress

    return Progress(quiet=False)


# --------------------------------------------------------------------------- execute


def cmd_execute(args: argparse.Namespace) -> int:
    from roast import api

    if getattr(args, "output", None):
        _check_output(args.output)  # before any step runs: a bad -o must not hide the waiting notice
    targets = api.targets(args.workflow, args.targets, args.target)
    progress = _progress(args)
    results = []
    try:
        for target in targets:
            results.append(api.run(args.workflow, target, observer=progress, started_by=args.actor))
    finally:
        progress.stop()
    if args.wait:
        return _report_and_follow(args, results, as_list=True)
    return _report(args, results, as_list=True)


def _check_output(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"-o {path}: the directory {directory} does not exist; nothing ran",
                         hint="create it first, or write the output elsewhere")
    if os.path.isdir(path):
        raise UsageError(f"-o {path} is a directory; nothing ran", hint="give a file name")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"-o {path}: cannot write there (permission denied); nothing ran")


def _report_and_follow(args: argparse.Namespace, results: list[Any], as_list: bool = False) -> int:
    """`--wait`: report the pause (the session is already saved), then stay until it ends. With
    --json, one document for all of them, once every session has ended."""
    from roast import api
    from roast.display import Listening, notices

    finals = []
    for result in results:
        if result.status != "waiting":
            finals.append(result)
            continue
        view = Listening()
        try:
            if not args.json:
                notices([result], args.verbose, _links, page_of, pages_of)
            final = api.listen(result.session_id, observer=view,  # type: ignore[arg-type]  # duck-typed
                               on_update=view.update)
        except KeyboardInterrupt:
            view.stop()
            left = _left_waiting(result.session_id)
            if left is None:
                raise  # a branch or a deadline was running here: stopped as any run is (exit 130)
            finals.append(left)
            if not args.json:
                print(f"roast: stopped following session {left.session_id}; it is still waiting", file=sys.stderr)
            return _report(args, finals + [r for r in results[len(finals):]], as_list=as_list)
        finally:
            view.stop()
        finals.append(final)
    return _report(args, finals, as_list=as_list)


def _left_waiting(session_id: str) -> Any:
    """After Ctrl-C while following a session: its result if it is still waiting (the help promises
    that Ctrl-C leaves it waiting, and then roast exits 0: issue 24), else None."""
    from roast import api
    from roast.views import result_of

    try:
        session = api.session(session_id)
    except RoastError:
        return None
    return result_of(session) if session.status == "waiting" else None


def _report(args: argparse.Namespace, results: list[Any], as_list: bool = False) -> int:
    """The final output on stdout (or -o FILE), then a notice per session on stderr. With --json,
    stdout is one document: a list of sessions for `execute` (`as_list`), one object for `resume`."""
    from roast.display import notices

    text = "\n\n".join(r.final_output for r in results if r.final_output)
    if getattr(args, "output", None):
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + ("\n" if text else ""))
        print(f"roast: results saved to {args.output}", file=sys.stderr)
    if args.json:
        docs = [r.to_json() for r in results]
        _emit_json(docs if as_list else docs[0])
    elif text and not getattr(args, "output", None):
        from roast.display import visible

        # on a terminal the output is shown, so event data in it cannot drive the terminal (issue
        # 10 §4); to a pipe or a file it goes byte for byte, like -o and --json
        print(visible(text) if sys.stdout.isatty() else text)
    notices(results, args.verbose, _links, page_of, pages_of)
    cancelled = any(r.status == "cancelled" for r in results)  # `roast cancel` stopped it: 3 (issue 20)
    return 3 if cancelled else 1 if any(not r.ok for r in results) else 0


# --------------------------------------------------------------------------- resume


def cmd_resume(args: argparse.Namespace) -> int:
    from roast import api

    if not args.workflow and not args.session_id:
        raise UsageError("say which session: give the WORKFLOW or --session-id ID",
                         hint="roast resume deploy --event approved")
    data = api.read_event_data(args.event_data, sys.stdin.buffer)
    progress = _progress(args)
    try:
        result = api.resume(args.event, data=data, session_id=args.session_id, workflow=args.workflow,
                            force=args.force, source="cli", observer=progress, event_id=args.event_id,
                            actor=args.actor, reason=args.reason, if_waiting=args.if_waiting, key=args.key,
                            wait_for_steps=args.wait)
    finally:
        progress.stop()
    if result.outcome in ("queued", "duplicate", "counted"):  # counted: a gated wait's quorum (issue 23)
        if args.json:
            _emit_json(result.to_json())
        else:
            from roast.display import delivery_notice

            print(delivery_notice(result), file=sys.stderr)
        return 0
    if args.wait:
        return _report_and_follow(args, [result])
    return _report(args, [result])


def cmd_retry(args: argparse.Namespace) -> int:
    from roast import api

    progress = _progress(args)
    try:
        data = api.read_event_data(args.event_data, sys.stdin.buffer) if args.event_data is not None else None
        result = api.retry(args.session_id, from_step=args.from_step, force=args.force, observer=progress,
                           event_data=data, drop_event=args.drop_event, actor=args.actor, reason=args.reason)
    finally:
        progress.stop()
    if args.wait:
        return _report_and_follow(args, [result])
    return _report(args, [result])


# --------------------------------------------------------------------------- sessions


def cmd_sessions(args: argparse.Namespace) -> int:
    from roast import api, settings

    older = settings.age(args.older_than, "--older-than")
    if args.prune:
        if older is None:
            raise UsageError("--prune needs --older-than D, e.g. --prune --older-than 30d")
        count = api.prune(older_than=older)
        if args.json:
            _emit_json({"pruned": count})
        else:
            print(f"roast: pruned {count} finished session{'s' if count != 1 else ''} older than "
                  f"{args.older_than}", file=sys.stderr)
        return 0
    query = {"status": args.status, "workflow": args.workflow, "older_than": older,
             "since": settings.since(args.since), "limit": None if args.all else args.limit, "open_first": True}

    def fetch() -> tuple[list[Any], int, int]:
        page = api.list_sessions(**query)
        return page.rows, page.total, _open_total(api, query, page)

    if args.watch:
        from roast.display import watch

        watch(fetch, all_shown=args.all)
        return 0
    page = api.list_sessions(**query)
    rows, total = page.rows, page.total
    if page.stale:
        print("roast: warning: the session store is read-only here; this view may be stale", file=sys.stderr)
    if args.json:
        from roast.views import session_json

        _emit_json([session_json(s) for s in rows])
        return 0
    if not rows:
        filtered = args.status or args.workflow or args.older_than or args.since
        print("no sessions" + (" match" if filtered else " yet"), file=sys.stderr)
        return 0
    from roast.display import fancy

    open_total = _open_total(api, query, page)
    if fancy(sys.stdout):
        from roast.display import console, sessions_table

        console().print(sessions_table(rows, total, all_shown=args.all, open_total=open_total))
    else:
        from roast.display import sessions_text

        print(sessions_text(rows, total, all_shown=args.all, open_total=open_total))
    return 0


def _open_total(api: Any, query: dict[str, Any], page: Any) -> int:
    """How many of the matching sessions are open, for the footer: open ones are listed first, so
    the rest of the page is finished sessions (one count query, and only when rows are cut off)."""
    if page.total <= len(page.rows):
        return sum(1 for s in page.rows if s.status in ("running", "waiting", "interrupted"))
    statuses = query["status"] or ["running", "waiting", "interrupted"]
    open_statuses = [s for s in statuses if s in ("running", "waiting", "orphaned", "interrupted")]
    if not open_statuses:
        return 0
    return int(api.list_sessions(**{**query, "status": open_statuses, "limit": 0}).total)


def cmd_tick(args: argparse.Namespace) -> int:
    from roast import api
    from roast.display import visible

    fired = api.tick(observer=_progress(args))
    if args.json:
        _emit_json(fired)
    else:
        for entry in fired:
            if entry.get("code") or entry.get("status") == "failed":
                print(f"roast: error: session {entry['session_id']}: {visible(entry['error'])}",
                      file=sys.stderr)
            elif "timer" in entry:  # issue 23: a reminder or escalation sent
                print(f"roast: session {entry['session_id']}: {entry['timer']} sent", file=sys.stderr)
            else:
                print(f"roast: session {entry['session_id']} deadline {entry['deadline']}: {entry['status']}",
                      file=sys.stderr)
            for warning in entry.get("warnings", []):
                print(f"roast: warning: session {entry['session_id']}: {visible(warning)}", file=sys.stderr)
        if not fired:
            print("roast: nothing due (no overdue waits, reminders or escalations)", file=sys.stderr)
    # issue 11: a deadline that fires as designed (ending `timed_out`) is success; exit 1 only when a
    # session could not be fired or its timeout branch failed (a reminder that failed is reported only)
    return 1 if any(("timer" not in entry and entry.get("code")) or entry.get("status") == "failed"
                    for entry in fired) else 0


def _links(session_id: str) -> dict[str, str]:
    """The signed approval links of a waiting session, when ROAST_PUBLIC_URL is set (issue 15)."""
    from roast import api, settings

    if not settings.public_url():
        return {}
    try:
        return api.links(session_id)
    except RoastError as err:  # e.g. no key for a shared store: the links are extra, say why not
        print(f"roast: warning: no approval links: {err.message}", file=sys.stderr)
        return {}


def cmd_session(args: argparse.Namespace) -> int:
    from roast import api

    s = api.session(args.session_id)
    history, events = api.history(s.id), api.deliveries(s.id)
    links = _links(s.id) if s.status == "waiting" else {}
    if args.json:
        from roast.views import session_document

        _emit_json(session_document(s, history, events, links, page_of(s.id) if links else None,
                                    pages_of(s.id) if links else None))
        return 0
    from roast.display import personal_pages, session_detail

    page = page_of(s.id) if links else None
    print("\n".join([session_detail(s, history, events, links), *([f"approval page: {page}"] if page else []),
                     *personal_pages(pages_of(s.id) if page else {}, "")]))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from roast import api

    s = api.cancel(args.session_id, reason=args.reason, actor=args.actor)
    if args.json:
        from roast.views import session_json

        _emit_json(session_json(s))
    else:
        print(f"roast: session {s.id} cancelled", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from roast import api
    from roast.display import visible
    from roast.views import error_fields

    doc, err = api.validate(args.workflow)
    if err is not None:
        if not args.json:
            raise err
        print(f"roast: error: {visible(err)}", file=sys.stderr)
        _emit_json({**doc, "error": error_fields(err)})
        return err.exit_code
    for warning in doc["warnings"]:
        print(f"roast: warning: {visible(warning)}", file=sys.stderr)
    if args.json:
        _emit_json({key: value for key, value in doc.items() if key != "steps"})
    else:
        count, waits = doc["steps"], len(doc["waits"])
        print(f"{doc['workflow']}: ok ({count} top-level step{'s' if count != 1 else ''}, "
              f"{waits} wait{'s' if waits != 1 else ''})")
    return 0
