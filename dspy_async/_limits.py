"""Concurrency slots that a call holds only while a request is in flight.

A batch limits how many of its items talk to a provider at once. If that limit were held per
item, an item waiting out a 429 backoff would keep its slot and the rest of the batch would run
one short. So the batch puts its `Scope` in a context variable instead, and the LM's retry loop
takes a slot from every enclosing scope around each attempt only (`attempt_slots`), never around
a wait. The scope is also how a cancelled batch stops work it cannot reach directly: calls made
from worker threads of a sync `forward` find the scope cancelled and never send again.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Scope", "attempt_slots", "scope"]


class Scope:
    """One batch's (or item's) limit on requests in flight, if any, and its cancellation switch."""

    def __init__(self, max_concurrency: int | None) -> None:
        self.slots = None if max_concurrency is None else asyncio.Semaphore(max_concurrency)
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.cancelled = False

    def cancel(self) -> None:
        """Refuse every further attempt and cancel the ones in flight."""
        self.cancelled = True
        for task in list(self.in_flight):
            task.cancel()


_scopes: contextvars.ContextVar[tuple[Scope, ...]] = contextvars.ContextVar(
    "dspy_async_scopes", default=()
)


@contextmanager
def scope(max_concurrency: int | None) -> Iterator[Scope]:
    """Open a scope for the work started in this context (and the threads it hands work to)."""
    opened = Scope(max_concurrency)
    token = _scopes.set((*_scopes.get(), opened))
    try:
        yield opened
    finally:
        _scopes.reset(token)


class attempt_slots:  # lower case: used like the function it replaced, `async with`
    """Hold `semaphores` and a slot of every enclosing scope for one attempt.

    Slots are taken outermost first, the same order for every caller, so nested scopes cannot
    deadlock. The task is registered with its scopes while it waits and while it sends, so
    cancelling a scope reaches it in either state. A class, not a generator: one small object
    per attempt in flight, where thousands may be.
    """

    __slots__ = ("_order", "_scopes", "_taken", "_task")

    def __init__(self, *semaphores: asyncio.Semaphore) -> None:
        self._scopes = scopes = _scopes.get()
        limits = tuple(opened.slots for opened in scopes if opened.slots is not None)
        self._order = (*limits, *semaphores) if limits else semaphores
        self._taken = 0  # how many of `_order` are held
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> None:
        scopes = self._scopes
        task = self._task = asyncio.current_task() if scopes else None
        if task is not None:
            for opened in scopes:
                opened.in_flight.add(task)
        try:
            _refuse_if_cancelled(scopes)
            for semaphore in self._order:
                await semaphore.acquire()
                self._taken += 1
            _refuse_if_cancelled(scopes)
        except BaseException:
            self._release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            for opened in self._scopes:
                opened.in_flight.discard(task)
        order, taken, self._taken = self._order, self._taken, 0
        for index in range(taken - 1, -1, -1):  # innermost first
            order[index].release()


def _refuse_if_cancelled(scopes: tuple[Scope, ...]) -> None:
    for opened in scopes:
        if opened.cancelled:
            raise asyncio.CancelledError("the batch this call belongs to was cancelled")
