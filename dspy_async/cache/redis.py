"""The shared tier: entries in Redis, for every process and host pointed at it.

redis-py's asyncio client (the `redis` extra: `pip install 'dspy-async[redis]'`), imported
only when a cache with `shared=` is configured. Its client lives on the runtime loop (one per
loop, so a forked child makes its own). Redis is a help, never a dependency of a call: every
operation is bounded by TIMEOUT, and a failure logs one warning, after which the tier is left
alone for RETRY_AFTER seconds and the call goes on with the local tiers. Entries expire with
the cache's `ttl`; without one, bound the server with `maxmemory` and an LRU policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import _runtime
from ..errors import ConfigurationError, RuntimeClosedError
from .entry import Entry, decode

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["PREFIX", "RedisTier"]

logger = logging.getLogger("dspy_async")

PREFIX = "dspy-async:response:"
TIMEOUT = 1.0  # seconds for one Redis operation, connecting included
RETRY_AFTER = 30.0  # seconds the tier is skipped after a failure
SCHEMES = ("redis", "rediss", "unix")

Operation = Callable[["Redis"], Awaitable[Any]]


class RedisTier:
    """Entries under PREFIX in the Redis at `url`, each expiring after `ttl` seconds if set."""

    def __init__(self, url: str, ttl: float | None) -> None:
        self.url = url
        self.ttl = ttl
        self.where = redacted(url)
        self._token = object()  # names this tier's client among the loop's resources
        self._down_until = 0.0
        self._down = False

    @staticmethod
    def check(url: object) -> str:
        """`url` if it is a Redis URL and the client is installed; ConfigurationError if not."""
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in SCHEMES:
            raise ConfigurationError(
                "configure_cache shared must be a redis://, rediss:// or unix:// URL or None, "
                f"not {redacted(url) if isinstance(url, str) else type(url).__name__}"
            )
        if importlib.util.find_spec("redis") is None:
            raise ConfigurationError(
                "configure_cache(shared=...) needs the Redis client: "
                "pip install 'dspy-async[redis]'"
            )
        return url

    async def get(self, key: str) -> Entry | None:
        value = await self._run(lambda client: client.get(PREFIX + key))
        return None if value is None else decode(value)

    def put(self, key: str, entry: Entry) -> None:
        ttl_ms = None if self.ttl is None else max(1, round(self.ttl * 1000))
        value = entry.encode()
        self._in_background(lambda client: client.set(PREFIX + key, value, px=ttl_ms))

    def delete(self, key: str) -> None:
        self._in_background(lambda client: client.delete(PREFIX + key))

    def close(self) -> None:
        """Close the client's connections (writes queued before this still go out)."""
        self._in_background(lambda client: client.aclose())

    def _in_background(self, operation: Operation) -> None:
        # Writes never hold up the call that made them; they run on the runtime loop, which
        # owns the client, whichever thread accepted the answer.
        with contextlib.suppress(RuntimeClosedError):  # at exit: the entry is not shared
            _runtime.submit(self._run(operation))

    async def _run(self, operation: Operation) -> Any:
        if self._down and time.monotonic() < self._down_until:
            return None
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(TIMEOUT):
                result = await operation(self._client())
        except (RedisError, OSError, TimeoutError) as error:
            if not self._down:
                logger.warning(
                    "dspy-async response cache: Redis at %s failed (%s: %s); using the local "
                    "tiers, trying Redis again every %.0f s",
                    *(self.where, type(error).__name__, error, RETRY_AFTER),
                )
            self._down, self._down_until = True, time.monotonic() + RETRY_AFTER
            return None
        if self._down:
            logger.warning("dspy-async response cache: Redis at %s is back", self.where)
            self._down = False
        return result

    def _client(self) -> Redis:
        from redis.asyncio import Redis

        def connect() -> Redis:
            return Redis.from_url(self.url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)

        async def close(client: Redis) -> None:
            await client.aclose()

        return _runtime.loop_resource(("dspy_async.cache.redis", self._token), connect, close=close)


def redacted(url: str) -> str:
    """`url` without its password, to be shown in messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***" if parts.username else ":***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}"))
