"""Prompt steps with a real provider (issue 17): roast.run / roast.resume / the CLI against a real
OpenAI-compatible server on loopback (tests/fake_openai.py), through the real `openai` SDK."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from fake_openai import FakeOpenAI, fake_openai_fixture, reply, status, tool_call, tool_calls  # noqa: F401

import roast
import roast.api

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openai") is None,
                                reason="the `openai` package is not installed (pip install 'roast-workflows[openai]')")

KEY = "sk-dummy-key-for-the-fake-server"
FAST_RETRY = "retry: {attempts: 3, delay: 0.01s, jitter: false}"


@pytest.fixture
def provider(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeOpenAI:
    """The fake server as the provider: OPENAI_BASE_URL and a dummy OPENAI_API_KEY; steps run in proj/."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    return fake_openai


def chats(fake: FakeOpenAI) -> list[dict]:
    return [r.body for r in fake.chat_requests]


def test_a_prompt_step_output_is_the_models_answer(provider, wf):
    provider.script(reply("  Roses are red.  ", prompt_tokens=21, completion_tokens=5))
    result = roast.run(wf("""
        steps:
          - poem: "Write a poem about {{ 'roses' }}"
        poem:
          model: gpt-test-1
    """))
    assert result.status == "completed", result.error
    assert result.output["poem"] == "Roses are red."
    [sent] = chats(provider)
    assert sent["model"] == "gpt-test-1"
    assert sent["messages"] == [{"role": "user", "content": "Write a poem about roses"}]
    assert provider.chat_requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_the_tokens_a_prompt_used_are_shown_by_roast_session(provider, wf):
    provider.script(tool_calls(tool_call("ls", {"args": ""})),  # 23 + 9 tokens
                    reply("done", prompt_tokens=50, completion_tokens=6))
    result = roast.run(wf("""
        tools:
          - Roast::Tools::Cmd: {allowed_commands: [ls]}
        steps:
          - look: "Look around"
          - $(echo after)
    """))
    assert result.status == "completed", result.error
    proc = run_cli("session", result.session_id, "--json")
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(proc.stdout)["steps"]
    assert steps[0]["usage"] == {"prompt_tokens": 73, "completion_tokens": 15}  # both rounds
    assert steps[0]["error"] is None and "usage" not in steps[1]
    text = run_cli("session", result.session_id).stdout
    assert "[73 prompt + 15 completion tokens]" in text


def test_json_true_asks_for_a_json_object_and_parses_it(provider, wf):
    provider.script(reply('{"verdict": "ok", "score": 3}'))
    result = roast.run(wf("""
        steps:
          - judge: "Judge it"
        judge:
          json: true
    """))
    assert result.status == "completed", result.error
    assert result.output["judge"] == {"verdict": "ok", "score": 3}
    assert chats(provider)[0]["response_format"] == {"type": "json_object"}


def test_the_conversation_continues_after_a_resume_without_resending_anything(provider, wf):
    provider.script(reply("first answer"), reply("second answer"))
    path = wf("""
        steps:
          - one: "First question"
          - wait_for_event:
              go: ["$(echo resumed)"]
          - two: "Second question, after {{ output.one }}"
    """)
    first = roast.run(path)
    assert first.status == "waiting"
    assert len(provider.chat_requests) == 1
    done = roast.resume("go", session_id=first.session_id)
    assert done.status == "completed", done.error
    assert done.output["two"] == "second answer"
    requests = chats(provider)
    assert len(requests) == 2  # the first prompt was not sent again
    assert requests[1]["messages"] == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "Second question, after first answer"},
    ]


def test_a_rate_limit_is_retried_with_the_steps_policy(provider, wf):
    provider.script(status(429, "slow down"), status(503, "busy"), reply("at last"))
    result = roast.run(wf(f"""
        steps:
          - ask: "Say hello"
        ask:
          {FAST_RETRY}
    """))
    assert result.status == "completed", result.error
    assert result.output["ask"] == "at last"
    assert len(provider.chat_requests) == 3
    attempts = [s for s in roast.api.history(result.session_id) if s.path == "steps[0]"]
    assert [s.status for s in attempts] == ["failed", "failed", "ok"]


def test_retry_on_names_the_provider_failures_it_retries(provider, wf):
    provider.script(status(429, "slow down"), status(500, "broken"), reply("never"))
    result = roast.run(wf("""
        steps:
          - ask: "Say hello"
        ask:
          retry: {attempts: 5, delay: 0.01s, jitter: false, on: [rate_limit]}
    """))
    assert result.status == "failed"
    assert "HTTP 500" in result.error
    assert len(provider.chat_requests) == 2  # the 429 was retried, the 500 was not


def test_without_a_policy_a_prompt_still_retries_a_rate_limit(provider, wf):
    provider.script(status(429, "slow down"), reply("fine"))
    result = roast.run(wf("steps:\n  - ask: Say hello\n"))
    assert result.status == "completed", result.error
    assert len(provider.chat_requests) == 2


def test_a_rejected_token_fails_at_once_naming_provider_model_and_url_never_the_token(provider, wf, tmp_path):
    provider.script(lambda req: status(401, f"Incorrect API key provided: {req.headers['authorization']}"),
                    reply("never"))
    result = roast.run(wf(f"""
        steps:
          - ask: "Say hello"
        ask:
          {FAST_RETRY}
    """))
    assert result.status == "failed"
    assert len(provider.chat_requests) == 1  # a 401 is not retried, whatever the policy
    for part in ("openai", "gpt-4o-mini", provider.url, "401"):
        assert part in result.error, result.error
    assert KEY not in result.error
    assert KEY.encode() not in _home_bytes(tmp_path / "roast-home")


def test_the_model_reads_a_file_and_runs_an_allowed_command_through_tools(provider, wf, tmp_path):
    (tmp_path / "proj" / "notes.txt").write_text("the secret word is pumpkin\n")
    provider.script(
        tool_calls(tool_call("read_file", {"path": "notes.txt"}, id="call_r")),
        tool_calls(tool_call("pwd", {"args": ""}, id="call_p"), content="Where am I?"),
        reply("pumpkin"))
    result = roast.run(wf("""
        tools:
          - Roast::Tools::ReadFile
          - Roast::Tools::Cmd: {allowed_commands: [pwd]}
        steps:
          - word: "What is the secret word?"
    """))
    assert result.status == "completed", result.error
    assert result.output["word"] == "pumpkin"
    requests = chats(provider)
    assert len(requests) == 3
    assert {t["function"]["name"] for t in requests[0]["tools"]} == {"read_file", "pwd"}
    second = requests[1]["messages"]
    assert second[-1] == {"role": "tool", "tool_call_id": "call_r", "content": "the secret word is pumpkin\n"}
    third = requests[2]["messages"]
    assert third[-2]["tool_calls"][0]["function"]["name"] == "pwd"
    assert third[-1]["tool_call_id"] == "call_p"
    assert third[-1]["content"].startswith("Command: pwd\nExit status: 0\nOutput:\n")
    assert str(tmp_path / "proj") in third[-1]["content"]
    rows = {h.path: h for h in roast.api.history(result.session_id)}
    assert rows["steps[0].tools[1]"].name == "read_file"
    # the call's arguments, then its result
    assert rows["steps[0].tools[1]"].output.startswith(
        'read_file({"path": "notes.txt"})\nthe secret word is pumpkin')
    assert rows["steps[0].tools[2]"].name == "pwd"
    assert rows["steps[0].tools[2]"].output.startswith('pwd({"args": ""})\nCommand: pwd')
    assert rows["steps[0]"].output == "pumpkin"


def test_escapes_and_disallowed_commands_come_back_to_the_model_as_errors(provider, wf, tmp_path):
    marker = tmp_path / "proj" / "removed-if-rm-ran"
    marker.write_text("x")
    provider.script(
        tool_calls(tool_call("read_file", {"path": "../../etc/passwd"}, id="call_1"),
                   tool_call("rm", {"args": str(marker)}, id="call_2")),
        reply("I could not."))
    result = roast.run(wf("""
        tools:
          - Roast::Tools::ReadFile
          - Roast::Tools::Cmd: {allowed_commands: [ls]}
        steps:
          - try: "Read /etc/passwd and delete the marker"
    """))
    assert result.status == "completed", result.error
    results = {m["tool_call_id"]: m["content"] for m in chats(provider)[1]["messages"] if m["role"] == "tool"}
    assert results["call_1"].startswith("error:") and "outside the working directory" in results["call_1"]
    assert "root:" not in results["call_1"]
    assert results["call_2"].startswith("error:") and "'rm'" in results["call_2"]
    assert marker.exists()


def test_too_many_tool_rounds_fail_the_step_with_a_clear_message(provider, wf):
    provider.script(*[tool_calls(tool_call("ls", {"args": ""}, id=f"c{i}")) for i in range(3)])
    result = roast.run(wf("""
        tools:
          - Roast::Tools::Cmd: {allowed_commands: [ls]}
        steps:
          - loop: "List forever"
        loop:
          max_tool_rounds: 2
    """))
    assert result.status == "failed"
    assert "after 2 rounds of tool calls" in result.error
    assert len(provider.chat_requests) == 3


def test_an_api_token_command_is_used_and_never_stored(fake_openai, monkeypatch, wf, tmp_path):
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    fake_openai.script(reply("answer-kept-in-the-store"), reply("two"))
    path = wf("""
        api_token: $(printf secret-token-xyz)
        steps:
          - first: "Say hi"
          - wait_for_event:
              go: ["$(echo on)"]
          - second: "Say it again"
    """)
    first = roast.run(path)
    assert first.status == "waiting", first.error
    done = roast.resume("go", session_id=first.session_id)
    assert done.status == "completed", done.error
    assert [r.headers["authorization"] for r in fake_openai.chat_requests] == ["Bearer secret-token-xyz"] * 2
    home = tmp_path / "roast-home"
    assert list(home.rglob("*")), "the sessions are kept in ROAST_HOME"
    stored = _home_bytes(home)
    assert b"answer-kept-in-the-store" in stored  # what is stored can be found by this search
    assert b"secret-token-xyz" not in stored


def test_validate_reports_a_bad_provider_and_an_unknown_tool_without_network(wf, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    path = wf("""
        api_provider: opnai
        api_token: $(echo must-not-run > ran.txt)
        tools:
          - Roast::Tools::ReadFil
        steps:
          - "Say hello"
    """)
    proc = run_cli("validate", "--json", str(path), cwd=path.parent)
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    messages = {p["line"]: p["message"] for p in doc["problems"]}
    assert "did you mean 'openai'?" in messages[1]
    assert "unknown tool 'Roast::Tools::ReadFil'" in messages[4]
    assert "did you mean 'Roast::Tools::ReadFile'?" in messages[4]
    assert not (path.parent / "ran.txt").exists()


def test_a_valid_provider_workflow_validates_and_a_literal_token_is_a_warning_not_shown(wf):
    path = wf("""
        api_provider: openrouter
        api_token: sk-literal-in-the-file
        model: some/model
        base_url: http://localhost:11434/v1
        tools:
          - Roast::Tools::Grep
        steps:
          - ask: "Say hello"
        ask:
          model: other/model
          max_tool_rounds: 3
    """)
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "literal secret" in proc.stderr
    assert "sk-literal-in-the-file" not in proc.stdout + proc.stderr


def test_a_resume_of_a_workflow_without_prompts_does_not_import_openai(wf, tmp_path):
    path = wf("""
        steps:
          - $(echo one)
          - wait_for_event:
              go: ["$(echo two)"]
    """)
    first = roast.run(path)
    assert first.status == "waiting"
    probe = ("import sys; from roast.cli import main; code = main(sys.argv[1:]); "
             "print('openai' in sys.modules, code, file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": KEY}
    proc = subprocess.run([sys.executable, "-c", probe, "resume", "-s", first.session_id, "-e", "go"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.stderr.strip().splitlines()[-1] == "False 0", proc.stderr


def test_without_a_key_the_offline_model_answers_and_says_so(wf, capsys):
    result = roast.run(wf("steps:\n  - echo: 'Say {{ 1 + 1 }}'\n"))
    assert result.status == "completed"
    assert result.output["echo"] == "Say 2"


def test_the_ai_review_example_uses_the_provider_when_a_key_is_set(provider, tmp_path):
    shutil.copytree(ROOT / "examples" / "ai_review", tmp_path / "proj" / "ai_review")
    sample = tmp_path / "proj" / "ai_review" / "sample"
    provider.script(tool_calls(tool_call("read_file", {"path": str(sample / "retry.py")}, id="call_a")),
                    reply("1. a bare except"), reply("Retries no longer swallow every error."))
    first = roast.run("ai_review")
    assert first.status == "waiting", first.error
    assert first.output["review"] == "1. a bare except"
    done = roast.resume("approved", session_id=first.session_id)
    assert done.status == "completed", done.error
    assert done.output["release_note"] == "Retries no longer swallow every error."
    requests = chats(provider)
    assert len(requests) == 3
    last = requests[2]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "user"]
    assert "except Exception" in last[2]["content"]


def test_a_kill_at_any_write_point_resends_only_the_interrupted_prompt(fake_openai, tmp_path):
    """SIGKILL `roast execute` at its n-th store write (ROAST_FAULT_AT), recover, and check what the
    server saw: each prompt sent at most as often as its history counts attempts, never an earlier
    prompt after a later one, and the second request carries the first turn exactly."""
    from conftest import store_env, store_for

    fake_openai.script(*[lambda req: reply(f"answer to {req.body['messages'][-1]['content']}")] * 400)
    fault, resent = 0, False
    while True:
        fault += 1
        assert fault < 60, "the run never got past the write points"
        home, wf_dir = tmp_path / f"home{fault}", tmp_path / f"wf{fault}"
        wf_dir.mkdir()
        (wf_dir / "workflow.yml").write_text('steps:\n  - one: "First question"\n  - two: "Second question"\n')
        env = {**os.environ, **store_env(home), "PYTHONPATH": str(ROOT), "ROAST_FAULT_AT": str(fault),
               "OPENAI_BASE_URL": fake_openai.url, "OPENAI_API_KEY": KEY}
        seen = len(fake_openai.chat_requests)
        proc = subprocess.run([sys.executable, "-m", "roast", "execute", str(wf_dir)], capture_output=True,
                              text=True, env=env, timeout=60, check=False)
        env.pop("ROAST_FAULT_AT")
        for _ in range(5):
            found = roast.sessions(limit=None, home=home, store=store_for(home))
            if found and found[0].status == "completed":
                break
            args = ["resume", "-s", found[0].id] if found else ["execute", str(wf_dir)]
            subprocess.run([sys.executable, "-m", "roast", *args], capture_output=True, text=True, env=env,
                           timeout=60, check=False)
        [session] = roast.sessions(limit=None, home=home, store=store_for(home))
        assert session.status == "completed", (fault, session)
        assert session.output == {"one": "answer to First question", "two": "answer to Second question"}
        sent = [r.body["messages"] for r in fake_openai.chat_requests[seen:]]
        asked = [m[-1]["content"] for m in sent]
        attempts = {h.name: h.attempt for h in roast.api.history(session.id, home=home, store=store_for(home))}
        assert 1 <= asked.count("First question") <= attempts["one"], (fault, asked, attempts)
        assert 1 <= asked.count("Second question") <= attempts["two"], (fault, asked, attempts)
        assert asked.index("Second question") > max(i for i, a in enumerate(asked) if a == "First question")
        assert all(m == [{"role": "user", "content": "First question"},
                         {"role": "assistant", "content": "answer to First question"},
                         {"role": "user", "content": "Second question"}] for m in sent if len(m) > 1), fault
        resent = resent or len(asked) > 2
        if proc.returncode == 0:  # no write point was left to kill at
            break
    assert resent, "no kill fell between a model's answer and the checkpoint after it"


def _home_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())
