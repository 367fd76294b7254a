"""Streamed answers: a simulated 200 body re-cut as the provider's stream of events.

The simulator builds every answer as the provider's whole JSON body (``_wire.py``), then, for
a request that asked for a stream, sends it as these frames: OpenAI's ``chat.completion.chunk``
server-sent events (with a usage chunk when ``stream_options.include_usage``, then ``[DONE]``),
Anthropic's event sequence (``message_start`` ... ``message_stop``) or Ollama's NDJSON lines.
The text goes out in word-sized pieces, each a *chunk*: the frames that faults count
(``after_chunks``) and that ``chunk_delay`` spaces out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Frame", "Frames", "pieces", "stream_frames", "wants_stream"]

_PIECE = re.compile(r"\s*\S+|\s+$")


@dataclass(frozen=True, slots=True)
class Frame:
    """Bytes to send; `chunk` if they carry a piece of the answer's text."""

    data: bytes
    chunk: bool = False


@dataclass(frozen=True, slots=True)
class Frames:
    content_type: str
    frames: tuple[Frame, ...]

    @property
    def chunks(self) -> int:
        return sum(frame.chunk for frame in self.frames)


def wants_stream(provider: str, body: object) -> bool:
    """Whether a request asks for a streamed answer (Ollama streams unless told not to)."""
    if not isinstance(body, Mapping):
        return False
    if provider == "ollama":
        return body.get("stream", True) is not False
    return body.get("stream") is True


def pieces(text: str) -> list[str]:
    """`text` cut into word-sized pieces, each with the whitespace before it."""
    return _PIECE.findall(text)


def stream_frames(provider: str, request: Mapping[str, Any], body: Mapping[str, Any]) -> Frames:
    """The stream that carries the 200 `body` answering `request`."""
    if provider == "anthropic":
        return Frames("text/event-stream", tuple(_anthropic(body)))
    if provider == "ollama":
        return Frames("application/x-ndjson", tuple(_ollama(body)))
    options = request.get("stream_options")
    usage = isinstance(options, Mapping) and options.get("include_usage") is True
    return Frames("text/event-stream", tuple(_openai(body, include_usage=usage)))


def _sse(payload: object, event: str | None = None) -> bytes:
    named = f"event: {event}\n" if event else ""
    return f"{named}data: {json.dumps(payload)}\n\n".encode()


def _openai(body: Mapping[str, Any], *, include_usage: bool) -> Iterator[Frame]:
    choice = body["choices"][0]
    message = choice["message"]
    base = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None  # as OpenAI sends it, on every chunk but the last

    def chunk(delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        entry = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [entry]})

    yield Frame(chunk({"role": "assistant", "content": "", "refusal": None}))
    for piece in pieces(message.get("content") or ""):
        yield Frame(chunk({"content": piece}), chunk=True)
    for index, call in enumerate(message.get("tool_calls") or ()):
        yield Frame(chunk({"tool_calls": [{"index": index, **call}]}), chunk=True)
    yield Frame(chunk({}, choice["finish_reason"]))
    if include_usage:
        yield Frame(_sse({**base, "choices": [], "usage": body["usage"]}))
    yield Frame(b"data: [DONE]\n\n")


def _anthropic(body: Mapping[str, Any]) -> Iterator[Frame]:
    usage = dict(body["usage"])
    start = {**body, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield Frame(_sse({"type": "message_start", "message": start}, "message_start"))
    for index, block in enumerate(body["content"]):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            kind, key, text = "input_json_delta", "partial_json", json.dumps(block["input"])
        else:
            opened = {**block, "text": ""}
            kind, key, text = "text_delta", "text", block.get("text", "")
        event = {"type": "content_block_start", "index": index, "content_block": opened}
        yield Frame(_sse(event, "content_block_start"))
        if index == 0:
            yield Frame(_sse({"type": "ping"}, "ping"))
        for piece in pieces(text):
            delta = {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": kind, key: piece},
            }
            yield Frame(_sse(delta, "content_block_delta"), chunk=True)
        yield Frame(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    ending = {"stop_reason": body["stop_reason"], "stop_sequence": body.get("stop_sequence")}
    counts = {"output_tokens": usage["output_tokens"]}
    yield Frame(_sse({"type": "message_delta", "delta": ending, "usage": counts}, "message_delta"))
    yield Frame(_sse({"type": "message_stop"}, "message_stop"))


def _ollama(body: Mapping[str, Any]) -> Iterator[Frame]:
    message = body["message"]
    head = {"model": body["model"], "created_at": body["created_at"]}
    for piece in pieces(message.get("content") or ""):
        line = {**head, "message": {"role": "assistant", "content": piece}, "done": False}
        yield Frame(json.dumps(line).encode() + b"\n", chunk=True)
    final = {**body, "message": {**message, "content": ""}}
    yield Frame(json.dumps(final).encode() + b"\n")
