"""One account's budget as plain state: a token bucket per dimension, and a pause.

Providers count requests and tokens in buckets that refill continuously: a limit of 600
requests per minute holds at most 600 and gains 10 a second. A dimension (`requests`,
`tokens`, Anthropic's `input_tokens` and `output_tokens`) is enforced once its capacity and
refill rate are known, from the user's configuration or learned from response headers; the
configured values win. Taking is all-or-nothing across dimensions: an attempt either gets
every cost it needs, or learns how long to wait for the scarcest one, and takes nothing.

`shared.py` runs the same rules as Lua inside Redis; the tests hold both to the same cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .headers import Observation

__all__ = [
    "BLIND",
    "DEFAULT_PERIOD",
    "DIMENSIONS",
    "HEADROOM",
    "START_MARGIN",
    "TAKEN",
    "Bucket",
    "Grant",
    "Level",
    "Limit",
    "Settlement",
]

DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")
# The window a learned limit refills over when the headers do not say (providers state
# their limits per minute).
DEFAULT_PERIOD = 60.0
# Budgets refill this much slower than the limit they follow: a request arrives at the
# provider a little after it took its budget, and the provider's bucket started refilling a
# little after ours, so running exactly at the limit would meet a 429 now and then.
HEADROOM = 0.98
# A budget's first take starts its refill this much later: the provider's bucket starts
# refilling when our first request arrives, a little after we took it.
START_MARGIN = 0.25


@dataclass(frozen=True, slots=True)
class Limit:
    """A dimension's capacity and its refill rate, per second."""

    capacity: float
    rate: float

    @classmethod
    def per(cls, amount: float, period: float) -> Limit:
        """`amount` per `period` seconds, refilled continuously (less the HEADROOM)."""
        return cls(float(amount), amount / period * HEADROOM)


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to a take: `wait` 0 when the costs were taken, else the seconds until they
    could be, and `reason`, the dimension (or "pause") that is short. `blind` says the take
    was let through knowing no limit at all (nothing was taken)."""

    wait: float
    reason: str | None = None
    blind: bool = False

    @property
    def taken(self) -> bool:
        return self.wait <= 0


TAKEN = Grant(0.0)
BLIND = Grant(0.0, blind=True)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What an attempt hands back once answered: tokens to return (estimate minus real use;
    negative to charge more), what the response's headers said, and a pause in seconds (a 429
    with Retry-After)."""

    refunds: Mapping[str, float] = field(default_factory=dict)
    observed: Mapping[str, Observation] = field(default_factory=dict)
    pause: float | None = None


@dataclass(slots=True)
class Level:
    """One dimension's state: its level at clock time `updated` (refilling from then on,
    which may be a moment ahead), and the limit the headers taught (None if none did; a
    configured limit is passed in with every call instead)."""

    level: float
    updated: float
    learned: Limit | None = None

    def at(self, now: float, limit: Limit) -> float:
        """The level at `now` under `limit`, refilled since `updated`, never above capacity."""
        refilled = self.level + limit.rate * max(0.0, now - self.updated)
        return min(limit.capacity, refilled)


@dataclass(slots=True)
class Bucket:
    """One account's budget: a level per known dimension, and the end of any pause."""

    levels: dict[str, Level] = field(default_factory=dict)
    paused_until: float = -math.inf

    def take(
        self, costs: Mapping[str, float], configured: Mapping[str, Limit], now: float
    ) -> Grant:
        """Take every cost, or take nothing and say how long until all of them would fit.

        A cost larger than the capacity waits for a full bucket and then leaves it in debt,
        so an oversized request is slow, never stuck.
        """
        if self.paused_until > now:
            return Grant(self.paused_until - now, "pause")
        wait, reason = 0.0, None
        current: dict[str, float] = {}
        for dimension, cost in costs.items():
            known = self.levels.get(dimension)
            limit = configured.get(dimension) or (None if known is None else known.learned)
            if limit is None:
                continue
            level = current[dimension] = limit.capacity if known is None else known.at(now, limit)
            short = (min(cost, limit.capacity) - level) / limit.rate
            if short > 0 and known is not None:
                short += max(0.0, known.updated - now)  # its refill has not started yet
            if short > wait:
                wait, reason = short, dimension
        if wait > 0:
            return Grant(wait, reason)
        for dimension, level in current.items():
            known = self.levels.get(dimension)
            if known is None:  # the provider's bucket starts refilling on our first arrival
                self.levels[dimension] = Level(level - costs[dimension], now + START_MARGIN)
            else:
                since = max(now, known.updated)
                self.levels[dimension] = Level(level - costs[dimension], since, known.learned)
        return BLIND if not current else TAKEN

    def drain(self, configured: Mapping[str, Limit], now: float) -> None:
        """Empty every dimension known or configured: it refills from nothing at `now`."""
        for dimension in {*self.levels, *configured}:
            known = self.levels.get(dimension)
            self.levels[dimension] = Level(0.0, now, None if known is None else known.learned)

    def settle(self, settlement: Settlement, configured: Mapping[str, Limit], now: float) -> None:
        """Return refunds, learn limits and levels from headers, start a pause."""
        for dimension in DIMENSIONS:
            seen = settlement.observed.get(dimension)
            known = self.levels.get(dimension)
            learned = None if known is None else known.learned
            if seen is not None:
                learned = _learned(seen, learned)
            limit = configured.get(dimension) or learned
            if limit is None:
                continue
            level = limit.capacity if known is None else known.at(now, limit)
            level = min(limit.capacity, level + settlement.refunds.get(dimension, 0.0))
            if seen is not None and seen.remaining is not None:
                # The server counts what others sharing the key spent too: never more than it says.
                level = min(level, seen.remaining)
            since = now if known is None else max(now, known.updated)
            self.levels[dimension] = Level(level, since, learned)
        if settlement.pause is not None and settlement.pause > 0:
            self.paused_until = max(self.paused_until, now + settlement.pause)


def _learned(seen: Observation, before: Limit | None) -> Limit:
    """The limit a response describes: its capacity, refilling at the rate that fills what is
    missing in `reset` seconds (else the rate known before, else a minute's worth).

    Providers round `remaining` down to a whole number, so up to one more than it says is
    missing: the rate is worked out from one less, which never overestimates it (and is
    not worked out at all from a deficit of one, where that would leave nothing).
    """
    if seen.remaining is not None and seen.reset and seen.limit - seen.remaining >= 2:
        missing = seen.limit - seen.remaining - 1
        return Limit(seen.limit, missing / seen.reset * HEADROOM)
    if before is not None:
        return Limit(seen.limit, before.rate)
    return Limit.per(seen.limit, DEFAULT_PERIOD)
