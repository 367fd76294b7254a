"""A structured reply's output fields, followed as its text streams in.

The reply is one JSON object (native structured outputs), or holds one (the prompt-JSON
strategy: maybe fenced, maybe after some prose). `_Scanner` follows that object's top level
as the text arrives: which key's value is being written, and that value's text, a string's
decoded (escapes undone), any other value's as its JSON text. It scans with regular
expressions, so a reply costs time linear in its length, whatever the size of its deltas,
and it keeps no more than an unfinished escape between deltas. On anything that is not JSON
it stops: the final reply is validated as usual, and only that decides.

`StreamChunk.partial` is the other view, the whole object parsed so far (pydantic-core's
partial JSON parsing), computed only when asked for.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pydantic_core

__all__ = ["FieldStream", "StreamChunk"]

_WHITESPACE = re.compile(r"[ \t\r\n]*")
_STRING_RUN = re.compile(r'[^"\\]+')
_SCALAR_RUN = re.compile(r"[^,}\]\s]+")
_NESTED_MARK = re.compile(r'[\[\]{}"]')
_STRING_MARK = re.compile(r'["\\]')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_REPLACEMENT = "\ufffd"
MAX_KEY = 1024
"""A key longer than this is no output field's: the scanner stops following the object."""

# The scanner's states, in the order an object's parts come.
_SEEK, _KEY_NEXT, _KEY, _COLON, _VALUE, _STRING, _NESTED, _SCALAR, _AFTER, _DONE = range(10)


class _ReplyText:
    """The text of one reply so far, shared by its chunks for `StreamChunk.partial`."""

    __slots__ = ("pieces", "size", "start")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.size = 0
        self.start: int | None = None  # where the object begins

    def add(self, piece: str) -> None:
        self.pieces.append(piece)
        self.size += len(piece)

    def parse(self, upto: int) -> dict[str, Any]:
        if self.start is None:
            return {}
        text = "".join(self.pieces)[self.start : upto]
        try:
            value = pydantic_core.from_json(text, allow_partial="trailing-strings")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of one output field's value, as the model writes it.

    `text` continues the value of `field`: for a string value its text (escapes undone), for
    any other value its JSON text (`42`, `["a", `). `reply` counts the step's replies: if a
    reply fails validation, the step asks again and the new reply's chunks come with
    `reply=2` (what was shown of the first should be dropped). `partial` is the output
    object parsed so far.
    """

    field: str
    text: str
    reply: int = 1
    _source: _ReplyText | None = dataclasses.field(default=None, repr=False, compare=False)
    _upto: int = dataclasses.field(default=0, repr=False, compare=False)

    @property
    def partial(self) -> dict[str, Any]:
        """The reply's object as parsed up to this chunk, not validated: unfinished strings,
        lists and objects as far as they go, {} while nothing parses. Each access parses the
        reply so far, so it costs time linear in its length."""
        return {} if self._source is None else self._source.parse(self._upto)


Put = Callable[[StreamChunk], Awaitable[None]]


class FieldStream:
    """Turns a step's streamed replies into StreamChunks of its output fields `names`,
    handed to `put`; `reply()` gives the sink of the step's next reply."""

    def __init__(self, names: Iterable[str], put: Put) -> None:
        self.names = frozenset(names)
        self.put = put
        self.replies = 0

    def reply(self) -> Callable[[str], Awaitable[None]]:
        self.replies += 1
        number = self.replies
        scanner = _Scanner(self.names)
        text = _ReplyText()

        async def sink(delta: str) -> None:
            text.add(delta)
            pieces = scanner.feed(delta)
            text.start = scanner.start
            for name, piece in pieces:
                await self.put(StreamChunk(name, piece, number, text, text.size))

        return sink


class _Scanner:
    """Follows the top level of the first JSON object in a text fed piece by piece."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.state = _SEEK
        self.start: int | None = None  # where the object begins in the text
        self._fed = 0
        self._hold = ""  # an escape (or `\uD83D` awaiting its pair) not complete yet
        self._key: list[str] = []
        self._key_size = 0
        self._field: str | None = None  # the output field whose value is being read
        self._depth = 0
        self._in_string = False

    def feed(self, delta: str) -> list[tuple[str, str]]:
        """The (field, text) pieces `delta` adds, consecutive ones of a field joined."""
        text, base = self._hold + delta, self._fed - len(self._hold)
        self._fed += len(delta)
        self._hold = ""
        out: list[tuple[str, str]] = []
        at, end = 0, len(text)
        while at < end and self.state != _DONE:
            state = self.state
            if state == _SEEK:
                found = text.find("{", at)
                if found < 0:
                    break
                self.start, self.state, at = base + found, _KEY_NEXT, found + 1
            elif state == _KEY:
                at = self._read_key(text, at)
            elif state == _STRING:
                at = self._read_string(text, at, out)
            elif state == _NESTED:
                at = self._read_nested(text, at, out)
            elif state == _SCALAR:
                run = _SCALAR_RUN.match(text, at)
                if run is not None:
                    self._emit(out, run.group())
                    at = run.end()
                if at < end:
                    self.state = _AFTER
            else:
                at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
                if at < end:
                    at = self._punctuation(text[at], at)
        return _joined(out)

    def _punctuation(self, char: str, at: int) -> int:
        """The next character between values (after whitespace): a state change."""
        state, self.state = self.state, _DONE  # anything unexpected: stop following
        if state == _KEY_NEXT and char == '"':
            self.state, self._key, self._key_size = _KEY, [], 0
        elif state == _COLON and char == ":":
            self.state = _VALUE
        elif state == _VALUE:
            if char == '"':
                self.state = _STRING
            elif char in "{[":
                self.state, self._depth, self._in_string = _NESTED, 0, False
                return at  # the bracket is part of the value's text
            else:
                self.state = _SCALAR
                return at
        elif state == _AFTER and char == ",":
            self.state = _KEY_NEXT
        return at + 1

    def _read_key(self, text: str, at: int) -> int:
        end = len(text)
        while at < end:
            run = _STRING_RUN.match(text, at)
            if run is not None:
                self._key.append(run.group())
                self._key_size += run.end() - at
                at = run.end()
            elif text[at] == '"':
                raw = "".join(self._key)
                try:
                    key = json.loads(f'"{raw}"')
                except ValueError:
                    key = raw
                self._field = key if key in self.names else None
                self.state = _COLON
                return at + 1
            elif at + 1 < end:  # a backslash and what it escapes, undone at the end
                self._key.append(text[at : at + 2])
                self._key_size += 2
                at += 2
            else:
                self._hold = text[at:]
                return end
            if self._key_size > MAX_KEY:
                self.state = _DONE
                return end
        return at

    def _read_string(self, text: str, at: int, out: list[tuple[str, str]]) -> int:
        end = len(text)
        while at < end:
            run = _STRING_RUN.match(text, at)
            if run is not None:
                self._emit(out, run.group())
                at = run.end()
            elif text[at] == '"':
                self.state = _AFTER
                return at + 1
            else:
                decoded, used = _escape(text, at)
                if not used:
                    self._hold = text[at:]
                    return end
                self._emit(out, decoded)
                at += used
        return at

    def _read_nested(self, text: str, at: int, out: list[tuple[str, str]]) -> int:
        begin, end = at, len(text)
        while at < end:
            mark = (_STRING_MARK if self._in_string else _NESTED_MARK).search(text, at)
            if mark is None:
                at = end
                break
            found, char = mark.start(), mark.group()
            at = found + 1
            if char == "\\":
                if at == end:  # what it escapes comes with the next delta
                    self._emit(out, text[begin:found])
                    self._hold = "\\"
                    return end
                at += 1
            elif char == '"':
                self._in_string = not self._in_string
            elif char in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self.state = _AFTER
                    break
        self._emit(out, text[begin:at])
        return at

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if self._field is not None and text:
            out.append((self._field, text))


def _escape(text: str, at: int) -> tuple[str, int]:
    """The escape at `text[at]` (a backslash) decoded, and its length; 0 if incomplete."""
    if at + 1 >= len(text):
        return "", 0
    kind = text[at + 1]
    if kind != "u":
        return _ESCAPES.get(kind, kind), 2
    if at + 6 > len(text):
        return "", 0
    code = _hex(text[at + 2 : at + 6])
    if code is None or 0xDC00 <= code < 0xE000:
        return _REPLACEMENT, 6
    if code < 0xD800 or code >= 0xDC00:
        return chr(code), 6
    pair = text[at + 6 : at + 12]  # a high surrogate: its low half should follow
    if len(pair) < 6 and "\\u".startswith(pair[:2]):
        return "", 0
    low = _hex(pair[2:6]) if pair.startswith("\\u") else None
    if low is None or not 0xDC00 <= low < 0xE000:
        return _REPLACEMENT, 6
    return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12


def _hex(digits: str) -> int | None:
    if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    return int(digits, 16)


def _joined(pieces: list[tuple[str, str]]) -> list[tuple[str, str]]:
    joined: list[tuple[str, str]] = []
    for name, text in pieces:
        if joined and joined[-1][0] == name:
            joined[-1] = (name, joined[-1][1] + text)
        else:
            joined.append((name, text))
    return joined
