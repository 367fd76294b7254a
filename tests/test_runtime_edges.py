"""The runtime's edges: waits that could never end are refused, exit is typed, failures let go.

A `submit()` future waited on from the loop thread (an event callback runs there), a call after
the runtime shut down at interpreter exit, and the memory a failed call held: each used to
hang the loop, raise a raw `RuntimeError: Event loop is closed`, or sit in a reference cycle
until a full garbage collection.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import Iterator

import pytest

from dspy_async import LM, LMError, RetryPolicy, RuntimeReentryError, _runtime, events
from dspy_async.testing import ProviderSimulator


class Payload:
    """Stands for a large object (a document, a prompt) that a call carries."""


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees objects: anything in a cycle stays until re-enabled."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-X", "dev", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_result_in_an_event_callback_is_refused_instead_of_freezing_the_loop(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = LM("openai/sim", api_base=provider_simulator.api_base("openai"), api_key="sk-test")
    refused: list[Exception] = []

    def on_request(event: events.LMEvent) -> None:
        if isinstance(event, events.RequestEvent) and event.attempt == 1 and not refused:
            inner = _runtime.submit(lm.acall("from the callback"))
            for wait in (inner.result, inner.exception):
                try:
                    wait(60)  # blocking here would stall every call for the whole minute
                except RuntimeReentryError as error:
                    refused.append(error)
            inner.cancel()

    unsubscribe = events.subscribe(on_request)
    try:
        started = time.monotonic()
        assert lm("from the caller").text
        elapsed = time.monotonic() - started
    finally:
        unsubscribe()
    assert len(refused) == 2
    assert "await the async API" in str(refused[0])
    assert elapsed < 30


def test_a_finished_future_can_be_read_on_the_loop_thread() -> None:
    async def double(value: int) -> int:
        return value * 2

    done = _runtime.submit(double(21))
    assert done.result(timeout=10) == 42

    async def read_on_the_loop() -> tuple[int, BaseException | None]:
        return done.result(), done.exception()

    assert _runtime.run(read_on_the_loop()) == (42, None)


def test_a_failed_run_holds_nothing_once_the_error_is_dropped(no_gc: None) -> None:
    async def fail_holding(payload: Payload) -> None:
        raise ValueError("failed while holding the payload")

    payload = Payload()
    alive = weakref.ref(payload)
    with pytest.raises(ValueError, match="holding the payload"):
        _runtime.run(fail_holding(payload))
    del payload
    assert alive() is None


def test_a_submitted_call_holds_nothing_once_its_future_is_dropped(no_gc: None) -> None:
    async def fail_holding(payload: Payload) -> None:
        raise ValueError("failed while holding the payload")

    async def return_(payload: Payload) -> Payload:
        return payload

    payload = Payload()
    alive = weakref.ref(payload)
    failing = _runtime.submit(fail_holding(payload))
    with pytest.raises(ValueError, match="holding the payload"):
        failing.result(timeout=10)
    del failing
    returned = _runtime.submit(return_(payload))
    assert returned.result(timeout=10) is payload
    del returned, payload
    assert alive() is None


def test_calls_after_exit_raise_a_typed_error() -> None:
    result = run_script(
        """
        import atexit

        def after_the_runtime_shut_down():
            try:
                _runtime.run(asyncio.sleep(0))
            except Exception as error:
                print(type(error).__name__, isinstance(error, RuntimeError), flush=True)
            try:
                dspy_async.LM("openai/gpt-4o-mini", api_key="sk-test")("hello")
            except dspy_async.RuntimeClosedError as error:
                print("LM:", error, flush=True)

        # Registered before the import, so it runs after dspy_async's own exit handler.
        atexit.register(after_the_runtime_shut_down)

        import asyncio
        import dspy_async
        from dspy_async import _runtime

        print(_runtime.run(asyncio.sleep(0, "before exit")), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["before exit", "RuntimeClosedError True"]
    assert lines[2].startswith("LM: the dspy-async runtime shut down at interpreter exit")
    assert result.stderr == ""  # no traceback, no "coroutine was never awaited"


@pytest.mark.slow
def test_a_daemon_thread_calling_through_exit_gets_the_typed_error() -> None:
    result = run_script(
        """
        import atexit, threading

        reported, outcome = threading.Event(), []

        def wait_for_the_daemon():
            print("daemon saw:", outcome if reported.wait(20) else "nothing", flush=True)

        atexit.register(wait_for_the_daemon)  # runs after the runtime's shutdown

        import asyncio, time
        from dspy_async import _runtime

        def keep_calling():
            while True:
                try:
                    _runtime.run(asyncio.sleep(0.001))
                except BaseException as error:
                    outcome.append(type(error).__name__)
                    reported.set()
                    return

        threading.Thread(target=keep_calling, daemon=True).start()
        time.sleep(0.3)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "daemon saw: ['RuntimeClosedError']"
    assert result.stderr == ""


class Prompt(str):
    """A prompt that can be watched: a str subclass takes a weak reference."""


@pytest.mark.parametrize(
    ("kind", "status"), [("status", 400), ("status", 503), ("drop", 503), ("malformed", 200)]
)
def test_a_failed_lm_call_holds_nothing_once_the_error_is_dropped(
    provider_simulator: ProviderSimulator, no_gc: None, kind: str, status: int
) -> None:
    # Every frame a failed call went through is in its traceback; none may hold the error.
    provider_simulator.fault(kind=kind, status=status, times=None)  # type: ignore[arg-type]
    lm = LM(
        "openai/sim",
        api_base=provider_simulator.api_base("openai"),
        api_key="sk-test",
        retry=RetryPolicy(max_attempts=2, initial_delay=0, max_delay=0),
    )
    prompt = Prompt("a long document " * 10_000)
    alive = weakref.ref(prompt)
    with pytest.raises(LMError):
        lm(prompt)
    del prompt
    assert alive() is None
