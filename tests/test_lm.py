"""LM against the provider simulator over real HTTP: wire formats, usage, configuration, errors."""

from __future__ import annotations

import copy
import json
import pickle
import threading
from typing import Any

import httpx
import pytest

from dspy_async import _runtime
from dspy_async.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextWindowExceededError,
    LMError,
    ProviderResponseError,
    ProviderServerError,
    UnsupportedParameterError,
)
from dspy_async.lm import LM, OutputSchema
from dspy_async.records import Usage
from dspy_async.retry import RetryPolicy
from dspy_async.testing import ProviderSimulator

KEY = "sk-test-0123456789abcdef"
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)
SCHEMA = OutputSchema(
    "Answer",
    {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    },
)
PROVIDERS = ["openai", "anthropic", "ollama"]


def make_lm(sim: ProviderSimulator, provider: str = "openai", **kwargs: Any) -> LM:
    kwargs.setdefault("retry", FAST)
    return LM(f"{provider}/test-model", api_key=KEY, api_base=sim.api_base(provider), **kwargs)


# -- wire formats ---------------------------------------------------------------------


def test_openai_chat_request_and_response(provider_simulator: ProviderSimulator) -> None:
    sim = provider_simulator
    sim.respond("Say hi", output="Hi there!")
    lm = make_lm(sim, temperature=0.2, max_tokens=50, seed=7)
    response = lm(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"},
        ],
        temperature=0.9,
    )
    assert response.text == "Hi there!"
    assert (response.provider, response.model, response.finish_reason) == (
        "openai",
        "test-model",
        "stop",
    )
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert lm.usage == response.usage
    [request] = sim.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer ***"
    assert request.body == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"},
        ],
        "temperature": 0.9,
        "max_tokens": 50,
        "seed": 7,
    }


def test_openai_structured_output_uses_json_schema_response_format(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.respond(output={"answer": "Paris"})
    response = make_lm(provider_simulator)("Capital of France?", output_schema=SCHEMA)
    assert json.loads(response.text) == {"answer": "Paris"}
    body = provider_simulator.requests[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": SCHEMA.schema, "strict": True},
    }


def test_without_native_support_a_structured_call_is_plain_chat(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = make_lm(provider_simulator)
    lm.supports_native_structured = False
    lm("Capital of France?", output_schema=SCHEMA)
    assert "response_format" not in provider_simulator.requests[0].body


def test_anthropic_messages_request_and_response(provider_simulator: ProviderSimulator) -> None:
    sim = provider_simulator
    sim.respond("Say hi", output="Hello from Claude")
    response = make_lm(sim, "anthropic", temperature=0.0)(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"},
        ]
    )
    assert response.text == "Hello from Claude"
    assert response.finish_reason == "end_turn"
    assert response.usage.total_tokens > 0
    [request] = sim.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "***"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body == {
        "model": "test-model",
        "max_tokens": 4096,
        "temperature": 0.0,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hi"}],
    }


def test_anthropic_structured_output_forces_a_tool(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output={"answer": "Paris"})
    response = make_lm(provider_simulator, "anthropic")("Capital?", output_schema=SCHEMA)
    assert json.loads(response.text) == {"answer": "Paris"}
    assert response.finish_reason == "tool_use"
    body = provider_simulator.requests[0].body
    assert body["tools"] == [
        {
            "name": "Answer",
            "description": "Answer with a Answer object.",
            "input_schema": SCHEMA.schema,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "Answer"}


def test_ollama_chat_request_and_response(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output="Hi from llama")
    response = make_lm(provider_simulator, "ollama", temperature=0.5, max_tokens=20)(
        "Say hi", output_schema=SCHEMA, keep_alive="5m"
    )
    assert response.text == "Hi from llama"
    assert response.usage.prompt_tokens > 0
    assert response.finish_reason == "stop"
    [request] = provider_simulator.requests
    assert request.path == "/api/chat"
    assert request.body == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Say hi"}],
        "stream": False,
        "keep_alive": "5m",
        "options": {"temperature": 0.5, "num_predict": 20},
        "format": SCHEMA.schema,
    }


async def test_acall_from_another_loop_shares_the_engine(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.respond(output="async answer")
    lm = make_lm(provider_simulator)
    response = await lm.acall(messages=[{"role": "user", "content": "q"}])
    assert response.text == "async answer"
    assert lm.usage == response.usage


def test_usage_sums_correctly_under_concurrency(provider_simulator: ProviderSimulator) -> None:
    lm = make_lm(provider_simulator)
    responses: list[Usage] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        usage = lm(f"question number {i} " + "word " * i).usage
        with lock:
            responses.append(usage)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(responses) == 16
    assert lm.usage == sum(responses, Usage())


def test_model_id_splits_on_the_first_slash(provider_simulator: ProviderSimulator) -> None:
    lm = LM("openai/org/model-7b", api_base=provider_simulator.openai_base_url)
    assert (lm.provider, lm.model) == ("openai", "org/model-7b")
    lm("q")
    assert provider_simulator.requests[0].body["model"] == "org/model-7b"
    assert "authorization" not in provider_simulator.requests[0].headers


def test_keys_and_hosts_come_from_the_environment(
    provider_simulator: ProviderSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OLLAMA_HOST", provider_simulator.ollama_base_url.removeprefix("http://"))
    LM("openai/m", api_base=provider_simulator.openai_base_url)("q")
    LM("ollama/llama3.2")("q")
    first, second = provider_simulator.requests
    assert first.headers["authorization"] == "Bearer ***"
    assert second.path == "/api/chat"


def test_configuration_errors_say_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    # Built without a key, as DSPy allows (settings modules build LMs at import time); the
    # first call says what to set, before any request (there is no network here to reach).
    for model, variable in (
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic/claude-3-haiku", "ANTHROPIC_API_KEY"),
    ):
        lm = LM(model)
        with pytest.raises(ConfigurationError, match=f"set {variable} in the environment"):
            lm("q")
    with pytest.raises(ConfigurationError, match=r"unknown provider 'mistral'.*openai"):
        LM("mistral/large", api_key=KEY)
    with pytest.raises(ConfigurationError, match="provider/model"):
        LM("gpt-4o-mini")
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        LM("openai/m", api_key=KEY, max_concurrency=0)


def test_a_users_own_http_client_is_used(provider_simulator: ProviderSimulator) -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request.url.path)

    client = httpx.AsyncClient(event_hooks={"request": [record]})
    try:
        make_lm(provider_simulator, http_client=client)("q")
    finally:
        _runtime.run(client.aclose())
    assert seen == ["/v1/chat/completions"]


def test_response_bodies_over_the_cap_are_refused(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output="x" * 5000)
    with pytest.raises(ProviderResponseError, match="over the 1000 byte limit") as raised:
        make_lm(provider_simulator, max_response_bytes=1000)("q")
    assert len(raised.value.attempts) == 1
    assert len(provider_simulator.requests) == 1


# -- errors that are not retried --------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (422, BadRequestError),
    ],
)
def test_client_errors_fail_at_once_with_the_providers_message(
    provider_simulator: ProviderSimulator, provider: str, status: int, error_type: type[LMError]
) -> None:
    provider_simulator.fault(kind="status", status=status, message=f"nope-{status}", times=None)
    with pytest.raises(error_type) as raised:
        make_lm(provider_simulator, provider)("q")
    error = raised.value
    assert type(error) is error_type
    assert (error.provider, error.status_code) == (provider, status)
    assert f"nope-{status}" in str(error)
    assert [a.status_code for a in error.attempts] == [status]
    assert len(provider_simulator.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_context_window_errors_are_recognized_and_not_retried(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.fault(kind="context_window", times=None)
    with pytest.raises(ContextWindowExceededError) as raised:
        make_lm(provider_simulator, provider)("a very long prompt", output_schema=SCHEMA)
    assert raised.value.status_code == 400
    assert len(provider_simulator.requests) == 1


def test_llama_cpp_context_size_error_is_a_context_window_error(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(
        kind="status",
        status=400,
        message="the request exceeds the available context size, try increasing it",
    )
    with pytest.raises(ContextWindowExceededError):
        make_lm(provider_simulator)("q")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_rejected_native_structured_parameter_is_unsupported_at_once(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.fault(kind="unsupported_param", times=None)
    with pytest.raises(UnsupportedParameterError) as raised:
        make_lm(provider_simulator, provider)("q", output_schema=SCHEMA)
    assert len(raised.value.attempts) == 1
    assert len(provider_simulator.requests) == 1


def test_a_5xx_naming_response_format_is_unsupported_not_retried(
    provider_simulator: ProviderSimulator,
) -> None:
    # llama.cpp-based Python servers answer 500 for a response_format they do not know.
    provider_simulator.fault(
        kind="status", status=500, message="Unrecognized response_format type", times=None
    )
    with pytest.raises(UnsupportedParameterError):
        make_lm(provider_simulator)("q", output_schema=SCHEMA)
    assert len(provider_simulator.requests) == 1


# -- secrets ------------------------------------------------------------------------


def test_the_api_key_is_never_shown(
    provider_simulator: ProviderSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    lm = make_lm(provider_simulator)
    assert KEY not in repr(lm)
    assert KEY not in str(vars(lm))
    provider_simulator.fault(kind="status", status=503, message=f"echo {KEY}", times=None)
    with pytest.raises(ProviderServerError) as server_error:
        lm("q")
    provider_simulator.reset()
    provider_simulator.api_key = "the-right-key"
    with pytest.raises(AuthenticationError) as auth_error:
        lm("r")
    errors = [server_error.value, auth_error.value]
    text = " ".join(f"{e!s} {e!r} {e.attempts!r}" for e in errors)
    assert "echo [redacted]" in text
    assert KEY not in text
    assert any(record.levelname == "WARNING" for record in caplog.records)
    assert all(KEY not in record.getMessage() for record in caplog.records)


def test_lms_can_be_copied_and_pickled(provider_simulator: ProviderSimulator) -> None:
    lm = make_lm(provider_simulator, max_concurrency=3, temperature=0.1)
    lm("q")
    for twin in (copy.deepcopy(lm), pickle.loads(pickle.dumps(lm))):
        assert twin.usage == lm.usage
        assert (twin.model, twin.params, twin.max_concurrency) == ("test-model", lm.params, 3)
        assert twin("again").text
        assert twin.usage != lm.usage
