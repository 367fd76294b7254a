"""The native structured-output strategy: the schema sent in the provider's own parameter.

OpenAI's strict mode accepts only a subset of JSON schema: every object closed
(`additionalProperties: false`) with all its properties required, no open-ended maps (`dict`
fields), tuples or untyped (`Any`) values, and a few keywords only. `strict_schema` rewrites the
outputs' schema into that subset: an optional field becomes required-but-nullable, and keywords
strict mode rejects (`maxLength`, ...) move into the field's description, since pydantic still
enforces them after the reply. Signatures it cannot express (a `dict` output, say) are still sent
natively, with `strict` off: OpenAI then guides rather than guarantees the shape, other
providers are unaffected, and validation catches what slips through.
"""

from __future__ import annotations

import functools
import json
import re

from ..records import OutputSchema
from ..signatures import Signature
from .schema import Schema, map_schema, output_json_schema

__all__ = ["native_output_schema", "strict_schema"]

# Keywords that make a schema inexpressible in strict mode.
_UNSUPPORTED = frozenset({"allOf", "not", "prefixItems", "patternProperties", "if", "then"})
# Keywords strict mode rejects but a model can still read in the description.
_DESCRIBED = frozenset(
    {"minLength", "maxLength", "uniqueItems", "minProperties", "maxProperties", "contains"}
)
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_TYPED = ("type", "anyOf", "enum", "$ref")


class _NotStrict(Exception):
    """The schema uses something strict mode cannot express."""


@functools.lru_cache(maxsize=256)
def native_output_schema(signature: type[Signature]) -> OutputSchema:
    """The OutputSchema to request natively: strict where strict mode can express the outputs."""
    schema = output_json_schema(signature)
    strict = strict_schema(schema)
    name = re.sub(r"[^A-Za-z0-9_-]", "_", signature.__name__)[:64]
    if strict is None:
        return OutputSchema(name=name, schema=schema, strict=False)
    return OutputSchema(name=name, schema=strict)


def strict_schema(schema: Schema) -> Schema | None:
    """`schema` rewritten for OpenAI's strict mode, or None if it cannot be."""
    try:
        return map_schema(schema, _strict_node)
    except _NotStrict:
        return None


def _strict_node(node: Schema) -> Schema:
    if _UNSUPPORTED & node.keys():
        raise _NotStrict
    node.pop("default", None)
    if "oneOf" in node:  # a discriminated union: anyOf says the same to the model
        node["anyOf"] = node.pop("oneOf")
        node.pop("discriminator", None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    described = {key: node.pop(key) for key in sorted(_DESCRIBED & node.keys())}
    if "format" in node and node["format"] not in _STRICT_FORMATS:
        described["format"] = node.pop("format")
    if described:
        limits = ", ".join(f"{key} {json.dumps(value)}" for key, value in described.items())
        node["description"] = " ".join(filter(None, [node.get("description"), f"({limits})"]))
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties", False) is not False or "properties" not in node:
            raise _NotStrict  # an open-ended map
        node["additionalProperties"] = False
        node["required"] = list(node["properties"])
    elif not any(key in node for key in _TYPED):
        raise _NotStrict  # Any: strict mode needs a type
    return node
