"""The response cache: an LM call answered again without asking the provider.

    config.py       configure_cache(), the default cache and its environment switch
    store.py        ResponseCache: the tiers below, asked in order
    memory.py       this process's most recently used entries, bounded by count
    disk.py         one SQLite file (WAL) shared by processes, bounded by bytes
    redis.py        Redis, shared by hosts (the optional `redis` extra)
    entry.py        an answer and its JSON form (never pickle)
    key.py          the SHA-256 key of a call's request (never its API key)
    flights.py      single-flight: identical calls in flight share one request

The call-level pipeline stage that uses them is `pipeline/cache.py`.
"""

from .config import ENV_VAR, configure_cache, current, reset
from .store import ResponseCache

__all__ = ["ENV_VAR", "ResponseCache", "configure_cache", "current", "reset"]
