"""Token usage that adds up, per program run: `track_usage()`, and costs from your own prices.

    with dspy.track_usage() as usage:
        program(question="...")
    usage.get_total_tokens()   # {"openai/gpt-4o-mini": {"prompt_tokens": 812, ...}}
    usage.cost({"openai/gpt-4o-mini": dspy.Price(input=0.15, output=0.60)})

Every LM call counts what the provider billed for it, failed attempts that reported tokens
included, in the LM's own `usage` and in every tracker open where the call was made. Trackers
sit in a context variable, like `dspy.context` overrides: the runtime copies the caller's
context to the loop and a batch copies it to each item (worker threads included), so a call
is counted in the trackers of the thread or task that made it, never in another thread's.
A call started inside the block (`submit`) is counted even if it ends after the block.
No price is bundled: price lists go stale, so the table is yours.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from . import _checks, _forksafe
from .errors import ConfigurationError
from .records import Usage

__all__ = ["Price", "UsageTracker", "record", "track_usage"]

_NONE = Usage()


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs per million tokens, in the currency of your choice.

    Prompt tokens read from or written to the provider's cache cost `cache_read` and
    `cache_creation` (the `input` price when None, for providers that do not discount them).
    """

    input: float
    output: float
    cache_read: float | None = None
    cache_creation: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_read", "cache_creation"):
            _checks.non_negative_number(
                f"Price {name}", getattr(self, name), allow_none=name.startswith("cache")
            )

    def cost(self, usage: Usage) -> float:
        """What `usage` costs at these prices."""
        read = self.input if self.cache_read is None else self.cache_read
        written = self.input if self.cache_creation is None else self.cache_creation
        fresh = usage.prompt_tokens - usage.cache_read_tokens - usage.cache_creation_tokens
        return (
            fresh * self.input
            + usage.cache_read_tokens * read
            + usage.cache_creation_tokens * written
            + usage.completion_tokens * self.output
        ) / 1_000_000


class UsageTracker:
    """The tokens of the LM calls made inside one `track_usage()` block, per model id
    (`"provider/model"`, the key DSPy uses too). Safe to read while calls are adding to it."""

    def __init__(self) -> None:
        self._lock = _forksafe.lock()  # a forked child may inherit the tracker mid-add
        self._totals: dict[str, Usage] = {}

    def add_usage(self, lm: str, usage: Usage) -> None:
        """Count `usage` against the model id `lm`."""
        with self._lock:
            self._totals[lm] = self._totals.get(lm, _NONE) + usage

    def totals(self) -> dict[str, Usage]:
        """Usage per model id."""
        with self._lock:
            return dict(self._totals)

    @property
    def total(self) -> Usage:
        """Usage summed over every model."""
        return sum(self.totals().values(), Usage())

    def get_total_tokens(self) -> dict[str, dict[str, int]]:
        """Usage per model id as plain dicts (`Usage.to_dict`), DSPy's `get_total_tokens`."""
        return {lm: usage.to_dict() for lm, usage in self.totals().items()}

    def cost(self, prices: Mapping[str, Price]) -> float:
        """The cost of every model's usage at `prices` (model id -> Price); a model used but
        missing from the table is a ConfigurationError, never silently free."""
        totals = self.totals()
        missing = sorted(set(totals) - set(prices))
        if missing:
            raise ConfigurationError(f"no Price for {', '.join(missing)}")
        return sum(prices[lm].cost(usage) for lm, usage in totals.items())

    def __repr__(self) -> str:
        return f"UsageTracker({self.totals()!r})"


_trackers: contextvars.ContextVar[tuple[UsageTracker, ...]] = contextvars.ContextVar(
    "dspy_async_usage_trackers", default=()
)


@contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """Count the tokens of every LM call made in this block and the work it starts.

    Nested blocks count each call in every enclosing tracker, as it happens.
    """
    tracker = UsageTracker()
    token = _trackers.set((*_trackers.get(), tracker))
    try:
        yield tracker
    finally:
        _trackers.reset(token)


def record(lm: str, usage: Usage) -> None:
    """Count one call's `usage` in every tracker open here (none, mostly: one lookup)."""
    if usage != _NONE:
        for tracker in _trackers.get():
            tracker.add_usage(lm, usage)
