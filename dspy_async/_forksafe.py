"""Locks a forked child can take: reset to unlocked in the child, never inherited held.

`os.fork()` copies every lock as it is at that instant but only the thread that forked, so a
lock that another parent thread (the runtime's loop thread finishing a call, a caller reading
`lm.usage`) held at that moment stays locked forever in the child, and the child's first call
deadlocks. Every lock dspy-async keeps beyond one call comes from `lock()` or `condition()`:
each is kept in a WeakSet and reset in the child by `_at_fork_reinit`, the hook the standard
library uses for its own locks (logging, threading, concurrent.futures). Resetting is sound
there because the child has a single thread: whoever held a lock is not in it.

Locks that live for one call only (`_runtime._Call.done`, a future's condition) need none of
this: the threads that wait on them do not exist in the child, and a future the child
inherited refuses to be waited on (`_runtime`).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol, cast

__all__ = ["condition", "lock"]


class _Resettable(Protocol):
    def _at_fork_reinit(self) -> None: ...


# Only added to in the parent (WeakSet.add and its removal callbacks are each one C-level
# set operation, safe without a lock of their own, which would itself need resetting) and
# only iterated in the child, where one thread is left.
_registry: weakref.WeakSet[_Resettable] = weakref.WeakSet()


def lock() -> threading.Lock:
    """A `threading.Lock` that is unlocked in a forked child, whoever held it in the parent."""
    made = threading.Lock()
    _registry.add(cast(_Resettable, made))
    return made


def condition(guard: threading.Lock) -> threading.Condition:
    """A `threading.Condition` over `guard` whose waiters are forgotten in a forked child."""
    made = threading.Condition(guard)
    _registry.add(cast(_Resettable, made))  # also resets `guard`; resetting twice is harmless
    return made


def _reset_in_child() -> None:
    for item in list(_registry):
        item._at_fork_reinit()


os.register_at_fork(after_in_child=_reset_in_child)
