"""Which LM calls stream, and where their text goes: a context variable set around the work a
stream runs (`streaming_to`), read by `BaseLM.acall` and by the LM's retry loop.

Each call to `acall` made in that work (one for `lm.stream()`, one per reply of a Predict
step, re-asks included) gets a sink of its own from `sinks()`. A call made inside such a
call (an LM wrapping another) shares its sink instead of opening one. The sink is taken by
the first LM that can stream (`take`: `LM`, once its response cache missed); if none did
(a cached answer, or an LM that does not stream, such as DummyLM), `acall` hands on the
whole text at the end (`Reply.rest`), so every BaseLM can be streamed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .reader import Sink

__all__ = ["Reply", "open_reply", "streaming_to", "take"]


class Reply:
    """The stream of one `acall`: its sink, and whether an LM took it."""

    __slots__ = ("sink", "sinks", "taken")

    def __init__(self, sinks: Callable[[], Sink]) -> None:
        self.sinks = sinks
        self.sink: Sink | None = None  # set while an acall streams
        self.taken = False

    async def rest(self, text: str) -> None:
        """Hand on `text` whole if no LM streamed it."""
        if not self.taken and text and self.sink is not None:
            self.taken = True
            await self.sink(text)

    def close(self) -> None:
        self.sink = None


_current: contextvars.ContextVar[Reply | None] = contextvars.ContextVar(
    "dspy_async_streaming", default=None
)


@contextmanager
def streaming_to(sinks: Callable[[], Sink]) -> Iterator[None]:
    """LM calls made inside (in this task) stream their text, each `acall` into `sinks()`."""
    token = _current.set(Reply(sinks))
    try:
        yield
    finally:
        _current.reset(token)


def open_reply() -> Reply | None:
    """For `acall`: the stream this call opens, None if it is not streamed, or is made inside
    a call that is (whose sink it then shares)."""
    reply = _current.get()
    if reply is None or reply.sink is not None:
        return None
    reply.sink, reply.taken = reply.sinks(), False
    return reply


def take() -> Sink | None:
    """For an LM about to ask its provider: the sink to stream into, if the call is streamed
    and no LM took it yet."""
    reply = _current.get()
    if reply is None or reply.sink is None or reply.taken:
        return None
    reply.taken = True
    return reply.sink
