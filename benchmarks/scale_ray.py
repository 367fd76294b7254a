"""The Ray Data recipe: a Predict over a Dataset on 2 Ray worker processes, with faults.

    python benchmarks/scale_ray.py [--items 200] [--workers 2]   # needs dspy-async[ray]

A local Ray cluster (2 CPUs, 127.0.0.1) runs `map_dataset(dataset, program, workers=2)`
against the provider simulator (in this process, 0.05 s per request): 2 % of the items get a
400 (kept as that row's error), 10 % a 503 once and 4 % a dropped connection once (both
retried). The API key is only in the workers' environment; the driver's LM has another,
which never leaves this process. The table says whether every row came back, in order, with
its result or its error, and how many requests the provider saw.
"""

from __future__ import annotations

import argparse
import os
import time

import ray
from scale_common import load, table

import dspy_async as dspy
from dspy_async.integrations.ray import map_dataset, portable
from dspy_async.testing import ProviderSimulator

WORKER_KEY = "sk-only-the-workers-have-this"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    count = args.items
    failing = set(range(7, count, 50))
    with ProviderSimulator(latency=0.05, api_key=WORKER_KEY) as sim:
        for index in failing:
            sim.fault(f"[doc {index:05d}]", kind="status", status=400)
        for index in (i for i in range(3, count, 10) if i not in failing):
            sim.fault(f"[doc {index:05d}]", kind="status", status=503)
        for index in (i for i in range(5, count, 25) if i not in failing):
            sim.fault(f"[doc {index:05d}]", kind="drop")
        lm = dspy.LM(
            "openai/gpt-4o-mini",
            api_base=sim.openai_base_url,
            api_key="sk-the-driver-key-stays-here",
            cache=False,
            retry=dspy.RetryPolicy(initial_delay=0.05, max_delay=0.2),
        )
        program = dspy.Predict("email_content -> category, urgent: bool", lm=lm)
        assert b"sk-the-driver-key" not in portable(program).data

        started = time.perf_counter()
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            runtime_env={
                "env_vars": {"OPENAI_API_KEY": WORKER_KEY, "DSPY_ASYNC_RESPONSE_CACHE": "off"}
            },
        )
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        cluster_up = time.perf_counter() - started
        try:
            rows = [{"id": i, "email_content": f"[doc {i:05d}] please read"} for i in range(count)]
            started = time.perf_counter()
            results = map_dataset(
                ray.data.from_items(rows), program, workers=args.workers, batch_size=25
            ).take_all()
            wall = time.perf_counter() - started
        finally:
            ray.shutdown()
        in_order = [row["id"] for row in results] == list(range(count))
        errors = {row["id"] for row in results if row["error"] is not None}
        answered = sum(row["error"] is None and row["category"] is not None for row in results)
        requests = [r for r in sim.requests if r.path.endswith("/chat/completions")]
        lines = [
            ["items / Ray workers", f"{count:,} / {args.workers}"],
            ["rows returned, in input order", f"{len(results):,}, {in_order}"],
            ["answered", f"{answered:,}"],
            ["errors (the 400s), in their rows", f"{len(errors)}, {errors == failing}"],
            ["requests the provider saw", f"{len(requests):,}"],
            [
                "requests refused for a wrong key",
                str(sum(r.outcome == "unauthorized" for r in requests)),
            ],
            ["cluster start, s", f"{cluster_up:.1f}"],
            ["map_dataset(...).take_all(), s", f"{wall:.1f}"],
        ]
    print(f"\n2 CPUs, load average {load()}; pid {os.getpid()} drove it.\n")
    print(table(["Ray Data recipe", ""], lines))


if __name__ == "__main__":
    main()
