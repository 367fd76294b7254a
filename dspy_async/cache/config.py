"""`configure_cache`, and the cache in force: on by default, as in DSPy, unless switched off.

The default cache (memory, and disk under DEFAULT_DIR) is made on the first call that uses it,
not at import. `DSPY_ASYNC_RESPONSE_CACHE=off` (or 0, false, no) in the environment switches
that default off, as the pytest plugin does for test runs; an explicit `configure_cache(...)`
still turns it on. Off means `current()` is None: no key is computed, no file opened, nothing
held in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from .. import _checks, _forksafe
from ..errors import ConfigurationError
from .memory import MemoryTier
from .redis import RedisTier
from .store import ResponseCache

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_DISK_LIMIT",
    "DEFAULT_MEMORY_ENTRIES",
    "ENV_VAR",
    "configure_cache",
    "current",
    "reset",
]

ENV_VAR = "DSPY_ASYNC_RESPONSE_CACHE"
DEFAULT_DIR = "~/.cache/dspy-async/responses"
DEFAULT_DISK_LIMIT = 1 << 30  # 1 GiB of keys and answers
DEFAULT_MEMORY_ENTRIES = 10_000  # DSPy keeps up to a million, which can be gigabytes
_OFF = frozenset({"0", "off", "false", "no"})
_ON = frozenset({"", "1", "on", "true", "yes"})


class _Unset:
    """No cache decided yet: the default is made on first use."""


_UNSET: Final = _Unset()
_lock = _forksafe.lock()
_current: ResponseCache | _Unset | None = _UNSET


def configure_cache(
    enable_disk_cache: bool = True,
    enable_memory_cache: bool = True,
    disk_cache_dir: str | os.PathLike[str] = DEFAULT_DIR,
    disk_size_limit_bytes: int = DEFAULT_DISK_LIMIT,
    memory_max_entries: int = DEFAULT_MEMORY_ENTRIES,
    *,
    ttl: float | None = None,
    shared: str | None = None,
) -> None:
    """Set the response cache every LM uses (DSPy's `configure_cache`, in its argument order).

    The memory tier keeps the `memory_max_entries` most recently used answers of this process;
    the disk tier keeps up to `disk_size_limit_bytes` of them in one SQLite file under
    `disk_cache_dir`, shared by every process using that directory; `shared="redis://..."`
    adds a Redis tier shared by every host. `ttl` (seconds) bounds how long any answer is
    served. All tiers off means no cache at all. The cache replaced is closed (its disk
    writes finished first); calls still in flight with it just stop using it.
    """
    disk = _checks.boolean("configure_cache enable_disk_cache", enable_disk_cache)
    memory = _checks.boolean("configure_cache enable_memory_cache", enable_memory_cache)
    size_limit = _checks.positive_int(
        "configure_cache disk_size_limit_bytes", disk_size_limit_bytes
    )
    max_entries = _checks.positive_int("configure_cache memory_max_entries", memory_max_entries)
    ttl = _checks.positive_number("configure_cache ttl", ttl, allow_none=True)
    if not isinstance(disk_cache_dir, str | os.PathLike):
        raise ConfigurationError(
            f"configure_cache disk_cache_dir must be a path, not {_checks.shown(disk_cache_dir)}"
        )
    if shared is not None:
        shared = RedisTier.check(shared)
    cache = None
    if memory or disk or shared is not None:
        from .disk import DiskTier  # sqlite3 is imported only by a cache that uses it

        cache = ResponseCache(
            MemoryTier(max_entries) if memory else None,
            DiskTier(Path(disk_cache_dir).expanduser(), size_limit) if disk else None,
            RedisTier(shared, ttl) if shared is not None else None,
            ttl,
        )
    _install(cache)


def current() -> ResponseCache | None:
    """The cache in force, None if off; the default one is made here on first use."""
    cache = _current
    if not isinstance(cache, _Unset):
        return cache
    with _lock:  # two first calls at once must not make two default caches
        if isinstance(_current, _Unset):
            _set(_default())
        return _current if not isinstance(_current, _Unset) else None


def reset() -> None:
    """Close the configured cache and forget it: the next call makes the default again."""
    _install(_UNSET)


def _default() -> ResponseCache | None:
    switch = os.environ.get(ENV_VAR, "").strip().lower()
    if switch in _OFF:
        return None
    if switch not in _ON:
        raise ConfigurationError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r}: use off (or 0, false, no) to switch the "
            "response cache off, on (or 1, true, yes) to keep it"
        )
    from .disk import DiskTier

    disk = DiskTier(Path(DEFAULT_DIR).expanduser(), DEFAULT_DISK_LIMIT)
    return ResponseCache(MemoryTier(DEFAULT_MEMORY_ENTRIES), disk, None, None)


def _install(cache: ResponseCache | _Unset | None) -> None:
    with _lock:
        old = _current
        _set(cache)
    if isinstance(old, ResponseCache):
        old.close()


def _set(cache: ResponseCache | _Unset | None) -> None:
    global _current
    _current = cache
