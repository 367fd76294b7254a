"""The three providers' wire formats: reading requests, writing answers and error bodies.

Each ``Wire`` knows one provider's request shape (where the messages, the model and the
wanted JSON schema live), its success body, its error body and its specific errors
(authentication, context window, rejected parameter). The simulator drives them all the
same way; a streamed answer is the success body re-cut into events (``_streams.py``).
"""

from __future__ import annotations

import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
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
    "ToolCallAnswer",
    "Wire",
    "WireError",
    "count_tokens",
]

Answer = str | dict[str, Any]
"""What the simulated model says: text, or a JSON object (the input of a forced tool)."""

ToolCallAnswer = Mapping[str, Any]
"""A scripted tool call: {"name": str, "args": {...}}."""

# The image media types Anthropic takes in a base64 source.
_ANTHROPIC_MEDIA = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

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
    tool_name: str | None = None  # the forced tool's name (its input schema is `schema`)
    json_mode: bool = False  # JSON wanted without a native schema (json_object / format "json")

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

    @abstractmethod
    def success(
        self, parsed: Parsed, answer: Answer, tool_calls: Sequence[ToolCallAnswer] = ()
    ) -> Reply:
        """The provider's 200 answer carrying ``answer``, or ``tool_calls`` (with ``answer``
        as the text beside them)."""

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


def _content_parts(messages: object) -> list[tuple[str, Mapping[str, Any]]]:
    """Every content part of every message, with where it is (``messages.0.content.1``)."""
    parts = []
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, Mapping) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            parts.append((f"messages.{i}.content.{j}", part if isinstance(part, Mapping) else {}))
    return parts


def _call_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


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
        response_format = fields.get("response_format")
        schema = None
        json_mode = False
        if isinstance(response_format, Mapping):
            if response_format.get("type") == "json_schema":
                schema = response_format.get("json_schema", {}).get("schema")
            json_mode = response_format.get("type") == "json_object"
        self._check_images(fields["messages"])
        tool = self._forced_tool(fields.get("tools"), fields.get("tool_choice"))
        return Parsed(
            model=str(fields["model"]),
            text=_messages_text(fields["messages"]),
            schema=tool.get("parameters", {}) if tool is not None else schema,
            tool_name=str(tool["name"]) if tool is not None else None,
            json_mode=json_mode,
        )

    def _check_images(self, messages: object) -> None:
        for where, part in _content_parts(messages):
            if part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else None
            if not isinstance(url, str) or not (
                url.startswith(("http://", "https://")) or url.startswith("data:image/")
            ):
                raise WireError(
                    self.error(
                        400,
                        f"Invalid '{where}.image_url.url'. Expected a valid URL or a "
                        "base64-encoded data URL with an image MIME type "
                        "(e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=').",
                    )
                )

    @staticmethod
    def _forced_tool(tools: object, choice: object) -> Mapping[str, Any] | None:
        """The function a ``tool_choice`` of "required" (the first) or by name makes the
        model call, if any."""
        offered = tools if isinstance(tools, list) else []
        functions: list[Mapping[str, Any]] = [
            t["function"]
            for t in offered
            if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
        ]
        if not functions:
            return None
        if choice == "required":
            return functions[0]
        if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
            name = choice["function"].get("name")
            return next((f for f in functions if f.get("name") == name), None)
        return None

    def success(
        self, parsed: Parsed, answer: Answer, tool_calls: Sequence[ToolCallAnswer] = ()
    ) -> Reply:
        completion = _completion_tokens(answer)
        message: dict[str, Any] = {"role": "assistant", "content": _dumps(answer)}
        if not tool_calls and parsed.tool_name is not None and isinstance(answer, dict):
            tool_calls = [{"name": parsed.tool_name, "args": answer}]
            message["content"] = None
        if tool_calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = [
                {
                    "id": _call_id("call_"),
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
                }
                for call in tool_calls
            ]
        message["refusal"] = None
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
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if tool_calls else "stop",
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
        system = _text_of(fields.get("system"))
        text = "\n".join(filter(None, (system, _messages_text(fields["messages"]))))
        self._check_blocks(fields["messages"])
        tool = self._forced_tool(fields.get("tools"), fields.get("tool_choice"))
        return Parsed(
            model=str(fields["model"]),
            text=text,
            schema=tool.get("input_schema") if tool else None,
            tool_name=str(tool["name"]) if tool else None,
        )

    def _check_blocks(self, messages: object) -> None:
        """Refuse content blocks Anthropic refuses: OpenAI's image_url parts, and image
        blocks whose source is neither base64 data of a known image type nor a URL."""
        for where, block in _content_parts(messages):
            kind = block.get("type")
            if kind == "image":
                source = block.get("source")
                source = source if isinstance(source, Mapping) else {}
                if source.get("type") == "url" and isinstance(source.get("url"), str):
                    continue
                if source.get("type") != "base64" or not isinstance(source.get("data"), str):
                    raise WireError(self.error(400, f"{where}.source: Field required"))
                if source.get("media_type") not in _ANTHROPIC_MEDIA:
                    raise WireError(
                        self.error(
                            400,
                            f"{where}.source.base64.media_type: Input should be 'image/jpeg', "
                            "'image/png', 'image/gif' or 'image/webp'",
                        )
                    )
            elif kind not in ("text", "tool_use", "tool_result", "document"):
                raise WireError(
                    self.error(
                        400,
                        f"{where}: Input tag {kind!r} found using 'type' does not match any of "
                        "the expected tags: 'text', 'image', 'document', 'tool_use', "
                        "'tool_result'",
                    )
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

    def success(
        self, parsed: Parsed, answer: Answer, tool_calls: Sequence[ToolCallAnswer] = ()
    ) -> Reply:
        tool_input = answer if isinstance(answer, dict) else _json_object(answer)
        content: list[dict[str, Any]]
        if tool_calls:
            prose = _dumps(answer)
            content = [{"type": "text", "text": prose}] if prose else []
            content += [
                {
                    "type": "tool_use",
                    "id": _call_id("toolu_"),
                    "name": c["name"],
                    "input": c["args"],
                }
                for c in tool_calls
            ]
        elif parsed.tool_name is not None and tool_input is not None:
            content = [
                {
                    "type": "tool_use",
                    "id": _call_id("toolu_"),
                    "name": parsed.tool_name,
                    "input": tool_input,
                }
            ]
        else:
            content = [{"type": "text", "text": _dumps(answer)}]
        used_tool = any(block["type"] == "tool_use" for block in content)
        return json_reply(
            200,
            {
                "id": f"msg_{secrets.token_hex(12)}",
                "type": "message",
                "role": "assistant",
                "model": parsed.model,
                "content": content,
                "stop_reason": "tool_use" if used_tool else "end_turn",
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
    """Ollama chat (``POST /api/chat``); streamed as NDJSON unless ``stream`` is false."""

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
        self._check_messages(fields.get("messages"))
        fmt = fields.get("format")
        return Parsed(
            model=str(fields["model"]),
            text=_messages_text(fields.get("messages")),
            schema=fmt if isinstance(fmt, Mapping) else None,
            json_mode=fmt == "json",
        )

    def _check_messages(self, messages: object) -> None:
        """Ollama's content is a string, and its images base64 strings (no data: URLs)."""
        for i, message in enumerate(messages if isinstance(messages, list) else ()):
            if not isinstance(message, Mapping):
                continue
            if not isinstance(message.get("content", ""), str):
                raise WireError(
                    self.error(
                        400,
                        "json: cannot unmarshal array into Go struct field "
                        "ChatRequest.messages.content of type string",
                    )
                )
            images = message.get("images", [])
            if not isinstance(images, list) or not all(
                isinstance(image, str) and not image.startswith("data:") for image in images
            ):
                raise WireError(self.error(400, f"illegal base64 data in messages[{i}].images"))

    def success(
        self, parsed: Parsed, answer: Answer, tool_calls: Sequence[ToolCallAnswer] = ()
    ) -> Reply:
        created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        message: dict[str, Any] = {"role": "assistant", "content": _dumps(answer)}
        if tool_calls:
            message["tool_calls"] = [
                {"function": {"name": c["name"], "arguments": c["args"]}} for c in tool_calls
            ]
        final = {
            "model": parsed.model,
            "created_at": created_at,
            "message": message,
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 100_000,
            "prompt_eval_count": parsed.prompt_tokens,
            "prompt_eval_duration": 400_000,
            "eval_count": _completion_tokens(answer),
            "eval_duration": 500_000,
        }
        return json_reply(200, final)

    def error(self, status: int, message: str | None = None) -> Reply:
        return json_reply(status, {"error": message or self._ERRORS.get(status, f"HTTP {status}")})

    def context_window_error(self, parsed: Parsed) -> Reply:
        return self.error(400, "the input length exceeds the context length")

    def unsupported_param_error(self) -> Reply:
        return self.error(400, 'invalid format: expected "json" or a valid JSON schema')


OPENAI = OpenAIWire()
ANTHROPIC = AnthropicWire()
OLLAMA = OllamaWire()
