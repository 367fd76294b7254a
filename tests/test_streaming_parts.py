"""The parts of streaming, each alone: line and event framing, each provider's deltas, the
field scanner, and the channel between the runtime loop and a consumer."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from dspy_async import _runtime
from dspy_async.providers.base import ErrorBody
from dspy_async.records import Usage
from dspy_async.streaming.channel import Channel, Ended, pump
from dspy_async.streaming.deltas import deltas_for
from dspy_async.streaming.faults import BadStream, ErrorEvent, IgnoredSchema
from dspy_async.streaming.fields import FieldStream, StreamChunk, _Scanner
from dspy_async.streaming.lines import LineSplitter, LineTooLong
from dspy_async.streaming.ndjson import NDJSONParser
from dspy_async.streaming.sse import Event, EventTooLarge, SSEParser

# -- lines and events ------------------------------------------------------------------------


def feed_bytewise(parser: SSEParser | NDJSONParser, data: bytes) -> list[Event]:
    return [event for i in range(len(data)) for event in parser.feed(data[i : i + 1])]


SSE = (
    b"\xef\xbb\xbf: a comment\r\n"
    b"event: first\r\ndata: one\r\ndata: two\r\n\r\n"
    b'data: {"a": 1}\n\n'
    b"id: 7\rretry: 10\rdata: cr only\r\r"
    b"event: no-data\n\n"
    b"data:unspaced\n\n"
    b"data: not ended"
)
EVENTS = [
    Event("first", "one\ntwo"),
    Event("message", '{"a": 1}'),
    Event("message", "cr only"),
    Event("message", "unspaced"),
]


def test_sse_events_whole_and_byte_by_byte() -> None:
    assert SSEParser().feed(SSE) == EVENTS
    assert feed_bytewise(SSEParser(), SSE) == EVENTS  # CRLF split across feeds counts once


def test_a_line_is_bounded_however_it_arrives() -> None:
    splitter = LineSplitter(10, universal=True)
    assert splitter.feed(b"0123456789\n") == [b"0123456789"]
    splitter.feed(b"01234")
    with pytest.raises(LineTooLong):
        splitter.feed(b"567890")
    with pytest.raises(LineTooLong):
        LineSplitter(10, universal=True).feed(b"x" * 11 + b"\n")


def test_an_event_is_bounded_over_its_data_lines() -> None:
    parser = SSEParser(max_event=100)
    with pytest.raises(EventTooLarge):
        for _ in range(20):
            parser.feed(b"data: 0123456789\n")  # never a blank line


def test_ndjson_lines_and_a_last_line_without_newline() -> None:
    parser = NDJSONParser()
    assert parser.feed(b'{"a": 1}\r\n\n{"b"') == [Event("message", '{"a": 1}')]
    assert parser.feed(b': 2}\n{"c": 3}') == [Event("message", '{"b": 2}')]
    assert parser.end() == [Event("message", '{"c": 3}')]
    with pytest.raises(LineTooLong):
        NDJSONParser(max_line=8).feed(b'{"long": true}\n')


# -- deltas ----------------------------------------------------------------------------------


def sse_events(*payloads: object) -> list[Event]:
    return [Event("message", p if isinstance(p, str) else json.dumps(p)) for p in payloads]


def openai_chunk(content: str | None = None, finish: str | None = None, **extra: object) -> dict:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def test_openai_deltas() -> None:
    deltas = deltas_for("openai", structured=False)
    assert deltas.body({"model": "m", "stream_options": {"x": 1}})["stream_options"] == {
        "x": 1,
        "include_usage": True,
    }
    events = sse_events(
        openai_chunk("", usage=None),
        openai_chunk("Hel"),
        {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
        openai_chunk("lo"),
        openai_chunk(finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        "[DONE]",
    )
    assert "".join(deltas.read(event) for event in events) == "Hello"
    assert deltas.done
    reply = deltas.finish("Hello")
    assert (reply.text, reply.finish_reason, reply.response_id) == ("Hello", "stop", "c1")
    assert reply.usage == Usage(3, 2)


def test_openai_stream_cut_before_its_end_and_errors_in_it() -> None:
    deltas = deltas_for("openai", structured=False)
    deltas.read(sse_events(openai_chunk("Hel"))[0])
    with pytest.raises(BadStream, match="DONE"):
        deltas.finish("Hel")
    with pytest.raises(ErrorEvent) as raised:
        deltas.read(sse_events({"error": {"message": "boom", "type": "server_error"}})[0])
    assert raised.value.status == 500 and raised.value.info.message == "boom"
    with pytest.raises(BadStream, match="not JSON"):
        deltas.read(Event("message", "{nope"))
    with pytest.raises(BadStream, match="not shaped"):
        deltas.read(sse_events({"choices": [{"delta": {"content": 7}}]})[0])


def anthropic(kind: str, **fields: object) -> Event:
    return Event(kind, json.dumps({"type": kind, **fields}))


def block_delta(index: int, kind: str, **fields: object) -> Event:
    return anthropic("content_block_delta", index=index, delta={"type": kind, **fields})


MESSAGE_START = anthropic(
    "message_start",
    message={
        "id": "msg",
        "model": "claude",
        "usage": {"input_tokens": 9, "output_tokens": 1, "cache_read_input_tokens": 4},
    },
)
MESSAGE_STOP = anthropic("message_stop")
TOOL_USE = {"type": "tool_use", "id": "t", "name": "Answer", "input": {}}
ANTHROPIC_TOOL = [
    MESSAGE_START,
    anthropic("content_block_start", index=0, content_block=TOOL_USE),
    anthropic("ping"),
    block_delta(0, "input_json_delta", partial_json='{"answer": "Pa'),
    block_delta(0, "input_json_delta", partial_json='ris"}'),
    anthropic("content_block_stop", index=0),
    anthropic("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 12}),
    MESSAGE_STOP,
]


def test_anthropic_deltas_of_a_forced_tool() -> None:
    deltas = deltas_for("anthropic", structured=True)
    text = "".join(deltas.read(event) for event in ANTHROPIC_TOOL)
    assert text == '{"answer": "Paris"}'
    reply = deltas.finish(text)
    assert reply.structured is True and reply.finish_reason == "tool_use"
    assert reply.usage == Usage(13, 12, cache_read_tokens=4)


def test_anthropic_prose_for_a_forced_tool_is_refused_and_errors_are_typed() -> None:
    deltas = deltas_for("anthropic", structured=True)
    for event in [
        MESSAGE_START,
        anthropic("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        block_delta(0, "text_delta", text="I think"),
        MESSAGE_STOP,
    ]:
        assert deltas.read(event) == ""  # the prose is held back
    with pytest.raises(IgnoredSchema):
        deltas.finish("")
    overloaded = {"type": "overloaded_error", "message": "Overloaded"}
    with pytest.raises(ErrorEvent) as raised:
        deltas.read(anthropic("error", error=overloaded))
    assert raised.value.status == 529


def ollama_line(content: str, **fields: object) -> Event:
    line = {"message": {"role": "assistant", "content": content}, "done": False, **fields}
    return Event("message", json.dumps(line))


def test_ollama_deltas() -> None:
    deltas = deltas_for("ollama", structured=False)
    lines = [
        ollama_line("Hi", model="llama"),
        ollama_line(" there"),
        ollama_line("", done=True, done_reason="stop", prompt_eval_count=5, eval_count=2),
    ]
    assert "".join(deltas.read(line) for line in lines) == "Hi there"
    reply = deltas.finish("Hi there")
    assert (reply.usage, reply.finish_reason, reply.response_model) == (
        Usage(5, 2),
        "stop",
        "llama",
    )
    with pytest.raises(ErrorEvent) as raised:
        deltas.read(Event("message", '{"error": "model is loading"}'))
    assert raised.value.info == ErrorBody("model is loading")


# -- fields ----------------------------------------------------------------------------------

NAMES = frozenset({"answer", "count", "items", "note"})


def scan(text: str, *, step: int, names: frozenset[str] = NAMES) -> dict[str, str]:
    scanner = _Scanner(names)
    fields: dict[str, str] = {}
    for start in range(0, len(text), step):
        for name, piece in scanner.feed(text[start : start + step]):
            fields[name] = fields.get(name, "") + piece
    return fields


REPLY = (
    'Here you go: ```json\n{"answer": "Caf\\u00e9 \\"quoted\\" \\ud83d\\ude00 line\\nend", '
    '"count": -12.5e3, "extra": {"answer": "not me"}, "items": [{"a": "]}"}, [1, 2]], '
    '"note": null}\n``` trailing {"answer": "ignored"}'
)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_the_scanner_follows_the_top_level_fields_however_the_text_is_cut(step: int) -> None:
    assert scan(REPLY, step=step) == {
        "answer": 'Café "quoted" 😀 line\nend',
        "count": "-12.5e3",
        "items": '[{"a": "]}"}, [1, 2]]',
        "note": "null",
    }


def test_the_scanner_stops_at_what_is_not_json() -> None:
    assert scan('{"answer": "ok", oops "count": 3}', step=4) == {"answer": "ok"}
    assert scan("no object here", step=3) == {}
    assert scan('{"' + "k" * 2000 + '": "x", "answer": "y"}', step=50) == {}  # key too long


def test_a_lone_surrogate_escape_becomes_a_replacement_character() -> None:
    assert scan('{"answer": "a\\ud83d b"}', step=1) == {"answer": "a\ufffd b"}


def test_the_scanner_is_linear_in_the_reply() -> None:
    big = '{"answer": "' + "x" * 2_000_000 + '", "items": [' + "[]," * 300_000 + "[]]}"
    started = time.perf_counter()
    fields = scan(big, step=4096)
    assert time.perf_counter() - started < 2.0
    assert len(fields["answer"]) == 2_000_000


async def test_field_stream_chunks_and_partials() -> None:
    chunks: list[StreamChunk] = []

    async def put(chunk: StreamChunk) -> None:
        chunks.append(chunk)

    stream = FieldStream(["answer", "count"], put)
    sink = stream.reply()
    for piece in ['{"answer": "Pa', 'ris", "co', 'unt": 4', "2}"]:
        await sink(piece)
    assert [(c.field, c.text, c.reply) for c in chunks] == [
        ("answer", "Pa", 1),
        ("answer", "ris", 1),
        ("count", "4", 1),
        ("count", "2", 1),
    ]
    assert chunks[0].partial == {"answer": "Pa"}
    assert chunks[2].partial == {"answer": "Paris", "count": 4}
    assert chunks[3].partial == {"answer": "Paris", "count": 42}
    assert chunks[0] == StreamChunk("answer", "Pa", 1)  # the text behind partial is not compared
    await stream.reply()('{"answer": "again"}')
    assert chunks[-1] == StreamChunk("answer", "again", 2)


# -- the channel -----------------------------------------------------------------------------


def test_the_channel_holds_the_producer_back_when_the_consumer_lags() -> None:
    put_count = 0

    async def produce(put: object) -> str:
        nonlocal put_count
        assert callable(put)
        for index in range(100):
            await put(str(index))
            put_count += 1
        return "done"

    channel: Channel[str] = Channel(_runtime.get_loop(), len, capacity=8)
    _runtime.submit(pump(channel, produce))
    time.sleep(0.3)
    assert put_count == 8  # then it waits for room
    taken = [channel.get() for _ in range(100)]
    assert taken == [str(i) for i in range(100)]
    ended = channel.get()
    assert isinstance(ended, Ended) and ended.result == "done"


def test_the_channel_bounds_the_text_waiting_too() -> None:
    async def produce(put: object) -> None:
        assert callable(put)
        for _ in range(10):
            await put("x" * 1000)

    channel: Channel[str] = Channel(_runtime.get_loop(), len, max_weight=2500)
    _runtime.submit(pump(channel, produce))
    time.sleep(0.2)
    assert len(channel._items) == 3  # past 2500 characters only one more gets in
    channel.close()
    assert channel.finished.wait(5)


def test_closing_cancels_the_producer_even_before_it_started() -> None:
    cancelled = threading.Event()

    async def produce(put: object) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    channel: Channel[str] = Channel(_runtime.get_loop(), len)
    _runtime.submit(pump(channel, produce))
    channel.close()
    assert channel.finished.wait(5)  # started and cancelled, or never started
    ended = channel.get()
    assert isinstance(ended, Ended) and isinstance(ended.error, asyncio.CancelledError)


async def test_an_async_consumer_on_another_loop_is_woken_by_each_item() -> None:
    async def produce(put: object) -> int:
        assert callable(put)
        for index in range(3):
            await asyncio.sleep(0.01)
            await put(str(index))
        return 3

    channel: Channel[str] = Channel(_runtime.get_loop(), len)
    _runtime.submit(pump(channel, produce))
    items = [await channel.aget() for _ in range(4)]
    assert items[:3] == ["0", "1", "2"]
    assert isinstance(items[3], Ended) and items[3].result == 3
