"""One attempt: send a request and read the reply, or say exactly how it failed.

This is the one place where transport failures (httpx's, and aiohttp's under the
httpx-aiohttp transport) and providers' error bodies become typed errors, each wrapped in an
`AttemptFailed` saying whether it may be retried and how long the server asked us to wait.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from .. import _http
from ..errors import (
    AuthenticationError,
    BadRequestError,
    ContextWindowExceededError,
    LMError,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
    UnsupportedParameterError,
)
from ..retry import RETRYABLE_STATUSES, AttemptFailed, server_wait, should_retry
from .base import Endpoint, ErrorBody, Provider, Reply, is_context_window

__all__ = ["Request", "exchange"]

# The longest provider message quoted in an error; bodies can be whole HTML pages.
MAX_QUOTED = 1000


@dataclass(frozen=True, slots=True)
class Request:
    """One call's request, sent as is by every attempt. `structured` is True when the body
    carries the provider's native structured-output parameter."""

    provider_name: str
    provider: Provider
    endpoint: Endpoint
    body: dict[str, Any]
    structured: bool


async def exchange(
    sender: _http.Sender, request: Request, *, timeout: float, max_bytes: int
) -> Reply:
    """Send `request` once, within `timeout` seconds; return the reply or raise AttemptFailed."""
    name = request.provider_name
    reading = False
    # The one deadline is the asyncio timeout around the whole attempt (connect, send and
    # read); per-phase transport timers on top would only add work at scale.
    outgoing = httpx.Request(
        "POST", request.endpoint.url, json=request.body, headers=request.endpoint.headers
    )
    try:
        async with asyncio.timeout(timeout), _http.open_response(sender, outgoing) as response:
            reading = True
            content = await _http.read_body(response, max_bytes)
    except _http.ResponseTooLarge as exc:
        too_large = ProviderResponseError(
            f"{name}: {exc}", provider=name, status_code=response.status_code
        )
        raise AttemptFailed(too_large, retryable=False) from None
    except (httpx.RequestError, aiohttp.ClientError, TimeoutError) as exc:
        status = response.status_code if reading else None
        error = _transport_error(name, exc, status=status, timeout=timeout)
        retryable = not isinstance(exc, httpx.UnsupportedProtocol)
        raise AttemptFailed(error, retryable=retryable) from exc
    if response.status_code == 200:
        return _reply(request, content, response.headers)
    raise _status_failure(request, response.status_code, response.headers, content)


def _transport_error(
    name: str, exc: BaseException, *, status: int | None, timeout: float
) -> LMError:
    """The error for a failed exchange; `status` is set if the body was being read."""
    # httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout, so the
    # original aiohttp error, when there is one, is what tells a timeout from a drop.
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        message = f"{name} did not answer within {timeout:.3g} s"
        return ProviderTimeoutError(message, provider=name, status_code=status)
    detail = f"{type(cause).__name__}: {cause}".rstrip(": ")
    if status is not None:
        message = f"{name}: response body was cut off ({detail})"
        return ProviderResponseError(message, provider=name, status_code=status)
    return ProviderConnectionError(f"{name}: connection failed ({detail})", provider=name)


def _reply(request: Request, content: bytes, headers: httpx.Headers) -> Reply:
    name = request.provider_name
    try:
        body = json.loads(content)
    except ValueError:
        error = ProviderResponseError(
            f"{name} answered 200 with a body that is not JSON: {_quote(request, content)}",
            provider=name,
            status_code=200,
        )
        raise AttemptFailed(error, retryable=should_retry(headers, default=True)) from None
    try:
        reply = request.provider.parse_reply(body)
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        error = ProviderResponseError(
            f"{name} answered 200 with an unexpected body ({type(exc).__name__}: {exc})",
            provider=name,
            status_code=200,
        )
        raise AttemptFailed(error, retryable=should_retry(headers, default=False)) from None
    if request.structured and reply.structured is False:
        # Servers that accept but ignore a forced tool (llama.cpp's Anthropic endpoint with a
        # model whose template has no tools) answer in prose: ask through the prompt instead.
        ignored = UnsupportedParameterError(
            f"{name} ignored the native structured-output request and answered in text",
            provider=name,
            status_code=200,
        )
        raise AttemptFailed(ignored, retryable=False)
    return reply


def _status_failure(
    request: Request, status: int, headers: httpx.Headers, content: bytes
) -> AttemptFailed:
    name = request.provider_name
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", errors="replace")
    info = request.provider.parse_error(body)
    message = f"{name} returned HTTP {status}: {_quote(request, info.message)}"
    wait = server_wait(headers)
    error_class = _error_class(request, status, info)
    error: LMError
    if error_class is RateLimitError:
        error = RateLimitError(message, retry_after=wait, provider=name, status_code=status)
    else:
        error = error_class(message, provider=name, status_code=status)
    retryable = should_retry(headers, default=status in RETRYABLE_STATUSES)
    return AttemptFailed(error, retryable=retryable, server_wait=wait)


def _error_class(request: Request, status: int, info: ErrorBody) -> type[LMError]:
    names_native = any(
        re.search(rf"\b{param}\b", info.message, re.IGNORECASE)
        for param in request.provider.NATIVE_PARAMS
    )
    if status == 429:
        return RateLimitError
    if status in (401, 403):
        return AuthenticationError
    if 400 <= status < 500 and status not in (408, 409):
        if is_context_window(info):
            return ContextWindowExceededError
        if request.structured and names_native:
            return UnsupportedParameterError
        return BadRequestError
    if request.structured and status >= 500 and names_native:
        return UnsupportedParameterError
    if status >= 500 or status in (408, 409):
        return ProviderServerError
    return ProviderResponseError


def _quote(request: Request, text: str | bytes) -> str:
    """Provider text fit to quote in an error: shortened, and scrubbed of the API key."""
    if isinstance(text, bytes):
        text = text[: 4 * MAX_QUOTED].decode("utf-8", errors="replace")
    secret = request.endpoint.secret
    if secret:
        text = text.replace(secret, "[redacted]")
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}..."
