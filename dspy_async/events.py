"""Subscribe to what LM calls do: each request sent, each wait for rate-limit budget, each
retry, each call's end.

    def on_event(event: dspy.events.LMEvent) -> None:
        if isinstance(event, dspy.events.RetryEvent):
            metrics.increment("llm.retries", tags={"status": event.status_code})

    unsubscribe = dspy.events.subscribe(on_event)
    ...
    unsubscribe()

Callbacks run on the runtime's loop thread, in the order of events, so they must be quick and
must not block (hand slow work to a queue). An exception in a callback is logged and ignored: it
never fails the call. Events carry no prompts, outputs or credentials.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from . import _forksafe
from .errors import LMError
from .records import Attempt, Usage

__all__ = [
    "FailureEvent",
    "LMEvent",
    "RequestEvent",
    "ResponseEvent",
    "RetryEvent",
    "ThrottleEvent",
    "subscribe",
    "subscribed",
]

logger = logging.getLogger("dspy_async")


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """An attempt is about to be sent. `call_id` ties together the events of one LM call."""

    call_id: int
    provider: str
    model: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Attempt `attempt` failed with `error`; the next is sent after `wait` seconds."""

    call_id: int
    provider: str
    model: str
    attempt: int
    status_code: int | None
    error: LMError
    wait: float


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """The call succeeded. `elapsed` is its whole duration in seconds, waits included.
    `cached`: the response cache answered it (or an identical call in flight did), with no
    request of its own; its `usage` then counts only the `saved_tokens`."""

    call_id: int
    provider: str
    model: str
    attempts: tuple[Attempt, ...]
    usage: Usage
    elapsed: float
    finish_reason: str | None
    cached: bool = False


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """The call failed for good with `error` (which is then raised to the caller)."""

    call_id: int
    provider: str
    model: str
    attempts: tuple[Attempt, ...]
    error: LMError
    elapsed: float


@dataclass(frozen=True, slots=True)
class ThrottleEvent:
    """Attempt `attempt` waited `seconds` for the rate-limit budget `budget` (provider, model,
    origin and a fingerprint of the key, never the key) before it could be sent. `reason` is
    what was short: "requests", "tokens", "input_tokens", "output_tokens", or "pause" (a
    429's Retry-After closed the budget's gate)."""

    call_id: int
    provider: str
    model: str
    attempt: int
    budget: str
    seconds: float
    reason: str


LMEvent: TypeAlias = RequestEvent | RetryEvent | ResponseEvent | FailureEvent | ThrottleEvent
Subscriber = Callable[[LMEvent], object]

# Serialises subscribe/unsubscribe; `emit` reads the tuple without it (copy-on-write).
_lock = _forksafe.lock()
_subscribers: tuple[Subscriber, ...] = ()
_call_ids = itertools.count(1)


def subscribe(callback: Subscriber) -> Callable[[], None]:
    """Call `callback(event)` for every LM event from now on; returns the unsubscribe function."""
    global _subscribers
    with _lock:
        _subscribers = (*_subscribers, callback)

    def unsubscribe() -> None:
        global _subscribers
        with _lock:
            remaining = list(_subscribers)
            if callback in remaining:
                remaining.remove(callback)
            _subscribers = tuple(remaining)

    return unsubscribe


def subscribed() -> bool:
    """Whether anyone listens; callers build an event only then, so no subscriber costs no
    event objects on every request."""
    return bool(_subscribers)


def new_call_id() -> int:
    """A process-unique id for one LM call's events."""
    return next(_call_ids)


def emit(event: LMEvent) -> None:
    """Hand `event` to every subscriber; a failing subscriber is logged, never raised."""
    for callback in _subscribers:
        try:
            callback(event)
        except Exception:
            logger.exception("dspy_async event subscriber %r failed", callback)
