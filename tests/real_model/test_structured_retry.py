"""Re-asks on a real model: a reply that parses but breaks a constraint is sent back with the
validation error, and the Prediction's attempts record both replies."""

from __future__ import annotations

import functools
import operator

import pytest

import dspy_async as dspy

from .support import LMFactory

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


class EvenAnswer(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: int = dspy.OutputField(multiple_of=2)


# llama.cpp's grammar enforces an integer but not `multipleOf`, so the model can answer 7. Asked
# for two numbers, it gives the first, odd one; told that it is wrong, it gives the second.
ODD_FIRST = ("Say 7, then 8.", "Write 7, then 8.", "Say 1, then 2.")


class Ticket(dspy.Signature):
    """Make up a ticket code for the request."""

    request: str = dspy.InputField()
    code: str = dspy.OutputField(pattern=r"^ZQX-[0-9]{6}$")


def reasked(predict: dspy.Predict, question: str) -> dspy.Prediction | None:
    """The Prediction if the first reply was invalid and a re-ask fixed it, else None."""
    try:
        prediction = predict(question=question)
    except dspy.OutputValidationError:
        return None
    return prediction if prediction.attempts[0].outcome == "invalid_output" else None


def test_native_reask_fixes_an_invalid_reply(make_lm: LMFactory) -> None:
    predict = dspy.Predict(EvenAnswer, lm=make_lm("openai"))
    prediction = next(filter(None, (reasked(predict, q) for q in ODD_FIRST)), None)
    assert prediction is not None, "no question got an invalid reply, then a valid one"

    outcomes = [a.outcome for a in prediction.attempts]
    assert outcomes[-1] == "ok"
    assert set(outcomes[:-1]) == {"invalid_output"}
    assert "multiple of 2" in (prediction.attempts[0].error or "")
    assert prediction.answer % 2 == 0
    assert [a.number for a in prediction.attempts] == list(range(1, len(outcomes) + 1))
    # Every reply's tokens count, the rejected ones included.
    assert prediction.attempts[0].usage.completion_tokens > 0
    summed = functools.reduce(operator.add, (a.usage for a in prediction.attempts))
    assert prediction.usage == summed


def test_prompt_json_reasks_until_retries_run_out(make_lm: LMFactory) -> None:
    predict = dspy.Predict(Ticket, lm=make_lm("openai", native=False))
    one_reask = dspy.StructuredOutputSettings(max_retries=1)
    with (
        dspy.context(structured_outputs=one_reask),
        pytest.raises(dspy.OutputValidationError) as caught,
    ):
        predict(request="My printer is broken.")
    error = caught.value
    assert len(error.raw_outputs) == len(error.errors) == 2  # the reply and one re-ask
    assert [a.outcome for a in error.attempts] == ["invalid_output"] * 2
    assert [a.error for a in error.attempts] == error.errors
