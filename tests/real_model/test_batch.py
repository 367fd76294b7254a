"""A batch wider than the server's slots: every item comes back, in order."""

from __future__ import annotations

import pytest

import dspy_async as dspy

from .support import SLOTS, LMFactory

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

ITEMS = 16


def test_batch_over_four_slots(make_lm: LMFactory) -> None:
    assert ITEMS == 4 * SLOTS  # four requests wait for each slot
    items = [{"question": f"What is {n} + 1?"} for n in range(ITEMS)]
    predict = dspy.Predict("question -> answer: int", lm=make_lm("openai"))

    results = predict.batch(items, max_concurrency=ITEMS, return_exceptions=True)

    assert len(results) == ITEMS
    # Constrained decoding makes every reply valid, and a request beyond the slots waits in
    # the server's queue: no item may fail.
    failed = [r for r in results if not isinstance(r, dspy.Prediction)]
    assert not failed, failed
    assert all(type(r.answer) is int for r in results)
