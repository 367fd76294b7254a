"""Plain records shared by every layer: messages, output schemas, token usage and the
history of attempts.

They live below the errors, the providers and the LM so that all of them can carry them
without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "NO_USAGE",
    "Attempt",
    "ContentPart",
    "Message",
    "OutputSchema",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "Wait",
    "image_data",
    "spent",
    "text_of",
]

Message = dict[str, Any]
"""An OpenAI-style chat message: {"role": "system" | "user" | "assistant", "content": ...}.

`content` is a str; a user message's may instead be a list of `ContentPart`s (text and
images, in order), which each provider sends in its own wire format."""

ContentPart = dict[str, Any]
"""One part of a user message, in OpenAI's form: {"type": "text", "text": str} or
{"type": "image_url", "image_url": {"url": "https://..." | "data:image/png;base64,..."}}."""


_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,([A-Za-z0-9+/]*={0,2})")


def image_data(url: str) -> tuple[str, str] | None:
    """The media type and base64 data of a `data:image/...;base64,...` URL; None for any
    other URL (a remote image, which some providers fetch themselves)."""
    match = _DATA_URL.fullmatch(url)
    return (match[1], match[2]) if match else None


def text_of(content: str | list[ContentPart]) -> str:
    """The text of a message's content, its images left out."""
    if isinstance(content, str):
        return content
    return "\n\n".join(part["text"] for part in content if part["type"] == "text")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model: its name, what it does, and the JSON schema of its
    arguments (an object schema), which each provider sends in its own tool format."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model called through the provider's tool-calling channel: its name, its
    arguments (a JSON object) and the provider's id for the call, if it gives one."""

    name: str
    args: Mapping[str, Any]
    id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """The JSON schema of the object a structured call asks for, and its name for the provider.

    `strict` asks OpenAI's strict mode, which only takes a subset of JSON schema (see
    adapters/native.py); other providers send the schema either way.
    """

    name: str
    schema: Mapping[str, Any]
    strict: bool = True


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response, or summed over several.

    `prompt_tokens` counts every input token, including those the provider read from or wrote
    to its prompt cache; `cache_read_tokens` and `cache_creation_tokens` say how many of them
    were (a part of `prompt_tokens`, never added to it: OpenAI reports reads only, Ollama
    neither). `saved_tokens` are the tokens dspy-async's response cache saved: a call it
    answered spends none, and saves the total of the call whose answer it served.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    saved_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if other is NO_USAGE:
            return self
        if self is NO_USAGE:
            return other
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            self.saved_tokens + other.saved_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "saved_tokens": self.saved_tokens,
        }


NO_USAGE = Usage()
"""No tokens: a shared value, as Usage is immutable."""

AttemptOutcome = Literal["ok", "error", "invalid_output"]


@dataclass(frozen=True, slots=True)
class Wait:
    """Time an attempt spent at one gate before it was sent: `gate` names it ("slot" for a
    concurrency or connection slot), `seconds` how long it waited there, and `reason`, if the
    gate gives one, what it waited for (a budget's "requests" or "tokens", say)."""

    gate: str
    seconds: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to a provider: what happened, and how long we waited before sending it.

    `outcome` is "ok" for a usable response, "error" for a provider or transport failure, and
    "invalid_output" for a response whose content failed parsing or validation (re-asked).
    `waited` is the backoff before it; `gates` the waits at the pipeline's gates (slots, ...)
    after that backoff; `elapsed` the time from leaving the gates to the end of the attempt.
    `usage` is what the provider billed for it: a failed attempt's is zero unless its reply
    reported tokens (a 200 whose body could not be used). `cached` marks the one attempt of a
    call the response cache answered, with no request: its `usage` has only `saved_tokens`,
    and its one gate, if any, is the wait ("flight") for an identical call in flight.
    """

    number: int
    outcome: AttemptOutcome
    error: str | None = None
    status_code: int | None = None
    waited: float = 0.0
    elapsed: float = 0.0
    usage: Usage = NO_USAGE
    gates: tuple[Wait, ...] = ()
    cached: bool = False


def spent(attempts: Iterable[Attempt]) -> Usage:
    """The tokens billed over `attempts`, failed ones included."""
    total = NO_USAGE
    for attempt in attempts:
        total = attempt.usage if total is NO_USAGE else total + attempt.usage
    return total
