"""A model's tools never reach roast's own secrets or code (issue 21, adversary P1): through `roast.run()`
against the fake OpenAI-compatible server, which scripts the tool calls a prompt-injected model would make.
What is asserted is what the model was sent back (the tool results) and what the store kept."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from conftest import write_workflow
from fake_openai import FakeOpenAI, fake_openai_fixture, reply, tool_call, tool_calls  # noqa: F401

import roast
import roast.api

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openai") is None,
                                reason="the `openai` package is not installed (pip install 'roast[openai]')")


@pytest.fixture
def proj(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The working directory (the tools' root), with the fake server as the provider."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-for-the-fake-server")
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def _results(fake: FakeOpenAI) -> dict[str, str]:
    """Every tool result the model was sent, by tool-call id."""
    found: dict[str, str] = {}
    for request in fake.chat_requests:
        for message in request.body["messages"]:
            if message["role"] == "tool":
                found[message["tool_call_id"]] = message["content"]
    return found


def _stored(session_id: str) -> str:
    return "\n".join(f"{h.output}\n{h.error}" for h in roast.api.history(session_id))


READERS = """
    tools:
      - Roast::Tools::ReadFile
      - Roast::Tools::Grep
      - Roast::Tools::SearchFile
    steps:
      - triage: "Triage this ticket"
"""


def test_file_tools_refuse_the_signing_key_named_by_roast_key_file(proj, fake_openai, monkeypatch):
    key = roast.api.new_key()
    (proj / "roast.key").write_text(key)
    (proj / "roast.key").chmod(0o600)
    (proj / "alias.txt").symlink_to("roast.key")
    (proj / "notes.txt").write_text("ordinary notes\n")
    monkeypatch.setenv("ROAST_KEY_FILE", str(proj / "roast.key"))
    secret = key.split()[0][:24]
    fake_openai.script(
        tool_calls(tool_call("read_file", {"path": "roast.key"}, id="read"),
                   tool_call("read_file", {"path": "alias.txt"}, id="alias"),
                   tool_call("read_file", {"path": str(proj / "roast.key")}, id="absolute"),
                   tool_call("search_for_file", {"glob_pattern": "*.key"}, id="search"),
                   tool_call("grep", {"string": secret[:12]}, id="grep"),
                   tool_call("read_file", {"path": "notes.txt"}, id="notes")),
        reply("done"))
    result = roast.run(write_workflow(proj, READERS))
    assert result.status == "completed", result.error
    got = _results(fake_openai)
    for call in ("read", "alias", "absolute"):
        assert got[call].startswith("error: refused: ") and "roast's own file" in got[call], got[call]
    assert got["search"].startswith("No results"), got["search"]
    assert got["grep"].startswith("No matches"), got["grep"]
    assert got["notes"] == "ordinary notes\n"  # the rest of the working directory is still readable
    assert not any(secret in text for text in got.values())
    assert secret not in _stored(result.session_id)


def test_file_tools_refuse_everything_under_roast_home_inside_the_root(proj, fake_openai, monkeypatch):
    home = proj / "state"
    monkeypatch.setenv("ROAST_HOME", str(home))
    home.mkdir()
    (home / "notes.txt").write_text("HOME-SECRET-8f2a\n")
    fake_openai.script(
        tool_calls(tool_call("read_file", {"path": "state/notes.txt"}, id="note"),
                   tool_call("read_file", {"path": "state"}, id="listing"),
                   tool_call("read_file", {"path": "state/sessions.db"}, id="db"),
                   tool_call("grep", {"string": "HOME-SECRET"}, id="grep"),
                   tool_call("search_for_file", {"glob_pattern": "notes.txt"}, id="search")),
        reply("done"))
    result = roast.run(write_workflow(proj, READERS))
    assert result.status == "completed", result.error
    got = _results(fake_openai)
    for call in ("note", "listing", "db"):
        assert got[call].startswith("error: refused: ") and "roast's own file" in got[call], got[call]
    assert got["grep"].startswith("No matches") and got["search"].startswith("No results"), got
    assert "HOME-SECRET-8f2a" not in _stored(result.session_id)  # (the grep asked for its first part)


def test_write_file_refuses_the_running_workflows_own_files(proj, fake_openai):
    evil = "def run(ctx):\n    return 'the model ran code'\n"
    fake_openai.script(
        tool_calls(tool_call("write_file", {"path": "wf/after.py", "content": evil}, id="step"),
                   tool_call("write_file", {"path": "wf/workflow.yml", "content": "steps: []\n"}, id="yml"),
                   tool_call("write_file", {"path": "wf/ask/prompt.md", "content": "x"}, id="prompt"),
                   tool_call("write_file", {"path": "wf/new_step.sh", "content": "#!/bin/sh\n"}, id="new"),
                   tool_call("write_file", {"path": "wf/__pycache__/after.cpython-311.pyc", "content": "x"},
                             id="pyc"),
                   tool_call("write_file", {"path": "shared.yml", "content": "x: 1\n"}, id="shared"),
                   tool_call("write_file", {"path": "shared/helper.py", "content": evil}, id="shared_step"),
                   tool_call("write_file", {"path": "out/report.md", "content": "fine\n"}, id="ok")),
        reply("done"), reply("asked"))
    path = write_workflow(proj, """
        tools:
          - Roast::Tools::WriteFile
        steps:
          - edit: "Improve the code"
          - ask
          - after
    """, {"after.py": "def run(ctx):\n    return 'original'\n", "ask/prompt.md": "Ask something"})
    before = {p: p.read_bytes() for p in (proj / "wf").rglob("*") if p.is_file()}
    result = roast.run(path)
    assert result.status == "completed", result.error
    assert result.output["after"] == "original"
    got = _results(fake_openai)
    for call in ("step", "yml", "prompt", "new", "pyc", "shared", "shared_step"):
        assert got[call].startswith("error: refused: ") and "workflow" in got[call], (call, got[call])
    assert got["ok"] == "Successfully wrote 1 lines to out/report.md"
    assert {p: p.read_bytes() for p in (proj / "wf").rglob("*") if p.is_file() and "__pycache__" not in p.parts} \
        == before
    assert not (proj / "shared.yml").exists() and not (proj / "shared").exists()


def test_commands_a_model_runs_get_no_secret_from_roasts_environment(proj, fake_openai, monkeypatch):
    secrets = {"ROAST_SERVE_TOKENS": "ana:tok-serve-1", "ROAST_NOTIFY_SECRET": "whsec-notify-2",
               "ROAST_WEBHOOK_SECRET": "whsec-in-3", "ROAST_GITHUB_WEBHOOK_SECRET": "gh-4",
               "ROAST_KEY": os.environ.get("ROAST_KEY") or roast.api.new_key().strip(), "PGPASSWORD": "pg-6", "GITHUB_TOKEN": "ghp-7",
               "ANTHROPIC_API_KEY": "ant-8", "DEPLOY_SECRET": "dep-9", "DB_PASSWORD": "db-10",
               "MY_CUSTOM_CREDENTIAL": "custom-11", "OTHER_ONE": "other-12"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ROAST_SECRET_VARIABLES", "MY_CUSTOM_CREDENTIAL, OTHER_ONE")
    monkeypatch.setenv("VISIBLE_SETTING", "shown-13")
    monkeypatch.setenv("LANG", "C.UTF-8")
    if os.environ.get("ROAST_STORE"):  # the PostgreSQL leg: its URL is a secret too
        secrets["ROAST_STORE"] = os.environ["ROAST_STORE"]
    fake_openai.script(tool_calls(tool_call("printenv", {"args": ""}, id="env")), reply("done"))
    result = roast.run(write_workflow(proj, """
        tools:
          - Roast::Tools::Cmd: {allowed_commands: [printenv]}
        steps:
          - look: "Print the environment"
    """))
    assert result.status == "completed", result.error
    shown = _results(fake_openai)["env"]
    assert shown.startswith("Command: printenv\nExit status: 0"), shown
    for name, value in secrets.items():
        assert value not in shown and f"{name}=" not in shown, name
    for kept in ("VISIBLE_SETTING=shown-13", "PATH=", "HOME=", "LANG=C.UTF-8"):
        assert kept in shown, kept
    assert not any(value in _stored(result.session_id) for value in secrets.values())
