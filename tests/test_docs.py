"""The README is checked by tests: its commands exist, and CI runs exactly its test command."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from roast.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _fenced_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```(?:sh|console)\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            line = line.removeprefix("$ ").strip()
            for part in re.split(r"&&|\|", line):
                part = part.strip()
                if part.startswith("roast "):
                    lines.append(part.split("#")[0].strip())
    return lines


def test_the_readme_opens_with_the_two_fresh_machine_commands():
    blocks = re.findall(r"```sh\n(.*?)```", README, re.DOTALL)
    install = re.search(r"pip install (\S+)", blocks[0])
    assert install and install.group(1).strip("'\"").startswith(".") and "roast execute examples/deploy" in blocks[0]
    assert "roast resume examples/deploy --event approved" in blocks[0]
    # the main example must run on what the command installs: its schemas need the `schema` extra
    if "schema:" in (ROOT / "examples" / "deploy" / "workflow.yml").read_text():
        assert "schema" in install.group(1), "the main example declares schema: but command 1 lacks [schema]"
    assert "pytest" in blocks[1]
    assert (ROOT / "examples" / "deploy" / "workflow.yml").is_file()


def test_ci_runs_exactly_the_readme_test_command():
    test_command = re.findall(r"```sh\n(.*?)```", README, re.DOTALL)[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_ci_runs_the_crash_sweeps_it_leaves_out_of_the_readme_command_as_a_step_of_their_own():
    """Issue 20: the whole suite still runs; the crash sweeps get a step (and a timing) of their own."""
    ci = (ROOT / ".ci" / "run").read_text()
    [listed] = re.findall(r"^sweeps=\((.*)\)$", ci, re.MULTILINE)
    sweeps = listed.split()
    assert sweeps and all((ROOT / f).is_file() for f in sweeps)
    assert "python -m pytest -m 'not slow' \"${sweeps[@]/#/--ignore=}\"" in ci
    assert "python -m pytest -m 'not slow' \"${sweeps[@]}\"" in ci


def test_every_command_and_option_in_the_readme_exists():
    subs = _subparsers()
    commands = _fenced_commands()
    assert len(commands) >= 10
    for line in commands:
        words = line.split()
        assert words[1] in subs or words[1] == "--version", f"README uses unknown `{line}`"
        if words[1] not in subs:
            continue
        known = {o for a in subs[words[1]]._actions for o in a.option_strings}
        for word in words[2:]:
            if word.startswith("-") and word != "-":
                assert word.split("=")[0] in known, f"README uses unknown option {word} in `{line}`"
