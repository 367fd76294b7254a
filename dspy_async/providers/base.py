"""What a provider module supplies, and the records it shares with the rest of the LM.

A provider is a module satisfying `Provider`: it knows its endpoint, the request parameters it
takes, how to build a request body and how to read a response or an error body. It does no
I/O; the only typed error it raises is ConfigurationError, for a key, URL or parameter that
could never be sent. `exchange.py` sends requests and turns failures into typed errors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from .. import _checks, _decoding
from ..errors import ConfigurationError
from ..records import NO_USAGE, ToolCall, Usage

if TYPE_CHECKING:
    from ..records import Message, OutputSchema, ToolSpec

__all__ = [
    "EXTRA_BODY",
    "Endpoint",
    "ErrorBody",
    "Provider",
    "Reply",
    "endpoint_url",
    "find_api_key",
    "finish_reason_from",
    "is_context_window",
    "json_object",
    "missing_key",
    "request_params",
    "text_or_none",
    "tool_args",
    "usage_from",
]

# The parameter whose fields are merged into the request body as they are, for provider
# fields dspy-async does not know (the openai SDK's name for the same thing).
EXTRA_BODY = "extra_body"
# Arguments of each call (`lm(prompt)`, `lm(messages=...)`), never parameters or defaults.
CALL_ARGUMENTS = frozenset({"prompt", "messages", "output_schema"})
# How an API key's invalid characters are named (the key itself never is).
_KEY_CHARACTERS = {"\n": "a line break", "\r": "a carriage return", " ": "a space", "\t": "a tab"}

# Messages providers and OpenAI-compatible servers use when the prompt does not fit.
CONTEXT_WINDOW_MESSAGE = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|prompt is too long|too many tokens"
    r"|exceeds? the (available )?context",
    re.IGNORECASE,
)
CONTEXT_WINDOW_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})


# Sent with every request, beside the endpoint's own headers (its key, its API version).
_REQUEST_HEADERS = {
    "accept-encoding": _decoding.ACCEPT_ENCODING,
    "content-type": "application/json",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a provider's chat endpoint is and the headers it needs. `secret` is the API key,
    kept so that it can be scrubbed from any text quoted back; neither is ever shown. The URL
    is parsed once here, not on every request. `missing_key` says what to set when the
    provider needs a key and none was found: an LM is built without one (as in DSPy, where
    settings modules build LMs at import time) and refuses its first call instead."""

    url: httpx.URL
    headers: Mapping[str, str] = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    missing_key: str | None = None
    # What every request sends: `headers` and the body's encodings. Merged once, here.
    sent_headers: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sent_headers", {**self.headers, **_REQUEST_HEADERS})


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful response, read: its text, token usage and why generation stopped.

    `structured` says whether the answer came through the native structured-output channel,
    where the wire format shows it (Anthropic's tool_use block); None where it cannot tell.
    `response_id` and `response_model` are the provider's id of the completion and the model
    that wrote it, where the body names them (they go on traces, nowhere else).
    `headers` are the response's rate-limit and retry-after headers (exchange.py sets them).
    `tool_calls` are the tools the model called, in order; `text` is then the prose beside
    them, if any (Anthropic's forced tool of a structured call is one of them).
    """

    text: str
    usage: Usage
    finish_reason: str | None
    structured: bool | None = None
    response_id: str | None = None
    response_model: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """A provider's error body, read: its message and its error code or type, if any."""

    message: str
    code: str | None = None


class Provider(Protocol):
    """The interface each module in `dspy_async.providers` implements."""

    NATIVE_PARAMS: frozenset[str]
    """Request fields carrying a native structured-output schema, as error messages name them."""

    PARAMS: frozenset[str]
    """The request parameters an LM or a call may set (`extra_body` carries any others)."""

    def endpoint(self, api_key: str | None, api_base: str | None) -> Endpoint:
        """Resolve the endpoint; raise ConfigurationError saying what to set if it cannot."""
        ...

    def build_body(
        self,
        model: str,
        messages: list[Message],
        params: Mapping[str, Any],
        schema: OutputSchema | None,
    ) -> dict[str, Any]:
        """The JSON request body; with `schema`, ask for it with the native parameter.
        ConfigurationError if `params` holds a name it does not take (see `request_params`)."""
        ...

    def tool_params(self, tools: Sequence[ToolSpec]) -> dict[str, Any] | None:
        """The request parameters offering `tools` and making the model call one of them, or
        None if this provider has no native tool calling (the caller then asks in the prompt)."""
        ...

    def parse_reply(self, body: Any) -> Reply:
        """Read a successful response body; raise LookupError, TypeError or ValueError if its
        shape is not the expected one."""
        ...

    def parse_usage(self, body: Any) -> Usage:
        """Read only the token usage of a response body (one `parse_reply` refused is still
        billed); raise LookupError, TypeError or ValueError if it cannot be read."""
        ...

    def parse_error(self, body: Any) -> ErrorBody:
        """Read an error body, whatever JSON value it is."""
        ...


def find_api_key(given: str | None, env_var: str) -> str | None:
    """The API key passed, else the one in `env_var`, else None; ConfigurationError if the key
    could not go in an HTTP header."""
    if given:
        return check_api_key(given, "api_key")
    key = os.environ.get(env_var) or None
    return check_api_key(key, f"the {env_var} environment variable")


def missing_key(provider: str, env_var: str) -> str:
    """What to do about a key a provider needs and did not get (Endpoint.missing_key)."""
    return (
        f"{provider} needs an API key: set {env_var} in the environment or pass "
        f"api_key=... to LM(...)"
    )


def check_api_key(key: object, source: str) -> str | None:
    """`key` if it is one line of printable ASCII, which any key is: a stray newline (a key read
    from a file) or a pasted non-ASCII character would otherwise fail every request, or split
    a header. The message says where and what, never the key."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise ConfigurationError(f"{source} must be a str, not {type(key).__name__}")
    for index, char in enumerate(key):
        if not "!" <= char <= "~":
            what = _KEY_CHARACTERS.get(char) or (
                "a control character" if char.isascii() else "a non-ASCII character"
            )
            raise ConfigurationError(
                f"{source} has {what} at character {index + 1}: an API key is one line of "
                "printable ASCII (was it read from a file with its line break?)"
            )
    return key


def endpoint_url(base: object, path: str, *, source: str = "api_base") -> httpx.URL:
    """The URL of `path` under `base`, an http(s) URL without credentials in it.

    A key in the URL (`https://user:key@host`) would be sent in the clear to every proxy log
    and quoted in errors; it goes in `api_key`, which is sent as a header and redacted.
    """
    if not isinstance(base, str):
        raise ConfigurationError(f"{source} must be a URL string, not {type(base).__name__}")
    try:
        url = httpx.URL(f"{base.rstrip('/')}{path}")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ConfigurationError(f"{source} {base!r} is not a valid URL: {exc}") from None
    if url.userinfo:
        raise ConfigurationError(
            f"{source} must not carry credentials (user:password@ before the host): pass the "
            "key as api_key=..., which is sent as a header and never shown"
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"{source} {base!r} must be an http:// or https:// URL with a host, "
            "e.g. 'http://127.0.0.1:8080/v1'"
        )
    return url


def json_object(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """`mapping` as the JSON encoder takes it: itself if it is a dict (shared, never copied:
    bodies are read, not changed), else a copy."""
    return mapping if isinstance(mapping, dict) else dict(mapping)


def request_params(
    provider: str, known: frozenset[str], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check parameters against the ones `provider` takes, and split off `extra_body`.

    A misspelling (`temprature`) is refused naming the closest known parameter, rather than
    sent and ignored by the provider; values must be sendable as JSON (no NaN). Returns the
    parameters without `extra_body`, and its fields, to merge into the body last.
    """
    if not params:
        return {}, {}
    misplaced = sorted(CALL_ARGUMENTS & params.keys())
    if misplaced:
        raise ConfigurationError(
            f"{misplaced[0]} is an argument of each call (lm({misplaced[0]}=...)), "
            "not a parameter or an LM default"
        )
    _checks.known_names(
        f"{provider} parameter",
        params,
        known | {EXTRA_BODY},
        hint=f" (a field dspy-async does not know can be sent as is in {EXTRA_BODY}={{...}})",
    )
    _checks.json_params(provider, params)
    extra = params.get(EXTRA_BODY) or {}
    if not isinstance(extra, Mapping) or not all(isinstance(key, str) for key in extra):
        raise ConfigurationError(
            f"{EXTRA_BODY} must be a dict of request body fields, not {_checks.shown(extra)}"
        )
    return {k: v for k, v in params.items() if k != EXTRA_BODY}, dict(extra)


def is_context_window(error: ErrorBody) -> bool:
    """Whether an error body says the prompt does not fit the model's context window."""
    return error.code in CONTEXT_WINDOW_CODES or bool(CONTEXT_WINDOW_MESSAGE.search(error.message))


def usage_from(
    counts: object,
    prompt_keys: tuple[str, ...],
    completion_key: str,
    *,
    cache_read: tuple[str, ...] = (),
    cache_creation: tuple[str, ...] = (),
) -> Usage:
    """Token usage from a response's usage object, zero where a count is missing or null.

    The prompt count is the sum of `prompt_keys`: Anthropic reports cached prompt tokens apart
    from `input_tokens`, and they are still prompt tokens. `cache_read` and `cache_creation`
    are the key paths of the prompt-cache counts, e.g. ("prompt_tokens_details",
    "cached_tokens"). A count that is not a whole number >= 0 (negative, `true`, `1.5`, a
    string) raises ValueError: the body is not what the provider sends, and a wrong count
    would corrupt every usage total it is added to.
    """
    if counts is None:
        return NO_USAGE
    if not isinstance(counts, dict):  # parsed JSON: objects are dicts
        raise TypeError(f"usage must be an object or null, not {type(counts).__name__}")
    return Usage(
        sum(_count(counts, (key,)) for key in prompt_keys),
        _count(counts, (completion_key,)),
        _count(counts, cache_read),
        _count(counts, cache_creation),
    )


def _count(counts: Mapping[str, Any], path: tuple[str, ...]) -> int:
    """The count at `path` (nested objects), 0 if it or an object on the way is missing."""
    value: object = counts
    for depth, key in enumerate(path):
        if value is None:
            return 0
        if not isinstance(value, dict):
            parent = ".".join(path[:depth])
            raise TypeError(f"usage {parent} must be an object or null, not {type(value).__name__}")
        value = value.get(key)
    if value is None or not path:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        # Numbers are quoted; anything else only by type (a string might echo anything).
        got = repr(value) if isinstance(value, int | float) else type(value).__name__
        raise ValueError(f"usage {'.'.join(path)} must be a whole number >= 0, not {got}")
    return value


def text_or_none(value: object) -> str | None:
    """`value` if it is a string, else None: for fields a reply is usable without."""
    return value if isinstance(value, str) else None


def finish_reason_from(value: object) -> str | None:
    """The finish reason of a reply, which is a string or null; TypeError for anything else."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"the finish reason must be a string or null, not {type(value).__name__}")


def message_from(body: Any) -> str:
    """A best-effort error message from a body whose shape is unknown."""
    if isinstance(body, str):
        return body
    if isinstance(body, Mapping):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if value:
                return value if isinstance(value, str) else message_from(value)
    return str(body)


def tool_args(value: object) -> dict[str, Any]:
    """A tool call's arguments: a JSON object, or JSON text of one (OpenAI sends text);
    ValueError for anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError("a tool call's arguments are not valid JSON") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"a tool call's arguments must be an object, not {type(value).__name__}")
    return dict(value)
