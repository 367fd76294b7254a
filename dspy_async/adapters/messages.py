"""The chat messages for one call: a system message describing the task, the demos as
few-shot turns (a user turn of inputs, an assistant turn of the outputs as JSON, each), the
turns of a `History` input, then a user message carrying the inputs (images as image parts).

Demos are rendered as DSPy's ChatAdapter does: complete demos (every field present and not
None) last, nearest the question; incomplete ones (at least one input and one output) first,
marked as such, with missing inputs said to be missing and missing outputs left out of the
object; others are skipped. Fields that are not the signature's are ignored. Demo values are
data, not checked against the field types: a demo is shown, never sent as a call's input.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic_core

from ..example import Example
from ..records import Message
from ..signatures import Signature, SignatureField
from ..types import History, Segment, content_of, images_in
from .json_prompt import json_prompt

__all__ = [
    "INCOMPLETE_DEMO",
    "NOT_SUPPLIED",
    "NO_INPUTS",
    "build_messages",
    "format_value",
    "history_messages",
]

NO_INPUTS = "(This task has no inputs.)"
INCOMPLETE_DEMO = (
    "This is an example of the task, though some input or output fields are not supplied."
)
NOT_SUPPLIED = "Not supplied for this particular example."


def build_messages(
    signature: type[Signature],
    inputs: Mapping[str, Any],
    *,
    json_format: bool,
    demos: Iterable[Mapping[str, Any] | Example] = (),
) -> list[Message]:
    """System: the instructions and the fields; then each demo as a user and an assistant
    turn; user: the inputs. With `json_format` (the prompt-JSON strategy) the outputs are
    described as JSON keys and the last user message ends with an example object, instead of
    listing the outputs."""
    system, example = _task(signature, json_format, signature.instructions)
    history = [name for name in inputs if _is_history(signature, name)]
    user: list[str | list[Segment]] = [
        _line(signature, name, value) for name, value in inputs.items() if name not in history
    ]
    if not user and not json_format:
        user = [NO_INPUTS]  # a signature without inputs; providers refuse an empty user turn
    if example is not None:
        user.append(example)
    turns = [
        turn
        for name in history
        if inputs[name] is not None  # an optional history left out
        for turn in history_messages(signature, inputs[name])
    ]
    return [
        {"role": "system", "content": system},
        *demo_messages(signature, demos),
        *turns,
        {"role": "user", "content": content_of(user)},
    ]


@functools.lru_cache(maxsize=1024)
def _task(
    signature: type[Signature], json_format: bool, instructions: str
) -> tuple[str, str | None]:
    """The system message (instructions, then the fields) and, with `json_format`, the example
    the user message closes with: the same for every call of a signature, so made once (keyed
    by its instructions too, should they be changed in place)."""
    system = [instructions]
    if signature.input_fields:
        system.append(_field_list("Inputs", signature.input_fields))
    example = None
    if json_format:
        parts = json_prompt(signature)
        system.append(parts.keys)
        example = parts.example
    else:
        system.append(_field_list("Outputs", signature.output_fields))
    return "\n\n".join(system), example


def history_messages(signature: type[Signature], history: History) -> list[Message]:
    """The turns of a conversation's history, as DSPy renders them: per message, a user turn
    of the inputs it has and an assistant turn of the outputs it has (either left out when
    the message has none)."""
    turns: list[Message] = []
    for message in history.messages:
        lines = [
            _line(signature, name, message[name])
            for name in signature.input_fields
            if name in message and not _is_history(signature, name)
        ]
        outputs = {k: message[k] for k in signature.output_fields if k in message}
        if lines:
            turns.append({"role": "user", "content": content_of(lines)})
        if outputs:
            answer = pydantic_core.to_json(outputs, fallback=str).decode()
            turns.append({"role": "assistant", "content": answer})
    return turns


def _is_history(signature: type[Signature], name: str) -> bool:
    return signature.input_fields[name].annotation is History


def demo_messages(
    signature: type[Signature], demos: Iterable[Mapping[str, Any] | Example]
) -> list[Message]:
    """The few-shot turns of `demos`: incomplete ones first, then complete ones, in order."""
    complete: list[Message] = []
    incomplete: list[Message] = []
    for demo in demos:
        given = {k: demo[k] for k in signature.fields if k in demo and demo[k] is not None}
        outputs = {k: v for k, v in given.items() if k in signature.output_fields}
        if len(given) == len(signature.fields):
            complete += _demo_turns(signature, given, outputs, prefix=None)
        elif outputs and any(k in given for k in signature.input_fields):
            incomplete += _demo_turns(signature, given, outputs, prefix=INCOMPLETE_DEMO)
    return incomplete + complete


def _demo_turns(
    signature: type[Signature],
    given: Mapping[str, Any],
    outputs: Mapping[str, Any],
    *,
    prefix: str | None,
) -> list[Message]:
    lines = [
        _line(signature, name, given[name]) if name in given else f"{name}: {NOT_SUPPLIED}"
        for name in signature.input_fields
    ]
    user = content_of([prefix, *lines] if prefix else lines)
    answer = pydantic_core.to_json(dict(outputs), fallback=str).decode()
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def _line(signature: type[Signature], name: str, value: Any) -> str | list[Segment]:
    """An input as a paragraph of the user message: `name: value`, or the name followed by
    the images the value is (unless the field has its own `format=`)."""
    images = images_in(value) if signature.input_fields[name].format is None else None
    if images is not None:
        return [f"{name}:", *images]
    return f"{name}: {_shown(signature, name, value)}"


def _shown(signature: type[Signature], name: str, value: Any) -> str:
    """An input's value as the model reads it: through the field's `format=`, if it has one."""
    custom = signature.input_fields[name].format
    return custom(value) if custom is not None else format_value(value)


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
