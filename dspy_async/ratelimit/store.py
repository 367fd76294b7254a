"""Where budgets live: the interface, and the process-local store.

A store holds one `Bucket` per account key. `LocalStore` keeps them in this process (one per
runtime loop), `shared.RedisStore` in Redis for every process and host using the account.
Both are used only from the runtime loop, so the local one needs no lock: each method runs
to completion between two awaits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

from .bucket import Bucket, Grant, Limit, Settlement

__all__ = ["MAX_ACCOUNTS", "LocalStore", "Store"]

# Accounts remembered per process; the least recently used is forgotten past this, so a
# program that makes LMs for many short-lived keys does not grow without bound.
MAX_ACCOUNTS = 1024


class Store(Protocol):
    """Budgets by account key. `now` is the caller's clock; a shared store may use its own."""

    async def take(
        self, key: str, costs: Mapping[str, float], limits: Mapping[str, Limit], now: float
    ) -> Grant: ...

    async def settle(
        self, key: str, settlement: Settlement, limits: Mapping[str, Limit], now: float
    ) -> None: ...


class LocalStore:
    """This process's budgets, in memory."""

    def __init__(self, max_accounts: int = MAX_ACCOUNTS) -> None:
        self.max_accounts = max_accounts
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def bucket(self, key: str) -> Bucket:
        """The account's bucket, made empty of knowledge on first use."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket()
            if len(self._buckets) > self.max_accounts:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def knows_nothing(self, key: str, now: float) -> bool:
        """Whether the account's bucket knows no limit and no pause still on at `now`."""
        bucket = self.bucket(key)
        return not bucket.levels and bucket.paused_until <= now

    def drain(self, key: str, limits: Mapping[str, Limit], now: float) -> None:
        """Empty the account's bucket now, in every dimension it knows or `limits` names."""
        self.bucket(key).drain(limits, now)

    def forget(self, key: str) -> None:
        """Drop the account's bucket: it starts again knowing nothing."""
        self._buckets.pop(key, None)

    async def take(
        self, key: str, costs: Mapping[str, float], limits: Mapping[str, Limit], now: float
    ) -> Grant:
        return self.take_now(key, costs, limits, now)

    def take_now(
        self, key: str, costs: Mapping[str, float], limits: Mapping[str, Limit], now: float
    ) -> Grant:
        """`take`, for a caller that would rather not await: this store never waits."""
        return self.bucket(key).take(costs, limits, now)

    async def settle(
        self, key: str, settlement: Settlement, limits: Mapping[str, Limit], now: float
    ) -> None:
        self.bucket(key).settle(settlement, limits, now)
