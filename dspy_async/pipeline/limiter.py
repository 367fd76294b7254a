"""The Limiter stage: an in-flight limit that adapts to what the server can take (AIMD).

For servers that send no rate-limit headers (vLLM, Ollama, llama.cpp) the only signal of
too much is the server saying so: 429, 503, 529, or not answering in time. The limit grows
as answers come back (doubling each round trip until the first overload, like TCP's slow
start; then by one each round trip) and shrinks to `BACKOFF` of itself on overload, at most
once per round trip: the overloads of attempts sent before the last cut say nothing new. It
never exceeds `max_concurrency`. An attempt waiting here holds no slot, and the wait, like a
slot's, does not count against the call's deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ..errors import ProviderTimeoutError
from ..providers.base import Reply
from ..retry import AttemptFailed, AttemptState
from . import Call, Handler

__all__ = ["BACKOFF", "INITIAL_LIMIT", "Limiter", "Window"]

INITIAL_LIMIT = 4
BACKOFF = 0.7
# The bound when the LM sets no max_concurrency.
DEFAULT_CEILING = 1024
OVERLOAD_STATUSES = frozenset({429, 503, 529})


class Window:
    """The adaptive limit and the attempts in flight under it, on one loop."""

    def __init__(self, ceiling: int, initial: int = INITIAL_LIMIT) -> None:
        self.ceiling = ceiling
        self.limit = float(min(initial, ceiling))
        self.in_flight = 0
        self.slow_start = True
        self.epoch = 0  # counts the cuts; an attempt remembers the epoch it entered in
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def enter(self) -> int:
        """Wait for room under the limit; returns the epoch to hand to `leave`."""
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
            return self.epoch
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(admitted)
        try:
            await admitted
        except asyncio.CancelledError:
            # Admitted (and counted) just before the cancellation landed: give the room back.
            if admitted.done() and not admitted.cancelled():
                self.leave(self.epoch, overloaded=False, busy=False)
            elif admitted in self._waiters:
                self._waiters.remove(admitted)
            raise
        return self.epoch

    def leave(self, epoch: int, *, overloaded: bool, busy: bool) -> None:
        """An attempt is over: shrink on overload, grow if it ran with the limit in use."""
        self.in_flight -= 1
        if overloaded and epoch == self.epoch:
            self.limit = max(1.0, self.limit * BACKOFF)
            self.slow_start = False
            self.epoch += 1
        elif not overloaded and busy:
            self.limit = min(
                float(self.ceiling), self.limit + (1 if self.slow_start else 1 / self.limit)
            )
        # Hand the room to the attempts that queued first.
        while self._waiters and self.in_flight < int(self.limit):
            admitted = self._waiters.popleft()
            if not admitted.done():
                self.in_flight += 1
                admitted.set_result(None)


def overloaded(failed: AttemptFailed) -> bool:
    """Whether a failure says the server has too much to do."""
    error = failed.error
    return error.status_code in OVERLOAD_STATUSES or isinstance(error, ProviderTimeoutError)


class Limiter:
    """Keep attempts in flight under an adaptive limit, at most `max_concurrency`."""

    def __init__(self, max_concurrency: int | None) -> None:
        self.max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._window: Window | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"max_concurrency": self.max_concurrency}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_concurrency"])  # type: ignore[misc]

    @property
    def window(self) -> Window:
        """This loop's window (made on first use; a new loop after a fork gets its own)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._window is None:
            self._loop = loop
            self._window = Window(self.max_concurrency or DEFAULT_CEILING)
        return self._window

    async def __call__(self, call: Call, attempt: AttemptState, send: Handler) -> Reply:
        window = self.window
        queued_from = attempt.clock.monotonic()
        epoch = await window.enter()
        attempt.record_wait("limiter", attempt.clock.monotonic() - queued_from, counted=False)
        busy = window.in_flight >= int(window.limit)
        try:
            reply = await send(call, attempt)
        except AttemptFailed as failed:
            window.leave(epoch, overloaded=overloaded(failed), busy=busy)
            raise
        except BaseException:
            window.leave(epoch, overloaded=False, busy=False)
            raise
        window.leave(epoch, overloaded=False, busy=busy)
        return reply
