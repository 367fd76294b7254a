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
        self._ttl_ms = None if ttl is None else max(1, round(ttl * 1000))
        self._down_until = 0.0
        self._down = False
        self._unsent: dict[str, bytes | None] = {}

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
        self._write(key, entry.encode())

    def delete(self, key: str) -> None:
        self._write(key, None)

    def close(self) -> None:
        """Send the writes still queued, then close the client's connections."""

        async def close(client: Redis) -> None:
            await self._flush(client)
            await client.aclose()

        with contextlib.suppress(RuntimeClosedError):
            _runtime.submit(self._run(close))

    def _write(self, key: str, value: bytes | None) -> None:
        """Queue setting `key` to `value` (None: deleting it), sent on the runtime loop, which
        owns the client, whichever thread accepted the answer: no call waits for it."""
        # Kept in `_unsent` until sent: the runtime cancels its tasks at interpreter exit,
        # and then the client's closing sends what they did not, so a script's last answers
        # still reach the fleet. One dict operation each: safe from any thread.
        self._unsent[key] = value
        with contextlib.suppress(RuntimeClosedError):
            _runtime.submit(self._run(lambda client: self._send(client, key)))

    async def _send(self, client: Redis, key: str) -> None:
        # Only this loop removes keys from `_unsent`; other threads only set them.
        if key not in self._unsent:
            return  # sent already, by the task of a later write of the same key
        value = self._unsent[key]
        if value is None:
            await client.delete(PREFIX + key)
        else:
            await client.set(PREFIX + key, value, px=self._ttl_ms)
        if key in self._unsent and self._unsent[key] is value:  # not rewritten meanwhile
            del self._unsent[key]

    async def _flush(self, client: Redis) -> None:
        unsent, self._unsent = self._unsent, {}
        if unsent:
            async with client.pipeline(transaction=False) as pipe:
                for key, value in unsent.items():
                    if value is None:
                        pipe.delete(PREFIX + key)
                    else:
                        pipe.set(PREFIX + key, value, px=self._ttl_ms)
                await pipe.execute()

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

        async def close(client: Redis) -> None:  # at exit, after the runtime's tasks
            await self._run(self._flush)
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
