"""When and how long to wait before trying a failed provider call again.

`RetryPolicy` is the user-facing knob; `call_with_retries` is the loop every LM call runs.
Waits are the installed clock's `sleep` (`asyncio.sleep` on the running loop unless a test
installs a virtual clock), so a call waiting out a backoff blocks nothing else; the attempt's
gates (slots, ...) are entered inside each attempt, so a backoff holds none of them.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

import backoff

from . import _checks, _clock
from .errors import (
    ConfigurationError,
    ContextWindowExceededError,
    LMError,
    UnsupportedParameterError,
)
from .records import Attempt, Usage, Wait

__all__ = [
    "RETRYABLE_STATUSES",
    "AttemptFailed",
    "AttemptState",
    "RetryPolicy",
    "call_with_retries",
    "server_wait",
    "should_retry",
]

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
NEVER_RETRIED = (ContextWindowExceededError, UnsupportedParameterError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How an LM retries a failed call.

    Waits grow from `initial_delay`, doubling up to `max_delay`; with `jitter` each is drawn
    from its upper half, so clients that failed together do not retry together. A wait the
    server asks for (`retry-after-ms` / `Retry-After`) replaces it when `respect_retry_after`.
    `max_attempts` counts the first try; `max_elapsed` bounds the whole call, waits included:
    a wait that would end past it is not taken, and the last error is raised at once.
    """

    max_attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_elapsed: float = 120.0
    jitter: bool = True
    respect_retry_after: bool = True

    def __post_init__(self) -> None:
        _checks.positive_int("RetryPolicy max_attempts", self.max_attempts)
        initial = _checks.non_negative_number("RetryPolicy initial_delay", self.initial_delay)
        if _checks.non_negative_number("RetryPolicy max_delay", self.max_delay) < initial:
            raise ConfigurationError(
                f"RetryPolicy max_delay must be >= initial_delay ({self.initial_delay!r}), "
                f"not {self.max_delay!r}"
            )
        _checks.positive_number("RetryPolicy max_elapsed", self.max_elapsed)
        _checks.boolean("RetryPolicy jitter", self.jitter)
        _checks.boolean("RetryPolicy respect_retry_after", self.respect_retry_after)

    def backoff_waits(self) -> Iterator[float]:
        """The waits before the second, third, ... attempt when the server names none."""
        waits = backoff.expo(base=2, factor=self.initial_delay, max_value=self.max_delay)
        next(waits)  # backoff's generators yield once before their first value
        for wait in waits:
            yield wait / 2 + backoff.full_jitter(wait / 2) if self.jitter else wait


class AttemptFailed(Exception):
    """One attempt's failure: the typed error, whether it may be retried, any wait the server
    asked for, in seconds, and the tokens its reply reported (a 200 whose body was unusable
    is still billed)."""

    def __init__(
        self,
        error: LMError,
        *,
        retryable: bool,
        server_wait: float | None = None,
        usage: Usage | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable and not isinstance(error, NEVER_RETRIED)
        self.server_wait = server_wait
        self.usage = usage if usage is not None else Usage()
        # The response's rate-limit and retry-after headers, for the rate-limit budget.
        self.headers: dict[str, str] = dict(headers or {})


def should_retry(headers: Mapping[str, str], *, default: bool) -> bool:
    """Whether a response may be retried: its `x-should-retry` header if it has one (the
    OpenAI and Anthropic APIs send it), else `default`."""
    override = headers.get("x-should-retry", "").strip().lower()
    return override == "true" if override in ("true", "false") else default


def server_wait(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a response asks for, in seconds, from `retry-after-ms` or `Retry-After`
    (seconds or an HTTP date, measured from `now`, a Unix time). None if it names none."""
    with contextlib.suppress(KeyError, ValueError):
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return max(0.0, when - (time.time() if now is None else now))
    return None


class _HasUsage(Protocol):
    @property
    def usage(self) -> Usage: ...


R = TypeVar("R", bound=_HasUsage)
C = TypeVar("C")
T = TypeVar("T")
RetryHook = Callable[[C, AttemptFailed, int, float], None]
WaitHook = Callable[[Wait], None]


@dataclass(slots=True)
class AttemptState:
    """One attempt as the pipeline's stages see it: its number, the call's deadline (a clock
    time, the end of `max_elapsed`), and the waits its gates have taken so far.

    A gate whose wait does not count against `max_elapsed` (a concurrency slot: a call queued
    behind a busy batch is not late) moves the deadline by that wait. `on_wait`, if set (by
    the Trace stage), sees each wait as it ends. `ticket` is what the Budget stage took for
    the attempt, for the stages after it to see (pipeline/budget.py).
    """

    number: int
    deadline: float
    clock: _clock.Clock
    gates: tuple[Wait, ...] = ()  # a tuple, grown by a wait: most attempts take none
    gated: float = 0.0
    on_wait: WaitHook | None = None
    ticket: object = None

    def time_left(self) -> float:
        """Seconds until the call's deadline."""
        return self.deadline - self.clock.monotonic()

    def record_wait(
        self, gate: str, seconds: float, *, counted: bool, reason: str | None = None
    ) -> None:
        """Note `seconds` spent at `gate` (waiting for `reason`, if it names one); `counted`
        waits eat into the deadline."""
        wait = Wait(gate, seconds, reason)
        self.gates += (wait,)
        self.gated += seconds
        if not counted:
            self.deadline += seconds
        if self.on_wait is not None:
            self.on_wait(wait)


@overload
async def call_with_retries(
    attempt: Callable[[C, AttemptState], Awaitable[R]],
    call: C,
    policy: RetryPolicy,
    *,
    enabled: bool = ...,
    on_retry: RetryHook[C] | None = ...,
    clock: _clock.Clock | None = ...,
) -> tuple[R, tuple[Attempt, ...]]: ...


@overload
async def call_with_retries(
    attempt: Callable[[C, AttemptState], Awaitable[R]],
    call: C,
    policy: RetryPolicy,
    *,
    enabled: bool = ...,
    on_retry: RetryHook[C] | None = ...,
    clock: _clock.Clock | None = ...,
    answer: Callable[[R, tuple[Attempt, ...]], T],
) -> T: ...


async def call_with_retries(
    attempt: Callable[[C, AttemptState], Awaitable[R]],
    call: C,
    policy: RetryPolicy,
    *,
    enabled: bool = True,
    on_retry: RetryHook[C] | None = None,
    clock: _clock.Clock | None = None,
    answer: Callable[[R, tuple[Attempt, ...]], Any] | None = None,
) -> Any:
    """Run `attempt(call, state)` until it succeeds or may not be retried.

    `attempt` raises `AttemptFailed` on failure; `state.time_left()` is the most it may take.
    `call` is handed to `attempt` and `on_retry` as is, so that neither needs binding to it
    (an object more for every call in flight).
    `on_retry(call, failure, number, wait)` is called before each backoff, a `clock.sleep` (the
    installed clock unless given: real time outside tests) that holds nothing the attempt's
    gates gave it. With `enabled` False (retries switched off) only one attempt is made.
    Returns the result and every attempt's record (as `answer(result, records)`, if given);
    on failure raises the last error, carrying every record.
    """
    clock = clock or _clock.current()
    waits: Iterator[float] | None = None  # made at the first failure: most calls need none
    history: tuple[Attempt, ...] = ()  # grown by one record per attempt; most make one
    deadline = clock.monotonic() + policy.max_elapsed
    waited = 0.0
    number = 0
    while True:
        number += 1
        state = AttemptState(number, deadline, clock)
        began = clock.monotonic()
        try:
            outcome: R | AttemptFailed = await attempt(call, state)
        except AttemptFailed as failed:
            outcome = failed
        elapsed = clock.monotonic() - began - state.gated
        deadline, gates = state.deadline, state.gates
        if not isinstance(outcome, AttemptFailed):
            record = Attempt(number, "ok", None, 200, waited, elapsed, outcome.usage, gates)
            records = (*history, record)
            return (outcome, records) if answer is None else answer(outcome, records)
        failure, error = outcome, outcome.error
        status, spent = error.status_code, failure.usage
        history += (Attempt(number, "error", str(error), status, waited, elapsed, spent, gates),)
        remaining = deadline - clock.monotonic()
        waits = waits or policy.backoff_waits()
        wait = _next_wait(failure, number, policy, waits, remaining) if enabled else None
        if wait is None:
            error.attempts = history
            try:
                raise error from failure.__cause__
            finally:
                # This frame joins the error's traceback: holding the error too would make a
                # cycle that keeps the call's request alive until a full garbage collection.
                del error, failure, outcome
        if on_retry is not None:
            on_retry(call, failure, number, wait)
        slept_from = clock.monotonic()
        await clock.sleep(wait)
        waited = clock.monotonic() - slept_from


def _next_wait(
    failure: AttemptFailed,
    number: int,
    policy: RetryPolicy,
    waits: Iterator[float],
    remaining: float,
) -> float | None:
    """The wait before the next attempt, or None if the call must fail now."""
    if not failure.retryable or number >= policy.max_attempts:
        return None
    wait = next(waits)
    if policy.respect_retry_after and failure.server_wait is not None:
        wait = failure.server_wait
    return wait if wait < remaining else None
