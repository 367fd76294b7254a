"""The blocking design dspy-async replaces, kept as a yardstick for the demo and benchmarks.

A thread pool where each worker sends OpenAI-format requests with a sync httpx client and
`time.sleep`s through every backoff, holding its worker the whole time. Its retry policy matches
ours (Retry-After honoured, else 0.5 s doubling), so the comparison isolates the design.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pydantic

RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class BlockingClassifier:
    """Sends one structured-output request per item from a pool of `workers` threads."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        output: type[pydantic.BaseModel],
        *,
        workers: int = 16,
        max_attempts: int = 4,
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.model = model
        self.output = output
        self.workers = workers
        self.max_attempts = max_attempts

    def run(self, prompts: Sequence[str]) -> list[pydantic.BaseModel | Exception]:
        limits = httpx.Limits(max_connections=self.workers)
        with (
            httpx.Client(base_url=self.base_url, timeout=30, limits=limits) as client,
            ThreadPoolExecutor(self.workers) as pool,
        ):
            return list(pool.map(lambda prompt: self._classify(client, prompt), prompts))

    def _request(self, prompt: str) -> dict[str, Any]:
        schema = self.output.model_json_schema()
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": self.output.__name__, "schema": schema, "strict": True},
            },
        }

    def _classify(self, client: httpx.Client, prompt: str) -> pydantic.BaseModel | Exception:
        delay, error = 0.5, Exception("no attempt made")
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = client.post(
                    "/chat/completions", json=self._request(prompt), headers=self.headers
                )
                if response.status_code == 200:
                    content = response.json()["choices"][0]["message"]["content"]
                    return self.output.model_validate(json.loads(content))
                error = Exception(f"HTTP {response.status_code}")
                if response.status_code not in RETRYABLE:
                    return error
                wait = float(response.headers.get("retry-after", delay))
            except (httpx.TransportError, ValueError, KeyError) as failure:
                error, wait = failure, delay
            if attempt < self.max_attempts:
                time.sleep(wait)  # the worker thread is held for the whole wait
                delay *= 2
        return error
