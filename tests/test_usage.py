"""Usage that adds up: per attempt, per Prediction, per LM and per `track_usage()` block, equal
to what the simulated provider billed (`RecordedRequest.prompt_tokens/completion_tokens`),
under batches, worker threads, caller threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async.providers import anthropic, openai
from dspy_async.records import spent
from dspy_async.testing import ProviderSimulator, RecordedRequest

MODEL = "openai/gpt-4o-mini"


def billed(requests: Iterable[RecordedRequest]) -> dspy.Usage:
    total = dspy.Usage()
    for request in requests:
        total += dspy.Usage(request.prompt_tokens, request.completion_tokens)
    return total


def billed_for(sim: ProviderSimulator, text: str) -> dspy.Usage:
    return billed(r for r in sim.requests if text in r.text)


def make_lm(sim: ProviderSimulator, **options: Any) -> dspy.LM:
    fast = dspy.RetryPolicy(initial_delay=0.05, max_delay=0.1)
    return dspy.LM(MODEL, api_base=sim.openai_base_url, api_key="sk-usage", retry=fast, **options)


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


class Pipeline(dspy.Module):
    """Sync only: a batch runs it in worker threads, whose calls hop to the runtime loop."""

    def __init__(self, lm: dspy.LM) -> None:
        self.step = dspy.Predict("question -> answer", lm=lm)

    def forward(self, question: str) -> dspy.Prediction:
        return self.step(question=question)


def script_faults(sim: ProviderSimulator, questions: list[str]) -> None:
    """Retries, re-asks and failures that do and do not cost tokens, by item number."""
    for index, question in enumerate(questions):
        kind = index % 10
        if kind == 0:
            sim.fault(question, kind="status", status=429, retry_after=0.1)
        elif kind == 1:
            sim.fault(question, kind="status", status=503)
        elif kind == 2:  # every reply invalid: OutputValidationError after 3 billed replies
            sim.fault(question, kind="invalid_output", times=None)
        elif kind == 3:  # one invalid reply, then a valid re-ask: 2 billed replies
            sim.fault(question, kind="invalid_output")
        elif kind == 4:
            sim.fault(question, kind="status", status=401)  # fails for good, unbilled
        elif kind == 5:
            sim.fault(question, kind="malformed")  # a 200 that is not JSON: retried
        elif kind == 6:
            sim.fault(question, kind="drop")


@pytest.mark.slow
def test_a_200_item_batch_adds_up_to_what_the_simulator_billed(
    provider_simulator: ProviderSimulator, virtual_clock: object
) -> None:
    sim = provider_simulator
    sim.latency = 0.01
    lm = make_lm(sim)
    questions = [unique(f"question {i}") for i in range(200)]
    script_faults(sim, questions)
    with dspy.track_usage() as tracker:
        results = Pipeline(lm).batch(
            [{"question": q} for q in questions], max_concurrency=16, return_exceptions=True
        )
    sim.wait_for_requests(len(sim.requests), finished=True)
    total = billed(sim.requests)
    assert total.total_tokens > 0

    assert tracker.totals() == {MODEL: total}
    assert lm.usage == total
    failures = [r for r in results if isinstance(r, dspy.DSPyAsyncError)]
    predictions = [r for r in results if isinstance(r, dspy.Prediction)]
    assert len(failures) == 40 and len(predictions) == 160  # items 2 and 4 of every ten
    assert all(
        isinstance(f, dspy.OutputValidationError | dspy.AuthenticationError) for f in failures
    )
    by_item = [r.usage if isinstance(r, dspy.Prediction) else spent(r.attempts) for r in results]
    assert sum(by_item, dspy.Usage()) == total
    for question, usage, result in zip(questions, by_item, results, strict=True):
        assert usage == billed_for(sim, question), question
        assert spent(result.attempts) == usage  # per attempt, too
    # The three invalid replies of an OutputValidationError were billed; a 401 was not.
    rejected = results[2]
    assert isinstance(rejected, dspy.OutputValidationError)
    assert [a.outcome for a in rejected.attempts] == ["invalid_output"] * 3
    assert all(a.usage.total_tokens > 0 for a in rejected.attempts)
    assert spent(results[4].attempts) == dspy.Usage()


def test_twenty_threads_each_count_their_own_calls(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = make_lm(provider_simulator)
    prompts = [unique(f"thread {i}") for i in range(20)]
    for prompt in prompts[::3]:
        provider_simulator.fault(prompt, kind="status", status=503)  # retried, unbilled
    start = threading.Barrier(20)
    counted: dict[int, dict[str, dspy.Usage]] = {}

    def caller(index: int) -> None:
        start.wait()
        with dspy.track_usage() as tracker:
            lm(prompts[index])
            lm(prompts[index] + " again")
        counted[index] = tracker.totals()

    with dspy.track_usage() as outer:  # threads start with an empty context: not counted here
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outer.totals() == {}
    for index, prompt in enumerate(prompts):
        assert counted[index] == {MODEL: billed_for(provider_simulator, prompt)}
    assert lm.usage == billed(provider_simulator.requests)


def test_async_tasks_count_their_own_calls_and_nested_trackers_roll_up(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = make_lm(provider_simulator)
    prompts = [unique(f"task {i}") for i in range(10)]

    async def task(prompt: str) -> dict[str, dspy.Usage]:
        with dspy.track_usage() as tracker:
            await lm.acall(prompt)
            await dspy.Predict("question -> answer", lm=lm).acall(question=prompt)
        return tracker.totals()

    async def main() -> tuple[list[dict[str, dspy.Usage]], dspy.UsageTracker]:
        with dspy.track_usage() as outer:
            return list(await asyncio.gather(*(task(p) for p in prompts))), outer

    per_task, outer = asyncio.run(main())
    for prompt, totals in zip(prompts, per_task, strict=True):
        assert totals == {MODEL: billed_for(provider_simulator, prompt)}
    assert outer.totals() == {MODEL: billed(provider_simulator.requests)}
    assert outer.get_total_tokens()[MODEL]["total_tokens"] == outer.total.total_tokens


def test_a_refused_200_is_billed_to_the_prediction(provider_simulator: ProviderSimulator) -> None:
    """An Anthropic-format reply that ignores the forced tool and answers in prose is unusable,
    but billed; the step falls back to a JSON prompt, and its usage holds both replies."""
    lm = dspy.LM(
        "anthropic/claude-3-haiku", api_base=provider_simulator.anthropic_base_url, api_key="k"
    )
    question = unique("prose")
    provider_simulator.respond(question, output="Plain prose, no tool call.", times=1)
    with dspy.track_usage() as tracker:
        prediction = dspy.Predict("question -> answer", lm=lm)(question=question)
    first, second = prediction.attempts
    assert (first.outcome, second.outcome) == ("error", "ok")
    assert first.usage.total_tokens > 0
    total = billed_for(provider_simulator, question)
    assert prediction.usage == first.usage + second.usage == total
    assert lm.usage == total
    assert tracker.totals() == {"anthropic/claude-3-haiku": total}


class _FixedServer:
    """A raw HTTP/1.1 server on 127.0.0.1 answering each POST with one JSON body, one request
    per connection (`connection: close`), so that nothing is left open when it stops."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(self.body)}\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    def __enter__(self) -> str:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        )
        self.server = started.result(10)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


ANTHROPIC_CACHED = {
    "id": "msg_cached",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-haiku",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 10,
        "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 40,
        "output_tokens": 5,
    },
}
OPENAI_CACHED = {
    "id": "chatcmpl-cached",
    "model": "gpt-4o-mini",
    "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 350,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 300, "audio_tokens": 0},
    },
}


@pytest.fixture
def anthropic_server() -> Iterator[str]:
    with _FixedServer(ANTHROPIC_CACHED) as url:
        yield url


def test_prompt_cache_tokens_are_reported_apart(anthropic_server: str) -> None:
    lm = dspy.LM("anthropic/claude-3-haiku", api_base=anthropic_server, api_key="k")
    with dspy.track_usage() as tracker:
        response = lm("hello")
    # prompt_tokens keeps its meaning, every input token; the cache counts are a part of it.
    expected = dspy.Usage(350, 5, cache_read_tokens=300, cache_creation_tokens=40)
    assert response.usage == expected
    assert tracker.get_total_tokens()["anthropic/claude-3-haiku"] == {
        **expected.to_dict(),
        "prompt_tokens": 350,
        "completion_tokens": 5,
        "total_tokens": 355,
        "cache_read_tokens": 300,
        "cache_creation_tokens": 40,
    }


def test_prompt_cache_tokens_of_each_provider() -> None:
    assert openai.parse_reply(OPENAI_CACHED).usage == dspy.Usage(350, 5, cache_read_tokens=300)
    assert anthropic.parse_reply(ANTHROPIC_CACHED).usage == dspy.Usage(350, 5, 300, 40)
    no_details = {
        **OPENAI_CACHED,
        "usage": {**OPENAI_CACHED["usage"], "prompt_tokens_details": None},
    }
    assert openai.parse_reply(no_details).usage == dspy.Usage(350, 5)
    bad = {**OPENAI_CACHED, "usage": {**OPENAI_CACHED["usage"], "prompt_tokens_details": 3}}
    with pytest.raises(TypeError, match="prompt_tokens_details must be an object or null"):
        openai.parse_reply(bad)


def test_cost_from_your_own_prices() -> None:
    price = dspy.Price(input=1.0, output=2.0, cache_read=0.1)
    usage = dspy.Usage(1_000_000, 1_000_000, cache_read_tokens=500_000, cache_creation_tokens=0)
    assert price.cost(usage) == pytest.approx(0.5 * 1.0 + 0.5 * 0.1 + 2.0)
    # Cache writes cost the input price unless the table says otherwise.
    assert dspy.Price(input=1.0, output=0.0).cost(dspy.Usage(100, 0, 0, 100)) == pytest.approx(
        100 / 1e6
    )
    tracker = dspy.UsageTracker()
    tracker.add_usage("openai/a", dspy.Usage(2_000_000, 0))
    tracker.add_usage("openai/b", dspy.Usage(0, 1_000_000))
    prices = {"openai/a": dspy.Price(0.5, 0), "openai/b": dspy.Price(0, 3)}
    assert tracker.cost(prices) == pytest.approx(1.0 + 3.0)
    with pytest.raises(dspy.ConfigurationError, match="no Price for openai/b"):
        tracker.cost({"openai/a": prices["openai/a"]})
    with pytest.raises(dspy.ConfigurationError):
        dspy.Price(input=-1.0, output=1.0)
