"""A 404 from a wrong api_base says which URL was called and what the provider serves."""

from __future__ import annotations

import pytest

import dspy_async as dspy

from .servers import RawServer, canned

KEY = "sk-not-found-0123456789abcdef"
NO_RETRY = dspy.RetryPolicy(max_attempts=1)
PAGE = canned(404, {"Content-Type": "text/plain"}, "404 page not found")


@pytest.mark.parametrize(
    ("model", "base", "path", "hint"),
    [
        pytest.param(
            "openai/m",
            "",
            "/chat/completions",
            "OpenAI-compatible servers usually serve /v1/chat/completions; "
            "did you forget /v1 in api_base?",
            id="openai_without_v1",
        ),
        pytest.param(
            "anthropic/m",
            "/v1",
            "/v1/v1/messages",
            "Anthropic serves /v1/messages; api_base is the host URL, without /v1",
            id="anthropic_with_v1",
        ),
        pytest.param(
            "ollama/m",
            "/v1",
            "/v1/api/chat",
            "Ollama serves /api/chat at the host URL",
            id="ollama_with_v1",
        ),
    ],
)
def test_a_wrong_api_base_names_the_url_and_the_expected_path(
    model: str, base: str, path: str, hint: str
) -> None:
    with RawServer(PAGE) as server, pytest.raises(dspy.BadRequestError) as raised:
        dspy.LM(model, api_base=f"{server.url}{base}", api_key=KEY, retry=NO_RETRY)("q")
    message = str(raised.value)
    assert server.requests[0].path == path
    assert f"POST {server.url}{path} was not found" in message
    assert hint in message
    assert "404 page not found" in message
    assert raised.value.status_code == 404
    assert KEY[:8] not in message


def test_a_404_on_the_right_path_points_at_the_model_name_too() -> None:
    body = {"error": {"message": "The model `m` does not exist", "code": "model_not_found"}}
    with RawServer(canned(404, {}, body)) as server, pytest.raises(dspy.BadRequestError) as raised:
        dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, retry=NO_RETRY)("q")
    message = str(raised.value)
    assert "The model `m` does not exist" in message
    assert f"POST {server.url}/v1/chat/completions was not found" in message
    assert "check api_base and the model name" in message
    assert "forget /v1" not in message
