"""The hidden loop thread: overlap, cancellation, re-entry, contextvars, fork and exit."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest

from dspy_async import RuntimeReentryError, _runtime

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def double_after(delay: float, value: int) -> int:
    await asyncio.sleep(delay)
    return value * 2


async def sleep_recording_cancel(cancelled: threading.Event, started: threading.Event) -> None:
    started.set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await asyncio.sleep(0.05)  # cleanup that itself awaits
        cancelled.set()
        raise


def run_script(code: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-X", "dev", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_two_hundred_threads_overlap_on_one_loop() -> None:
    results: dict[int, int] = {}
    barrier = threading.Barrier(200)

    def call(i: int) -> None:
        barrier.wait()
        results[i] = _runtime.run(double_after(0.2, i))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(200)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - started
    assert results == {i: i * 2 for i in range(200)}
    # 200 sequential calls would take 40 s; overlapping on one loop takes about 0.2 s.
    assert elapsed < 1.8
    runtime_threads = [t for t in threading.enumerate() if t.name == _runtime.THREAD_NAME]
    assert len(runtime_threads) == 1


def test_exception_keeps_type_and_traceback() -> None:
    async def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing") as info:
        _runtime.run(fail())
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "fail" in frames


def test_timeout_cancels_and_awaits_cleanup() -> None:
    cancelled, started = threading.Event(), threading.Event()
    with pytest.raises(TimeoutError):
        _runtime.run(sleep_recording_cancel(cancelled, started), timeout=0.1)
    # The cleanup ran before run() raised, not at some later point.
    assert cancelled.is_set()


def test_cancelling_a_submitted_future_cancels_the_task() -> None:
    cancelled, started = threading.Event(), threading.Event()
    future = _runtime.submit(sleep_recording_cancel(cancelled, started))
    assert started.wait(5)
    assert future.cancel()
    assert cancelled.wait(5)
    with pytest.raises(CancelledError):
        future.result()


def test_submit_returns_result_through_future() -> None:
    futures = [_runtime.submit(double_after(0.01, i)) for i in range(20)]
    assert [f.result(10) for f in futures] == [i * 2 for i in range(20)]


def test_cancelling_an_awaiting_task_cancels_the_work() -> None:
    cancelled, started = threading.Event(), threading.Event()

    async def caller() -> None:
        task = asyncio.create_task(_runtime.arun(sleep_recording_cancel(cancelled, started)))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(caller())
    assert cancelled.wait(5)


async def test_arun_from_another_loop_shares_the_runtime_loop() -> None:
    async def which_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert await _runtime.arun(which_loop()) is _runtime.get_loop()
    assert asyncio.get_running_loop() is not _runtime.get_loop()
    results = await asyncio.gather(*(_runtime.arun(double_after(0.05, i)) for i in range(50)))
    assert results == [i * 2 for i in range(50)]


def test_arun_on_the_runtime_loop_runs_directly() -> None:
    async def outer() -> int:
        return await _runtime.arun(double_after(0, 5))

    assert _runtime.run(outer()) == 10


def test_caller_contextvars_are_copied_in_not_back() -> None:
    async def read_and_write() -> str:
        seen = request_id.get()
        request_id.set("changed inside")
        return seen

    def in_thread(name: str) -> tuple[str, str]:
        request_id.set(name)
        return _runtime.run(read_and_write()), request_id.get()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(in_thread, [f"req-{i}" for i in range(16)]))
    assert results == [(f"req-{i}", f"req-{i}") for i in range(16)]


def test_run_on_the_loop_thread_raises_instead_of_deadlocking() -> None:
    async def reenter() -> str:
        inner = double_after(0, 1)
        try:
            _runtime.run(inner)
        except RuntimeReentryError as error:
            return str(error)
        return "no error"

    message = _runtime.submit(reenter()).result(timeout=5)
    assert "await the async API" in message
    assert isinstance(RuntimeReentryError("x"), RuntimeError)


def test_run_inside_a_running_event_loop_works() -> None:
    # A Jupyter cell or an async view: the calling thread runs its own loop.
    async def notebook_cell() -> int:
        return _runtime.run(double_after(0.01, 4))

    assert asyncio.run(notebook_cell()) == 8


def test_run_rejects_non_coroutines() -> None:
    with pytest.raises(TypeError, match="expected a coroutine"):
        _runtime.run(42)  # type: ignore[arg-type]


def test_loop_resource_is_one_per_key_and_only_on_the_loop() -> None:
    async def get(key: str) -> object:
        return _runtime.loop_resource(("test", key), object)

    first, again, other = (_runtime.run(get(k)) for k in ("a", "a", "b"))
    assert first is again
    assert first is not other
    with pytest.raises(RuntimeError, match="runtime loop"):
        _runtime.loop_resource(("test", "a"), object)


def test_errors_in_background_callbacks_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise ValueError("background failure")

    with caplog.at_level(logging.ERROR, logger="dspy_async"):
        _runtime.get_loop().call_soon_threadsafe(broken)
        _runtime.run(asyncio.sleep(0.01))
    assert any("background failure" in str(r.exc_info) for r in caplog.records)


@pytest.mark.slow
def test_sigint_cancels_the_task_and_exits_promptly(tmp_path: object) -> None:
    code = """
        import asyncio, sys
        from dspy_async import _runtime

        async def long_call():
            print("started", flush=True)
            try:
                await asyncio.sleep(60)
            finally:
                print("cleanup", flush=True)

        _runtime.run(long_call())
    """
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=20)
    assert time.monotonic() - interrupted < 5
    assert "cleanup" in stdout
    assert "KeyboardInterrupt" in stderr
    assert process.returncode != 0


def _child_job(value: int) -> int:
    return _runtime.run(double_after(0.01, value))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_gets_a_fresh_loop_and_parent_keeps_working() -> None:
    parent_loop = _runtime.get_loop()
    assert _runtime.run(double_after(0, 1)) == 2

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not hang on the parent's (absent) loop thread
        status = 1
        try:
            result = _runtime.run(double_after(0.01, 21), timeout=10)
            fresh = _runtime.get_loop() is not parent_loop
            os.write(write_end, f"{result} {fresh}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        assert pipe.read() == "42 True"
    assert os.waitstatus_to_exitcode(status) == 0
    assert _runtime.run(double_after(0, 3)) == 6
    assert _runtime.get_loop() is parent_loop

    # The shape of Celery's prefork pool: a multiprocessing "fork" pool after the parent used it.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_child_job, range(6)) == [0, 2, 4, 6, 8, 10]
    assert _runtime.run(double_after(0, 5)) == 10


@pytest.mark.slow
def test_exit_after_calls_leaves_stderr_empty() -> None:
    result = run_script(
        """
        import asyncio
        from dspy_async import _runtime

        class Resource:
            closed = False
            async def aclose(self):
                await asyncio.sleep(0)
                print("resource closed", flush=True)

        async def work(i):
            _runtime.loop_resource("res", Resource, close=lambda r: r.aclose())
            await asyncio.sleep(0.01)
            return i

        print(sum(_runtime.run(work(i)) for i in range(5)), flush=True)
        _runtime.submit(asyncio.sleep(30))  # still pending at exit: cancelled, not destroyed
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10", "resource", "closed"]
    assert result.stderr == ""
