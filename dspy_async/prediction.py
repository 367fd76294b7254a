"""Prediction: the typed outputs of one step, with the tokens and attempts it took."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .records import Attempt, Usage

__all__ = ["Prediction"]


class Prediction:
    """Outputs by attribute (`result.category`) or key (`result["category"]`).

    `usage` sums the tokens of every LM attempt, re-asks included; `attempts` lists those
    attempts in order (number, outcome, error, seconds waited before each).
    """

    __slots__ = ("_attempts", "_usage", "_values")

    def __init__(
        self, *, usage: Usage | None = None, attempts: Iterable[Attempt] = (), **values: Any
    ) -> None:
        self._values = values
        self._usage = usage if usage is not None else Usage()
        self._attempts = tuple(attempts)

    @property
    def usage(self) -> Usage:
        """Tokens spent on this prediction, summed over all attempts."""
        return self._usage

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Every LM attempt behind this prediction, failed and re-asked ones included."""
        return self._attempts

    def to_dict(self) -> dict[str, Any]:
        """The outputs as a plain dict (values keep their types: enums, models, ...)."""
        return dict(self._values)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            try:
                return self._values[name]
            except KeyError:
                pass
        raise AttributeError(
            f"Prediction has no field {name!r} (fields: {', '.join(self._values) or 'none'})"
        )

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Prediction):
            return self._values == other._values
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._values, self._usage, self._attempts))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self._values.items())
        return f"Prediction({shown})"


def _rebuild(values: dict[str, Any], usage: Usage, attempts: tuple[Attempt, ...]) -> Prediction:
    return Prediction(usage=usage, attempts=attempts, **values)
