"""The simulator's rate-limited mode: a provider's token buckets, per API key.

Each limited dimension (`requests`, `tokens`, `input_tokens`, `output_tokens`) holds at most
its limit and refills continuously over `per` seconds, as the providers describe their own
limits. A request is admitted when every bucket has room for it (1 request; its prompt plus
its `max_tokens` in tokens), else refused with the provider's 429 and a Retry-After saying
when it would fit; once answered, the tokens are settled to what the answer really used.
Every reply carries the provider's rate-limit headers: OpenAI's `x-ratelimit-*` (resets as
durations) or Anthropic's `anthropic-ratelimit-*` (resets as RFC 3339 times).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ._wire import Parsed

__all__ = [
    "DIMENSIONS",
    "Admission",
    "RateLimits",
    "api_key_of",
    "format_duration",
    "max_tokens_of",
    "usage_of",
]

DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")
_ANTHROPIC_NAMES = {
    "requests": "requests",
    "tokens": "tokens",
    "input_tokens": "input-tokens",
    "output_tokens": "output-tokens",
}


def format_duration(seconds: float) -> str:
    """A Go duration as OpenAI writes its resets: `20ms`, `1.5s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass(slots=True)
class _Bucket:
    limit: float
    rate: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + self.rate * (now - self.updated))
        self.updated = now

    def reset_after(self) -> float:
        """Seconds until full again."""
        return max(0.0, (self.limit - self.level) / self.rate)


@dataclass(frozen=True, slots=True)
class Admission:
    """A request let in: what it reserved, to settle once answered."""

    key: str
    reserved: Mapping[str, float]


@dataclass(slots=True)
class RateLimits:
    """Limits per `per` seconds by dimension (None: not limited), with buckets per key."""

    limits: Mapping[str, int]
    per: float
    _buckets: dict[str, dict[str, _Bucket]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _key_buckets(self, key: str, now: float) -> dict[str, _Bucket]:
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = self._buckets[key] = {
                name: _Bucket(limit, limit / self.per, limit, now)
                for name, limit in self.limits.items()
            }
        for bucket in buckets.values():
            bucket.refill(now)
        return buckets

    def admit(self, key: str, parsed: Parsed, max_tokens: int) -> Admission | float:
        """Reserve room for a request, or return the seconds until it would fit."""
        costs = {
            "requests": 1.0,
            "tokens": float(parsed.prompt_tokens + max_tokens),
            "input_tokens": float(parsed.prompt_tokens),
            "output_tokens": float(max_tokens),
        }
        with self._lock:
            buckets = self._key_buckets(key, time.monotonic())
            wait = max(
                ((min(costs[name], b.limit) - b.level) / b.rate for name, b in buckets.items()),
                default=0.0,
            )
            if wait > 0:
                return wait
            for name, bucket in buckets.items():
                bucket.level -= costs[name]
        return Admission(key, costs)

    def settle(self, admission: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        """Charge the tokens the answer really used instead of the reservation."""
        used = {
            "tokens": float(prompt_tokens + completion_tokens),
            "input_tokens": float(prompt_tokens),
            "output_tokens": float(completion_tokens),
        }
        with self._lock:
            buckets = self._key_buckets(admission.key, time.monotonic())
            for name, amount in used.items():
                if name in buckets:
                    buckets[name].level += admission.reserved[name] - amount

    def headers(self, key: str, provider: str) -> dict[str, str]:
        """The provider's rate-limit headers for `key`'s buckets as they are now."""
        with self._lock:
            buckets = self._key_buckets(key, time.monotonic())
            state = {
                name: (int(b.limit), max(0, math.floor(b.level)), b.reset_after())
                for name, b in buckets.items()
            }
        headers: dict[str, str] = {}
        if provider == "openai":
            for name in ("requests", "tokens"):
                if name in state:
                    limit, remaining, reset = state[name]
                    headers[f"x-ratelimit-limit-{name}"] = str(limit)
                    headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
                    headers[f"x-ratelimit-reset-{name}"] = format_duration(reset)
        elif provider == "anthropic":
            wall = time.time()
            for name, (limit, remaining, reset) in state.items():
                prefix = f"anthropic-ratelimit-{_ANTHROPIC_NAMES[name]}"
                when = datetime.fromtimestamp(wall + reset, UTC)
                headers[f"{prefix}-limit"] = str(limit)
                headers[f"{prefix}-remaining"] = str(remaining)
                headers[f"{prefix}-reset"] = when.isoformat(timespec="milliseconds").replace(
                    "+00:00", "Z"
                )
        return headers


def api_key_of(headers: Mapping[str, str]) -> str:
    """The key a request was sent with (x-api-key, else a bearer token; "" for none)."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def max_tokens_of(body: object) -> int:
    """The completion tokens a request body allows (0 if it sets none)."""
    if not isinstance(body, Mapping):
        return 0
    options = body.get("options")
    candidates = [body.get("max_tokens"), body.get("max_completion_tokens")]
    if isinstance(options, Mapping):
        candidates.append(options.get("num_predict"))
    return next((n for n in candidates if isinstance(n, int) and n > 0), 0)


def usage_of(provider: str, body: bytes) -> tuple[int, int]:
    """Prompt and completion tokens a simulated success body reports."""
    try:
        lines = body.decode().strip().splitlines()
        payload = json.loads(lines[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        return 0, 0
    if provider == "ollama":
        return int(payload.get("prompt_eval_count", 0)), int(payload.get("eval_count", 0))
    usage = payload.get("usage") or {}
    if provider == "anthropic":
        return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
