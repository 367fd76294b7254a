"""The Send stage, innermost: announce the attempt, then make the one exchange with the
provider within the attempt's timeout (the LM's `timeout`, cut to what is left of the call's
`max_elapsed`). A streamed call's Send hands the reply's text to its sink as it arrives, and
its `timeout` bounds each wait for the next event instead (streaming/reader.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from .. import events
from ..providers.base import Reply
from ..providers.exchange import exchange
from ..retry import AttemptState
from ..streaming.reader import Sink, StreamReader
from . import Call

__all__ = ["Send"]

logger = logging.getLogger("dspy_async")


class Send:
    """Send one attempt; `timeout` (None: none) bounds it, and so does the call's deadline."""

    def __init__(
        self, timeout: float | None, max_response_bytes: int, sink: Sink | None = None
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.sink = sink

    def streaming(self, sink: Sink) -> Send:
        """This Send for one streamed call, whose text goes to `sink`."""
        return Send(self.timeout, self.max_response_bytes, sink)

    def __call__(self, call: Call, attempt: AttemptState) -> Awaitable[Reply]:
        # A plain function handing back exchange()'s coroutine: no frame of its own per attempt.
        if events.subscribed():
            events.emit(events.RequestEvent(call.id, call.provider, call.model, attempt.number))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s/%s: sending attempt %d", call.provider, call.model, attempt.number)
        left = attempt.time_left()
        timeout = left if self.timeout is None else min(self.timeout, left)
        stream = None
        if self.sink is not None:
            stream = StreamReader(
                call.request,
                self.sink,
                idle=self.timeout,
                left=left,
                max_bytes=self.max_response_bytes,
            )
        return exchange(
            call.sender,
            call.request,
            timeout=timeout,
            max_bytes=self.max_response_bytes,
            stream=stream,
        )
