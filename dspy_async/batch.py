"""Run one module over many inputs with bounded concurrency and bounded memory.

The inputs are any iterable, a generator included: a batch pulls items as room frees up and
keeps at most `WINDOW` items alive per slot of `max_concurrency` (running, or finished and not
yet handed over), so the work in flight does not grow with the input. Each item runs as a task
on the runtime loop (or, for a module with only a sync `forward`, in a bounded thread pool
whose inner calls still hop to the loop). The concurrency limit is a `_limits.Scope`, held per
request in flight, not per item: an item waiting out a backoff leaves its slot to the others,
which is why more items than slots are kept alive.

Finished items are handed over in completion order (`iterate`, `aiterate`: `(index, result or
exception)`), or gathered in input order (`run_batch`). With a journal (journal.py) each
finished item is recorded before it is handed over, and a rerun hands over the recorded ones
without running them again. Closing an iterator, or cancelling the batch (Ctrl-C on the sync
side), cancels every item in flight, stops pulling inputs, and refuses any further attempt
from calls already under way.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import sys
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Sized,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import _checks, _limits, _runtime
from .errors import BatchError, ConfigurationError, SignatureError

if TYPE_CHECKING:
    from .journal import Journal

__all__ = ["Work", "aiterate", "iterate", "run_batch"]

logger = logging.getLogger("dspy_async")

Inputs = Mapping[str, Any]
Finished = tuple[int, Any]
"""A finished item: its index in the input and its result, or the exception it failed with."""

# Items alive at once per slot of max_concurrency: enough that the items backing off (which
# hold no slot) leave none idle, few enough that memory stays flat however long the input.
WINDOW = 4
# The most inputs pulled at once (and, with a journal, looked up in one query).
CHUNK = 512


class _Progress(Protocol):
    def update(self, n: int = 1) -> object: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Work:
    """What a batch does with each item, and how: `acall(**item)` on the loop, or
    `sync_call(**item)` in a worker thread; the limits; the journal, if any (`program` names
    what writes it, `signature` types the outputs read back); and context managers entered
    around the whole batch, in the context every item starts from (a trace span)."""

    acall: Callable[..., Awaitable[Any]] | None = None
    sync_call: Callable[..., Any] | None = None
    max_concurrency: int = 16
    progress: bool | None = None
    timeout: float | None = None
    journal: str | os.PathLike[str] | None = None
    program: str = ""
    signature: type | None = None
    around: tuple[Callable[[], AbstractContextManager[object]], ...] = ()

    def check(self, items: object) -> None:
        """Refuse bad arguments before any request: limits, an input that is not a list of
        dicts (a list's items are all checked now; an iterator's as they are reached)."""
        _checks.positive_int("batch max_concurrency", self.max_concurrency)
        _checks.positive_number("batch timeout", self.timeout, allow_none=True)
        if self.journal is not None and not (
            isinstance(self.journal, str | os.PathLike) and os.fspath(self.journal)
        ):
            raise ConfigurationError(
                f"batch journal must be a file path, not {_checks.shown(self.journal)}"
            )
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            raise SignatureError(
                f"batch items must be an iterable of dicts of input fields, not a "
                f"{type(items).__name__}; wrap one item in a list: [{{'question': '...'}}]"
            )
        if isinstance(items, Sequence):
            for index, inputs in enumerate(items):
                if not isinstance(inputs, Mapping):
                    raise _not_a_mapping(index, inputs)


async def run_batch(
    items: Iterable[Inputs],
    *,
    acall: Callable[..., Awaitable[Any]] | None = None,
    sync_call: Callable[..., Any] | None = None,
    max_concurrency: int = 16,
    return_exceptions: bool = False,
    progress: bool | None = None,
    timeout: float | None = None,
    work: Work | None = None,
) -> list[Any]:
    """Call `acall(**item)` (or `sync_call(**item)` in worker threads) for every item; the
    results in input order. `work`, if given, replaces the other options.

    Must run on the runtime loop. Raises BatchError, after every item has finished, if any
    failed and `return_exceptions` is false; its `.results` are aligned with `items`.
    """
    if work is None:
        work = Work(acall, sync_call, max_concurrency, progress, timeout)
    work.check(items)
    results: list[Any] = [None] * len(items) if isinstance(items, Sized) else []
    failures: list[tuple[int, Exception]] = []
    run = await _Run.start(items, work)
    try:
        while chunk := await run.next_chunk():
            for index, outcome in chunk:
                if index >= len(results):
                    results.extend([None] * (index + 1 - len(results)))
                results[index] = outcome
                if isinstance(outcome, Exception):
                    failures.append((index, outcome))
    finally:
        await run.aclose()
    if failures and not return_exceptions:
        failures.sort(key=lambda failure: failure[0])
        errors = [error for _, error in failures]
        raise BatchError(f"{len(errors)} of {len(results)} batch items failed", errors, results)
    return results


def iterate(items: Iterable[Inputs], work: Work) -> Iterator[Finished]:
    """The finished items of a batch, in completion order, for sync code: each `next()`
    blocks until one is ready. Closing the iterator (or leaving a `for` loop over it, which
    closes it when it is dropped) cancels the items in flight."""
    work.check(items)
    return _iterate(items, work)


def _iterate(items: Iterable[Inputs], work: Work) -> Iterator[Finished]:
    run = _runtime.run(_Run.start(items, work))
    try:
        while chunk := _runtime.run(run.next_chunk()):
            yield from chunk
    finally:
        if _runtime.on_runtime_loop():  # dropped and collected on the loop: close it there
            asyncio.get_running_loop().create_task(run.aclose())
        else:
            _runtime.run(run.aclose())


def aiterate(items: Iterable[Inputs], work: Work) -> AsyncIterator[Finished]:
    """`iterate` for async code, on any event loop; `aclose()` cancels the items in flight."""
    work.check(items)
    return _aiterate(items, work)


async def _aiterate(items: Iterable[Inputs], work: Work) -> AsyncIterator[Finished]:
    run = await _runtime.arun(_Run.start(items, work))
    try:
        while chunk := await _runtime.arun(run.next_chunk()):
            for finished in chunk:
                yield finished
    finally:
        await _runtime.arun(run.aclose())


class _Run:
    """One batch on the runtime loop: pulls inputs while there is room, runs each as a task,
    and keeps the finished ones (in completion order) until they are handed over.

    `_alive` counts the items pulled and not yet handed over: running, looked up in the
    journal, being recorded, or finished. It never exceeds `_window`, so a consumer that
    stops reading also stops the batch from pulling more.
    """

    def __init__(self, items: Iterable[Inputs], work: Work, journal: Journal | None) -> None:
        self._inputs = enumerate(items)
        self._work = work
        self._journal = journal
        self._window = WINDOW * work.max_concurrency
        self._alive = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: deque[Finished] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._feeding: asyncio.Task[None] | None = None  # a journal lookup under way
        self._exhausted = False
        self._closed = False
        self._error: BaseException | None = None  # the input's or the journal's, raised last
        self._pool = (
            ThreadPoolExecutor(work.max_concurrency, "dspy-async-batch")
            if work.sync_call is not None
            else None
        )
        # The context every item starts from (each gets its own copy): the batch's scope and
        # whatever `work.around` opens. Entered and left through this one context, since the
        # batch may be driven and closed from different tasks.
        self._context = contextvars.copy_context()
        self._stack = ExitStack()
        self._scope: _limits.Scope = self._context.run(self._open)
        self._bar = _progress_bar(work.progress, items)
        self._stack.callback(self._bar.close)
        if journal is not None:
            journal.listen(self._recorded)

    def _open(self) -> _limits.Scope:
        scope = self._stack.enter_context(_limits.scope(self._work.max_concurrency))
        for around in self._work.around:
            self._stack.enter_context(around())
        return scope

    @classmethod
    async def start(cls, items: Iterable[Inputs], work: Work) -> _Run:
        """A run of `work` over `items`, its journal open (on the runtime loop)."""
        journal: Journal | None = None
        if work.journal is not None:
            from .journal import Journal

            journal = await Journal.open(work.journal, work.program, work.signature)
        return cls(items, work, journal)

    async def next_chunk(self) -> list[Finished]:
        """Every item finished since the last call, waiting for one if none is; [] once all
        are handed over. The input's or the journal's error is raised once the items pulled
        before it have been handed over."""
        self._fill()
        while not self._ready:
            if self._alive == 0 and self._feeding is None and (self._exhausted or self._closed):
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = list(self._ready)
        self._ready.clear()
        self._alive -= len(chunk)
        self._bar.update(len(chunk))
        self._fill()
        return chunk

    async def aclose(self) -> None:
        """Cancel what is in flight, stop pulling, record what finished, release everything."""
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()  # reaches calls made from worker threads, which tasks cannot
        pending = [*self._tasks, *([self._feeding] if self._feeding is not None else [])]
        for task in pending:
            task.cancel()
        try:
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            try:
                if self._journal is not None:
                    await self._journal.aclose()
            finally:
                self._context.run(self._stack.close)

    # -- pulling ----------------------------------------------------------------------------

    def _fill(self) -> None:
        """Pull inputs while there is room: started at once, or after a journal lookup."""
        while not (self._exhausted or self._closed or self._feeding is not None):
            room = min(self._window - self._alive, CHUNK)
            if room <= 0:
                return
            chunk = self._pull(room)
            if not chunk:
                return
            self._alive += len(chunk)
            if self._journal is None:
                for index, inputs in chunk:
                    self._launch(index, inputs, None)
            else:
                self._feeding = self._context.run(
                    asyncio.get_running_loop().create_task, self._feed(chunk)
                )

    def _pull(self, count: int) -> list[tuple[int, Any]]:
        chunk: list[tuple[int, Any]] = []
        try:
            for _ in range(count):
                chunk.append(next(self._inputs))
        except StopIteration:
            self._exhausted = True
        except Exception as error:  # the input's own failure ends the batch, raised last
            self._exhausted = True
            self._error = error
        return chunk

    async def _feed(self, chunk: list[tuple[int, Any]]) -> None:
        """Hand over the items the journal already holds; start the others."""
        assert self._journal is not None
        try:
            looked_up = await self._journal.lookup(chunk)
        except Exception as error:
            self._fail(error)
            self._alive -= len(chunk)
            return
        finally:
            self._feeding = None
        for (index, inputs), (key, found, recorded) in zip(chunk, looked_up, strict=True):
            if found:
                self._finish(index, recorded)
            else:
                self._launch(index, inputs, key)
        self._fill()
        self._wake()

    def _launch(self, index: int, inputs: Any, key: str | None) -> None:
        # Each item starts from its own copy of the batch's context (as create_task would
        # copy the current one, which is whichever item or task happened to make room).
        task = asyncio.get_running_loop().create_task(
            self._run_item(index, inputs, key), context=self._context.copy()
        )
        self._tasks.add(task)

    # -- finishing --------------------------------------------------------------------------

    async def _run_item(self, index: int, inputs: Any, key: str | None) -> None:
        outcome: Any
        try:
            if self._work.timeout is None and isinstance(inputs, Mapping):
                try:  # the common case, inline: one frame less per item in flight
                    outcome = await self._call(inputs)
                except Exception as error:
                    outcome = error
            else:
                outcome = await self._outcome(index, inputs)
        except asyncio.CancelledError as cancelled:
            if self._closed:
                raise
            outcome = cancelled  # cancelled from within, not by the batch: its own outcome
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
        if self._journal is not None and key is not None:
            self._journal.record(index, key, outcome)  # handed over once it is on disk
        else:
            self._finish(index, outcome)

    async def _outcome(self, index: int, inputs: Any) -> Any:
        """The outcome of an item that is no dict (its SignatureError), or of one run within
        the batch's `timeout` (a TimeoutError once it is over)."""
        if not isinstance(inputs, Mapping):
            return _not_a_mapping(index, inputs)
        timeout = self._work.timeout
        assert timeout is not None
        # Its own scope, so that a timed-out sync item's worker thread sends nothing more.
        with _limits.scope(None) as item:
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await self._call(inputs)
            except Exception as error:
                if not deadline.expired():
                    return error
                item.cancel()  # stops the inner calls of a sync item's worker thread
                return TimeoutError(f"batch item {index} took longer than {timeout} s")

    def _call(self, inputs: Inputs) -> Awaitable[Any]:
        work = self._work
        if work.acall is not None:
            return work.acall(**inputs)
        assert work.sync_call is not None and self._pool is not None
        context = contextvars.copy_context()  # carries the scopes into the worker thread
        call = functools.partial(context.run, work.sync_call, **inputs)
        return asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _recorded(self, finished: list[Finished], error: BaseException | None) -> None:
        """The journal's report, on the loop: these items are recorded (or could not be)."""
        if error is not None:
            self._fail(error)
        for index, outcome in finished:
            self._finish(index, outcome)

    def _finish(self, index: int, outcome: Any) -> None:
        self._ready.append((index, outcome))
        self._wake()

    def _fail(self, error: BaseException) -> None:
        """End the batch with `error` once what is in flight is handed over."""
        self._exhausted = True
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _not_a_mapping(index: int, inputs: object) -> SignatureError:
    return SignatureError(
        f"batch item {index} is a {type(inputs).__name__}; each item must be a dict "
        "of input fields, e.g. {'question': '...'}"
    )


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: bool | None, items: object) -> _Progress:
    """A tqdm bar on stderr when asked for, or by default when stderr is a terminal; its
    total is the input's length when it has one."""
    wanted = sys.stderr.isatty() if progress is None else progress
    if not wanted:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress:
            raise ImportError(
                "progress=True needs tqdm: pip install 'dspy-async[progress]'"
            ) from None
        return _NoProgress()
    total = len(items) if isinstance(items, Sized) else None
    bar: _Progress = tqdm(total=total, unit="item", file=sys.stderr, leave=True)
    return bar
