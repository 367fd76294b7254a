"""The three providers' wire formats: reading requests, writing answers and error bodies.

Each ``Wire`` knows one provider's request shape (where the messages, the model and the
wanted JSON schema live), its success body, its error body and its specific errors
(authentication, context window, rejected parameter). The simulator drives them all the
same way.
"""

from __future__ import annotations

import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

__all__ = [
    "ANTHROPIC",
    "OLLAMA",
    "OPENAI",
    "Answer",
    "Parsed",
    "Reply",
    "Wire",
    "WireError",
    "count_tokens",
]

Answer = str | dict[str, Any]
"""What the simulated model says: text, or a JSON object (tool input for forced Anthropic tools)."""

_CONTEXT_LIMIT = 128_000


def count_tokens(text: str) -> int:
    """Deterministic token estimate: 1.3 tokens per whitespace-separated word, at least 1."""
    return max(1, round(len(text.split()) * 1.3))


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete HTTP answer, rendered to bytes."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=headers or {})


class WireError(Exception):
    """A request the provider itself would reject; carries the provider's reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the simulator needs from a request, whatever the provider."""

    model: str
    text: str  # every message's text, joined by newlines: what ``match`` searches
    schema: Mapping[str, Any] | None = None  # the natively requested JSON schema
    tool_name: str | None = None  # Anthropic: the forced tool's name
    json_mode: bool = False  # JSON wanted without a native schema (json_object / format "json")
    stream: bool = False  # Ollama only: answer as NDJSON chunks

    @property
    def prompt_tokens(self) -> int:
        return count_tokens(self.text)


class Wire(ABC):
    """One provider's wire format."""

    provider: ClassVar[str]

    def check_headers(self, headers: Mapping[str, str], api_key: str | None) -> Reply | None:
        """The provider's rejection of a request's headers (bad key, ...), or None if fine."""
        return None

    @abstractmethod
    def parse(self, body: object) -> Parsed:
        """Read a request body; raise WireError as the provider would for an invalid one."""

    def missing_field_message(self, name: str) -> str:
        """How the provider words a missing required body field."""
        return f"{name}: Field required"

    def fields(self, body: object, required: tuple[str, ...]) -> Mapping[str, Any]:
        """The request body as a mapping, checked for the provider's required fields."""
        if not isinstance(body, Mapping):
            raise WireError(self.error(400, "The request body is not a valid JSON object."))
        for name in required:
            if name not in body:
                raise WireError(self.error(400, self.missing_field_message(name)))
        return body

    def no_streaming(self, fields: Mapping[str, Any]) -> None:
        """Reject ``stream: true``: the simulator answers OpenAI and Anthropic in one body."""
        if fields.get("stream"):
            raise WireError(self.error(400, "stream: not supported by the ProviderSimulator"))

    @abstractmethod
    def success(self, parsed: Parsed, answer: Answer) -> Reply:
        """The provider's 200 answer carrying ``answer``."""

    @abstractmethod
    def error(self, status: int, message: str | None = None) -> Reply:
        """The provider's error body for ``status`` (with its usual message if none given)."""

    @abstractmethod
    def context_window_error(self, parsed: Parsed) -> Reply:
        """The provider's real "prompt too long for the model" error."""

    @abstractmethod
    def unsupported_param_error(self) -> Reply:
        """The provider rejecting the native structured-output parameter."""


def _text_of(content: object) -> str:
    """Text of a message content: a string, or a list of parts/blocks with text in them."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(filter(None, (_text_of(part) for part in content)))
    if isinstance(content, Mapping):
        if isinstance(content.get("text"), str):
            return str(content["text"])
        return _text_of(content.get("content"))
    return ""


def _messages_text(messages: object) -> str:
    if not isinstance(messages, list):
        return ""
    return "\n".join(
        _text_of(m.get("content")) for m in messages if isinstance(m, Mapping) and m.get("content")
    )


def _dumps(answer: Answer) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer)


def _completion_tokens(answer: Answer) -> int:
    return count_tokens(_dumps(answer))


class OpenAIWire(Wire):
    """OpenAI Chat Completions (``POST /v1/chat/completions``)."""

    provider = "openai"
    _ERRORS: ClassVar[dict[int, tuple[str, str | None, str]]] = {
        400: ("invalid_request_error", None, "Invalid request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: ("invalid_request_error", None, "You are not allowed to access this resource."),
        404: (
            "invalid_request_error",
            "model_not_found",
            "The model does not exist or you do not have access to it.",
        ),
        429: (
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests per min (RPM). Please try again later.",
        ),
        500: (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    }

    def missing_field_message(self, name: str) -> str:
        return f"Missing required parameter: '{name}'."

    def check_headers(self, headers: Mapping[str, str], api_key: str | None) -> Reply | None:
        if api_key is None:
            return None
        given = headers.get("authorization", "")
        if not given:
            return self._body(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            )
        if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            return self.error(401)
        return None

    def parse(self, body: object) -> Parsed:
        fields = self.fields(body, ("model", "messages"))
        self.no_streaming(fields)
        response_format = fields.get("response_format")
        schema = None
        json_mode = False
        if isinstance(response_format, Mapping):
            if response_format.get("type") == "json_schema":
                schema = response_format.get("json_schema", {}).get("schema")
            json_mode = response_format.get("type") == "json_object"
        return Parsed(
            model=str(fields["model"]),
            text=_messages_text(fields["messages"]),
            schema=schema,
            json_mode=json_mode,
        )

    def success(self, parsed: Parsed, answer: Answer) -> Reply:
        completion = _completion_tokens(answer)
        return json_reply(
            200,
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": parsed.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": _dumps(answer),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": parsed.prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": parsed.prompt_tokens + completion,
                },
            },
        )

    def models(self) -> Reply:
        created = 1_700_000_000
        names = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
        data = [
            {"id": n, "object": "model", "created": created, "owned_by": "system"} for n in names
        ]
        return json_reply(200, {"object": "list", "data": data})

    def error(self, status: int, message: str | None = None) -> Reply:
        family = "invalid_request_error" if status < 500 else "server_error"
        kind, code, default = self._ERRORS.get(status, (family, None, f"HTTP {status}"))
        return self._body(status, message or default, kind, None, code)

    def context_window_error(self, parsed: Parsed) -> Reply:
        tokens = _CONTEXT_LIMIT + parsed.prompt_tokens
        message = (
            f"This model's maximum context length is {_CONTEXT_LIMIT} tokens. However, your "
            f"messages resulted in {tokens} tokens. Please reduce the length of the messages."
        )
        return self._body(
            400, message, "invalid_request_error", "messages", "context_length_exceeded"
        )

    def unsupported_param_error(self) -> Reply:
        message = (
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with "
            "this model."
        )
        return self._body(400, message, "invalid_request_error", "response_format", None)

    @staticmethod
    def _body(status: int, message: str, kind: str, param: str | None, code: str | None) -> Reply:
        error = {"message": message, "type": kind, "param": param, "code": code}
        return json_reply(
            status, {"error": error}, {"x-request-id": f"req_{secrets.token_hex(16)}"}
        )


class AnthropicWire(Wire):
    """Anthropic Messages (``POST /v1/messages``), with forced tool use for JSON output."""

    provider = "anthropic"
    _ERRORS: ClassVar[dict[int, tuple[str, str]]] = {
        400: ("invalid_request_error", "Invalid request."),
        401: ("authentication_error", "invalid x-api-key"),
        402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
        403: ("permission_error", "Your API key does not have permission to use this resource."),
        404: ("not_found_error", "Not found."),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization. "
            "Please try again later.",
        ),
        500: ("api_error", "Internal server error"),
        504: ("timeout_error", "Request timed out"),
        529: ("overloaded_error", "Overloaded"),
    }

    def check_headers(self, headers: Mapping[str, str], api_key: str | None) -> Reply | None:
        if api_key is not None:
            given = headers.get("x-api-key") or _bearer(headers)
            if not given:
                return self.error(401, "x-api-key header is required")
            if not secrets.compare_digest(given.encode(), api_key.encode()):
                return self.error(401)
        if "anthropic-version" not in headers:
            return self.error(400, "anthropic-version: header is required")
        return None

    def parse(self, body: object) -> Parsed:
        fields = self.fields(body, ("model", "messages", "max_tokens"))
        self.no_streaming(fields)
        system = _text_of(fields.get("system"))
        text = "\n".join(filter(None, (system, _messages_text(fields["messages"]))))
        tool = self._forced_tool(fields.get("tools"), fields.get("tool_choice"))
        return Parsed(
            model=str(fields["model"]),
            text=text,
            schema=tool.get("input_schema") if tool else None,
            tool_name=str(tool["name"]) if tool else None,
        )

    @staticmethod
    def _forced_tool(tools: object, choice: object) -> Mapping[str, Any] | None:
        if not isinstance(tools, list) or not tools or not isinstance(choice, Mapping):
            return None
        if choice.get("type") == "any":
            return tools[0] if isinstance(tools[0], Mapping) else None
        if choice.get("type") == "tool":
            for tool in tools:
                if isinstance(tool, Mapping) and tool.get("name") == choice.get("name"):
                    return tool
        return None

    def success(self, parsed: Parsed, answer: Answer) -> Reply:
        tool_input = answer if isinstance(answer, dict) else _json_object(answer)
        content: dict[str, Any]
        if parsed.tool_name is not None and tool_input is not None:
            content = {
                "type": "tool_use",
                "id": f"toolu_{secrets.token_hex(12)}",
                "name": parsed.tool_name,
                "input": tool_input,
            }
        else:
            content = {"type": "text", "text": _dumps(answer)}
        return json_reply(
            200,
            {
                "id": f"msg_{secrets.token_hex(12)}",
                "type": "message",
                "role": "assistant",
                "model": parsed.model,
                "content": [content],
                "stop_reason": "tool_use" if content["type"] == "tool_use" else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": parsed.prompt_tokens,
                    "output_tokens": _completion_tokens(answer),
                },
            },
            {"request-id": f"req_{secrets.token_hex(12)}"},
        )

    def error(self, status: int, message: str | None = None) -> Reply:
        family = "invalid_request_error" if status < 500 else "api_error"
        kind, default = self._ERRORS.get(status, (family, f"HTTP {status}"))
        request_id = f"req_{secrets.token_hex(12)}"
        payload = {
            "type": "error",
            "error": {"type": kind, "message": message or default},
            "request_id": request_id,
        }
        return json_reply(status, payload, {"request-id": request_id})

    def context_window_error(self, parsed: Parsed) -> Reply:
        limit = 200_000
        tokens = limit + parsed.prompt_tokens
        return self.error(400, f"prompt is too long: {tokens} tokens > {limit} maximum")

    def unsupported_param_error(self) -> Reply:
        return self.error(400, "tool_choice: forced tool use is not supported for this model")


def _bearer(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer`` header (newer Anthropic SDKs send the key so)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class OllamaWire(Wire):
    """Ollama chat (``POST /api/chat``): one JSON body, or NDJSON when ``stream`` is not false."""

    provider = "ollama"
    _ERRORS: ClassVar[dict[int, str]] = {
        400: "invalid request",
        404: "model not found, try pulling it first",
        429: "too many requests",
        500: "llama runner process has terminated: exit status 2",
        503: "server busy, please try again.  maximum pending requests exceeded",
    }

    def missing_field_message(self, name: str) -> str:
        return f"{name} is required"

    def parse(self, body: object) -> Parsed:
        fields = self.fields(body, ("model",))
        fmt = fields.get("format")
        return Parsed(
            model=str(fields["model"]),
            text=_messages_text(fields.get("messages")),
            schema=fmt if isinstance(fmt, Mapping) else None,
            json_mode=fmt == "json",
            stream=fields.get("stream", True) is not False,
        )

    def success(self, parsed: Parsed, answer: Answer) -> Reply:
        created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        final = {
            "model": parsed.model,
            "created_at": created_at,
            "message": {"role": "assistant", "content": _dumps(answer)},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 100_000,
            "prompt_eval_count": parsed.prompt_tokens,
            "prompt_eval_duration": 400_000,
            "eval_count": _completion_tokens(answer),
            "eval_duration": 500_000,
        }
        if not parsed.stream:
            return json_reply(200, final)
        chunk = {**final, "done": False}
        for key in set(final) - {"model", "created_at", "message", "done"}:
            del chunk[key]
        final["message"] = {"role": "assistant", "content": ""}
        lines = (json.dumps(chunk) + "\n" + json.dumps(final) + "\n").encode()
        return Reply(200, lines, content_type="application/x-ndjson")

    def error(self, status: int, message: str | None = None) -> Reply:
        return json_reply(status, {"error": message or self._ERRORS.get(status, f"HTTP {status}")})

    def context_window_error(self, parsed: Parsed) -> Reply:
        return self.error(400, "the input length exceeds the context length")

    def unsupported_param_error(self) -> Reply:
        return self.error(400, 'invalid format: expected "json" or a valid JSON schema')


OPENAI = OpenAIWire()
ANTHROPIC = AnthropicWire()
OLLAMA = OllamaWire()
