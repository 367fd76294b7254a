"""Anthropic Messages API. A structured call forces one tool whose input is the object wanted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..records import ToolCall, image_data
from .base import (
    Endpoint,
    ErrorBody,
    Reply,
    endpoint_url,
    find_api_key,
    finish_reason_from,
    json_object,
    message_from,
    missing_key,
    request_params,
    text_or_none,
    tool_args,
    usage_from,
)

if TYPE_CHECKING:
    from ..records import ContentPart, Message, OutputSchema, ToolSpec, Usage

DEFAULT_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# The Messages API requires max_tokens; this is used when neither the LM nor the call sets it.
DEFAULT_MAX_TOKENS = 4096
NATIVE_PARAMS = frozenset({"tools", "tool_choice", "input_schema"})
# Messages API request fields a call may set (not `stream`: lm.stream() asks for one). The
# system prompt comes from the system messages.
PARAMS = frozenset(
    {
        "container",
        "max_tokens",
        "mcp_servers",
        "metadata",
        "service_tier",
        "stop_sequences",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    }
)
# Cached prompt tokens are counted apart from input_tokens, but are prompt tokens all the same.
PROMPT_TOKEN_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def endpoint(api_key: str | None, api_base: str | None) -> Endpoint:
    """`api_base` is the host URL, without /v1, as in Anthropic's own SDK."""
    key = find_api_key(api_key, "ANTHROPIC_API_KEY")
    headers = {"anthropic-version": API_VERSION}
    if key:
        headers["x-api-key"] = key
    missing = (
        missing_key("anthropic", "ANTHROPIC_API_KEY") if key is None and not api_base else None
    )
    return Endpoint(endpoint_url(api_base or DEFAULT_BASE, "/v1/messages"), headers, key, missing)


def build_body(
    model: str,
    messages: list[Message],
    params: Mapping[str, Any],
    schema: OutputSchema | None,
) -> dict[str, Any]:
    params, extra = request_params("anthropic", PARAMS, params)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [_message(m) for m in messages if m["role"] != "system"],
        **params,
    }
    if system:
        body["system"] = system
    if schema is not None:
        body["tools"] = [
            {
                "name": schema.name,
                "description": f"Answer with a {schema.name} object.",
                "input_schema": json_object(schema.schema),
            }
        ]
        body["tool_choice"] = {"type": "tool", "name": schema.name}
    return body | extra


def _message(message: Message) -> dict[str, Any]:
    """A chat message in Anthropic's form: content parts become text and image blocks."""
    content = message["content"]
    if isinstance(content, str):
        return message
    return {"role": message["role"], "content": [_block(part) for part in content]}


def _block(part: ContentPart) -> dict[str, Any]:
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    url = part["image_url"]["url"]
    data = image_data(url)
    if data is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, encoded = data
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": encoded},
    }


def tool_params(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """Tools, one of which must be used, one per reply."""
    return {
        "tools": [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            for t in tools
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }


def parse_reply(body: Any) -> Reply:
    """The text blocks are the text; tool_use blocks are tool calls (a structured call's
    answer is the forced tool's input, which the LM reads from them)."""
    blocks = body["content"]
    calls = tuple(
        ToolCall(block["name"], tool_args(block["input"]), text_or_none(block.get("id")))
        for block in blocks
        if block["type"] == "tool_use"
    )
    text = "".join(block["text"] for block in blocks if block["type"] == "text")
    return Reply(
        text=text,
        usage=parse_usage(body),
        finish_reason=finish_reason_from(body.get("stop_reason")),
        structured=bool(calls),
        tool_calls=calls,
        response_id=text_or_none(body.get("id")),
        response_model=text_or_none(body.get("model")),
    )


def parse_usage(body: Any) -> Usage:
    return usage_from(
        body.get("usage"),
        PROMPT_TOKEN_KEYS,
        "output_tokens",
        cache_read=("cache_read_input_tokens",),
        cache_creation=("cache_creation_input_tokens",),
    )


def parse_error(body: Any) -> ErrorBody:
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return ErrorBody(message_from(body))
    kind = error.get("type")
    return ErrorBody(message_from(error), kind if isinstance(kind, str) else None)
