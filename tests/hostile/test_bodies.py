"""Hostile bodies: compression bombs, odd encodings and JSON nested past any parser's stack.

Every case ends in a typed error (or a clean success) quickly, holding the 10 MiB cap on the
decoded bytes whatever the encoding stack, with the runtime loop never frozen. Peak memory is
measured in fresh interpreters by test_stalls.py.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest

import dspy_async as dspy
from dspy_async import _runtime, events

from .measure import MAX_STALL, StallProbe
from .payloads import MiB, deep_brackets, gzip_bomb, gzip_zeros
from .servers import RawServer, canned, chunked, openai_chat

KEY = "sk-hostile-bodies-0123456789"
FAST = dspy.RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)
JSON = {"Content-Type": "application/json"}
REPLY = json.dumps(openai_chat("decoded fine")).encode()


def lm_for(server: RawServer, **kwargs: object) -> dspy.LM:
    kwargs.setdefault("retry", FAST)
    return dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, **kwargs)


@pytest.fixture
def failures() -> Iterator[list[events.LMEvent]]:
    seen: list[events.LMEvent] = []
    unsubscribe = events.subscribe(seen.append)
    yield seen
    unsubscribe()


def deflate(data: bytes, *, raw: bool = False) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


# ---- bombs -------------------------------------------------------------------------------

BOMBS = [
    pytest.param("gzip, gzip", lambda: gzip_bomb(2048 * MiB, stages=2), id="gzip_gzip_2GiB"),
    pytest.param("gzip", lambda: gzip_zeros(1024 * MiB), id="gzip_1GiB"),
    pytest.param("deflate", lambda: deflate(bytes(64 * MiB)), id="deflate_zlib"),
    pytest.param("deflate", lambda: deflate(bytes(64 * MiB), raw=True), id="deflate_raw"),
    pytest.param("gzip, deflate", lambda: deflate(gzip_zeros(1024 * MiB)), id="gzip_then_deflate"),
    pytest.param("gzip, gzip, gzip, gzip", lambda: gzip_bomb(2048 * MiB, stages=4), id="gzip_x4"),
]


@pytest.mark.parametrize(("encoding", "bomb"), BOMBS)
def test_a_bomb_stops_at_the_cap_on_decoded_bytes(encoding: str, bomb: object) -> None:
    assert callable(bomb)
    body = bomb()
    assert len(body) < 2 * MiB  # small on the wire: only decoding could hit the cap
    with RawServer(canned(200, {**JSON, "Content-Encoding": encoding}, body)) as server:
        began = time.monotonic()
        with StallProbe() as probe, pytest.raises(dspy.ProviderResponseError) as raised:
            lm_for(server)("q")
    assert time.monotonic() - began < 5
    assert probe.max_gap < MAX_STALL
    assert "over the 10485760 byte limit" in str(raised.value)
    assert len(raised.value.attempts) == 1  # the same bomb again would not help
    assert server.connections == 1


def test_the_cap_holds_for_a_bomb_sent_chunked_without_a_length() -> None:
    bomb = gzip_bomb(2048 * MiB, stages=2)
    pieces = [bomb[i : i + 100] for i in range(0, len(bomb), 100)]
    headers = {**JSON, "Content-Encoding": "gzip, gzip"}
    with (
        RawServer(chunked(200, headers, pieces)) as server,
        pytest.raises(dspy.ProviderResponseError, match="byte limit"),
    ):
        lm_for(server)("q")


def test_the_cap_holds_through_a_users_own_httpx_client() -> None:
    headers = {**JSON, "Content-Encoding": "gzip, gzip"}
    with RawServer(canned(200, headers, gzip_bomb(2048 * MiB, stages=2))) as server:
        client = httpx.AsyncClient()
        lm = lm_for(server, http_client=client)
        with pytest.raises(dspy.ProviderResponseError, match="byte limit"):
            lm("q")
        _runtime.run(client.aclose())


def test_the_cap_is_exact_on_decoded_bytes() -> None:
    reply = REPLY + b" " * 1000
    headers = {**JSON, "Content-Encoding": "gzip"}
    with RawServer(canned(200, headers, gzip.compress(reply))) as server:
        assert lm_for(server, max_response_bytes=len(reply))("q").text == "decoded fine"
        with pytest.raises(dspy.ProviderResponseError, match="byte limit"):
            lm_for(server, max_response_bytes=len(reply) - 1)("q")


# ---- encodings that decode, and ones that must not ---------------------------------------

GOOD_ENCODINGS = [
    pytest.param("gzip", gzip.compress(REPLY), id="gzip"),
    pytest.param("x-gzip", gzip.compress(REPLY), id="x_gzip"),
    pytest.param("GZIP", gzip.compress(REPLY), id="upper_case"),
    pytest.param("gzip, gzip", gzip.compress(gzip.compress(REPLY)), id="gzip_gzip"),
    pytest.param("deflate", deflate(REPLY), id="deflate_zlib"),
    pytest.param("deflate", deflate(REPLY, raw=True), id="deflate_raw"),
    pytest.param("gzip,deflate", deflate(gzip.compress(REPLY)), id="gzip_then_deflate"),
    pytest.param("identity", REPLY, id="identity"),
    pytest.param("", REPLY, id="empty"),
]


@pytest.mark.parametrize(("encoding", "body"), GOOD_ENCODINGS)
def test_encoded_replies_decode_once(encoding: str, body: bytes) -> None:
    with RawServer(canned(200, {**JSON, "Content-Encoding": encoding}, body)) as server:
        assert lm_for(server)("q").text == "decoded fine"
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_gzip_stream_split_across_many_chunks_decodes() -> None:
    body = gzip.compress(REPLY)
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    headers = {**JSON, "Content-Encoding": "gzip"}
    with RawServer(chunked(200, headers, pieces)) as server:
        assert lm_for(server)("q").text == "decoded fine"


BAD_ENCODINGS = [
    pytest.param("br", REPLY, "encoded with br, which was not asked for", 1, id="brotli"),
    pytest.param("zstd", REPLY, "encoded with zstd", 1, id="zstd"),
    pytest.param("compress", REPLY, "encoded with compress", 1, id="compress"),
    pytest.param("gzip, " * 4 + "gzip", REPLY, "stacks 5 content encodings", 1, id="x5"),
    pytest.param(
        "gzip",
        b"\x1f\x8b not gzip at all",
        "gzip-encoded response body is corrupt",
        4,
        id="corrupt",
    ),
    pytest.param(
        "gzip",
        gzip.compress(REPLY)[:-12],
        "gzip-encoded response body ends early",
        4,
        id="truncated",
    ),
]


@pytest.mark.parametrize(("encoding", "body", "message", "attempts"), BAD_ENCODINGS)
def test_undecodable_bodies_are_typed_errors(
    encoding: str,
    body: bytes,
    message: str,
    attempts: int,
    failures: list[events.LMEvent],
) -> None:
    headers = {**JSON, "Content-Encoding": encoding}
    with (
        RawServer(canned(200, headers, body)) as server,
        pytest.raises(dspy.ProviderResponseError, match=message) as raised,
    ):
        lm_for(server)("q")
    # An encoding we cannot decode will not change; a corrupt stream may be a bad moment.
    assert len(raised.value.attempts) == attempts
    assert raised.value.status_code == 200
    assert [type(e) for e in failures if isinstance(e, events.FailureEvent)] == [
        events.FailureEvent
    ]


# ---- nesting deeper than any stack -------------------------------------------------------


def test_a_200_body_nested_100000_deep_is_a_typed_error_retried_with_events(
    failures: list[events.LMEvent],
) -> None:
    deep = canned(200, JSON, deep_brackets(100_000))
    with (
        RawServer(deep) as server,
        pytest.raises(dspy.ProviderResponseError, match="nested more than 128") as raised,
    ):
        lm_for(server)("q")
    error = raised.value
    assert len(error.attempts) == 4 == server.connections  # retried per the policy
    assert len(str(error)) < 1200  # the brackets are quoted, shortened
    assert [type(e).__name__ for e in failures if not isinstance(e, events.RequestEvent)] == [
        "RetryEvent",
        "RetryEvent",
        "RetryEvent",
        "FailureEvent",
    ]


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        pytest.param(500, deep_brackets(100_000), dspy.ProviderServerError, id="500_arrays"),
        pytest.param(
            400,
            b'{"error": ' * 100_000 + b"1" + b"}" * 100_000,
            dspy.BadRequestError,
            id="400_objects",
        ),
        pytest.param(429, deep_brackets(100_000), dspy.RateLimitError, id="429"),
    ],
)
def test_an_error_body_nested_100000_deep_keeps_its_status_class(
    status: int, body: bytes, error_class: type[dspy.LMError]
) -> None:
    with RawServer(canned(status, JSON, body)) as server, pytest.raises(error_class) as raised:
        lm_for(server)("q")
    assert raised.value.status_code == status
    assert f"HTTP {status}" in str(raised.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_literals_in_a_body_are_refused(literal: str) -> None:
    body = json.dumps(openai_chat("x")).replace('"prompt_tokens": 1', f'"prompt_tokens": {literal}')
    with (
        RawServer(canned(200, JSON, body)) as server,
        pytest.raises(dspy.ProviderResponseError, match=f"{literal} is not a JSON value"),
    ):
        lm_for(server)("q")


def test_a_body_of_millions_of_empty_arrays_is_refused_before_it_is_built() -> None:
    body = b'{"choices": [' + b"[]," * 3_000_000 + b"[]]}"  # 9 MB: 3 million lists if parsed
    refused = pytest.raises(dspy.ProviderResponseError, match="more than 1,000,000 arrays")
    with RawServer(canned(200, JSON, body)) as server, StallProbe() as probe, refused:
        lm_for(server, retry=dspy.RetryPolicy(max_attempts=1))("q")
    assert probe.max_gap < MAX_STALL


@pytest.mark.slow
def test_a_large_valid_body_is_parsed_off_the_loop() -> None:
    # 8 MB of reply text: parsed on a worker thread, while the loop keeps ticking.
    text = json.dumps({"answer": "y" * 8_000_000})
    with RawServer(canned(200, {}, openai_chat(text))) as server, StallProbe() as probe:
        result = dspy.Predict("question -> answer", lm=lm_for(server))(question="q")
    assert len(result.answer) == 8_000_000
    assert probe.max_gap < MAX_STALL
