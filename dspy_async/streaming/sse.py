"""Server-sent events (the `text/event-stream` format OpenAI and Anthropic stream in), parsed
incrementally and within bounds.

`field: value` lines build an event and a blank line ends it; `:` starts a comment (a
keep-alive). Lines are bounded by `lines.py`, and the data of one event by `max_event`: a
server that never ends an event gets `EventTooLarge` once it has sent that much. `id` and
`retry` are ignored: a dropped stream is never resumed, since nothing is replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lines import MAX_LINE, LineSplitter

__all__ = ["MAX_EVENT", "Event", "EventTooLarge", "SSEParser"]

MAX_EVENT = 1024 * 1024
"""The most data one event may carry, in bytes, over all its `data:` lines."""

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its type (`event:`, "message" if it names none) and its data lines, joined
    by newlines. NDJSON lines are events of type "message" too."""

    event: str
    data: str


class EventTooLarge(Exception):
    """An event's data went past the bound before the event ended."""


class SSEParser:
    """Feed it the body's bytes as they arrive; get back each event once it is complete."""

    def __init__(self, max_line: int = MAX_LINE, max_event: int = MAX_EVENT) -> None:
        self.max_event = max_event
        self._lines = LineSplitter(max_line, universal=True)
        self._started = False
        self._type = ""
        self._data: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[Event]:
        if not self._started and data:
            self._started = True
            data = data.removeprefix(_BOM)
        events: list[Event] = []
        for line in self._lines.feed(data):
            if not line:
                self._dispatch(events)
            elif line[:1] != b":":
                self._field(line)
        return events

    def end(self) -> list[Event]:
        """Nothing: an event the body ended before its blank line is dropped, as the format says."""
        return []

    def _field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"data":
            # Each data line adds a newline; counted too, so no event of empty lines is free.
            self._size += len(value) + 1
            if self._size > self.max_event:
                raise EventTooLarge(f"an event of the stream carries over {self.max_event} bytes")
            self._data.append(value)
        elif name == b"event":
            self._type = value.decode("utf-8", errors="replace")

    def _dispatch(self, events: list[Event]) -> None:
        if self._data:
            data = b"\n".join(self._data).decode("utf-8", errors="replace")
            events.append(Event(self._type or "message", data))
        self._type = ""
        self._data = []
        self._size = 0
