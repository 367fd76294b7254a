"""Predict against SmolLM2-135M, through the OpenAI and the Anthropic provider.

Through OpenAI, the schema goes out as a `json_schema` response_format, which llama.cpp
enforces by constrained decoding. llama.cpp's Anthropic endpoint answers a forced tool in prose
for this model (its chat template has no tools), so the LM falls back to the prompt-JSON
strategy there. With it, a 135M model answers some questions by echoing the schema or prose,
so each Anthropic case offers a few inputs and needs a valid answer to one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import pytest

import dspy_async as dspy

from .support import LMFactory

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

LABELS = ("positive", "negative")


class ShortAnswer(dspy.Signature):
    """Answer the question in a few words."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class NumberAnswer(dspy.Signature):
    """Answer the question with a whole number."""

    question: str = dspy.InputField()
    answer: int = dspy.OutputField()


class YesNoAnswer(dspy.Signature):
    """Answer the question with true or false."""

    question: str = dspy.InputField()
    answer: bool = dspy.OutputField()


class Sentiment(dspy.Signature):
    """Classify the sentiment of the text."""

    text: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


def is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def is_int(value: object) -> bool:
    return type(value) is int


def is_bool(value: object) -> bool:
    return type(value) is bool


def is_label(value: object) -> bool:
    return value in LABELS


STR_INPUTS = ("What is the capital of France?", "Which animal barks?", "Name a color.")
INT_INPUTS = ("How many days are in a week?", "How many months are in a year?")
BOOL_INPUTS = ("Is the sun hot?", "Is 5 greater than 3?", "Is water wet?")
SENTIMENT_INPUTS = ("I love this movie, it is wonderful!", "What a great day!")

# (signature, input field, inputs to try in order, output field, check of its value)
CASES = [
    pytest.param(ShortAnswer, "question", STR_INPUTS, "answer", is_text, id="class-str"),
    pytest.param("question -> answer: str", "question", STR_INPUTS, "answer", is_text, id="str"),
    pytest.param(NumberAnswer, "question", INT_INPUTS, "answer", is_int, id="class-int"),
    pytest.param("question -> answer: int", "question", INT_INPUTS, "answer", is_int, id="int"),
    pytest.param(YesNoAnswer, "question", BOOL_INPUTS, "answer", is_bool, id="class-bool"),
    pytest.param("question -> answer: bool", "question", BOOL_INPUTS, "answer", is_bool, id="bool"),
    pytest.param(Sentiment, "text", SENTIMENT_INPUTS, "sentiment", is_label, id="class-literal"),
    pytest.param(
        "text -> sentiment: Literal['positive', 'negative']",
        "text",
        SENTIMENT_INPUTS,
        "sentiment",
        is_label,
        id="literal",
    ),
]

SignatureSpec = type[dspy.Signature] | str


def first_valid(predict: dspy.Predict, field: str, inputs: Sequence[str]) -> dspy.Prediction:
    """The Prediction for the first input the model answers validly; other failures fail."""
    invalid: list[str] = []
    for text in inputs:
        try:
            return predict(**{field: text})
        except dspy.OutputValidationError as exc:
            invalid.append(f"{text!r} -> {exc.raw_outputs[-1][:100]!r}")
    pytest.fail("the model answered none of the inputs validly:\n" + "\n".join(invalid))


def check_prediction(
    prediction: dspy.Prediction, output: str, accepts: Callable[[Any], bool]
) -> None:
    value = prediction[output]
    assert accepts(value), f"{output}={value!r}"
    assert list(prediction) == [output]
    assert prediction.attempts[-1].outcome == "ok"
    assert all(a.outcome == "invalid_output" for a in prediction.attempts[:-1])
    assert prediction.usage.prompt_tokens > 0
    assert prediction.usage.completion_tokens > 0


@pytest.mark.parametrize(("signature", "field", "inputs", "output", "accepts"), CASES)
def test_openai_native_structured_output(
    make_lm: LMFactory,
    signature: SignatureSpec,
    field: str,
    inputs: Sequence[str],
    output: str,
    accepts: Callable[[Any], bool],
) -> None:
    lm = make_lm("openai")
    prediction = dspy.Predict(signature, lm=lm)(**{field: inputs[0]})
    check_prediction(prediction, output, accepts)
    assert lm.supports_native_structured  # llama.cpp accepted the json_schema response_format


@pytest.mark.parametrize(("signature", "field", "inputs", "output", "accepts"), CASES)
def test_anthropic_prompt_json(
    make_lm: LMFactory,
    signature: SignatureSpec,
    field: str,
    inputs: Sequence[str],
    output: str,
    accepts: Callable[[Any], bool],
) -> None:
    prediction = first_valid(
        dspy.Predict(signature, lm=make_lm("anthropic", native=False)), field, inputs
    )
    check_prediction(prediction, output, accepts)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_plain_call(make_lm: LMFactory, provider: str) -> None:
    lm = make_lm(provider)
    response = lm("Say hello.")
    assert response.text.strip()
    assert response.provider == provider
    assert [a.outcome for a in response.attempts] == ["ok"]
    assert response.finish_reason in {"stop", "length", "end_turn", "max_tokens"}
    assert lm.usage == response.usage
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens > 0


def test_anthropic_ignored_tool_falls_back_to_prompt_json(make_lm: LMFactory) -> None:
    # The model's answer may or may not be valid JSON; what matters is how it was asked for.
    lm = make_lm("anthropic")
    try:
        attempts = dspy.Predict(Sentiment, lm=lm)(text=SENTIMENT_INPUTS[0]).attempts
    except dspy.OutputValidationError as exc:
        attempts = exc.attempts
    ignored, *rest = attempts
    assert (ignored.outcome, ignored.status_code) == ("error", 200)
    assert "ignored the native structured-output request" in (ignored.error or "")
    assert rest and all(a.outcome != "error" for a in rest)
    assert not lm.supports_native_structured  # later calls go straight to prompt JSON
