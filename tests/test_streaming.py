"""Streaming against the provider simulator: text and fields as they come, through the same
retries, limits and accounting as every call; failures after the first chunk carry what came;
leaving early closes the connection; backpressure holds a fast server back."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async import events
from dspy_async.cache import ResponseCache
from dspy_async.streaming import StreamChunk, TextStream
from dspy_async.testing import DummyLM, ProviderSimulator, RecordedRequest

FAST = dspy.RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)
PROVIDERS = ["openai", "anthropic", "ollama"]
WORDS = [f"word{i}" for i in range(40)]
TEXT = " ".join(WORDS)  # 40 pieces as the simulator cuts it


@pytest.fixture
def sim(provider_simulator: ProviderSimulator) -> Iterator[ProviderSimulator]:
    provider_simulator.chunk_delay = 0.0
    try:
        yield provider_simulator
    finally:
        provider_simulator.chunk_delay = 0.0


def make_lm(sim: ProviderSimulator, provider: str = "openai", **kwargs: Any) -> dspy.LM:
    kwargs.setdefault("retry", FAST)
    return dspy.LM(f"{provider}/m", api_key="sk-test", api_base=sim.api_base(provider), **kwargs)


def finished(sim: ProviderSimulator, count: int = 1) -> list[RecordedRequest]:
    return sim.wait_for_requests(count, finished=True)


# -- text, usage, attempts -------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lm_stream_yields_the_text_in_pieces_and_then_the_response(
    sim: ProviderSimulator, provider: str
) -> None:
    sim.respond(output=TEXT)
    lm = make_lm(sim, provider)

    stream = lm.stream("Say the words")
    pieces = list(stream)

    assert pieces == [WORDS[0], *(f" {word}" for word in WORDS[1:])]
    response = stream.response
    assert response.text == TEXT
    (request,) = finished(sim)
    assert request.body["stream"] is True
    assert request.chunks_sent == 40
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (
        request.prompt_tokens,
        request.completion_tokens,
    )
    assert response.usage.completion_tokens > 0
    assert [(a.outcome, a.status_code) for a in response.attempts] == [("ok", 200)]
    assert response.finish_reason in ("stop", "end_turn")
    assert lm.usage == response.usage


def test_the_first_chunk_reaches_the_consumer_as_soon_as_it_is_sent(
    sim: ProviderSimulator,
) -> None:
    """benchmarks/stream_first_chunk.py measures this (a fraction of a millisecond); here the
    bound only has to tell it from buffering, which would wait at least the 0.1 s between
    chunks."""
    sim.chunk_delay = 0.1
    sim.respond(output=TEXT)
    lm = make_lm(sim)
    gaps = []
    for index in range(10):
        with lm.stream(f"question {index}") as stream:
            next(stream)
            seen = time.monotonic()
        record = finished(sim, index + 1)[index]
        assert record.first_chunk_at is not None
        gaps.append(seen - record.first_chunk_at)
    assert statistics.median(gaps) < 0.05, gaps


def test_openai_streams_ask_for_usage(sim: ProviderSimulator) -> None:
    sim.respond(output="hi there")
    list(make_lm(sim).stream("q"))
    assert finished(sim)[0].body["stream_options"] == {"include_usage": True}


def test_a_stream_of_a_failing_call_raises_in_the_consumer(sim: ProviderSimulator) -> None:
    sim.fault(kind="status", status=400, message="bad request")
    stream = make_lm(sim).stream("q")
    with pytest.raises(dspy.BadRequestError, match="bad request"):
        next(stream)
    with pytest.raises(dspy.BadRequestError):
        stream.response  # noqa: B018 - the property raises the stream's error again


def test_the_response_is_not_there_before_the_end(sim: ProviderSimulator) -> None:
    sim.respond(output=TEXT)
    with make_lm(sim).stream("q") as stream:
        next(stream)
        with pytest.raises(RuntimeError, match="not ended"):
            stream.response  # noqa: B018


def test_bad_input_fails_at_once_without_a_request(sim: ProviderSimulator) -> None:
    lm = make_lm(sim)
    with pytest.raises(TypeError):
        lm.stream(messages=[{"role": "robot", "content": "hi"}])
    with pytest.raises(dspy.SignatureError):
        dspy.Predict("question -> answer", lm=lm).stream(nope="x")
    assert sim.requests == []


def test_events_and_usage_tracking_see_a_streamed_call(sim: ProviderSimulator) -> None:
    sim.respond(output=TEXT)
    seen: list[events.LMEvent] = []
    unsubscribe = events.subscribe(seen.append)
    try:
        with dspy.track_usage() as tracker:
            stream = make_lm(sim).stream("q")
            list(stream)
    finally:
        unsubscribe()
    assert [type(event).__name__ for event in seen] == ["RequestEvent", "ResponseEvent"]
    assert tracker.total.total_tokens == stream.response.usage.total_tokens > 0


# -- retries up to the first chunk, none after -----------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_429_before_the_first_byte_is_retried(sim: ProviderSimulator, provider: str) -> None:
    sim.fault(kind="status", status=429, retry_after=0.05)
    sim.respond(output=TEXT)

    stream = make_lm(sim, provider).stream("q")
    assert "".join(stream) == TEXT

    assert [r.outcome for r in finished(sim, 2)] == ["status", "ok"]
    assert [(a.outcome, a.status_code) for a in stream.response.attempts] == [
        ("error", 429),
        ("ok", 200),
    ]
    assert stream.response.attempts[1].waited >= 0.04  # the Retry-After, not the backoff


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_connection_dropped_after_ten_chunks_raises_with_those_ten(
    sim: ProviderSimulator, provider: str
) -> None:
    sim.fault(kind="drop", after_chunks=10)
    sim.respond(output=TEXT)

    received: list[str] = []
    with pytest.raises(dspy.ProviderConnectionError, match="cut off") as raised:
        received.extend(make_lm(sim, provider).stream("q"))

    assert len(received) == 10
    assert raised.value.partial_text == "".join(received) == " ".join(WORDS[:10])
    assert len(raised.value.attempts) == 1  # nothing is replayed
    assert [r.outcome for r in finished(sim)] == ["drop"]


def test_a_stall_after_the_first_chunk_times_out_with_the_text_so_far(
    sim: ProviderSimulator,
) -> None:
    sim.fault(kind="hang", after_chunks=3)
    sim.respond(output=TEXT)
    lm = make_lm(sim, timeout=0.5)

    started = time.monotonic()
    with pytest.raises(dspy.ProviderTimeoutError, match="no event") as raised:
        list(lm.stream("q"))

    assert 0.4 < time.monotonic() - started < 5
    assert raised.value.partial_text == " ".join(WORDS[:3])
    assert len(raised.value.attempts) == 1


def test_a_stall_before_the_first_chunk_is_retried(sim: ProviderSimulator) -> None:
    sim.fault(kind="hang", after_chunks=0)
    sim.respond(output=TEXT)
    stream = make_lm(sim, timeout=0.3).stream("q")
    assert "".join(stream) == TEXT
    assert [a.outcome for a in stream.response.attempts] == ["error", "ok"]


@pytest.mark.slow
def test_a_slow_consumer_is_not_a_slow_server(sim: ProviderSimulator) -> None:
    """The idle timeout runs only while waiting for the server: a consumer that takes longer
    than it between chunks does not make the stream fail."""
    sim.respond(output=" ".join(WORDS[:4]))
    stream = make_lm(sim, timeout=0.2).stream("q")
    pieces = []
    for piece in stream:
        pieces.append(piece)
        time.sleep(0.3)
    assert "".join(pieces) == " ".join(WORDS[:4])


# -- leaving early ---------------------------------------------------------------------------


def _leave(sim: ProviderSimulator, how: str) -> float:
    """Start a slow stream, leave it `how` after two chunks; when the client left."""
    sim.chunk_delay = 0.2
    sim.respond(output=TEXT)
    lm = make_lm(sim)
    if how == "break":
        for index, _ in enumerate(lm.stream("q")):
            if index == 1:
                break
    elif how == "close":
        stream = lm.stream("q")
        next(stream), next(stream)
        stream.close()
    elif how == "with":
        with lm.stream("q") as stream:
            next(stream), next(stream)
    return time.monotonic()


@pytest.mark.parametrize("how", ["break", "close", "with"])
def test_leaving_a_stream_closes_the_connection_at_once(sim: ProviderSimulator, how: str) -> None:
    left = _leave(sim, how)
    (request,) = finished(sim)
    assert request.outcome == "disconnected"
    assert request.chunks_sent < 5  # of 40, 0.2 s apart
    assert request.finished is not None and request.finished - left < 1.0


def test_close_returns_once_the_connection_is_closed(sim: ProviderSimulator) -> None:
    sim.chunk_delay = 0.2
    sim.respond(output=TEXT)
    stream = make_lm(sim).stream("q")
    next(stream)
    stream.close()
    # The producer has unwound: the server notices within its next write at the latest.
    (request,) = finished(sim)
    assert request.outcome == "disconnected"
    with pytest.raises(RuntimeError, match="closed before it ended"):
        stream.response  # noqa: B018
    assert list(stream) == []


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_ctrl_c_while_waiting_closes_the_connection(sim: ProviderSimulator) -> None:
    sim.chunk_delay = 2.0  # the consumer is blocked waiting for the second chunk
    sim.respond(output=TEXT)
    stream = make_lm(sim).stream("q")
    next(stream)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(stream)
        interrupted = time.monotonic()
    finally:
        timer.cancel()
    (request,) = finished(sim)
    assert request.outcome == "disconnected"
    assert request.finished is not None and request.finished - interrupted < 1.0


def test_a_cancelled_async_consumer_closes_the_connection(sim: ProviderSimulator) -> None:
    sim.chunk_delay = 2.0
    sim.respond(output=TEXT)
    lm = make_lm(sim)

    async def consume() -> None:
        async for _ in lm.astream("q"):
            pass

    async def main() -> float:
        task = asyncio.create_task(consume())
        await asyncio.to_thread(sim.wait_for_requests, 1)
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    cancelled = asyncio.run(main())
    (request,) = finished(sim)
    assert request.outcome == "disconnected"
    assert request.finished is not None and request.finished - cancelled < 1.0


# -- async -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_astream_from_another_event_loop(sim: ProviderSimulator, provider: str) -> None:
    sim.respond(output=TEXT)
    lm = make_lm(sim, provider)
    async with lm.astream("q") as stream:
        pieces = [piece async for piece in stream]
    assert "".join(pieces) == TEXT == stream.response.text
    assert len(pieces) == 40

    predict = dspy.Predict("question -> answer", lm=lm)
    sim.reset()
    sim.respond(output={"answer": TEXT})
    fields = predict.astream(question="q")
    chunks = [chunk async for chunk in fields]
    assert "".join(c.text for c in chunks) == TEXT
    assert fields.prediction.answer == TEXT


async def test_astream_inside_an_async_module_on_the_runtime_loop(sim: ProviderSimulator) -> None:
    sim.respond(output={"answer": TEXT})
    predict = dspy.Predict("question -> answer", lm=make_lm(sim))

    class Program(dspy.Module):
        async def aforward(self, question: str) -> str:
            pieces = [chunk.text async for chunk in predict.astream(question=question)]
            return "".join(pieces)

    assert await Program().acall(question="q") == TEXT


def test_a_sync_stream_is_refused_on_the_runtime_loop(sim: ProviderSimulator) -> None:
    lm = make_lm(sim)

    async def on_the_loop() -> None:
        lm.stream("q")

    with pytest.raises(dspy.RuntimeReentryError):
        dspy._runtime.run(on_the_loop())  # type: ignore[attr-defined]


# -- Predict: fields as they come ------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_predict_streams_each_output_field(sim: ProviderSimulator, provider: str) -> None:
    sim.respond(output={"answer": f"Paris {TEXT}", "confidence": 0.5, "sources": ["a", "b"]})
    predict = dspy.Predict(
        "question -> answer: str, confidence: float, sources: list[str]", lm=make_lm(sim, provider)
    )

    stream = predict.stream(question="Capital of France?")
    chunks = list(stream)

    by_field: dict[str, str] = {}
    for chunk in chunks:
        by_field[chunk.field] = by_field.get(chunk.field, "") + chunk.text
    assert by_field == {"answer": f"Paris {TEXT}", "confidence": "0.5", "sources": '["a", "b"]'}
    assert [c.field for c in chunks][:3] == ["answer"] * 3  # the answer arrives in pieces
    assert {c.reply for c in chunks} == {1}
    prediction = stream.prediction
    assert prediction.answer == f"Paris {TEXT}"
    assert prediction.confidence == 0.5 and prediction.sources == ["a", "b"]
    (request,) = finished(sim)
    assert prediction.usage.completion_tokens == request.completion_tokens > 0
    assert [a.outcome for a in prediction.attempts] == ["ok"]


def test_partial_objects_as_they_parse(sim: ProviderSimulator) -> None:
    sim.respond(output={"answer": TEXT, "count": 3})
    stream = dspy.Predict("question -> answer: str, count: int", lm=make_lm(sim)).stream(
        question="q"
    )
    partials = [chunk.partial for chunk in stream]
    assert partials[0] == {"answer": WORDS[0]}
    assert partials[5]["answer"] == " ".join(WORDS[:6])
    assert partials[-1] == {"answer": TEXT, "count": 3}


def test_an_invalid_reply_is_reasked_and_streamed_again(sim: ProviderSimulator) -> None:
    sim.respond(output={"count": "seven"}, times=1)
    sim.respond(output={"count": 7})
    predict = dspy.Predict("question -> count: int", lm=make_lm(sim))

    stream = predict.stream(question="how many?")
    chunks = list(stream)

    assert [(c.reply, c.text) for c in chunks] == [(1, "seven"), (2, "7")]
    assert stream.prediction.count == 7
    assert [a.outcome for a in stream.prediction.attempts] == ["invalid_output", "ok"]


def test_prompt_json_replies_stream_their_fields_too(sim: ProviderSimulator) -> None:
    """Without native structured outputs the reply is prose around a JSON object."""
    sim.respond(output='Sure! Here it is:\n```json\n{"answer": "' + TEXT + '"}\n```')
    lm = make_lm(sim)
    lm.supports_native_structured = False
    stream = dspy.Predict("question -> answer", lm=lm).stream(question="q")
    assert "".join(chunk.text for chunk in stream) == TEXT
    assert stream.prediction.answer == TEXT


def test_chain_of_thought_streams_its_reasoning_first(sim: ProviderSimulator) -> None:
    sim.respond(output={"reasoning": "Because it is.", "answer": "yes"})
    stream = dspy.ChainOfThought("question -> answer", lm=make_lm(sim)).stream(question="q")
    fields = [chunk.field for chunk in stream]
    assert fields.index("reasoning") < fields.index("answer")
    assert stream.prediction.reasoning == "Because it is."


def test_several_completions_cannot_be_streamed(sim: ProviderSimulator) -> None:
    with pytest.raises(dspy.ConfigurationError, match="one completion"):
        dspy.Predict("q -> a", lm=make_lm(sim), n=3).stream(q="x")


def test_an_lm_that_cannot_stream_gives_its_whole_text_as_one_chunk() -> None:
    lm = DummyLM([{"answer": "forty-two"}, "plain text"])
    stream = dspy.Predict("question -> answer", lm=lm).stream(question="q")
    assert list(stream) == [StreamChunk("answer", "forty-two")]
    assert stream.prediction.answer == "forty-two"
    text_stream = lm.stream("hi")
    assert isinstance(text_stream, TextStream)
    assert list(text_stream) == ["plain text"]


# -- the response cache ----------------------------------------------------------------------


def test_a_cached_answer_is_replayed_as_one_chunk(
    sim: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim.respond(output=TEXT)
    lm = make_lm(sim)

    first = lm.stream("q")
    assert len(list(first)) == 40
    again = lm.stream("q")
    assert list(again) == [TEXT]
    assert again.response.cached and not first.response.cached
    assert lm("q").cached  # a streamed answer serves later plain calls too
    assert len(sim.requests) == 1


# -- many at once ----------------------------------------------------------------------------


@pytest.mark.slow
def test_200_concurrent_streams_from_200_threads_each_complete_and_in_order(
    sim: ProviderSimulator,
) -> None:
    sim.chunk_delay = 0.01
    count = 200
    for index in range(count):
        sim.respond(f"stream {index:03d}", output=f"{index:03d} " + " ".join(WORDS[:20]))
    lm = make_lm(sim, timeout=30)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def consume(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = list(lm.stream(f"stream {index:03d}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert not errors, errors[:3]
    for index in range(count):
        assert results[index] == [f"{index:03d}", *(f" {word}" for word in WORDS[:20])]
    in_flight = max(
        sum(1 for other in sim.requests if other.arrived <= r.arrived < (other.finished or 0))
        for r in sim.requests
    )
    assert in_flight >= 50  # they really ran at once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process:DeprecationWarning")  # 3.12+: threads, fork
def test_a_stream_opened_before_a_fork_refuses_to_be_read_in_the_child(
    sim: ProviderSimulator,
) -> None:
    sim.respond(output=TEXT)
    with make_lm(sim).stream("q") as stream:
        next(stream)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what reading does, then leave at once
            try:
                next(stream)
                outcome = b"read"
            except dspy.RuntimeClosedError:
                outcome = b"refused"
            os.write(write, outcome)
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert os.read(read, 16) == b"refused" and status == 0
        os.close(read)
        assert "".join(stream).startswith(" word1")  # the parent reads on
