"""Adapters: from a signature and inputs to chat messages, and from a reply to typed values.

messages.py     system, demo (few-shot) and user messages for a call
schema.py       the outputs' JSON schema, trimmed for the wire and the prompt
native.py       the native strategy: an OpenAI-strict-compatible OutputSchema
json_prompt.py  the prompt-JSON strategy: schema and example in the prompt
parsing.py      the reply's JSON object, validated by pydantic
reask.py        the follow-up turn that quotes the validation error
structured.py   the loop tying them together, re-asks included
"""

from .messages import build_messages, format_value
from .native import native_output_schema, strict_schema
from .parsing import InvalidOutput, extract_json, parse_output
from .reask import reask_messages
from .schema import output_json_schema
from .structured import StructuredResult, generate_structured

__all__ = [
    "InvalidOutput",
    "StructuredResult",
    "build_messages",
    "extract_json",
    "format_value",
    "generate_structured",
    "native_output_schema",
    "output_json_schema",
    "parse_output",
    "reask_messages",
    "strict_schema",
]
