"""The retry schedule, on a fake clock: which failures are retried, and how long each wait is.

`call_with_retries` takes its clock (monotonic time and sleep) as an argument, so these tests
run in no wall time.
"""

from __future__ import annotations

import email.utils
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from dspy_async.errors import (
    BadRequestError,
    ConfigurationError,
    ContextWindowExceededError,
    LMError,
    ProviderServerError,
    RateLimitError,
    UnsupportedParameterError,
)
from dspy_async.records import Attempt, Usage, Wait
from dspy_async.retry import (
    AttemptFailed,
    AttemptState,
    RetryPolicy,
    call_with_retries,
    server_wait,
    should_retry,
)

NO_JITTER = RetryPolicy(jitter=False)


@dataclass(frozen=True)
class Result:
    usage: Usage


class FakeTime:
    """A clock that only moves when slept on, or when an attempt says it took time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def server_error(status: int = 503) -> AttemptFailed:
    return AttemptFailed(
        ProviderServerError(f"HTTP {status}", provider="t", status_code=status), retryable=True
    )


def rate_limited(wait: float) -> AttemptFailed:
    error = RateLimitError("HTTP 429", retry_after=wait, provider="t", status_code=429)
    return AttemptFailed(error, retryable=True, server_wait=wait)


class Script:
    """An attempt function failing as scripted, then succeeding; each attempt takes `took`."""

    def __init__(self, time: FakeTime, failures: Sequence[AttemptFailed], took: float = 0.0):
        self.time = time
        self.failures = list(failures)
        self.took = took
        self.budgets: list[float] = []

    async def __call__(self, call: None, attempt: AttemptState) -> Result:
        self.budgets.append(attempt.time_left())
        self.time.now += self.took
        if self.failures:
            raise self.failures.pop(0)
        return Result(Usage(3, 4))


async def run(
    time: FakeTime, script: Script, policy: RetryPolicy = NO_JITTER, **kwargs: object
) -> tuple[Result, tuple[Attempt, ...]]:
    return await call_with_retries(
        script,
        None,
        policy,
        clock=time,
        **kwargs,  # type: ignore[arg-type]
    )


def test_backoff_doubles_from_initial_delay_up_to_max_delay() -> None:
    waits = NO_JITTER.backoff_waits()
    assert [next(waits) for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_jitter_draws_each_wait_from_its_upper_half() -> None:
    samples = [list(zip(range(5), RetryPolicy().backoff_waits(), strict=False)) for _ in range(300)]
    for step, nominal in enumerate([0.5, 1, 2, 4, 8]):
        drawn = [sample[step][1] for sample in samples]
        assert all(nominal / 2 <= wait <= nominal for wait in drawn)
        assert statistics.pstdev(drawn) > nominal / 20  # really spread out


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(initial_delay=10, max_delay=1)
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_elapsed=0)


async def test_retries_with_backoff_until_success_and_records_every_attempt() -> None:
    time = FakeTime()
    result, attempts = await run(time, Script(time, [server_error()] * 3, took=0.25))
    assert result.usage == Usage(3, 4)
    assert time.sleeps == [0.5, 1, 2]
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [
        (1, "error", 503),
        (2, "error", 503),
        (3, "error", 503),
        (4, "ok", 200),
    ]
    assert [a.waited for a in attempts] == [0, 0.5, 1, 2]
    assert [a.elapsed for a in attempts] == [0.25] * 4
    assert attempts[-1].usage == Usage(3, 4)


async def test_after_the_last_attempt_the_last_error_is_raised_with_the_whole_history() -> None:
    time = FakeTime()
    failures = [server_error(503), server_error(502), server_error(500), server_error(504)]
    with pytest.raises(ProviderServerError) as raised:
        await run(time, Script(time, failures))
    assert raised.value is failures[-1].error
    assert [a.status_code for a in raised.value.attempts] == [503, 502, 500, 504]
    assert "after 4 attempts" in str(raised.value)
    assert time.sleeps == [0.5, 1, 2]


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("HTTP 400", status_code=400),
        ContextWindowExceededError("too long", status_code=400),
        UnsupportedParameterError("no response_format", status_code=400),
    ],
)
async def test_non_retryable_failures_fail_at_once(error: LMError) -> None:
    time = FakeTime()
    # Context-window and unsupported-parameter errors are never retried, whatever the caller says.
    retryable = type(error) is not BadRequestError
    with pytest.raises(type(error)) as raised:
        await run(time, Script(time, [AttemptFailed(error, retryable=retryable)]))
    assert len(raised.value.attempts) == 1
    assert time.sleeps == []


async def test_retries_switched_off_make_exactly_one_attempt() -> None:
    time = FakeTime()
    with pytest.raises(ProviderServerError) as raised:
        await run(time, Script(time, [server_error()]), enabled=False)
    assert len(raised.value.attempts) == 1
    assert time.sleeps == []


async def test_server_wait_replaces_backoff_unless_told_not_to() -> None:
    time = FakeTime()
    await run(time, Script(time, [rate_limited(3.0), rate_limited(0.0)]))
    assert time.sleeps == [3.0, 0.0]
    time = FakeTime()
    ignoring = RetryPolicy(jitter=False, respect_retry_after=False)
    await run(time, Script(time, [rate_limited(3.0), rate_limited(0.0)]), ignoring)
    assert time.sleeps == [0.5, 1]


async def test_server_wait_past_max_elapsed_fails_at_once_with_rate_limit_error() -> None:
    time = FakeTime()
    policy = RetryPolicy(jitter=False, max_elapsed=30)
    with pytest.raises(RateLimitError) as raised:
        await run(time, Script(time, [rate_limited(10.0), rate_limited(25.0)]), policy)
    assert time.sleeps == [10.0]
    assert raised.value.retry_after == 25.0
    assert len(raised.value.attempts) == 2


async def test_max_elapsed_bounds_attempts_and_waits_together() -> None:
    time = FakeTime()
    policy = RetryPolicy(jitter=False, max_attempts=10, max_elapsed=10)
    script = Script(time, [server_error()] * 10, took=2.0)
    with pytest.raises(ProviderServerError) as raised:
        await run(time, script, policy)
    # Each attempt may take only what is left; a wait that would end past the budget (here
    # the 4 s one, after 11.5 s) is not taken.
    assert script.budgets == [10, 7.5, 4.5, 0.5]
    assert time.sleeps == [0.5, 1, 2]
    assert len(raised.value.attempts) == 4


async def test_on_retry_is_told_the_failure_attempt_and_wait() -> None:
    time = FakeTime()
    seen: list[tuple[int | None, int, float]] = []
    failures = [server_error(503), rate_limited(1.5)]
    await run(
        time,
        Script(time, failures),
        on_retry=lambda call, failure, number, wait: seen.append(
            (failure.error.status_code, number, wait)
        ),
    )
    assert seen == [(503, 1, 0.5), (429, 2, 1.5)]


async def test_uncounted_gate_waits_move_the_deadline_and_are_recorded() -> None:
    time = FakeTime()
    failures = [server_error()] * 2

    async def attempt(call: None, state: AttemptState) -> Result:
        time.now += 100  # queued for a slot: not counted against max_elapsed
        state.record_wait("slot", 100, counted=False)
        time.now += 1
        if failures:
            raise failures.pop(0)
        return Result(Usage(1, 1))

    policy = RetryPolicy(jitter=False, max_elapsed=5)
    _, attempts = await call_with_retries(attempt, None, policy, clock=time)
    assert len(attempts) == 3
    assert [a.elapsed for a in attempts] == [1, 1, 1]
    assert all(a.gates == (Wait("slot", 100),) for a in attempts)


async def test_counted_gate_waits_eat_into_the_deadline() -> None:
    time = FakeTime()

    async def attempt(call: None, state: AttemptState) -> Result:
        time.now += 4  # waited for something that counts, such as rate-limit budget
        state.record_wait("budget", 4, counted=True)
        raise server_error()

    policy = RetryPolicy(jitter=False, max_elapsed=4.2)
    with pytest.raises(ProviderServerError) as raised:
        await call_with_retries(attempt, None, policy, clock=time)
    assert len(raised.value.attempts) == 1  # the 0.5 s backoff would end past the deadline
    assert raised.value.attempts[0].elapsed == 0


def test_server_wait_reads_retry_after_ms_seconds_and_http_dates() -> None:
    assert server_wait({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert server_wait({"retry-after": "2"}) == 2.0
    assert server_wait({"retry-after": "0.25"}) == 0.25
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert server_wait({"retry-after": date}, now=1_000_000) == 30.0
    assert server_wait({"retry-after": date}, now=2_000_000) == 0.0
    assert server_wait({"retry-after": "soon"}) is None
    assert server_wait({"retry-after-ms": "x"}) is None
    assert server_wait({}) is None


def test_x_should_retry_overrides_the_default() -> None:
    assert should_retry({}, default=True) is True
    assert should_retry({"x-should-retry": "false"}, default=True) is False
    assert should_retry({"x-should-retry": "true"}, default=False) is True
    assert should_retry({"x-should-retry": "maybe"}, default=False) is False
