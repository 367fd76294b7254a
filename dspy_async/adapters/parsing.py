"""Reading a reply: find its JSON object, then validate it against the signature's outputs."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from ..signatures import Signature, field_values, format_validation_error

__all__ = ["InvalidOutput", "extract_json", "parse_output"]

_FENCED = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_DECODER = json.JSONDecoder()


class InvalidOutput(Exception):
    """A reply that could not be parsed or failed validation; the message says why."""


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in `text`: the whole reply, a fenced block, or embedded in prose."""
    stripped = text.strip()
    candidates = [stripped, *(block.strip() for block in _FENCED.findall(text))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    first_error: str | None = None
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError as exc:
            first_error = first_error or str(exc)
        else:
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    if first_error is not None:
        raise InvalidOutput(f"the reply is not valid JSON: {first_error}")
    raise InvalidOutput("the reply contains no JSON object")


def parse_output(signature: type[Signature], text: str) -> dict[str, Any]:
    """The validated output values of `text`, typed as the signature declares them."""
    data = extract_json(text)
    try:
        validated = signature.output_model.model_validate(data)
    except ValidationError as exc:
        raise InvalidOutput(format_validation_error(exc)) from None
    return field_values(validated)
