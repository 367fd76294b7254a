"""pytest plugin (entry point ``dspy_async``): the ``provider_simulator`` fixture.

One simulator serves the whole session (starting one per test would also work, but a
stable URL lets connection pools be reused); each test gets it reset, with no latency and
no API key required, and it is reset again afterwards so nothing leaks between tests::

    def test_retries_429(provider_simulator):
        provider_simulator.fault(kind="status", status=429, retry_after=0)
        ...

The simulator is imported when the fixture is first used, not when pytest loads the plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._simulator import ProviderSimulator


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
