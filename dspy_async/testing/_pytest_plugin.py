"""pytest plugin (entry point ``dspy_async``): the ``provider_simulator``, ``response_cache``
and ``virtual_clock`` fixtures, and the response cache off for the test run.

One simulator serves the whole session (starting one per test would also work, but a
stable URL lets connection pools be reused); each test gets it reset, with no latency and
no API key required, and it is reset again afterwards so nothing leaks between tests::

    def test_retries_429(provider_simulator):
        provider_simulator.fault(kind="status", status=429, retry_after=0)
        ...

The response cache is on by default, as in DSPy; a test suite wants each call to reach the
provider or simulator it set up (tests count requests, faults and retries), and no cache files
in the home directory. So the plugin switches the default cache off for the test process and
the processes it starts (``DSPY_ASYNC_RESPONSE_CACHE=off``, unless the environment already
sets it), and a test that wants the cache asks for ``response_cache``: memory and disk, in the
test's own ``tmp_path``::

    def test_second_call_is_cached(provider_simulator, response_cache):
        ...

``virtual_clock`` runs the test under ``dspy_async.testing.virtual_clock()``: the waits of its
calls (backoffs, Retry-After) are recorded and skipped, not slept::

    def test_backs_off(provider_simulator, virtual_clock):
        provider_simulator.fault(kind="status", status=429, retry_after=30)
        ...
        assert virtual_clock.waits == [30.0]

The simulator, the cache and the clock are imported when a fixture is first used, not when
pytest loads the plugin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..cache import ResponseCache
    from ._clock import VirtualClock
    from ._simulator import ProviderSimulator

# dspy_async.cache.ENV_VAR, spelt out: importing dspy_async here would load the whole LM stack.
_CACHE_SWITCH = "DSPY_ASYNC_RESPONSE_CACHE"
_switched_off = False


def pytest_configure(config: pytest.Config) -> None:
    global _switched_off
    if _CACHE_SWITCH not in os.environ:
        os.environ[_CACHE_SWITCH] = "off"
        _switched_off = True


def pytest_unconfigure(config: pytest.Config) -> None:
    global _switched_off
    if _switched_off:
        os.environ.pop(_CACHE_SWITCH, None)
        _switched_off = False


@pytest.fixture
def response_cache(tmp_path: Path) -> Iterator[ResponseCache]:
    """The response cache on for this test (memory, and disk under `tmp_path`); off after."""
    from ..cache import configure_cache, current, reset

    configure_cache(disk_cache_dir=tmp_path / "responses")
    cache = current()
    assert cache is not None
    try:
        yield cache
    finally:
        reset()


@pytest.fixture
def virtual_clock() -> Iterator[VirtualClock]:
    """A VirtualClock installed for the test: its calls' waits are recorded, not slept."""
    from ._clock import virtual_clock as install

    with install() as clock:
        yield clock


@pytest.fixture(scope="session")
def _provider_simulator_server() -> Iterator[ProviderSimulator]:
    from ._simulator import ProviderSimulator

    with ProviderSimulator() as sim:
        yield sim


@pytest.fixture
def provider_simulator(
    _provider_simulator_server: ProviderSimulator,
) -> Iterator[ProviderSimulator]:
    """A running ProviderSimulator with no script, no faults, no records and no latency."""
    sim = _provider_simulator_server
    sim.reset()
    sim.latency = 0.0
    sim.api_key = None
    try:
        yield sim
    finally:
        sim.reset()
        # The calls' rate-limit budgets remember the simulator's 429s and limits: forgotten,
        # so one test's Retry-After does not pause the next test's calls.
        from ..pipeline.budget import forget

        forget(sim.base_url)
