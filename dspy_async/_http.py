"""The shared HTTP client: one `httpx.AsyncClient` per runtime loop, host and connection limit.

httpx stays the client API, but its default transport slows down badly with thousands of
requests in flight, so the client runs over aiohttp through the `httpx-aiohttp` transport.
Clients live in the runtime's per-loop registry: shared by every thread's calls (one pool, one
set of keep-alive connections), closed when the runtime shuts down, rebuilt after a fork.
"""

from __future__ import annotations

from collections.abc import Hashable

import httpx
from httpx_aiohttp import AiohttpTransport

from . import _runtime

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "ResponseTooLarge", "read_body", "shared_client"]

DEFAULT_MAX_RESPONSE_BYTES = 10 * 2**20


class ResponseTooLarge(Exception):
    """A response body went over the size cap; reading stopped there."""


def shared_client(origin: Hashable, max_connections: int | None) -> httpx.AsyncClient:
    """The runtime loop's client for `origin` (scheme, host, port, ...), made on first use;
    must be called on the runtime loop.

    `max_connections` (the LM's `max_concurrency`) caps its pool; None leaves it unbounded.
    """
    return _runtime.loop_resource(
        (__name__, origin), lambda: new_client(max_connections), close=httpx.AsyncClient.aclose
    )


def new_client(max_connections: int | None) -> httpx.AsyncClient:
    """An AsyncClient over the aiohttp transport (whose pool size 0 means unbounded)."""
    limits = httpx.Limits(max_connections=max_connections or 0, keepalive_expiry=30.0)
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits))


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
