"""Prediction: the typed outputs of one step, with the tokens and attempts it took.

A Prediction is an Example of outputs, as in DSPy. Asked for `n` completions, it holds the
first one's values and all of them in `completions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .example import Example
from .records import Attempt, Usage

__all__ = ["Completions", "Prediction"]


class Prediction(Example):
    """Outputs by attribute (`result.category`) or key (`result["category"]`).

    `usage` sums the tokens of every LM attempt, re-asks included; `attempts` lists those
    attempts in order (number, outcome, error, seconds waited before each). An output is read
    by attribute even when it is named like an Example method (`result.items`), unlike in DSPy;
    only the names of Prediction's own API (`usage`, `completions`, ...) cannot name an output.
    """

    _usage: Usage
    _attempts: tuple[Attempt, ...]
    _completions: Completions | _OneCompletion | None
    _lm_usage: dict[str, dict[str, int]] | None

    def __init__(
        self,
        base: Example | Mapping[str, Any] | None = None,
        *,
        usage: Usage | None = None,
        attempts: Iterable[Attempt] | None = None,
        **values: Any,
    ) -> None:
        super().__init__(base, **values)
        # A copy of a Prediction keeps what it cost.
        source = base if isinstance(base, Prediction) else None
        if usage is None:
            usage = source._usage if source is not None else Usage()
        if attempts is None:
            attempts = source._attempts if source is not None else ()
        object.__setattr__(self, "_usage", usage)
        object.__setattr__(self, "_attempts", tuple(attempts))
        object.__setattr__(self, "_completions", None)
        object.__setattr__(self, "_lm_usage", None)

    @classmethod
    def from_completions(
        cls,
        completions: Sequence[Mapping[str, Any] | Example] | Mapping[str, Sequence[Any]],
        signature: Any = None,
    ) -> Prediction:
        """A Prediction of the first completion, holding all of them in `completions`; usage
        and attempts are summed over the completions that are Predictions."""
        held = Completions(completions, signature=signature)
        if not len(held):
            raise ValueError("from_completions needs at least one completion")
        every = (a for c in held for a in c.attempts)
        attempts = [  # renumbered across completions; one completion's are already in order
            a if a.number == number else dataclasses.replace(a, number=number)
            for number, a in enumerate(every, start=1)
        ]
        total = sum((c.usage for c in held), Usage())
        first = held[0]
        prediction = cls(first, usage=total, attempts=attempts)
        object.__setattr__(prediction, "_completions", held)
        return prediction

    @classmethod
    def _of_one(
        cls, usage: Usage, attempts: tuple[Attempt, ...], signature: Any, **values: Any
    ) -> Prediction:
        """The Prediction of a step asked for one completion. Its `completions` (one, its
        own values) are made when first read: a batch of thousands keeps no copies."""
        prediction = cls(usage=usage, attempts=attempts, **values)
        object.__setattr__(prediction, "_completions", _OneCompletion(signature))
        return prediction

    def __getattribute__(self, name: str) -> Any:
        # Outputs win over the Example methods they are named like (`items`, `copy`, `keys`),
        # as they did before Prediction was an Example; Prediction's own API always wins.
        if name[:1] != "_" and name not in PREDICTION_API:
            store = object.__getattribute__(self, "__dict__").get("_store")
            if store is not None and name in store:
                return store[name]
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in PREDICTION_API:
            object.__setattr__(self, name, value)
        else:
            self._store[name] = value

    @property
    def usage(self) -> Usage:
        """Tokens spent on this prediction, summed over all attempts (and completions)."""
        return self._usage

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Every LM attempt behind this prediction, failed and re-asked ones included."""
        return self._attempts

    @property
    def completions(self) -> Completions | None:
        """Every completion asked for (`n=` on Predict), or None for one built by hand."""
        completions = self._completions
        if isinstance(completions, _OneCompletion):
            one = Prediction(self._store, usage=self._usage, attempts=self._attempts)
            completions = Completions([one], signature=completions.signature)
            object.__setattr__(self, "_completions", completions)
        return completions

    def get_lm_usage(self) -> dict[str, dict[str, int]] | None:
        """DSPy's usage per model id of the program call that returned this Prediction
        (`{"openai/gpt-4o-mini": {"prompt_tokens": ..., ...}}`), set on the outermost call
        under `dspy.configure(track_usage=True)`; None otherwise. `usage` is always there."""
        return self._lm_usage

    def set_lm_usage(self, value: dict[str, dict[str, int]] | None) -> None:
        """Set what `get_lm_usage()` returns."""
        object.__setattr__(self, "_lm_usage", value)

    def to_dict(self) -> dict[str, Any]:
        """The outputs as a plain dict (values keep their types: enums, models, ...)."""
        return dict(self._store)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self._store.items())
        more = len(self._completions) - 1 if isinstance(self._completions, Completions) else 0
        return f"Prediction({shown})" + (f" (+{more} more completions)" if more > 0 else "")


class _OneCompletion:
    """The one completion of a step, not made yet (see `Prediction._of_one`)."""

    __slots__ = ("signature",)

    def __init__(self, signature: Any) -> None:
        self.signature = signature


class Completions:
    """The `n` completions of one step: `completions.answer` is the list of every completion's
    answer, `completions[i]` the i-th as a Prediction."""

    def __init__(
        self,
        completions: Sequence[Mapping[str, Any] | Example] | Mapping[str, Sequence[Any]],
        signature: Any = None,
    ) -> None:
        self.signature = signature
        if isinstance(completions, Mapping):
            columns = {key: list(values) for key, values in completions.items()}
            lengths = {len(values) for values in columns.values()}
            if len(lengths) > 1:
                raise ValueError("every field needs one value per completion")
            count = lengths.pop() if lengths else 0
            rows: list[Prediction] = [
                Prediction({key: values[i] for key, values in columns.items()})
                for i in range(count)
            ]
        else:
            rows = [c if isinstance(c, Prediction) else Prediction(c) for c in completions]
        self._rows = rows

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self._rows[key]
        if not self._rows or key not in self._rows[0]:
            raise KeyError(key)
        return [row[key] for row in self._rows]

    def __getattr__(self, name: str) -> list[Any]:
        if not name.startswith("_") and self.__dict__.get("_rows") and name in self._rows[0]:
            return [row[name] for row in self._rows]
        raise AttributeError(f"Completions have no field {name!r}")

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self._rows)

    def __contains__(self, name: object) -> bool:
        return bool(self._rows) and name in self._rows[0]

    def items(self) -> list[tuple[str, list[Any]]]:
        """`(field, values of every completion)` pairs."""
        names = list(self._rows[0]) if self._rows else []
        return [(name, [row[name] for row in self._rows]) for name in names]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={values!r}" for name, values in self.items())
        return f"Completions({shown})"


# Names an output field cannot take: Prediction's own API (its reads would be shadowed).
PREDICTION_API = frozenset(
    {name for name in vars(Prediction) if not name.startswith("_")} | {"toDict"}
)
