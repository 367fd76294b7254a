"""OpenAI Chat Completions, also spoken by vLLM, llama.cpp, LM Studio and OpenRouter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .base import Endpoint, ErrorBody, Reply, find_api_key, message_from, usage_from

if TYPE_CHECKING:
    from ..records import Message, OutputSchema

DEFAULT_BASE = "https://api.openai.com/v1"
NATIVE_PARAMS = frozenset({"response_format", "json_schema"})


def endpoint(api_key: str | None, api_base: str | None) -> Endpoint:
    """`api_base` is the URL ending in /v1. A key is required only by OpenAI itself: local
    OpenAI-compatible servers usually run without one."""
    key = find_api_key(api_key, "OPENAI_API_KEY", required=api_base is None, provider="openai")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return Endpoint(
        httpx.URL(f"{(api_base or DEFAULT_BASE).rstrip('/')}/chat/completions"), headers, key
    )


def build_body(
    model: str,
    messages: list[Message],
    params: Mapping[str, Any],
    schema: OutputSchema | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, **params}
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": schema.name,
                "schema": dict(schema.schema),
                "strict": schema.strict,
            },
        }
    return body


def parse_reply(body: Any) -> Reply:
    choice = body["choices"][0]
    message = choice["message"]
    content = message.get("content")
    if not isinstance(content, str):
        refusal = message.get("refusal")
        raise ValueError(f"model refused: {refusal}" if refusal else "response has no text")
    return Reply(
        text=content,
        usage=usage_from(body.get("usage"), ("prompt_tokens",), "completion_tokens"),
        finish_reason=choice.get("finish_reason"),
    )


def parse_error(body: Any) -> ErrorBody:
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return ErrorBody(message_from(body))
    code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
    return ErrorBody(message_from(error), code if isinstance(code, str) else None)
