"""The prompt-JSON strategy, for models without native structured output: the schema and an
example object go in the prompt, and the reply's first JSON object is taken as the answer.

The wording is short and explicit, and ends with a concrete example, so that even a very small
instruct model can follow it. The schema is embedded verbatim as one line of JSON.
"""

from __future__ import annotations

import json
from typing import Any

from ..signatures import Signature
from .schema import Schema, output_json_schema

__all__ = ["example_value", "json_instructions", "json_reminder"]


def json_instructions(signature: type[Signature]) -> str:
    """The system-message block asking for one JSON object following the outputs' schema."""
    schema = output_json_schema(signature)
    return (
        "Reply with one JSON object and nothing else. It must follow this JSON schema:\n"
        f"{json.dumps(schema)}\n"
        "Example reply:\n"
        f"{json.dumps(example_value(schema, schema))}"
    )


def json_reminder(signature: type[Signature]) -> str:
    """The user-message closing line naming the keys the reply must have."""
    keys = ", ".join(json.dumps(name) for name in signature.output_fields)
    return f"Reply with only a JSON object with the keys {keys}."


def example_value(schema: Schema, root: Schema, depth: int = 0) -> Any:
    """A simple value of the right shape for `schema`: placeholders, not a real answer."""
    if "$ref" in schema and depth < 3:
        name = str(schema["$ref"]).removeprefix("#/$defs/")
        return example_value(root.get("$defs", {}).get(name, {}), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        # Prefer a concrete branch; null over a recursive reference keeps the example finite.
        concrete = [o for o in options if o.get("type") != "null" and "$ref" not in o]
        return example_value(concrete[0], root, depth) if concrete else None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if not properties and isinstance(schema.get("additionalProperties"), dict):
            return {"key": example_value(schema["additionalProperties"], root, depth)}
        return {name: example_value(sub, root, depth) for name, sub in properties.items()}
    if kind == "array":
        if "$ref" in schema.get("items", {}) and not schema.get("minItems"):
            return []  # a recursive model's children: a leaf keeps the example finite
        items = schema.get("prefixItems") or [schema.get("items", {})]
        values = [example_value(item, root, depth) for item in items]
        return values if "prefixItems" in schema else values * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return _example_number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "..."


def _example_number(schema: Schema, *, integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        value = (low + high) / 2
    elif low is not None:
        value = low + 1 if "exclusiveMinimum" in schema else low
    elif high is not None:
        value = high - 1 if "exclusiveMaximum" in schema else high
    else:
        value = 0
    return int(value) if integer else float(value)
