"""LM retries against the provider simulator: what is retried, how long each wait is, what is
logged and reported, and that waits overlap instead of blocking other calls."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import threading
import time
from typing import Any

import pytest

from dspy_async import _limits, events
from dspy_async.errors import (
    BadRequestError,
    LMError,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
)
from dspy_async.lm import LM
from dspy_async.retry import RetryPolicy
from dspy_async.settings import settings
from dspy_async.testing import ProviderSimulator, RecordedRequest, peak_in_flight

FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)


def make_lm(sim: ProviderSimulator, provider: str = "openai", **kwargs: Any) -> LM:
    kwargs.setdefault("retry", FAST)
    return LM(
        f"{provider}/test-model", api_key="sk-test", api_base=sim.api_base(provider), **kwargs
    )


def attempts_seen(sim: ProviderSimulator, text: str | None = None) -> list[int]:
    return [r.match_attempt for r in sim.requests if text is None or text in r.text]


# -- what is retried ----------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_retryable_statuses_are_retried(
    provider_simulator: ProviderSimulator, provider: str, status: int
) -> None:
    provider_simulator.fault(kind="status", status=status, times=2)
    response = make_lm(provider_simulator, provider)("q")
    assert attempts_seen(provider_simulator) == [1, 2, 3]
    assert [(a.outcome, a.status_code) for a in response.attempts] == [
        ("error", status),
        ("error", status),
        ("ok", 200),
    ]


@pytest.mark.parametrize("kind", ["drop", "truncate", "malformed"])
def test_broken_responses_are_retried(provider_simulator: ProviderSimulator, kind: str) -> None:
    provider_simulator.fault(kind=kind, times=1)  # type: ignore[arg-type]
    response = make_lm(provider_simulator)("q")
    assert attempts_seen(provider_simulator) == [1, 2]
    assert response.attempts[0].outcome == "error"


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("drop", ProviderConnectionError),
        ("truncate", ProviderResponseError),
        ("malformed", ProviderResponseError),
    ],
)
def test_broken_responses_raise_typed_errors_after_the_last_attempt(
    provider_simulator: ProviderSimulator, kind: str, error_type: type[LMError]
) -> None:
    provider_simulator.fault(kind=kind, times=None)  # type: ignore[arg-type]
    with pytest.raises(error_type) as raised:
        make_lm(provider_simulator)("q")
    assert type(raised.value) is error_type
    assert attempts_seen(provider_simulator) == [1, 2, 3, 4]
    assert len(raised.value.attempts) == 4


@pytest.mark.slow
def test_a_hung_attempt_times_out_and_is_retried(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="hang", times=1)
    started = time.monotonic()
    response = make_lm(provider_simulator, timeout=0.5)("q")
    assert 0.45 < time.monotonic() - started < 10
    assert attempts_seen(provider_simulator) == [1, 2]
    assert response.attempts[0].error is not None
    assert "did not answer within 0.5 s" in response.attempts[0].error


@pytest.mark.slow
def test_a_call_that_keeps_hanging_raises_a_timeout_error(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(kind="hang", times=None)
    with pytest.raises(ProviderTimeoutError) as raised:
        make_lm(provider_simulator, timeout=0.2, retry=RetryPolicy(max_attempts=2))("q")
    assert len(raised.value.attempts) == 2


def test_the_last_error_carries_every_attempt(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=503, times=None)
    with pytest.raises(ProviderServerError) as raised:
        make_lm(provider_simulator)("q")
    error = raised.value
    assert (error.provider, error.status_code) == ("openai", 503)
    assert "overloaded" in str(error)  # the provider's own message
    assert "after 4 attempts" in str(error)
    assert [a.number for a in error.attempts] == [1, 2, 3, 4]
    assert attempts_seen(provider_simulator) == [1, 2, 3, 4]


def test_x_should_retry_overrides_the_status(provider_simulator: ProviderSimulator) -> None:
    sim = provider_simulator
    sim.fault("first", kind="status", status=503, headers={"x-should-retry": "false"})
    with pytest.raises(ProviderServerError):
        make_lm(sim)("first")
    assert attempts_seen(sim, "first") == [1]
    sim.fault("second", kind="status", status=400, headers={"x-should-retry": "true"})
    make_lm(sim)("second")
    assert attempts_seen(sim, "second") == [1, 2]


def test_with_retries_switched_off_exactly_one_attempt_is_made(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(kind="status", status=503, times=None)
    with settings.context(retry_enabled=False), pytest.raises(ProviderServerError) as raised:
        make_lm(provider_simulator)("q")
    assert len(raised.value.attempts) == 1
    assert attempts_seen(provider_simulator) == [1]


def test_retries_switched_off_globally(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=429, times=None)
    settings.retry_enabled = False
    try:
        with pytest.raises(RateLimitError):
            make_lm(provider_simulator)("q")
    finally:
        settings.retry_enabled = True
    assert attempts_seen(provider_simulator) == [1]


def test_bad_requests_are_never_retried(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=400, times=None)
    with pytest.raises(BadRequestError):
        make_lm(provider_simulator)("q")
    assert attempts_seen(provider_simulator) == [1]


# -- how long each wait is -------------------------------------------------------------


def gap(requests: list[RecordedRequest]) -> float:
    first, second = requests
    return second.arrived - first.arrived


@pytest.mark.slow
def test_retry_after_seconds_is_honoured(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=429, retry_after=1)
    response = make_lm(provider_simulator)("q")
    assert 0.95 <= gap(provider_simulator.requests) < 5
    assert 0.95 <= response.attempts[1].waited < 5


@pytest.mark.slow
def test_retry_after_ms_is_honoured(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=503, retry_after_ms=400)
    make_lm(provider_simulator)("q")
    assert 0.38 <= gap(provider_simulator.requests) < 4


def test_a_retry_after_longer_than_the_budget_fails_at_once(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(kind="status", status=429, retry_after=60, times=None)
    started = time.monotonic()
    with pytest.raises(RateLimitError) as raised:
        make_lm(provider_simulator, retry=RetryPolicy(max_elapsed=10))("q")
    assert time.monotonic() - started < 5
    assert raised.value.retry_after == 60
    assert attempts_seen(provider_simulator) == [1]


@pytest.mark.slow
def test_default_backoff_waits_grow_with_jitter(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=503, times=2)
    response = make_lm(provider_simulator, retry=RetryPolicy())("q")
    waits = [a.waited for a in response.attempts]
    assert waits[0] == 0
    assert 0.24 <= waits[1] < 3  # drawn from [0.25, 0.5]
    assert 0.49 <= waits[2] < 4  # drawn from [0.5, 1.0]


# -- what is reported ---------------------------------------------------------------


def test_each_retry_is_logged_at_warning_without_the_prompt(
    provider_simulator: ProviderSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="dspy_async")
    provider_simulator.fault(kind="status", status=503, times=1)
    provider_simulator.respond(output="the confidential answer")
    make_lm(provider_simulator)("my confidential prompt")
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    message = warning.getMessage()
    for part in ("openai/test-model", "attempt 1/4", "HTTP 503", "ProviderServerError", "0.01 s"):
        assert part in message
    for record in caplog.records:
        assert "confidential" not in record.getMessage()


def test_events_report_requests_retries_and_the_outcome(
    provider_simulator: ProviderSimulator,
) -> None:
    seen: list[events.LMEvent] = []

    def broken(event: events.LMEvent) -> None:
        raise RuntimeError("a buggy subscriber must not break calls")

    unsubscribe = events.subscribe(seen.append)
    unsubscribe_broken = events.subscribe(broken)
    try:
        provider_simulator.fault("good", kind="status", status=503, times=1)
        provider_simulator.fault("bad", kind="status", status=401, times=1)
        lm = make_lm(provider_simulator)
        lm("good")
        with pytest.raises(LMError):
            lm("bad")
    finally:
        unsubscribe()
        unsubscribe_broken()
    lm("after unsubscribing")
    kinds = [type(event).__name__ for event in seen]
    assert kinds == [
        "RequestEvent",
        "RetryEvent",
        "RequestEvent",
        "ResponseEvent",
        "RequestEvent",
        "FailureEvent",
    ]
    retry, response, failure = seen[1], seen[3], seen[5]
    assert isinstance(retry, events.RetryEvent)
    assert (retry.attempt, retry.status_code, retry.wait) == (1, 503, 0.01)
    assert isinstance(response, events.ResponseEvent)
    assert len(response.attempts) == 2 and response.usage.total_tokens > 0
    assert isinstance(failure, events.FailureEvent)
    assert failure.error.status_code == 401
    assert seen[0].call_id == response.call_id != failure.call_id


# -- waits overlap ------------------------------------------------------------------


@pytest.mark.slow
async def test_max_concurrency_caps_attempts_in_flight(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.latency = 0.2
    lm = make_lm(provider_simulator, max_concurrency=2)
    await asyncio.gather(*(lm.acall(f"q{i}") for i in range(6)))
    assert peak_in_flight(provider_simulator.requests) == 2


@pytest.mark.slow
async def test_a_call_waiting_out_a_backoff_holds_no_concurrency_slot(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    sim.fault("slow one", kind="status", status=429, retry_after=2)
    lm = make_lm(sim, max_concurrency=1)
    slow = asyncio.ensure_future(lm.acall("slow one"))
    await asyncio.to_thread(sim.wait_for_requests, 1, finished=True)
    await lm.acall("quick one")  # runs while "slow one" waits out its Retry-After
    await slow
    quick = next(r for r in sim.requests if "quick" in r.text)
    retried = [r for r in sim.requests if "slow" in r.text][1]
    assert quick.finished is not None and quick.finished < retried.arrived


@pytest.mark.slow
def test_backoffs_overlap_calls_from_ten_threads(provider_simulator: ProviderSimulator) -> None:
    """One of ten threads' calls fails twice with 503: the other nine finish at about one
    latency, and the whole run takes about the failing call's own critical path."""
    sim = provider_simulator
    sim.latency = 0.5
    sim.fault("document 3", kind="status", status=503, times=2)
    lm = make_lm(sim, retry=RetryPolicy())
    took: dict[int, float] = {}
    start = threading.Barrier(10)

    def work(i: int) -> None:
        start.wait()
        began = time.monotonic()
        lm(f"classify document {i}")
        took[i] = time.monotonic() - began

    began = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    failing = took.pop(3)
    # Three latencies plus two backoffs of at least 0.25 s and 0.5 s.
    assert failing >= 3 * 0.5 + 0.75 - 0.05
    assert max(took.values()) < 1.5  # about one latency, not behind the failing call
    assert wall < failing + 1.0
    assert attempts_seen(sim, "document 3") == [1, 2, 3]


@pytest.mark.slow
async def test_many_calls_wait_out_their_retry_after_together(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.latency = 0.1
    provider_simulator.fault(kind="status", status=429, retry_after=1, times=20)
    lm = make_lm(provider_simulator)
    began = time.monotonic()
    await asyncio.gather(*(lm.acall(f"question {i}") for i in range(20)))
    # Twenty one-second waits, all at once: about 1.2 s, nowhere near 20 s.
    assert time.monotonic() - began < 5
    assert len(provider_simulator.requests) == 40


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lm = LM("openai/m", api_base=f"http://127.0.0.1:{port}/v1", retry=FAST)
    with pytest.raises(ProviderConnectionError) as raised:
        lm("q")
    assert len(raised.value.attempts) == 4
    assert raised.value.__cause__ is not None  # the transport's own error, for debugging


@pytest.mark.slow
def test_a_forked_child_gets_its_own_client_and_slots(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = make_lm(provider_simulator, max_concurrency=2)
    assert lm("in the parent").text
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    child = context.Process(target=lambda: results.put(lm("in the child").text))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert results.get().startswith("Simulated answer")
    assert lm("in the parent again").text
    assert attempts_seen(provider_simulator) == [1, 1, 1]


@pytest.mark.slow
async def test_an_enclosing_batch_scope_limits_attempts_in_flight(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.latency = 0.2
    provider_simulator.fault("q0", kind="status", status=503, retry_after=1)
    lm = make_lm(provider_simulator)
    with _limits.scope(1):
        await asyncio.gather(*(lm.acall(f"q{i}") for i in range(3)))
    requests = provider_simulator.requests
    assert peak_in_flight(requests) == 1
    # q0 waited out its Retry-After without its slot: q1 and q2 went first.
    assert [r.text for r in requests][-1] == "q0"
