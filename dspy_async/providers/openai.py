"""OpenAI Chat Completions, also spoken by vLLM, llama.cpp, LM Studio and OpenRouter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..records import ToolCall
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
    from ..records import Message, OutputSchema, ToolSpec, Usage

DEFAULT_BASE = "https://api.openai.com/v1"
NATIVE_PARAMS = frozenset({"response_format", "json_schema"})
# Chat Completions request fields a call may set (not `stream`: lm.stream() asks for one).
# OpenAI-compatible servers take more (llama.cpp's top_k, vLLM's min_p): send those in
# extra_body={...}.
PARAMS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)


def endpoint(api_key: str | None, api_base: str | None) -> Endpoint:
    """`api_base` is the URL ending in /v1. A key is required only by OpenAI itself: local
    OpenAI-compatible servers usually run without one."""
    key = find_api_key(api_key, "OPENAI_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    missing = missing_key("openai", "OPENAI_API_KEY") if key is None and not api_base else None
    url = endpoint_url(api_base or DEFAULT_BASE, "/chat/completions")
    return Endpoint(url, headers, key, missing)


def build_body(
    model: str,
    messages: list[Message],
    params: Mapping[str, Any],
    schema: OutputSchema | None,
) -> dict[str, Any]:
    params, extra = request_params("openai", PARAMS, params)
    body: dict[str, Any] = {"model": model, "messages": messages, **params}
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": schema.name,
                "schema": json_object(schema.schema),
                "strict": schema.strict,
            },
        }
    return body | extra


def tool_params(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """Function tools, one of which must be called, one call per reply."""
    return {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": dict(tool.parameters),
                },
            }
            for tool in tools
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


def parse_reply(body: Any) -> Reply:
    choice = body["choices"][0]
    message = choice["message"]
    content = message.get("content")
    calls = tuple(
        ToolCall(
            call["function"]["name"],
            tool_args(call["function"]["arguments"]),
            text_or_none(call.get("id")),
        )
        for call in message.get("tool_calls") or ()
    )
    if not isinstance(content, str):
        refusal = message.get("refusal")
        if refusal or not calls:
            raise ValueError(f"model refused: {refusal}" if refusal else "response has no text")
        content = ""
    return Reply(
        text=content,
        usage=parse_usage(body),
        finish_reason=finish_reason_from(choice.get("finish_reason")),
        response_id=text_or_none(body.get("id")),
        response_model=text_or_none(body.get("model")),
        tool_calls=calls,
    )


def parse_usage(body: Any) -> Usage:
    """`prompt_tokens` includes the cached ones, which `prompt_tokens_details` counts."""
    return usage_from(
        body.get("usage"),
        ("prompt_tokens",),
        "completion_tokens",
        cache_read=("prompt_tokens_details", "cached_tokens"),
    )


def parse_error(body: Any) -> ErrorBody:
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return ErrorBody(message_from(body))
    code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
    return ErrorBody(message_from(error), code if isinstance(code, str) else None)
