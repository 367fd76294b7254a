"""What tracing costs at scale: scenario S4 (5,000 calls in flight at once, 1 s latency) with
instrumentation off, on with OpenTelemetry's no-op API, and on with the SDK exporting.

Each run is a fresh process (`--child MODE`) against one ProviderSimulator in this process:
`Predict(Doc).batch(5,000 items, max_concurrency=5,000)`, as `run_scenarios.py` runs S4. The
modes:

    off     dspy_async.instrument() never called (the default)
    noop    instrument() with OpenTelemetry's API only, no SDK: spans are non-recording
    sdk     instrument() with an SDK TracerProvider, a BatchSpanProcessor (queue large enough
            to drop nothing) feeding an exporter that counts and discards, and a MeterProvider
            with an in-memory reader; the final flush is inside the timed region

Wall time and the child's CPU time (user + system) are medians over `--repeat` runs, taken in
turns (off, noop, sdk, off, ...) so that a change in machine load hits every mode alike.

    python benchmarks/otel_overhead.py [--calls 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

MODES = ("off", "noop", "sdk")
Label = Literal["positive", "negative", "neutral"]


def child(mode: str, base_url: str, calls: int) -> dict[str, Any]:
    """One timed S4 run in this (fresh) process."""
    import dspy_async as dspy

    class Doc(dspy.Signature):
        """Summarise."""

        text: str = dspy.InputField()
        label: Label = dspy.OutputField()

    exported = None
    flush = None
    if mode == "noop":
        dspy.instrument()  # the API's default providers: no SDK installed, nothing recorded
    elif mode == "sdk":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Counting(SpanExporter):
            def __init__(self) -> None:
                self.spans = 0

            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                self.spans += len(spans)
                return SpanExportResult.SUCCESS

        exported = Counting()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(
            BatchSpanProcessor(exported, max_queue_size=8 * calls, max_export_batch_size=2048)
        )
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        dspy.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        flush = tracer_provider.force_flush

    lm = dspy.LM("openai/gpt-4o-mini", api_base=base_url, api_key="sk-bench", cache=False)
    predict = dspy.Predict(Doc, lm=lm)
    items = [{"text": f"document {i}: the service was fine"} for i in range(calls)]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    results = predict.batch(items, max_concurrency=calls, return_exceptions=True, progress=False)
    if flush is not None:
        flush(60_000)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    answered = sum(isinstance(r, dspy.Prediction) for r in results)
    return {
        "mode": mode,
        "wall": wall,
        "cpu": cpu,
        "answered": answered,
        "spans": None if exported is None else exported.spans,
    }


def run(mode: str, base_url: str, calls: int) -> dict[str, Any]:
    env = {**os.environ, "DSPY_ASYNC_RESPONSE_CACHE": "off"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--base-url", base_url, "--calls", str(calls)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--base-url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.base_url, args.calls)))
        return

    from dspy_async.testing import ProviderSimulator

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with ProviderSimulator(latency=1.0) as sim:
        for _ in range(args.repeat):
            for mode in MODES:
                sim.reset()
                runs[mode].append(run(mode, sim.openai_base_url, args.calls))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"S4 with tracing: {args.calls} calls in flight at once, 1 s latency; median of "
        f"{args.repeat} run(s) per mode, each in a fresh process; {os.cpu_count()} CPUs, "
        f"load average {load}.\n"
    )
    print(
        f"{'mode':<6} {'wall s':>7} {'x off':>6} {'CPU s':>7} {'x off':>6} "
        f"{'answered':>9} {'spans':>7}"
    )
    wall_off = statistics.median(r["wall"] for r in runs["off"])
    cpu_off = statistics.median(r["cpu"] for r in runs["off"])
    for mode in MODES:
        wall = statistics.median(r["wall"] for r in runs[mode])
        cpu = statistics.median(r["cpu"] for r in runs[mode])
        answered = min(r["answered"] for r in runs[mode])
        spans = runs[mode][0]["spans"]
        print(
            f"{mode:<6} {wall:7.2f} {wall / wall_off:6.2f} {cpu:7.2f} {cpu / cpu_off:6.2f} "
            f"{answered:>9} {'-' if spans is None else spans:>7}"
        )


if __name__ == "__main__":
    main()
