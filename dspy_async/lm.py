"""Language models: the `BaseLM` contract every layer above calls, and its response records.

`BaseLM.acall` is the one engine; `__call__` is the same call made from sync code through the
hidden runtime loop. Subclasses implement `_generate` and inherit message handling and
thread-safe cumulative usage.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _runtime
from .records import Attempt, Usage

__all__ = ["BaseLM", "LMResponse", "Message", "OutputSchema"]

Message = dict[str, str]
"""An OpenAI-style chat message: {"role": "system" | "user" | "assistant", "content": str}."""

ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """The JSON schema of the object a structured call asks for, and its name for the provider."""

    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LMResponse:
    """What one LM call produced: the text, its token usage and every attempt it took."""

    text: str
    usage: Usage
    model: str
    provider: str
    attempts: tuple[Attempt, ...]
    finish_reason: str | None = None


class BaseLM(abc.ABC):
    """A chat model. `usage` sums every successful response, safely across threads and tasks.

    `supports_native_structured` starts True; the adapter clears it after the provider rejects a
    native structured-output parameter, so later calls go out as plain chat.
    """

    def __init__(self, model: str, provider: str) -> None:
        self.model = model
        self.provider = provider
        self.supports_native_structured = True
        self._usage = Usage()
        self._usage_lock = threading.Lock()

    @property
    def usage(self) -> Usage:
        """Token usage summed over every successful call of this LM."""
        with self._usage_lock:
            return self._usage

    async def acall(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        output_schema: OutputSchema | None = None,
        **params: Any,
    ) -> LMResponse:
        """Send a prompt (as one user message) or a list of chat messages; await the response."""
        response = await self._generate(to_messages(prompt, messages), output_schema, params)
        with self._usage_lock:
            self._usage += response.usage
        return response

    def __call__(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        output_schema: OutputSchema | None = None,
        **params: Any,
    ) -> LMResponse:
        """The blocking form of `acall`, run on the hidden runtime loop."""
        return _runtime.run(
            self.acall(prompt, messages=messages, output_schema=output_schema, **params)
        )

    @abc.abstractmethod
    async def _generate(
        self,
        messages: list[Message],
        output_schema: OutputSchema | None,
        params: dict[str, Any],
    ) -> LMResponse:
        """Produce the response to validated `messages`; `params` override the LM's defaults."""


def to_messages(prompt: str | None, messages: list[Message] | None) -> list[Message]:
    """Check the call's input and return it as a fresh list of chat messages."""
    if prompt is not None and messages is None:
        return [{"role": "user", "content": prompt}]
    if prompt is not None or messages is None:
        raise TypeError("pass either a prompt or messages=[...], not both and not neither")
    checked: list[Message] = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str) or len(message) != 2:
            raise TypeError(
                f"messages[{index}] must be {{'role': 'system'|'user'|'assistant', "
                f"'content': str}}, got keys {sorted(message)}"
            )
        checked.append({"role": role, "content": content})
    if not checked:
        raise TypeError("messages must not be empty")
    return checked
