"""The real-model suite's servers: llama.cpp's `llama-server` with SmolLM2-135M on 127.0.0.1.

`scripts/llama_server.py` builds the binary once (cached outside the repo) and starts it; the
suite skips only when the build tools are missing. The main server, with an API key and 4
parallel slots, serves the whole session; every server is always stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from .support import LMFactory, lm_for, load_script, start


@pytest.fixture(scope="session")
def llama_script() -> ModuleType:
    """`scripts/llama_server.py`, with the server built; skips if it cannot be built here."""
    script = load_script()
    try:
        script.ensure_built()
    except script.ToolchainMissingError as exc:
        pytest.skip(f"real_model: {exc}")
    return script


@pytest.fixture(scope="session")
def llama_server(
    llama_script: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The main server's base URL (without /v1), for the whole session."""
    base_url, process = start(llama_script, tmp_path_factory.mktemp("llama-server"))
    try:
        yield base_url
    finally:
        llama_script.stop_server(process)


@pytest.fixture(scope="module")
def caching_llama_server(
    llama_script: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A one-slot server with llama.cpp's default prompt cache on: a repeated prompt is read
    from the cache, as with a provider's prompt caching."""
    log_dir = tmp_path_factory.mktemp("llama-server-caching")
    base_url, process = start(llama_script, log_dir, parallel=1, extra_args=())
    try:
        yield base_url
    finally:
        llama_script.stop_server(process)


@pytest.fixture
def make_lm(llama_server: str) -> LMFactory:
    """`make_lm("openai" | "anthropic", api_key=..., native=...)`: an LM on the main server."""
    return lambda provider, **options: lm_for(llama_server, provider, **options)
