"""OpenAI-compatible providers: settings from the workflow and the environment, and one completion
through the real `openai` SDK against a real loopback server (tests/fake_openai.py)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, fake_openai_fixture, reply, slow, status, tool_call, tool_calls  # noqa: F401

from roast.errors import StepFailed, UsageError
from roast.providers import (
    Completion,
    ProviderError,
    ProviderSettings,
    ToolCall,
    check_settings,
    complete,
    settings_from,
)

needs_openai = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None,
    reason="the `openai` package is not installed (pip install 'roast-workflows[openai]')")

TOKEN = "sk-test-0123456789abcdef"
USER = [{"role": "user", "content": "Say hello."}]


def settings(fake: FakeOpenAI, **kw: object) -> ProviderSettings:
    return ProviderSettings(**{"provider": "openai", "base_url": fake.url, "token": TOKEN, **kw})


def no_commands(cmd: str) -> str:
    raise AssertionError(f"no command should run, but {cmd!r} did")


# -- complete(): answers


@needs_openai
def test_a_text_answer_carries_content_usage_and_model(fake_openai):
    fake_openai.script(reply("Hello!", prompt_tokens=12, completion_tokens=3))
    done = complete(settings(fake_openai, model="gpt-4o"), USER)
    assert isinstance(done, Completion)
    assert (done.content, done.tool_calls, done.model) == ("Hello!", (), "gpt-4o")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (12, 3)
    assert done.message == {"role": "assistant", "content": "Hello!"}
    [sent] = fake_openai.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.body["model"] == "gpt-4o" and sent.body["messages"] == USER
    assert "tools" not in sent.body and "response_format" not in sent.body


@needs_openai
def test_json_mode_sends_response_format_json_object(fake_openai):
    fake_openai.script(reply('{"ok": true}'))
    done = complete(settings(fake_openai), USER, json_mode=True)
    assert json.loads(done.content) == {"ok": True}
    assert fake_openai.requests[0].body["response_format"] == {"type": "json_object"}


@needs_openai
def test_tool_calls_are_parsed_with_their_raw_json_arguments(fake_openai):
    tools = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.",
                                               "parameters": {"type": "object", "properties": {}}}}]
    fake_openai.script(tool_calls(tool_call("read_file", {"path": "a.txt"}, id="call_7"),
                                  tool_call("grep", '{"string": "x"}', id="call_8")))
    done = complete(settings(fake_openai), USER, tools=tools)
    assert done.content is None and done.finish_reason == "tool_calls"
    assert done.tool_calls == (ToolCall("call_7", "read_file", '{"path": "a.txt"}'),
                               ToolCall("call_8", "grep", '{"string": "x"}'))
    assert fake_openai.requests[0].body["tools"] == tools


@needs_openai
def test_the_returned_message_round_trips_exactly_in_the_next_request(fake_openai):
    fake_openai.script(tool_calls(tool_call("read_file", {"path": "a.txt"}), content="Let me look."),
                       reply("It says hi."))
    messages = [{"role": "system", "content": "Be brief."}, *USER]
    first = complete(settings(fake_openai), messages)
    messages += [first.message, {"role": "tool", "tool_call_id": "call_1", "content": "hi"}]
    second = complete(settings(fake_openai), messages)
    assert second.content == "It says hi."
    assert fake_openai.requests[1].body["messages"] == messages
    assert fake_openai.requests[1].body["messages"][2] == {
        "role": "assistant", "content": "Let me look.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'}}]}
    first.message["content"] = "changed"  # each access is a fresh dict: the Completion stays as it was
    assert first.message["content"] == "Let me look."


@needs_openai
def test_a_keyless_local_server_gets_a_placeholder_token(fake_openai):
    fake_openai.script(reply("local"))
    assert complete(settings(fake_openai, token=None), USER).content == "local"
    assert fake_openai.requests[0].headers["authorization"] == "Bearer no-key"


# -- complete(): failures


@needs_openai
@pytest.mark.parametrize("code", [429, 500, 503])
def test_rate_limits_and_server_errors_are_retryable_and_not_retried_by_the_sdk(fake_openai, code):
    fake_openai.script(status(code, "try again later", headers={"retry-after": "0"}), reply("late"))
    with pytest.raises(ProviderError) as caught:
        complete(settings(fake_openai), USER)
    assert isinstance(caught.value, StepFailed)
    assert (caught.value.retryable, caught.value.status) == (True, code)
    assert f"HTTP {code}" in str(caught.value) and "try again later" in str(caught.value)
    assert len(fake_openai.requests) == 1  # max_retries=0: roast retries by its own policy


@needs_openai
def test_a_rejected_token_is_not_retryable_and_the_error_never_shows_the_token(fake_openai):
    fake_openai.script(lambda req: status(401, f"Incorrect API key provided: {req.headers['authorization']}",
                                          error_code="invalid_api_key"))
    with pytest.raises(ProviderError) as caught:
        complete(settings(fake_openai, model="gpt-4o-mini"), USER)
    err = caught.value
    assert (err.retryable, err.status) == (False, 401)
    text = str(err)
    for part in ("openai", "'gpt-4o-mini'", fake_openai.url, "OPENAI_API_KEY", "api_token",
                 "Incorrect API key provided"):
        assert part in text
    assert TOKEN in fake_openai.requests[0].headers["authorization"]  # the server did echo it back
    for shown in (text, repr(err), json.dumps(err.to_dict()), str(err.__cause__), str(err.__context__)):
        assert TOKEN not in shown
    assert err.__cause__ is None and err.__context__ is None  # a traceback cannot show the SDK's text


@needs_openai
def test_openrouter_errors_point_at_openrouter_api_key(fake_openai):
    fake_openai.script(status(403, "forbidden"))
    with pytest.raises(ProviderError) as caught:
        complete(settings(fake_openai, provider="openrouter"), USER)
    assert not caught.value.retryable and caught.value.status == 403
    assert "openrouter" in str(caught.value) and "OPENROUTER_API_KEY" in str(caught.value)


@needs_openai
def test_an_unknown_model_is_not_retryable_and_says_to_check_model(fake_openai):
    fake_openai.script(status(404, "The model `gpt-9` does not exist", error_code="model_not_found"))
    with pytest.raises(ProviderError) as caught:
        complete(settings(fake_openai, model="gpt-9"), USER)
    assert (caught.value.retryable, caught.value.status) == (False, 404)
    assert "'gpt-9'" in str(caught.value) and "model:" in str(caught.value)


@needs_openai
def test_a_bad_request_is_not_retryable(fake_openai):
    fake_openai.script(status(400, "Invalid value for 'messages'"))
    with pytest.raises(ProviderError) as caught:
        complete(settings(fake_openai), USER)
    assert (caught.value.retryable, caught.value.status) == (False, 400)
    assert "Invalid value for 'messages'" in str(caught.value)


@needs_openai
def test_a_timeout_is_retryable(fake_openai):
    fake_openai.script(slow(60))  # released when the fixture closes the server
    with pytest.raises(ProviderError) as caught:
        complete(settings(fake_openai, timeout=0.3), USER)
    assert (caught.value.retryable, caught.value.status) == (True, None)
    assert "0.3 s" in str(caught.value) and fake_openai.url in str(caught.value)


@needs_openai
def test_a_refused_connection_is_retryable_and_names_the_base_url():
    gone = FakeOpenAI().start()
    url = gone.url
    gone.close()
    with pytest.raises(ProviderError) as caught:
        complete(ProviderSettings("openai", base_url=url, token=TOKEN), USER)
    assert (caught.value.retryable, caught.value.status) == (True, None)
    assert url in str(caught.value) and "OPENAI_BASE_URL" in str(caught.value)


def test_no_token_for_the_real_openai_fails_before_any_network_call():
    with pytest.raises(ProviderError) as caught:
        complete(ProviderSettings("openai", token=None), USER)
    assert not caught.value.retryable
    assert "https://api.openai.com/v1" in str(caught.value) and "OPENAI_API_KEY" in str(caught.value)


def test_without_the_openai_package_the_error_says_how_to_install_it(fake_openai, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` now raises ImportError
    with pytest.raises(ProviderError) as caught:
        complete(settings(fake_openai), USER)
    assert "pip install 'roast-workflows[openai]'" in str(caught.value) and not caught.value.retryable
    assert fake_openai.requests == []


def test_the_offline_provider_is_not_for_complete():
    with pytest.raises(ValueError, match="offline"):
        complete(ProviderSettings(), USER)


# -- settings


def test_the_token_never_shows_in_repr_or_str():
    s = ProviderSettings("openai", token=TOKEN)
    assert TOKEN not in repr(s) and TOKEN not in str(s) and TOKEN not in f"{s}"
    assert "token=***" in repr(s)
    assert ProviderSettings().token is None and "token=None" in repr(ProviderSettings())


def test_defaults_are_the_offline_model_and_gpt_4o_mini():
    s = settings_from({}, {}, no_commands)
    assert (s.provider, s.model, s.base_url, s.token, s.timeout) == ("offline", "gpt-4o-mini", None, None, 60)


def test_openai_api_key_in_the_environment_makes_openai_the_default():
    s = settings_from({}, {"OPENAI_API_KEY": TOKEN}, no_commands)
    assert (s.provider, s.token, s.base_url, s.url) == ("openai", TOKEN, None, "https://api.openai.com/v1")


def test_a_literal_api_token_makes_openai_the_default_and_beats_the_environment():
    s = settings_from({"api_token": "sk-file", "model": "gpt-4o"}, {"OPENAI_API_KEY": TOKEN}, no_commands)
    assert (s.provider, s.token, s.model) == ("openai", "sk-file", "gpt-4o")


def test_api_token_command_is_resolved_by_the_caller_and_stripped():
    ran: list[str] = []

    def resolve(cmd: str) -> str:
        ran.append(cmd)
        return f"  {TOKEN}\n"

    s = settings_from({"api_token": "$(op read 'op://vault/openai')"}, {}, resolve)
    assert (s.provider, s.token, ran) == ("openai", TOKEN, ["op read 'op://vault/openai'"])


def test_an_api_token_command_that_prints_nothing_is_a_usage_error():
    with pytest.raises(UsageError, match=r"printed nothing"):
        settings_from({"api_token": "$(cat missing)"}, {}, lambda cmd: "\n")


def test_explicit_offline_wins_over_a_key_and_runs_no_command():
    s = settings_from({"api_provider": "offline", "api_token": "$(secret)"}, {"OPENAI_API_KEY": TOKEN},
                      no_commands)
    assert (s.provider, s.token) == ("offline", None)


def test_openrouter_uses_its_own_key_and_default_url():
    env = {"OPENROUTER_API_KEY": "or-key", "OPENAI_API_KEY": TOKEN, "OPENAI_BASE_URL": "http://x:1/v1"}
    s = settings_from({"api_provider": "openrouter"}, env, no_commands)
    assert (s.provider, s.token, s.base_url, s.url) == ("openrouter", "or-key", None,
                                                        "https://openrouter.ai/api/v1")


def test_openai_base_url_from_the_environment_and_base_url_from_the_workflow_wins():
    env = {"OPENAI_API_KEY": TOKEN, "OPENAI_BASE_URL": "http://localhost:11434/v1"}
    assert settings_from({}, env, no_commands).base_url == "http://localhost:11434/v1"
    s = settings_from({"base_url": "http://vllm:8000/v1"}, env, no_commands)
    assert s.base_url == s.url == "http://vllm:8000/v1"
    assert settings_from({"uri_base": "http://vllm:8000/v1"}, env, no_commands).base_url == "http://vllm:8000/v1"


def test_an_explicit_openai_provider_without_a_key_is_allowed_for_local_servers():
    s = settings_from({"api_provider": "openai", "base_url": "http://localhost:8080/v1"}, {}, no_commands)
    assert (s.provider, s.token) == ("openai", None)


def test_settings_from_refuses_bad_settings_listing_every_problem():
    with pytest.raises(UsageError) as caught:
        settings_from({"api_provider": "opnai", "model": ""}, {}, no_commands)
    assert "'opnai'" in str(caught.value) and "did you mean 'openai'" in str(caught.value)
    assert "model" in str(caught.value)


def test_a_bad_openai_base_url_in_the_environment_is_named():
    with pytest.raises(UsageError, match="OPENAI_BASE_URL"):
        settings_from({}, {"OPENAI_API_KEY": TOKEN, "OPENAI_BASE_URL": "localhost:11434"}, no_commands)


# -- check_settings (roast validate: no network, no commands)


def test_check_settings_accepts_good_settings():
    assert check_settings({}) == []
    assert check_settings({"api_provider": "openrouter", "model": "openai/gpt-4o",
                           "base_url": "https://openrouter.ai/api/v1", "api_token": "$(cat key)"}) == []


@pytest.mark.parametrize("config, expected", [
    ({"api_provider": "OpenRouter"}, "did you mean 'openrouter'"),
    ({"api_provider": "anthropic"}, "offline, openai, openrouter"),
    ({"api_provider": 3}, "api_provider"),
    ({"base_url": "localhost:11434/v1"}, "http(s) URL"),
    ({"base_url": "ftp://example.com"}, "http(s) URL"),
    ({"base_url": "http://"}, "http(s) URL"),
    ({"model": ""}, "non-empty string"),
    ({"model": ["gpt-4o"]}, "non-empty string"),
    ({"api_token": 1234567}, "api_token"),
    ({"api_token": "$( )"}, "empty command"),
    ({"base_url": "http://a/v1", "uri_base": "http://b/v1"}, "both"),
])
def test_check_settings_reports_each_problem(config, expected):
    problems = check_settings(config)
    assert len(problems) == 1 and expected in problems[0], problems


def test_check_settings_never_echoes_a_token_value():
    assert "987654321" not in " ".join(check_settings({"api_token": 987654321}))


def test_a_literal_token_in_the_workflow_is_allowed_with_a_warning():
    warnings: list[str] = []
    assert check_settings({"api_token": "sk-literal-secret"}, warnings) == []
    [warning] = warnings
    assert "api_token" in warning and "$(" in warning and "sk-literal-secret" not in warning
    quiet: list[str] = []
    assert check_settings({"api_token": "$(cat ~/.openai)"}, quiet) == [] and quiet == []


def test_importing_roast_providers_does_not_import_the_sdk():
    import subprocess

    probe = "import sys, roast.providers; print('openai' in sys.modules, 'httpx' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout.split() == ["False", "False"]
