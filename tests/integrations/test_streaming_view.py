"""The Flask streaming example under werkzeug's threaded server, driven over HTTP: pieces of
the answer arrive as the simulator sends them, concurrent streams do not wait for each other,
and a client that leaves closes the connection to the provider."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dspy_async.testing import ProviderSimulator

from .harness import StartServer

WORDS = [f"w{i}" for i in range(30)]
ANSWER = " ".join(WORDS)
CHUNK_DELAY = 0.05


def read_events(client: httpx.Client, url: str, question: str) -> list[tuple[str, object, float]]:
    """Every event of one streamed answer: (type, data, seconds since the request)."""
    events = []
    started = time.monotonic()
    with client.stream("GET", url, params={"question": question}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                events.append((kind, data, time.monotonic() - started))
                kind = "message"
    return events


@pytest.mark.slow
def test_the_answer_streams_through_a_flask_view(
    start_server: StartServer, simulator: ProviderSimulator, http: httpx.Client
) -> None:
    simulator.chunk_delay = CHUNK_DELAY
    simulator.respond(output={"answer": ANSWER})
    url = start_server(["-m", "examples.flask_stream"]).url + "/answer"

    def one(index: int) -> list[tuple[str, object, float]]:
        return read_events(http, url, f"question {index}")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))

    for events in results:
        pieces = [data for kind, data, _ in events if kind == "message"]
        assert "".join(str(piece) for piece in pieces) == ANSWER
        assert len(pieces) >= len(WORDS) - 2  # piece by piece (a few joined at most)
        kind, done, finished = events[-1]
        assert kind == "done" and isinstance(done, dict) and done["tokens"] > 0
        first = events[0][2]
        # The first piece comes after the latency, long before the last (29 delays later).
        assert finished - first > (len(WORDS) - 5) * CHUNK_DELAY
    # Eight streams at once: together they took about as long as one.
    assert max(events[-1][2] for events in results) < 8 * len(WORDS) * CHUNK_DELAY / 2
    assert sorted(r.outcome for r in simulator.requests) == ["ok"] * 8


@pytest.mark.slow
def test_a_client_that_leaves_closes_the_providers_connection(
    start_server: StartServer, simulator: ProviderSimulator, http: httpx.Client
) -> None:
    simulator.chunk_delay = 0.2
    simulator.respond(output={"answer": ANSWER})
    url = start_server(["-m", "examples.flask_stream"]).url + "/answer"

    with http.stream("GET", url, params={"question": "q"}) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data: "):
            pass
    left = time.monotonic()

    (request,) = simulator.wait_for_requests(1, finished=True, timeout=10)
    assert request.outcome == "disconnected"
    assert request.chunks_sent < len(WORDS) // 2
    assert request.finished is not None and request.finished - left < 2.0
