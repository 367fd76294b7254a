"""The hostile servers themselves: each helper sends what it says, as seen by a real client."""

from __future__ import annotations

import socket

import httpx
import pytest

from .servers import (
    RawServer,
    canned,
    chunked,
    close_after,
    openai_chat,
    reset_after,
    response_head,
    sequence,
    trickle,
)


def test_canned_records_the_request_and_answers_json() -> None:
    with RawServer(canned(200, body=openai_chat("hi"))) as server:
        response = httpx.post(f"{server.url}/v1/chat/completions", json={"a": 1})
    assert response.json()["choices"][0]["message"]["content"] == "hi"
    assert server.requests[0].path == "/v1/chat/completions"
    assert server.requests[0].json() == {"a": 1}
    assert server.connections == 1


def test_status_line_reason_and_headers_are_sent_as_given() -> None:
    handler = canned(418, {"X-Odd": "yes"}, b"teapot", reason="Made Up")
    with RawServer(handler) as server:
        response = httpx.get(server.url)
    assert (response.status_code, response.reason_phrase) == (418, "Made Up")
    assert response.headers["x-odd"] == "yes"
    assert response.text == "teapot"


def test_chunked_trickle_and_sequence() -> None:
    first = chunked(200, {}, [b"ab", b"cd"])
    second = trickle(200, {}, b"xyz", step=1, delay=0.01)
    with RawServer(sequence(first, second)) as server:
        assert httpx.get(server.url).content == b"abcd"
        assert httpx.get(server.url).content == b"xyz"
        assert httpx.get(server.url).content == b"xyz"
    assert server.connections == 3


def test_close_and_reset_end_the_response_early() -> None:
    partial = response_head(200, {"Content-Length": "100"}) + b"short"
    with RawServer(close_after(partial)) as server, pytest.raises(httpx.RemoteProtocolError):
        httpx.get(server.url)
    with RawServer(reset_after()) as server, pytest.raises(httpx.TransportError):
        httpx.get(server.url)


def test_server_stops_with_a_client_still_connected() -> None:
    with RawServer(canned(200)) as server:
        idle = socket.create_connection(("127.0.0.1", server.port))
    idle.close()
