"""The call pipeline: every gate an LM call and each of its attempts pass, composed in one place.

An LM runs two chains, each composed once in `LM.__init__`, outermost first. The call chain
runs once per call, around the retry loop (`retry.call_with_retries`: one `max_elapsed`
deadline, backoff sleeps between attempts that hold nothing); the attempt chain runs inside
it, once per attempt:

    call        Cache      the response cache: a hit, or an identical call in flight, answers
                           without a request; the answer is kept once the caller accepts it
                retry loop
    attempt     Trace      the attempt's span, when instrumented (pipeline/trace.py)
                Budget     the account's rate-limit budget: 1 request + estimated tokens,
                           waited for holding no slot; settled with real usage and headers
                Limiter    the adaptive (AIMD) in-flight limit, with adaptive_concurrency=True
                Slots      batch scopes, the LM's max_concurrency, the origin's connection pool
                Checkpoint turns back to Budget an attempt that got its slot during a pause
                Send       the request event, the attempt's timeout, providers.exchange()

Each stage is a small object with one job that does its part and hands the call (or the
attempt) on to the rest of its chain, which it is given last. A stage can be tested alone by
giving it a rest of its own. Attempt stages record the time they make an attempt wait with
`AttemptState.record_wait`, so every wait shows in the attempt's record and in its events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from .. import _http
from ..providers.base import Reply
from ..providers.exchange import Request
from ..records import Attempt
from ..retry import AttemptState

if TYPE_CHECKING:
    from .cache import Verdict

__all__ = [
    "Answer",
    "Call",
    "CallHandler",
    "CallStage",
    "Handler",
    "Stage",
    "compose",
    "compose_call",
]


@dataclass(frozen=True, slots=True)
class Call:
    """One LM call as its stages see it, resolved once on the runtime loop.

    `connection_slots` is the shared pool's semaphore for the call's origin (None when the
    user brought an `httpx.AsyncClient`, whose pool limits itself). `cache` says whether the
    response cache may answer it, and `rollout_id` separates its entry (neither is sent).
    """

    id: int
    provider: str
    model: str
    request: Request
    sender: _http.Sender
    connection_slots: asyncio.Semaphore | None
    cache: bool = False
    rollout_id: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What a call's chain returns: the reply and every attempt's record. `cached` when the
    response cache (or an identical call in flight) answered; `verdict` is how the caller's
    validation keeps or drops the answer in the cache (None with the cache off)."""

    reply: Reply
    attempts: tuple[Attempt, ...]
    cached: bool = False
    verdict: Verdict | None = None


Handler = Callable[[Call, AttemptState], Awaitable[Reply]]
"""The rest of the attempt chain, as an attempt stage sees it."""

CallHandler = Callable[[Call], Awaitable[Answer]]
"""The rest of the call chain (at its end, the retry loop), as a call stage sees it."""


class Stage(Protocol):
    """One gate of an attempt: do its one job around `send`, the rest of the chain. Usually
    a coroutine function; a stage with nothing to do for an attempt may be a plain function
    handing back `send(call, attempt)`, so that it costs the attempt no frame."""

    def __call__(self, call: Call, attempt: AttemptState, send: Handler) -> Awaitable[Reply]: ...


class CallStage(Protocol):
    """One gate of a call: do its one job around `proceed`, the rest of the call chain (a
    plain function when it may hand the call on untouched, as a Stage may)."""

    def __call__(self, call: Call, proceed: CallHandler) -> Awaitable[Answer]: ...


class _Link:
    """A stage bound to the rest of its chain, which it is handed as its last argument."""

    __slots__ = ("rest", "stage")

    def __init__(
        self, stage: Callable[..., Awaitable[Any]], rest: Callable[..., Awaitable[Any]]
    ) -> None:
        self.stage = stage
        self.rest = rest

    def __call__(self, *args: Any) -> Awaitable[Any]:
        return self.stage(*args, self.rest)


def compose(stages: Sequence[Stage], innermost: Handler) -> Handler:
    """Chain attempt `stages`, outermost first, around `innermost`."""
    return cast(Handler, _chain(stages, innermost))


def compose_call(stages: Sequence[CallStage], innermost: CallHandler) -> CallHandler:
    """Chain call `stages`, outermost first, around `innermost` (the retry loop)."""
    return cast(CallHandler, _chain(stages, innermost))


def _chain(
    stages: Sequence[Callable[..., Awaitable[Any]]], innermost: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    chain = innermost
    for stage in reversed(stages):
        chain = _Link(stage, chain)
    return chain
