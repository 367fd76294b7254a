"""Each provider's streamed reply: the request body that asks for a stream, and the reading of
its events into text deltas, token usage and why generation stopped.

    openai     SSE `chat.completion.chunk`s: `choices[0].delta.content`, the finish reason on
               the last choice, usage in a last chunk of its own (asked for with
               `stream_options.include_usage`), then `data: [DONE]`
    anthropic  SSE events: `message_start` (input usage), `content_block_start`,
               `content_block_delta` (`text_delta`, or `input_json_delta` for the forced
               tool of a structured call), `message_delta` (stop reason, output usage),
               `message_stop`; an `error` event for a failure mid-stream
    ollama     NDJSON: `message.content` per line, the counts on the `done` line

A reader is made per attempt; `read` returns the text an event adds ("" for none) and raises
a `faults.StreamFault` for an event that cannot be used; `finish` builds the Reply once the
stream ended, from the text handed on. Like the provider modules, this does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Protocol

from .. import _json
from ..providers import anthropic, ollama, openai
from ..providers.base import ErrorBody, Reply, finish_reason_from, message_from, text_or_none
from ..records import Usage
from .faults import BadStream, ErrorEvent, IgnoredSchema
from .sse import Event

__all__ = ["Deltas", "deltas_for"]

Framing = Literal["sse", "ndjson"]

# What each Anthropic error type stands for, as a status (so that it is typed and retried
# as the same error would be before the stream began).
_ANTHROPIC_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class Deltas(Protocol):
    """One attempt's stream of one provider, read event by event."""

    framing: ClassVar[Framing]
    done: bool
    usage: Usage

    def body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The request body `body`, asking for a stream."""
        ...

    def read(self, event: Event) -> str:
        """The text `event` adds to the reply; StreamFault if it cannot be used."""
        ...

    def finish(self, text: str) -> Reply:
        """The reply whose text was `text`, once the body ended; BadStream if it ended early."""
        ...


def deltas_for(provider: str, *, structured: bool) -> Deltas:
    """A reader for one streamed attempt to `provider`; `structured` if the request carries
    the native structured-output parameter."""
    if provider == "anthropic":
        return AnthropicDeltas(structured=structured)
    if provider == "ollama":
        return OllamaDeltas()
    return OpenAIDeltas()


def _payload(event: Event) -> dict[str, Any]:
    try:
        value = _json.loads(event.data)
    except ValueError as exc:
        raise BadStream(f"an event's data is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BadStream(f"an event's data is a JSON {type(value).__name__}, not an object")
    return value


def _shape(what: str, exc: Exception) -> BadStream:
    return BadStream(f"{what} is not shaped as expected ({type(exc).__name__}: {exc})")


class OpenAIDeltas:
    framing: ClassVar[Framing] = "sse"

    def __init__(self) -> None:
        self.done = False
        self.usage = Usage()
        self._finish_reason: str | None = None
        self._ended = False  # a choice came with its finish reason
        self._refusal: list[str] = []
        self._id: str | None = None
        self._model: str | None = None

    def body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, Mapping) else {}
        return {**body, "stream": True, "stream_options": {**options, "include_usage": True}}

    def read(self, event: Event) -> str:
        if event.data.strip() == "[DONE]":
            self.done = True
            return ""
        chunk = _payload(event)
        if chunk.get("error") is not None:
            info = openai.parse_error(chunk)
            status = 429 if info.code == "rate_limit_exceeded" else 500
            raise ErrorEvent(status, info)
        try:
            return self._chunk(chunk)
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            raise _shape("a chat.completion.chunk", exc) from None

    def _chunk(self, chunk: dict[str, Any]) -> str:
        self._id = self._id or text_or_none(chunk.get("id"))
        self._model = self._model or text_or_none(chunk.get("model"))
        if chunk.get("usage") is not None:
            self.usage = openai.parse_usage(chunk)
        text = ""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is Predict's business: each call asks for one
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError(f"delta content is a {type(content).__name__}, not text")
            text += content or ""
            refusal = delta.get("refusal")
            if isinstance(refusal, str):
                self._refusal.append(refusal)
            reason = finish_reason_from(choice.get("finish_reason"))
            if reason is not None:
                self._finish_reason, self._ended = reason, True
        return text

    def finish(self, text: str) -> Reply:
        if not (self.done or self._ended):
            raise BadStream("the stream ended before its last chunk ([DONE])")
        if not text and self._refusal:
            raise BadStream(f"model refused: {''.join(self._refusal)}")
        return Reply(text, self.usage, self._finish_reason, None, self._id, self._model)


class AnthropicDeltas:
    framing: ClassVar[Framing] = "sse"

    def __init__(self, *, structured: bool) -> None:
        self.done = False
        self.usage = Usage()
        self._structured = structured
        self._counts: dict[str, Any] = {}  # message_start's usage, updated by message_delta
        self._text_blocks: set[int] = set()
        self._tool: int | None = None  # the index of the first tool_use block
        self._tool_input: Any = None  # its input as content_block_start gave it
        self._tool_text = False  # some of its input JSON was streamed
        self._prose: list[str] = []  # text blocks of a structured call, kept back
        self._stop_reason: str | None = None
        self._id: str | None = None
        self._model: str | None = None

    def body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {**body, "stream": True}

    def read(self, event: Event) -> str:
        payload = _payload(event)
        kind = payload.get("type", event.event)
        if kind == "error":
            info = anthropic.parse_error(payload)
            raise ErrorEvent(_ANTHROPIC_STATUSES.get(info.code or "", 500), info)
        try:
            return self._event(kind, payload)
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            raise _shape(f"a {kind} event", exc) from None

    def _event(self, kind: object, payload: dict[str, Any]) -> str:
        if kind == "message_start":
            message = payload["message"]
            self._id = text_or_none(message.get("id"))
            self._model = text_or_none(message.get("model"))
            self._count(message.get("usage"))
        elif kind == "content_block_start":
            index, block = payload["index"], payload["content_block"]
            if block["type"] == "text":
                self._text_blocks.add(index)
            elif block["type"] == "tool_use" and self._tool is None:
                self._tool, self._tool_input = index, block.get("input")
        elif kind == "content_block_delta":
            return self._delta(payload["index"], payload["delta"])
        elif kind == "content_block_stop":
            if payload["index"] == self._tool and not self._tool_text:
                # A tool whose input came whole with its start (or is empty): handed on now.
                self._tool_text = True
                return json.dumps(self._tool_input if self._tool_input is not None else {})
        elif kind == "message_delta":
            self._stop_reason = finish_reason_from(payload["delta"].get("stop_reason"))
            self._count(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        return ""  # ping, and event types added later

    def _delta(self, index: object, delta: Mapping[str, Any]) -> str:
        kind = delta["type"]
        if kind == "input_json_delta" and index == self._tool:
            piece = delta["partial_json"]
            if not isinstance(piece, str):
                raise TypeError("partial_json is not text")
            self._tool_text = self._tool_text or bool(piece)
            return piece
        if kind == "text_delta" and index in self._text_blocks:
            text = delta["text"]
            if not isinstance(text, str):
                raise TypeError("text is not text")
            if self._structured:  # prose where a tool was forced: see finish()
                self._prose.append(text)
                return ""
            return text
        return ""  # thinking, signatures, other blocks' deltas

    def _count(self, counts: object) -> None:
        if isinstance(counts, Mapping):
            self._counts.update(counts)
            self.usage = anthropic.parse_usage({"usage": self._counts})
        elif counts is not None:
            raise TypeError(f"usage must be an object or null, not {type(counts).__name__}")

    def finish(self, text: str) -> Reply:
        if not self.done:
            raise BadStream("the stream ended before its message_stop event")
        if self._structured and self._tool is None:
            raise IgnoredSchema("the server answered the forced tool in prose")
        structured = self._tool is not None
        return Reply(text, self.usage, self._stop_reason, structured, self._id, self._model)


class OllamaDeltas:
    framing: ClassVar[Framing] = "ndjson"

    def __init__(self) -> None:
        self.done = False
        self.usage = Usage()
        self._done_reason: str | None = None
        self._model: str | None = None

    def body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {**body, "stream": True}

    def read(self, event: Event) -> str:
        line = _payload(event)
        if line.get("error") is not None:
            raise ErrorEvent(500, ErrorBody(message_from(line.get("error"))))
        try:
            self._model = self._model or text_or_none(line.get("model"))
            content = (line.get("message") or {}).get("content") or ""
            if not isinstance(content, str):
                raise TypeError("message content is not text")
            if line.get("done"):
                self.done = True
                self.usage = ollama.parse_usage(line)
                self._done_reason = finish_reason_from(line.get("done_reason"))
            return content
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            raise _shape("a chat line", exc) from None

    def finish(self, text: str) -> Reply:
        if not self.done:
            raise BadStream("the stream ended before its done line")
        return Reply(text, self.usage, self._done_reason, None, None, self._model)
