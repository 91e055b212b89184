"""Issue 11: a session never fails after its event was consumed for something `roast validate` could
have said. Everything here is found by `compiler.compile_workflow`, so `execute` refuses it (exit 2)
before any session is created."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import roast
from roast import workflow
from roast.cli import main
from roast.errors import WorkflowInvalid
from roast.store import Store

T0 = 1_800_000_000.0


def refused(capsys: pytest.CaptureFixture[str], path: Path, command: str = "validate") -> str:
    """Run the CLI on a bad workflow: exit 2, nothing on stdout, no session; return stderr."""
    code = main([command, str(path)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == "" and err.startswith("roast: error: ") and "Traceback" not in err
    assert Store().list()[0] == []
    return err


def problems(path: Path) -> list[WorkflowInvalid]:
    """`roast.run(path)` raises WorkflowInvalid; its problems, each with its file:line."""
    with pytest.raises(WorkflowInvalid) as info:
        roast.run(path)
    assert Store().list()[0] == []
    return list(info.value.problems) or [info.value]


def where(problem: WorkflowInvalid) -> str:
    """`workflow.yml:7` (or `x.py:2`): the file's name and the line, whatever the directory."""
    return Path(str(problem.where)).name


# --- 9. long lists of problems ------------------------------------------------------------------

def test_at_most_twenty_problems_are_listed_but_all_are_kept(wf, capsys):
    path = wf("steps:\n" + "".join(f"  - missing_{i}\n" for i in range(25)))
    assert len(problems(path)) == 25
    err = refused(capsys, path)
    assert "25 problems" in err and "missing_19" in err and "missing_20" not in err
    assert "… and 5 more" in err


# --- 11. path display and lookup ------------------------------------------------------------------

def test_validate_of_a_moved_workflow_lists_each_path_it_tried_once(wf, tmp_path, capsys):
    path = wf("steps: ['$(echo hi)']", name="mv1")
    shutil.move(str(path.parent), str(tmp_path / "mv2"))
    assert main(["validate", str(tmp_path / "mv1" / "workflow.yml")]) == 2
    err = capsys.readouterr().err
    assert "workflow.yml/workflow.yml" not in err
    assert err.count("mv1/workflow.yml") == 2, err  # once in the argument, once in what was tried
    assert main(["validate", str(tmp_path / "mv1")]) == 2
    err = capsys.readouterr().err
    assert err.count("mv1/workflow.yml") == 1 and str(Path("roast", "mv1")) not in err, err


def test_shown_paths_are_the_shorter_of_relative_and_absolute(tmp_path):
    deep = tmp_path / "a" / "b" / "c.yml"
    assert workflow._shown(deep, tmp_path) == str(Path("a", "b", "c.yml"))
    far = tmp_path.joinpath(*["d"] * 40)  # from here the relative form is the longer one
    assert workflow._shown(deep, far) == str(deep)
    assert workflow._shown(tmp_path / "x" / ".." / "a" / "c.yml", far) == str(tmp_path / "a" / "c.yml")
    assert workflow._shown(Path("a", "b", "c.yml"), tmp_path) == str(Path("a", "b", "c.yml"))
