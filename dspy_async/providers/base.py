"""What a provider module supplies, and the records it shares with the rest of the LM.

A provider is a module satisfying `Provider`: it knows its endpoint, how to build a request
body and how to read a response or an error body. It does no I/O and raises no typed errors;
`exchange.py` sends requests and turns failures into typed errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from ..errors import ConfigurationError
from ..records import Usage

if TYPE_CHECKING:
    from ..records import Message, OutputSchema

__all__ = ["Endpoint", "ErrorBody", "Provider", "Reply", "find_api_key", "is_context_window"]

# Messages providers and OpenAI-compatible servers use when the prompt does not fit.
CONTEXT_WINDOW_MESSAGE = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|prompt is too long|too many tokens"
    r"|exceeds? the (available )?context",
    re.IGNORECASE,
)
CONTEXT_WINDOW_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a provider's chat endpoint is and the headers it needs. `secret` is the API key,
    kept so that it can be scrubbed from any text quoted back; neither is ever shown. The URL
    is parsed once here, not on every request."""

    url: httpx.URL
    headers: Mapping[str, str] = field(repr=False)
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful response, read: its text, token usage and why generation stopped.

    `structured` says whether the answer came through the native structured-output channel,
    where the wire format shows it (Anthropic's tool_use block); None where it cannot tell.
    """

    text: str
    usage: Usage
    finish_reason: str | None
    structured: bool | None = None


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """A provider's error body, read: its message and its error code or type, if any."""

    message: str
    code: str | None = None


class Provider(Protocol):
    """The interface each module in `dspy_async.providers` implements."""

    NATIVE_PARAMS: frozenset[str]
    """Request fields carrying a native structured-output schema, as error messages name them."""

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
        """The JSON request body; with `schema`, ask for it with the native parameter."""
        ...

    def parse_reply(self, body: Any) -> Reply:
        """Read a successful response body; raise LookupError, TypeError or ValueError if its
        shape is not the expected one."""
        ...

    def parse_error(self, body: Any) -> ErrorBody:
        """Read an error body, whatever JSON value it is."""
        ...


def find_api_key(given: str | None, env_var: str, *, required: bool, provider: str) -> str | None:
    """The API key passed, else the one in `env_var`; ConfigurationError if required and none."""
    key = given or os.environ.get(env_var) or None
    if key is None and required:
        raise ConfigurationError(
            f"{provider} needs an API key: set {env_var} in the environment or pass "
            f"api_key=... to LM(...)"
        )
    return key


def is_context_window(error: ErrorBody) -> bool:
    """Whether an error body says the prompt does not fit the model's context window."""
    return error.code in CONTEXT_WINDOW_CODES or bool(CONTEXT_WINDOW_MESSAGE.search(error.message))


def usage_from(counts: object, prompt_keys: tuple[str, ...], completion_key: str) -> Usage:
    """Token usage from a response's usage object, zero where a count is missing.

    The prompt count is the sum of `prompt_keys`: Anthropic reports cached prompt tokens apart
    from `input_tokens`, and they are still prompt tokens.
    """
    if not isinstance(counts, Mapping):
        return Usage()

    def count(key: str) -> int:
        value = counts.get(key)
        return value if isinstance(value, int) else 0

    return Usage(sum(count(key) for key in prompt_keys), count(completion_key))


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
