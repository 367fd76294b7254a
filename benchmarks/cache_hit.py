"""What a response-cache hit costs, end to end from the sync API, beside a provider round trip.

    python benchmarks/cache_hit.py [--calls 5000]

From one caller thread, times the same `lm(prompt)` call answered four ways: from the memory
tier; from the disk tier (memory off, so each lookup is a SQLite read on the cache's thread);
through `Predict` from memory (messages built, the reply parsed and validated); and, with the
cache off, by the provider simulator on 127.0.0.1 (no latency added: the floor of a real
request). Prints the median and p95 in microseconds. The cache lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import dspy_async as dspy
from dspy_async import cache
from dspy_async.testing import ProviderSimulator

PROMPT = "What is the capital of France?"


def timed(call: Callable[[], object], calls: int) -> list[float]:
    """Microseconds per call, after a few untimed warm-up calls."""
    for _ in range(min(50, calls)):
        call()
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1e6)
    return samples


def row(name: str, samples: list[float]) -> str:
    p95 = statistics.quantiles(samples, n=20)[-1]
    return f"{name:<34} {statistics.median(samples):>10.0f} {p95:>10.0f} {len(samples):>8}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    rows = []
    with ProviderSimulator() as sim, tempfile.TemporaryDirectory() as directory:
        lm = dspy.LM("openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key="sk-bench")
        predict = dspy.Predict("question -> answer", lm=lm)

        def ask() -> object:
            return lm(PROMPT)

        def predicted() -> object:
            return predict(question=PROMPT)

        dspy.configure_cache(disk_cache_dir=directory)
        assert not lm(PROMPT).cached and lm(PROMPT).cached
        rows.append(row("hit, memory tier: lm(prompt)", timed(ask, args.calls)))
        rows.append(row("hit, memory tier: Predict(...)", timed(predicted, args.calls)))

        dspy.configure_cache(enable_memory_cache=False, disk_cache_dir=directory)
        assert lm(PROMPT).cached
        rows.append(row("hit, disk tier: lm(prompt)", timed(ask, args.calls)))

        dspy.configure_cache(enable_memory_cache=False, enable_disk_cache=False)
        assert not lm(PROMPT).cached
        rows.append(row("miss, simulator round trip", timed(ask, max(100, args.calls // 5))))
        cache.reset()
    print(f"{'':<34} {'median us':>10} {'p95 us':>10} {'calls':>8}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
