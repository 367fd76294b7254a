"""What can be wrong with a streamed 200, said by the stream's reader and typed at the one
boundary (`providers/exchange.py`), as every other failure of an attempt is."""

from __future__ import annotations

from ..providers.base import ErrorBody

__all__ = ["BadStream", "ErrorEvent", "IgnoredSchema", "StreamFault"]


class StreamFault(Exception):
    """A streamed reply that cannot be used; the message quotes nothing the server sent."""


class BadStream(StreamFault):
    """Not the provider's stream format: data that is not JSON or not shaped as the
    provider's events, a stream that ended before its end, or (not `retryable`: asking again
    would get the same) a line or event past its bound."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ErrorEvent(StreamFault):
    """The provider reported an error inside the stream (Anthropic's `error` event, an
    `error` object in OpenAI's or Ollama's), standing for HTTP `status`."""

    def __init__(self, status: int, info: ErrorBody) -> None:
        super().__init__(f"error event for HTTP {status}")
        self.status = status
        self.info = info


class IgnoredSchema(StreamFault):
    """The server answered a forced tool in prose (as unstreamed, see exchange._reply)."""
