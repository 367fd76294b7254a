"""Bad values in well-formed replies: token counts that are negative, booleans or strings, a
finish reason that is not a string, and NaN or infinity where a float output should be.

The JSON is valid, so nothing fails on the way in; each value must still be refused. A wrong
count or reason is a reply the provider never sends, so it is a ProviderResponseError (not
retried: the same server will say it again). NaN or infinity in the model's answer is the
model's mistake, so the output is invalid and re-asked, like any other invalid output.
"""

from __future__ import annotations

from typing import Any

import pytest

import dspy_async as dspy
from dspy_async import LM, ProviderResponseError, RetryPolicy
from dspy_async.testing import DummyLM

from .servers import RawServer, anthropic_message, canned, openai_chat, sequence

KEY = "sk-hostile-0123456789abcdef"
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)


def lm_on(server: RawServer, provider: str = "openai") -> LM:
    api_base = f"{server.url}/v1" if provider == "openai" else server.url
    return LM(f"{provider}/m", api_base=api_base, api_key=KEY, retry=FAST, timeout=30)


def ollama_chat(content: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "m",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 3,
        "eval_count": 2,
    }
    body.update(fields)
    return body


def refused(provider: str, body: dict[str, Any]) -> ProviderResponseError:
    """Call a server answering `body` (with HTTP 200) and return the error it must raise."""
    with RawServer(canned(200, {"content-type": "application/json"}, body)) as server:
        with pytest.raises(ProviderResponseError) as raised:
            lm_on(server, provider)("q")
        assert server.connections == 1  # not retried: the same server would say it again
    error = raised.value
    assert error.status_code == 200 and len(error.attempts) == 1
    assert KEY not in str(error) and KEY not in repr(error.__cause__)
    return error


BAD_COUNTS = [
    (-5, "not -5"),
    (True, "not True"),
    (1.5, "not 1.5"),
    ("12", "not str"),
    ([3], "not list"),
]


@pytest.mark.parametrize(("value", "shown"), BAD_COUNTS)
def test_openai_bad_token_count(value: object, shown: str) -> None:
    body = openai_chat("hi", usage={"prompt_tokens": 1, "completion_tokens": value})
    error = refused("openai", body)
    assert f"usage completion_tokens must be a whole number >= 0, {shown}" in str(error)


@pytest.mark.parametrize(("value", "shown"), BAD_COUNTS)
def test_anthropic_bad_token_count_cached_ones_included(value: object, shown: str) -> None:
    usage = {"input_tokens": 4, "output_tokens": 1, "cache_read_input_tokens": value}
    error = refused("anthropic", anthropic_message("hi", usage=usage))
    assert f"usage cache_read_input_tokens must be a whole number >= 0, {shown}" in str(error)


@pytest.mark.parametrize(("value", "shown"), BAD_COUNTS)
def test_ollama_bad_token_count(value: object, shown: str) -> None:
    error = refused("ollama", ollama_chat("hi", prompt_eval_count=value))
    assert f"usage prompt_eval_count must be a whole number >= 0, {shown}" in str(error)


def test_a_usage_that_is_not_an_object_is_refused() -> None:
    error = refused("openai", openai_chat("hi", usage="lots"))
    assert "usage must be an object or null, not str" in str(error)


def test_a_count_echoing_text_quotes_only_its_type() -> None:
    error = refused("openai", openai_chat("hi", usage={"prompt_tokens": f"key={KEY}"}))
    assert "usage prompt_tokens must be a whole number >= 0, not str" in str(error)


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("openai", openai_chat("hi", choices=[{"message": {"content": "hi"}, "finish_reason": 7}])),
        ("anthropic", anthropic_message("hi", stop_reason={"why": "done"})),
        ("ollama", ollama_chat("hi", done_reason=True)),
    ],
)
def test_a_finish_reason_that_is_not_a_string_is_refused(
    provider: str, body: dict[str, Any]
) -> None:
    error = refused(provider, body)
    assert "the finish reason must be a string or null, not " in str(error)


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("openai", openai_chat("hi", usage=None, choices=[{"message": {"content": "hi"}}])),
        ("openai", {"choices": [{"message": {"content": "hi"}, "finish_reason": None}]}),
        ("anthropic", anthropic_message("hi", usage={"input_tokens": None}, stop_reason=None)),
        ("ollama", {"message": {"role": "assistant", "content": "hi"}, "done": True}),
    ],
)
def test_null_or_missing_counts_and_reasons_are_still_fine(
    provider: str, body: dict[str, Any]
) -> None:
    with RawServer(canned(200, {"content-type": "application/json"}, body)) as server:
        response = lm_on(server, provider)("q")
    assert response.text == "hi"
    assert response.usage.total_tokens == 0 and response.finish_reason is None


def test_zero_and_large_counts_are_fine() -> None:
    body = openai_chat("hi", usage={"prompt_tokens": 0, "completion_tokens": 2**40})
    with RawServer(canned(200, {"content-type": "application/json"}, body)) as server:
        usage = lm_on(server)("q").usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, 2**40)


# -- NaN and infinity in the model's output ------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    ['{"score": NaN}', '{"score": Infinity}', '{"score": -Infinity}', '{"score": 1e999}'],
)
def test_nan_or_infinite_float_output_is_re_asked(answer: str) -> None:
    first = canned(200, {"content-type": "application/json"}, openai_chat(answer))
    second = canned(200, {"content-type": "application/json"}, openai_chat('{"score": 0.5}'))
    with RawServer(sequence(first, second)) as server:
        result = dspy.Predict("q -> score: float", lm=lm_on(server))(q="x")
        reask = server.requests[1].json()["messages"][-1]["content"]
    assert result.score == 0.5
    assert [a.outcome for a in result.attempts] == ["invalid_output", "ok"]
    assert reask.startswith("Your reply was invalid:")


def test_infinity_in_a_native_structured_answer_is_re_asked() -> None:
    # Anthropic's forced tool: the answer is JSON in the body itself, where 1e999 parses to inf.
    def tool_reply(score: str) -> bytes:
        block = f'{{"type": "tool_use", "id": "t", "name": "S", "input": {{"score": {score}}}}}'
        return (
            f'{{"type": "message", "role": "assistant", "content": [{block}], '
            '"stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}'
        ).encode()

    first = canned(200, {"content-type": "application/json"}, tool_reply("1e999"))
    second = canned(200, {"content-type": "application/json"}, tool_reply("0.25"))
    with RawServer(sequence(first, second)) as server:
        result = dspy.Predict("q -> score: float", lm=lm_on(server, "anthropic"))(q="x")
    assert result.score == 0.25
    assert [a.outcome for a in result.attempts] == ["invalid_output", "ok"]


def test_nan_everywhere_is_invalid_until_the_re_asks_are_spent() -> None:
    lm = DummyLM(['{"score": 1e999}'] * 3)
    with pytest.raises(dspy.OutputValidationError) as raised:
        dspy.Predict("q -> score: float", lm=lm)(q="x")
    assert len(raised.value.errors) == 3
    assert all("finite number" in error for error in raised.value.errors)
