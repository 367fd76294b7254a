"""A context manager that does nothing, at the least cost to a call in flight.

Features that are off (callbacks, tracing, a completion index already in force) hand back a
shared `NOTHING` in place of their context manager. Its `__exit__` is static: a `with`
statement suspended in a coroutine holds its manager's bound `__exit__` until it ends, and a
static one binds to no new object, so thousands of calls in flight carry none of them for the
garbage collector to scan.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NOTHING", "Nothing"]


class Nothing:
    """Enter and exit doing nothing; subclasses add methods that do nothing too."""

    __slots__ = ()

    def __enter__(self) -> Any:
        return self

    @staticmethod
    def __exit__(*exc_info: object) -> None:
        return None


NOTHING = Nothing()
