"""The man page is built from `build_parser()` by argparse-manpage and installed with the package,
by a normal install and by an editable one (issue 11)."""
from __future__ import annotations

import argparse
import os
import re
import shutil
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
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("roast_workflows-*.whl"))  # the distribution is roast-workflows (issue 24)


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


@pytest.fixture(scope="module")
def page(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith("share/man/man1/roast.1")]
        return zf.read(name).decode()


def sections(page: str) -> dict[str, str]:
    """`.SH NAME` (or `.SH` and the name on the next line) → the roff text up to the next `.SH`."""
    found: dict[str, str] = {}
    lines = page.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith(".SH"):
            heading = lines[i][3:].strip().strip('"')
            if not heading:
                i += 1
                heading = lines[i].strip()
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith(".SH"):
                body.append(lines[i])
                i += 1
            found[heading] = "\n".join(body).replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")
        else:
            i += 1
    return found


def variables_roast_reads() -> set[str]:
    """Every environment variable named in a read of the environment in roast/*.py."""
    names: set[str] = set()
    for path in (ROOT / "roast").glob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"(?:environ|env)\.get\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"getenv\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    # read through a variable: seal.py's key files, providers' key table
    return names | {"ROAST_KEY_FILE", "ROAST_SECRET_KEY_FILE", "OPENROUTER_API_KEY"}


def test_the_man_page_has_the_sections_of_a_real_manual(page: str):
    assert "Generated Python Manual" not in page
    assert re.match(r'\.TH ROAST "1" "[^"]+" "roast [0-9][0-9a-z.+]*" "User Commands"', page), page[:200]
    found = sections(page)
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES",
                    "EXAMPLES", "SEE ALSO"):
        assert found.get(heading, "").strip(), f"the man page has no {heading} section: {list(found)}"
    assert re.fullmatch(r"roast - \S.{20,}", found["NAME"].strip()), found["NAME"]
    commands = _subparsers(build_parser())
    for name in commands:
        assert f"roast\n.B {name}" in found["SYNOPSIS"].replace(".B roast\n", "roast\n"), name
        assert f".SS roast {name}" in found["COMMANDS"], name
    assert "workflow.yml" in found["DESCRIPTION"] and "wait_for_event" in found["DESCRIPTION"]
    assert "{{ expr }}" in found["DESCRIPTION"]  # the workflow file format, in brief


def test_the_man_page_names_every_environment_variable_roast_reads(page: str):
    environment = sections(page)["ENVIRONMENT"]
    documented = set(re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", environment))
    needed = variables_roast_reads() | {"ROAST_HOME", "ROAST_STORE", "ROAST_KEY", "ROAST_KEY_FILE",
                                        "ROAST_BUSY_TIMEOUT", "ROAST_MAX_EVENT_BYTES", "NO_COLOR"}
    assert needed <= documented, f"not in ENVIRONMENT: {sorted(needed - documented)}"


def test_the_man_page_lists_the_files_and_every_exit_status(page: str):
    found = sections(page)
    for name in ("$ROAST_HOME/sessions.db", "$ROAST_HOME/secret.key", "$ROAST_HOME/locks/"):
        assert name in found["FILES"], name
    statuses = re.findall(r"^\.TP\n\.B (\S+)", found["EXIT STATUS"], re.MULTILINE)
    assert statuses[:6] == ["0", "1", "2", "3", "4", "128+N"], statuses
    assert "roast execute" in found["EXAMPLES"] and "roast resume" in found["EXAMPLES"]


@pytest.fixture(scope="module")
def editable_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build_manpages", reason="needs argparse-manpage from the test extra")
    out = tmp_path_factory.mktemp("editable")
    build = "import setuptools.build_meta as b, sys; b.build_editable(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", build, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("roast_workflows-*.whl"))  # the distribution is roast-workflows (issue 24)


def test_man_still_finds_the_page_after_an_install_and_then_an_editable_install(
        wheel: Path, editable_wheel: Path, tmp_path: Path):
    """The README's two set-up commands in one environment: `pip install .`, then `pip install -e`.
    pip removes the first install's files, the man page with them; the editable one must bring it
    back (setuptools' editable wheels carry no data files of their own)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    page = venv / "share" / "man" / "man1" / "roast.1"
    for built in (wheel, editable_wheel):
        proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                               "--no-index", "-q", str(built)], capture_output=True, text=True, timeout=300,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert page.is_file(), f"no man page after installing {built.name}"
    assert ".SH ENVIRONMENT" in page.read_text()
    man = shutil.which("man")
    if man is None:
        pytest.skip("no man(1) here to look the page up with")
    # man(1) finds pages beside the bin/ directories on PATH (man-db's manpath), and through MANPATH
    env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for manpath in (None, str(venv / "share" / "man")):
        if manpath:
            env["MANPATH"] = manpath
        found = subprocess.run([man, "-w", "roast"], capture_output=True, text=True, env=env, timeout=60,
                               check=False)
        assert Path(found.stdout.strip()) == page, found
