"""Lines of a streamed body, split as the bytes arrive, with a bound on how long one may get.

Both wire formats of a streamed reply are line-based (server-sent events, NDJSON). A hostile
server can send a line that never ends; past `max_line` bytes `feed` raises `LineTooLong`,
having held no more than that. Each feed costs time linear in what it was given: pieces of an
unfinished line are kept, not searched again.
"""

from __future__ import annotations

import re

__all__ = ["MAX_LINE", "LineSplitter", "LineTooLong"]

MAX_LINE = 1024 * 1024
"""The longest line accepted, in bytes: far beyond any provider's event (a few KB with
logprobs), far below the response cap."""

_ANY_EOL = re.compile(rb"\r\n|\r|\n")  # server-sent events end lines in CRLF, LF or CR
_LF = re.compile(rb"\n")


class LineTooLong(Exception):
    """A line went past the bound; reading stopped there."""


class LineSplitter:
    """Feed it bytes, get back the complete lines, without their line ends.

    With `universal` (server-sent events), CR alone also ends a line, and a CRLF split across
    two feeds still counts once; else only LF does, and a CR before it is dropped.
    """

    def __init__(self, max_line: int = MAX_LINE, *, universal: bool) -> None:
        self.max_line = max_line
        self._eol = _ANY_EOL if universal else _LF
        self._universal = universal
        self._pending: list[bytes] = []  # the unfinished line, in pieces
        self._pending_size = 0
        self._after_cr = False  # the last feed ended in CR: a LF first in the next is its pair

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]
        self._after_cr = self._universal and data[-1:] == b"\r"
        lines: list[bytes] = []
        start = 0
        for end in self._eol.finditer(data):
            piece = data[start : end.start()]
            start = end.end()
            if self._pending:
                self._check(self._pending_size + len(piece))
                piece = b"".join([*self._pending, piece])
                self._pending.clear()
                self._pending_size = 0
            else:
                self._check(len(piece))
            if not self._universal and piece[-1:] == b"\r":
                piece = piece[:-1]
            lines.append(piece)
        rest = data[start:]
        if rest:
            self._check(self._pending_size + len(rest))
            self._pending.append(rest)
            self._pending_size += len(rest)
        return lines

    def rest(self) -> bytes:
        """What is left after the last line end (a last line the body did not end)."""
        rest = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        return rest

    def _check(self, size: int) -> None:
        if size > self.max_line:
            raise LineTooLong(f"a line of the stream is longer than {self.max_line} bytes")
