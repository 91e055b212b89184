"""Issue 22: the gate a person sees. A wait's `title:`, `description:` and `labels:` are checked
when the workflow loads and rendered when the wait is reached, into the `WaitInfo` the session
suspends with; `roast validate` warns about schemas a page cannot send and about `event.X` a
branch reads that the event's schema does not declare."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import roast
from conftest import ROOT, run_cli
from roast import api, steps
from roast.cli import main
from roast.compiler import compile_workflow
from roast.context import Context, WorkflowInfo
from roast.errors import WorkflowInvalid
from roast.requests import Delivery, Receive, Suspend
from roast.workflow import load

GATE = """
    steps:
      - version: $(echo 1.4.2)
      - summarize: $(printf 'line one\\nline two')
      - approval:
          wait_for_event:
            title: "Deploy {{ output.version }} to production?"
            description: "{{ output.summarize }}"
            labels: {approved: "Approve and deploy {{ output.version }}", rejected: Reject}
            within: 2h
            approved: ["$(echo yes)"]
            rejected: ["$(echo no)"]
"""


def suspended(path: Path, outputs: dict[str, Any]) -> Suspend:
    """Drive the compiled tree up to its wait as the runner would, with these outputs."""
    root = compile_workflow(load(path))
    ctx = Context(WorkflowInfo("t", str(path)))
    ctx.output.update(outputs)
    wait = root.steps[-1]
    gen = wait.run(ctx, steps.HERE)
    assert isinstance(next(gen), Receive)
    request = gen.send(Delivery(7200.0, None))
    assert isinstance(request, Suspend)
    return request


def test_the_title_description_and_labels_are_rendered_into_the_wait_the_session_rests_on(wf):
    path = wf(GATE)
    [info] = suspended(path, {"version": "1.4.2", "summarize": "line one\nline two"}).waits
    assert info.title == "Deploy 1.4.2 to production?"
    assert info.description == "line one\nline two"  # line breaks kept
    assert info.labels == (("approved", "Approve and deploy 1.4.2"), ("rejected", "Reject"))


def test_a_title_that_fails_to_render_keeps_the_failing_part_as_written_and_the_session_waits(wf):
    path = wf(GATE)
    [info] = suspended(path, {"summarize": "s"}).waits  # no `version` output yet
    assert info.title == "Deploy {{ output.version }} to production?"
    assert info.description == "s"


def test_a_workflow_with_a_gate_runs_to_its_wait(wf):
    result = roast.run(wf(GATE))
    assert result.status == "waiting" and result.awaiting == ["approved", "rejected"], result


def test_a_wait_without_a_gate_has_none(wf):
    path = wf("steps:\n  - wait_for_event: {ok: ['$(echo)'], within: 1h}\n")
    [info] = suspended(path, {}).waits
    assert (info.title, info.description, info.labels) == (None, None, ())


def test_a_label_for_an_undeclared_event_is_an_error_with_a_did_you_mean(wf, capsys):
    path = wf("""
        steps:
          - wait_for_event:
              labels: {aproved: "Approve", rejected: 3}
              title: [not, text]
              approved: ["$(echo yes)"]
              rejected: ["$(echo no)"]
              within: 1h
    """)
    with pytest.raises(WorkflowInvalid) as info:
        compile_workflow(load(path))
    found = [str(p) for p in info.value.problems]
    assert len(found) == 3, found
    assert any("workflow.yml:3" in p and "'aproved'" in p and "did you mean 'approved'?" in p for p in found)
    assert any("workflow.yml:3" in p and "label of 'rejected' is text, not 3" in p for p in found)
    assert any("workflow.yml:4" in p and "`title:` is text" in p for p in found)
    assert main(["execute", str(path)]) == 2
    assert "did you mean 'approved'?" in capsys.readouterr().err
    assert api.list_sessions().rows == []


def test_a_title_template_with_a_syntax_error_is_found_at_load(wf, capsys):
    path = wf("steps:\n  - wait_for_event: {ok: ['$(echo)'], within: 1h, title: 'Ship {{ 1 + }}?'}\n")
    assert main(["validate", str(path)]) == 2
    assert "{{ 1 + }} is not a valid expression" in capsys.readouterr().err


def test_validate_warns_about_a_schema_a_page_cannot_send_naming_the_property(wf):
    path = wf("""
        steps:
          - wait_for_event:
              within: 1h
              schema:
                approved:
                  type: object
                  properties: {approver: {type: string}, servers: {type: array, items: {type: string}}}
              approved: ["$(echo yes)"]
    """)
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "roast: warning:" in proc.stderr and "a page cannot send 'approved'" in proc.stderr
    assert "'servers'" in proc.stderr and "hint:" in proc.stderr and "'approver'" not in proc.stderr


def test_validate_warns_when_a_branch_reads_an_event_field_its_schema_does_not_declare(wf, capsys):
    path = wf("""
        steps:
          - wait_for_event:
              within: 1h
              schema:
                approved: {type: object, properties: {approver: {type: string}}}
              approved:
                - $(echo {{ event.aprover }} {{ event.approver }} {{ event.get('note', '') }})
                - wait_for_event:
                    within: 1h
                    merged: ["$(echo {{ event.sha }})"]
                    timeout: ["$(echo {{ event.deadline }})"]
              rejected: ["$(echo {{ event.reason }})"]
    """)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "workflow.yml:7" in err and "reads `event.aprover`" in err and "did you mean 'approver'?" in err
    assert "event.approver`" not in err and "event.note" not in err
    assert "event.sha" not in err and "event.reason" not in err  # no schema for those events
    assert "event.deadline" not in err  # an inner wait's timeout branch reads its own event


def test_a_real_validate_process_shows_the_gate_mistakes(wf):
    path = wf("steps:\n  - wait_for_event: {ok: ['$(echo)'], within: 1h, labels: {okay: Fine}}\n")
    proc = subprocess.run([sys.executable, "-m", "roast", "validate", str(path)], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert proc.returncode == 2 and "did you mean 'ok'?" in proc.stderr, proc.stderr
