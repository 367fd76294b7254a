"""Rate-limit budgets: one per provider account, shared by every call that uses it.

    headers.py    the providers' rate-limit headers -> observations (limit, remaining, reset)
    bucket.py     the budget's rules as plain state: a token bucket per dimension, a pause
    store.py      where budgets live: the interface, and the process-local store
    shared.py     the Redis store shared by processes and hosts, falling back to local
    config.py     RateLimit (what the user configures) and Account (which budget a call uses)

The pipeline's `Budget` stage (pipeline/budget.py) is what calls them. Nothing here imports
redis until a shared store is first used.
"""

from .config import Account, RateLimit

__all__ = ["Account", "RateLimit"]
