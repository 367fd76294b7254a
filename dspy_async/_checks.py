"""Argument checks shared by every public entry point: LM, RetryPolicy, batch and settings.

Each check raises `ConfigurationError` naming the parameter, the value it got and the values it
takes, so `LM(max_concurrency="4")` and `batch(..., max_concurrency=0)` fail the same way,
before any request. Booleans are not numbers here (`True` is an `int` to Python, never a
meaningful concurrency), and NaN or infinity is never a count, a delay or a limit.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal, overload

from pydantic import BaseModel

from .errors import ConfigurationError

__all__ = [
    "boolean",
    "json_params",
    "known_names",
    "non_negative_int",
    "non_negative_number",
    "positive_int",
    "positive_number",
    "shown",
    "unencodable",
]

# Lone UTF-16 surrogates: valid in a Python str, impossible to encode as UTF-8 (or to send).
_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN = 60
_PLAIN = (bool, int, float, type(None))


def shown(value: object) -> str:
    """`value` as an error message quotes it: its repr, shortened, and its type if not plain."""
    text = repr(value)
    if len(text) > _SHOWN:
        text = f"{text[:_SHOWN]}..."
    return text if type(value) in _PLAIN else f"{text} ({type(value).__name__})"


def _refuse(name: str, allowed: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"{name} must be {allowed}, not {shown(value)}")


def _bounded(
    name: str, value: object, *, integer: bool, zero: bool, allow_none: bool
) -> float | None:
    """The one range check: a finite number (a whole one if `integer`), >= 0 if `zero`, else
    > 0 (>= 1 for whole numbers); None passes if `allow_none`."""
    if value is None and allow_none:
        return None
    number: float | None = None
    if isinstance(value, bool):
        pass  # an int to Python, never a count or a limit
    elif isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and not integer:
        number = float(value)
        number = number if math.isfinite(number) else None
    if number is not None and (number >= 0 if zero else number > 0):
        return number
    bound = (">= 0" if zero else ">= 1") if integer else (">= 0" if zero else "> 0")
    noun = "a whole number" if integer else "a finite number"
    raise _refuse(name, f"{noun} {bound}" + (", or None" if allow_none else ""), value)


@overload
def positive_int(name: str, value: object, *, allow_none: Literal[False] = ...) -> int: ...
@overload
def positive_int(name: str, value: object, *, allow_none: bool) -> int | None: ...
def positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    """`value` as an int >= 1 (None passes if `allow_none`)."""
    number = _bounded(name, value, integer=True, zero=False, allow_none=allow_none)
    return None if number is None else int(number)


def non_negative_int(name: str, value: object) -> int:
    """`value` as an int >= 0."""
    return int(_bounded(name, value, integer=True, zero=True, allow_none=False) or 0)


@overload
def positive_number(name: str, value: object, *, allow_none: Literal[False] = ...) -> float: ...
@overload
def positive_number(name: str, value: object, *, allow_none: bool) -> float | None: ...
def positive_number(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """`value` as a finite float > 0 (None passes if `allow_none`)."""
    return _bounded(name, value, integer=False, zero=False, allow_none=allow_none)


@overload
def non_negative_number(name: str, value: object, *, allow_none: Literal[False] = ...) -> float: ...
@overload
def non_negative_number(name: str, value: object, *, allow_none: bool) -> float | None: ...
def non_negative_number(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """`value` as a finite float >= 0 (None passes if `allow_none`)."""
    return _bounded(name, value, integer=False, zero=True, allow_none=allow_none)


def boolean(name: str, value: object) -> bool:
    """`value` if it is True or False (not 0, 1 or "false")."""
    if not isinstance(value, bool):
        raise _refuse(name, "True or False", value)
    return value


def known_names(what: str, names: Iterable[str], known: Collection[str], *, hint: str = "") -> None:
    """Refuse any of `names` not in `known`, suggesting the closest known name for each.

    `what` names the kind ("openai parameter"); `hint` ends the message (how to pass an
    unknown name on purpose, say).
    """
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        suggestion = (
            f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
        )
        raise ConfigurationError(f"unknown {what} {name!r}{suggestion}{hint}")


def json_params(where: str, params: Mapping[str, Any]) -> None:
    """Refuse parameters that cannot go in a JSON request body: NaN or infinity (not JSON),
    objects json cannot encode, non-string keys, or text UTF-8 cannot encode."""
    for name, value in params.items():
        try:
            json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            reason = (
                "it has a lone surrogate, which UTF-8 cannot encode"
                if isinstance(exc, UnicodeError)
                else str(exc)
            )
            raise ConfigurationError(
                f"{where} parameter {name!r}={shown(value)} cannot be sent as JSON: {reason}"
            ) from None


def unencodable(value: object) -> str | None:
    """Where in `value` (text, nested in mappings, sequences, sets and pydantic models) a
    string holds a lone surrogate, as a path such as `[2]['name']` ("" for `value` itself);
    None if nowhere. Iterative, so deeply nested values cannot exhaust the stack."""
    if isinstance(value, str):  # the common case, at once
        return "" if _SURROGATE.search(value) else None
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
            continue
        if isinstance(item, BaseModel):
            item = dict(iter(item))
        if isinstance(item, Mapping):
            children = [
                pair
                for key, child in item.items()
                for pair in ((key, f"{path}[{key!r}] (a key)"), (child, f"{path}[{key!r}]"))
            ]
        elif isinstance(item, list | tuple | set | frozenset):
            children = [(child, f"{path}[{index}]") for index, child in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))
    return None
