"""Ollama's native chat API (/api/chat); streamed only by lm.stream() (streaming/deltas.py).
A structured call passes `format`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..records import image_data, text_of
from .base import (
    Endpoint,
    ErrorBody,
    Reply,
    check_api_key,
    endpoint_url,
    finish_reason_from,
    message_from,
    request_params,
    text_or_none,
    usage_from,
)

if TYPE_CHECKING:
    from ..records import Message, OutputSchema, ToolSpec, Usage

DEFAULT_HOST = "http://localhost:11434"
NATIVE_PARAMS = frozenset({"format"})
# Request fields that sit at the top level; every other parameter is a model option.
TOP_LEVEL = frozenset({"keep_alive", "think", "tools"})
# Common parameter names, spelled the way Ollama's options spell them.
OPTION_NAMES = {"max_tokens": "num_predict"}
# Model options (Ollama's `options` object, as its Modelfile PARAMETERs name them).
OPTIONS = frozenset(
    {
        "frequency_penalty",
        "low_vram",
        "main_gpu",
        "min_p",
        "mirostat",
        "mirostat_eta",
        "mirostat_tau",
        "num_batch",
        "num_ctx",
        "num_gpu",
        "num_keep",
        "num_predict",
        "num_thread",
        "numa",
        "penalize_newline",
        "presence_penalty",
        "repeat_last_n",
        "repeat_penalty",
        "seed",
        "stop",
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "use_mlock",
        "use_mmap",
    }
)
# Everything a call may set: top-level fields, options, and the common names mapped to them.
PARAMS = TOP_LEVEL | OPTIONS | frozenset(OPTION_NAMES)


def endpoint(api_key: str | None, api_base: str | None) -> Endpoint:
    """The host is `api_base`, else OLLAMA_HOST, else localhost:11434. No key is needed; one
    given is sent as a bearer token, for servers behind an authenticating proxy."""
    source = "api_base" if api_base else "the OLLAMA_HOST environment variable"
    host = api_base or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    if isinstance(host, str) and "://" not in host:
        host = f"http://{host}"
    key = check_api_key(api_key or None, "api_key")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return Endpoint(endpoint_url(host, "/api/chat", source=source), headers, key)


def build_body(
    model: str,
    messages: list[Message],
    params: Mapping[str, Any],
    schema: OutputSchema | None,
) -> dict[str, Any]:
    params, extra = request_params("ollama", PARAMS, params)
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message(m) for m in messages],
        "stream": False,
    }
    options = {OPTION_NAMES.get(k, k): v for k, v in params.items() if k not in TOP_LEVEL}
    body.update((k, v) for k, v in params.items() if k in TOP_LEVEL)
    if options:
        body["options"] = options
    if schema is not None:
        body["format"] = dict(schema.schema)
    return body | extra


def _message(message: Message) -> dict[str, Any]:
    """A chat message in Ollama's form: the text, and the images as base64 in `images`."""
    content = message["content"]
    if isinstance(content, str):
        return message
    images = []
    for part in content:
        if part["type"] == "image_url":
            data = image_data(part["image_url"]["url"])
            if data is None:
                raise ConfigurationError(
                    "ollama takes images as data, not URLs: build the image from its bytes or "
                    "file (dspy.Image.from_path(...)) rather than from a URL"
                )
            images.append(data[1])
    return {"role": message["role"], "content": text_of(content), "images": images}


def tool_params(tools: Sequence[ToolSpec]) -> None:
    """None: Ollama cannot make a model call a tool, so tools are offered in the prompt."""
    return None


def parse_reply(body: Any) -> Reply:
    content = body["message"]["content"]
    if not isinstance(content, str):
        raise TypeError("message content is not text")
    return Reply(
        text=content,
        usage=parse_usage(body),
        finish_reason=finish_reason_from(body.get("done_reason")),
        response_model=text_or_none(body.get("model")),
    )


def parse_usage(body: Any) -> Usage:
    return usage_from(body, ("prompt_eval_count",), "eval_count")


def parse_error(body: Any) -> ErrorBody:
    return ErrorBody(message_from(body))
