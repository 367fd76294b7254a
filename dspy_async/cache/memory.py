"""The memory tier: the most recently used entries of this process, bounded by their number."""

from __future__ import annotations

import time
from collections import OrderedDict

from .. import _forksafe
from .entry import Entry

__all__ = ["MemoryTier"]


class MemoryTier:
    """At most `max_entries` entries; the least recently used one goes first. Thread-safe:
    lookups run on the runtime loop, but an answer can be accepted from any thread."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = _forksafe.lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expired(time.time()):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: Entry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
