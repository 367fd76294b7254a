"""Callbacks with DSPy's handler names, set with `dspy.configure(callbacks=[...])` (or for a
block, `dspy.context(callbacks=[...])`).

    class Log(dspy.BaseCallback):
        def on_lm_end(self, call_id, outputs, exception=None):
            print("LM said", outputs)

Each event has a start and an end handler sharing a `call_id`: `on_module_start/end` (every
Module and Predict call; inputs `{"args", "kwargs"}`, outputs the Prediction),
`on_lm_start/end` (inputs `{"prompt", "messages", "kwargs"}`, outputs DSPy's list of
completions), `on_adapter_format_start/end` and `on_adapter_parse_start/end` (a Predict step
building its messages and reading a reply; the instance is the signature), `on_tool_start/end`
(inputs `{"kwargs"}`), `on_evaluate_start/end` and `on_compile_start/end`. An end handler gets
`exception` instead of outputs when the call failed. A handler that raises is logged and
ignored: it never fails the call.

Where they run: module, tool (called directly), evaluation and compile handlers in the
caller's thread, like DSPy's; LM and adapter handlers, and tools a ReAct step calls, on the
runtime's loop thread, where every call runs, so they must be quick and must not block.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal

from . import usage
from ._noop import Nothing
from .settings import settings

__all__ = ["BaseCallback", "Event", "Observation", "module_call", "observe"]

logger = logging.getLogger("dspy_async")

Event = Literal["module", "lm", "adapter_format", "adapter_parse", "tool", "evaluate", "compile"]

# Set inside the outermost module call that tracks usage (settings.track_usage), so that
# only the top-level Prediction gets it, as in DSPy.
_tracking: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dspy_async_tracking_usage", default=False
)


class BaseCallback:
    """Subclass and override the handlers you need; every one does nothing by default."""

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A Module or Predict is called."""

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The Module or Predict call ended with `outputs`, or failed with `exception`."""

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An LM is called (on the runtime loop thread)."""

    def on_lm_end(
        self, call_id: str, outputs: list[Any] | None, exception: BaseException | None = None
    ) -> None:
        """The LM call ended (on the runtime loop thread)."""

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A step starts building its messages (on the runtime loop thread)."""

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The messages are built."""

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A step starts reading a reply into its outputs (on the runtime loop thread)."""

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The reply was read, or failed validation (`exception`, before any re-ask)."""

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A Tool is called."""

    def on_tool_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The Tool call ended."""

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An Evaluate run starts."""

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The Evaluate run ended with its EvaluationResult."""

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An optimizer's `compile` starts."""

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """`compile` ended with the compiled program."""


class Observation:
    """One observed call: its start handlers ran on entering; its end handlers run on leaving,
    with `outputs` (set it, or use `returned`) or the exception that ended the call."""

    __slots__ = ("_callbacks", "_event", "call_id", "outputs")

    def __init__(
        self, callbacks: tuple[Any, ...], event: Event, instance: Any, inputs: Mapping[str, Any]
    ) -> None:
        self._callbacks = callbacks
        self._event = event
        self.call_id = uuid.uuid4().hex
        self.outputs: Any = None
        for callback in callbacks:
            _handle(callback, f"on_{event}_start", self.call_id, instance=instance, inputs=inputs)

    def returned(self, value: Any) -> Any:
        """Record `value` as the call's outputs and hand it back."""
        self.outputs = value
        return value

    def __enter__(self) -> Observation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outputs = None if exc is not None else self.outputs
        for callback in self._callbacks:
            _handle(callback, f"on_{self._event}_end", self.call_id, outputs=outputs, exception=exc)


class _Unobserved(Nothing, Observation):
    """The observation when no callback is set: it does nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        self.outputs = None

    def returned(self, value: Any) -> Any:
        return value


_UNOBSERVED = _Unobserved()


def observe(event: Event, instance: Any, inputs: Mapping[str, Any]) -> Observation:
    """The observation of one call: `with observe("tool", tool, {...}) as seen: ...`."""
    callbacks = settings.callbacks
    if not callbacks:
        return _UNOBSERVED  # one lookup when nothing listens
    return Observation(callbacks, event, instance, inputs)


def lm_call(lm: Any, prompt: str | None, messages: Any, params: Mapping[str, Any]) -> Observation:
    """The observation of one LM call, its inputs put together only when a callback listens
    (they would otherwise be kept for the whole call, for nothing)."""
    callbacks = settings.callbacks
    if not callbacks:
        return _UNOBSERVED
    inputs = {"prompt": prompt, "messages": messages, "kwargs": params}
    return Observation(callbacks, "lm", lm, inputs)


def module_call(
    instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> AbstractContextManager[Observation]:
    """A Module or Predict call: its callbacks and, with `track_usage`, the usage of the
    outermost call set on its Prediction (`get_lm_usage()`)."""
    callbacks = settings.callbacks
    tracking = settings.track_usage and not _tracking.get()
    if not callbacks and not tracking:
        return _UNOBSERVED
    seen = Observation(callbacks, "module", instance, {"args": args, "kwargs": dict(kwargs)})
    return _tracked(seen) if tracking else seen


@contextlib.contextmanager
def _tracked(seen: Observation) -> Iterator[Observation]:
    token = _tracking.set(True)
    try:
        with seen, usage.track_usage() as tracker:
            yield seen
            set_usage = getattr(seen.outputs, "set_lm_usage", None)
            if set_usage is not None:
                set_usage(tracker.get_total_tokens())
    finally:
        _tracking.reset(token)


def _handle(callback: Any, name: str, call_id: str, **arguments: Any) -> None:
    """Call one handler; a missing one is skipped, a failing one logged."""
    handler = getattr(callback, name, None)
    if handler is None:
        return
    try:
        handler(call_id=call_id, **arguments)
    except Exception:
        logger.warning("callback %r failed in %s", callback, name, exc_info=True)
