"""The API key never leaves: servers that echo it everywhere they can, and everything we
produce walked for it (messages, reprs, the whole exception chain, tracebacks, attempts,
events and log records)."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async import events
from dspy_async.providers.exchange import MAX_QUOTED, TransportFailure, scrub

from .servers import (
    Handler,
    RawServer,
    anthropic_message,
    canned,
    close_after,
    openai_chat,
    response_head,
)

KEY = "sk-hostile-SECRET-5f2c9a7e1b3d"
# A server may cut the key as it echoes it: any 8 characters of it are a leak.
PIECES = [KEY[i : i + 8] for i in range(len(KEY) - 7)]
FAST = dspy.RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)
JSON = {"Content-Type": "application/json"}


def refusal(text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "refusal": text}
    return openai_chat(None, choices=[{"index": 0, "message": message, "finish_reason": "stop"}])


ECHOES: list[Any] = [
    pytest.param(canned(401, JSON, {"error": {"message": f"bad key {KEY}"}}), id="401_json"),
    pytest.param(canned(400, {}, f"no such model; you sent {KEY}"), id="400_text"),
    pytest.param(canned(429, JSON, {"error": {"message": f"slow down {KEY}"}}), id="429"),
    pytest.param(canned(503, JSON, {"detail": {"error": f"Bearer {KEY}"}}), id="503_nested"),
    pytest.param(canned(500, {}, f"key={KEY[:14]}"), id="500_cut_key"),
    pytest.param(canned(200, {}, f"<html>{KEY}</html>"), id="200_not_json"),
    pytest.param(canned(200, JSON, refusal(f"I won't, {KEY}. " + "x" * 5000)), id="refusal"),
    pytest.param(canned(200, JSON, {"choices": [{"message": KEY}]}), id="odd_shape"),
    pytest.param(canned(500, {}, b"", reason=f"Oops {KEY}"), id="reason_phrase"),
    pytest.param(close_after(f"HTTP/1.1 2{KEY} OK\r\n\r\n".encode()), id="bad_status_line"),
    pytest.param(canned(200, {"X-Echo": KEY * 400}, openai_chat("hi")), id="long_header"),
    pytest.param(
        close_after(f"HTTP/1.1 200 OK\r\nContent-Length: {KEY}\r\n\r\n".encode()),
        id="bad_content_length",
    ),
    pytest.param(
        close_after(f"HTTP/1.1 200 OK\r\nX-{KEY}\r\n\r\n".encode()), id="header_without_colon"
    ),
    pytest.param(canned(200, {"Content-Encoding": KEY}, b"{}"), id="content_encoding"),
    pytest.param(
        close_after(response_head(200, {"Content-Length": "500"}) + KEY.encode()),
        id="cut_off_body",
    ),
    pytest.param(
        close_after(response_head(200, {"Transfer-Encoding": "chunked"}) + f"{KEY}\r\n".encode()),
        id="bad_chunk_size",
    ),
]


@pytest.fixture
def recorded(caplog: pytest.LogCaptureFixture) -> Iterator[list[events.LMEvent]]:
    caplog.set_level(logging.DEBUG)
    seen: list[events.LMEvent] = []
    unsubscribe = events.subscribe(seen.append)
    yield seen
    unsubscribe()


def chain(error: BaseException) -> list[BaseException]:
    """`error` and every exception reachable from it through __cause__ and __context__."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or any(exc is seen for seen in found):
            continue
        found.append(exc)
        todo += [exc.__cause__, exc.__context__]
    return found


def everything_shown(
    error: BaseException, seen: list[events.LMEvent], caplog: pytest.LogCaptureFixture
) -> str:
    texts = ["".join(traceback.format_exception(error))]
    for exc in chain(error):
        texts += [str(exc), repr(exc), repr(vars(exc)) if hasattr(exc, "__dict__") else ""]
    for event in seen:
        texts.append(repr(event))
        if isinstance(event, events.RetryEvent | events.FailureEvent):
            texts += [str(exc) + repr(exc) for exc in chain(event.error)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    return "\n".join(texts)


def assert_no_key(text: str) -> None:
    leaked = [piece for piece in PIECES if piece in text]
    assert not leaked, f"the key leaked: {leaked[:3]}"


@pytest.mark.parametrize("handler", ECHOES)
def test_a_key_echoed_anywhere_is_never_shown(
    handler: Handler, recorded: list[events.LMEvent], caplog: pytest.LogCaptureFixture
) -> None:
    with RawServer(handler) as server, pytest.raises(dspy.LMError) as raised:
        lm = dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, retry=FAST)
        lm("q")
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent
    error = raised.value
    assert_no_key(everything_shown(error, recorded, caplog))
    assert all(KEY[:8] not in (attempt.error or "") for attempt in error.attempts)
    assert len(str(error)) < MAX_QUOTED + 500  # quotes are shortened, refusals included
    assert any(isinstance(e, events.FailureEvent) for e in recorded)


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(canned(401, JSON, {"error": {"message": f"bad key {KEY}"}}), id="401"),
        pytest.param(canned(200, {"X-Echo": KEY * 400}, anthropic_message("hi")), id="header"),
        pytest.param(close_after(f"HTTP/1.1 2{KEY} OK\r\n\r\n".encode()), id="status_line"),
    ],
)
def test_an_anthropic_key_is_never_shown_either(
    handler: Handler, recorded: list[events.LMEvent], caplog: pytest.LogCaptureFixture
) -> None:
    with RawServer(handler) as server, pytest.raises(dspy.LMError) as raised:
        lm = dspy.LM("anthropic/m", api_base=server.url, api_key=KEY, retry=FAST)
        lm("q")
    assert server.requests[0].headers["x-api-key"] == KEY
    assert_no_key(everything_shown(raised.value, recorded, caplog))


def test_a_transport_error_keeps_a_scrubbed_description_as_its_cause() -> None:
    # aiohttp's own exception holds the request, headers and all: it must not be chained.
    with RawServer(close_after(f"HTTP/1.1 2{KEY} OK\r\n\r\n".encode())) as server:
        lm = dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, retry=FAST)
        with pytest.raises(dspy.ProviderResponseError) as raised:
            lm("q")
    cause = raised.value.__cause__
    assert isinstance(cause, TransportFailure)
    assert "aiohttp" in str(cause)  # what failed, for debugging
    assert cause.__cause__ is None and cause.__context__ is None
    assert_no_key(repr(cause))


def test_a_long_refusal_is_quoted_shortened() -> None:
    body = refusal("I cannot help with that. " * 1000)
    with RawServer(canned(200, JSON, body)) as server:
        lm = dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, retry=FAST)
        with pytest.raises(dspy.ProviderResponseError, match="model refused: I cannot") as raised:
            lm("q")
    assert str(raised.value).endswith("...)")
    assert len(str(raised.value)) < MAX_QUOTED + 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"a {KEY} b", "a [redacted] b"),
        (f"{KEY}{KEY}", "[redacted]"),
        (f"cut: {KEY[:9]}...", "cut: [redacted]..."),
        (f"tail {KEY[-10:]}", "tail [redacted]"),
        (f"short {KEY[:7]}", f"short {KEY[:7]}"),  # seven characters identify nothing
        (json.dumps({"k": KEY}), '{"k": "[redacted]"}'),
        ("nothing to see", "nothing to see"),
    ],
)
def test_scrub_redacts_the_key_and_any_piece_of_it(text: str, expected: str) -> None:
    assert scrub(KEY, text) == expected


def test_scrub_redacts_a_short_key_whole() -> None:
    assert scrub("abc", "x abc y abcabc") == "x [redacted] y [redacted][redacted]"
    assert scrub(None, "anything") == "anything"
