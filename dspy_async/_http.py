"""The shared HTTP pool: one httpx transport per runtime loop and origin, with its slots.

httpx stays the HTTP API (requests, responses, a user's own `httpx.AsyncClient`), but its
default transport slows down badly with thousands of requests in flight, so the pool is
aiohttp's, through the `httpx-aiohttp` transport. Our requests go straight to that transport:
an `AsyncClient` around it would add URL merging, cookie jars, auth and redirect handling that
an API call never uses, and measurably cost at scale. Transports live in the runtime's per-loop
registry: shared by every thread's calls (one pool, one set of keep-alive connections), closed
when the runtime shuts down, rebuilt after a fork.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from httpx_aiohttp import AiohttpTransport

from . import _decoding, _runtime

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Pool",
    "ResponseTooLarge",
    "Sender",
    "default_pool_size",
    "open_response",
    "read_body",
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

    def new_pool() -> Pool:
        size = default_pool_size()
        limits = httpx.Limits(max_connections=size, keepalive_expiry=30.0)
        return Pool(AiohttpTransport(limits=limits), asyncio.Semaphore(size))

    async def close(pool: Pool) -> None:
        await pool.transport.aclose()

    return _runtime.loop_resource((__name__, origin), new_pool, close=close)


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
    encodings = response.headers.get_list("content-encoding", split_commas=True)
    try:
        decoder = _decoding.BodyDecoder(encodings, max_bytes)
        async for chunk in response.aiter_raw():
            decoder.feed(chunk)
        return decoder.finish()
    except _decoding.DecodedTooLarge as exc:
        raise ResponseTooLarge(str(exc)) from None
