"""Newline-delimited JSON (Ollama streams its chat replies so): one JSON value per line,
handed on as the lines complete, each bounded by `lines.py`. Blank lines are skipped."""

from __future__ import annotations

from .lines import MAX_LINE, LineSplitter
from .sse import Event

__all__ = ["NDJSONParser"]


class NDJSONParser:
    """Feed it the body's bytes as they arrive; get back each complete line as an Event."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._lines = LineSplitter(max_line, universal=False)

    def feed(self, data: bytes) -> list[Event]:
        return _events(self._lines.feed(data))

    def end(self) -> list[Event]:
        """A last line the body ended without a newline."""
        return _events([self._lines.rest()])


def _events(lines: list[bytes]) -> list[Event]:
    return [
        Event("message", line.decode("utf-8", errors="replace")) for line in lines if line.strip()
    ]
