"""The JSON schema of a signature's outputs, compact enough to show a model.

Pydantic's schema is trimmed for the wire and the prompt: titles dropped and `$ref`s inlined
(recursive models keep theirs), so each field's description and constraints sit next to it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..signatures import Signature

__all__ = ["Schema", "map_schema", "output_json_schema"]

Schema = dict[str, Any]

# Keywords whose value is a mapping of names to schemas, a list of schemas, or one schema.
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_VALUES = frozenset({"items", "additionalProperties", "not", "contains", "propertyNames"})


@functools.lru_cache(maxsize=256)
def output_json_schema(signature: type[Signature]) -> Schema:
    """The outputs' JSON schema (an object with one property per output field), cached.

    Callers share the returned dict: treat it as read-only.
    """
    schema = signature.output_model.model_json_schema()
    definitions = schema.pop("$defs", {})
    recursive: set[str] = set()
    body = _inline(schema, definitions, frozenset(), recursive)
    if recursive:
        body["$defs"] = {
            name: _inline(definitions[name], definitions, frozenset({name}), recursive)
            for name in sorted(recursive)
        }
    return map_schema(body, _drop_title)


def map_schema(schema: Schema, transform: Callable[[Schema], Schema]) -> Schema:
    """Apply `transform` to every subschema, innermost first, and return the new schema."""
    out: Schema = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: map_schema(sub, transform) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [map_schema(sub, transform) for sub in value]
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = map_schema(value, transform)
        else:
            out[key] = value
    return transform(out)


def _inline(node: Any, definitions: Schema, stack: frozenset[str], recursive: set[str]) -> Any:
    """Replace each local `$ref` by its definition, except a reference back into `stack`."""
    if isinstance(node, list):
        return [_inline(item, definitions, stack, recursive) for item in node]
    if not isinstance(node, dict):
        return node
    siblings = {
        k: _inline(v, definitions, stack, recursive) for k, v in node.items() if k != "$ref"
    }
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return {"$ref": ref, **siblings} if ref is not None else siblings
    name = ref.removeprefix("#/$defs/")
    if name in stack:
        recursive.add(name)
        return {"$ref": ref, **siblings}
    resolved = _inline(definitions[name], definitions, stack | {name}, recursive)
    return {**resolved, **siblings}


def _drop_title(schema: Schema) -> Schema:
    schema.pop("title", None)
    return schema
