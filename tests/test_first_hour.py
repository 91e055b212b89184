"""Issue 24, the first hour round two: each mistake a new user met, through the `roast` command."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, write_workflow

TWO_WAITS = """
steps:
  - wait_for_event:
      approved:
        - got: "$(echo got {{ event.items }} {{ event['keys'] }})"
  - wait_for_event:
      done: [$(echo fin)]
"""


def test_event_data_keys_named_like_dict_methods_are_data_through_a_suspend_and_the_end(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, TWO_WAITS)
    assert run_cli("execute", str(wf)).returncode == 0
    data = json.dumps({"items": "x", "keys": "k", "values": [1], "get": {"items": 2}})
    paused = run_cli("resume", str(wf), "-e", "approved", "--event-data", data, "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["status"] == "waiting"
    assert json.loads(paused.stdout)["output"]["got"] == "got x k"
    done = run_cli("resume", str(wf), "-e", "done", "--event-data", data, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    shown = run_cli("session", json.loads(done.stdout)["session_id"], "--json")
    assert shown.returncode == 0, shown.stderr


def test_a_refused_delivery_of_malformed_data_has_the_outcome_invalid_in_json(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, TWO_WAITS)
    assert run_cli("execute", str(wf)).returncode == 0
    for data in ("[1, 2]", "{bad", '{"n": NaN}'):
        refused = run_cli("resume", str(wf), "-e", "approved", "--event-data", data, "--json")
        assert refused.returncode == 2, refused.stderr
        doc = json.loads(refused.stdout)
        assert (doc["outcome"], doc["event"], doc["error"]["code"]) == ("invalid", "approved", "invalid"), doc
