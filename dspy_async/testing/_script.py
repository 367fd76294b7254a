"""What the simulator has been told to do, and what it has seen: scripted answers, faults, records.

Everything here is shared between the test's thread (which scripts and inspects) and the
simulator's loop thread (which consumes and records), so one lock guards it all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from .. import _forksafe

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "Script",
    "ScriptedAnswer",
    "peak_in_flight",
]

FaultKind = Literal[
    "status",
    "drop",
    "hang",
    "truncate",
    "malformed",
    "invalid_output",
    "context_window",
    "unsupported_param",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the simulator saw it. API keys in ``headers`` are redacted.

    ``match_attempt`` is 1 for the first request with a given path and message text, 2 for
    the next identical one (a retry), and so on. ``outcome`` is ``"pending"`` while the
    request is in flight, then ``"ok"``, a fault kind, ``"unauthorized"`` or
    ``"bad_request"``; ``status`` is the HTTP status sent (None if none was).
    ``prompt_tokens`` and ``completion_tokens`` are what the simulated provider billed: the
    counts its 200 body reported (an ``invalid_output`` or ``truncate`` reply included), zero
    for every other reply. A streamed answer's ``chunks_sent`` counts the pieces of text sent,
    and ``first_chunk_at`` (``time.monotonic()``) is when the first went out; a client that
    left mid-stream leaves the outcome ``"disconnected"``, ``finished`` when the server saw it.
    """

    path: str
    provider: str
    arrived: float  # time.monotonic()
    body: Any
    headers: Mapping[str, str]
    text: str
    match_attempt: int
    finished: float | None = None
    outcome: str = "pending"
    status: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks_sent: int = 0
    first_chunk_at: float | None = None


def peak_in_flight(requests: Iterable[RecordedRequest]) -> int:
    """The most requests the server held at one moment; one still pending counts as in flight
    to the end. A request that finished as another arrived does not overlap it."""
    edges = sorted(
        [(r.arrived, 1) for r in requests]
        + [(math.inf if r.finished is None else r.finished, -1) for r in requests]
    )
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


@dataclass(slots=True)
class ScriptedAnswer:
    """A ``respond()`` rule."""

    match: str | None
    output: str | dict[str, Any]
    latency: float | None
    times: int | None  # None: forever
    tool_calls: tuple[Mapping[str, Any], ...] = ()  # {"name", "args"} each

    def matches(self, text: str) -> bool:
        return self.times != 0 and (self.match is None or self.match in text)


@dataclass(slots=True)
class Fault:
    """A ``fault()`` rule."""

    kind: FaultKind
    match: str | None
    times: int | None  # None: forever
    status: int = 503
    message: str | None = None
    headers: Mapping[str, str] | None = None
    after_chunks: int | None = None  # drop, hang: this far into a streamed answer

    def matches(self, text: str) -> bool:
        return self.times != 0 and (self.match is None or self.match in text)


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased; credential values replaced by ``***``."""
    redacted = {}
    for name, value in headers.items():
        name = name.lower()
        if name in _SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] + " " if " " in value else ""
            value = scheme + "***"
        redacted[name] = value
    return redacted


def _consume(rule: ScriptedAnswer | Fault) -> None:
    if rule.times is not None:
        rule.times -= 1


class Script:
    """Thread-safe store of answers, faults, attempt counters and request records."""

    def __init__(self) -> None:
        self._lock = _forksafe.lock()
        self._changed = _forksafe.condition(self._lock)
        self._answers: list[ScriptedAnswer] = []
        self._faults: list[Fault] = []
        self._records: list[RecordedRequest] = []
        self._index: dict[int, int] = {}  # id(record in flight) -> its place in _records
        self._attempts: dict[tuple[str, str], int] = {}

    def add_answer(self, answer: ScriptedAnswer) -> None:
        with self._lock:
            self._answers.append(answer)

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def reset(self) -> None:
        with self._lock:
            self._answers.clear()
            self._faults.clear()
            self._records.clear()
            self._index.clear()
            self._attempts.clear()

    def arrive(
        self, path: str, provider: str, body: Any, headers: Mapping[str, str], text: str
    ) -> RecordedRequest:
        """Record a request's arrival and number its attempt."""
        with self._lock:
            key = (path, text)
            attempt = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempt
            record = RecordedRequest(
                path=path,
                provider=provider,
                arrived=time.monotonic(),
                body=body,
                headers=redact(headers),
                text=text,
                match_attempt=attempt,
            )
            self._index[id(record)] = len(self._records)
            self._records.append(record)
            self._changed.notify_all()
            return record

    def finish(
        self,
        record: RecordedRequest,
        outcome: str,
        status: int | None,
        billed: tuple[int, int] = (0, 0),
        chunks: tuple[int, float | None] = (0, None),
    ) -> None:
        """Replace ``record`` (if not reset meanwhile) by its finished version; ``billed`` is
        the prompt and completion tokens its reply reported, ``chunks`` how many pieces of a
        streamed answer were sent and when the first was."""
        with self._lock:
            index = self._index.pop(id(record), None)
            if index is not None and self._records[index] is record:
                now = time.monotonic()
                prompt, completion = billed
                self._records[index] = replace(
                    record,
                    finished=now,
                    outcome=outcome,
                    status=status,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    chunks_sent=chunks[0],
                    first_chunk_at=chunks[1],
                )
            self._changed.notify_all()

    def choose(self, text: str) -> tuple[Fault | None, ScriptedAnswer | None]:
        """Consume the first live fault matching ``text``, else the first matching answer.

        The answer matching ``text`` is returned (and consumed when no fault was taken) so
        that its latency applies either way.
        """
        with self._lock:
            fault = next((f for f in self._faults if f.matches(text)), None)
            answer = next((a for a in self._answers if a.matches(text)), None)
            if fault is not None:
                _consume(fault)
            elif answer is not None:
                _consume(answer)
            return fault, answer

    def records(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def wait_for(self, count: int, timeout: float, finished: bool) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (and, if ``finished``, all of them finished)."""

        def ready() -> bool:
            if len(self._records) < count:
                return False
            return not finished or all(r.finished is not None for r in self._records)

        with self._changed:
            if not self._changed.wait_for(ready, timeout):
                raise TimeoutError(
                    f"expected {count} request(s), the simulator has {len(self._records)}"
                )
            return list(self._records)
