"""The streams a caller iterates: `Stream` from sync code (a thread blocked in `next()`), and
`AsyncStream` from any event loop. Both are consumers of one `Channel`, fed by a producer
task started at once on the runtime loop, so a stream is a call like any other: same pool,
limits, retries and accounting, and no event loop of its own.

Leaving early closes the stream at once: `close()` / `aclose()`, the end of a `with` block,
a KeyboardInterrupt while waiting, or the stream being dropped (a `for` loop broken out of a
stream it alone held). Closing cancels the producer, which closes the connection, so the
server sees the client go; `close()` waits (a few seconds at most) until it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar

from .. import _runtime
from ..errors import RuntimeClosedError, RuntimeReentryError
from .channel import Channel, Ended, Put, pump
from .fields import StreamChunk

if TYPE_CHECKING:
    from ..lm import LMResponse
    from ..prediction import Prediction

__all__ = [
    "AsyncPredictionStream",
    "AsyncStream",
    "AsyncTextStream",
    "PredictionStream",
    "Stream",
    "TextStream",
]

T = TypeVar("T")
R = TypeVar("R")

Produce = Callable[[Put[T]], Awaitable[R]]
"""The work a stream runs on the runtime loop: it puts items and returns the result."""

CLOSE_GRACE = _runtime.CANCEL_GRACE

REENTRY = (
    "a sync stream was opened on the runtime's own event loop, where iterating it would "
    "deadlock; use astream() there"
)


def _weight(item: object) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, StreamChunk):
        return len(item.text)
    return 1


class _Consumer(Generic[T, R]):
    """What a sync and an async stream share: the channel, the producer and the outcome."""

    def __init__(self, produce: Produce[T, R]) -> None:
        self._channel: Channel[T] = Channel(_runtime.get_loop(), _weight)
        self._ended: Ended | None = None
        self._pid = os.getpid()
        _runtime.submit(pump(self._channel, produce))

    def _check_process(self) -> None:
        # A forked child has no producer: the runtime loop that runs it stayed in the parent.
        if os.getpid() != self._pid:
            raise RuntimeClosedError(
                f"this stream was opened in process {self._pid} before it forked; only that "
                "process can read it"
            )

    def _end(self, ended: Ended) -> None:
        self._ended = ended
        if ended.error is not None:
            raise ended.error

    @property
    def result(self) -> R:
        """What the call returned, once the stream has ended; if it failed, its error."""
        ended = self._ended
        if ended is None:
            raise RuntimeError("the stream has not ended yet: iterate it to its end first")
        if ended.error is not None:
            raise ended.error
        value: R = ended.result
        return value

    def _leave(self) -> bool:
        """Close the channel if the stream has not ended; whether it had not."""
        if self._ended is not None:
            return False
        self._ended = Ended(error=RuntimeError("the stream was closed before it ended"))
        self._channel.close()
        return True

    def __del__(self) -> None:
        # Dropped unfinished (a `for` broken out of): cancel, without waiting, since this can
        # run on any thread, the runtime loop's included.
        if getattr(self, "_ended", True) is None:
            self._channel.close()


class Stream(_Consumer[T, R]):
    """A sync iterator over a call's items as they arrive; `result` once it ended.

    Not for the runtime loop's own thread (RuntimeReentryError): use the async stream there.
    """

    def __init__(self, produce: Produce[T, R]) -> None:
        if _runtime.on_runtime_loop():
            raise RuntimeReentryError(REENTRY)
        super().__init__(produce)

    def __iter__(self) -> Stream[T, R]:
        return self

    def __next__(self) -> T:
        if self._ended is not None:
            raise StopIteration
        self._check_process()
        try:
            item = self._channel.get()
        except BaseException:  # KeyboardInterrupt while waiting: close, then let it through
            self.close()
            raise
        if isinstance(item, Ended):
            self._end(item)
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the call if it is still running, and wait until its connection is closed."""
        if self._leave():
            self._channel.finished.wait(CLOSE_GRACE)

    def __enter__(self) -> Stream[T, R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncStream(_Consumer[T, R]):
    """An async iterator over a call's items as they arrive, on any event loop; `result`
    once it ended."""

    def __aiter__(self) -> AsyncStream[T, R]:
        return self

    async def __anext__(self) -> T:
        if self._ended is not None:
            raise StopAsyncIteration
        self._check_process()
        try:
            item = await self._channel.aget()
        except BaseException:  # this task was cancelled while waiting: stop the call too
            self._leave()
            raise
        if isinstance(item, Ended):
            self._end(item)
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop the call if it is still running, and wait until its connection is closed."""
        if self._leave():
            # Nothing more is put once closed: this waits for the producer's end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE):
                    while not isinstance(await self._channel.aget(), Ended):
                        pass

    async def __aenter__(self) -> AsyncStream[T, R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class TextStream(Stream[str, "LMResponse"]):
    """`lm.stream(...)`: the reply's text as it arrives; `response` once it ended."""

    @property
    def response(self) -> LMResponse:
        """The LMResponse (text, usage, attempts) once the stream has ended."""
        return self.result


class AsyncTextStream(AsyncStream[str, "LMResponse"]):
    """`lm.astream(...)`: the reply's text as it arrives; `response` once it ended."""

    @property
    def response(self) -> LMResponse:
        """The LMResponse (text, usage, attempts) once the stream has ended."""
        return self.result


class PredictionStream(Stream[StreamChunk, "Prediction"]):
    """`predict.stream(...)`: StreamChunks of the output fields; `prediction` once it ended."""

    @property
    def prediction(self) -> Prediction:
        """The validated Prediction once the stream has ended."""
        return self.result


class AsyncPredictionStream(AsyncStream[StreamChunk, "Prediction"]):
    """`predict.astream(...)`: StreamChunks of the output fields; `prediction` once ended."""

    @property
    def prediction(self) -> Prediction:
        """The validated Prediction once the stream has ended."""
        return self.result
