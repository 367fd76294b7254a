"""Tracing: the Trace stage of the attempt pipeline, the hooks that open spans for LM calls and
Module/Predict steps, and `instrument()`, which turns them on.

The library calls a tracer at four points: a Module or Predict step (`step`, `batch`), an LM
call (`call`), each attempt (the `Trace` stage, outermost in the chain, so the attempt's gate
waits happen inside it) and each backoff (`CallTrace.backoff`, from the retry hook). A gate
that makes an attempt wait (slots, budget, ...) only records the wait with
`AttemptState.record_wait`; the tracer sees it through `AttemptState.on_wait` and draws it as
a span with the wait's own start and end, so no stage knows about tracing.

Off (the default), each hook is one check of the module's `tracer` and hands back a shared
no-op; nothing is imported. `instrument()` installs the OpenTelemetry tracer from
`integrations/otel.py`, importing OpenTelemetry only then.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Mapping, Sized
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from .._noop import NOTHING, Nothing
from ..providers.base import Reply
from ..records import Message, Usage
from ..retry import AttemptFailed, AttemptState
from . import Call, Handler

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "CallTrace",
    "Trace",
    "Tracer",
    "batch",
    "call",
    "current",
    "current_call",
    "instrument",
    "step",
    "uninstrument",
]

StepAttributes = Mapping[str, str | int]


class CallTrace(Protocol):
    """One LM call's trace: a context manager around the call (its exception, if any, is the
    call's failure), told of the answer and of each backoff, and wrapping each attempt."""

    def __enter__(self) -> CallTrace: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def answered(self, reply: Reply, usage: Usage, *, cached: bool = False) -> None:
        """The call succeeded with `reply`, having spent `usage` over all its attempts, or
        was answered by the response cache (`cached`) without any."""

    def backoff(self, failure: AttemptFailed, wait: float) -> None:
        """Attempt `failure` failed and the call now waits `wait` seconds before the next."""

    async def attempt(self, call: Call, state: AttemptState, send: Handler) -> Reply:
        """Run one attempt (`send(call, state)`) inside its trace."""
        ...


class Tracer(Protocol):
    """What `instrument()` installs."""

    def step(self, name: str, attributes: StepAttributes) -> AbstractContextManager[object]:
        """A Module or Predict step (or a batch of them), current while it runs."""
        ...

    def call(self, call: Call, messages: list[Message]) -> CallTrace:
        """The trace of one LM call; entering it makes it the `current_call`."""
        ...


tracer: Tracer | None = None
"""The installed tracer; None when tracing is off."""

current_call: contextvars.ContextVar[CallTrace | None] = contextvars.ContextVar(
    "dspy_async_current_call", default=None
)
"""The traced LM call under way in this task, for the Trace stage of its attempts."""


class _Untraced(Nothing):
    """The call trace when tracing is off: every method does nothing."""

    __slots__ = ()

    def answered(self, reply: Reply, usage: Usage, *, cached: bool = False) -> None:
        pass

    def backoff(self, failure: AttemptFailed, wait: float) -> None:
        pass

    async def attempt(self, call: Call, state: AttemptState, send: Handler) -> Reply:
        return await send(call, state)


_UNTRACED = _Untraced()


def current() -> CallTrace:
    """The trace of the LM call under way in this task (the no-op one if it is untraced)."""
    return current_call.get() or _UNTRACED


def call(call: Call, messages: list[Message]) -> CallTrace:
    """The trace to run LM call `call` in (a no-op when tracing is off)."""
    active = tracer
    return _UNTRACED if active is None else active.call(call, messages)


def step(module: object) -> AbstractContextManager[object]:
    """The span of one run of `module` (a no-op when tracing is off)."""
    active = tracer
    return NOTHING if active is None else active.step(*_describe(module))


def batch(module: object, items: object) -> AbstractContextManager[object]:
    """The span of a batch of runs of `module` over `items` (a no-op when tracing is off)."""
    active = tracer
    if active is None:
        return NOTHING
    name, attributes = _describe(module)
    if isinstance(items, Sized):
        attributes["dspy_async.batch.size"] = len(items)
    return active.step(f"{name}.batch", attributes)


def _describe(module: object) -> tuple[str, dict[str, str | int]]:
    """A step's span name and attributes: its class, and its signature if it has one
    (`Predict(EmailClassifier)`), names that stay few however many calls are made."""
    name = type(module).__name__
    attributes: dict[str, str | int] = {"dspy_async.module": name}
    signature = getattr(module, "signature", None)
    if isinstance(signature, type):
        attributes["dspy_async.signature"] = signature.__name__
        name = f"{name}({signature.__name__})"
    return name, attributes


class Trace:
    """The outermost stage: runs the attempt inside its trace when the call is traced.

    A plain function handing back the rest of the attempt: untraced, the stage adds no frame
    (and no object) to an attempt."""

    def __call__(self, call: Call, attempt: AttemptState, send: Handler) -> Awaitable[Reply]:
        traced = current_call.get()
        if traced is None:
            return send(call, attempt)
        return traced.attempt(call, attempt, send)


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    capture_content: bool | None = None,
) -> None:
    """Emit OpenTelemetry spans and metrics, per the GenAI semantic conventions, for every LM
    call, attempt, wait and Module/Predict step from now on (`pip install 'dspy-async[otel]'`).

    The providers default to OpenTelemetry's global ones. Prompts and replies are recorded only
    with `capture_content` (default: the OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
    environment variable); API keys never are. Calling it again replaces the setup.
    """
    global tracer
    try:
        from ..integrations import otel
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        raise ImportError(
            "dspy_async.instrument() needs OpenTelemetry: pip install 'dspy-async[otel]'",
            name=exc.name,
        ) from None
    tracer = otel.OTelTracer(tracer_provider, meter_provider, capture_content)


def uninstrument() -> None:
    """Stop tracing; calls already under way finish their spans."""
    global tracer
    tracer = None
