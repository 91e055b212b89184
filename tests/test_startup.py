"""Start-up is part of the product (STYLE): what each command loads, checked by module, not by clock."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

import roast

# issue 12: none of these on the resume path (the optional extras load only where they are used)
HEAVY = ("typing", "dataclasses", "socket", "uuid", "getpass", "tempfile", "queue", "starlette", "uvicorn",
         "psycopg", "openai", "jsonschema")
PROBE = """
import json, sys
HEAVY = %r
from roast.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules
                  if m.split(".")[0] in ("cloudpickle", "rich", "yaml", "roast", *HEAVY))}), file=sys.stderr)
""" % (HEAVY,)


def _modules(*args: str) -> tuple[int, set[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    doc = json.loads(proc.stderr.strip().splitlines()[-1])
    return doc["code"], set(doc["modules"])


def test_resuming_a_yaml_workflow_loads_neither_cloudpickle_nor_rich(wf):
    path = wf("""
        steps:
          - $(echo one)
          - wait_for_event:
              approved: ["$(echo approved)"]
    """)
    assert roast.run(path).status == "waiting"
    code, modules = _modules("resume", str(path), "-e", "approved")
    assert code == 0
    assert "cloudpickle" not in modules and "rich" not in modules, sorted(modules)
    # unchanged since the pause: the compiled tree saved with the session is used, nothing is parsed
    assert "yaml" not in modules, sorted(modules)
    assert not set(HEAVY) & modules, sorted(set(HEAVY) & modules)
    assert roast.sessions()[0].status == "completed"


def test_listing_sessions_on_a_pipe_loads_no_yaml_no_step_tree_no_rich(wf):
    assert roast.run(wf("steps: ['$(echo hi)']")).status == "completed"
    code, modules = _modules("sessions")
    assert code == 0
    assert not {"yaml", "rich", "roast.steps", "roast.workflow", "roast.yaml_lines", "cloudpickle"} & modules, sorted(modules)


def test_state_holding_code_still_round_trips_through_cloudpickle():
    offset = 41
    flow = {"steps": [{"compute": lambda ctx: offset + 1},
                      {"wait_for_event": {"go": [{"after": lambda ctx: ctx.output["compute"] * 2}]}}]}
    first = roast.run(flow)
    assert first.status == "waiting"
    done = roast.resume("go", session_id=first.session_id)
    assert done.status == "completed" and done.output["after"] == 84


def test_a_step_file_edited_after_the_pause_is_read_again(wf):
    path = wf("""
        steps:
          - wait_for_event:
              approved: [notify]
    """, files={"notify/prompt.md": "old text"})
    first = roast.run(path)
    (path.parent / "notify" / "prompt.md").write_text("new text")
    done = roast.resume("approved", session_id=first.session_id)
    assert done.status == "completed" and done.output["notify"] == "new text"
    assert any("changed" in w for w in done.warnings), done.warnings


def test_a_step_file_that_appears_and_takes_precedence_is_noticed(wf):
    path = wf("""
        steps:
          - wait_for_event:
              approved: [notify]
    """, files={"notify.py": "def run(ctx):\n    return 'from python'\n"})
    first = roast.run(path)
    # notify/prompt.md is looked up before notify.py: a fresh load would now pick the prompt
    (path.parent / "notify").mkdir()
    (path.parent / "notify" / "prompt.md").write_text("from the prompt")
    done = roast.resume("approved", session_id=first.session_id)
    assert done.status == "completed" and done.output["notify"] == "from the prompt"


def test_a_postgresql_store_loads_psycopg_only_for_a_store_operation(tmp_path, monkeypatch):
    """Issue 25: importing psycopg costs ~110 ms; a command that fails its checks, or needs no store,
    never pays it (the URL names no server: nothing may try to connect either)."""
    monkeypatch.setenv("ROAST_STORE", "postgresql://nobody@127.0.0.1:1/nothing")
    workflow = tmp_path / "workflow.yml"
    workflow.write_text("name: v\nsteps:\n  - $(echo hi)\n")
    for args in (["validate", str(workflow)], ["key", "new"], ["resume", str(tmp_path / "gone.yml"), "-e", "go"],
                 ["execute", str(tmp_path / "gone.yml")]):
        code, modules = _modules(*args)
        assert "psycopg" not in modules, (args, code)
    code, modules = _modules("sessions")
    assert code == 4 and "psycopg" in modules  # a store operation: loaded, then the server is unreachable
