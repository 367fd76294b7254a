"""Concurrency slots that a call holds only while a request is in flight.

A batch limits how many of its items talk to a provider at once. If that limit were held per
item, an item waiting out a 429 backoff would keep its slot and the rest of the batch would run
one short. So the batch puts its `Scope` in a context variable instead, and the LM's retry loop
takes a slot from every enclosing scope around each attempt only (`take`, `release`), never around
a wait. The scope is also how a cancelled batch stops work it cannot reach directly: calls made
from worker threads of a sync `forward` find the scope cancelled and never send again.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Scope", "release", "scope", "slots_for", "take"]


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


def slots_for(*semaphores: asyncio.Semaphore) -> tuple[asyncio.Semaphore, ...]:
    """The slots an attempt takes: every enclosing scope's limit, outermost first, then
    `semaphores`; the same order for every caller, so nested scopes cannot deadlock."""
    limits = tuple(opened.slots for opened in _scopes.get() if opened.slots is not None)
    return (*limits, *semaphores) if limits else semaphores


async def take(order: tuple[asyncio.Semaphore, ...]) -> None:
    """Take every slot of `order` (see `slots_for`) for an attempt, which `release` gives
    back. The task is registered with its scopes while it waits and while it sends, so
    cancelling a scope reaches it in either state. On failure nothing is left held."""
    scopes = _scopes.get()
    task = asyncio.current_task() if scopes else None
    if task is not None:
        for opened in scopes:
            opened.in_flight.add(task)
    taken = 0
    try:
        _refuse_if_cancelled(scopes)
        for semaphore in order:
            await semaphore.acquire()
            taken += 1
        _refuse_if_cancelled(scopes)
    except BaseException:
        _release(scopes, order, taken)
        raise


def release(order: tuple[asyncio.Semaphore, ...]) -> None:
    """Give back the slots `take` took, innermost first, and unregister the task."""
    _release(_scopes.get(), order, len(order))


def _release(scopes: tuple[Scope, ...], order: tuple[asyncio.Semaphore, ...], taken: int) -> None:
    task = asyncio.current_task() if scopes else None
    if task is not None:
        for opened in scopes:
            opened.in_flight.discard(task)
    for index in range(taken - 1, -1, -1):
        order[index].release()


def _refuse_if_cancelled(scopes: tuple[Scope, ...]) -> None:
    for opened in scopes:
        if opened.cancelled:
            raise asyncio.CancelledError("the batch this call belongs to was cancelled")
