"""The virtual clock: waits recorded and skipped, in deadline order, overlapping, and in force
exactly where it was installed (this context, and the calls the runtime runs for it)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from dspy_async import LM, Predict, RetryPolicy, _clock, _runtime, context, events
from dspy_async.testing import ProviderSimulator, VirtualClock, virtual_clock

# Wall-time bounds: every test here would take at least 30 s if it really slept.
INSTANT = 5.0


def run_timed(coro: object) -> float:
    started = time.monotonic()
    asyncio.run(coro)  # type: ignore[arg-type]
    return time.monotonic() - started


def test_sleep_records_the_wait_and_skips_it() -> None:
    clock = VirtualClock()

    async def back_off() -> tuple[float, float]:
        before = clock.monotonic()
        await clock.sleep(30)
        middle = clock.monotonic()
        await clock.sleep(1.5)
        return middle - before, clock.monotonic() - middle

    started = time.monotonic()
    first, second = asyncio.run(back_off())
    assert time.monotonic() - started < INSTANT
    assert clock.waits == [30, 1.5]
    assert 30 <= first < 30 + INSTANT
    assert 1.5 <= second < 1.5 + INSTANT
    assert 31.5 <= clock.now < 31.5 + INSTANT


def test_waits_that_overlap_take_virtual_time_once() -> None:
    # A batch whose ten items back off together: 30 s of virtual time, not 300.
    clock = VirtualClock()
    measured: list[float] = []

    async def item() -> None:
        began = clock.monotonic()
        await clock.sleep(30)
        measured.append(clock.monotonic() - began)

    async def batch() -> None:
        await asyncio.gather(*(item() for _ in range(10)))

    assert run_timed(batch()) < INSTANT
    assert clock.waits == [30] * 10
    assert all(30 <= seconds < 30 + INSTANT for seconds in measured), measured
    assert 30 <= clock.now < 30 + INSTANT


def test_sleepers_wake_in_deadline_order() -> None:
    clock = VirtualClock()
    woke: list[str] = []

    async def sleeper(name: str, *waits: float) -> None:
        for number, seconds in enumerate(waits, 1):
            await clock.sleep(seconds)
            woke.append(f"{name}{number}")

    async def together() -> None:
        await asyncio.gather(sleeper("slow", 3), sleeper("fast", 1, 1), sleeper("mid", 2.5))

    assert run_timed(together()) < INSTANT
    # fast's second wait starts at 1 and ends at 2: before mid (2.5), though asked for later.
    assert woke == ["fast1", "fast2", "mid1", "slow1"]
    assert 3 <= clock.now < 3 + INSTANT


def test_waits_begun_within_the_threshold_share_one_jump() -> None:
    clock = VirtualClock(autojump_threshold=0.3)

    async def staggered() -> None:
        first = asyncio.ensure_future(clock.sleep(10))
        await asyncio.sleep(0.05)  # real time: the second begins while the first is pending
        await asyncio.gather(first, clock.sleep(10))

    assert run_timed(staggered()) < INSTANT
    # One jump to 10, then the second's 0.05 s later: not a first jump, then 10 s more.
    assert 10 <= clock.now < 10 + INSTANT


def test_a_cancelled_sleeper_neither_wakes_nor_holds_time_back() -> None:
    clock = VirtualClock()

    async def scene() -> bool:
        long = asyncio.ensure_future(clock.sleep(1000))
        await asyncio.sleep(0)
        long.cancel()
        await clock.sleep(1)
        with pytest.raises(asyncio.CancelledError):
            await long
        return long.cancelled()

    started = time.monotonic()
    assert asyncio.run(scene()) is True
    assert time.monotonic() - started < INSTANT
    assert 1 <= clock.now < 1 + INSTANT  # time went to 1, never to the cancelled 1000
    assert clock.waits == [1000, 1]


def test_zero_and_negative_waits_are_recorded_and_return_at_once() -> None:
    clock = VirtualClock()

    async def nothing() -> None:
        await clock.sleep(0)
        await clock.sleep(-2)

    assert run_timed(nothing()) < INSTANT
    assert clock.waits == [0, -2]
    assert clock.now < INSTANT


def test_sleepers_on_two_threads_share_one_clock() -> None:
    clock = VirtualClock()
    finished: list[float] = []

    def in_own_loop() -> None:
        async def wait() -> None:
            await clock.sleep(20)
            finished.append(clock.now)

        asyncio.run(wait())

    threads = [threading.Thread(target=in_own_loop) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - started < INSTANT
    assert clock.waits == [20, 20]
    assert len(finished) == 2
    assert all(now >= 20 for now in finished)


def test_the_context_manager_installs_the_clock_here_and_for_runtime_calls() -> None:
    async def clock_in_force() -> _clock.Clock:
        return _clock.current()

    assert _clock.current() is _clock.REAL
    with virtual_clock() as clock:
        assert _clock.current() is clock
        assert _runtime.run(clock_in_force()) is clock
        assert _runtime.submit(clock_in_force()).result(timeout=10) is clock
        with virtual_clock() as inner:
            assert _runtime.run(clock_in_force()) is inner
        assert _clock.current() is clock
        # A thread started here begins with an empty context: real time, unless it is given
        # this one explicitly.
        seen: list[object] = []
        plain = threading.Thread(target=lambda: seen.append(_clock.current()))
        carried = threading.Thread(
            target=contextvars.copy_context().run, args=(lambda: seen.append(_clock.current()),)
        )
        for thread in (plain, carried):
            thread.start()
            thread.join(10)
        assert seen == [_clock.REAL, clock]
    assert _clock.current() is _clock.REAL
    assert _runtime.run(clock_in_force()) is _clock.REAL


def test_the_fixture_installs_a_fresh_clock(virtual_clock: VirtualClock) -> None:
    assert _clock.current() is virtual_clock
    assert virtual_clock.waits == []


async def test_the_fixture_reaches_async_tests(virtual_clock: VirtualClock) -> None:
    assert _clock.current() is virtual_clock
    await virtual_clock.sleep(60)
    assert virtual_clock.now >= 60


def test_a_retry_after_30_through_the_simulator_takes_no_wall_time(
    provider_simulator: ProviderSimulator, virtual_clock: VirtualClock
) -> None:
    provider_simulator.fault(kind="status", status=429, retry_after=30)
    # Its own key: the rate-limit state learned from this 429 stays with this account.
    lm = LM("openai/gpt-4o-mini", api_base=provider_simulator.api_base("openai"), api_key="k-429")
    retries: list[float] = []
    unsubscribe = events.subscribe(
        lambda event: retries.append(event.wait) if isinstance(event, events.RetryEvent) else None
    )
    try:
        started = time.monotonic()
        response = lm("hello")
        elapsed = time.monotonic() - started
    finally:
        unsubscribe()
    assert elapsed < INSTANT
    assert virtual_clock.waits == [30.0]
    assert retries == [30.0]
    assert [attempt.outcome for attempt in response.attempts] == ["error", "ok"]
    assert response.attempts[1].waited >= 30  # the record shows the wait as taken
    assert len(provider_simulator.requests) == 2


@pytest.mark.slow
def test_a_batch_backing_off_together_waits_once_in_virtual_time(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(kind="status", status=503, times=8)
    lm = LM(
        "openai/gpt-4o-mini",
        api_base=provider_simulator.api_base("openai"),
        api_key="k-batch",
        retry=RetryPolicy(initial_delay=20, max_delay=20, jitter=False),
    )
    started = time.monotonic()
    # A threshold well above how far apart the eight 503s can arrive on a loaded machine.
    with virtual_clock(autojump_threshold=0.5) as clock, context(lm=lm):
        results = Predict("question -> answer").batch([{"question": f"q{i}"} for i in range(8)])
    assert time.monotonic() - started < INSTANT
    assert len(results) == 8
    assert clock.waits == [20.0] * 8
    assert 20 <= clock.now < 20 + INSTANT  # eight overlapping waits: 20 s, not 160
