"""Input types with their own place in the messages: `History` (earlier turns of a
conversation) and `Image` (a picture the model looks at), as DSPy has them.

A `History` input is not written into the user message: its turns come before it, each a user
turn of the signature's inputs and an assistant turn of its outputs, as DSPy's ChatAdapter
renders them. An `Image` input becomes an image part of the user message, which each provider
sends in its own format (OpenAI `image_url` parts, Anthropic `image` blocks, Ollama's
`images`). Images are data URLs (`data:image/png;base64,...`) or http(s) URLs; building one
never reads a file or the network unless asked (`Image.from_path`).
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import Sequence
from typing import Any

import pydantic

from .records import ContentPart, image_data

__all__ = ["History", "Image", "Segment", "content_of", "images_in"]

# Image formats recognised from their first bytes, for bytes given without a type.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class History(pydantic.BaseModel):
    """The earlier turns of a conversation, for an input field typed `dspy.History`: each
    message a dict of the signature's fields (`{"question": ..., "answer": ...}`)."""

    messages: list[dict[str, Any]]

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )


class Image(pydantic.BaseModel):
    """An image input: `Image("https://...")`, `Image("data:image/png;base64,...")`,
    `Image(png_bytes)`, `Image(pil_image)` or `Image.from_path("cat.jpg")`.

    An input field typed `dspy.Image` also takes any of these sources directly.
    """

    url: str

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __init__(self, source: Any = None, /, **data: Any) -> None:
        if source is not None:
            if "url" in data:
                raise TypeError("Image takes a source or url=..., not both")
            data["url"] = source
        super().__init__(**data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_source(cls, value: Any) -> Any:
        if isinstance(value, Image):
            return value
        if isinstance(value, dict) and set(value) == {"url"}:
            return {"url": _url_of(value["url"])}
        if isinstance(value, dict):
            return value
        return {"url": _url_of(value)}

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Image:
        """Read an image file into a data URL (its type from the name, else its bytes)."""
        with open(path, "rb") as file:
            data = file.read()
        guessed, _ = mimetypes.guess_type(os.fspath(path))
        kind = guessed if guessed and guessed.startswith("image/") else _sniff(data)
        return cls(_data_url(kind, data))

    def __repr__(self) -> str:
        data = image_data(self.url)
        if data is None:
            return f"Image(url={self.url!r})"
        return f"Image(url=data:{data[0]};base64,<{len(data[1])} base64 characters>)"

    __str__ = __repr__

    def part(self) -> ContentPart:
        """The image as an OpenAI-style content part (providers convert it)."""
        return {"type": "image_url", "image_url": {"url": self.url}}


def _url_of(source: Any) -> str:
    """A data URL or http(s) URL for an image source; ValueError for anything else."""
    if isinstance(source, Image):
        return source.url
    if isinstance(source, dict) and set(source) == {"url"}:  # DSPy's legacy form
        return _url_of(source["url"])
    if isinstance(source, str):
        if image_data(source) is not None or source.startswith(("https://", "http://")):
            return source
        raise ValueError(
            "an image string must be an http(s) URL or a 'data:image/...;base64,...' URL "
            "(read a local file with dspy.Image.from_path(path))"
        )
    if isinstance(source, bytes | bytearray):
        return _data_url(_sniff(bytes(source)), bytes(source))
    if type(source).__module__.startswith("PIL.") and hasattr(source, "save"):
        import io

        buffer = io.BytesIO()
        kind = (getattr(source, "format", None) or "PNG").upper()
        source.save(buffer, format=kind)
        return _data_url(f"image/{kind.lower()}", buffer.getvalue())
    raise ValueError(
        f"an image is a URL, bytes, a PIL image or an Image, not {type(source).__name__}"
    )


def _sniff(data: bytes) -> str:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("the bytes are not a PNG, JPEG, GIF or WebP image")


def _data_url(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


Segment = str | Image
"""A piece of a user message: text, or an image between the texts."""


def images_in(value: Any) -> list[Image] | None:
    """The images an input value is (one Image, or a list or tuple of them), else None."""
    if isinstance(value, Image):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(v, Image) for v in value):
        return list(value)
    return None


def content_of(paragraphs: Sequence[str | Sequence[Segment]]) -> str | list[ContentPart]:
    """Paragraphs joined by blank lines: a str, or content parts if any image is among them."""
    segments: list[Segment] = []
    for paragraph in paragraphs:
        segments += [paragraph] if isinstance(paragraph, str) else list(paragraph)
    if not any(isinstance(segment, Image) for segment in segments):
        return "\n\n".join(str(segment) for segment in segments)
    parts: list[ContentPart] = []
    texts: list[str] = []
    for segment in segments:
        if isinstance(segment, str):
            texts.append(segment)
            continue
        if texts:
            parts.append({"type": "text", "text": "\n\n".join(texts)})
            texts = []
        parts.append(segment.part())
    if texts:
        parts.append({"type": "text", "text": "\n\n".join(texts)})
    return parts
