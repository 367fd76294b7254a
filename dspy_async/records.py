"""Plain records shared by every layer: token usage and the history of attempts.

They live apart from the errors and the LM so that both can carry them without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Attempt", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response, or summed over several."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


AttemptOutcome = Literal["ok", "error", "invalid_output"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to a provider: what happened, and how long we waited before sending it.

    `outcome` is "ok" for a usable response, "error" for a provider or transport failure, and
    "invalid_output" for a response whose content failed parsing or validation (re-asked).
    """

    number: int
    outcome: AttemptOutcome
    error: str | None = None
    status_code: int | None = None
    waited: float = 0.0
    elapsed: float = 0.0
    usage: Usage = field(default_factory=Usage)
