"""The man page is built from `build_parser()` by argparse-manpage and installed with the package."""
from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from roast.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_of_every_subcommand_says_what_it_does_and_its_default():
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            if isinstance(action, argparse._HelpAction):
                continue
            assert "default" in action.help or "required" in action.help, \
                f"`roast {name} {action.option_strings[0]}` help does not state its default: {action.help!r}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the test extra installs both (README's test command); elsewhere the build cannot run offline
    pytest.importorskip("wheel", reason="needs the `wheel` package from the test extra")
    pytest.importorskip("build_manpages", reason="needs argparse-manpage from the test extra")
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("roast-*.whl"))


def test_the_wheel_installs_a_man_page_naming_every_subcommand_and_option(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith("share/man/man1/roast.1")]
        assert names, zf.namelist()
        page = zf.read(names[0]).decode()
    assert page.startswith(".TH ROAST") or ".TH" in page[:500]
    text = page.replace("\\-", "-")
    for name, sub in _subparsers(build_parser()).items():
        assert f"roast {name}" in text or f"\\fB{name}\\fR" in page or name in text, name
        for option in _options(sub) - {"-h", "--help"}:
            assert option in text, f"`roast {name} {option}` is missing from the man page"
