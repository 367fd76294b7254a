"""Reading the rate-limit headers providers send with every response.

OpenAI sends `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the reset as a Go
duration (`6m0s`, `1s`, `20ms`); Anthropic sends `anthropic-ratelimit-{requests,tokens,
input-tokens,output-tokens}-{limit,remaining,reset}`, the reset as an RFC 3339 time. Both
describe a bucket that refills continuously: `remaining` of `limit` are left now, and it is
full again after `reset`. Values that make no sense (a `-1` or `0` limit, as some Azure
endpoints send, a negative count, text that is not a number) are ignored, never guessed at.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Observation", "observe", "parse_duration", "select"]

# The response headers the rate-limit budget and the retry policy read; the rest are dropped.
_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")

_OPENAI = {"requests": "requests", "tokens": "tokens"}
_ANTHROPIC = {
    "requests": "requests",
    "tokens": "tokens",
    "input-tokens": "input_tokens",
    "output-tokens": "output_tokens",
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True, slots=True)
class Observation:
    """What one response said about one dimension of the account's budget (`requests`,
    `tokens`, ...): its limit, what is left now, and the seconds until it is full (None
    where the response did not say, or said nonsense)."""

    limit: float
    remaining: float | None = None
    reset: float | None = None


def select(headers: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit and retry-after headers of a response, lower-cased, as a plain dict."""
    return {
        name.lower(): value for name, value in headers.items() if name.lower().startswith(_PREFIXES)
    }


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration (`6m0s`, `1h2m3.5s`, `20ms`) or a plain number of seconds."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        seconds = float(text)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _rfc3339_from_now(text: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # a time without an offset is ambiguous: not what Anthropic sends
    return max(0.0, when.timestamp() - now)


def _count(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def observe(headers: Mapping[str, str], *, now: float | None = None) -> dict[str, Observation]:
    """The budget dimensions a response's headers describe (keys as `select` returns them).

    `now` is the Unix time Anthropic's reset times are measured from (default: the system's).
    Anthropic's `tokens` figures are the tighter of its input and output limits, so where the
    response gives those two they are used instead of it.
    """
    found: dict[str, Observation] = {}
    for name, dimension in _OPENAI.items():
        seen = _dimension(
            headers.get(f"x-ratelimit-limit-{name}"),
            headers.get(f"x-ratelimit-remaining-{name}"),
            headers.get(f"x-ratelimit-reset-{name}"),
            parse_duration,
        )
        if seen is not None:
            found[dimension] = seen
    unix_now = time.time() if now is None else now
    for name, dimension in _ANTHROPIC.items():
        seen = _dimension(
            headers.get(f"anthropic-ratelimit-{name}-limit"),
            headers.get(f"anthropic-ratelimit-{name}-remaining"),
            headers.get(f"anthropic-ratelimit-{name}-reset"),
            lambda text: _rfc3339_from_now(text, unix_now),
        )
        if seen is not None:
            found[dimension] = seen
    if "input_tokens" in found or "output_tokens" in found:
        found.pop("tokens", None)
    return found


def _dimension(
    limit_text: str | None,
    remaining_text: str | None,
    reset_text: str | None,
    reset_parser: Callable[[str], float | None],
) -> Observation | None:
    limit = _count(limit_text)
    if limit is None or limit <= 0:
        return None
    remaining = _count(remaining_text)
    reset = None if reset_text is None else reset_parser(reset_text)
    return Observation(limit, None if remaining is None else min(remaining, limit), reset)
