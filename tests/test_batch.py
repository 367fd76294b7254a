"""Module.batch / abatch / submit against the provider simulator over real HTTP."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from typing import Any, Literal

import pytest

import dspy_async as dspy
from dspy_async.testing import DummyLM, ProviderSimulator


class Classify(dspy.Signature):
    """Classify an email by intent."""

    email_content: str = dspy.InputField()
    category: Literal["meeting", "spam", "other"] = dspy.OutputField()


def sim_lm(sim: ProviderSimulator, **kwargs: Any) -> dspy.LM:
    return dspy.LM("openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key="sk-t", **kwargs)


def emails(count: int) -> list[dict[str, str]]:
    return [{"email_content": f"[doc {i:03d}] please read"} for i in range(count)]


@pytest.mark.slow
def test_backing_off_items_release_their_slots(provider_simulator: ProviderSimulator) -> None:
    # 100 docs, 20 get one 429 + Retry-After 1 s, 16 slots, 0.2 s a call: the ideal schedule
    # is about 2.2 s; a design whose waiting items keep their slot needs about 3.3 s.
    sim = provider_simulator
    sim.latency = 0.2
    for i in range(0, 100, 5):
        sim.fault(f"[doc {i:03d}]", kind="status", status=429, retry_after=1)
    classifier = dspy.Predict(Classify, lm=sim_lm(sim))
    started = time.monotonic()
    predictions = classifier.batch(emails(100), max_concurrency=16)
    elapsed = time.monotonic() - started
    assert [p.category for p in predictions] == [p.category for p in predictions if p.category]
    assert len(predictions) == 100
    assert len(sim.requests) == 120
    assert elapsed < 3.1, f"took {elapsed:.2f} s; the ideal schedule is 2.2 s"
    retried = [p for p in predictions if len(p.attempts) == 2]
    assert len(retried) == 20
    assert all(p.attempts[1].waited >= 0.9 for p in retried)


def test_results_keep_input_order_and_every_failure_is_kept(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    sim.fault("[doc 001]", kind="status", status=401, message="bad key")
    sim.fault("[doc 003]", kind="invalid_output", times=None)
    for item in range(10):
        sim.respond(f"[doc {item:03d}]", output={"category": "spam" if item % 2 else "other"})
    classifier = dspy.Predict(Classify, lm=sim_lm(sim))
    with pytest.raises(dspy.BatchError) as info:
        classifier.batch(emails(10))
    results = info.value.results
    assert len(results) == 10
    assert isinstance(results[1], dspy.AuthenticationError)
    assert isinstance(results[3], dspy.OutputValidationError)
    assert [type(e) for e in info.value.exceptions] == [
        dspy.AuthenticationError,
        dspy.OutputValidationError,
    ]
    for item in (0, 2, 4, 5, 6, 7, 8, 9):
        assert results[item].category == ("spam" if item % 2 else "other")

    again = classifier.batch(emails(10)[:4], return_exceptions=True)
    assert isinstance(again[3], dspy.OutputValidationError)


def test_exhausted_retries_and_per_item_timeouts_are_accounted_for(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    sim.fault("[doc 000]", kind="status", status=503, times=None)
    sim.fault("[doc 001]", kind="hang")
    fast_retries = dspy.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=False)
    classifier = dspy.Predict(Classify, lm=sim_lm(sim, retry=fast_retries))
    results = classifier.batch(emails(4), timeout=1.0, return_exceptions=True)
    assert isinstance(results[0], dspy.ProviderServerError)
    assert len(results[0].attempts) == 2
    assert isinstance(results[1], TimeoutError)
    assert "took longer than 1.0 s" in str(results[1])
    assert all(isinstance(p, dspy.Prediction) for p in results[2:])


def test_bad_items_fail_before_any_request(provider_simulator: ProviderSimulator) -> None:
    classifier = dspy.Predict(Classify, lm=sim_lm(provider_simulator))
    with pytest.raises(dspy.SignatureError, match="batch item 1"):
        classifier.batch([{"email_content": "a"}, "just a string"])  # type: ignore[list-item]
    with pytest.raises(dspy.ConfigurationError, match="max_concurrency"):
        classifier.batch(emails(2), max_concurrency=0)
    results = classifier.batch([{"email": "wrong field"}], return_exceptions=True)
    assert isinstance(results[0], dspy.SignatureError)
    assert provider_simulator.requests == []


def test_sync_only_modules_run_in_a_bounded_thread_pool() -> None:
    lm = DummyLM(respond=lambda messages: {"category": "meeting"})
    active, peak, lock = 0, 0, threading.Lock()

    class Counting(dspy.Module):
        def __init__(self) -> None:
            self.classify = dspy.Predict(Classify, lm=lm)

        def forward(self, email_content: str) -> dspy.Prediction:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            try:
                time.sleep(0.02)
                return self.classify(email_content=email_content)
            finally:
                with lock:
                    active -= 1

    results = Counting().batch(emails(24), max_concurrency=4)
    assert [r.category for r in results] == ["meeting"] * 24
    assert 1 <= peak <= 4


async def test_abatch_from_an_async_caller(provider_simulator: ProviderSimulator) -> None:
    class Pipeline(dspy.Module):
        def __init__(self) -> None:
            self.classify = dspy.Predict(Classify, lm=sim_lm(provider_simulator))

        async def aforward(self, email_content: str) -> dspy.Prediction:
            return await self.classify.acall(email_content=email_content)

    results = await Pipeline().abatch(emails(20), max_concurrency=5)
    assert len(results) == 20
    assert len(provider_simulator.requests) == 20


def test_submit_returns_a_future_and_cancel_stops_the_call(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    classifier = dspy.Predict(Classify, lm=sim_lm(sim))
    future = classifier.submit(email_content="[doc 000] hello")
    assert future.result(timeout=10).category in ("meeting", "spam", "other")

    sim.fault("[doc 001]", kind="hang")
    hanging = classifier.submit(email_content="[doc 001] hello")
    sim.wait_for_requests(2)
    assert hanging.cancel()
    with pytest.raises(CancelledError):
        hanging.result(timeout=5)


def test_progress_bar_counts_items(
    provider_simulator: ProviderSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    classifier = dspy.Predict(Classify, lm=sim_lm(provider_simulator))
    classifier.batch(emails(5), progress=True)
    assert "5/5" in capsys.readouterr().err
    classifier.batch(emails(5), progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_sigint_mid_batch_exits_promptly_and_sends_nothing_after(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    sim.latency = 0.5
    script = textwrap.dedent(
        """
        import sys, time
        import dspy_async as dspy

        class Classify(dspy.Signature):
            email_content: str = dspy.InputField()
            label: str = dspy.OutputField()

        lm = dspy.LM("openai/gpt-4o-mini", api_base=sys.argv[1], api_key="sk-t")
        try:
            dspy.Predict(Classify, lm=lm).batch(
                [{"email_content": f"doc {i}"} for i in range(200)], max_concurrency=8
            )
        except KeyboardInterrupt:
            print(time.monotonic(), flush=True)
            raise SystemExit(130)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, sim.openai_base_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sim.wait_for_requests(8, timeout=30)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    handled = float(stdout.strip())
    assert handled - interrupted < 1.5
    assert time.monotonic() - interrupted < 10
    assert all(request.arrived <= handled for request in sim.requests)
    assert len(sim.requests) < 200
    assert "Traceback" not in stderr


def test_batch_on_the_runtime_loop_is_refused_for_sync_callers() -> None:
    classifier = dspy.Predict(Classify, lm=DummyLM([{"category": "spam"}]))

    async def on_loop() -> None:
        classifier.batch(emails(1))

    with pytest.raises(dspy.RuntimeReentryError):
        dspy._runtime.run(on_loop())  # type: ignore[attr-defined]
    assert asyncio.run(classifier.abatch(emails(1)))[0].category == "spam"
