"""The chat messages for one call: a system message describing the task, a user message
carrying the inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

from ..records import Message
from ..signatures import Signature, SignatureField
from .json_prompt import json_prompt

__all__ = ["NO_INPUTS", "build_messages", "format_value"]

NO_INPUTS = "(This task has no inputs.)"


def build_messages(
    signature: type[Signature], inputs: Mapping[str, Any], *, json_format: bool
) -> list[Message]:
    """System: the instructions and the fields; user: the inputs. With `json_format` (the
    prompt-JSON strategy) the outputs are described as JSON keys and the user message ends
    with an example object, instead of listing the outputs."""
    system = [signature.instructions]
    if signature.input_fields:
        system.append(_field_list("Inputs", signature.input_fields))
    user = [f"{name}: {format_value(value)}" for name, value in inputs.items()]
    if not user and not json_format:
        user = [NO_INPUTS]  # a signature without inputs; providers refuse an empty user turn
    if json_format:
        parts = json_prompt(signature)
        system.append(parts.keys)
        user.append(parts.example)
    else:
        system.append(_field_list("Outputs", signature.output_fields))
    return [
        {"role": "system", "content": "\n\n".join(system)},
        {"role": "user", "content": "\n\n".join(user)},
    ]


def format_value(value: Any) -> str:
    """A string as itself; anything else as JSON (models, enums, lists...), else `str()`."""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value, fallback=str).decode()


def _field_list(title: str, fields: Mapping[str, SignatureField]) -> str:
    lines = [f"{title}:"]
    for field in fields.values():
        desc = f": {field.desc}" if field.desc else ""
        lines.append(f"- {field.name} ({field.type_name}){desc}")
    return "\n".join(lines)
