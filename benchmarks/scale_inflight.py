"""Thousands of calls in flight on one loop thread: wall time, peak RSS and threads.

    python benchmarks/scale_inflight.py                     # 5,000 and 20,000 in flight
    python benchmarks/scale_inflight.py --sizes 20000 --latency 1

The provider simulator runs in its own process (`python -m dspy_async.testing serve`), 1 s
per request. Each row is a fresh client process that raises its open-file limit to the hard
limit and sends every call at once: `Predict(Doc).batch(items, max_concurrency=N)` for
dspy-async, `asyncio.gather` over one unlimited aiohttp session for the raw client, the same
request body. dspy-async's shared pool opens at most half the open-file limit in connections
(`_http.default_pool_size()`); calls beyond it wait for a connection, holding no socket. The
garbage collector is left as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from typing import Any, Literal

from scale_common import (
    API_KEY,
    MODEL,
    PeakThreads,
    load,
    peak_rss_mb,
    raise_open_files,
    simulator_process,
    table,
)

import dspy_async as dspy
from dspy_async import _http


class Doc(dspy.Signature):
    """Summarise."""

    text: str = dspy.InputField()
    label: Literal["positive", "negative", "neutral"] = dspy.OutputField()


def ours(base_url: str, count: int) -> dict[str, Any]:
    lm = dspy.LM(f"openai/{MODEL}", api_base=base_url, api_key=API_KEY, cache=False)
    predict = dspy.Predict(Doc, lm=lm)
    predict(text="warm up")  # the runtime and one pooled connection, outside the timing
    items = [{"text": f"document {i} is fine"} for i in range(count)]
    started = time.perf_counter()
    with PeakThreads() as threads:
        results = predict.batch(items, max_concurrency=count, return_exceptions=True)
    wall = time.perf_counter() - started
    answered = sum(isinstance(r, dspy.Prediction) and r.label is not None for r in results)
    pool = _http.default_pool_size()
    return {"wall": wall, "answered": answered, "threads": threads.peak, "pool": pool}


def raw(base_url: str, count: int) -> dict[str, Any]:
    import aiohttp

    url = base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    template = _template()

    async def everything() -> int:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def call(i: int) -> bool:
                body = json.loads(template.replace("@@DOC@@", f"document {i} is fine"))
                try:
                    async with session.post(url, json=body, headers=headers) as reply:
                        answer = await reply.json()
                    return bool(json.loads(answer["choices"][0]["message"]["content"]))
                except Exception:
                    return False

            return sum(await asyncio.gather(*(call(i) for i in range(count))))

    started = time.perf_counter()
    with PeakThreads() as threads:
        answered = asyncio.run(everything())
    return {"wall": time.perf_counter() - started, "answered": answered, "threads": threads.peak}


def _template() -> str:
    """The body dspy-async sends for a document, as JSON text with @@DOC@@ where it goes: an
    LM that builds the OpenAI body from what Predict hands it, then stops the call."""
    captured: dict[str, Any] = {}

    class Capture(dspy.BaseLM):
        async def _generate(self, messages: Any, output_schema: Any, params: Any) -> Any:
            from dspy_async.providers import openai

            captured.update(openai.build_body(MODEL, messages, {}, output_schema))
            raise dspy.ConfigurationError("captured")

    with contextlib.suppress(dspy.ConfigurationError):
        dspy.Predict(Doc, lm=Capture("x", "openai"))(text="@@DOC@@")
    return json.dumps(captured)


def child(implementation: str, base_url: str, count: int) -> dict[str, Any]:
    limit = raise_open_files()
    result = (ours if implementation == "dspy-async" else raw)(base_url, count)
    return {**result, "rss": peak_rss_mb(), "open_files": limit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, base_url, count = args.child
        print(json.dumps(child(name, base_url, int(count))))
        return
    rows = []
    with simulator_process(args.latency) as base_url:
        for count in (int(size) for size in args.sizes.split(",")):
            walls = {}
            for name in ("dspy-async", "raw aiohttp"):
                argv = [sys.executable, __file__, "--child", name, base_url, str(count)]
                done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    failed = "failed: " + done.stderr.strip()[-60:]
                    rows.append([name, f"{count:,}", failed, *[""] * 5])
                    continue
                result = json.loads(done.stdout)
                walls[name] = result["wall"]
                rows.append(
                    [
                        name,
                        f"{count:,}",
                        f"{result['answered']:,}",
                        f"{result['wall']:.2f}",
                        f"{result['rss']:.0f}",
                        str(result["threads"]),
                        f"{result['open_files']:,}",
                        f"{result['pool']:,}" if "pool" in result else "-",
                    ]
                )
                print(f"  {name} {count:,}: {result['wall']:.2f} s", flush=True)
            if len(walls) == 2:
                rows.append(
                    ["  ratio", "", "", f"{walls['dspy-async'] / walls['raw aiohttp']:.2f}x"]
                    + [""] * 4
                )
    print(f"\n2 CPUs, load average {load()}; {args.latency:g} s per request; GC untouched.\n")
    header = ["client", "in flight", "answered", "wall s", "peak RSS MB", "threads", "fd limit"]
    print(table([*header, "connections"], rows))


if __name__ == "__main__":
    main()
