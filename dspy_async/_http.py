"""The shared HTTP pool: one httpx transport per runtime loop and origin, with its slots.

httpx stays the HTTP API of a user's own `httpx.AsyncClient`, but its default transport slows
down badly with thousands of requests in flight, so the pool is aiohttp's, built (and closed)
by the `httpx-aiohttp` transport. Our requests go straight to that transport's aiohttp session
(`send`): an `AsyncClient` around it would add URL merging, cookie jars, auth and redirect
handling that an API call never uses, and the httpx request and response objects the
transport translates to and from cost about a sixth of a call's CPU with thousands in flight.
Either way `send` hands back a `Response`, which is all exchange() reads. Transports live in
the runtime's per-loop registry: shared by every thread's calls (one pool, one set of
keep-alive connections), closed when the runtime shuts down, rebuilt after a fork.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import AsyncIterator, Awaitable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from multidict import CIMultiDict, CIMultiDictProxy

from . import _decoding, _runtime

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Pool",
    "Response",
    "ResponseTooLarge",
    "Sender",
    "default_pool_size",
    "header_values",
    "json_body",
    "opened",
    "read_body",
    "send",
    "shared_pool",
]

DEFAULT_MAX_RESPONSE_BYTES = 10 * 2**20
MIN_POOL_SIZE = 16
MAX_POOL_SIZE = 16384

Sender = httpx.AsyncClient | httpx.AsyncBaseTransport
"""What sends a request: the shared transport, or a user's own client."""


class ResponseTooLarge(Exception):
    """A response body went over the size cap; reading stopped there."""


@dataclass(frozen=True, slots=True)
class Pool:
    """One origin's connections on the runtime loop: the transport, and `slots`, one per
    connection it may open. An attempt takes a slot before its timeout starts, so a request
    queued for a connection is never timed out by the wait, and requests beyond the pool's
    size wait their turn instead of opening sockets until the process runs out of them."""

    transport: AiohttpTransport
    slots: asyncio.Semaphore


def default_pool_size() -> int:
    """Connections per origin: half the process's file-descriptor limit, so that a burst of
    calls to one provider leaves descriptors for everything else, within 16..16384."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_POOL_SIZE
    return max(MIN_POOL_SIZE, min(MAX_POOL_SIZE, soft // 2))


def shared_pool(origin: Hashable) -> Pool:
    """The runtime loop's pool for `origin` (scheme, host, port), made on first use and shared
    by every LM that calls it; must be called on the runtime loop. Each LM's own
    `max_concurrency` is a separate limit on top (see pipeline/slots.py), so one LM's limit
    never throttles another's calls to the same origin."""

    return _runtime.loop_resource((__name__, origin), _new_pool, close=_close_pool)


def _new_pool() -> Pool:
    size = default_pool_size()
    limits = httpx.Limits(max_connections=size, keepalive_expiry=30.0)
    return Pool(AiohttpTransport(limits=limits), asyncio.Semaphore(size))


async def _close_pool(pool: Pool) -> None:
    await pool.transport.aclose()


class Response(Protocol):
    """A response with its body unread, as exchange() and the stream reader read one; an
    `httpx.Response` is one. `headers` are case-insensitive and keep repeated headers
    (`header_values` reads those)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


def json_body(body: Any) -> bytes:
    """A request body as JSON, encoded as httpx encodes `json=` (no NaN, compact, UTF-8)."""
    return _ENCODER.encode(body).encode()


# Made once (json.dumps with arguments makes a new one for every body).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# No aiohttp timers: the one deadline is exchange()'s asyncio timeout around the attempt.
_NO_TIMEOUT = aiohttp.ClientTimeout()


def send(
    sender: Sender, url: httpx.URL, headers: Mapping[str, str], content: bytes
) -> Awaitable[aiohttp.ClientResponse | httpx.Response]:
    """POST `content` to `url`; the awaitable gives the transport's response with its body
    unread, which `opened` makes a `Response` of, for the caller to read and close. The
    shared pool's requests go straight to its aiohttp session. A plain function, so that a
    request in flight keeps no frame of its own here."""
    if isinstance(sender, AiohttpTransport):
        session = sender.client
        if not isinstance(session, aiohttp.ClientSession):
            session = sender.client = sender.get_client()  # made on first use, on this loop
        # `_request`, what `request()` wraps in a context manager that an await then wraps
        # again: two objects fewer for every request in flight.
        sent = session._request(
            "POST",
            str(url),
            data=content,
            headers=headers,
            allow_redirects=False,
            auto_decompress=False,  # read_body decodes, with its bounds
            timeout=_NO_TIMEOUT,
        )
        return sent
    request = httpx.Request("POST", url, content=content, headers=headers)
    if isinstance(sender, httpx.AsyncClient):
        return sender.send(request, stream=True)
    return sender.handle_async_request(request)


def opened(response: aiohttp.ClientResponse | httpx.Response) -> Response:
    """What `send` gave, as a `Response`: an httpx one is one already."""
    if isinstance(response, aiohttp.ClientResponse):
        return _AiohttpResponse(response)
    return response


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header `name` in a response's `headers`, repeated headers and
    comma-separated lists (Content-Encoding's "gzip, gzip") split into one item each."""
    if isinstance(headers, httpx.Headers):
        values = headers.get_list(name)
    elif isinstance(headers, CIMultiDictProxy | CIMultiDict):
        values = headers.getall(name, [])
    else:
        values = [headers[name]] if name in headers else []
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


class _AiohttpResponse:
    """An aiohttp response as a `Response`: its status, its headers (aiohttp's
    case-insensitive multidict, read as is), its raw body (still encoded) as it arrives, and
    `aclose`, which gives the connection back."""

    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


async def read_body(response: Response, max_bytes: int) -> bytes:
    """Read a streamed response body and undo its Content-Encoding, refusing one longer than
    `max_bytes` on the wire or at any stage of decoding (see _decoding.py).

    The raw stream is read, so this is the one decoder that runs: aiohttp's is off in the
    transport, and httpx's (`aiter_bytes`) would inflate each chunk with no bound.
    Raises ResponseTooLarge, or a `_decoding.DecodingError` for a body it cannot decode.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(
            f"response body of {declared} bytes is over the {max_bytes} byte limit"
        )
    encodings = header_values(response.headers, "content-encoding")
    try:
        decoder = _decoding.BodyDecoder(encodings, max_bytes)
        async for chunk in response.aiter_raw():
            decoder.feed(chunk)
        return decoder.finish()
    except _decoding.DecodedTooLarge as exc:
        raise ResponseTooLarge(str(exc)) from None
