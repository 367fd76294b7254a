"""The cache key of a call: a SHA-256 over the canonical JSON of everything that shapes the reply.

That is the provider; the endpoint, origin and path (not the query, where some gateways take a
key), so two servers serving the same model name never share entries; the request body as
sent, which holds the model, the messages, every sampling parameter and, for native structured
output, the output schema (the JSON-prompt strategy puts the schema in the messages); and the
`rollout_id`, which is never sent, and which of several completions of one request this is
(Predict's `n`: each has its own entry). Never the API key, nor any header: a rotated key keeps its
entries, and nothing secret is hashed into a key that is stored. Sync and async calls build
the same request, so they share entries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["VERSION", "cache_key"]

# Bumped whenever what goes into a key changes, so old entries are never misread as new ones.
VERSION = 1


def cache_key(
    provider: str,
    url: httpx.URL,
    body: Mapping[str, Any],
    rollout_id: int | None,
    completion: int = 0,
) -> str:
    """The hex digest naming one call's entry."""
    endpoint = f"{url.scheme}://{url.host}{'' if url.port is None else f':{url.port}'}{url.path}"
    canonical = json.dumps(
        [VERSION, provider, endpoint, body, rollout_id, completion],
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
