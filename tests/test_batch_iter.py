"""Batches over any iterable in bounded memory, and results handed over as items finish:
`batch`/`abatch` over generators, `batch_iter`/`abatch_iter` in completion order, closing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any, Literal

import pytest

import dspy_async as dspy
from dspy_async.batch import WINDOW
from dspy_async.testing import ProviderSimulator


class Classify(dspy.Signature):
    """Classify an email by intent."""

    email_content: str = dspy.InputField()
    category: Literal["meeting", "spam", "other"] = dspy.OutputField()


def sim_lm(sim: ProviderSimulator, **kwargs: Any) -> dspy.LM:
    return dspy.LM(
        "openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key="sk-t", cache=False, **kwargs
    )


class Tally:
    """What a batch did with its input: items pulled, started, finished and cancelled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pulled = self.finished = self.cancelled = 0
        self.most_alive = 0  # pulled and not yet finished, at the most

    def items(self, count: int | None = None) -> Iterator[dict[str, Any]]:
        for i in itertools.count() if count is None else range(count):
            with self.lock:
                self.pulled += 1
                self.most_alive = max(self.most_alive, self.pulled - self.finished)
            yield {"delay": 0.0, "index": i}


class Sleeper(dspy.Module):
    """An async module that waits `delay` seconds and returns its index (no LM: the batch
    engine is what is under test here)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    async def aforward(self, delay: float, index: int) -> int:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            with self.tally.lock:
                self.tally.cancelled += 1
            raise
        with self.tally.lock:
            self.tally.finished += 1
        return index


def test_batch_takes_a_generator_and_keeps_a_bounded_number_of_items_alive() -> None:
    tally = Tally()
    results = Sleeper(tally).batch(tally.items(500), max_concurrency=4)
    assert results == list(range(500))
    assert tally.pulled == 500
    assert 4 <= tally.most_alive <= WINDOW * 4


def test_batch_iter_hands_over_items_in_the_order_they_finish() -> None:
    delays = [0.6, 0.0, 0.3, 0.45, 0.15]
    items = [{"delay": delay, "index": i} for i, delay in enumerate(delays)]
    finished = list(Sleeper(Tally()).batch_iter(items, max_concurrency=5))
    assert finished == [(1, 1), (4, 4), (2, 2), (3, 3), (0, 0)]


def test_closing_the_iterator_cancels_items_in_flight_and_stops_pulling() -> None:
    tally = Tally()

    def slow_items() -> Iterator[dict[str, Any]]:
        for item in tally.items():
            yield {**item, "delay": 0.0 if item["index"] < 10 else 30.0}

    finished = Sleeper(tally).batch_iter(slow_items(), max_concurrency=8)
    first = [next(finished) for _ in range(10)]
    assert sorted(index for index, _ in first) == list(range(10))
    started = time.monotonic()
    finished.close()
    assert time.monotonic() - started < 5
    pulled = tally.pulled
    assert pulled <= 10 + WINDOW * 8
    assert tally.cancelled == pulled - 10  # every item still in flight was cancelled
    time.sleep(0.2)
    assert tally.pulled == pulled  # and nothing more was read


async def test_abatch_iter_from_an_async_caller_and_aclose() -> None:
    tally = Tally()
    stream = Sleeper(tally).abatch_iter(tally.items(), max_concurrency=3)
    seen = []
    async with contextlib.aclosing(stream):
        async for index, result in stream:
            assert index == result
            seen.append(index)
            if len(seen) == 20:
                break
    assert len(seen) == 20
    await asyncio.sleep(0.1)
    pulled = tally.pulled
    await asyncio.sleep(0.1)
    # Handed over: the 20 read and the rest of their chunk (at most a window); a window more
    # may have been pulled behind them.
    assert tally.pulled == pulled <= 20 + 2 * WINDOW * 3


def test_batch_iter_yields_errors_in_place_over_real_http(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    sim.fault("[doc 003]", kind="status", status=401)
    sim.fault("[doc 007]", kind="status", status=503)  # retried once, then answered
    classifier = dspy.Predict(Classify, lm=sim_lm(sim))
    items = ({"email_content": f"[doc {i:03d}] read me"} for i in range(12))
    outcomes = dict(classifier.batch_iter(items, max_concurrency=4))
    assert sorted(outcomes) == list(range(12))
    assert isinstance(outcomes[3], dspy.AuthenticationError)
    assert len(outcomes[7].attempts) == 2
    assert all(isinstance(outcomes[i], dspy.Prediction) for i in outcomes if i != 3)
    assert len(sim.requests) == 13


def test_a_bad_item_of_an_iterator_fails_alone_and_an_input_error_ends_the_batch() -> None:
    tally = Tally()

    def items() -> Iterator[Any]:
        yield {"delay": 0.0, "index": 0}
        yield "not a dict"
        yield {"delay": 0.05, "index": 2}
        raise OSError("the input file went away")

    outcomes: list[tuple[int, Any]] = []
    with pytest.raises(OSError, match="went away"):
        outcomes.extend(Sleeper(tally).batch_iter(items()))
    assert sorted(index for index, _ in outcomes) == [0, 1, 2]  # pulled items still finished
    assert isinstance(dict(outcomes)[1], dspy.SignatureError)
    mixed = iter([{"delay": 0.0, "index": 0}, "x"])
    results = Sleeper(tally).batch(mixed, return_exceptions=True)  # type: ignore[arg-type]
    assert results[0] == 0 and isinstance(results[1], dspy.SignatureError)


def test_arguments_are_checked_when_the_iterator_is_made() -> None:
    module = Sleeper(Tally())
    with pytest.raises(dspy.ConfigurationError, match="max_concurrency"):
        module.batch_iter([], max_concurrency=0)
    with pytest.raises(dspy.SignatureError, match="iterable of dicts"):
        module.batch_iter({"delay": 0.0, "index": 0})  # type: ignore[arg-type]
    with pytest.raises(dspy.SignatureError, match="batch item 1"):
        module.abatch_iter([{"delay": 0.0, "index": 0}, 5])  # type: ignore[list-item]
    assert list(module.batch_iter([])) == []


class Instant(dspy.BaseLM):
    """An LM that answers at once, keeping nothing per call (DummyLM keeps every call)."""

    def __init__(self) -> None:
        super().__init__("instant", "dummy")

    async def _generate(self, messages: Any, output_schema: Any, params: Any) -> dspy.LMResponse:
        usage = dspy.Usage(prompt_tokens=3, completion_tokens=2)
        attempt = dspy.Attempt(number=1, outcome="ok", usage=usage)
        return dspy.LMResponse('{"category": "spam"}', usage, "instant", "dummy", (attempt,))


@pytest.mark.slow
def test_memory_stays_flat_however_long_the_input() -> None:
    classifier = dspy.Predict(Classify, lm=Instant())
    dspy.configure(disable_history=True)  # the LM's history keeps 1,000 calls by default

    def peak(count: int) -> int:
        items = ({"email_content": f"message {i}"} for i in range(count))
        gc.collect()
        tracemalloc.start()
        try:
            spam = sum(p.category == "spam" for _, p in classifier.batch_iter(items))
            _, most = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert spam == count
        return most

    try:
        small, large = peak(1_000), peak(8_000)
    finally:
        dspy.configure(disable_history=False)
    assert large < 1.5 * small, f"peak {small} bytes for 1,000 items, {large} for 8,000"
