"""A server that accepts a forced tool but answers in prose (llama.cpp's Anthropic endpoint)."""

from typing import Literal

import pytest

import dspy_async as dspy
from dspy_async.testing import ProviderSimulator


def test_ignored_forced_tool_falls_back_to_prompt_json(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    sim.respond(output="The answer is 42.", times=1)  # prose, though the request forces a tool
    sim.respond(output='{"answer": "42"}')
    lm = dspy.LM("anthropic/claude-3-haiku", api_base=sim.anthropic_base_url, api_key="sk-t")
    qa = dspy.Predict("question -> answer", lm=lm)

    assert qa(question="What is six times seven?").answer == "42"
    first, second = sim.requests
    assert "tool_choice" in first.body
    assert "tool_choice" not in second.body
    assert lm.supports_native_structured is False

    assert qa(question="Again?").answer == "42"  # remembered: one request, no tool
    assert len(sim.requests) == 3
    assert "tool_choice" not in sim.requests[2].body


def test_plain_calls_are_not_affected(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output="just text")
    lm = dspy.LM("anthropic/claude-3-haiku", api_base=provider_simulator.anthropic_base_url)
    assert lm("hello").text == "just text"


def test_a_400_that_does_not_name_the_native_parameter_is_a_plain_bad_request(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(kind="status", status=400, message="model 'x' does not exist")
    lm = dspy.LM("openai/x", api_base=provider_simulator.openai_base_url, api_key="sk-t")
    with pytest.raises(dspy.BadRequestError) as info:
        dspy.Predict("question -> answer", lm=lm)(question="hi")
    assert not isinstance(info.value, dspy.UnsupportedParameterError)
    assert lm.supports_native_structured is True
    assert len(provider_simulator.requests) == 1


def test_the_simulator_answers_prompt_json_from_the_closing_example(
    provider_simulator: ProviderSimulator,
) -> None:
    class Classify(dspy.Signature):
        """Classify an email by intent."""

        email_content: str = dspy.InputField()
        category: Literal["meeting", "spam", "other"] = dspy.OutputField()
        confidence: float = dspy.OutputField(ge=0, le=1)

    lm = dspy.LM("ollama/llama3.2", api_base=provider_simulator.ollama_base_url)
    lm.supports_native_structured = False
    provider_simulator.fault(kind="invalid_output")
    result = dspy.Predict(Classify, lm=lm)(email_content="Meet at 3?")
    assert result.category in ("meeting", "spam", "other")
    assert [a.outcome for a in result.attempts] == ["invalid_output", "ok"]
    assert "format" not in provider_simulator.requests[0].body
