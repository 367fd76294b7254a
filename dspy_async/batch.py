"""Run one module over many inputs with bounded concurrency, keeping every item's outcome.

Items run as tasks on the runtime loop (or, for a module with only a sync `forward`, in a
bounded thread pool whose inner calls still hop to the loop). The concurrency limit is a
`_limits.Scope`, so it is held per request in flight, not per item: an item waiting out a
backoff leaves its slot to the others. Results come back in input order; a failed item's slot
holds its exception. Cancelling the batch (Ctrl-C on the sync side) cancels every item, stops
queued ones from starting, and refuses any further attempt from calls already under way.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from . import _checks, _limits
from .errors import BatchError, SignatureError

__all__ = ["run_batch"]

T = TypeVar("T")
Inputs = Mapping[str, Any]


class _Progress(Protocol):
    def update(self, n: int = 1) -> object: ...
    def close(self) -> None: ...


async def run_batch(
    items: Sequence[Inputs],
    *,
    acall: Callable[..., Awaitable[T]] | None = None,
    sync_call: Callable[..., T] | None = None,
    max_concurrency: int = 16,
    return_exceptions: bool = False,
    progress: bool | None = None,
    timeout: float | None = None,
) -> list[T] | list[T | Exception]:
    """Call `acall(**item)` (or `sync_call(**item)` in worker threads) for every item.

    Must run on the runtime loop. Raises BatchError, after every item has finished, if any
    failed and `return_exceptions` is false; its `.results` are aligned with `items`.
    """
    items = _check_items(items, max_concurrency, timeout)
    results: list[Any] = [None] * len(items)

    with _limits.scope(max_concurrency) as batch, _progress_bar(progress, len(items)) as bar:
        pool = ThreadPoolExecutor(max_concurrency, "dspy-async-batch") if sync_call else None

        async def run_item(index: int, inputs: Inputs) -> None:
            with _limits.scope(None) as item:
                deadline = asyncio.timeout(timeout)
                try:
                    async with deadline:
                        results[index] = await _start(inputs, acall, sync_call, pool)
                except Exception as error:
                    results[index] = error
                    if deadline.expired():
                        item.cancel()  # stops the inner calls of a sync item's worker thread
                        results[index] = TimeoutError(
                            f"batch item {index} took longer than {timeout} s"
                        )
            bar.update(1)

        try:
            async with asyncio.TaskGroup() as group:
                for index, inputs in enumerate(items):
                    group.create_task(run_item(index, inputs))
        except BaseException:
            batch.cancel()  # reaches calls made from worker threads, which the group cannot
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    failures = [result for result in results if isinstance(result, Exception)]
    if failures and not return_exceptions:
        raise BatchError(f"{len(failures)} of {len(items)} batch items failed", failures, results)
    return results


async def _start(
    inputs: Inputs,
    acall: Callable[..., Awaitable[T]] | None,
    sync_call: Callable[..., T] | None,
    pool: ThreadPoolExecutor | None,
) -> T:
    if acall is not None:
        return await acall(**inputs)
    assert sync_call is not None and pool is not None
    context = contextvars.copy_context()  # carries the scopes into the worker thread
    work = functools.partial(context.run, sync_call, **inputs)
    return await asyncio.get_running_loop().run_in_executor(pool, work)


def _check_items(
    items: Sequence[Inputs], max_concurrency: int, timeout: float | None
) -> list[Inputs]:
    _checks.positive_int("batch max_concurrency", max_concurrency)
    _checks.positive_number("batch timeout", timeout, allow_none=True)
    checked = list(items)
    for index, inputs in enumerate(checked):
        if not isinstance(inputs, Mapping):
            raise SignatureError(
                f"batch item {index} is a {type(inputs).__name__}; each item must be a dict "
                "of input fields, e.g. {'question': '...'}"
            )
    return checked


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def _progress_bar(progress: bool | None, total: int) -> Iterator[_Progress]:
    """A tqdm bar on stderr when asked for, or by default when stderr is a terminal."""
    wanted = sys.stderr.isatty() if progress is None else progress
    bar: _Progress = _NoProgress()
    if wanted:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if progress:
                raise ImportError(
                    "progress=True needs tqdm: pip install 'dspy-async[progress]'"
                ) from None
        else:
            bar = tqdm(total=total, unit="item", file=sys.stderr, leave=True)
    try:
        yield bar
    finally:
        bar.close()
