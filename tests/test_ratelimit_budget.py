"""The rate-limit budget through real LM calls to the provider simulator's rate-limited mode:
configured and learned limits, one budget per account, the coordinated pause, deadlines,
what is recorded and emitted, and the adaptive in-flight limit."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async import events
from dspy_async.errors import ConfigurationError, RateLimitError
from dspy_async.pipeline.limiter import BACKOFF, Window
from dspy_async.testing import ProviderSimulator, RecordedRequest

FAST = dspy.RetryPolicy(initial_delay=0.05, max_delay=0.1, jitter=False)
_keys = itertools.count()


def unique_key() -> str:
    """A key of its own per test: budgets are per account and live as long as the process."""
    return f"sk-ratelimit-{next(_keys)}-{time.monotonic_ns()}"


def make_lm(sim: ProviderSimulator, provider: str = "openai", **kwargs: Any) -> dspy.LM:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("api_key", unique_key())
    return dspy.LM(f"{provider}/rl-model", api_base=sim.api_base(provider), **kwargs)


async def gather(lm: dspy.LM, count: int, **params: Any) -> list[Any]:
    calls = (lm.acall(f"question {i} about rate limits", **params) for i in range(count))
    return await asyncio.gather(*calls, return_exceptions=True)


# What OpenAI's rate limiter sends with a 429 (with Retry-After): the account is out.
OPENAI_429_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "2s",
}


def limited(records: list[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in records if r.status == 429]


# -- configured and learned limits -------------------------------------------------


@pytest.mark.slow
async def test_configured_limits_pace_calls_to_the_limit_without_429s(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.rate_limit(requests=10, tokens=10_000, per=1.0)
    lm = make_lm(provider_simulator, rate_limit=dspy.RateLimit(rpm=10, tpm=10_000, period=1.0))
    started = time.monotonic()
    results = await gather(lm, 25)
    elapsed = time.monotonic() - started
    assert not [r for r in results if isinstance(r, Exception)]
    assert limited(provider_simulator.requests) == []
    # 10 at once (a full bucket), then 15 at 10 a second.
    assert 1.3 < elapsed < 4.0
    waited = [w.seconds for r in results for a in r.attempts for w in a.gates if w.gate == "budget"]
    assert max(waited) > 1.0


@pytest.mark.slow
async def test_limits_learned_from_headers_keep_429s_away(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.rate_limit(requests=8, per=1.0)
    lm = make_lm(provider_simulator, max_concurrency=4)
    results = await gather(lm, 30)
    assert not [r for r in results if isinstance(r, Exception)]
    records = provider_simulator.requests
    first_answer = min(r.finished for r in records if r.finished is not None)
    after = [r for r in records if r.arrived > first_answer]
    assert len(after) > 20
    assert len(limited(after)) <= 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_learned_limit_fails_a_call_that_cannot_fit_before_its_deadline_without_sending(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.rate_limit(requests=3, per=60.0)
    lm = make_lm(provider_simulator, provider, retry=dspy.RetryPolicy(max_elapsed=2.0))
    for i in range(3):
        lm(f"call {i}")
    started = time.monotonic()
    with pytest.raises(RateLimitError, match="no rate-limit budget \\(requests\\)") as raised:
        lm("one too many")
    assert time.monotonic() - started < 1.0  # it knows at once that 20 s will not fit in 2
    assert "not sent" in str(raised.value)
    # 20 s until the server has room; the learned rate leans low (remaining is rounded down).
    assert raised.value.retry_after is not None and 19 < raised.value.retry_after < 40
    assert raised.value.status_code is None
    assert len(provider_simulator.requests) == 3
    assert limited(provider_simulator.requests) == []


def test_token_limits_count_prompt_and_max_tokens(provider_simulator: ProviderSimulator) -> None:
    lm = make_lm(
        provider_simulator,
        rate_limit=dspy.RateLimit(tpm=1000, period=60.0),
        retry=dspy.RetryPolicy(max_elapsed=0.5),
    )
    # ~402 tokens estimated each, ~6 used: without what comes back the third would wait.
    for _ in range(3):
        lm("short", max_tokens=400)
    with pytest.raises(RateLimitError, match="tokens"):
        lm("short", max_tokens=999)  # needs the whole 1,000: more than 0.5 s away
    assert len(provider_simulator.requests) == 3


# -- one budget per account ---------------------------------------------------------


def test_lm_objects_with_the_same_key_share_one_budget_and_other_keys_do_not(
    provider_simulator: ProviderSimulator,
) -> None:
    key, limit = unique_key(), dspy.RateLimit(rpm=2, period=60.0)
    quick = dspy.RetryPolicy(max_elapsed=1.0)
    first = make_lm(provider_simulator, api_key=key, rate_limit=limit, retry=quick)
    second = make_lm(provider_simulator, api_key=key, rate_limit=limit, retry=quick)
    first("a")
    second("b")
    with pytest.raises(RateLimitError):
        first("c")
    with pytest.raises(RateLimitError):
        second("d")
    make_lm(provider_simulator, rate_limit=limit, retry=quick)("another key")
    other_model = dspy.LM(
        "openai/other-model",
        api_key=key,
        api_base=provider_simulator.openai_base_url,
        rate_limit=limit,
        retry=quick,
    )
    other_model("another model")
    assert len(provider_simulator.requests) == 4


def test_rate_limit_false_turns_the_budget_off(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.rate_limit(requests=1, per=60.0)
    lm = make_lm(provider_simulator, rate_limit=False, retry=dspy.RetryPolicy(max_attempts=1))
    lm("one")
    with pytest.raises(RateLimitError) as raised:
        lm("two")
    assert raised.value.status_code == 429  # the server's, not the budget's
    assert raised.value.attempts[0].gates == ()  # no budget wait (and no slot queue)


# -- the coordinated pause ----------------------------------------------------------


@pytest.mark.slow
async def test_a_429_with_retry_after_closes_the_gate_for_every_waiting_call(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.latency = 0.05
    provider_simulator.fault(
        kind="status", status=429, retry_after=2, times=1, headers=OPENAI_429_HEADERS
    )
    lm = make_lm(provider_simulator, max_concurrency=5)
    results = await gather(lm, 50)
    assert not [r for r in results if isinstance(r, Exception)]
    records = provider_simulator.requests
    refused = limited(records)
    assert len(refused) == 1
    assert refused[0].finished is not None
    # Requests already past the gate when the 429 left the server (the client has not read it
    # yet: on a loaded machine that can take a few thread switches) may still arrive at its
    # start; none may arrive once the client has heard of the pause.
    heard = 0.3
    pause_from, pause_to = refused[0].finished + heard, refused[0].finished + 2.0
    sent_during = [r for r in records if pause_from < r.arrived < pause_to - 0.05]
    assert sent_during == []
    assert len(records) == 51
    throttled = [w for r in results for a in r.attempts for w in a.gates if w.gate == "budget"]
    assert max(w.seconds for w in throttled) > 1.5


@pytest.mark.slow
async def test_a_bare_429_from_a_server_without_rate_limit_headers_pauses_only_its_call(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault("slow one", kind="status", status=429, retry_after=1.5)
    lm = make_lm(provider_simulator, max_concurrency=2)
    slow = asyncio.ensure_future(lm.acall("slow one"))
    await asyncio.to_thread(provider_simulator.wait_for_requests, 1, finished=True)
    started = time.monotonic()
    await gather(lm, 4)  # one request's answer, not the account's: the others go on
    assert time.monotonic() - started < 1.0
    response = await slow
    assert response.attempts[1].waited > 1.4


# -- what is recorded and emitted ---------------------------------------------------


def test_waits_show_in_attempts_and_throttle_events_without_the_key(
    provider_simulator: ProviderSimulator,
) -> None:
    key = unique_key()
    lm = make_lm(provider_simulator, api_key=key, rate_limit=dspy.RateLimit(rpm=1, period=0.3))
    seen: list[events.LMEvent] = []
    unsubscribe = events.subscribe(seen.append)
    try:
        lm("first")
        response = lm("second")
    finally:
        unsubscribe()
    budget = [w for w in response.attempts[0].gates if w.gate == "budget"]
    assert len(budget) == 1 and 0.15 < budget[0].seconds < 1.5
    throttles = [e for e in seen if isinstance(e, events.ThrottleEvent)]
    assert len(throttles) == 1
    throttle = throttles[0]
    assert throttle.reason == "requests"
    assert throttle.seconds == pytest.approx(budget[0].seconds)
    assert "openai/rl-model" in throttle.budget and "key " in throttle.budget
    assert key not in repr(throttle) and key[-8:] not in repr(throttle)
    kinds = [type(e).__name__ for e in seen if getattr(e, "call_id", None) == throttle.call_id]
    assert kinds == ["ThrottleEvent", "RequestEvent", "ResponseEvent"]


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rpm": 0}, "RateLimit.rpm must be a positive whole number"),
        ({"tpm": 1.5}, "RateLimit.tpm must be a positive whole number"),
        ({"rpm": 10, "rate_limit": dspy.RateLimit(rpm=5)}, "not both"),
        ({"rate_limit": "fast"}, "rate_limit must be a dspy_async.RateLimit"),
        ({"rate_limit": False, "tpm": 10}, "turns the budget off"),
        ({"adaptive_concurrency": "yes"}, "adaptive_concurrency must be True or False"),
    ],
)
def test_bad_configuration_is_refused_before_any_call(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        dspy.LM("openai/gpt-4o-mini", api_key="sk-x", **kwargs)


@pytest.mark.parametrize("shared", ["http://127.0.0.1:6379", "127.0.0.1:6379", 6379])
def test_shared_must_be_a_redis_url(shared: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be a Redis URL"):
        dspy.RateLimit(shared=shared)


def test_a_redis_password_is_never_shown() -> None:
    limit = dspy.RateLimit(rpm=5, shared="redis://user:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(limit)
    with pytest.raises(ConfigurationError) as raised:
        dspy.RateLimit(shared="http://user:hunter2@example.com")
    assert "hunter2" not in str(raised.value)


def test_importing_the_package_does_not_import_redis() -> None:
    code = (
        "import sys, dspy_async as dspy\n"
        "dspy.LM('openai/m', api_key='k', rate_limit=dspy.RateLimit(shared='redis://h/0'))\n"
        "assert 'redis' not in sys.modules, sorted(m for m in sys.modules if 'redis' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- adaptive concurrency -----------------------------------------------------------


async def test_the_window_grows_and_backs_off_once_per_round_trip() -> None:
    window = Window(ceiling=10, initial=2)
    epochs = [await window.enter(), await window.enter()]
    assert window.in_flight == 2
    third = asyncio.ensure_future(window.enter())
    await asyncio.sleep(0)
    assert not third.done()  # the limit is 2
    window.leave(epochs[0], overloaded=False, busy=True)  # slow start: +1
    assert window.limit == 3.0
    epochs.append(await third)
    # Two overloads from attempts sent before the cut: one cut.
    window.leave(epochs[1], overloaded=True, busy=True)
    window.leave(epochs[2], overloaded=True, busy=True)
    assert window.limit == pytest.approx(3.0 * BACKOFF)
    assert not window.slow_start
    grown = window.limit
    epoch = await window.enter()
    window.leave(epoch, overloaded=False, busy=True)
    assert window.limit == pytest.approx(grown + 1 / grown)  # additive now
    for _ in range(200):
        window.leave(await window.enter(), overloaded=False, busy=True)
    assert window.limit == 10  # never past the ceiling


async def test_a_cancelled_waiter_gives_its_room_back() -> None:
    window = Window(ceiling=1, initial=1)
    epoch = await window.enter()
    waiter = asyncio.ensure_future(window.enter())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    window.leave(epoch, overloaded=False, busy=False)
    assert window.in_flight == 0
    assert await asyncio.wait_for(window.enter(), 1) == 0


async def run_against_overload(sim: ProviderSimulator, lm: dspy.LM, count: int) -> float:
    started = time.monotonic()
    results = await gather(lm, count)
    assert not [r for r in results if isinstance(r, Exception)]
    return time.monotonic() - started


@pytest.mark.slow
async def test_adaptive_concurrency_finds_what_an_overloaded_server_takes(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.latency = 0.1
    provider_simulator.overload(8)
    retry = dspy.RetryPolicy(max_attempts=10, initial_delay=0.1, max_delay=0.4)
    fixed = make_lm(provider_simulator, max_concurrency=8, retry=retry)
    fixed_time = await run_against_overload(provider_simulator, fixed, 160)
    assert [r.status for r in provider_simulator.requests].count(503) == 0
    provider_simulator.reset()
    provider_simulator.latency = 0.1
    provider_simulator.overload(8)
    adaptive = make_lm(
        provider_simulator, max_concurrency=64, adaptive_concurrency=True, retry=retry
    )
    adaptive_time = await run_against_overload(provider_simulator, adaptive, 160)
    errors = [r.status for r in provider_simulator.requests].count(503)
    print(f"fixed 8: {fixed_time:.2f} s; adaptive: {adaptive_time:.2f} s, {errors} 503s")
    assert adaptive_time < fixed_time * 1.2 + 0.3
    assert errors < 40
    # Without it, the same LM meets the server's limit head on.
    provider_simulator.reset()
    provider_simulator.overload(8)
    unlimited = make_lm(provider_simulator, max_concurrency=64, retry=retry)
    await run_against_overload(provider_simulator, unlimited, 160)
    assert [r.status for r in provider_simulator.requests].count(503) > errors


def test_budget_waits_run_on_the_installed_clock(
    provider_simulator: ProviderSimulator, virtual_clock: Any
) -> None:
    # A minute's budget of 2 requests: the third and fourth calls wait 30 s each, virtually.
    lm = make_lm(provider_simulator, rate_limit=dspy.RateLimit(rpm=2))
    started = time.monotonic()
    responses = [lm(f"call {i}") for i in range(4)]
    assert time.monotonic() - started < 5.0
    waited = [
        w.seconds for r in responses for a in r.attempts for w in a.gates if w.gate == "budget"
    ]
    assert len(waited) == 2
    assert sum(virtual_clock.waits) == pytest.approx(sum(waited), rel=0.05)
    assert min(waited) > 25
