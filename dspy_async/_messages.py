"""A call's chat messages, checked before any request: roles, text, content parts.

`BaseLM.acall` takes a prompt or OpenAI-style messages; this turns either into a fresh list
the providers can send, and refuses what no provider could (a lone surrogate, an unknown role,
an image that is neither an http(s) nor a data URL) with a message naming the place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import _checks
from .records import ContentPart, Message, image_data

__all__ = ["ROLES", "to_messages"]

ROLES = frozenset({"system", "user", "assistant"})


def to_messages(prompt: str | None, messages: list[Message] | None) -> list[Message]:
    """Check the call's input and return it as a fresh list of chat messages.

    Text must be sendable: a lone surrogate (from bytes decoded with `surrogateescape`, or a
    split emoji) cannot be encoded as UTF-8, and would fail inside the request instead.
    """
    if (prompt is None) == (messages is None):
        raise TypeError("pass either a prompt or messages=[...], not both and not neither")
    if messages is None:
        return [{"role": "user", "content": _text("prompt", prompt)}]
    if not isinstance(messages, list) and (
        isinstance(messages, str | Mapping) or not isinstance(messages, Iterable)
    ):
        raise TypeError(f"messages must be a list of message dicts, not {type(messages).__name__}")
    checked: list[Message] = []
    for index, message in enumerate(messages):
        mapping = isinstance(message, dict | Mapping)  # dict first: no ABC check for dicts
        content = message.get("content") if mapping else None
        if (
            not mapping
            or message.get("role") not in ROLES
            or not isinstance(content, str | list)
            or len(message) != 2
        ):
            got = (
                f"keys {sorted(map(str, message))}"
                if isinstance(message, Mapping)
                else f"a {type(message).__name__}"
            )
            raise TypeError(
                f"messages[{index}] must be {{'role': 'system'|'user'|'assistant', "
                f"'content': str}}, got {got}"
            )
        if isinstance(content, list):
            where = f"messages[{index}]['content']"
            if message["role"] != "user":
                raise TypeError(f"{where}: only a user message may be a list of content parts")
            checked.append({"role": "user", "content": _parts(where, content)})
        elif _checks.unencodable(content) is None:  # the common case, with no message to make
            checked.append({"role": message["role"], "content": content})
        else:
            _text(f"messages[{index}]['content']", content)  # raises, saying why
    if not checked:
        raise TypeError("messages must not be empty")
    return checked


def _parts(where: str, parts: list[Any]) -> list[ContentPart]:
    """Content parts checked and copied: text parts, and images as https or data URLs."""
    if not parts:
        raise TypeError(f"{where} must not be an empty list")
    checked: list[ContentPart] = []
    for index, part in enumerate(parts):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and set(part) == {"type", "text"}:
            checked.append({"type": "text", "text": _text(f"{at}['text']", part["text"])})
            continue
        image = part.get("image_url") if kind == "image_url" else None
        if set(part) == {"type", "image_url"} and isinstance(image, Mapping):
            url = image.get("url")
            if set(image) <= {"url", "detail"} and isinstance(url, str) and _image_url(url):
                checked.append({"type": "image_url", "image_url": dict(image)})
                continue
            raise TypeError(
                f"{at}['image_url'] must be {{'url': an http(s) URL or a "
                "'data:image/...;base64,...' URL}"
            )
        raise TypeError(
            f"{at} must be {{'type': 'text', 'text': str}} or "
            f"{{'type': 'image_url', 'image_url': {{'url': str}}}}, got {_checks.shown(part)}"
        )
    return checked


def _image_url(url: str) -> bool:
    return image_data(url) is not None or (
        url.startswith(("https://", "http://")) and _checks.unencodable(url) is None
    )


def _text(where: str, text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{where} must be a str, not {type(text).__name__}")
    if _checks.unencodable(text) is not None:
        raise TypeError(
            f"{where} holds a lone surrogate (half of a UTF-16 pair, as text decoded with "
            "errors='surrogateescape' can), which UTF-8 cannot encode or send"
        )
    return text
