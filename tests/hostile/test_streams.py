"""Hostile streams: a line that never ends, a trickle, events that never end, data that is not
JSON, a compression bomb. Each ends in a typed error within a time bound, holding what it
buffers to the stream's bounds (1 MiB a line or an event, the 10 MiB response cap), with the
runtime loop never frozen; an error before the first chunk is retried as usual, one after it
carries the text that came and is not."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

import dspy_async as dspy

from .measure import MAX_STALL, StallProbe
from .payloads import MiB, gzip_zeros
from .servers import RawServer, canned, read_request, response_head, sequence

KEY = "sk-hostile-streams-0123456789"
FAST = dspy.RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)
Parts = Callable[[], AsyncIterator[bytes]]


def lm_for(server: RawServer, **kwargs: object) -> dspy.LM:
    kwargs.setdefault("retry", FAST)
    return dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, **kwargs)


def event(content: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


END = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


class Streamed:
    """A handler streaming `parts()` as chunked text/event-stream; counts the bytes it sent."""

    def __init__(self, parts: Parts, headers: dict[str, str] | None = None) -> None:
        self.parts = parts
        self.headers = {
            "Content-Type": "text/event-stream",
            "Transfer-Encoding": "chunked",
            "Connection": "close",
            **(headers or {}),
        }
        self.sent = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(response_head(200, self.headers))
        async for part in self.parts():
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            self.sent += len(part)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def parts_of(*pieces: bytes, delay: float = 0.0) -> Parts:
    async def parts() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            if delay:
                await asyncio.sleep(delay)

    return parts


@pytest.fixture
def probe() -> Iterator[StallProbe]:
    with StallProbe() as running:
        yield running
    assert running.max_gap < MAX_STALL


def run_stream(lm: dspy.LM) -> tuple[list[str], BaseException]:
    received: list[str] = []
    try:
        received.extend(lm.stream("q"))
    except dspy.LMError as error:
        return received, error
    raise AssertionError(f"the stream did not fail: {received[:3]}")


def test_an_sse_line_of_100_mb(probe: StallProbe) -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"data: "
        for _ in range(100):
            yield b"x" * MiB

    handler = Streamed(parts)
    with RawServer(handler) as server:
        started = time.monotonic()
        received, error = run_stream(lm_for(server, max_response_bytes=200 * MiB))
    assert time.monotonic() - started < 10
    assert isinstance(error, dspy.ProviderResponseError)
    assert "longer than 1048576 bytes" in str(error)
    assert received == [] and len(error.attempts) == 1  # sent again, it would be again
    assert handler.sent < 80 * MiB  # the client stopped reading, and the server was held


@pytest.mark.slow
def test_a_trickle_of_one_byte_per_second(probe: StallProbe) -> None:
    """Bytes that never make an event do not keep a stream alive: the timeout is per event."""
    first = event("Hello")

    async def parts() -> AsyncIterator[bytes]:
        yield first
        for byte in event(" world"):
            yield bytes([byte])
            await asyncio.sleep(1.0)

    with RawServer(Streamed(parts)) as server:
        started = time.monotonic()
        received, error = run_stream(lm_for(server, timeout=2.0))
    assert 1.5 < time.monotonic() - started < 8
    assert isinstance(error, dspy.ProviderTimeoutError)
    assert received == ["Hello"] == [error.partial_text]
    assert len(error.attempts) == 1


@pytest.mark.slow
def test_a_trickle_before_the_first_chunk_is_retried_then_fails(probe: StallProbe) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for byte in event("Hello"):
            yield bytes([byte])
            await asyncio.sleep(1.0)

    retry = dspy.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=False)
    with RawServer(Streamed(parts)) as server:
        started = time.monotonic()
        received, error = run_stream(lm_for(server, timeout=1.5, retry=retry))
    assert time.monotonic() - started < 8
    assert isinstance(error, dspy.ProviderTimeoutError) and received == []
    assert len(error.attempts) == 2 and server.connections == 2


def forever(piece: bytes, delay: float = 0.0) -> Parts:
    async def parts() -> AsyncIterator[bytes]:
        yield event("first")
        while True:
            yield piece
            await asyncio.sleep(delay)

    return parts


@pytest.mark.parametrize(
    ("piece", "delay", "expected", "message"),
    [
        pytest.param(b"data: " + b"y" * 1000 + b"\n", 0.0, dspy.ProviderResponseError,
                     "an event of the stream carries over", id="data_lines_never_ended"),
        pytest.param(b": keep-alive\n", 0.001, dspy.ProviderTimeoutError, "no event",
                     id="comments_only", marks=pytest.mark.slow),
        pytest.param(b"event: ping\ndata: {}\n\n", 0.005, dspy.ProviderTimeoutError, "no event",
                     id="pings_until_the_deadline", marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_events_that_never_end(
    probe: StallProbe, piece: bytes, delay: float, expected: type[Exception], message: str
) -> None:
    retry = dspy.RetryPolicy(max_elapsed=2.0, initial_delay=0.01, jitter=False)
    with RawServer(Streamed(forever(piece, delay))) as server:
        started = time.monotonic()
        received, error = run_stream(lm_for(server, timeout=1.0, retry=retry))
    assert time.monotonic() - started < 8
    assert isinstance(error, expected) and message in str(error)
    assert received == ["first"] == [error.partial_text]
    assert len(error.attempts) == 1


def test_invalid_json_in_a_data_line_after_the_first_chunk(probe: StallProbe) -> None:
    parts = parts_of(event("Hello"), event(" there"), b"data: {not json\n\n", END)
    with RawServer(Streamed(parts)) as server:
        received, error = run_stream(lm_for(server))
    assert isinstance(error, dspy.ProviderResponseError) and "not JSON" in str(error)
    assert error.partial_text == "Hello there" == "".join(received)
    assert len(error.attempts) == 1 and server.connections == 1


def test_invalid_json_before_the_first_chunk_is_retried() -> None:
    bad = Streamed(parts_of(b"data: <html>\n\n", END))
    good = Streamed(parts_of(event("fine"), END))
    with RawServer(sequence(bad, good)) as server:
        stream = lm_for(server).stream("q")
        assert list(stream) == ["fine"]
    assert [a.outcome for a in stream.response.attempts] == ["error", "ok"]


def _events_bomb(size: int) -> bytes:
    """Gzip of `size` bytes of valid events: a few KB that decode past the response cap."""
    block = event("x") * (MiB // len(event("x")))
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    body = b"".join(compressor.compress(block) for _ in range(size // len(block)))
    return body + compressor.flush()


@pytest.mark.parametrize(
    "bomb",
    [
        pytest.param(lambda: gzip_zeros(1024 * MiB), id="zeros_1GiB"),
        pytest.param(lambda: _events_bomb(64 * MiB), id="events_64MiB", marks=pytest.mark.slow),
    ],
)
def test_a_gzip_bomb_in_a_stream(probe: StallProbe, bomb: Callable[[], bytes]) -> None:
    body = bomb()
    assert len(body) < 2 * MiB
    pieces = [body[i : i + 16384] for i in range(0, len(body), 16384)]
    handler = Streamed(parts_of(*pieces), {"Content-Encoding": "gzip"})
    with RawServer(handler) as server:
        started = time.monotonic()
        received, error = run_stream(lm_for(server))
    assert time.monotonic() - started < 10
    assert isinstance(error, dspy.ProviderResponseError)
    assert "over the 10485760 byte limit" in str(error)
    assert error.partial_text == "".join(received)  # the events that decoded before the cap
    assert len(error.attempts) == 1


@pytest.mark.slow
def test_a_slow_consumer_holds_a_fast_server_back(probe: StallProbe) -> None:
    """Nothing is read while the consumer's buffer is full: the server's writes block (TCP),
    instead of this process buffering its 180 MB."""
    big = "z" * 60_000

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(3000):
            yield event(big)

    handler = Streamed(parts)
    with RawServer(handler) as server:
        lm = lm_for(server, max_response_bytes=500 * MiB)
        with lm.stream("q") as stream:
            assert next(stream) == big
            time.sleep(1.0)
            sent = handler.sent
            time.sleep(0.5)
            assert handler.sent == sent, sent  # held back
            assert sent < 48 * MiB, sent
            assert [next(stream) for _ in range(100)] == [big] * 100  # and it goes on


def anthropic_lm(server: RawServer, **kwargs: object) -> dspy.LM:
    kwargs.setdefault("retry", FAST)
    return dspy.LM("anthropic/m", api_base=server.url, api_key=KEY, **kwargs)


def anthropic_event(kind: str, **fields: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


TEXT_BLOCK = anthropic_event(
    "content_block_start", index=0, content_block={"type": "text", "text": ""}
)
OVERLOADED = anthropic_event(
    "error", error={"type": "overloaded_error", "message": f"Overloaded (key {KEY})"}
)


def text_delta(text: str) -> bytes:
    return anthropic_event(
        "content_block_delta", index=0, delta={"type": "text_delta", "text": text}
    )


def message_start() -> bytes:
    message = {"id": "msg", "model": "m", "usage": {"input_tokens": 7, "output_tokens": 1}}
    return anthropic_event("message_start", message=message)


ANTHROPIC_END = anthropic_event(
    "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 3}
) + anthropic_event("message_stop")


def test_an_error_event_before_the_first_chunk_is_retried_as_its_status() -> None:
    failing = Streamed(parts_of(message_start(), TEXT_BLOCK, OVERLOADED))
    fine = Streamed(parts_of(message_start(), TEXT_BLOCK, text_delta("Hello"), ANTHROPIC_END))
    with RawServer(sequence(failing, fine)) as server:
        stream = anthropic_lm(server).stream("q")
        assert list(stream) == ["Hello"]
    attempts = stream.response.attempts
    assert [(a.outcome, a.status_code) for a in attempts] == [("error", 529), ("ok", 200)]
    assert attempts[0].usage == dspy.Usage(7, 1)  # what message_start said was billed
    assert attempts[1].usage == dspy.Usage(7, 3)
    assert stream.response.usage == dspy.Usage(14, 4)


def test_an_error_event_after_the_first_chunk_carries_the_text_and_no_key() -> None:
    parts = parts_of(message_start(), TEXT_BLOCK, text_delta("Hel"), text_delta("lo"), OVERLOADED)
    with RawServer(Streamed(parts)) as server:
        received, error = run_stream(anthropic_lm(server))
    assert isinstance(error, dspy.ProviderServerError) and error.status_code == 529
    assert error.partial_text == "Hello" == "".join(received)
    assert "Overloaded" in str(error) and KEY not in str(error)
    assert len(error.attempts) == 1 and server.connections == 1


def test_a_server_that_ignores_stream_answers_in_one_chunk() -> None:
    reply = {
        "choices": [{"index": 0, "message": {"content": "whole"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }
    with RawServer(canned(200, {}, reply)) as server:
        stream = lm_for(server).stream("q")
        assert list(stream) == ["whole"]
    assert stream.response.usage.total_tokens == 3
    assert server.requests[0].json()["stream"] is True
