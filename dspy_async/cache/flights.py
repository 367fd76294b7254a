"""Single-flight: identical calls in flight at once make one provider request.

The first call with a key leads: it registers a flight and makes the request. Calls with the
same key that arrive while it is in flight follow: they wait for the leader's reply. A failure
(or the leader being cancelled) is never handed on as an answer: the followers are told there
is none, and each makes its own call with its own retries. The flight ends when its reply
arrives, so it holds nothing after. One registry per loop, the runtime's, on whose thread every
flight is led and followed: no lock is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from .. import _runtime
from ..providers.base import Reply

__all__ = ["Flight", "Flights", "flights"]


class Flight:
    """One request in flight; its followers wait on it."""

    __slots__ = ("_landed",)

    def __init__(self) -> None:
        self._landed: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> Reply | None:
        """The leader's reply, or None if it failed or was cancelled."""
        # Shielded: a follower that is cancelled must not cancel the flight of the others.
        return await asyncio.shield(self._landed)

    def land(self, reply: Reply | None) -> None:
        if not self._landed.done():
            self._landed.set_result(reply)


class Flights:
    """The flights in progress, by cache key."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> Flight | None:
        return self._flights.get(key)

    @contextmanager
    def lead(self, key: str) -> Iterator[Flight]:
        """Register a flight for `key`; on leaving, followers not given a reply get None."""
        flight = self._flights[key] = Flight()
        try:
            yield flight
        finally:
            flight.land(None)  # after a reply, a no-op; after a failure, followers go alone
            if self._flights.get(key) is flight:
                del self._flights[key]


def flights() -> Flights:
    """The runtime loop's registry (made on first use; a forked child's loop makes its own)."""
    return _runtime.loop_resource("dspy_async.cache.flights", Flights)
