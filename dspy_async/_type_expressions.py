"""A safe parser for the type expressions of string signatures (`"text -> score: float"`).

Type expressions are parsed with `ast` and mapped onto a fixed table of names plus the caller's
own types; nothing in the string is ever evaluated.
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

__all__ = ["TYPE_NAMES", "parse_type", "split_outside_brackets"]

TYPE_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "List": list,
    "Dict": dict,
    "Tuple": tuple,
    "Literal": Literal,
    "Optional": typing.Optional,
    "Union": Union,
    "Any": Any,
    "None": None,
}
# Types that take arguments; each is subscripted with the parsed arguments (`list[str]`).
_GENERICS = frozenset({list, dict, tuple, Literal, typing.Optional, Union})
_ARITY: dict[Any, int] = {list: 1, dict: 2, typing.Optional: 1}


def split_outside_brackets(text: str, separator: str) -> list[str]:
    """Split at separators outside brackets and quotes; items are stripped."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        char = text[i]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i].strip())
            i += len(separator)
            start = i
            continue
        i += 1
    parts.append(text[start:].strip())
    return parts


def parse_type(text: str, known: Mapping[str, Any]) -> Any:
    """The type `text` names, using `known` for names; ValueError or SyntaxError if it is not
    a type expression made of them."""
    return _type_from_ast(ast.parse(text.strip(), mode="eval").body, known, in_literal=False)


def _type_from_ast(node: ast.expr, known: Mapping[str, Any], *, in_literal: bool) -> Any:
    if in_literal:
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int | bool):
            return node.value
        raise ValueError("Literal values must be strings, integers or booleans")
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name):
        if node.id not in known:
            raise ValueError(f"unknown type {node.id!r} (known: {', '.join(sorted(known))})")
        return known[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left = _type_from_ast(node.left, known, in_literal=False)
        right = _type_from_ast(node.right, known, in_literal=False)
        return Union[left, right]  # noqa: UP007
    if isinstance(node, ast.Subscript):
        origin = _type_from_ast(node.value, known, in_literal=False)
        if origin not in _GENERICS:
            raise ValueError(f"{ast.unparse(node.value)} takes no type arguments")
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if origin in _ARITY and len(items) != _ARITY[origin]:
            raise ValueError(f"{ast.unparse(node.value)}[...] takes {_ARITY[origin]} argument(s)")
        args = tuple(
            ...
            if origin is tuple and isinstance(i, ast.Constant) and i.value is Ellipsis
            else _type_from_ast(i, known, in_literal=origin is Literal)
            for i in items
        )
        return origin[args if len(args) > 1 else args[0]]
    raise ValueError(f"unsupported type expression {ast.unparse(node)!r}")
