"""The shared store: every process and host using an account draws from one budget in Redis.

Each take and each settle is one Lua script, so it is atomic in Redis however many clients
race for the same account, and uses Redis's clock (`TIME`), so hosts whose clocks disagree
still agree on the budget. The pause and the learned limits live in the same hash, so a 429
seen by one worker closes the gate for all of them, and a worker that starts late already
knows the limits.

Redis is a help, never a dependency of a call: connections and commands have short
timeouts, and when Redis cannot be reached the store falls back to the process's local
budget (empty at first: the fleet may have spent the shared one), logs one warning, and
tries Redis again every `RECONNECT_AFTER` seconds. The client
is redis-py's asyncio client, imported on first use (the `redis` extra).
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .bucket import (
    BLIND,
    DEFAULT_PERIOD,
    DIMENSIONS,
    HEADROOM,
    START_MARGIN,
    TAKEN,
    Grant,
    Limit,
    Settlement,
)
from .store import LocalStore

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["KEY_PREFIX", "RECONNECT_AFTER", "RedisStore", "check_url", "redacted"]

logger = logging.getLogger("dspy_async")

KEY_PREFIX = "dspy-async:ratelimit:"
# How long an account's state outlives its last use: learned limits survive restarts.
TTL = 86_400
# Socket and per-command limits: a Redis that does not answer costs a call this, not a hang.
CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 1.0
RECONNECT_AFTER = 5.0
MAX_CONNECTIONS = 16  # per process and Redis URL
SCHEMES = ("redis", "rediss", "unix")

_PREAMBLE = """
local key = KEYS[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local flat = redis.call('HGETALL', key)
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = tonumber(flat[i + 1]) end
local dims = {__DIMENSIONS__}
local function level_at(dim, cap, rate)
  local level = h[dim .. ':level']
  if not level then return cap end
  return math.min(cap, level + rate * math.max(0, now - h[dim .. ':t']))
end
""".replace("__DIMENSIONS__", ", ".join(f"'{name}'" for name in DIMENSIONS))

# ARGV: ttl, then per dimension: cost, configured capacity, configured rate (<= 0: none).
# Returns {taken, wait, reason, blind}: the rules of Bucket.take.
_TAKE = (
    _PREAMBLE
    + """
local pause = h['pause'] or 0
if pause > now then return {0, tostring(pause - now), 'pause', 0} end
local wait, reason = 0, ''
local levels = {}
for i, dim in ipairs(dims) do
  local base = 2 + (i - 1) * 3
  local cost, cap, rate = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  if cap <= 0 then cap, rate = h[dim .. ':cap'], h[dim .. ':rate'] end
  if cap then
    local level = level_at(dim, cap, rate)
    levels[dim] = level - cost
    local short = (math.min(cost, cap) - level) / rate
    if short > 0 and h[dim .. ':t'] then short = short + math.max(0, h[dim .. ':t'] - now) end
    if short > wait then wait, reason = short, dim end
  end
end
if wait > 0 then return {0, tostring(wait), reason, 0} end
for dim, level in pairs(levels) do
  local since = math.max(now, h[dim .. ':t'] or (now + __START_MARGIN__))
  redis.call('HSET', key, dim .. ':level', tostring(level), dim .. ':t', tostring(since))
end
if not next(levels) then return {1, '0', '', 1} end
redis.call('EXPIRE', key, ARGV[1])
return {1, '0', '', 0}
""".replace("__START_MARGIN__", repr(START_MARGIN))
)

# ARGV: ttl, pause (<= 0: none), then per dimension: refund, configured capacity and rate,
# observed limit, remaining and reset (< 0: not observed). The rules of Bucket.settle.
_SETTLE = (
    _PREAMBLE
    + """
for i, dim in ipairs(dims) do
  local base = 3 + (i - 1) * 6
  local refund, cap, rate = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local limit, remaining, reset = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]),
    tonumber(ARGV[base + 5])
  local learned_cap, learned_rate = h[dim .. ':cap'], h[dim .. ':rate']
  if limit > 0 then
    if remaining >= 0 and reset > 0 and limit - remaining >= 2 then
      learned_rate = (limit - remaining - 1) / reset * __HEADROOM__
    elseif not learned_rate then
      learned_rate = limit / __PERIOD__ * __HEADROOM__
    end
    learned_cap = limit
    redis.call('HSET', key, dim .. ':cap', tostring(learned_cap),
      dim .. ':rate', tostring(learned_rate))
  end
  if cap <= 0 then cap, rate = learned_cap, learned_rate end
  if cap then
    local level = math.min(cap, level_at(dim, cap, rate) + refund)
    if limit > 0 and remaining >= 0 then level = math.min(level, remaining) end
    local since = math.max(now, h[dim .. ':t'] or now)
    redis.call('HSET', key, dim .. ':level', tostring(level), dim .. ':t', tostring(since))
  end
end
local pause = tonumber(ARGV[2])
if pause > 0 then
  redis.call('HSET', key, 'pause', tostring(math.max(h['pause'] or 0, now + pause)))
end
redis.call('EXPIRE', key, ARGV[1])
return 1
""".replace("__PERIOD__", repr(DEFAULT_PERIOD)).replace("__HEADROOM__", repr(HEADROOM))
)


def check_url(url: object) -> str:
    """`url` if it is a Redis URL redis-py can open; ConfigurationError otherwise."""
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in SCHEMES:
        shown = redacted(url) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(
            f"RateLimit(shared=...) must be a Redis URL such as 'redis://127.0.0.1:6379/0', "
            f"not {shown!r}"
        )
    return url


def redacted(url: str) -> str:
    """`url` without any password in it, fit for a log line."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _limits_args(limits: Mapping[str, Limit], dimension: str) -> tuple[float, float]:
    limit = limits.get(dimension)
    return (-1.0, -1.0) if limit is None else (limit.capacity, limit.rate)


class RedisStore:
    """Budgets in the Redis at `url`, falling back to `fallback` while it cannot be reached."""

    def __init__(self, url: str, fallback: LocalStore) -> None:
        self.url = url
        self.fallback = fallback
        self._client: Redis | None = None
        self._scripts: tuple[AsyncScript, AsyncScript] | None = None
        self._down_until = -math.inf  # clock time before which Redis is not tried again
        self._probing = False
        self._warned = False
        self._drained: set[str] = set()  # accounts whose local budget this outage emptied

    def _connect(self) -> tuple[AsyncScript, AsyncScript]:
        if self._scripts is None:
            # Imported here: `import dspy_async` must work without the redis extra.
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # A few connections, waited for: thousands of calls settling at once queue for
            # one (each script takes microseconds) rather than open a socket each.
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=COMMAND_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = Redis.from_pool(pool)
            self._scripts = (
                self._client.register_script(_TAKE),
                self._client.register_script(_SETTLE),
            )
        return self._scripts

    async def _run(self, which: int, key: str, args: list[float | int], now: float) -> Any:
        """Run script `which`; None if Redis could not be used (the caller falls back)."""
        down = self._down_until > -math.inf
        if now < self._down_until or (down and self._probing):
            return None
        # While Redis is down, one call at a time finds out whether it is back; the others
        # use the local budget rather than each wait out a connect timeout.
        self._probing = down
        try:
            script = self._connect()[which]
            async with asyncio.timeout(CONNECT_TIMEOUT + 2 * COMMAND_TIMEOUT):
                result = await script(keys=[KEY_PREFIX + key], args=args)
        except Exception as exc:  # redis errors, OSError, TimeoutError: all mean "not now"
            self._mark_down(exc, now)
            return None
        finally:
            self._probing = False
        if down:
            logger.info("rate-limit budget: Redis at %s is reachable again", redacted(self.url))
        self._down_until = -math.inf
        return result

    def _mark_down(self, exc: BaseException, now: float) -> None:
        if self._down_until == -math.inf:
            self._drained.clear()  # a new outage: each account's local budget starts empty
        self._down_until = now + RECONNECT_AFTER
        reason = f"{type(exc).__name__}: {exc}"
        if not self._warned:
            self._warned = True
            logger.warning(
                "rate-limit budget: Redis at %s cannot be reached (%s); using this process's "
                "own budget, retrying Redis every %g s",
                *(redacted(self.url), reason, RECONNECT_AFTER),
            )
        else:
            logger.debug("rate-limit budget: Redis still unreachable (%s)", reason)

    async def take(
        self, key: str, costs: Mapping[str, float], limits: Mapping[str, Limit], now: float
    ) -> Grant:
        args: list[float | int] = [TTL]
        for dimension in DIMENSIONS:
            args += [costs.get(dimension, 0.0), *_limits_args(limits, dimension)]
        result = await self._run(0, key, args, now)
        if result is None:
            if key not in self._drained:
                # The fleet may have spent the shared budget: this process starts with none
                # and refills at the limit, rather than bursting a whole bucket's worth.
                self._drained.add(key)
                self.fallback.drain(key, limits, now)
            return await self.fallback.take(key, costs, limits, now)
        taken, wait, reason, blind = result
        if int(taken):
            return BLIND if int(blind) else TAKEN
        return Grant(float(wait), reason.decode() if isinstance(reason, bytes) else str(reason))

    async def settle(
        self, key: str, settlement: Settlement, limits: Mapping[str, Limit], now: float
    ) -> None:
        args: list[float | int] = [TTL, settlement.pause or 0.0]
        for dimension in DIMENSIONS:
            seen = settlement.observed.get(dimension)
            observed = (-1.0, -1.0, -1.0)
            if seen is not None:
                remaining = -1.0 if seen.remaining is None else seen.remaining
                observed = (seen.limit, remaining, -1.0 if seen.reset is None else seen.reset)
            refund = settlement.refunds.get(dimension, 0.0)
            args += [refund, *_limits_args(limits, dimension), *observed]
        if await self._run(1, key, args, now) is None:
            await self.fallback.settle(key, settlement, limits, now)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
