"""Connection limits under load: one LM's limit never throttles another's, a call queued for a
pooled connection is not timed out by the wait, a burst bigger than the file-descriptor limit
waits its turn instead of failing, and short-lived LMs leave nothing behind in the runtime."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import Iterator

import pytest

import dspy_async as dspy
from dspy_async import _runtime
from dspy_async.testing import ProviderSimulator

# Generous bounds for a loaded 2-core machine.
SUBPROCESS_TIMEOUT = 110


@pytest.fixture
def simulator_process() -> Iterator[str]:
    """A simulator in its own process, so that its sockets do not count against the file
    descriptors of the client under test. Yields its OpenAI base URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "dspy_async.testing", "serve", "--latency", "0.05"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        base = first.rsplit(" ", 1)[-1].strip()
        assert base.startswith("http://127.0.0.1:"), first
        yield f"{base}/v1"
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


def run_client(script: str, api_base: str, nofile: int) -> str:
    """Run `script` in a fresh interpreter whose file-descriptor limit is `nofile`."""
    prelude = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}))
        API_BASE = {api_base!r}
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_a_burst_over_the_descriptor_limit_waits_for_connections(simulator_process: str) -> None:
    """5,000 submits under `ulimit -n 1024`: without backpressure about half failed with
    "Too many open files"; now every one succeeds."""
    out = run_client(
        """
        import dspy_async as dspy
        lm = dspy.LM("openai/m", api_base=API_BASE, api_key="sk-pool")
        from dspy_async import _runtime
        futures = [_runtime.submit(lm.acall(f"q{i}")) for i in range(5000)]
        errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        print(len(failed), repr(failed[:1]))
        """,
        simulator_process,
        nofile=1024,
    )
    assert out.split()[0] == "0", out


@pytest.mark.slow
def test_waiting_for_a_pooled_connection_does_not_eat_the_attempt_timeout(
    simulator_process: str,
) -> None:
    """A pool of 16 connections (the floor, under `ulimit -n 32`) and 200 calls of 0.05 s
    each with a 0.5 s timeout: the last ones wait over 0.5 s for a connection, and still
    succeed on their first attempt, because the timeout starts once they hold one."""
    out = run_client(
        """
        import asyncio
        import dspy_async as dspy
        from dspy_async import _http

        lm = dspy.LM(
            "openai/m", api_base=API_BASE, api_key="sk-pool", timeout=0.5,
            retry=dspy.RetryPolicy(max_attempts=1),
        )

        async def main():
            responses = await asyncio.gather(*(lm.acall(f"q{i}") for i in range(200)))
            # A slot taken at once is no wait, and has no record: the first 16 have none.
            slot_waits = [w.seconds for r in responses for a in r.attempts for w in a.gates]
            print(_http.default_pool_size(), max(len(r.attempts) for r in responses),
                  f"{max(slot_waits):.2f}")

        asyncio.run(main())
        """,
        simulator_process,
        nofile=32,
    )
    pool_size, most_attempts, longest_wait = out.split()
    assert pool_size == "16"
    assert most_attempts == "1"
    assert float(longest_wait) > 0.5  # queued longer than the timeout, and not timed out


@pytest.mark.slow
async def test_one_lms_limit_does_not_throttle_another_on_the_same_origin() -> None:
    with ProviderSimulator(latency=0.5) as sim:
        narrow = dspy.LM("openai/m", api_base=sim.openai_base_url, api_key="k", max_concurrency=1)
        wide = dspy.LM("openai/m", api_base=sim.openai_base_url, api_key="k", timeout=5)
        narrow_calls = asyncio.gather(*(narrow.acall(f"narrow {i}") for i in range(3)))
        began = time.monotonic()
        await asyncio.gather(*(wide.acall(f"wide {i}") for i in range(20)))
        wide_took = time.monotonic() - began
        await narrow_calls
    # Twenty calls at once: about one latency, not twenty behind the narrow LM's single slot.
    assert wide_took < 2.5


def test_short_lived_lms_leave_no_semaphore_behind() -> None:
    with ProviderSimulator() as sim:
        dspy.LM("openai/m", api_base=sim.openai_base_url, api_key="k", max_concurrency=2)("warm")
        resources_before = len(_runtime._runtime().resources)
        refs = []
        for i in range(50):
            lm = dspy.LM("openai/m", api_base=sim.openai_base_url, api_key="k", max_concurrency=2)
            lm(f"q{i}")
            refs.append(weakref.ref(lm))
        del lm
        gc.collect()
        assert len(_runtime._runtime().resources) == resources_before
        assert all(ref() is None for ref in refs)
