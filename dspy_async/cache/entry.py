"""A cached answer, and its JSON form on disk and in Redis.

JSON, never pickle: a cache file or a Redis key is data that another process (or another user
of a shared directory) wrote, and unpickling it would run whatever code it names. The form is
versioned, and anything that does not decode as this version is a miss, never an error.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from ..providers.base import Reply
from ..records import ToolCall, Usage

__all__ = ["FORMAT", "Entry", "decode"]

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """A provider's reply as the cache keeps it; `expires` is a Unix time, None for never."""

    reply: Reply
    expires: float | None = None

    @classmethod
    def of(cls, reply: Reply, ttl: float | None) -> Entry:
        return cls(reply, None if ttl is None else time.time() + ttl)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now

    def encode(self) -> bytes:
        reply = self.reply
        return json.dumps(
            {
                "v": FORMAT,
                "text": reply.text,
                "usage": [reply.usage.prompt_tokens, reply.usage.completion_tokens],
                "finish_reason": reply.finish_reason,
                "structured": reply.structured,
                "expires": self.expires,
                "tool_calls": [[c.name, dict(c.args), c.id] for c in reply.tool_calls],
            },
            separators=(",", ":"),
        ).encode()


def decode(data: bytes | str) -> Entry | None:
    """The entry `data` encodes, or None if it is not one (another version, or damaged)."""
    try:
        value: Any = json.loads(data)
        usage = value["usage"]
        prompt, completion = usage
        fields = (value["text"], value["finish_reason"], value["structured"], value["expires"])
    except (ValueError, TypeError, KeyError):
        return None
    text, finish_reason, structured, expires = fields
    calls = _tool_calls(value.get("tool_calls", []))
    if (
        value.get("v") != FORMAT
        or not isinstance(text, str)
        or not all(_count(n) for n in (prompt, completion))
        or not isinstance(finish_reason, str | None)
        or not isinstance(structured, bool | None)
        or not (expires is None or _time(expires))
        or calls is None
    ):
        return None
    reply = Reply(text, Usage(prompt, completion), finish_reason, structured, tool_calls=calls)
    return Entry(reply, expires)


def _tool_calls(value: object) -> tuple[ToolCall, ...] | None:
    """The tool calls of an entry (none in one written before they were kept), or None."""
    if not isinstance(value, list):
        return None
    calls = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3):
            return None
        name, args, call_id = item
        if not (
            isinstance(name, str) and isinstance(args, dict) and isinstance(call_id, str | None)
        ):
            return None
        calls.append(ToolCall(name, args, call_id))
    return tuple(calls)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
