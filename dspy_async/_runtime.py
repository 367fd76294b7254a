"""The hidden event-loop thread that runs every provider call.

One daemon thread per process runs one asyncio loop, started lazily on first use. Sync callers
hand it coroutines with `run` (blocking) or `submit` (a `concurrent.futures.Future`); async
callers on other loops use `arun`, so every call shares one connection pool and one set of
concurrency limits. The design follows anyio's blocking portal, plus what a library that lives
inside other people's processes needs: fork safety, a clean interpreter exit, Ctrl-C handling,
and a per-loop registry of resources (HTTP clients, semaphores) that die with their loop.

Waits that could never end are refused with a typed error instead of hanging: a blocking call
or `submit(...).result()` on the loop thread (`RuntimeReentryError`), and a call after the
runtime shut down at interpreter exit, or a wait in a forked child for a future of the parent
(`RuntimeClosedError`). The runtime is not restarted after exit: nothing would be left to close
a new loop's sockets, and daemon threads cannot start a thread during finalization anyway.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextvars
import inspect
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar, cast

from . import _forksafe
from .errors import RuntimeClosedError, RuntimeReentryError

__all__ = ["arun", "get_loop", "loop_resource", "on_runtime_loop", "run", "submit"]

T = TypeVar("T")
Closer = Callable[[Any], Awaitable[None] | None]

logger = logging.getLogger("dspy_async")

THREAD_NAME = "dspy-async-runtime"
_EAGER_TASKS = sys.version_info >= (3, 12)
# How long an interrupted or timed-out caller waits for the cancelled task to unwind.
CANCEL_GRACE = 5.0
# How long interpreter exit waits for tasks to cancel and resources to close.
SHUTDOWN_GRACE = 5.0

REENTRY_MESSAGE = (
    "a blocking dspy-async call was made on the runtime's own event loop, where it would "
    "deadlock; await the async API (acall, abatch) instead"
)
CLOSED_MESSAGE = (
    "the dspy-async runtime shut down at interpreter exit; a call made after that (from an "
    "atexit handler registered before dspy_async was imported, or a daemon thread) cannot run"
)


class _Runtime:
    """A loop running forever in its own daemon thread, owned by the process that made it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_log_loop_exception)
        self.resources: dict[Hashable, tuple[Any, Closer | None]] = {}
        self.closed = False  # set once shutdown begins, never cleared
        # Calls to start, handed over by any thread; see `start_soon`.
        self._starts: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._drain_queued = False
        started = threading.Event()  # fork-safe: per call (this start-up only)
        self.thread = threading.Thread(
            target=self._serve, args=(started,), name=THREAD_NAME, daemon=True
        )
        self.thread.start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    def start_soon(self, start: Callable[..., None], *args: Any) -> None:
        """Run `start(*args)` on the loop soon, from any thread, in the order given.

        Calls arriving together (many threads, one loop) share one wakeup of the loop instead
        of one each: the first queues a drain, the others find it queued. Races: a caller that
        sees a drain queued appended its call before that drain empties the queue (the flag is
        cleared before the queue is read), and two callers that both queue one only cost an
        empty drain. Raises RuntimeError once the loop is closed.
        """
        self._starts.append((start, args))
        if not self._drain_queued:
            self._drain_queued = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._drain_queued = False
        starts = self._starts
        while starts:
            start, args = starts.popleft()
            start(*args)

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def shutdown(self) -> None:
        """Cancel what is left, close the registered resources on the loop, stop and join."""
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        # Set before the closing is queued, so a call whose start is queued behind it sees it
        # and refuses (`_Call._start`) instead of starting work that no one would finish.
        self.closed = True
        closing = asyncio.run_coroutine_threadsafe(self._close_everything(), self.loop)
        try:
            closing.result(SHUTDOWN_GRACE)
        except Exception:
            logger.exception("dspy-async runtime did not shut down cleanly")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(SHUTDOWN_GRACE)
        if not self.thread.is_alive():
            self.loop.close()

    async def _close_everything(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        resources, self.resources = list(self.resources.values()), {}
        for resource, close in reversed(resources):
            if close is None:
                continue
            try:
                closing = close(resource)
                if closing is not None:
                    await closing
            except Exception:
                logger.exception("closing %r at exit failed", type(resource).__name__)
        await self.loop.shutdown_asyncgens()


class _Call(Generic[T]):
    """One coroutine running on the runtime loop, watched from another thread.

    The coroutine runs inside `_drive`, which records the outcome and releases `done` from
    within the task itself: no done-callback round through the loop, and the waiting thread
    blocks on a bare lock, the cheapest handoff there is. `done` is released only once the
    coroutine has really unwound, which is what an interrupted caller waits for. `future`,
    given only by `submit`/`arun`, mirrors the outcome, and cancelling it cancels the task.

    A failed call's traceback holds the frames of `_drive` and `outcome`, whose `self` is this
    object: so the error is never left on it once handed over (to the future, or raised by
    `outcome`), or error -> traceback -> frame -> self -> error would be a reference cycle that
    keeps everything the call touched alive until a full garbage collection.
    """

    __slots__ = ("done", "error", "future", "loop", "result", "runtime", "task")

    def __init__(
        self, runtime: _Runtime, coro: Coroutine[Any, Any, T], future: _Future[T] | None = None
    ) -> None:
        self.runtime = runtime
        self.loop = runtime.loop
        self.done = threading.Lock()  # fork-safe: per call
        self.done.acquire()
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.future = future
        if future is not None:
            future.add_done_callback(self._on_future_done)
        try:
            runtime.start_soon(self._start, coro, contextvars.copy_context())
        except RuntimeError:  # the loop closed after `_runtime()` checked: exit finished since
            coro.close()
            raise RuntimeClosedError(CLOSED_MESSAGE) from None

    def _start(self, coro: Coroutine[Any, Any, T], context: contextvars.Context) -> None:
        if self.runtime.closed:
            # Queued behind the shutdown, which cancels only the tasks it saw when it began.
            # (One queued after the loop stopped never runs: its caller can only be a daemon
            # thread that checked a moment before exit began, and it ends with the process.)
            self.error = RuntimeClosedError(CLOSED_MESSAGE)
        elif self.future is not None and self.future.cancelled():
            self.error = asyncio.CancelledError()
        if self.error is not None:
            coro.close()
            self._finish()
            return
        if _EAGER_TASKS:  # Python 3.12+: the first step runs now, not one loop turn later
            self.task = asyncio.Task(  # type: ignore[call-arg, unused-ignore]
                self._drive(coro), loop=self.loop, context=context, eager_start=True
            )
        else:
            self.task = self.loop.create_task(self._drive(coro), context=context)

    async def _drive(self, coro: Coroutine[Any, Any, T]) -> None:
        try:
            self.result = await coro
        except BaseException as error:  # handed to the caller, re-raised there
            if isinstance(error, asyncio.CancelledError) and self.runtime.closed:
                error = RuntimeClosedError("the dspy-async runtime shut down during this call")
            self.error = error
        finally:
            self._finish()

    def _finish(self) -> None:
        """Hand the outcome to the future, if any (which then owns it), and wake the waiter."""
        future, self.future = self.future, None
        if future is not None:
            self._settle_future(future)
            self.error = None  # see the class docstring: the future holds it now
        self.done.release()

    def _settle_future(self, future: concurrent.futures.Future[T]) -> None:
        try:
            if isinstance(self.error, asyncio.CancelledError):
                future.cancel()
            elif self.error is not None:
                future.set_exception(self.error)
            else:
                future.set_result(self.result)
        except concurrent.futures.InvalidStateError:
            pass  # the caller cancelled the future while the task was finishing

    def _on_future_done(self, future: concurrent.futures.Future[T]) -> None:
        # Runs in whichever thread cancelled. `_cancel_task` is queued behind `_start` (whose
        # drain was queued first, see `start_soon`), so the task exists by the time it runs,
        # or `_start` sees the cancelled future and never starts.
        if future.cancelled() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def outcome(self) -> T:
        """The result, or raise the error (once: it is not kept, see the class docstring)."""
        error, self.error = self.error, None
        if error is None:
            return self.result
        try:
            raise error
        finally:
            del error  # this frame joins the error's traceback; its own reference would loop

    def cancel_and_wait(self, grace: float) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel_task)
        if not self.done.acquire(timeout=grace):
            logger.warning("a cancelled dspy-async call did not unwind within %.1f s", grace)


class _Future(concurrent.futures.Future[T]):
    """The future `submit` returns: it refuses the waits that could never end.

    On the runtime's loop thread, waiting for an unfinished call blocks the very loop that
    has to finish it, freezing every call (an event callback calling `.result()` would); in a
    forked child, the loop that would finish it stayed in the parent, and so may the lock of
    the future's condition. `concurrent.futures.wait()` and `as_completed()` do not go through
    these methods, so they are not caught.
    """

    def __init__(self, runtime: _Runtime) -> None:
        super().__init__()
        self._runtime = runtime

    def _check_wait(self) -> None:
        runtime = self._runtime
        if runtime.pid != os.getpid():  # checked first: `done()` takes the inherited lock
            raise RuntimeClosedError(
                f"this call was submitted in process {runtime.pid} before it forked; only "
                "that process can wait for it"
            )
        if runtime.on_loop_thread() and not self.done():
            raise RuntimeReentryError(REENTRY_MESSAGE)

    def result(self, timeout: float | None = None) -> T:
        self._check_wait()
        try:
            return super().result(timeout)
        finally:
            del self  # as concurrent.futures does: this frame is in the error's traceback

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._check_wait()
        return super().exception(timeout)


# Taken only to make the runtime; a parent thread may hold it at fork, so it is fork-safe.
_lock = _forksafe.lock()
_current: _Runtime | None = None
# Runtimes inherited through fork: their thread does not exist in the child, so they can be
# neither used nor closed. They are kept referenced so their sockets are never finalized here.
_inherited: list[_Runtime] = []


def _runtime() -> _Runtime:
    global _current
    runtime = _current
    if runtime is None or runtime.pid != os.getpid():
        with _lock:
            if _current is not None and _current.pid != os.getpid():
                _inherited.append(_current)
                _current = None
            if _current is None:
                _current = _Runtime()
            runtime = _current
    if runtime.closed:
        raise RuntimeClosedError(CLOSED_MESSAGE)
    return runtime


def _runtime_for(coro: Coroutine[Any, Any, object]) -> _Runtime:
    """The runtime to run `coro` on; if it is refused, `coro` is closed, never left unawaited."""
    try:
        return _runtime()
    except RuntimeClosedError:
        coro.close()
        raise


def _after_fork_in_child() -> None:
    # The parent's loop thread does not exist here: the child starts its own on first use.
    global _current
    if _current is not None:
        _inherited.append(_current)
        _current = None


def _shutdown_at_exit() -> None:
    runtime = _current
    if runtime is not None and runtime.pid == os.getpid():
        runtime.shutdown()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    logger.error(
        "dspy-async runtime: %s", context.get("message", "unhandled error"), exc_info=exc_info
    )


def _check_coroutine(coro: object) -> None:
    if not inspect.iscoroutine(coro):
        raise TypeError(f"expected a coroutine, got {type(coro).__name__}")


def get_loop() -> asyncio.AbstractEventLoop:
    """The runtime's loop, starting its thread if this process has none yet."""
    return _runtime().loop


def on_runtime_loop() -> bool:
    """Whether the caller is running on the runtime's loop thread."""
    runtime = _current
    return runtime is not None and runtime.pid == os.getpid() and runtime.on_loop_thread()


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start `coro` on the runtime loop; cancelling the returned future cancels the task.

    The future's `result()` and `exception()` raise `RuntimeReentryError` on the loop thread
    while the call is unfinished, instead of blocking the loop that would finish it.
    """
    _check_coroutine(coro)
    runtime = _runtime_for(coro)
    future: _Future[T] = _Future(runtime)
    _Call(runtime, coro, future)
    return future


def run(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run `coro` on the runtime loop and block until it is done.

    The coroutine's exception is re-raised as is. On `timeout`, or if the wait is interrupted
    (KeyboardInterrupt, SystemExit), the task is cancelled and given time to unwind before this
    raises, so no orphan keeps calling a provider in the background.
    """
    _check_coroutine(coro)
    runtime = _runtime_for(coro)
    if runtime.on_loop_thread():
        coro.close()
        raise RuntimeReentryError(REENTRY_MESSAGE)
    call = _Call(runtime, coro)
    try:
        finished = call.done.acquire(timeout=-1 if timeout is None else timeout)
    except BaseException:  # KeyboardInterrupt, SystemExit: unwind the task, then let it through
        call.cancel_and_wait(CANCEL_GRACE)
        raise
    if not finished:
        call.cancel_and_wait(CANCEL_GRACE)
        raise TimeoutError(f"dspy-async call did not finish within {timeout} s")
    return call.outcome()


def arun(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """`coro` to await on the runtime loop from any event loop: on that loop, `coro` itself.

    A plain function, not a coroutine, so that a call already on the runtime loop (every LM
    call of a batch) gets no extra frame. Cancelling the awaiting task cancels the work on the
    runtime loop.
    """
    runtime = _current
    if runtime is not None and not runtime.closed and runtime.on_loop_thread():
        return coro  # the common case, every LM call of a batch: checked in one step
    _check_coroutine(coro)
    runtime = _runtime_for(coro)
    if runtime.on_loop_thread():
        return coro
    return _from_elsewhere(coro)


async def _from_elsewhere(coro: Coroutine[Any, Any, T]) -> T:
    return await asyncio.wrap_future(submit(coro))


def loop_resource(key: Hashable, factory: Callable[[], T], *, close: Closer | None = None) -> T:
    """The runtime loop's instance of a resource, made by `factory` on first use.

    Must be called on the runtime loop. `close` (sync or async) runs on the loop at exit; after
    a fork the child builds its own, never touching the parent's.
    """
    runtime = _current
    if runtime is None or runtime.pid != os.getpid() or not runtime.on_loop_thread():
        raise RuntimeError("loop_resource() must be called on the dspy-async runtime loop")
    entry = runtime.resources.get(key)
    if entry is None:
        entry = runtime.resources[key] = (factory(), close)
    return cast(T, entry[0])
