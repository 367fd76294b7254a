"""The clock that LM calls read and sleep on: real time, unless a test installs another.

Every wait of a call (retry backoff, Retry-After, rate-limit budget) goes through `current()`,
so `dspy_async.testing.virtual_clock()` can record waits instead of sleeping them, the way
trio's autojump clock does. The clock is a context variable: the runtime copies the caller's
context into the work it runs, so a clock installed by a test reaches that test's calls only.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Protocol

__all__ = ["Clock", "RealClock", "current", "installed"]


class Clock(Protocol):
    """A monotonic time source and a way to wait on the running loop."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """`time.monotonic` and `asyncio.sleep`: what every call uses outside tests. They are the
    functions themselves, not methods calling them: a clock is read several times a call."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)


REAL = RealClock()
installed: contextvars.ContextVar[Clock] = contextvars.ContextVar("dspy_async_clock", default=REAL)


def current() -> Clock:
    """The clock in force for the running call."""
    return installed.get()
