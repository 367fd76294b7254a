"""The shared HTTP pool: one httpx transport per runtime loop, origin and connection limit.

httpx stays the HTTP API (requests, responses, a user's own `httpx.AsyncClient`), but its
default transport slows down badly with thousands of requests in flight, so the pool is
aiohttp's, through the `httpx-aiohttp` transport. Our requests go straight to that transport:
an `AsyncClient` around it would add URL merging, cookie jars, auth and redirect handling that
an API call never uses, and measurably cost at scale. Transports live in the runtime's per-loop
registry: shared by every thread's calls (one pool, one set of keep-alive connections), closed
when the runtime shuts down, rebuilt after a fork.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import httpx
from httpx_aiohttp import AiohttpTransport

from . import _runtime

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ResponseTooLarge",
    "Sender",
    "open_response",
    "read_body",
    "shared_transport",
]

DEFAULT_MAX_RESPONSE_BYTES = 10 * 2**20

Sender = httpx.AsyncClient | httpx.AsyncBaseTransport
"""What sends a request: the shared transport, or a user's own client."""


class ResponseTooLarge(Exception):
    """A response body went over the size cap; reading stopped there."""


def shared_transport(origin: Hashable, max_connections: int | None) -> AiohttpTransport:
    """The runtime loop's transport for `origin` (scheme, host, port, ...), made on first use;
    must be called on the runtime loop.

    `max_connections` (the LM's `max_concurrency`) caps its pool; None leaves it unbounded
    (aiohttp's pool size 0).
    """

    def new_transport() -> AiohttpTransport:
        limits = httpx.Limits(max_connections=max_connections or 0, keepalive_expiry=30.0)
        return AiohttpTransport(limits=limits)

    return _runtime.loop_resource((__name__, origin), new_transport, close=AiohttpTransport.aclose)


@asynccontextmanager
async def open_response(sender: Sender, request: httpx.Request) -> AsyncIterator[httpx.Response]:
    """Send `request` and yield the response with its body unread; always closes it."""
    if isinstance(sender, httpx.AsyncClient):
        response = await sender.send(request, stream=True)
    else:
        response = await sender.handle_async_request(request)
    try:
        yield response
    finally:
        await response.aclose()


async def read_body(response: httpx.Response, max_bytes: int) -> bytes:
    """Read a streamed response body, refusing one longer than `max_bytes`."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(
            f"response body of {declared} bytes is over the {max_bytes} byte limit"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"response body is over the {max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
