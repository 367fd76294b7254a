"""DummyLM: a language model with scripted answers and no network, for users' unit tests."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..adapters.reask import reask_messages
from ..lm import BaseLM, LMResponse, Message, OutputSchema
from ..records import Attempt, Usage, text_of

__all__ = ["DummyCall", "DummyLM"]

DummyOutput: TypeAlias = str | Mapping[str, Any] | BaseException
"""A response text, an object sent back as its JSON text, or an exception to raise."""


@dataclass(frozen=True, slots=True)
class DummyCall:
    """One call a DummyLM received."""

    messages: list[Message]
    output_schema: OutputSchema | None
    params: dict[str, Any]


class DummyLM(BaseLM):
    """An LM that answers from a script: no network, no key, deterministic.

    Each call takes the next item of `outputs`; once they are used up, `respond(messages)`
    answers, if given. An item (or what `respond` returns) is the response text, a dict sent back
    as JSON text, or an exception instance to raise. Every call is recorded in `calls`. Usage
    counts whitespace-separated words, so code that tracks usage can be tested too.

        lm = DummyLM([{"answer": "4"}, RateLimitError("slow down")])
    """

    def __init__(
        self,
        outputs: Iterable[DummyOutput] = (),
        *,
        respond: Callable[[list[Message]], DummyOutput] | None = None,
        model: str = "dummy",
    ) -> None:
        super().__init__(model, "dummy")
        self._outputs: deque[DummyOutput] = deque(outputs)
        self._respond = respond
        self.calls: list[DummyCall] = []

    def __repr__(self) -> str:
        return f"DummyLM(model={self.model!r}, calls={len(self.calls)})"

    async def _generate(
        self,
        messages: list[Message],
        output_schema: OutputSchema | None,
        params: dict[str, Any],
    ) -> LMResponse:
        with self._lock:
            self.calls.append(DummyCall(messages, output_schema, dict(params)))
            number = len(self.calls)
            scripted = self._outputs.popleft() if self._outputs else None
        output = scripted if scripted is not None else self._fallback(messages, number)
        if isinstance(output, BaseException):
            raise output
        text = output if isinstance(output, str) else json.dumps(output)
        usage = Usage(
            prompt_tokens=sum(len(text_of(message["content"]).split()) for message in messages),
            completion_tokens=len(text.split()),
        )
        return LMResponse(
            text=text,
            usage=usage,
            model=self.model,
            provider=self.provider,
            attempts=(Attempt(number=1, outcome="ok", usage=usage),),
            finish_reason="stop",
        )

    def _fallback(self, messages: list[Message], number: int) -> DummyOutput:
        if self._respond is None:
            # A script usually runs out because an output failed validation and the step
            # re-asked: say why, or the test's failure points at the wrong thing.
            reason = _reask_reason(messages)
            because = f"; the last output was re-asked because:\n{reason}" if reason else ""
            raise LookupError(
                f"DummyLM ran out of scripted outputs after {number - 1} (call #{number} has "
                f"none){because}\nAdd outputs or pass respond=callable"
            )
        return self._respond(messages)


# The re-ask turn around its error text, found by building one around a marker.
_BEFORE, _AFTER = reask_messages("reply", "\0")[-1]["content"].split("\0")


def _reask_reason(messages: list[Message]) -> str | None:
    """The validation error quoted by the call's last turn, if it is a re-ask."""
    last = text_of(messages[-1]["content"])
    if len(messages) < 2 or messages[-2]["role"] != "assistant" or messages[-1]["role"] != "user":
        return None
    if last.startswith(_BEFORE) and last.endswith(_AFTER):
        return last[len(_BEFORE) : len(last) - len(_AFTER)]
    return None
