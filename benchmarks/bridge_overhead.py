"""Per-call cost of a sync call bridged onto an event loop, side by side in one run.

Each implementation runs a trivial coroutine (or, for the floor, a trivial function on another
thread) from one caller thread and from 16 caller threads at once. The table gives median and
p99 microseconds per call and the ratios to the minimal bridge and to the ping-pong floor.

    python benchmarks/bridge_overhead.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from dspy_async import _runtime

Call = Callable[[], object]


async def trivial() -> int:
    return 1


@contextlib.contextmanager
def ping_pong_floor() -> Iterator[Call]:
    """No asyncio at all: hand a job to a worker thread and wait on a lock it releases."""
    jobs: queue.SimpleQueue[tuple[threading.Lock, list[int]] | None] = queue.SimpleQueue()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            done, box = job
            box.append(1)
            done.release()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()

    def call() -> object:
        done = threading.Lock()
        done.acquire()
        box: list[int] = []
        jobs.put((done, box))
        done.acquire()
        return box[0]

    yield call
    jobs.put(None)
    thread.join()


@contextlib.contextmanager
def minimal_bridge() -> Iterator[Call]:
    """`run_coroutine_threadsafe(...).result()` against a loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield lambda: asyncio.run_coroutine_threadsafe(trivial(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@contextlib.contextmanager
def asyncio_handoff(with_task: bool) -> Iterator[Call]:
    """What any bridge onto a loop thread pays, at the least: `call_soon_threadsafe` (the
    self-pipe wake-up) and a lock the callback releases; with `with_task`, also a task that
    steps the coroutine (what a call needs for timeouts, cancellation and `current_task`)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def drive(done: threading.Lock) -> None:
        await trivial()
        done.release()

    def call() -> object:
        done = threading.Lock()
        done.acquire()
        if with_task:
            loop.call_soon_threadsafe(loop.create_task, drive(done))
        else:
            loop.call_soon_threadsafe(done.release)
        done.acquire()
        return 1

    yield call
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@contextlib.contextmanager
def dspy_async_run() -> Iterator[Call]:
    _runtime.run(trivial())  # start the loop thread outside the measurement
    yield lambda: _runtime.run(trivial())


@contextlib.contextmanager
def asyncio_run_per_call() -> Iterator[Call]:
    yield lambda: asyncio.run(trivial())


@contextlib.contextmanager
def anyio_portal() -> Iterator[Call]:
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as portal:
        yield lambda: portal.call(trivial)


@contextlib.contextmanager
def asgiref_async_to_sync() -> Iterator[Call]:
    from asgiref.sync import async_to_sync

    yield async_to_sync(trivial)


@contextlib.contextmanager
def synchronicity_wrapper() -> Iterator[Call]:
    from synchronicity import Synchronizer

    synchronizer = Synchronizer()
    blocking = synchronizer.create_blocking(trivial)
    yield blocking
    synchronizer._close_loop()  # type: ignore[no-untyped-call]


IMPLEMENTATIONS: dict[str, Callable[[], contextlib.AbstractContextManager[Call]]] = {
    "ping-pong floor (no asyncio)": ping_pong_floor,
    "minimal run_coroutine_threadsafe": minimal_bridge,
    "asyncio handoff, no task": functools.partial(asyncio_handoff, False),
    "asyncio handoff + a task": functools.partial(asyncio_handoff, True),
    "dspy-async run()": dspy_async_run,
    "asyncio.run per call": asyncio_run_per_call,
    "anyio blocking portal": anyio_portal,
    "asgiref async_to_sync": asgiref_async_to_sync,
    "synchronicity": synchronicity_wrapper,
}
# Slow designs get fewer calls so the run stays short; per-call figures are unaffected.
CALL_SHARE = {"asyncio.run per call": 0.1, "asgiref async_to_sync": 0.2}


def timed_calls(call: Call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def measure(call: Call, calls: int, threads: int) -> tuple[list[float], float]:
    """Per-call latencies (us) from `threads` callers at once, and total calls per second."""
    per_thread = max(calls // threads, 50)
    timed_calls(call, min(200, per_thread))  # warm up
    results: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def caller(index: int) -> None:
        barrier.wait()
        results[index] = timed_calls(call, per_thread)

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    samples = [sample for samples in results for sample in samples]
    return samples, len(samples) / (time.perf_counter() - started)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per implementation")
    args = parser.parse_args()

    rows: list[tuple[str, int, float | None, float | None, float | None]] = []
    for threads in (1, 16):
        for name, implementation in IMPLEMENTATIONS.items():
            calls = int(args.calls * CALL_SHARE.get(name, 1.0))
            try:
                with implementation() as call:
                    samples, per_second = measure(call, calls, threads)
            except ImportError as error:
                print(f"{name}: not installed ({error.name})")
                rows.append((name, threads, None, None, None))
                continue
            median, p99 = statistics.median(samples), percentile(samples, 0.99)
            rows.append((name, threads, median, p99, per_second))

    print(
        f"\n{'implementation':34} {'threads':>7} {'median us':>10} {'p99 us':>9}"
        f" {'x bridge':>9} {'x floor':>8} {'calls/s':>9}"
    )
    for threads in (1, 16):
        floor = next(r[2] for r in rows if r[1] == threads and r[0].startswith("ping-pong"))
        bridge = next(r[2] for r in rows if r[1] == threads and r[0].startswith("minimal"))
        assert floor and bridge, "the two reference designs need nothing installed"
        for name, row_threads, row_median, row_p99, row_rate in rows:
            if row_threads != threads:
                continue
            if row_median is None or row_p99 is None or row_rate is None:
                print(f"{name:34} {threads:>7} {'not installed':>10}")
                continue
            print(
                f"{name:34} {threads:>7} {row_median:>10.1f} {row_p99:>9.1f}"
                f" {row_median / bridge:>9.2f} {row_median / floor:>8.2f} {row_rate:>9.0f}"
            )


if __name__ == "__main__":
    main()
