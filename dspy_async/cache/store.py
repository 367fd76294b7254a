"""The configured response cache: its tiers, asked in order and filled from the one that hit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .entry import Entry

if TYPE_CHECKING:
    from ..providers.base import Reply
    from .disk import DiskTier
    from .memory import MemoryTier
    from .redis import RedisTier

__all__ = ["ResponseCache"]


class ResponseCache:
    """Memory, then disk, then the shared Redis tier; each optional, at least one present.

    `recall` asks memory, at once; `fetch` asks the lower tiers, which take a wait, and copies
    an entry it finds into the tiers above the one that had it. Writes go to every
    tier; the disk and Redis writes run in the background, so committing an answer costs the
    call nothing. Every entry lives `ttl` seconds (None: until evicted).
    """

    def __init__(
        self,
        memory: MemoryTier | None,
        disk: DiskTier | None,
        shared: RedisTier | None,
        ttl: float | None,
    ) -> None:
        self.memory = memory
        self.disk = disk
        self.shared = shared
        self.ttl = ttl
        self._lower = tuple(tier for tier in (disk, shared) if tier is not None)

    def __repr__(self) -> str:
        tiers = []
        if self.memory is not None:
            tiers.append(f"memory_max_entries={self.memory.max_entries}")
        if self.disk is not None:
            tiers.append(f"disk={str(self.disk.path)!r}")
        if self.shared is not None:
            tiers.append(f"shared={self.shared.where!r}")
        return f"ResponseCache({', '.join(tiers)}, ttl={self.ttl})"

    def recall(self, key: str) -> Entry | None:
        """The entry under `key` in memory, without waiting for anything."""
        return None if self.memory is None else self.memory.get(key)

    async def fetch(self, key: str) -> Entry | None:
        """The entry under `key` in the first lower tier (disk, Redis) that has it, or None."""
        for depth, tier in enumerate(self._lower):
            entry = await tier.get(key)
            if entry is None or entry.expired(time.time()):
                continue
            if self.memory is not None:
                self.memory.put(key, entry)
            for upper in self._lower[:depth]:
                upper.put(key, entry)
            return entry
        return None

    def put(self, key: str, reply: Reply) -> None:
        """Keep `reply` under `key` in every tier. Safe from any thread."""
        entry = Entry.of(reply, self.ttl)
        if self.memory is not None:
            self.memory.put(key, entry)
        for tier in self._lower:
            tier.put(key, entry)

    def delete(self, key: str) -> None:
        """Forget `key` in every tier, so it is never served again. Safe from any thread."""
        if self.memory is not None:
            self.memory.delete(key)
        for tier in self._lower:
            tier.delete(key)

    def close(self) -> None:
        """Release the tiers: drop the memory, finish the disk writes, close Redis."""
        if self.memory is not None:
            self.memory.clear()
        for tier in self._lower:
            tier.close()
