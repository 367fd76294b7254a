"""Calls handed to the runtime from many threads at once share wake-ups of its loop: each still
gets its own result, in its own context, and a call cancelled right after it was submitted
never runs past its cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading

import pytest

from dspy_async import _runtime

caller: contextvars.ContextVar[int] = contextvars.ContextVar("caller", default=-1)


async def echo(value: int) -> tuple[int, int]:
    await asyncio.sleep(0)
    return value, caller.get()


def test_many_threads_each_get_their_own_results_and_context() -> None:
    errors: list[BaseException] = []

    def calls(thread: int) -> None:
        caller.set(thread)
        try:
            for n in range(300):
                assert _runtime.run(echo(thread * 1000 + n)) == (thread * 1000 + n, thread)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=calls, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


@pytest.mark.slow
def test_a_call_cancelled_at_once_from_many_threads_never_runs_on() -> None:
    finished: list[int] = []
    lock = threading.Lock()

    async def slow(n: int) -> None:
        await asyncio.sleep(0.3)
        with lock:
            finished.append(n)

    def submit_and_cancel(thread: int) -> list[concurrent.futures.Future[None]]:
        futures = [_runtime.submit(slow(thread * 100 + n)) for n in range(50)]
        for future in futures:
            future.cancel()
        return futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(submit_and_cancel, range(8)))
    for future in (future for batch in batches for future in batch):
        assert future.cancelled()

    _runtime.run(asyncio.sleep(1.0))  # long past the end of any that had not been cancelled
    assert finished == []
