"""Example: one record of data (a training or dev item, a demo), as in DSPy.

A dict-like record with attribute access: `Example(question="2+2?", answer="4")`. Calling
`with_inputs("question")` says which fields a program takes; the rest are labels, the values
a metric compares against. Keys starting with `dspy_` are bookkeeping: `len`, `keys()`,
`values()`, `items()` and `repr` leave them out, as DSPy's do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["Example"]


class Example:
    """A record of named fields: `ex.question`, `ex["question"]`, `ex.get("source")`.

    `Example(base, **fields)` copies `base` (a mapping or another Example, whose input keys
    it keeps) and adds or overrides `fields`. Attribute access finds methods first, so a field
    named like one (`items`) is read as `ex["items"]`, as in DSPy.
    """

    _store: dict[str, Any]
    _input_keys: frozenset[str] | None

    def __init__(self, base: Example | Mapping[str, Any] | None = None, **fields: Any) -> None:
        if isinstance(base, Example):
            store = dict(base._store)
            input_keys = getattr(base, "_input_keys", None)
        elif isinstance(base, Mapping):
            store, input_keys = dict(base), None
        elif base is None:
            store, input_keys = {}, None
        else:
            raise TypeError(
                f"{type(self).__name__}(base) takes a mapping or an Example, "
                f"not {type(base).__name__}"
            )
        store.update(fields)
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_input_keys", input_keys)

    # -- fields ----------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; private and dunder names are never fields,
        # which keeps copy and pickle (probing __setstate__ before _store exists) safe.
        if not name.startswith("_"):
            store = self.__dict__.get("_store", {})
            if name in store:
                return store[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}{self._fields_hint()}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or hasattr(type(self), name):
            object.__setattr__(self, name, value)
        else:
            self._store[name] = value

    def __delattr__(self, name: str) -> None:
        if name in self._store:
            del self._store[name]
        else:
            object.__delattr__(self, name)

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._store))

    def __len__(self) -> int:
        return sum(1 for key in self._store if not key.startswith("dspy_"))

    def keys(self, include_dspy: bool = False) -> list[str]:
        """Field names, in order (`dspy_` bookkeeping keys only with `include_dspy`)."""
        return self._keys(include_dspy)

    def values(self, include_dspy: bool = False) -> list[Any]:
        """Field values, in order."""
        return [self._store[key] for key in self._keys(include_dspy)]

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:
        """`(name, value)` pairs, in order."""
        return [(key, self._store[key]) for key in self._keys(include_dspy)]

    # Methods call private helpers, never each other: a Prediction's outputs may shadow them.
    def _keys(self, include_dspy: bool) -> list[str]:
        return [key for key in self._store if include_dspy or not key.startswith("dspy_")]

    def get(self, key: str, default: Any = None) -> Any:
        """The field's value, or `default` if there is no such field."""
        return self._store.get(key, default)

    # -- inputs and labels -----------------------------------------------------------------

    def with_inputs(self, *keys: str) -> Example:
        """A copy whose `inputs()` are the fields `keys`; every other field is a label."""
        copied = type(self)(self)
        object.__setattr__(copied, "_input_keys", frozenset(keys))
        return copied

    def inputs(self) -> Example:
        """The input fields only, as an Example (ValueError before `with_inputs`)."""
        keys = self._require_input_keys()
        picked = type(self)({k: v for k, v in self._store.items() if k in keys})
        object.__setattr__(picked, "_input_keys", keys)
        return picked

    def labels(self) -> Example:
        """Every field that is not an input, as an Example (ValueError before `with_inputs`)."""
        keys = self._require_input_keys()
        return type(self)({k: v for k, v in self._store.items() if k not in keys})

    def _require_input_keys(self) -> frozenset[str]:
        keys: frozenset[str] | None = getattr(self, "_input_keys", None)
        if keys is None:
            raise ValueError(
                "the inputs of this example are not set: call example.with_inputs('field', ...)"
            )
        return keys

    # -- copies ----------------------------------------------------------------------------

    def copy(self, **fields: Any) -> Example:
        """A shallow copy, with `fields` added or overridden; input keys are kept."""
        return type(self)(self, **fields)

    def without(self, *keys: str) -> Example:
        """A copy without the fields `keys` (KeyError for a field it does not have)."""
        copied = type(self)(self)
        for key in keys:
            del copied[key]
        return copied

    def toDict(self) -> dict[str, Any]:  # DSPy's name
        """A plain dict; nested Examples and pydantic models become dicts, recursively."""
        return {key: _plain(value) for key, value in self._store.items()}

    # -- comparison and display ------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._store == other._store

    def __hash__(self) -> int:
        # By content, as in DSPy (TypeError if a value is unhashable, such as a list).
        return hash(frozenset(self._store.items()))

    def __repr__(self) -> str:
        shown = {k: v for k, v in self._store.items() if not k.startswith("dspy_")}
        keys = getattr(self, "_input_keys", None)
        inputs = "None" if keys is None else "{" + ", ".join(map(repr, sorted(keys))) + "}"
        return f"Example({shown}) (input_keys={inputs})"

    def _fields_hint(self) -> str:
        names = ", ".join(self.__dict__.get("_store", {}))
        return f" (fields: {names or 'none'})"


def _plain(value: Any) -> Any:
    if isinstance(value, Example):
        return value.toDict()
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
