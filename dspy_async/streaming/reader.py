"""Reading one attempt's streamed 200: the bytes decoded under the response cap (as unstreamed,
see _decoding.py), framed into events (sse.py, ndjson.py), each event read into a text delta
(deltas.py) and handed to the sink as soon as it is read.

The attempt's one timer (the asyncio timeout `exchange()` opens) is re-armed after every event
to `idle` seconds (the LM's `timeout`), within the call's deadline: a server that stops
sending, or trickles bytes that never make an event, fails within `idle`. Waiting for the
consumer (the sink, when its buffer is full) stops the timer and moves the deadline by as
long: a slow reader is not a slow server, and while it waits no byte is read, so the server
is held back by TCP instead of this process buffering for it.

What went wrong is raised as is (a `faults.StreamFault`, a decoding error, the transport's
error); `exchange()` types it, and `interrupted()` then makes sure an attempt that handed on
any text is never retried: the text is in the error's `partial_text`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, cast

from .. import _decoding, _http
from ..providers.base import Reply
from .deltas import deltas_for
from .faults import BadStream
from .lines import LineTooLong
from .ndjson import NDJSONParser
from .sse import Event, EventTooLarge, SSEParser

if TYPE_CHECKING:
    from ..providers.exchange import Request
    from ..retry import AttemptFailed

__all__ = ["Sink", "StreamReader"]

Sink = Callable[[str], Awaitable[None]]
"""Where a streamed call's text goes, piece by piece; awaiting it is the backpressure."""

_CONTENT_TYPES = {
    "sse": frozenset({"text/event-stream"}),
    "ndjson": frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"}),
}


class StreamReader:
    """Reads one attempt's stream of `request` into `sink`; made on the runtime loop just
    before the attempt is sent, with `left` seconds to the call's deadline."""

    def __init__(
        self, request: Request, sink: Sink, *, idle: float | None, left: float, max_bytes: int
    ) -> None:
        self.deltas = deltas_for(request.provider_name, structured=request.structured)
        self.body = self.deltas.body(request.body)
        self.sink = sink
        self.idle = idle
        self.max_bytes = max_bytes
        self.pieces: list[str] = []  # handed on, in order
        self._deadline = asyncio.get_running_loop().time() + left

    def accepts(self, response: _http.Response) -> bool:
        """Whether `response` is a stream; a server that ignores `stream` answers in one JSON
        body, which is read whole (`exchange()`) and handed on at once (`whole`)."""
        content_type = response.headers.get("content-type", "").partition(";")[0].strip()
        return content_type.lower() in _CONTENT_TYPES[self.deltas.framing]

    async def read(self, response: _http.Response, timer: asyncio.Timeout) -> Reply:
        """The reply, once the stream ended, its text handed on as it came."""
        encodings = _http.header_values(response.headers, "content-encoding")
        decoder = _decoding.BodyDecoder(encodings, self.max_bytes)
        framing = SSEParser() if self.deltas.framing == "sse" else NDJSONParser()
        try:
            # aiter_raw is an async generator: closed at once, however the reading ends.
            raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
            async with contextlib.aclosing(raw) as received:
                async for data in received:
                    decoder.feed(data)
                    for event in framing.feed(decoder.take()):
                        await self._event(event, timer)
                        if self.deltas.done:  # the rest of the body is not waited for
                            return self.deltas.finish("".join(self.pieces))
            rest = decoder.finish()  # CorruptBody if an encoded body was cut short
            for event in [*framing.feed(rest), *framing.end()]:
                await self._event(event, timer)
        except (LineTooLong, EventTooLarge) as exc:
            raise BadStream(str(exc), retryable=False) from None
        return self.deltas.finish("".join(self.pieces))

    async def _event(self, event: Event, timer: asyncio.Timeout) -> None:
        piece = self.deltas.read(event)
        loop = asyncio.get_running_loop()
        if piece:
            timer.reschedule(None)
            paused = loop.time()
            await self.sink(piece)
            self._deadline += loop.time() - paused
            self.pieces.append(piece)
        ends = self._deadline if self.idle is None else min(self._deadline, loop.time() + self.idle)
        timer.reschedule(ends)

    async def whole(self, text: str) -> None:
        """Hand on the text of a reply that came in one body."""
        if text:
            await self.sink(text)
            self.pieces.append(text)

    def interrupted(self, failure: AttemptFailed) -> AttemptFailed:
        """`failure` as the retry loop must see it: billed what the stream reported, and once
        any text was handed on, not retried and carrying that text (`error.partial_text`)."""
        if not failure.usage.total_tokens:
            failure.usage = self.deltas.usage
        if self.pieces:
            failure.retryable = False
            failure.error.partial_text = "".join(self.pieces)
        return failure
