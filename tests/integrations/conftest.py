"""Fixtures for the integration tests: the provider simulator, the examples' environment and
servers that are always stopped and checked for tracebacks and exit noise."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from dspy_async.testing import ProviderSimulator

from .harness import Server, StartServer, assert_clean, launch, wait_until_ready

LATENCY = 0.2
REQUEST_TIMEOUT = 10.0


@pytest.fixture
def simulator() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(latency=LATENCY) as sim:
        yield sim


@pytest.fixture
def example_env(simulator: ProviderSimulator) -> dict[str, str]:
    """The environment the examples read, pointed at this test's simulator."""
    return {
        **os.environ,
        "DSPY_ASYNC_MODEL": "openai/gpt-4o-mini",
        "DSPY_ASYNC_API_BASE": simulator.openai_base_url,
        "OPENAI_API_KEY": "sk-integration-test",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
        yield client


@pytest.fixture
def start_server(
    example_env: dict[str, str],
    simulator: ProviderSimulator,
    tmp_path: Path,
    http: httpx.Client,
) -> Iterator[StartServer]:
    """Start servers that answer HTTP; at teardown stop each one (SIGTERM) and require that it
    stopped by itself and printed no traceback or exit noise."""
    servers: list[Server] = []

    def start(args: Sequence[str], env: Mapping[str, str] | None = None) -> Server:
        server = launch(args, {**example_env, **(env or {})}, tmp_path)
        servers.append(server)
        wait_until_ready(server, http)
        return server

    try:
        yield start
    finally:
        stopped = [server.stop() for server in servers]
    for graceful, log in stopped:
        assert graceful, f"server did not stop on SIGTERM:\n{log}"
        assert_clean(log, provider_port=simulator.port)
