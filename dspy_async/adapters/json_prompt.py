"""The prompt-JSON strategy, for models without native structured output: the prompt names the
keys of the JSON object wanted, says in words what each holds, and ends with an example object;
the reply's first JSON object is taken as the answer.

The layout was measured on a 135M-parameter instruct model (SmolLM2-135M-Instruct, greedy, 14
questions): a JSON schema anywhere in the prompt makes it echo the schema back (7 of 14 replies
valid with the schema first, 1 of 14 with it last), a bulleted output list makes it answer in
bullets, while key descriptions plus a closing example ("exactly like this example but with
your own values") gave 12 to 13 valid replies of 14. Pydantic still validates every reply, and
a re-ask quotes any error, so nothing the words leave out goes unchecked.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..signatures import Signature
from .schema import Schema, output_json_schema

__all__ = ["JsonPrompt", "describe", "example_value", "json_prompt"]

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
    "object": "an object",
    "array": "a list",
}
# Constraint keywords, and how each reads after the type.
_LIMIT_WORDS = {
    "minimum": "at least {}",
    "exclusiveMinimum": "greater than {}",
    "maximum": "at most {}",
    "exclusiveMaximum": "less than {}",
    "multipleOf": "a multiple of {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "pattern": "matching the regex {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
}


class JsonPrompt(NamedTuple):
    """What the strategy adds to the messages."""

    keys: str  # last paragraph of the system message
    example: str  # last paragraph of the user message


def json_prompt(signature: type[Signature]) -> JsonPrompt:
    """The key list (with what each key holds) and the closing example."""
    schema = output_json_schema(signature)
    keys = ", ".join(
        f"{json.dumps(name)} ({_key_words(field.desc, schema['properties'][name], schema)})"
        for name, field in signature.output_fields.items()
    )
    return JsonPrompt(
        keys=f"Your reply must be one JSON object with the keys {keys}.",
        example=(
            "Answer in JSON, exactly like this example but with your own values:\n"
            f"{json.dumps(example_value(schema, schema))}"
        ),
    )


def _key_words(desc: str | None, schema: Schema, root: Schema) -> str:
    return f"{desc}: {describe(schema, root)}" if desc else describe(schema, root)


def describe(schema: Schema, root: Schema) -> str:
    """What `schema` admits, in a few words: `one of "a", "b"`, `a number at most 1`."""
    if "$ref" in schema:
        return "an object"
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(value) for value in schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return " or ".join(describe(option, root) for option in options)
    kind = schema.get("type")
    words = _TYPE_WORDS.get(kind, "a value") if isinstance(kind, str) else "a value"
    if kind == "array" and isinstance(schema.get("items"), dict):
        words = f"a list of {describe(schema['items'], root)}"
    limits = [text.format(schema[key]) for key, text in _LIMIT_WORDS.items() if key in schema]
    return " ".join([words, " and ".join(limits)]) if limits else words


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
