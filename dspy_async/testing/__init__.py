"""Test helpers: a local fake of the providers' HTTP APIs, and a network-free LM.

``ProviderSimulator`` is a real HTTP server on 127.0.0.1 (its own thread and event loop)
speaking the OpenAI (``/v1/chat/completions``, ``/v1/models``), Anthropic (``/v1/messages``)
and Ollama (``/api/chat``) wire formats, including their error bodies::

    from dspy_async.testing import ProviderSimulator

    with ProviderSimulator(latency=0.05) as sim:
        sim.respond("capital of France", output={"answer": "Paris"})   # scripted answer
        sim.fault(kind="status", status=429, retry_after=1, times=2)   # then two 429s
        ...  # point a client at sim.openai_base_url / sim.anthropic_base_url / sim.ollama_base_url
        assert [r.match_attempt for r in sim.requests] == [1, 2, 3]
        assert peak_in_flight(sim.requests) <= 16   # the most requests held at one moment

Unscripted requests get a value valid for the requested JSON schema (OpenAI
``response_format``, Anthropic forced tool ``input_schema``, Ollama ``format``, or a schema
embedded in the prompt), else plain text. Faults: ``status``, ``context_window``,
``unsupported_param``, ``drop``, ``hang``, ``truncate``, ``malformed``, ``invalid_output``.
``python -m dspy_async.testing serve --port 8000`` runs one standalone, and the pytest plugin
shipped with the package provides a ``provider_simulator`` fixture (reset for every test).

``virtual_clock()`` (and the plugin's ``virtual_clock`` fixture) records every wait of the
calls made under it (retry backoffs, Retry-After, rate-limit pauses) and skips it instead of
sleeping, so a test of code that retries takes no wall time and can assert its waits::

    with virtual_clock() as clock:
        ...  # calls that back off
    assert clock.waits == [30.0]

``DummyLM`` answers from a script without any network, for unit tests of programs. It is
imported on first use, so that loading this package (as pytest does for the plugin) does
not import the LM stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import VirtualClock, virtual_clock
from ._simulator import ProviderSimulator, RecordedRequest, peak_in_flight

if TYPE_CHECKING:
    from ._dummy import DummyLM

__all__ = [
    "DummyLM",
    "ProviderSimulator",
    "RecordedRequest",
    "VirtualClock",
    "peak_in_flight",
    "virtual_clock",
]


def __getattr__(name: str) -> Any:
    if name == "DummyLM":
        from ._dummy import DummyLM

        return DummyLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
