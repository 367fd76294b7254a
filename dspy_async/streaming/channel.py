"""The handoff between a stream's producer, a task on the runtime loop, and its consumer: a
thread blocked in `next()`, or a task on any event loop awaiting `__anext__`.

At most `capacity` items (and `max_weight` characters of text) wait for the consumer; past
that, `put` waits, and so the producer reads nothing more from the server until the consumer
takes one: a slow consumer holds the server back through TCP instead of making this process
buffer without bound. The consumer waits on a bare lock (a thread) or a future of its own
loop (a task), woken as soon as an item is put, with no polling; the producer waits on a
future of the runtime loop. One lock guards the state, and nobody is woken while it is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["CAPACITY", "MAX_WEIGHT", "Channel", "Ended", "Put", "pump"]

T = TypeVar("T")
R = TypeVar("R")

CAPACITY = 64
"""Items the consumer may fall behind by before the producer waits."""
MAX_WEIGHT = 256 * 1024
"""Characters of text the consumer may fall behind by (a hostile server's deltas can be big)."""

Put = Callable[[T], Awaitable[None]]


class Ended:
    """The producer's last word: its result, or the exception it ended with."""

    __slots__ = ("error", "result")

    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    with contextlib.suppress(RuntimeError):  # that loop closed: nobody is waiting any more
        loop.call_soon_threadsafe(_release, future)


class Channel(Generic[T]):
    """Items from a producer on `loop` to one consumer, in order, with backpressure.
    `weight(item)` is how much text an item holds."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        weight: Callable[[T], int],
        *,
        capacity: int = CAPACITY,
        max_weight: int = MAX_WEIGHT,
    ) -> None:
        self._loop = loop
        self._weigh = weight
        self.capacity = capacity
        self.max_weight = max_weight
        self._lock = threading.Lock()  # fork-safe: per call (one stream's)
        self._items: deque[T] = deque()
        self._weight = 0
        self._ended: Ended | None = None
        self._closed = False  # the consumer went away
        self._wake_consumer: Callable[[], None] | None = None
        self._room: asyncio.Future[None] | None = None  # the producer waiting for room
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        # Set once the producer ended, however it ended.
        self.finished = threading.Event()  # fork-safe: per call

    # -- the producer's side, on the runtime loop ---------------------------------------

    def start(self) -> bool:
        """Called by the producer's task as it begins; False if the consumer already left
        (a task cancelled before its first step would skip its own `finally`)."""
        if self._cancelled:
            return False
        self._task = asyncio.current_task()
        return True

    async def put(self, item: T) -> None:
        """Hand `item` on, waiting while the consumer is too far behind."""
        weight = self._weigh(item)
        while True:
            with self._lock:
                if self._closed:
                    return  # the consumer left; the cancellation is on its way
                full = len(self._items) >= self.capacity or self._weight >= self.max_weight
                if not full or not self._items:
                    self._items.append(item)
                    self._weight += weight
                    wake, self._wake_consumer = self._wake_consumer, None
                    break
                room = self._room = self._loop.create_future()
            await room
        if wake is not None:
            wake()

    def end(self, ended: Ended) -> None:
        """The producer is done; the consumer gets `ended` after every item put before."""
        with self._lock:
            self._ended = ended
            wake, self._wake_consumer = self._wake_consumer, None
        self.finished.set()
        if wake is not None:
            wake()

    # -- the consumer's side --------------------------------------------------------------

    def get(self) -> T | Ended:
        """The next item, or the Ended once every item was taken; blocks this thread."""
        while True:
            with self._lock:
                if self._items or self._ended is not None:
                    return self._take()
                signal = threading.Lock()  # fork-safe: per call (one wait)
                signal.acquire()
                self._wake_consumer = signal.release
            signal.acquire()  # a KeyboardInterrupt lands here, and the caller closes

    async def aget(self) -> T | Ended:
        """The next item, or the Ended once every item was taken; awaited on any loop."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._items or self._ended is not None:
                    return self._take()
                ready: asyncio.Future[None] = loop.create_future()
                # On the runtime loop itself, the producer wakes it directly.
                wake = _release if loop is self._loop else functools.partial(_threadsafe, loop)
                self._wake_consumer = functools.partial(wake, ready)
            await ready

    def _take(self) -> T | Ended:
        # Under the lock.
        if not self._items:
            assert self._ended is not None
            ended = self._ended
            # Not kept: its error's traceback holds the producer's frame, which holds this
            # channel, and error -> frame -> channel -> error would be a reference cycle.
            self._ended = Ended()
            return ended
        item = self._items.popleft()
        self._weight -= self._weigh(item)
        room, self._room = self._room, None
        if room is not None:
            _threadsafe(self._loop, room)
        return item

    def close(self) -> None:
        """The consumer is leaving: drop what waits and cancel the producer (at once, from
        any thread; `finished` is set once it has unwound)."""
        with self._lock:
            self._closed = True
            self._items.clear()
            self._weight = 0
            room, self._room = self._room, None
        if room is not None:
            _threadsafe(self._loop, room)
        with contextlib.suppress(RuntimeError):  # the runtime loop is gone, and the task too
            self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        else:
            self._cancelled = True


async def pump(channel: Channel[T], produce: Callable[[Put[T]], Awaitable[R]]) -> None:
    """Run `produce(channel.put)` on the runtime loop and end the channel with its outcome.

    Every outcome goes to the consumer, a cancellation included (its own `close()`, or the
    runtime shutting down), so the task itself always ends quietly: nobody awaits it.
    """
    if not channel.start():
        channel.end(Ended(error=asyncio.CancelledError()))
        return
    try:
        result = await produce(channel.put)
    except BaseException as error:  # handed to the consumer, raised there
        channel.end(Ended(error=error))
    else:
        channel.end(Ended(result))
