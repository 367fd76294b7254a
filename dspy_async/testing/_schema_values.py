"""Values made up from a JSON schema: valid ones, deliberately invalid ones, and schemas in prompts.

The simulator answers a structured-output request with a value that validates against the
requested schema, as a well-behaved model would; the ``invalid_output`` fault returns one
that does not. Choices (enum members, numbers, booleans) come from a random generator seeded
with the request text, so the same prompt always gets the same answer.

Supported: ``type`` (also lists, and OpenAPI ``nullable``), ``const``, ``enum``, ``object``
(``properties``, ``required``, ``additionalProperties``, ``minProperties``), ``string``
(``minLength``, ``maxLength``, common ``format`` values; ``pattern`` is not honoured), ``integer``
and ``number`` (``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``,
``multipleOf`` for integers), ``boolean``, ``null``, ``array`` (``items``, ``prefixItems``,
``minItems``, ``maxItems``, ``uniqueItems``), ``anyOf``, ``oneOf``, ``allOf`` and local ``$ref``
into ``$defs``/``definitions`` (as pydantic emits them, recursive models included).
"""

from __future__ import annotations

import json
import math
import random
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["SchemaError", "find_prompt_schema", "generate_value", "invalid_value"]

Schema = Mapping[str, Any]

_FORMATS = {
    "date-time": "2024-05-17T09:30:00Z",
    "date": "2024-05-17",
    "time": "09:30:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "ipv4": "192.0.2.1",
    "duration": "PT1H",
}
_MINIMAL_DEPTH = 4  # below this depth only required fields and minimal arrays are made
_SPAN = 100  # width of the range drawn from when a number has at most one bound
_MAX_DEPTH = 64  # deeper than this the schema cannot be satisfied by a finite value


class SchemaError(ValueError):
    """The schema cannot be used: a non-local or dangling ``$ref``, or endless nesting."""


def generate_value(schema: Schema, *, seed: str) -> Any:
    """Return a value that validates against ``schema``, the same one for the same ``seed``."""
    return _Generator(schema, seed).value(schema, "value", 0)


def invalid_value(schema: Schema, *, seed: str) -> Any:
    """Return a plausible-looking value that does NOT validate against ``schema``.

    An object loses its required fields (or gets a wrongly typed first property); any
    other schema gets a value of the wrong JSON type.
    """
    gen = _Generator(schema, seed)
    resolved = gen.resolve(schema)
    if _main_type(resolved) == "object":
        value = gen.value(resolved, "value", 0)
        required = resolved.get("required", [])
        if required:
            return {k: v for k, v in value.items() if k not in required}
        properties = resolved.get("properties", {})
        if properties:
            first = next(iter(properties))
            return {**value, first: _wrong_type(gen, properties[first])}
        return "not an object"
    return _wrong_type(gen, resolved)


def find_prompt_schema(text: str) -> dict[str, Any] | None:
    """Return the first JSON object in ``text`` that has a top-level ``"properties"`` key.

    This is the simulator's "prompt asks for JSON" heuristic: a prompt that embeds a JSON
    schema (in a fenced block or inline) contains the marker ``"properties"``; the outermost
    object around it that parses and has that key is taken as the wanted schema.
    """
    if '"properties"' not in text:
        return None
    for obj, _ in _json_objects(text, reverse=False):
        if isinstance(obj.get("properties"), dict):
            return obj
    return None


def find_prompt_example(text: str) -> dict[str, Any] | None:
    """Return the last non-empty JSON object that ends a line of ``text``, if any.

    The simulator's second heuristic: a prompt that shows an example object on its own line
    ("Answer in JSON, exactly like this example: {...}") gets that object back, re-asks
    included (they come after the example).
    """
    for obj, end in _json_objects(text, reverse=True):
        if obj and text[end : end + 1] in ("", "\n"):
            return obj
    return None


def _json_objects(text: str, *, reverse: bool) -> Iterator[tuple[dict[str, Any], int]]:
    """Each JSON object that starts at a `{` of `text`, with where it ends, first to last or
    last to first."""
    decoder = json.JSONDecoder()
    starts = [index for index, char in enumerate(text) if char == "{"]
    for start in reversed(starts) if reverse else starts:
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj, end


def _bounds(schema: Schema) -> tuple[float, bool, float, bool]:
    """Numeric range of a schema as (low, low is exclusive, high, high is exclusive)."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    if low is None and high is None:
        return 0.0, False, float(_SPAN), False
    if low is None:
        assert high is not None
        return high - _SPAN, False, high, high_open
    if high is None:
        return low, low_open, low + _SPAN, False
    return low, low_open, high, high_open


def _bound(
    schema: Schema, inclusive: str, exclusive: str, tightest: Callable[[float, float], float]
) -> tuple[float | None, bool]:
    closed, opened = schema.get(inclusive), schema.get(exclusive)
    closed = None if isinstance(closed, bool) else closed
    opened = None if isinstance(opened, bool) else opened
    if opened is None:
        return (None if closed is None else float(closed)), False
    if closed is None:
        return float(opened), True
    value = tightest(float(closed), float(opened))
    return value, value == float(opened)


def _main_type(schema: Schema) -> str:
    """The JSON type a schema describes (first non-null one when it lists several)."""
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [t for t in declared if t != "null"]
        return str(non_null[0]) if non_null else "null"
    if isinstance(declared, str):
        return declared
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _allowed_types(gen: _Generator, schema: Schema) -> set[str] | None:
    """JSON types a schema accepts, or None when it accepts anything or cannot tell."""
    resolved = gen.resolve(schema)
    branches = resolved.get("anyOf") or resolved.get("oneOf")
    if branches:
        allowed: set[str] = set()
        for branch in branches:
            types = _allowed_types(gen, branch)
            if types is None:
                return None
            allowed |= types
        return allowed
    if "const" in resolved or "enum" in resolved:
        return {_json_type(v) for v in [resolved.get("const"), *resolved.get("enum", [])]}
    declared = resolved.get("type")
    if declared is None:
        return None
    types = set(declared) if isinstance(declared, list) else {declared}
    if "integer" in types:
        types.add("number")
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong_type(gen: _Generator, schema: Schema) -> Any:
    """A value whose JSON type the schema does not accept (a bad enum member as last resort)."""
    allowed = _allowed_types(gen, schema)
    candidates: list[tuple[str, Any]] = [
        ("number", 12345),
        ("string", "not-a-valid-value"),
        ("object", {"unexpected": True}),
        ("array", ["unexpected"]),
        ("boolean", True),
    ]
    if allowed is not None:
        for json_type, candidate in candidates:
            if json_type not in allowed:
                return candidate
    return "not-a-valid-value"


class _Generator:
    """Walks one schema, resolving ``$ref`` against its root, drawing from a seeded RNG."""

    def __init__(self, root: Schema, seed: str) -> None:
        self._root = root
        self._rng = random.Random(zlib.crc32(seed.encode()))

    def resolve(self, schema: Schema) -> Schema:
        """Follow ``$ref`` chains and merge ``allOf`` parts into one schema."""
        seen = 0
        while "$ref" in schema and seen < 32:
            ref = str(schema["$ref"])
            target = self._pointer(ref)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings}
            seen += 1
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part)
                merged["properties"] = {
                    **merged.get("properties", {}),
                    **part.get("properties", {}),
                }
                merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                merged.update(
                    {k: v for k, v in part.items() if k not in ("properties", "required")}
                )
            if not merged["properties"]:
                del merged["properties"]
            if not merged["required"]:
                del merged["required"]
            return merged
        return schema

    def _pointer(self, ref: str) -> Schema:
        if not ref.startswith("#"):
            raise SchemaError(f"only local $ref values are supported, got {ref!r}")
        node: Any = self._root
        for part in ref.lstrip("#").strip("/").split("/"):
            if part:
                key = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, Mapping) or key not in node:
                    raise SchemaError(f"$ref {ref!r} points at nothing")
                node = node[key]
        if not isinstance(node, Mapping):
            raise SchemaError(f"$ref {ref!r} does not point at a schema")
        return node

    def value(self, schema: Schema | bool, name: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise SchemaError("the schema nests without end: no finite value satisfies it")
        if isinstance(schema, bool):
            return f"example {name}"
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._rng.choice(list(schema["enum"]))
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return self.value(self._pick_branch(branches, depth), name, depth)
        kind = _main_type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self._rng.choice([True, False])
        if kind == "null":
            return None
        return self._string(schema, name)

    def _pick_branch(self, branches: list[Schema], depth: int) -> Schema:
        resolved = [self.resolve(b) for b in branches]
        non_null = [b for b in resolved if _main_type(b) != "null" or "const" in b]
        if not non_null or (depth >= _MINIMAL_DEPTH and len(non_null) < len(resolved)):
            return next(b for b in resolved if b not in non_null)
        return non_null[0]

    def _object(self, schema: Schema, depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        names = [n for n in properties if depth < _MINIMAL_DEPTH or n in required]
        result = {n: self.value(properties[n], n, depth + 1) for n in names}
        extra = schema.get("additionalProperties")
        wanted = max(int(schema.get("minProperties", 0)), 0 if properties else 1)
        index = 1
        while len(result) < wanted and extra is not False:
            key = f"key{index}"
            extra_schema = extra if isinstance(extra, Mapping) else {"type": "string"}
            result.setdefault(key, self.value(extra_schema, key, depth + 1))
            index += 1
        return result

    def _array(self, schema: Schema, name: str, depth: int) -> list[Any]:
        prefix: list[Schema] = list(schema.get("prefixItems", []))
        items = schema.get("items", {})
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 2, len(prefix))))
        count = low if depth >= _MINIMAL_DEPTH else max(low, min(high, max(2, len(prefix))))
        if items is False:
            count = min(count, len(prefix))
        result: list[Any] = []
        seen: set[str] = set()
        for _ in range(count * 10):
            if len(result) == count:
                break
            index = len(result)
            item_schema = prefix[index] if index < len(prefix) else items
            item = self.value(item_schema, f"{name} {index + 1}", depth + 1)
            key = json.dumps(item, sort_keys=True)
            if not (schema.get("uniqueItems") and key in seen):
                seen.add(key)
                result.append(item)
        return result

    def _integer(self, schema: Schema) -> int:
        low, low_open, high, high_open = _bounds(schema)
        first = math.floor(low) + 1 if low_open and low == math.floor(low) else math.ceil(low)
        last = math.ceil(high) - 1 if high_open and high == math.ceil(high) else math.floor(high)
        step = int(schema.get("multipleOf", 1)) or 1
        first = -(-first // step) * step
        if last < first:
            return first
        return first + step * self._rng.randint(0, (last - first) // step)

    def _number(self, schema: Schema) -> float:
        low, _, high, _ = _bounds(schema)
        value = low + (high - low) * self._rng.uniform(0.1, 0.9)
        rounded = round(value, 2)
        return rounded if low < rounded < high else value

    def _string(self, schema: Schema, name: str) -> str:
        text = _FORMATS.get(str(schema.get("format")), f"example {name}")
        low = int(schema.get("minLength", 0))
        high = int(schema.get("maxLength", max(low, len(text))))
        if len(text) < low:
            text = (text + " " + "x" * low)[:low]
        return text[:high]
