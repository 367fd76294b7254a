"""The real-model suite's servers: llama.cpp's `llama-server` with SmolLM2-135M on 127.0.0.1.

`scripts/llama_server.py` builds the binary once (cached outside the repo) and starts it; the
suite skips only when the build tools are missing. The build runs when collection finishes, so
outside the per-test timeout, under its own bound (`DSPY_ASYNC_BUILD_TIMEOUT`, 40 minutes by
default), with cmake's progress on the terminal; a build killed half-way resumes on the next
run. The main server, with an API key and 4 parallel slots, serves the whole session; every
server is always stopped at the end.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from .support import LMFactory, lm_for, load_script, start

# What the build at collection time left: the script module, and the error if it failed.
_BUILD = pytest.StashKey[tuple[ModuleType, Exception | None]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build llama-server before the first real_model test runs, if any was selected."""
    config = session.config
    if config.option.collectonly or not any(
        item.get_closest_marker("real_model") for item in session.items
    ):
        return
    script = load_script()
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def report(message: str) -> None:  # the reporter writes past pytest's output capture
        line = f"[llama_server] {message}"
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line, file=sys.__stderr__, flush=True)

    error: Exception | None = None
    try:
        script.ensure_built(report=report)
    except script.LlamaServerError as exc:  # reported by the fixture, as each test's error
        error = exc
    config.stash[_BUILD] = (script, error)


@pytest.fixture(scope="session")
def llama_script(pytestconfig: pytest.Config) -> ModuleType:
    """`scripts/llama_server.py`, with the server built; skips if it cannot be built here."""
    script, error = pytestconfig.stash.get(_BUILD, (load_script(), None))
    if isinstance(error, script.ToolchainMissingError):
        pytest.skip(f"real_model: {error}")
    if error is not None:
        pytest.fail(f"real_model: could not build llama-server: {error}", pytrace=False)
    if not os.access(script.binary_path(), os.X_OK):  # no build at collection (e.g. -p no:...)
        pytest.fail(
            "real_model: llama-server is not built; run `python scripts/llama_server.py build`",
            pytrace=False,
        )
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
