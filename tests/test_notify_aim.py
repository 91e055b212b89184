"""Issue 21: a notify webhook cannot be aimed by whoever sends an event.

`webhook: "{{ event.callback }}"` let the sender of `submitted` choose where the next wait's
approval links went, and approve their own request. `roast validate` (and every run, before a
session exists) refuses a webhook URL built from event data; one the workflow or the operator
(`env.*`) wrote is fine.
"""
from __future__ import annotations

import pytest
from conftest import write_workflow

from roast import api
from roast.cli import main

AIMED = """
    name: expenses
    steps:
      - wait_for_event:
          submitted:
            - wait_for_event:
                approved: ["$(echo paid)"]
                notify:
                  - webhook: "{url}"
"""


@pytest.mark.parametrize("url", ["{{ event.callback }}", "https://{{ event.host }}/roast",
                                 "https://hooks.example.com/{{ event['channel'] }}", "{{event.data.cb}}",
                                 "https://h/{{ delivery.reason }}"])
def test_validate_refuses_a_webhook_url_built_from_event_data(tmp_path, capsys, url):
    wf = write_workflow(tmp_path, AIMED.replace("{url}", url))
    assert main(["validate", str(wf)]) == 2
    err = capsys.readouterr().err
    assert "built from event data" in err and "approval links" in err and "env." in err
    assert "workflow.yml:" in err
    assert main(["execute", str(wf)]) == 2  # and nothing runs
    assert api.list_sessions().rows == []


@pytest.mark.parametrize("url", ["https://hooks.example.com/roast", "{{ env.HOOK_URL }}",
                                 "https://hooks.example.com/{{ workflow.name }}?prevent={{ env.TOKEN }}"])
def test_a_webhook_url_the_author_or_operator_wrote_is_valid(tmp_path, capsys, url):
    wf = write_workflow(tmp_path, AIMED.replace("{url}", url))
    assert main(["validate", str(wf)]) == 0, capsys.readouterr().err


LINKED = """
    name: expenses
    steps:
      - cb: $(echo {cb})
      - wait_for_event:
          approved: ["$(echo paid)"]
          notify:
            - webhook: "{url}"
"""


def _received_links(tmp_path, url_template: str, cb: str, env: dict[str, str]) -> dict:
    import json
    import os

    from _receiver import receiving
    from conftest import run_cli

    with receiving() as (url, got):
        wf = write_workflow(tmp_path, LINKED.replace("{url}", url_template).replace("{cb}", cb.replace("URL", url)))
        ran = run_cli("execute", str(wf), "--json",
                      env={**os.environ, "HOOK_URL": url, "ROAST_PUBLIC_URL": "https://roast.example.com", **env})
        assert ran.returncode == 0, ran.stderr
    assert len(got.seen) == 1, ran.stderr
    return json.loads(got.seen[0][1])


def test_approval_links_go_only_to_a_url_the_author_or_operator_wrote(tmp_path):
    written = _received_links(tmp_path / "a", "{{ env.HOOK_URL }}", "nothing", {})
    assert written["links"]["approved"].startswith("https://roast.example.com/a/")
    # a URL made at run time from a step's output (which may hold event data): the details, no links
    made = _received_links(tmp_path / "b", "{{ output.cb }}", "URL", {})
    assert made["links"] == {} and made["events"] == ["approved"] and made["resume"]
    # unless the host it rendered to is one the operator allows
    allowed = _received_links(tmp_path / "c", "{{ output.cb }}", "URL", {"ROAST_NOTIFY_ALLOWED_HOSTS": "h, 127.0.0.1"})
    assert allowed["links"]["approved"].startswith("https://roast.example.com/a/")
