"""Content-Encoding, undone incrementally under a size cap that holds at every stage.

httpx's own decoders inflate each chunk whole, so a small `gzip, gzip` body (a bomb inside a
bomb) allocated gigabytes before any size check ran. Here each stage of the encoding stack is
a zlib `decompressobj` asked for at most `STEP` bytes at a time, and the bytes every stage
produces, the body's included, are counted against `max_bytes` as they appear: a body that
would inflate past the cap fails after at most `max_bytes` of work per stage.

We only ask for what we can decode this way (`ACCEPT_ENCODING`: gzip and deflate; brotli's
streaming API bounds its output only from version 1.2, so it is not offered); a server that
sends another encoding anyway gets `UnsupportedEncoding`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

__all__ = [
    "ACCEPT_ENCODING",
    "BodyDecoder",
    "CorruptBody",
    "DecodedTooLarge",
    "DecodingError",
    "UnsupportedEncoding",
]

ACCEPT_ENCODING = "gzip, deflate"
STEP = 64 * 1024
"""The most any stage inflates in one go: the unit of work and of memory between checks."""
MAX_STAGES = 4
"""Encodings stacked deeper than this are refused: no real server stacks more than two."""

_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class DecodingError(Exception):
    """The body could not be decoded; the message says why, quoting no body bytes."""


class UnsupportedEncoding(DecodingError):
    """The response's Content-Encoding names an encoding we did not ask for and cannot decode."""


class CorruptBody(DecodingError):
    """The encoded body is malformed or cut off."""


class DecodedTooLarge(DecodingError):
    """A stage of decoding produced more than the size cap."""


class _Inflater:
    """One zlib stage: gzip, or deflate, which servers send zlib-wrapped or raw (RFC 9110
    says wrapped; some send raw, which the first bytes tell apart)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.produced = 0
        self._raw_fallback = encoding == "deflate"
        self._inflater = zlib.decompressobj(_WBITS[encoding])

    def inflate(self, data: bytes) -> Iterable[bytes]:
        """Decompress `data`, yielding at most STEP bytes at a time."""
        try:
            piece = self._inflater.decompress(data, STEP)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            piece = self._inflater.decompress(data, STEP)
        self._raw_fallback = False
        yield piece
        # Whatever did not fit in STEP waits in unconsumed_tail, or in zlib's own window when
        # the input ran out exactly as the output filled: ask again until a short answer.
        while self._inflater.unconsumed_tail or len(piece) == STEP:
            piece = self._inflater.decompress(self._inflater.unconsumed_tail, STEP)
            yield piece

    @property
    def finished(self) -> bool:
        return self._inflater.eof


class BodyDecoder:
    """Decodes a body sent with `content_encoding` (the header's values, in the order they
    were applied), refusing any stage that produces more than `max_bytes`."""

    def __init__(self, content_encoding: Iterable[str], max_bytes: int) -> None:
        applied = [value.strip().lower() for value in content_encoding]
        applied = [value for value in applied if value and value != "identity"]
        unknown = sorted({value for value in applied if value not in _WBITS})
        if unknown:
            raise UnsupportedEncoding(
                f"the response is encoded with {', '.join(unknown)}, which was not asked for "
                f"(accepted: {ACCEPT_ENCODING})"
            )
        if len(applied) > MAX_STAGES:
            raise UnsupportedEncoding(
                f"the response stacks {len(applied)} content encodings; at most {MAX_STAGES} "
                "are decoded"
            )
        self.max_bytes = max_bytes
        self._stages = [_Inflater(value) for value in reversed(applied)]
        self._size = 0
        self._chunks: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Decode the next bytes of the body as received."""
        self._size += len(data)
        if self._size > self.max_bytes:
            raise DecodedTooLarge(f"response body is over the {self.max_bytes} byte limit")
        self._push(0, data)

    def take(self) -> bytes:
        """The bytes decoded since the last `take`, for a body read as it streams (the cap
        still counts every byte decoded)."""
        chunks, self._chunks = self._chunks, []
        return b"".join(chunks)

    def finish(self) -> bytes:
        """The whole decoded body (what `take` has not taken); CorruptBody if an encoded
        stream ended early."""
        for stage in self._stages:
            if not stage.finished:
                raise CorruptBody(f"the {stage.encoding}-encoded response body ends early")
        return b"".join(self._chunks)

    def _push(self, index: int, data: bytes) -> None:
        # Depth-first, so each stage holds at most STEP bytes not yet passed on: memory stays
        # at the decoded body plus STEP per stage, whatever the ratios.
        if index == len(self._stages):
            if data:
                self._chunks.append(data)
            return
        stage = self._stages[index]
        try:
            for piece in stage.inflate(data):
                stage.produced += len(piece)
                if stage.produced > self.max_bytes:
                    raise DecodedTooLarge(
                        f"response body decodes ({stage.encoding}) to over the "
                        f"{self.max_bytes} byte limit"
                    )
                self._push(index + 1, piece)
        except zlib.error as exc:
            raise CorruptBody(
                f"the {stage.encoding}-encoded response body is corrupt: {exc}"
            ) from None
