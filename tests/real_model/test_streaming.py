"""Streaming from llama.cpp's server (SmolLM2-135M), through its OpenAI and Anthropic APIs:
the text as it is generated, the same text and usage as the unstreamed call, fields of a
structured reply as they come, and an early exit that stops the generation."""

from __future__ import annotations

import time

import httpx
import pytest

import dspy_async as dspy

from .support import API_KEY, LMFactory

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPT = "Write one sentence about the sea."
STORY = "Write a long story about a dragon, with many chapters."


class ShortAnswer(dspy.Signature):
    """Answer the question in a few words."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_text_streams_as_it_is_generated(make_lm: LMFactory, provider: str) -> None:
    lm = make_lm(provider)

    stream = lm.stream(PROMPT)
    arrivals = []
    for piece in stream:
        arrivals.append((time.monotonic(), piece))

    response = stream.response
    assert len(arrivals) > 5  # token by token, not one body
    assert "".join(piece for _, piece in arrivals) == response.text
    assert response.text.strip()
    assert arrivals[-1][0] - arrivals[0][0] > 0  # spread over the generation
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert [a.outcome for a in response.attempts] == ["ok"]
    # Greedy decoding without the prompt cache: the unstreamed call says the same.
    whole = lm(PROMPT)
    assert whole.text == response.text
    assert whole.usage.completion_tokens == response.usage.completion_tokens


def test_structured_fields_stream_and_validate(make_lm: LMFactory) -> None:
    lm = make_lm("openai")  # the schema goes out as json_schema: llama.cpp enforces it
    stream = dspy.Predict(ShortAnswer, lm=lm).stream(question="What is the capital of France?")

    chunks = list(stream)

    assert chunks and {chunk.field for chunk in chunks} == {"answer"}
    prediction = stream.prediction
    assert "".join(chunk.text for chunk in chunks) == prediction.answer
    assert prediction.answer.strip()
    assert chunks[-1].partial == {"answer": prediction.answer}
    assert prediction.usage.completion_tokens > 0


def busy_slots(base_url: str) -> int:
    """How many of the server's slots are generating (its /slots endpoint)."""
    slots = httpx.get(f"{base_url}/slots", headers={"authorization": f"Bearer {API_KEY}"})
    slots.raise_for_status()
    return sum(bool(slot["is_processing"]) for slot in slots.json())


def test_leaving_early_stops_the_generation(llama_server: str, make_lm: LMFactory) -> None:
    """A long generation (400 tokens take seconds here) stops when the consumer leaves: the
    server sees the connection close and frees the slot at once."""
    lm = make_lm("openai")
    for _ in range(2):
        for index, _piece in enumerate(lm.stream(STORY, max_tokens=400)):
            if index == 2:
                assert busy_slots(llama_server) == 1
                break
        left = time.monotonic()
        while busy_slots(llama_server) and time.monotonic() - left < 5:
            time.sleep(0.05)
        assert busy_slots(llama_server) == 0
        assert time.monotonic() - left < 2.0
