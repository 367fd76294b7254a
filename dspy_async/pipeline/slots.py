"""The Slots stage: an attempt waits for a slot of every limit on requests in flight.

Three limits, taken in the same order by every call so that none can deadlock: the enclosing
batch scopes (`_limits`), the LM's own `max_concurrency`, then a connection of the origin's
shared pool. All three are held for the attempt only, never across a backoff, and the wait
does not count against the call's `max_elapsed` nor its attempt timeout: a call queued behind
a busy batch is not late.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import _limits
from ..providers.base import Reply
from ..retry import AttemptState
from . import Call, Handler

__all__ = ["Slots"]


class Slots:
    """Hold the batch scopes' slots, one of `max_concurrency` (None: no limit of its own) and
    a pooled connection around the rest of the attempt."""

    def __init__(self, max_concurrency: int | None) -> None:
        self.max_concurrency = max_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: tuple[asyncio.Semaphore, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        # A semaphore belongs to one loop and cannot be pickled: copies make their own.
        return {"max_concurrency": self.max_concurrency}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_concurrency"])  # type: ignore[misc]

    def _own_semaphore(self) -> tuple[asyncio.Semaphore, ...]:
        if self.max_concurrency is None:
            return ()
        loop = asyncio.get_running_loop()
        # Only the runtime loop's thread gets here, so no lock is needed; a new loop (after a
        # fork) gets a new semaphore, and the old one dies with this object, not in a registry.
        if self._loop is not loop or not self._semaphore:
            self._loop, self._semaphore = loop, (asyncio.Semaphore(self.max_concurrency),)
        return self._semaphore

    async def __call__(self, call: Call, attempt: AttemptState, send: Handler) -> Reply:
        semaphores = self._own_semaphore()
        if call.connection_slots is not None:
            semaphores = (*semaphores, call.connection_slots)
        order = _limits.slots_for(*semaphores)
        # Nothing else runs between this look and the takes unless one of them waits: a slot
        # free now is taken at once, and an attempt that queued nowhere has no wait to record.
        queued = any(semaphore.locked() for semaphore in order)
        queued_from = attempt.clock.monotonic() if queued else 0.0
        await _limits.take(order)
        try:
            if queued:
                attempt.record_wait("slot", attempt.clock.monotonic() - queued_from, counted=False)
            return await send(call, attempt)
        finally:
            _limits.release(order)
