"""Module: the base class of programs built from Predict steps, DSPy style.

Define `forward` (sync), `aforward` (async), or both. Calling the module runs `forward`;
`acall` awaits `aforward`. Whichever one is missing is derived from the other: a sync call of
an async-only module runs `aforward` on the hidden runtime loop, and an async call of a
sync-only module runs `forward` in a worker thread, so it never blocks the caller's loop.
Every module also gets `batch`/`abatch` (many inputs, bounded concurrency) and `submit`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping, Sequence
from typing import Any

from . import _runtime
from .batch import run_batch
from .pipeline import trace

__all__ = ["Module"]


class Module:
    """Subclass and define `forward` and/or `aforward`; call it like a function."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The program, run synchronously. By default: `aforward` on the runtime loop."""
        if type(self).aforward is Module.aforward:
            raise NotImplementedError(f"{type(self).__name__} must define forward() or aforward()")
        return _runtime.run(self.aforward(*args, **kwargs))

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        """The program, as a coroutine. By default: `forward` in a worker thread."""
        if type(self).forward is Module.forward:
            raise NotImplementedError(f"{type(self).__name__} must define forward() or aforward()")
        return await asyncio.to_thread(self.forward, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with trace.step(self):  # a no-op unless instrumented
            return self.forward(*args, **kwargs)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Alias of calling the module, for DSPy.rb habits: `Predict(Sig).call(text=...)`."""
        return self(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module from async code."""
        with trace.step(self):
            return await self.aforward(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Start the call on the runtime loop and return at once; `cancel()` cancels it."""
        return _runtime.submit(self.acall(*args, **kwargs))

    def batch(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        max_concurrency: int = 16,
        return_exceptions: bool = False,
        progress: bool | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run the module once per item (a dict of inputs); results in input order.

        At most `max_concurrency` provider requests are in flight at once; an item waiting
        out a backoff gives its slot to the others. A failed item's slot holds its exception
        with `return_exceptions`; otherwise every item still finishes, then `BatchError` is
        raised with `.results`. `timeout` bounds each item; `progress` shows a tqdm bar
        (default: when stderr is a terminal). Ctrl-C cancels every item and re-raises.
        """
        return _runtime.run(
            self._batch(items, max_concurrency, return_exceptions, progress, timeout)
        )

    async def abatch(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        max_concurrency: int = 16,
        return_exceptions: bool = False,
        progress: bool | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """`batch` for async code: the same engine, awaited on the caller's loop."""
        return await _runtime.arun(
            self._batch(items, max_concurrency, return_exceptions, progress, timeout)
        )

    async def _batch(
        self,
        items: Sequence[Mapping[str, Any]],
        max_concurrency: int,
        return_exceptions: bool,
        progress: bool | None,
        timeout: float | None,
    ) -> list[Any]:
        # A module with only a sync forward runs it in the batch's bounded thread pool.
        sync_only = type(self).aforward is Module.aforward
        with trace.batch(self, items):  # each item copies this context, and with it the span
            return await run_batch(
                items,
                acall=None if sync_only else self.acall,
                sync_call=self.__call__ if sync_only else None,
                max_concurrency=max_concurrency,
                return_exceptions=return_exceptions,
                progress=progress,
                timeout=timeout,
            )
