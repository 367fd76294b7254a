"""Errors a real server returns: each becomes its typed error after one attempt, no retry."""

from __future__ import annotations

import pytest

import dspy_async as dspy

from .support import SLOT_CONTEXT, LMFactory

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROVIDERS = ["openai", "anthropic"]
WRONG_KEY = "sk-wrong-key-for-real-model-suite"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_wrong_api_key(make_lm: LMFactory, provider: str) -> None:
    predict = dspy.Predict("question -> answer", lm=make_lm(provider, api_key=WRONG_KEY))
    with pytest.raises(dspy.AuthenticationError) as caught:
        predict(question="What is the capital of France?")
    error = caught.value
    assert error.status_code == 401
    assert error.provider == provider
    assert [(a.outcome, a.status_code) for a in error.attempts] == [("error", 401)]
    assert WRONG_KEY not in str(error)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_prompt_over_the_context_window(make_lm: LMFactory, provider: str) -> None:
    predict = dspy.Predict("text -> summary", lm=make_lm(provider))
    with pytest.raises(dspy.ContextWindowExceededError) as caught:
        predict(text="word " * (2 * SLOT_CONTEXT))
    error = caught.value
    assert error.status_code == 400
    assert [(a.outcome, a.status_code) for a in error.attempts] == [("error", 400)]
    assert "context" in str(error)
