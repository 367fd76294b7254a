"""One attempt: send a request and read the reply, or say exactly how it failed.

This is the one place where transport failures (httpx's, and aiohttp's under the
httpx-aiohttp transport), undecodable bodies and providers' error bodies become typed errors,
each wrapped in an `AttemptFailed` saying whether it may be retried and how long the server
asked us to wait.

Nothing that holds the request crosses this boundary: transport exceptions carry it (aiohttp's
`request_info` has every header, the API key's included), so they are described in the
message and dropped, never chained. Every message is scrubbed of the key, and every quote of
provider text is scrubbed and shortened, because a hostile or broken server can echo the key
anywhere: in a body, a refusal, a status line or a header.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx

from .. import _decoding, _http, _json
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
from ..ratelimit.headers import select as rate_limit_headers
from ..records import Usage
from ..retry import RETRYABLE_STATUSES, AttemptFailed, server_wait, should_retry
from ..streaming.faults import BadStream, ErrorEvent, IgnoredSchema, StreamFault
from .base import Endpoint, ErrorBody, Provider, Reply, is_context_window

if TYPE_CHECKING:
    from ..streaming.reader import StreamReader

__all__ = ["Request", "TransportFailure", "exchange", "scrub"]

# The longest provider text quoted in an error; bodies can be whole HTML pages.
MAX_QUOTED = 1000
# How much of an error message is searched to classify it (context window, native params).
MAX_CLASSIFIED = 16 * 1024
# A piece of the API key this long is redacted wherever it appears (a truncated echo).
KEY_PIECE = 8
REDACTED = "[redacted]"

# For a 404: per provider, a path that shows a common api_base mistake, and what to say.
_NOT_FOUND_HINTS = {
    "openai": (
        re.compile(r"^(?!.*/v1/)"),
        "OpenAI-compatible servers usually serve /v1/chat/completions; "
        "did you forget /v1 in api_base?",
    ),
    "anthropic": (
        re.compile(r"/v1/v1/messages$"),
        "Anthropic serves /v1/messages; api_base is the host URL, without /v1",
    ),
    "ollama": (
        re.compile(r"/v1/api/chat$"),
        "Ollama serves /api/chat at the host URL (for its /v1 API, use openai/<model>)",
    ),
}


# The headers of a response that never came (never changed: one for every attempt).
_NO_HEADERS = httpx.Headers()
# A URL no transport can send to: retrying cannot help.
_NEVER_SENT = (httpx.UnsupportedProtocol, aiohttp.InvalidURL)


class TransportFailure(Exception):
    """The `__cause__` of a transport error: the transport's exceptions, described (types and
    scrubbed messages), in place of the exceptions themselves, which hold the request."""


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
    sender: _http.Sender,
    request: Request,
    *,
    timeout: float,
    max_bytes: int,
    stream: StreamReader | None = None,
) -> Reply:
    """Send `request` once, within `timeout` seconds; return the reply or raise AttemptFailed.

    With `stream`, the request asks for a stream, and a 200 is read as it arrives, its text
    handed on piece by piece (streaming/reader.py, which re-arms the timeout at each event).
    """
    sent = _http.json_body(request.body if stream is None else stream.body)
    status: int | None = None
    received: Mapping[str, str] = _NO_HEADERS
    failure: AttemptFailed | None = None
    cause: TransportFailure | None = None
    reply: Reply | None = None
    content = b""
    # The one deadline is the asyncio timeout around the whole attempt (connect, send and
    # read); per-phase transport timers on top would only add work at scale.
    try:
        async with asyncio.timeout(timeout) as timer:
            response = _http.opened(
                await _http.send(sender, request.endpoint.url, request.endpoint.sent_headers, sent)
            )
            try:
                status, received = response.status_code, response.headers
                if stream is not None and status == 200 and stream.accepts(response):
                    reply = await stream.read(response, timer)
                else:
                    content = await _http.read_body(response, max_bytes)
            finally:
                await response.aclose()
    except StreamFault as exc:
        failure = _stream_failure(request, exc)
    except (_http.ResponseTooLarge, _decoding.DecodingError) as exc:
        retryable = isinstance(exc, _decoding.CorruptBody)
        failure = AttemptFailed(
            _error(ProviderResponseError, request, f"{request.provider_name}: {exc}", status),
            retryable=retryable,
        )
    except (httpx.RequestError, aiohttp.ClientError, TimeoutError) as exc:
        streamed = reply is None and stream is not None and status == 200
        failure = AttemptFailed(
            _transport_error(request, exc, status=status, timeout=timeout, streamed=streamed),
            retryable=not isinstance(exc, _NEVER_SENT),
        )
        cause = TransportFailure(_quote(request, _describe(exc)))
    if failure is not None:
        if stream is not None:  # once text was handed on, never retried
            failure = stream.interrupted(failure)
        # Raised here, outside the handler, so that it has no __context__ either; and not
        # left in this frame, which joins its traceback (a reference cycle otherwise).
        try:
            raise failure from cause
        finally:
            failure = cause = None
    if status == 200:
        if reply is None:
            reply = await _reply(request, content, received)
            if stream is not None:  # a server that ignored `stream`: its text, at once
                await stream.whole(reply.text)
        limits = rate_limit_headers(received)
        return replace(reply, headers=limits) if limits else reply
    assert status is not None
    raise await _status_failure(request, status, received, content)


def _describe(exc: BaseException) -> str:
    """`exc` and the exceptions that caused it, as `module.Type: message` lines."""
    lines: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(lines) < 4:
        kind = type(seen)
        lines.append(f"{kind.__module__}.{kind.__qualname__}: {seen}".rstrip(": "))
        seen = seen.__cause__
    return "\n  caused by ".join(lines)


def _transport_error(
    request: Request, exc: BaseException, *, status: int | None, timeout: float, streamed: bool
) -> LMError:
    """The error for a failed exchange; `status` is set if the body was being read, and
    `streamed` if that body was a stream."""
    # httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout, so the
    # original aiohttp error, when there is one, is what tells a timeout from a drop.
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    name = request.provider_name
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        message = f"{name} did not answer within {timeout:.3g} s"
        if streamed:
            message = f"{name} sent no event of its stream within {timeout:.3g} s"
        return _error(ProviderTimeoutError, request, message, status)
    detail = _quote(request, f"{type(cause).__name__}: {cause}".rstrip(": "))
    if isinstance(cause, aiohttp.ClientResponseError):
        # aiohttp's parser refused the status line or a header: the server answered, badly.
        message = f"{name} sent a response that could not be read ({detail})"
        return _error(ProviderResponseError, request, message, status)
    if streamed:  # the events that came were whole: it is the connection that went
        message = f"{name}: the stream was cut off ({detail})"
        return _error(ProviderConnectionError, request, message, status)
    if status is not None:
        message = f"{name}: response body was cut off ({detail})"
        return _error(ProviderResponseError, request, message, status)
    return _error(ProviderConnectionError, request, f"{name}: connection failed ({detail})", None)


async def _reply(request: Request, content: bytes, headers: Mapping[str, str]) -> Reply:
    name = request.provider_name
    try:
        body = await _json.run_bounded(len(content), _json.loads, content)
    except ValueError as exc:
        message = (
            f"{name} answered 200 with a body that is not JSON ({exc}): {_quote(request, content)}"
        )
        error = _error(ProviderResponseError, request, message, 200)
        raise AttemptFailed(error, retryable=should_retry(headers, default=True)) from None
    try:
        reply = request.provider.parse_reply(body)
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        # The exception's text can quote the body (a refusal, say): quoted like any body.
        detail = _quote(request, f"{type(exc).__name__}: {exc}")
        message = f"{name} answered 200 with an unexpected body ({detail})"
        error = _error(ProviderResponseError, request, message, 200)
        retryable = should_retry(headers, default=False)
        raise AttemptFailed(error, retryable=retryable, usage=_billed(request, body)) from None
    if request.structured and reply.structured is False:
        raise AttemptFailed(_ignored_schema(name), retryable=False, usage=reply.usage)
    return reply


def _ignored_schema(name: str) -> LMError:
    # Servers that accept but ignore a forced tool (llama.cpp's Anthropic endpoint with a
    # model whose template has no tools) answer in prose: ask through the prompt instead.
    return UnsupportedParameterError(
        f"{name} ignored the native structured-output request and answered in text",
        provider=name,
        status_code=200,
    )


def _stream_failure(request: Request, fault: StreamFault) -> AttemptFailed:
    """The typed error for a streamed 200 that could not be used (see streaming/faults.py)."""
    name = request.provider_name
    if isinstance(fault, ErrorEvent):
        info = fault.info
        quoted = _quote(request, info.message) if info.message.strip() else "(no message)"
        message = f"{name} sent an error event in its stream (as HTTP {fault.status}): {quoted}"
        error = _error(_error_class(request, fault.status, info), request, message, fault.status)
        return AttemptFailed(error, retryable=fault.status in RETRYABLE_STATUSES)
    if isinstance(fault, IgnoredSchema):
        return AttemptFailed(_ignored_schema(name), retryable=False)
    message = f"{name} sent a stream that could not be read: {_quote(request, str(fault))}"
    error = _error(ProviderResponseError, request, message, 200)
    return AttemptFailed(error, retryable=isinstance(fault, BadStream) and fault.retryable)


def _billed(request: Request, body: Any) -> Usage:
    """The tokens an unusable 200 reports, if it reports any readably: they were billed."""
    try:
        return request.provider.parse_usage(body)
    except (LookupError, TypeError, ValueError, AttributeError):
        return Usage()


def _error_body(provider: Provider, content: bytes) -> ErrorBody:
    """The provider's reading of an error body, JSON or not; run off the loop when large."""
    try:
        body: Any = _json.loads(content)
    except ValueError:
        body = content[: 4 * MAX_QUOTED].decode("utf-8", errors="replace")
    info = provider.parse_error(body)
    return ErrorBody(info.message[:MAX_CLASSIFIED], info.code)


async def _status_failure(
    request: Request, status: int, headers: Mapping[str, str], content: bytes
) -> AttemptFailed:
    name = request.provider_name
    info = await _json.run_bounded(len(content), _error_body, request.provider, content)
    quoted = _quote(request, info.message) if info.message.strip() else "(empty body)"
    message = f"{name} returned HTTP {status}: {quoted}"
    if status == 404:
        message += f" ({_not_found_hint(request)})"
    wait = server_wait(headers)
    error_class = _error_class(request, status, info)
    extra = {"retry_after": wait} if error_class is RateLimitError else {}
    error = _error(error_class, request, message, status, **extra)
    retryable = should_retry(headers, default=status in RETRYABLE_STATUSES)
    return AttemptFailed(
        error, retryable=retryable, server_wait=wait, headers=rate_limit_headers(headers)
    )


def _not_found_hint(request: Request) -> str:
    """Which URL was called (without credentials or query) and, if its path shows a common
    api_base mistake, what the provider serves instead."""
    url = request.endpoint.url
    shown = url.copy_with(username=None, password=None, query=None, fragment=None)
    mistake, hint = _NOT_FOUND_HINTS.get(request.provider_name, (None, ""))
    if mistake is None or not mistake.search(url.path):
        hint = "check api_base and the model name"
    return f"POST {shown} was not found; {hint}"


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


def _error(
    cls: type[LMError], request: Request, message: str, status: int | None, **extra: Any
) -> LMError:
    """A typed error whose message is scrubbed of the API key, whatever it quotes."""
    message = scrub(request.endpoint.secret, message)
    return cls(message, provider=request.provider_name, status_code=status, **extra)


def _quote(request: Request, text: str | bytes) -> str:
    """Provider text fit to quote in an error: shortened, and scrubbed of the API key."""
    if isinstance(text, bytes):
        text = text[: 4 * MAX_QUOTED].decode("utf-8", errors="replace")
    # Scrubbed before shortening, so that the cut cannot leave a piece of the key too short
    # to recognise; the cut then lands after it.
    text = scrub(request.endpoint.secret, text[: 4 * MAX_QUOTED])
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}..."


def scrub(secret: str | None, text: str) -> str:
    """`text` with `secret` redacted, and with it any piece of the secret KEY_PIECE or more
    characters long (a server echoing the key may cut it, or a message may truncate it)."""
    if not secret:
        return text
    if len(secret) <= KEY_PIECE:
        return text.replace(secret, REDACTED)
    pieces = {secret[i : i + KEY_PIECE] for i in range(len(secret) - KEY_PIECE + 1)}
    spans: list[list[int]] = []  # the stretches of `text` to redact, merged
    for start in range(len(text) - KEY_PIECE + 1):
        if text[start : start + KEY_PIECE] in pieces:
            if spans and start <= spans[-1][1]:
                spans[-1][1] = start + KEY_PIECE
            else:
                spans.append([start, start + KEY_PIECE])
    parts: list[str] = []
    end = 0
    for start, stop in spans:
        parts += [text[end:start], REDACTED]
        end = stop
    parts.append(text[end:])
    return "".join(parts)
