"""JSON from untrusted text (provider bodies, model output): bounded nesting and size, no NaN.

The standard parser recurses once per nesting level, so a body of 100,000 brackets raises
RecursionError, which is no ValueError and escapes every handler written for bad JSON; it
turns 10 MiB of `[],` into 3.5 million lists (about 250 MB); and it accepts `NaN` and
`Infinity`, which are not JSON. Here nesting deeper than `MAX_DEPTH`, more than
`MAX_CONTAINERS` arrays and objects, and those literals are a `JSONError` (a ValueError),
found by one linear scan before parsing.

`object_spans` is the same scan, for finding objects embedded in prose (see
adapters/parsing.py), and `run_bounded` moves work on big texts off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _forksafe

__all__ = [
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "OFF_LOOP_SIZE",
    "JSONError",
    "Span",
    "loads",
    "object_spans",
    "parse",
    "refusal",
    "run_bounded",
]

MAX_DEPTH = 128
"""Deepest nesting accepted: far beyond any provider body or output schema, far below the
interpreter's recursion limit (about 1,000) that the parser and validators run into."""

MAX_CONTAINERS = 1_000_000
"""Most arrays and objects accepted in one text (each costs about 60 bytes once parsed). A
real body needs 20 bytes or more per container (OpenAI's logprobs are about 40), so no body
under the 10 MiB response cap comes near; 3-byte `[],` padding does."""

OFF_LOOP_SIZE = 64 * 1024
"""Texts at least this long are parsed on a worker thread (`run_bounded`): a 10 MiB body
takes tens to hundreds of milliseconds, which would freeze every other call on the loop."""

T = TypeVar("T")

# A string token (to its closing quote, or to the end of the text if it has none, so that a
# lone quote costs one scan, not one per later quote) or a bracket.
_TOKEN = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z))|([\[{])|([\]}])', re.DOTALL)
_OPENER, _CLOSER = 2, 3  # the groups of _TOKEN matching a bracket
_OPEN_OBJECT = re.compile(r"\{")


class JSONError(ValueError):
    """Text that is valid JSON to the standard parser but refused here, or is not JSON."""


@dataclass(frozen=True, slots=True)
class Span:
    """An object `{...}` in a text: `text[start:end]`, nested `depth` levels (1 for `{}`),
    holding `containers` arrays and objects (itself included). `closed` is False for one
    still open where the scan ended (`end`): at the end of the text, or at a limit."""

    start: int
    end: int
    depth: int
    containers: int
    closed: bool = True

    def refusal(self) -> JSONError | None:
        """Why this object must not be parsed, if it must not."""
        return refusal(self.depth, self.containers)


def _refuse_constant(name: str) -> Any:
    """A `parse_constant` for json.loads: NaN, Infinity and -Infinity are not JSON."""
    raise JSONError(f"{name} is not a JSON value")


def refusal(depth: int, containers: int) -> JSONError | None:
    """The error for JSON nested `depth` deep with `containers` arrays and objects, if it is
    over a limit (a depth past MAX_DEPTH is a lower bound: counting stops there)."""
    if depth > MAX_DEPTH:
        return JSONError(f"JSON nested more than {MAX_DEPTH} levels deep")
    if containers > MAX_CONTAINERS:
        return JSONError(f"JSON with more than {MAX_CONTAINERS:,} arrays and objects")
    return None


def loads(text: str | bytes) -> Any:
    """`json.loads`, refusing what is over the limits, and NaN/Infinity, with JSONError."""
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text), errors="surrogatepass")
    # Counting brackets is C-fast and proves most texts within the limits without a scan.
    if text.count("{") + text.count("[") > MAX_DEPTH:
        refused = refusal(*_measure(text))
        if refused is not None:
            raise refused
    return parse(text)


def parse(text: str) -> Any:
    """`json.loads` for text already measured within the limits; NaN/Infinity refused.

    A big text is parsed with the garbage collector paused: the parser makes only acyclic
    lists and dicts, and the full collections their number triggers midway (each holding the
    GIL, so stalling the event loop) are most of the time spent: 0.29 s instead of 0.06 s
    for 700,000 arrays.
    """
    if len(text) < OFF_LOOP_SIZE:
        return _DECODER.decode(text)
    with _collector_paused():  # on a worker thread: a decoder of its own
        return json.loads(text, parse_constant=_refuse_constant)


# Made once, for the texts parsed on the event loop (json.loads with an argument makes a new
# one each time); a big text's parse, on a worker thread, makes its own.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)

# The collector is paused while any big parse runs (they may overlap, on worker threads) and
# resumed when the last one ends, if it was running when the first began.
_pause_lock = _forksafe.lock()
_pauses = 0
_resume = False


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    global _pauses, _resume
    with _pause_lock:
        if not _pauses:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if not _pauses and _resume:
                gc.enable()


def _after_fork_in_child() -> None:
    # A parse running on another thread at the fork is not in the child: resume for it.
    global _pauses
    if _pauses:
        _pauses = 0
        if _resume:
            gc.enable()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _measure(text: str) -> tuple[int, int]:
    """How deep brackets nest in `text`, and how many open (strings skipped); the scan stops
    as soon as either is over its limit."""
    depth = deepest = containers = 0
    for match in _TOKEN.finditer(text):
        if match.lastindex == _OPENER:
            depth += 1
            containers += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
            if containers > MAX_CONTAINERS:
                break
        elif match.lastindex == _CLOSER:
            depth -= 1
    return deepest, containers


def object_spans(text: str) -> Iterator[Span]:
    """The outermost objects in `text`, in order, found in one linear pass, lazily (the first
    comes as soon as it closes).

    Prose is skipped up to each `{`; inside an object, strings and brackets are tracked so
    that a `}` in a string ends nothing. A closing bracket that matches no open one is
    ignored; one that closes an outer bracket first drops the inner ones left open. An object
    still open at the end of the text comes with `closed=False` (its `end` is the text's), so
    the caller can say what is wrong with it; the first such `{` is then taken for prose once
    (a model may write a stray brace before its JSON) and the scan resumes after it: at most
    two passes. An object found to be past MAX_DEPTH or MAX_CONTAINERS ends the scan there
    (`closed=False`): it is refused, and a reply holding one is not worth reading further.
    """
    pos = 0
    resumed = False
    while (opening := _OPEN_OBJECT.search(text, pos)) is not None:
        stack = ["{"]  # the brackets open, never more than MAX_DEPTH
        open_count = {"{": 1, "[": 0}
        depth = containers = 1  # the deepest this object nests, and its arrays and objects
        for match in _TOKEN.finditer(text, opening.end()):
            group = match.lastindex
            if group == _OPENER:
                containers += 1
                if len(stack) == MAX_DEPTH or containers > MAX_CONTAINERS:
                    depth = max(depth, len(stack) + 1)
                    yield Span(opening.start(), match.end(), depth, containers, closed=False)
                    return
                char = text[match.start()]
                stack.append(char)
                open_count[char] += 1
                depth = max(depth, len(stack))
            elif group == _CLOSER:
                wanted = "{" if text[match.start()] == "}" else "["
                if not open_count[wanted]:
                    continue
                while (popped := stack.pop()) != wanted:
                    open_count[popped] -= 1
                open_count[wanted] -= 1
                if not stack:
                    yield Span(opening.start(), match.end(), depth, containers)
                    pos = match.end()
                    break
        else:
            yield Span(opening.start(), len(text), depth, containers, closed=False)
            if resumed:
                return
            resumed = True
            pos = opening.end()


async def run_bounded(size: int, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)`, on a worker thread if `size` (of the text it works on) is at least
    OFF_LOOP_SIZE, so that parsing a big body does not stall every other call on the loop."""
    if size < OFF_LOOP_SIZE:
        return function(*args)
    return await asyncio.to_thread(function, *args)
