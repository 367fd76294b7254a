"""A million items through `batch_iter` at DummyLM speed: peak RSS stays flat with the input.

    python benchmarks/scale_million.py                   # 10k, 100k and 1M items (a few minutes)
    python benchmarks/scale_million.py --sizes 10000,100000

Each size runs in a fresh process (so its peak RSS is its own): a `Predict` over an LM that
answers at once, with no network and nothing kept per call (DummyLM keeps every call it gets,
which would grow with the input), fed by a generator and read with `batch_iter`, which keeps
at most a window of items alive. For contrast, the list-returning `batch` over the same
generator keeps every result, so its memory grows with the input (as it must). The response
cache is off, so no item is answered from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Literal

from scale_common import PeakThreads, load, peak_rss_mb, table

import dspy_async as dspy

os.environ.setdefault("DSPY_ASYNC_RESPONSE_CACHE", "off")  # read at the first call


class Classify(dspy.Signature):
    """Classify an email by intent."""

    email_content: str = dspy.InputField()
    category: Literal["meeting", "spam", "other"] = dspy.OutputField()


class InstantLM(dspy.BaseLM):
    """Answers every call at once and keeps nothing per call."""

    def __init__(self) -> None:
        super().__init__("instant", "dummy")

    async def _generate(self, messages: Any, output_schema: Any, params: Any) -> dspy.LMResponse:
        usage = dspy.Usage(prompt_tokens=12, completion_tokens=4)
        attempt = dspy.Attempt(number=1, outcome="ok", usage=usage)
        return dspy.LMResponse('{"category": "spam"}', usage, "instant", "dummy", (attempt,))


def run(count: int, api: str) -> dict[str, Any]:
    """One size, in this process: items/s, wall, peak RSS and threads."""
    classifier = dspy.Predict(Classify, lm=InstantLM())
    classifier(email_content="warm up")  # the runtime, the signature's models
    items = ({"email_content": f"message {i}: can we meet on Tuesday?"} for i in range(count))
    started = time.perf_counter()
    with PeakThreads() as threads:
        if api == "batch_iter":
            answered = sum(p.category == "spam" for _, p in classifier.batch_iter(items))
        else:
            answered = sum(p.category == "spam" for p in classifier.batch(items))
    wall = time.perf_counter() - started
    return {"wall": wall, "answered": answered, "rss": peak_rss_mb(), "threads": threads.peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--list-sizes", default="10000,100000", help="sizes for batch (list)")
    parser.add_argument("--child", nargs=2, metavar=("COUNT", "API"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(int(args.child[0]), args.child[1])))
        return
    runs = [("batch_iter", int(size)) for size in args.sizes.split(",")]
    runs += [("batch (list)", int(size)) for size in args.list_sizes.split(",") if size]
    rows = []
    for api, count in runs:
        child = [sys.executable, __file__, "--child", str(count), api.split()[0]]
        result = json.loads(
            subprocess.run(child, capture_output=True, text=True, check=True).stdout
        )
        rows.append(
            [
                api,
                f"{count:,}",
                f"{result['answered']:,}",
                f"{result['wall']:.1f}",
                f"{count / result['wall']:,.0f}",
                f"{result['rss']:.0f}",
                str(result["threads"]),
            ]
        )
        print(f"  {api} {count:,}: {result['rss']:.0f} MB", flush=True)
    print(f"\n2 CPUs, load average {load()}; each row a fresh process.\n")
    header = ["api", "items", "answered", "wall s", "items/s", "peak RSS MB", "threads"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
