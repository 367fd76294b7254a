"""The simulator holds 5,000 concurrent connections (benchmarks rely on it)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from dspy_async.testing import ProviderSimulator, peak_in_flight

CONNECTIONS = 5_000
LATENCY = 4.0  # long enough that every request is in flight at once, even on a loaded box


async def fire(url: str) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> int:
            body = {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}
            async with session.post(url + "/chat/completions", json=body) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one(i) for i in range(CONNECTIONS)))


@pytest.mark.slow
def test_five_thousand_concurrent_connections() -> None:
    with ProviderSimulator(latency=LATENCY) as sim:
        started = time.monotonic()
        statuses = asyncio.run(fire(sim.openai_base_url))
        elapsed = time.monotonic() - started
        records = sim.wait_for_requests(CONNECTIONS, finished=True)
    assert statuses == [200] * CONNECTIONS
    assert peak_in_flight(records) == CONNECTIONS
    print(f"{CONNECTIONS} concurrent requests, {LATENCY:g} s latency each: {elapsed:.2f} s")
    assert elapsed < LATENCY + 30
