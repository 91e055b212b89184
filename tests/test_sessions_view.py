"""Seeing sessions (issue 7): `roast sessions`, `roast session ID`, `roast cancel`, and the Python API.

The table is rendered into a fixed-width console; the commands run in this process through
`roast.cli.main` (capsys is not a terminal, so output is plain text) and once as a real process.
Sessions are made by `roast.run`/`roast.resume`; "old" sessions are backdated in the SQLite file,
because `--older-than` and `--prune` compare with the wall clock.
"""
from __future__ import annotations

import io
import json
import re
import shlex
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Ran, run_cli, write_workflow
from rich.console import Console

import roast
from roast import api, display
from roast.cli import main
from roast.errors import NotFound, Refused, RoastError, StoreUnavailable

DEPLOY = """
    name: deploy
    steps:
      - build: "$(echo built)"
      - wait_for_event:
          approved:
            - ship: "$(echo shipped by {{event.approver}})"
          rejected:
            - "$(echo rolled back)"
          within: 2h
"""
HELLO = """
    name: hello
    steps:
      - greet: "say hi to you"
"""
BOOM = """
    steps:
      - build: "$(echo compiling; exit 7)"
"""

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z: a fixed clock for rendering
DAY = 86400.0
ID_LINE = re.compile(r"^([0-9a-z]{8})\s", re.MULTILINE)
ANSI = re.compile(r"\x1b\[")
COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-7]|9[0-7]|38;[0-9;]+)m")
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"




@pytest.fixture
def roast_cmd(capsys):
    """`roast_cmd("sessions", "--json")` runs `roast ...` in this process and captures what it shows."""
    def run(*args: object) -> Ran:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Ran(code, out, err)
    return run


def listed(text: str) -> list[str]:
    """The session ids of the table rows, top to bottom. Listings show 8 characters (issue 11);
    each is looked up as a prefix, as a user would paste it, to get the full id back."""
    return [roast.session(short).id for short in ID_LINE.findall(text)]


def row(text: str, sid: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(sid[:8] + " ")]
    assert len(lines) == 1, text
    return lines[0]


def render(renderable: object, width: int = 120) -> str:
    con = Console(file=io.StringIO(), width=width, color_system=None)
    con.print(renderable)
    return con.file.getvalue()


def backdate(home: Path, sid: str, seconds: float) -> None:
    """Move every timestamp of one session `seconds` into the past (as if it ran then)."""
    with closing(sqlite3.connect(home / "sessions.db")) as db, db:
        db.execute("UPDATE sessions SET created_at = created_at - :s, updated_at = updated_at - :s, "
                   "finished_at = finished_at - :s, deadline = deadline - :s WHERE id = :id",
                   {"s": seconds, "id": sid})


def count(home: Path, table: str, sid: str) -> int:
    column = "id" if table == "sessions" else "session_id"
    with closing(sqlite3.connect(home / "sessions.db")) as db:
        return db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (sid,)).fetchone()[0]


@pytest.fixture
def flows(tmp_path: Path) -> dict[str, Path]:
    return {"deploy": write_workflow(tmp_path, DEPLOY, name="deploy"),
            "hello": write_workflow(tmp_path, HELLO, name="hello_wf"),
            "boom": write_workflow(tmp_path, BOOM, name="boom")}


# --------------------------------------------------------------------------- a shared fleet


@dataclass
class Fleet:
    home: Path
    flows: dict[str, Path]
    ids: dict[str, str]
    newest_first: list[str]  # labels
    shown: list[str]  # how `roast sessions` lists them: open ones first, each group newest first (issue 11)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """Eight sessions of three workflows in one store (read-only for the tests that use it)."""
    base = tmp_path_factory.mktemp("fleet")
    home = base / "roast-home"
    flows = {"deploy": write_workflow(base, DEPLOY, name="deploy"),
             "hello": write_workflow(base, HELLO, name="hello_wf"),
             "boom": write_workflow(base, BOOM, name="boom")}
    ids: dict[str, str] = {}
    ids["old_waiting"] = roast.run(flows["deploy"], home=home).session_id
    ids["old_done"] = roast.run(flows["hello"], home=home).session_id
    for label in ("old_waiting", "old_done"):
        backdate(home, ids[label], 10 * DAY)
    ids["shipped"] = roast.run(flows["deploy"], home=home).session_id
    assert roast.resume("approved", data={"approver": "ana"}, session_id=ids["shipped"],
                        home=home).status == "completed"
    ids["hello"] = roast.run(flows["hello"], home=home).session_id
    failed = roast.run(flows["boom"], home=home)
    assert failed.status == "failed"
    ids["boom"] = failed.session_id
    ids["dropped"] = roast.run(flows["deploy"], home=home).session_id
    roast.cancel(ids["dropped"], reason="superseded", home=home)
    ids["gate_a"] = roast.run(flows["deploy"], home=home).session_id
    ids["gate_b"] = roast.run(flows["deploy"], "src/app.py", home=home).session_id
    order = ["gate_b", "gate_a", "dropped", "boom", "hello", "shipped", "old_done", "old_waiting"]
    shown = ["gate_b", "gate_a", "old_waiting", "dropped", "boom", "hello", "shipped", "old_done"]
    return Fleet(home, flows, ids, order, shown)


@pytest.fixture
def in_fleet(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    monkeypatch.setenv("ROAST_HOME", str(fleet.home))
    return fleet


def ids_of(fleet: Fleet, *labels: str) -> list[str]:
    return [fleet.ids[label] for label in labels]


# --------------------------------------------------------------------------- the table itself


def test_the_sessions_table_shows_id_workflow_status_cursor_events_time_left_and_age(flows):
    waiting = roast.run(flows["deploy"], "src/app.py", now=lambda: T0)
    done = roast.run(flows["hello"], now=lambda: T0 + 60)
    page = api.list_sessions()
    rows, total = page.rows, page.total
    assert [s.id for s in rows] == [done.session_id, waiting.session_id] and total == 2

    text = render(display.sessions_table(rows, total, now=T0 + 1800))

    header = text.splitlines()[0].split()
    assert header == ["id", "workflow", "status", "outcome", "where", "awaiting", "deadline", "age"]
    line = row(text, waiting.session_id)
    assert line.split()[:3] == [waiting.session_id[:8], "deploy", "waiting"]  # the short id (issue 11)
    assert "steps[1] › wait_for_event" in line
    assert "approved, rejected" in line
    assert "1h30m left" in line           # the wait has `within: 2h`, 30 minutes have passed
    assert line.rstrip().endswith("30m00s ago")
    line = row(text, done.session_id)
    assert line.split() == [done.session_id[:8], "hello", "completed", "end", "29m00s", "ago"]
    assert "more" not in text


def test_an_overdue_wait_says_by_how_much(flows):
    waiting = roast.run(flows["deploy"], now=lambda: T0)
    page = api.list_sessions()
    rows, total = page.rows, page.total
    line = row(render(display.sessions_table(rows, total, now=T0 + 3 * 3600 + 5)), waiting.session_id)
    assert "overdue by 1h00m" in line
    assert "left" not in line
    assert line.rstrip().endswith("3h00m ago")


def test_the_table_says_how_many_more_there_are_unless_all_are_shown(flows):
    made = [roast.run(flows["hello"], now=lambda: T0).session_id for _ in range(3)]
    page = api.list_sessions()
    rows, total = page.rows, page.total
    assert total == 3 and sorted(s.id for s in rows) == sorted(made)

    text = render(display.sessions_table(rows[:1], total, now=T0))
    assert listed(text) == [rows[0].id]
    assert "… and 2 more (--all lists all 3, or --limit N)" in text

    text = render(display.sessions_table(rows, total, now=T0))
    assert len(listed(text)) == 3 and "--all lists" not in text
    text = render(display.sessions_table(rows[:1], total, now=T0, all_shown=True))
    assert "--all lists" not in text


def test_watch_frames_show_what_the_fetch_returns_each_time(flows):
    gate = roast.run(flows["deploy"], now=lambda: T0).session_id
    done = roast.run(flows["hello"], now=lambda: T0 + 30).session_id
    first_page = api.list_sessions(limit=1)
    replies = [(first_page.rows, first_page.total)]
    roast.cancel(gate, reason="changed between frames")
    every = api.list_sessions(limit=None)
    replies.append((every.rows, every.total))

    def fetch():
        return replies.pop(0)

    first = render(display.watch_frame(fetch, now=T0 + 60))
    assert listed(first) == [done]
    assert "… and 1 more (--all lists all 2, or --limit N)" in first
    assert "2023-11-14T22:14:20Z" in first and "Ctrl-C" in first

    second = render(display.watch_frame(fetch, all_shown=True, now=T0 + 120))
    assert replies == []  # one fetch per frame
    assert listed(second) == [done, gate] and "--all lists" not in second
    assert row(second, gate).split()[2] == "cancelled" and "approved" not in row(second, gate)
    assert "2023-11-14T22:15:20Z" in second


def test_watch_frames_reflect_the_store_changing_between_refreshes(flows):
    gate = roast.run(flows["deploy"], now=lambda: T0).session_id
    def fetch():
        page = api.list_sessions()
        return page.rows, page.total

    before = row(render(display.watch_frame(fetch, now=T0 + 60)), gate)
    assert "waiting" in before and "approved, rejected" in before and "1h59m left" in before
    roast.resume("rejected", session_id=gate, now=lambda: T0 + 90)
    after = row(render(display.watch_frame(fetch, now=T0 + 120)), gate)
    assert "completed" in after and "approved" not in after and "left" not in after
    assert after.split()[3:5] == ["rejected", "end"]  # the event that decided it (issue 24)


# --------------------------------------------------------------------------- roast sessions


def test_sessions_lists_open_sessions_first_then_the_rest_newest_first(in_fleet, roast_cmd):
    r = roast_cmd("sessions")
    assert r.code == 0, r
    assert listed(r.out) == ids_of(in_fleet, *in_fleet.shown)
    assert "--all lists" not in r.out
    gate = row(r.out, in_fleet.ids["gate_b"])
    assert gate.split()[1:3] == ["deploy", "waiting"]
    assert "steps[1] › wait_for_event" in gate and "approved, rejected" in gate
    assert re.search(r"\b1h\d\dm left\b", gate), gate
    old = row(r.out, in_fleet.ids["old_waiting"])
    assert re.search(r"overdue by 9d2\dh", old) and "10d00h ago" in old, old
    assert row(r.out, in_fleet.ids["boom"]).split()[1:3] == ["boom", "failed"]
    assert row(r.out, in_fleet.ids["dropped"]).split()[2] == "cancelled"


def test_sessions_filters_by_status_and_the_filter_repeats(in_fleet, roast_cmd):
    r = roast_cmd("sessions", "--status", "waiting")
    assert r.code == 0, r
    assert listed(r.out) == ids_of(in_fleet, "gate_b", "gate_a", "old_waiting")
    r = roast_cmd("sessions", "--status", "failed", "--status", "cancelled")
    assert listed(r.out) == ids_of(in_fleet, "dropped", "boom")
    r = roast_cmd("sessions", "--status", "timed_out")
    assert r.code == 0 and listed(r.out) == [] and "no sessions match" in r.err


def test_sessions_refuses_an_unknown_status(in_fleet, roast_cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sessions", "--status", "paused"])
    assert exit_.value.code == 2
    assert "invalid choice: 'paused'" in capsys.readouterr().err


def test_sessions_filters_by_workflow_path_directory_or_name(in_fleet, roast_cmd):
    deploy = ids_of(in_fleet, "gate_b", "gate_a", "old_waiting", "dropped", "shipped")
    assert listed(roast_cmd("sessions", "--workflow", in_fleet.flows["deploy"]).out) == deploy
    assert listed(roast_cmd("sessions", "--workflow", in_fleet.flows["deploy"].parent).out) == deploy
    assert listed(roast_cmd("sessions", "--workflow", "deploy").out) == deploy
    # the name comes from `name:`, not the directory (hello_wf)
    assert listed(roast_cmd("sessions", "--workflow", "hello").out) == ids_of(in_fleet, "hello", "old_done")
    r = roast_cmd("sessions", "--workflow", "deploy", "--status", "waiting")
    assert listed(r.out) == ids_of(in_fleet, "gate_b", "gate_a", "old_waiting")
    r = roast_cmd("sessions", "--workflow", "nosuch")
    assert r.code == 0 and listed(r.out) == [] and "no sessions match" in r.err


def test_sessions_limit_shows_the_newest_and_a_footer_with_the_rest(in_fleet, roast_cmd):
    r = roast_cmd("sessions", "--limit", "2")
    assert r.code == 0, r
    assert listed(r.out) == ids_of(in_fleet, "gate_b", "gate_a")
    # open sessions come first, so the footer says what is cut: 1 open, 5 finished (issue 11)
    assert "… and 6 more not shown: 1 open, 5 finished (--all lists all 8, or --limit N)" in r.out
    r = roast_cmd("sessions", "--limit", "2", "--all")
    assert listed(r.out) == ids_of(in_fleet, *in_fleet.shown) and "--all lists" not in r.out
    assert len(roast_cmd("sessions", "--limit", "3", "--json").json) == 3


def test_sessions_older_than_and_since_select_by_age(in_fleet, roast_cmd):
    r = roast_cmd("sessions", "--older-than", "7d")
    assert r.code == 0, r
    assert listed(r.out) == ids_of(in_fleet, "old_waiting", "old_done")
    r = roast_cmd("sessions", "--since", "2h")
    assert listed(r.out) == ids_of(in_fleet, *in_fleet.newest_first[:6])
    r = roast_cmd("sessions", "--since", "2020-01-01")
    assert listed(r.out) == ids_of(in_fleet, *in_fleet.shown)
    r = roast_cmd("sessions", "--older-than", "7d", "--status", "waiting")
    assert listed(r.out) == ids_of(in_fleet, "old_waiting")
    r = roast_cmd("sessions", "--older-than", "30d")
    assert r.code == 0 and listed(r.out) == []


def test_sessions_refuses_an_age_that_is_not_a_duration(in_fleet, roast_cmd):
    r = roast_cmd("sessions", "--older-than", "a week")
    assert r.code == 2 and "--older-than 'a week'" in r.err and "7d" in r.err
    r = roast_cmd("sessions", "--since", "soon")
    assert r.code == 2 and "--since 'soon'" in r.err


def test_an_age_filter_that_matches_nothing_says_no_sessions_match(in_fleet, roast_cmd):
    r = roast_cmd("sessions", "--older-than", "30d")
    assert r.code == 0 and r.out == ""
    assert "no sessions match" in r.err


def test_sessions_json_is_a_list_with_full_ids_and_every_field(in_fleet, roast_cmd):
    r = roast_cmd("sessions", "--json", "--all")
    assert r.code == 0, r
    docs = r.json
    assert isinstance(docs, list)
    assert [d["session_id"] for d in docs] == ids_of(in_fleet, *in_fleet.shown)
    for d in docs:
        assert {"session_id", "status", "workflow", "awaiting", "deadline", "output", "created_at",
                "updated_at", "cursor"} <= set(d), d
        assert len(d["session_id"]) == 13
        assert re.fullmatch(ISO, d["created_at"]) and re.fullmatch(ISO, d["updated_at"])
    by_id = {d["session_id"]: d for d in docs}
    gate = by_id[in_fleet.ids["gate_b"]]
    assert gate["status"] == "waiting"
    assert gate["workflow"] == str(in_fleet.flows["deploy"].resolve())
    assert gate["awaiting"] == ["approved", "rejected"]
    assert re.fullmatch(ISO, gate["deadline"])
    assert gate["cursor"] == "steps[1] › wait_for_event"
    assert gate["target"] == "src/app.py"
    shipped = by_id[in_fleet.ids["shipped"]]
    assert shipped["status"] == "completed" and shipped["awaiting"] == [] and shipped["deadline"] is None
    assert shipped["cursor"] == "end"
    assert shipped["output"]["ship"] == "shipped by ana"
    assert shipped["output"]["wait_for_event"]["data"] == {"approver": "ana"}
    assert by_id[in_fleet.ids["boom"]]["status"] == "failed"
    assert "exited with status 7" in by_id[in_fleet.ids["boom"]]["error"]
    assert by_id[in_fleet.ids["dropped"]]["reason"] == "superseded"
    assert by_id[in_fleet.ids["old_waiting"]]["created_at"] < gate["created_at"]


def test_a_waiting_sessions_json_output_has_the_steps_run_before_the_wait(flows, roast_cmd):
    result = roast.run(flows["deploy"])
    assert result.output == {"build": "built"}
    [listed_doc] = roast_cmd("sessions", "--json").json
    assert listed_doc["output"] == {"build": "built"}
    assert roast_cmd("session", result.session_id, "--json").json["output"] == {"build": "built"}


def test_sessions_json_honours_the_filters(in_fleet, roast_cmd):
    r = roast_cmd("sessions", "--json", "--status", "waiting", "--workflow", "deploy", "--older-than", "7d")
    assert [d["session_id"] for d in r.json] == ids_of(in_fleet, "old_waiting")
    r = roast_cmd("sessions", "--json", "--status", "running")
    assert r.code == 0 and r.json == []


def test_sessions_prints_plain_text_when_stdout_is_not_a_terminal(in_fleet, roast_cmd):
    r = roast_cmd("sessions")
    assert r.code == 0 and listed(r.out)
    assert not ANSI.search(r.out), repr(r.out[:200])


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sessions_colours_status_on_a_terminal_but_not_with_no_color(in_fleet, monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR")
    screen = Tty()
    monkeypatch.setattr(sys, "stdout", screen)
    assert main(["sessions"]) == 0
    assert COLOUR.search(screen.getvalue()), "no colour on a terminal"

    monkeypatch.setenv("NO_COLOR", "1")
    screen = Tty()
    monkeypatch.setattr(sys, "stdout", screen)
    assert main(["sessions"]) == 0
    assert in_fleet.ids["gate_b"][:8] in screen.getvalue()
    assert not COLOUR.search(screen.getvalue()), repr(screen.getvalue()[:300])


def test_piped_sessions_keeps_each_session_on_one_line(in_fleet, roast_cmd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # a pipe has no width to honour: rows never wrap
    r = roast_cmd("sessions")
    assert r.code == 0, r
    assert "steps[1] › wait_for_event" in row(r.out, in_fleet.ids["gate_b"])
    assert r.out.splitlines()[0].split() == ["id", "workflow", "status", "outcome", "where", "awaiting",
                                             "deadline", "age"]


def test_sessions_through_a_real_process(in_fleet):
    proc = run_cli("sessions", "--status", "waiting", env={"ROAST_HOME": str(in_fleet.home)})
    assert proc.returncode == 0, proc.stderr
    assert listed(proc.stdout) == ids_of(in_fleet, "gate_b", "gate_a", "old_waiting")
    assert "Traceback" not in proc.stderr
    proc = run_cli("sessions", "--json", env={"ROAST_HOME": str(in_fleet.home)})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 8


def test_sessions_on_an_empty_store_says_so(roast_cmd, roast_home):
    r = roast_cmd("sessions")
    assert r.code == 0 and r.out == "" and "no sessions yet" in r.err
    assert roast_cmd("sessions", "--json").json == []
    assert not (roast_home / "sessions.db").exists()  # listing creates nothing


# --------------------------------------------------------------------------- paging: 55 sessions


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("many")
    hello = write_workflow(base, HELLO, name="hello")
    home = base / "roast-home"
    made = [roast.run(hello, home=home).session_id for _ in range(55)]
    return home, made[::-1]


def test_sessions_shows_a_page_of_fifty_and_says_how_many_more(many, roast_cmd, monkeypatch):
    home, newest_first = many
    monkeypatch.setenv("ROAST_HOME", str(home))
    r = roast_cmd("sessions")
    assert r.code == 0, r
    assert listed(r.out) == newest_first[:50]
    assert "… and 5 more finished sessions, not shown (--all lists all 55, or --limit N)" in r.out
    r = roast_cmd("sessions", "--all")
    assert listed(r.out) == newest_first and "--all lists" not in r.out
    r = roast_cmd("sessions", "--limit", "55")
    assert listed(r.out) == newest_first and "--all lists" not in r.out
    assert [d["session_id"] for d in roast_cmd("sessions", "--json").json] == newest_first[:50]
    assert [d["session_id"] for d in roast_cmd("sessions", "--json", "--all").json] == newest_first


# --------------------------------------------------------------------------- prune


def test_prune_deletes_only_old_finished_sessions_and_says_how_many(flows, roast_cmd, roast_home):
    old = {"done": roast.run(flows["hello"]).session_id, "failed": roast.run(flows["boom"]).session_id,
           "cancelled": roast.run(flows["deploy"]).session_id,
           "waiting": roast.run(flows["deploy"]).session_id}
    roast.cancel(old["cancelled"])
    crash = write_workflow(flows["hello"].parent.parent, "steps: ['$(kill -9 $PPID)']", name="crash")
    assert run_cli("execute", str(crash)).returncode == -9
    old["orphan"] = next(s.id for s in roast.sessions(limit=None) if s.orphaned)
    for sid in old.values():
        backdate(roast_home, sid, 10 * DAY)
    recent = roast.run(flows["hello"]).session_id
    assert count(roast_home, "steps", old["done"]) == 1

    r = roast_cmd("sessions", "--prune", "--older-than", "7d")
    assert r.code == 0, r
    assert "pruned 3 finished sessions older than 7d" in r.err
    left = {d["session_id"]: d["status"] for d in roast_cmd("sessions", "--json", "--all").json}
    assert left == {recent: "completed", old["waiting"]: "waiting", old["orphan"]: "orphaned"}
    for label in ("done", "failed", "cancelled"):
        assert count(roast_home, "sessions", old[label]) == 0
        assert count(roast_home, "steps", old[label]) == 0
    assert count(roast_home, "continuations", old["waiting"]) == 1  # the wait can still be resumed
    assert roast.resume("rejected", session_id=old["waiting"]).status == "completed"

    r = roast_cmd("sessions", "--prune", "--older-than", "7d", "--json")
    assert r.code == 0 and r.json == {"pruned": 0}


def test_prune_without_older_than_is_a_usage_error_and_deletes_nothing(flows, roast_cmd):
    done = roast.run(flows["hello"]).session_id
    r = roast_cmd("sessions", "--prune")
    assert r.code == 2, r
    assert "--prune needs --older-than" in r.err
    assert roast.session(done).status == "completed"


# --------------------------------------------------------------------------- roast session ID


def test_session_shows_a_waiting_session_and_the_resume_commands_that_work_now(
        flows, roast_cmd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sid = roast.run(flows["deploy"], "src/app.py").session_id
    r = roast_cmd("session", sid)
    assert r.code == 0, r
    text = r.out
    assert f"session   {sid}" in text
    assert f"workflow  deploy  ({flows['deploy'].resolve()})" in text
    assert "target    src/app.py" in text
    assert "status    waiting" in text
    assert "cursor    steps[1] › wait_for_event" in text
    assert re.search(r"awaiting  approved .*deadline " + ISO + r" — 1h\d\dm left", text), text
    assert re.search(r"steps\[0\] build  \d+\.\d\ds  built", text), text
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("roast resume")]
    assert len(commands) == 2, text
    for event, command in zip(("approved", "rejected"), commands):
        assert command == f"roast resume -s {sid} -e {event}"
    assert "final output" not in text

    # the printed command is accepted as it stands
    argv = shlex.split(commands[1])
    assert argv[0] == "roast"
    r = roast_cmd(*argv[1:])
    assert r.code == 0, r
    assert r.out.strip() == "rolled back"
    assert roast.session(sid).status == "completed"


def test_session_shows_timeline_events_and_final_output_of_a_completed_session(flows, roast_cmd):
    sid = roast.run(flows["deploy"]).session_id
    r = roast_cmd("resume", "--session-id", sid, "--event", "approved", "--event-data", '{"approver": "ana"}')
    assert r.code == 0, r

    r = roast_cmd("session", sid[:10])  # a prefix
    assert r.code == 0, r
    text = r.out
    assert f"session   {sid}" in text and "status    completed" in text
    assert "cursor    end" in text
    steps = text.split("steps:\n", 1)[1].split("events:\n", 1)[0].splitlines()
    assert re.fullmatch(rf"  {ISO}  ok\s+steps\[0\] build  \d+\.\d\ds  built", steps[0]), steps
    assert re.fullmatch(rf"  {ISO}  ok\s+steps\[1\]\.approved\[0\] ship  \d+\.\d\ds  shipped by ana",
                        steps[1]), steps
    events = text.split("events:\n", 1)[1].split("final output:\n", 1)[0].splitlines()
    assert len(events) == 1
    assert re.fullmatch(rf'  {ISO}  approved  consumed → steps\[1\]  via cli by \S+  id [0-9a-f-]{{36}}  '
                        rf'{{"approver": "ana"}}', events[0]), events
    assert text.split("final output:\n", 1)[1].strip() == "shipped by ana"
    assert "resume with" not in text and "roast resume" not in text


def test_session_json_has_steps_events_waits_and_final_output(flows, roast_cmd):
    sid = roast.run(flows["deploy"]).session_id
    r = roast_cmd("session", sid, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["session_id"] == sid and doc["status"] == "waiting"
    assert doc["awaiting"] == ["approved", "rejected"]
    assert [(w["event"], w["path"]) for w in doc["waits"]] == [("approved", "steps[1]"),
                                                              ("rejected", "steps[1]")]
    assert all(re.fullmatch(ISO, w["deadline"]) for w in doc["waits"])
    assert doc["events"] == [] and doc["final_output"] in (None, "")

    roast.resume("approved", data={"approver": "bo"}, session_id=sid)
    doc = roast_cmd("session", sid, "--json").json
    assert doc["status"] == "completed" and doc["waits"] == [] and doc["cursor"] == "end"
    assert [(s["path"], s["name"], s["attempt"], s["status"], s["output"]) for s in doc["steps"]] == [
        ("steps[0]", "build", 1, "ok", "built"), ("steps[1].approved[0]", "ship", 1, "ok", "shipped by bo")]
    assert all(re.fullmatch(ISO, s["started_at"]) and re.fullmatch(ISO, s["finished_at"])
               for s in doc["steps"])
    [event] = doc["events"]
    assert (event["name"], event["data"], event["source"]) == ("approved", {"approver": "bo"}, "api")
    assert re.fullmatch(ISO, event["received_at"])
    assert doc["final_output"] == "shipped by bo"
    assert doc["output"]["ship"] == "shipped by bo"


def test_session_shows_an_interrupted_step_and_its_second_attempt(roast_cmd, tmp_path):
    flag = tmp_path / "tried"

    def flaky(ctx):
        if not flag.exists():
            flag.touch()
            raise KeyboardInterrupt  # the process "dies" inside the step
        return "second time lucky"

    with pytest.raises(KeyboardInterrupt):
        roast.run({"name": "flaky", "steps": [{"first": lambda ctx: "one"}, {"flaky": flaky}]})
    [s] = roast.sessions()
    assert s.status == "interrupted" and not s.orphaned  # stopped by a person (issue 20)
    assert roast.resume(session_id=s.id).status == "completed"

    text = roast_cmd("session", s.id).out
    assert re.search(r"interrupted\s+steps\[1\] flaky  interrupted", text), text
    assert re.search(r"ok\s+steps\[1\] flaky attempt 2  \d+\.\d\ds  second time lucky", text), text
    doc = roast_cmd("session", s.id, "--json").json
    # issue 10: the interruption (Ctrl-C here) is recorded on the step it stopped
    assert [(x["path"], x["attempt"], x["status"]) for x in doc["steps"]] == [
        ("steps[0]", 1, "ok"), ("steps[1]", 1, "interrupted"), ("steps[1]", 2, "ok")]


def test_session_shows_why_a_session_failed(in_fleet, roast_cmd):
    r = roast_cmd("session", in_fleet.ids["boom"])
    assert r.code == 0, r
    assert "status    failed" in r.out
    assert "error     steps[0]: command exited with status 7" in r.out
    assert re.search(r"failed\s+steps\[0\] build", r.out)


def test_session_with_an_unknown_id_exits_3(flows, roast_cmd):
    roast.run(flows["hello"])
    r = roast_cmd("session", "zzzz9999")
    assert r.code == 3, r
    assert "no session 'zzzz9999'" in r.err and "roast sessions" in r.err
    r = roast_cmd("session", "zzzz9999", "--json")
    assert r.code == 3 and r.json["error"]["code"] == "not_found"
    r = roast_cmd("session", "ZZ")
    assert r.code == 2 and "not a session id" in r.err


# --------------------------------------------------------------------------- roast cancel


def test_cancel_ends_a_waiting_session_and_keeps_the_reason(flows, roast_cmd, roast_home):
    sid = roast.run(flows["deploy"]).session_id
    assert count(roast_home, "continuations", sid) == 1
    r = roast_cmd("cancel", sid[:10], "--reason", "superseded by #12")
    assert r.code == 0, r
    assert f"session {sid} cancelled" in r.err
    assert count(roast_home, "continuations", sid) == 0
    assert count(roast_home, "sessions", sid) == 1
    shown = roast_cmd("session", sid).out
    assert "status    cancelled" in shown and "reason    superseded by #12" in shown
    assert "roast resume" not in shown
    doc = roast_cmd("session", sid, "--json").json
    assert doc["status"] == "cancelled" and doc["reason"] == "superseded by #12" and doc["awaiting"] == []
    r = roast_cmd("resume", "--session-id", sid, "--event", "approved")
    assert r.code == 3 and "was cancelled" in r.err


def test_cancel_json_prints_the_cancelled_session(flows, roast_cmd):
    sid = roast.run(flows["deploy"]).session_id
    r = roast_cmd("cancel", sid, "--json")
    assert r.code == 0, r
    assert r.json["session_id"] == sid and r.json["status"] == "cancelled" and r.json["reason"] is None


def test_cancel_refuses_a_finished_session_and_says_when_and_how_it_ended(flows, roast_cmd):
    done = roast.run(flows["hello"]).session_id
    r = roast_cmd("cancel", done)
    assert r.code == 3, r
    assert re.search(rf"cannot cancel session {done}: it completed at \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                     r.err)
    assert "nothing changed" in r.err
    assert roast.session(done).status == "completed"

    dropped = roast.run(flows["deploy"]).session_id
    assert roast_cmd("cancel", dropped, "--reason", "first").code == 0
    r = roast_cmd("cancel", dropped, "--reason", "second")
    assert r.code == 3 and "was cancelled at" in r.err and "(first)" in r.err
    assert roast.session(dropped).reason == "first"

    failed = roast.run(flows["boom"]).session_id
    r = roast_cmd("cancel", failed, "--json")
    assert r.code == 3 and "it failed at" in r.err
    assert r.json["error"]["exit_code"] == 3


def test_cancel_of_an_unknown_session_exits_3(roast_cmd):
    r = roast_cmd("cancel", "abcd1234")
    assert r.code == 3 and "no session 'abcd1234'" in r.err


# --------------------------------------------------------------------------- the Python API


def test_the_api_lists_reads_and_cancels_in_the_store_named_by_home(flows, tmp_path, roast_home):
    other = tmp_path / "elsewhere"
    gate = roast.run(flows["deploy"], home=other).session_id
    done = roast.run(flows["hello"], home=other).session_id

    assert [s.id for s in roast.sessions(status="waiting", home=other)] == [gate]
    assert [s.id for s in roast.sessions(home=other)] == [done, gate]
    both = roast.sessions(status=["completed", "waiting"], workflow="hello", home=other)
    assert [s.id for s in both] == [done]
    assert [s.id for s in roast.sessions(workflow=str(flows["deploy"]), home=other)] == [gate]
    assert len(roast.sessions(limit=1, home=other)) == 1

    info = roast.session(gate[:-1], home=other)  # a prefix; ids made in the same ms share 9 chars
    assert info.id == gate and info.status == "waiting" and info.workflow_name == "deploy"
    assert [a["event"] for a in info.awaiting] == ["approved", "rejected"]
    assert info.cursor == "steps[1] › wait_for_event"

    cancelled = roast.cancel(gate, reason="not needed", home=other)
    assert cancelled.status == "cancelled" and cancelled.reason == "not needed"
    assert roast.session(gate, home=other).status == "cancelled"
    assert roast.sessions(status="waiting", home=other) == []

    # the default store (ROAST_HOME) was never touched
    assert roast.sessions() == []
    assert not (roast_home / "sessions.db").exists()
    with pytest.raises(NotFound):
        roast.session(gate)


def test_api_refusals_are_roast_errors_with_exit_codes(flows):
    done = roast.run(flows["hello"]).session_id
    with pytest.raises(NotFound) as err:
        roast.session("abcd1234")
    assert err.value.exit_code == 3
    with pytest.raises(Refused) as err:
        roast.cancel(done, reason="too late")
    assert err.value.exit_code == 3 and "completed" in str(err.value)
    with pytest.raises(RoastError) as err:
        roast.sessions(status="paused")
    assert err.value.exit_code == 2


def test_a_corrupt_store_is_store_unavailable_never_a_sqlite_error(tmp_path, roast_cmd, roast_home):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sessions.db").write_bytes(b"this is not a database, just text " * 100)
    for call in (lambda: roast.sessions(home=bad), lambda: roast.session("abcd1234", home=bad),
                 lambda: roast.cancel("abcd1234", home=bad)):
        with pytest.raises(StoreUnavailable) as err:
            call()
        assert err.value.exit_code == 4
        assert not isinstance(err.value, sqlite3.Error)
        assert "damaged" in str(err.value) and str(bad / "sessions.db") in str(err.value)

    roast_home.mkdir()
    (roast_home / "sessions.db").write_bytes(b"this is not a database, just text " * 100)
    for args in (["sessions"], ["sessions", "--json"], ["session", "abcd1234"], ["cancel", "abcd1234"]):
        r = roast_cmd(*args)
        assert r.code == 4, r
        assert r.err.startswith("roast: error: the session store") and "Traceback" not in r.err
    assert roast_cmd("sessions", "--json").json["error"]["code"] == "store_unavailable"


def test_a_corrupt_store_through_a_real_process_exits_4_without_a_traceback(roast_home):
    roast_home.mkdir()
    (roast_home / "sessions.db").write_bytes(b"garbage" * 1000)
    proc = run_cli("sessions")
    assert proc.returncode == 4, proc.stderr
    assert "damaged" in proc.stderr and "Traceback" not in proc.stderr


def test_a_tampered_continuation_is_a_roast_error_not_a_pickle_error(flows, roast_home):
    sid = roast.run(flows["deploy"]).session_id
    with closing(sqlite3.connect(roast_home / "sessions.db")) as db, db:
        db.execute("UPDATE continuations SET envelope = ? WHERE session_id = ?", (b"\x80\x04garbage", sid))
    with pytest.raises(RoastError) as err:
        roast.resume("approved", data={"approver": "x"}, session_id=sid)
    assert err.value.exit_code == 3
    assert roast.session(sid).status == "waiting"


def test_session_info_is_the_public_type_of_a_session(flows):
    sid = roast.run(flows["hello"]).session_id
    assert isinstance(roast.session(sid), roast.SessionInfo)


def test_a_run_with_an_injected_clock_stamps_the_session_with_that_clock(flows):
    r = roast.run(flows["hello"], now=lambda: T0)
    s = roast.session(r.session_id)
    assert s.created_at == T0
    assert s.updated_at == T0 and s.finished_at == T0
