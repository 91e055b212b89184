"""Shared fixtures: a private ROAST_HOME per test and a workflow writer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ran:
    """What one `roast` command showed: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:  # shown by pytest when an assert on it fails
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@pytest.fixture(autouse=True)
def roast_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # a stray ~/.roast lands here
    monkeypatch.setenv("ROAST_HOME", str(tmp_path / "roast-home"))
    monkeypatch.delenv("ROAST_SECRET_KEY_FILE", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path / "roast-home"


def write_workflow(directory: Path, yaml_text: str, files: dict[str, str] | None = None,
                   name: str = "wf") -> Path:
    """Write `<directory>/<name>/workflow.yml` (dedented) plus step files; return the yml path."""
    wf_dir = directory / name
    wf_dir.mkdir(parents=True, exist_ok=True)
    path = wf_dir / "workflow.yml"
    path.write_text(textwrap.dedent(yaml_text).lstrip("\n"))
    for rel, content in (files or {}).items():
        target = wf_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(content).lstrip("\n"))
        if rel.endswith(".sh"):
            target.chmod(0o755)
    return path


@pytest.fixture
def wf(tmp_path: Path):
    """`wf(yaml, files)` writes a workflow under tmp_path and returns its path."""
    def make(yaml_text: str, files: dict[str, str] | None = None, name: str = "wf") -> Path:
        return write_workflow(tmp_path, yaml_text, files, name)
    return make


def run_cli(*args: str, cwd: Path | None = None, input: str | None = None,
            env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a real `python -m roast` process with the test's environment."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "roast", *args], capture_output=True, text=True,
                          cwd=cwd, input=input, env=full_env, timeout=timeout, check=False)
