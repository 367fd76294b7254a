"""The attempt pipeline: every gate one LM attempt passes through, composed in one place.

An LM call is a retry loop (`retry.call_with_retries`: one `max_elapsed` deadline, backoff
sleeps between attempts that hold nothing) around a chain of stages run once per attempt.
Each stage is a small object with one job that does its part and hands the attempt on to the
next; `LM` composes its chain with `compose`, outermost first:

    Slots      batch scopes, the LM's max_concurrency, the origin's connection pool
    Send       the request event, the attempt's timeout, providers.exchange()

A stage can be tested alone by giving it a `send` of its own. Stages record the time they
make an attempt wait with `AttemptState.record_wait`, so every wait shows in the attempt's
record and in its events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .. import _http
from ..providers.base import Reply
from ..providers.exchange import Request
from ..retry import AttemptState

__all__ = ["Call", "Handler", "Stage", "compose"]


@dataclass(frozen=True, slots=True)
class Call:
    """One LM call as its stages see it, resolved once on the runtime loop.

    `connection_slots` is the shared pool's semaphore for the call's origin (None when the
    user brought an `httpx.AsyncClient`, whose pool limits itself).
    """

    id: int
    provider: str
    model: str
    request: Request
    sender: _http.Sender
    connection_slots: asyncio.Semaphore | None


Handler = Callable[[Call, AttemptState], Awaitable[Reply]]
"""The rest of the chain, as a stage sees it."""


class Stage(Protocol):
    """One gate of an attempt: do its one job around `send`, the rest of the chain."""

    async def __call__(self, call: Call, attempt: AttemptState, send: Handler) -> Reply: ...


class _Link:
    """A stage bound to the rest of the chain."""

    __slots__ = ("rest", "stage")

    def __init__(self, stage: Stage, rest: Handler) -> None:
        self.stage = stage
        self.rest = rest

    def __call__(self, call: Call, attempt: AttemptState) -> Awaitable[Reply]:
        return self.stage(call, attempt, self.rest)


def compose(stages: Sequence[Stage], innermost: Handler) -> Handler:
    """Chain `stages`, outermost first, around `innermost`."""
    chain: Handler = innermost
    for stage in reversed(stages):
        chain = _Link(stage, chain)
    return chain
