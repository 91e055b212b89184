"""OpenAI-compatible model providers: settings from the workflow and the environment, one completion.

Owns `api_provider:`, `api_token:`, `model:` and `base_url:` (Roast's `uri_base:` too): what they
mean (`settings_from`), what `roast validate` says about them without touching the network or running
anything (`check_settings`), and one chat completion through the official `openai` SDK (`complete`),
with its failures sorted into retryable or not (`ProviderError`). It never runs a shell: the caller
runs an `api_token: $(cmd)` command. The SDK is imported only inside `complete`, so importing this
module stays cheap. The token is a secret: it is never in a repr, a message or a chained exception.
The offline model lives in `roast.effects`.

    settings = settings_from(config, os.environ, resolve_command=run_it)
    done = complete(settings, [{"role": "user", "content": "Hi"}])
    transcript.append(done.message)        # exactly what the next request will carry
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from roast.errors import StepFailed, UsageError

PROVIDERS = ("offline", "openai", "openrouter")
DEFAULT_MODEL = "gpt-4o-mini"  # Roast's StepLoader::DEFAULT_MODEL
DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "openrouter": "https://openrouter.ai/api/v1"}
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "openrouter": "OPENROUTER_API_KEY"}
# Sent to a keyless local server (Ollama, llama.cpp): the SDK insists on some key.
NO_KEY = "no-key"
# The SDK's own retry policy retries these; roast's policy decides (the client has max_retries=0).
RETRYABLE_STATUS = frozenset({408, 409, 429})


class ProviderSettings(NamedTuple):
    """Where and how to ask: provider, model, base URL (None = the provider's default), token, timeout.

    The token is the resolved secret: it never shows in `repr`/`str`. Keep settings out of anything
    that is pickled into the session store; build them again from the workflow on resume.
    """

    provider: str = "offline"
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    token: str | None = None
    timeout: float = 60

    @property
    def url(self) -> str | None:
        """The base URL requests go to: `base_url`, else the provider's default (None for offline)."""
        return self.base_url or DEFAULT_URLS.get(self.provider)

    def __repr__(self) -> str:
        token = "***" if self.token else None
        return (f"ProviderSettings(provider={self.provider!r}, model={self.model!r}, "
                f"base_url={self.base_url!r}, token={token}, timeout={self.timeout!r})")


class ToolCall(NamedTuple):
    """One function call the model asked for; `arguments` is the raw JSON text it sent."""

    id: str
    name: str
    arguments: str


class Usage(NamedTuple):
    """Tokens used by one completion (0 when the server does not report them)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(NamedTuple):
    """One answer: text and/or tool calls, the usage, the model that answered."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    model: str
    finish_reason: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        """The assistant message in the API's wire shape, to append to the transcript (a fresh dict)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls]
        return message


class ProviderError(StepFailed):
    """A model call failed. `retryable`: worth trying again (rate limit, 5xx, timeout, connection);
    `status`: the HTTP status, if the server answered."""

    code = "provider_error"

    def __init__(self, msg: str, *, retryable: bool, status: int | None = None, where: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(msg, where=where, hint=hint)
        self.retryable, self.status = retryable, status


# -- settings


def settings_from(config: Mapping[str, Any], env: Mapping[str, str],
                  resolve_command: Callable[[str], str]) -> ProviderSettings:
    """The provider settings for a workflow's (or a step's, merged over it) keys and the environment.

    `api_provider:` defaults to `openai` when `OPENAI_API_KEY`, `api_token:`, `base_url:` or
    `OPENAI_BASE_URL` is set, else to the offline model (`implied_provider`). `api_token: $(cmd)` is `resolve_command(cmd)` (its stdout; the caller runs it),
    stripped; without `api_token:` the provider's variable (`OPENAI_API_KEY`, `OPENROUTER_API_KEY`) is
    used. `base_url:` (or Roast's `uri_base:`), else `OPENAI_BASE_URL` for openai, else the provider's
    default. Raises UsageError listing every problem `check_settings` finds.
    """
    problems = check_settings(config)
    env_url = env.get("OPENAI_BASE_URL") or None
    raw_token = config.get("api_token")
    provider = implied_provider(config, env)
    if provider == "openai" and env_url and not config.get("base_url", config.get("uri_base")):
        problems += [f"the environment's {p}" for p in _url_problems("OPENAI_BASE_URL", env_url)]
    if problems:
        raise UsageError(_problems_text("model provider settings", problems),
                         hint=f"api_provider is one of {', '.join(PROVIDERS)}; see `roast validate`")
    model = config.get("model") or DEFAULT_MODEL
    if provider == "offline":
        return ProviderSettings("offline", model)
    token: str | None
    command = _command(raw_token)
    if command is not None:
        token = resolve_command(command).strip()
        if not token:
            raise UsageError(f"the api_token command $({command}) printed nothing",
                             hint="run it in a terminal: it should print the API token")
    else:
        token = raw_token or env.get(KEY_VARIABLES[provider]) or None
    base_url = config.get("base_url") or config.get("uri_base") or (env_url if provider == "openai" else None)
    return ProviderSettings(provider, model, base_url, token)


def implied_provider(config: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The provider a workflow's (or a step's) keys and the environment mean: `api_provider:` if set;
    else `openai`, the OpenAI-compatible provider, when a token or a base URL is given anywhere
    (`base_url:` alone is a local server such as Ollama: never the offline model silently, issue 24);
    else `offline`."""
    given = config.get("api_provider")
    if given:
        return str(given)
    hints = (env.get("OPENAI_API_KEY"), env.get("OPENAI_BASE_URL"), config.get("api_token"),
             config.get("base_url"), config.get("uri_base"))
    return "openai" if any(hints) else "offline"


def check_settings(config: Mapping[str, Any], warnings: list[str] | None = None) -> list[str]:
    """What `roast validate` reports about the provider keys: no network, no commands run.

    With `warnings`, it also receives the advice that a literal `api_token:` is a secret written into
    the workflow file (allowed, as in Roast: local servers take dummy tokens; the value is never shown).
    """
    problems: list[str] = []
    provider = config.get("api_provider")
    if provider is not None and provider not in PROVIDERS:
        if not isinstance(provider, str):
            problems.append(f"api_provider must be one of {', '.join(PROVIDERS)}, "
                            f"got {type(provider).__name__}")
        else:
            import difflib

            close = difflib.get_close_matches(provider.lower(), PROVIDERS, n=1)
            problems.append(f"api_provider {provider!r} is not a provider roast knows "
                            f"({', '.join(PROVIDERS)})" + (f"; did you mean {close[0]!r}?" if close else ""))
    if "base_url" in config and "uri_base" in config:
        problems.append("both base_url and uri_base (Roast's name for it) are set; keep one")
    for key in ("base_url", "uri_base"):
        if config.get(key) is not None:
            problems += _url_problems(key, config[key])
    model = config.get("model")
    if model is not None and not (isinstance(model, str) and model.strip()):
        problems.append(f"model must be a non-empty string (e.g. {DEFAULT_MODEL!r}), got {model!r}")
    token = config.get("api_token")
    if token is not None:
        if not isinstance(token, str):  # never echo the value: it may be the secret itself
            problems.append(f"api_token must be a string or $(command), got a {type(token).__name__} "
                            "(quote it in YAML)")
        elif _command(token) is not None and not _command(token):
            problems.append("api_token is $( ), an empty command; put the command that prints the token "
                            "inside, e.g. $(cat ~/.config/openai/key)")
        elif _command(token) is None and token and warnings is not None:
            warnings.append("api_token is a literal secret in the workflow file; prefer "
                            "$(command) (e.g. $(cat ~/.config/openai/key)) or the OPENAI_API_KEY / "
                            "OPENROUTER_API_KEY variable, so the key stays out of version control")
    return problems


def _url_problems(key: str, value: object) -> list[str]:
    text = value if isinstance(value, str) else ""
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in ("http", "https") and rest.strip("/") and " " not in text:
        return []
    return [f"{key} {value!r} is not an http(s) URL (e.g. http://localhost:11434/v1 for Ollama)"]


def _command(token: object) -> str | None:
    """`cmd` for a token that is exactly `$(cmd)` (Roast's ResourceResolver), else None."""
    if isinstance(token, str):
        text = token.strip()
        if text.startswith("$(") and text.endswith(")"):
            return text[2:-1].strip()
    return None


def _problems_text(what: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{what}: {problems[0]}"
    return f"{what}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


# -- one completion


def complete(settings: ProviderSettings, messages: list[dict[str, Any]], *,
             tools: list[dict[str, Any]] | None = None, json_mode: bool = False) -> Completion:
    """One chat completion of `messages` (the transcript so far) through the `openai` SDK.

    `tools` are function definitions (`roast.tools.function_definitions`); `json_mode` asks for a JSON
    object. The SDK does not retry (`max_retries=0`): roast's policy does, guided by
    `ProviderError.retryable`.
    """
    if settings.provider not in DEFAULT_URLS:
        raise ValueError(f"complete() asks openai/openrouter, not {settings.provider!r}: the offline "
                         "model is roast.effects.OfflineModel")
    url = settings.url or ""
    if not settings.token and url in DEFAULT_URLS.values():
        raise _error(settings, "no API token is set", None,
                     hint=f"set {KEY_VARIABLES[settings.provider]} or the workflow's `api_token:`")
    try:
        import openai
    except ImportError:
        raise _error(settings, "the `openai` package is not installed", None,
                     hint="pip install 'roast-workflows[openai]'  (or: pip install 'openai>=1.40')") from None
    request: dict[str, Any] = {"model": settings.model, "messages": messages}
    if tools:
        request["tools"] = tools
    if json_mode:
        request["response_format"] = {"type": "json_object"}
    failure: ProviderError | None = None
    client = openai.OpenAI(api_key=settings.token or NO_KEY, base_url=url, timeout=settings.timeout,
                           max_retries=0)
    try:
        response = client.chat.completions.create(**request)
    except openai.APITimeoutError:
        failure = _error(settings, f"no answer within {settings.timeout:g} s", None, retryable=True,
                         hint="usually temporary; a slow model or server may need a longer timeout")
    except openai.APIConnectionError as err:
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        failure = _error(settings, f"cannot connect{cause}", None, retryable=True,
                         hint="check base_url / OPENAI_BASE_URL and that the server is running")
    except openai.APIStatusError as err:
        failure = _status_error(settings, err.status_code, _detail(err.body, err.message))
    except openai.APIError as err:  # e.g. a response that is not a chat completion
        failure = _error(settings, f"unexpected answer: {err.message}", None,
                         hint="check that base_url points at an OpenAI-compatible API (…/v1)")
    finally:
        client.close()
    if failure is not None:
        # Raised outside the `except`: no __context__ links to the SDK's exception, whose text (the
        # server's error body) may carry the token; a traceback can only show our masked message.
        raise failure
    return _completion(settings, response)


def _completion(settings: ProviderSettings, response: Any) -> Completion:
    if not response.choices:
        raise _error(settings, "the answer had no choices", None, hint="check the server's logs")
    choice = response.choices[0]
    calls = []
    for call in choice.message.tool_calls or ():
        function = getattr(call, "function", None)
        if function is None:
            raise _error(settings, f"the model asked for a {getattr(call, 'type', '?')!r} tool call; only "
                                   "function tools are offered", None, hint="check the `tools:` sent")
        arguments = function.arguments
        if not isinstance(arguments, str):  # some compatible servers send an object
            import json

            arguments = json.dumps(arguments)
        calls.append(ToolCall(call.id, function.name, arguments))
    usage = Usage(getattr(response.usage, "prompt_tokens", 0) or 0,
                  getattr(response.usage, "completion_tokens", 0) or 0)
    return Completion(choice.message.content, tuple(calls), usage, response.model or settings.model,
                      choice.finish_reason)


def _status_error(settings: ProviderSettings, status: int, detail: str) -> ProviderError:
    key = f"{KEY_VARIABLES[settings.provider]} / api_token"
    if status == 401:
        what, hint = "the API token was rejected", f"check {key}"
    elif status == 403:
        what, hint = "access refused", f"check that the token ({key}) may use model {settings.model!r}"
    elif status == 404:
        what, hint = (f"model {settings.model!r} (or the endpoint) not found",
                      "check the workflow's or step's `model:`, and that base_url ends in /v1")
    elif status == 429:
        what, hint = "rate limit or quota exceeded", "wait and retry, or check the account's quota"
    elif status >= 500:
        what, hint = "server error", "usually temporary; retry later"
    elif status == 400:
        what, hint = "the request was refused", "the server's message says which part; check `model:`"
    else:
        what, hint = "the request failed", "see the server's message"
    retryable = status in RETRYABLE_STATUS or status >= 500
    return _error(settings, f"HTTP {status}, {what}: {detail}", status, retryable=retryable, hint=hint)


def _detail(body: object, fallback: str) -> str:
    """The server's own words: OpenAI's {"error": {"message": …}}, else the body, else the SDK's text."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        body = inner.get("message", inner) if isinstance(inner, Mapping) else inner
    text = str(body if body not in (None, "") else fallback)
    return text if len(text) <= 500 else text[:500] + "…"


def _error(settings: ProviderSettings, what: str, status: int | None, *, retryable: bool = False,
           hint: str) -> ProviderError:
    where = f"{settings.provider} model {settings.model!r} at {_shown_url(settings.url or '')}"
    return ProviderError(_mask(f"{where}: {what}", settings.token), retryable=retryable, status=status,
                         hint=_mask(hint, settings.token))


def _shown_url(url: str) -> str:
    """The URL without any user:password part."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else url


def _mask(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
