"""What reaches a terminal (issue 10 §4, issue 11): event data and step outputs are shown, never
obeyed; the live status line never draws over an `input:` question.

Hostile values travel the way an attacker's would: as event data, into an `each` item (so into the
cursor shown in the `where` column), into step outputs, into errors. Views are read as bytes from
real processes, through pipes (the plain path) and through a pseudo-terminal with `TERM=xterm` and
no `NO_COLOR` (the rich path). A small screen model replays the terminal bytes, so the tests assert
what a person would see, not the escape codes that got them there.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import ROOT, write_workflow

import roast

# what an attacker puts in event data, and how each must be shown
HOSTILE = {
    "[/bold]x": "[/bold]x",                                                    # crashed rich markup
    "[link=https://evil.example]click[/link]": "[link=https://evil.example]click[/link]",  # hyperlink
    "\x1b]52;c;cGF5bG9hZA==\x07": "\\e]52;c;cGF5bG9hZA==\\x07",               # OSC 52: clipboard write
    "\x1b[2J": "\\e[2J",                                                       # clear the screen
    "safe\rEVIL": "safe\\rEVIL",                                               # overwrite the line
    "\x9b2J": "\\x9b2J",                                                       # 8-bit CSI
    "txt.\u202egpj.exe": "txt.\\u202egpj.exe",                               # right-to-left override
    "\u2066a\u2069\u200f": "\\u2066a\\u2069\\u200f",                            # isolates, RLM
}
EACH = """
    name: hostile
    steps:
      - wait_for_event:
          go:
            - each: "{{ event.things }}"
              as: item
              steps:
                - echo: "$(printf '%s' {{ item }})"
                - wait_for_event:
                    next: ["$(true)"]
"""
ECHO = """
    name: echoer
    steps:
      - wait_for_event:
          go:
            - said: "$(printf '%s' {{ event.note }})"
"""
BOOM = """
    name: boomer
    steps:
      - wait_for_event:
          go: [boom]
"""
BOOM_PY = "def run(ctx):\n    raise ValueError(ctx.event['note'])\n"
ALL = "|".join(HOSTILE)
SHOWN = "|".join(HOSTILE.values())
SGR = re.compile(rb"\x1b\[[0-9;]*m")


def _env(**more: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "400", "LINES": "50", **more}
    env.pop("NO_COLOR", None)
    return env


def roast_bytes(*args: str) -> subprocess.CompletedProcess[bytes]:
    """A real `roast` process on pipes, read as bytes (text mode would turn a CR into a newline)."""
    return subprocess.run([sys.executable, "-m", "roast", *args], capture_output=True, env=_env(), timeout=60,
                          check=False)


def clean(raw: bytes) -> str:
    """The text, after checking that nothing in it can drive a terminal."""
    text = raw.decode()
    assert "Traceback" not in text and "internal error" not in text, text
    for byte in ("\x1b", "\x07", "\r", "\x9b"):
        assert byte not in text, f"raw {byte!r} in {text!r}"
    return text


@pytest.fixture
def hostile(tmp_path: Path) -> dict[str, str]:
    """One session per hostile value, each waiting inside `each item=<value>` after echoing it."""
    path = write_workflow(tmp_path, EACH, name="hostile")
    made = {}
    for value in HOSTILE:
        sid = roast.run(path).session_id
        assert roast.resume("go", data={"things": [value]}, session_id=sid).status == "waiting"
        made[value] = sid
    return made


# --------------------------------------------------------------------------- pipes: the plain path


def test_hostile_values_are_shown_escaped_in_the_plain_sessions_listing(hostile):
    proc = roast_bytes("sessions")
    assert proc.returncode == 0, proc.stderr
    text = clean(proc.stdout)
    for value, shown in HOSTILE.items():
        [line] = [line for line in text.splitlines() if line.startswith(hostile[value][:8])]
        assert f"each item={shown} (1/1)" in line, line


def test_hostile_values_are_shown_escaped_in_roast_session(hostile):
    for value, shown in HOSTILE.items():
        proc = roast_bytes("session", hostile[value])
        assert proc.returncode == 0, proc.stderr
        text = clean(proc.stdout)
        assert f"cursor    steps[0] › on go › steps[0].go[0] › each item={shown} (1/1)" in text, text
        step = r"ok\s+steps\[0\]\.go\[0\]\.steps\[0\]#1 echo  \d+\.\d\ds  "
        assert re.search(step + re.escape(shown), text), text
        # the event data, as JSON (which escapes C0 controls itself) made visible
        assert "things" in text.split("events:", 1)[1]
    # --json is data, not a view: it keeps the value exactly
    doc = json.loads(roast_bytes("session", hostile["\x1b[2J"], "--json").stdout)
    assert doc["steps"][0]["output"] == "\x1b[2J"


def test_hostile_values_in_notices_and_errors_on_stderr_are_escaped(tmp_path):
    echo = write_workflow(tmp_path, ECHO, name="echoer")
    boom = write_workflow(tmp_path, BOOM, {"boom.py": BOOM_PY}, name="boomer")
    assert roast.run(echo).status == "waiting" and roast.run(boom).status == "waiting"
    data = json.dumps({"note": ALL})

    proc = roast_bytes("resume", str(echo), "-e", "go", "-d", data)
    assert proc.returncode == 0, proc.stderr
    clean(proc.stderr)
    assert proc.stdout.decode() == ALL + "\n"  # to a pipe the final output is data: byte for byte

    proc = roast_bytes("resume", str(boom), "-e", "go", "-d", data)
    assert proc.returncode == 1
    err = clean(proc.stderr)
    assert f"ValueError: {SHOWN}" in err, err
    listing = clean(roast_bytes("sessions").stdout)
    assert "boomer" in listing


def test_an_error_printed_by_the_cli_shows_event_data_escaped(tmp_path):
    echo = write_workflow(tmp_path, ECHO, name="echoer")
    roast.run(echo)
    proc = roast_bytes("resume", str(echo), "-e", "\x1b[2Jgo\x07")
    assert proc.returncode in (2, 3), proc.stderr
    assert "go" in clean(proc.stderr)


# --------------------------------------------------------------------------- a pseudo-terminal


def in_pty(args: list[str], answers: dict[bytes, bytes] | None = None, stdout: Path | None = None,
           cols: int = 200) -> bytes:
    """Run `roast ARGS` with stdin and stderr (and stdout, unless given a file) on a new
    pseudo-terminal; type each answer once its question has appeared; return every byte the
    terminal received."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    out = open(stdout, "wb") if stdout else None  # noqa: SIM115 - closed below, after the spawn
    try:
        proc = subprocess.Popen([sys.executable, "-m", "roast", *args], stdin=slave, stdout=out or slave,
                                stderr=slave, env=_env(COLUMNS=str(cols)), start_new_session=True)
    finally:
        os.close(slave)
        if out:
            out.close()
    pending = dict(answers or {})
    seen = bytearray()
    try:
        while True:
            # a hang guard, not synchronisation: every read returns as soon as bytes arrive
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"roast printed nothing for 60 s; so far: {bytes(seen)!r}"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed, the process is done
                break
            if not chunk:
                break
            seen += chunk
            for question in [q for q in pending if q in seen]:
                os.write(master, pending.pop(question))
    finally:
        os.close(master)
        proc.wait(timeout=60)
    assert not pending, f"never asked {list(pending)}: {bytes(seen)!r}"
    return bytes(seen)


CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")
OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def screen(raw: bytes) -> list[str]:
    """The lines a terminal shows after `raw`: text, CR, LF, and the cursor and erase codes rich
    uses (up, down, column, erase line, erase screen); colours are ignored."""
    lines: list[list[str]] = [[]]
    row = col = 0
    text = raw.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\x1b":
            match = CSI.match(text, i) or OSC.match(text, i)
            if match is None:
                i += 1
                continue
            if match.re is CSI:
                params, command = match.group(1), match.group(2)
                n = int(params) if params.isdigit() else None
                while len(lines) <= row:
                    lines.append([])
                line = lines[row]
                if command == "A":
                    row = max(0, row - (n or 1))
                elif command == "B":
                    row += n or 1
                elif command == "C":
                    col += n or 1
                elif command == "D":
                    col = max(0, col - (n or 1))
                elif command == "G":
                    col = (n or 1) - 1
                elif command == "K":
                    if not n:
                        del line[col:]
                    elif n == 1:
                        line[:col] = [" "] * min(col, len(line))
                    else:
                        line.clear()
                elif command == "J" and n == 2:
                    lines = [[] for _ in lines]
            i = match.end()
            continue
        if char == "\r":
            col = 0
        elif char == "\n":
            row += 1
        elif char == "\b":
            col = max(0, col - 1)
        elif char >= " ":
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in lines]


def no_hostile_codes(raw: bytes) -> None:
    """Nothing an attacker wrote reaches the terminal as a code: no OSC (hyperlinks, clipboard),
    no clear-screen, no bell, no 8-bit CSI. (rich's own cursor codes are allowed.)"""
    for code in (b"\x1b]", b"\x1b[2J", b"\x07", "\x9b".encode()):
        assert code not in raw, f"{code!r} reached the terminal: {raw!r}"
    assert b"Traceback" not in raw and b"internal error" not in raw, raw


def test_the_sessions_table_on_a_terminal_shows_hostile_cursors_as_text(hostile):
    raw = in_pty(["sessions"], cols=400)
    no_hostile_codes(raw)
    rest = SGR.sub(b"", raw).replace(b"\r\n", b"\n")
    assert b"\x1b" not in rest and b"\r" not in rest, rest  # a table needs colours, nothing else
    shown = screen(raw)
    assert any(line.startswith("id ") for line in shown), shown
    for value, text in HOSTILE.items():
        [line] = [line for line in shown if line.startswith(hostile[value][:8])]
        assert f"each item={text} (1/1)" in line, line


def test_a_resume_on_a_terminal_shows_event_data_and_output_escaped(tmp_path):
    echo = write_workflow(tmp_path, ECHO, name="echoer")
    boom = write_workflow(tmp_path, BOOM, {"boom.py": BOOM_PY}, name="boomer")
    roast.run(echo)
    roast.run(boom)
    data = json.dumps({"note": ALL})

    raw = in_pty(["resume", str(echo), "-e", "go", "-d", data])
    no_hostile_codes(raw)
    shown = screen(raw)
    assert SHOWN in shown, shown  # the final output, on a terminal: visible, on its own line
    assert any("completed" in line for line in shown), shown

    raw = in_pty(["resume", str(boom), "-e", "go", "-d", data])
    no_hostile_codes(raw)
    assert any(f"ValueError: {SHOWN}" in line for line in screen(raw)), screen(raw)


# --------------------------------------------------------------------------- prompts and the live line


ASK = """
    steps:
      - first: "$(echo built)"
      - answer:
          input: {prompt: "Ship it?", type: text}
      - "$(echo you said {{ output.answer }})"
"""


def test_an_input_question_on_a_terminal_is_not_drawn_over_and_the_answer_stays_visible(tmp_path):
    path = write_workflow(tmp_path, ASK)
    shown = screen(in_pty(["execute", str(path)], answers={b"Ship it?": b"yes\n"}))
    assert "Ship it? yes" in shown, shown
    assert "you said yes" in shown, shown
    assert any(line.startswith("✓ steps[1] answer") for line in shown), shown


def test_with_stdout_redirected_the_question_is_asked_on_the_terminal_and_kept_out_of_the_file(tmp_path):
    path = write_workflow(tmp_path, ASK)
    results = tmp_path / "out.txt"
    shown = screen(in_pty(["execute", str(path)], answers={b"Ship it?": b"yes\n"}, stdout=results))
    assert "Ship it? yes" in shown, shown  # the question, then what was typed, on a line of their own
    assert results.read_text() == "you said yes\n"


def test_a_question_asked_by_a_timeout_branch_under_wait_is_not_drawn_over_by_the_waiting_line(tmp_path):
    path = write_workflow(tmp_path, """
        steps:
          - wait_for_event:
              approved: ["$(echo approved)"]
              timeout:
                - answer:
                    input: {prompt: "Nobody approved. Ship anyway?", type: text}
                - "$(echo you said {{ output.answer }})"
              within: 1s
    """)
    shown = screen(in_pty(["execute", str(path), "--wait"], answers={b"Ship anyway?": b"no\n"}))
    assert "Nobody approved. Ship anyway? no" in shown, shown
    assert "you said no" in shown, shown
