"""A safe parser for the type expressions of string signatures (`"text -> score: float"`).

Type expressions are parsed with `ast` and mapped onto a fixed table of names plus the caller's
own types; nothing in the string is ever evaluated. A name looked up in the caller's frames must
name a type (or a module, before a dot: `models.Address`), never any other value.
"""

from __future__ import annotations

import ast
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union

__all__ = ["TYPE_NAMES", "CallerScope", "parse_type", "split_outside_brackets"]

# How far up the stack a name is looked for, from the first frame outside the library.
MAX_FRAMES = 100

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


class CallerScope(Mapping[str, Any]):
    """`names`, and else the types the calling code sees: the locals, then the globals, of
    each frame up from the first one outside the package `skip`, as DSPy looks them up.

    Frames are read at lookup time, so a CallerScope is only good during the call that made it.
    """

    def __init__(self, names: Mapping[str, Any], *, skip: str) -> None:
        self._names = dict(names)
        self._skip = skip

    def __getitem__(self, name: str) -> Any:
        if name in self._names:
            return self._names[name]
        value = self._find(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._names or self._find(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)  # the names it was given; the caller's are found on demand

    def __len__(self) -> int:
        return len(self._names)

    def _find(self, name: str) -> Any:
        frame = sys._getframe(1)
        try:
            while frame is not None and _in_package(frame, self._skip):
                frame = frame.f_back  # type: ignore[assignment]
            for _ in range(MAX_FRAMES):
                if frame is None:
                    return None
                for scope in (frame.f_locals, frame.f_globals):
                    if name in scope and _is_type_like(scope[name]):
                        return scope[name]
                frame = frame.f_back  # type: ignore[assignment]
            return None
        finally:
            del frame  # a frame kept alive holds every local of the stack


def _in_package(frame: types.FrameType, package: str) -> bool:
    module = frame.f_globals.get("__name__", "")
    return isinstance(module, str) and (module == package or module.startswith(package + "."))


def _is_type_like(value: object) -> bool:
    """A class, a typing construct (`list[int]`, an alias of a Literal), or a module."""
    return isinstance(value, type | types.ModuleType) or typing.get_origin(value) is not None


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


def _named(node: ast.expr, known: Mapping[str, Any]) -> Any:
    """What a name, or a dotted name (`models.Address`), stands for: attributes are read only
    from modules and classes, and what is read must itself be a type or a module."""
    if isinstance(node, ast.Name):
        if node.id not in known:
            raise ValueError(f"unknown type {node.id!r} (known: {', '.join(sorted(known))})")
        return known[node.id]
    if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
        base = _named(node.value, known)
        if isinstance(base, type | types.ModuleType):
            value = getattr(base, node.attr, None)
            if value is not None and _is_type_like(value):
                return value
        raise ValueError(f"{ast.unparse(node)} does not name a type")
    raise ValueError(f"unsupported type expression {ast.unparse(node)!r}")


def _type_from_ast(node: ast.expr, known: Mapping[str, Any], *, in_literal: bool) -> Any:
    if in_literal:
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int | bool):
            return node.value
        raise ValueError("Literal values must be strings, integers or booleans")
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name | ast.Attribute):
        value = _named(node, known)
        if isinstance(value, types.ModuleType):
            raise ValueError(f"{ast.unparse(node)} is a module, not a type")
        return value
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
