"""Hostile payloads: compression bombs and pathological JSON, built fast and cached."""

from __future__ import annotations

import functools
import gzip
import json
import zlib

__all__ = [
    "deep_brackets",
    "gzip_bomb",
    "gzip_zeros",
    "never_closed_objects",
]

MiB = 2**20


@functools.cache
def gzip_zeros(size: int) -> bytes:
    """A valid gzip stream of `size` zero bytes (a multiple of 1 MiB), built in well under a
    second for gigabytes: after a full flush every 1 MiB block of zeros compresses to the same
    bytes, so one block is compressed and repeated."""
    blocks, rest = divmod(size, MiB)
    assert blocks >= 2 and not rest, "size must be a multiple of 1 MiB, at least 2 MiB"
    zeros = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()  # the final empty block and the trailer: fixed up below
    crc = 0
    for _ in range(blocks):
        crc = zlib.crc32(zeros, crc)
    trailer = crc.to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")
    return first + block * (blocks - 1) + end[:-8] + trailer


@functools.cache
def gzip_bomb(size: int = 2 * 1024 * MiB, stages: int = 2) -> bytes:
    """`stages` gzip layers over `size` zero bytes: with two, about 2 KB on the wire that
    inflate to `size` (2 GiB by default), sent as `Content-Encoding: gzip, gzip`."""
    data = gzip_zeros(size)
    for _ in range(stages - 1):
        data = gzip.compress(data, compresslevel=9)
    return data


def deep_brackets(depth: int = 100_000) -> bytes:
    """`depth` nested JSON arrays: valid JSON that the standard parser cannot read."""
    return b"[" * depth + b"]" * depth


def never_closed_objects(levels: int = 900, size: int = 1_700_000) -> str:
    """About `size` characters of `levels` nested objects, none of them closed: the reply
    that made the old parser retry from every `{` (quadratic)."""
    filler = "x" * max(0, size // levels - 16)
    return f'{{"a": {json.dumps(filler)}, "b": ' * levels
