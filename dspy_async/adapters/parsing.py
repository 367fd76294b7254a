"""Reading a reply: find its JSON object, then validate it against the signature's outputs.

Replies are untrusted and may be megabytes long, so finding the object is linear in the reply
(one scan for candidate objects, each parsed once: see `_json.object_spans`), nesting is
bounded, and `aparse_output` parses a long reply on a worker thread instead of the loop.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from .. import _json
from ..signatures import Signature, field_values, format_validation_error

__all__ = ["InvalidOutput", "aparse_output", "extract_json", "parse_output"]

# Candidates tried before giving up: a reply with this many broken objects before a good one
# is re-asked anyway, and each failed parse costs an exception.
MAX_CANDIDATES = 100
_FENCED = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


class InvalidOutput(Exception):
    """A reply that could not be parsed or failed validation; the message says why."""


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in `text`: the whole reply, a fenced block, or embedded in prose."""
    whole = text.strip()
    if whole[:1] == "{" and whole[-1:] == "}":  # the native channel's reply: one object
        with contextlib.suppress(ValueError):
            value = _json.loads(whole)  # bounded, as every candidate below
            if isinstance(value, dict):
                return value
    spans = _json.object_spans(text)
    first = next(spans, None)
    fenced = (block.strip() for block in _FENCED.findall(text))
    candidates: Iterable[str | _json.Span]
    if first is not None and first.closed and first.end - first.start == len(text.strip()):
        candidates = itertools.chain([first], fenced, spans)  # the reply is one object
    else:
        candidates = itertools.chain(fenced, [first] if first else [], spans)
    # Fenced blocks do not overlap, nor do spans, and each is parsed once: linear in the reply.
    first_error: str | None = None
    for candidate in itertools.islice(candidates, MAX_CANDIDATES):
        try:
            value = _parse(text, candidate)
        except ValueError as exc:
            first_error = first_error or str(exc)
            continue
        if isinstance(value, dict):
            return value
    if first_error is not None:
        raise InvalidOutput(f"the reply is not valid JSON: {first_error}")
    raise InvalidOutput("the reply contains no JSON object")


def _parse(text: str, candidate: str | _json.Span) -> Any:
    if isinstance(candidate, str):
        return _json.loads(candidate)
    refused = candidate.refusal()
    if refused is not None:
        raise _json.JSONError(f"the object at character {candidate.start}: {refused}")
    # The scan measured this span, so the standard parser is safe on it.
    return _json.parse(text[candidate.start : candidate.end])


def parse_output(signature: type[Signature], text: str) -> dict[str, Any]:
    """The validated output values of `text`, typed as the signature declares them."""
    data = extract_json(text)
    try:
        validated = signature.output_model.model_validate(data)
    except ValidationError as exc:
        raise InvalidOutput(format_validation_error(exc)) from None
    return field_values(validated)


async def aparse_output(signature: type[Signature], text: str) -> dict[str, Any]:
    """`parse_output`, on a worker thread for a long reply so the loop's other calls go on."""
    return await _json.run_bounded(len(text), parse_output, signature, text)
