"""A virtual clock for tests: every wait of a call is recorded, and skipped instead of slept.

    from dspy_async.testing import virtual_clock

    with virtual_clock() as clock:
        lm("hello")                  # a 429 with Retry-After: 30 first, then an answer
    assert clock.waits == [30.0]     # what it would have waited, in no wall time

Like trio's autojump clock, time jumps straight to the next sleeper's deadline: sleepers wake
in deadline order, waits that overlap (a batch whose items all back off at once) overlap in
virtual time too, and `monotonic()` moves on by the time skipped, so the calls' time
accounting (`max_elapsed`, `Attempt.waited`) sees the waits as if they were slept.

Real I/O still takes real time. A jump comes `autojump_threshold` real seconds (10 ms) after
the first wait of a round began, so the waits of requests answered together join one jump;
a request still in flight at the jump sees time leap during it, as under trio's clock. With a
slow fake server, a batch can so run ahead in virtual time (`now`, and the calls' elapsed
time against `max_elapsed`): raise the threshold above the server's latency. `waits` is
exact either way.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .. import _clock, _forksafe

__all__ = ["VirtualClock", "virtual_clock"]


class VirtualClock:
    """Real monotonic time plus the waits skipped so far; `sleep` records and skips.

    `autojump_threshold`: real seconds from the first wait of a round to the jump (see the
    module docstring). Safe to share between threads and event loops: the runtime's loop
    sleeps on it while the test reads `waits` and `now` from its own thread.
    """

    def __init__(self, *, autojump_threshold: float = 0.01) -> None:
        self.autojump_threshold = autojump_threshold
        self._lock = _forksafe.lock()
        self._created = time.monotonic()
        self._skipped = 0.0
        self._waits: list[float] = []
        # (deadline, arrival, future): the arrival number keeps equal deadlines first-come.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._jump_scheduled = False

    def __repr__(self) -> str:
        return f"VirtualClock(now={self.now:.3f}, waits={self.waits})"

    @property
    def waits(self) -> list[float]:
        """Every wait asked of this clock, in seconds, in the order they were asked."""
        with self._lock:
            return list(self._waits)

    @property
    def now(self) -> float:
        """Seconds since this clock was made: the real ones plus every one skipped."""
        return self.monotonic() - self._created

    def monotonic(self) -> float:
        """`time.monotonic()` moved on by the time skipped."""
        return time.monotonic() + self._skipped

    async def sleep(self, seconds: float) -> None:
        """Record the wait, then return once virtual time reaches its end (no real wait)."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waits.append(seconds)
            deadline = self.monotonic() + max(0.0, seconds)
            heapq.heappush(self._sleepers, (deadline, next(self._arrivals), woken))
        self._schedule_jump()
        try:
            await woken
        finally:
            # Once woken sleepers have run (or a cancelled one gave up), the next may go:
            # jumping earlier would let a woken call's next, shorter wait be overtaken.
            self._schedule_jump()

    def _schedule_jump(self) -> None:
        with self._lock:
            self._drop_cancelled()
            if self._jump_scheduled or not self._sleepers:
                return
            self._jump_scheduled = True
            # On a sleeper's loop, which runs while it sleeps (this task's may be ending).
            loop = self._sleepers[0][2].get_loop()
        loop.call_soon_threadsafe(loop.call_later, self.autojump_threshold, self._jump)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _jump(self) -> None:
        """Move time to the earliest deadline and wake every sleeper due by then."""
        with self._lock:
            self._jump_scheduled = False
            self._drop_cancelled()  # cancelled while asleep
            if not self._sleepers:
                return
            self._skipped = max(self._skipped, self._sleepers[0][0] - time.monotonic())
            now = self.monotonic()
            due = []
            while self._sleepers and self._sleepers[0][0] <= now:
                due.append(heapq.heappop(self._sleepers)[2])
        for woken in due:  # each on its own loop: a sleeper may come from another thread's
            woken.get_loop().call_soon_threadsafe(_wake, woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


@contextmanager
def virtual_clock(*, autojump_threshold: float = 0.01) -> Iterator[VirtualClock]:
    """Install a fresh `VirtualClock(autojump_threshold=...)` for the calls made in this
    context, and yield it.

    It reaches what runs in this thread or task and what it starts: the runtime copies the
    caller's context into every call, batches included. A thread you start yourself begins
    with an empty context and keeps real time; run its work with
    `contextvars.copy_context().run(...)` to take the clock along. The clock is deliberately
    not process-wide, so that background threads and other tests keep real time.
    """
    clock = VirtualClock(autojump_threshold=autojump_threshold)
    token = _clock.installed.set(clock)
    try:
        yield clock
    finally:
        _clock.installed.reset(token)
