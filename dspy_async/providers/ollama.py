"""Ollama's native chat API (/api/chat), unstreamed. A structured call passes `format`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .base import Endpoint, ErrorBody, Reply, message_from, usage_from

if TYPE_CHECKING:
    from ..records import Message, OutputSchema

DEFAULT_HOST = "http://localhost:11434"
NATIVE_PARAMS = frozenset({"format"})
# Request fields that sit at the top level; every other parameter is a model option.
TOP_LEVEL = frozenset({"keep_alive", "think", "tools"})
# Common parameter names, spelled the way Ollama's options spell them.
OPTION_NAMES = {"max_tokens": "num_predict"}


def endpoint(api_key: str | None, api_base: str | None) -> Endpoint:
    """The host is `api_base`, else OLLAMA_HOST, else localhost:11434. No key is needed; one
    given is sent as a bearer token, for servers behind an authenticating proxy."""
    host = api_base or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    if "://" not in host:
        host = f"http://{host}"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return Endpoint(httpx.URL(f"{host.rstrip('/')}/api/chat"), headers, api_key)


def build_body(
    model: str,
    messages: list[Message],
    params: Mapping[str, Any],
    schema: OutputSchema | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
    options = {OPTION_NAMES.get(k, k): v for k, v in params.items() if k not in TOP_LEVEL}
    body.update((k, v) for k, v in params.items() if k in TOP_LEVEL)
    if options:
        body["options"] = options
    if schema is not None:
        body["format"] = dict(schema.schema)
    return body


def parse_reply(body: Any) -> Reply:
    content = body["message"]["content"]
    if not isinstance(content, str):
        raise TypeError("message content is not text")
    return Reply(
        text=content,
        usage=usage_from(body, ("prompt_eval_count",), "eval_count"),
        finish_reason=body.get("done_reason"),
    )


def parse_error(body: Any) -> ErrorBody:
    return ErrorBody(message_from(body))
