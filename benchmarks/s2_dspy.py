"""S2 through DSPy: the same DSPy program on DSPy's own `dspy.LM` and on `dspy_async.dspy_lm`.

`dspy.Predict(Doc).batch(examples, num_threads=N)` classifies S2's 100 documents (20 % get
429 + `Retry-After: 1` once, 0.2 s per attempt) with `dspy.JSONAdapter`, as `run_scenarios.py`
runs DSPy. S2 allows 16 requests in flight. DSPy's own LM can only be held to that by its
threads (16), and a thread sleeping through a `Retry-After` keeps its share. `dspy_lm(...,
max_concurrency=16)` holds the limit itself and gives the slot back while a call waits, so it
can run more threads than slots (64) and reach the ideal schedule. Each run is a fresh process
(imports and clients built before the clock starts); the simulator runs here and counts the
attempts and the most requests it held at once.

    python benchmarks/s2_dspy.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Literal

from run_scenarios import LIBRARY, NO_PHONING_HOME
from scenarios import Scenario, scenarios

from dspy_async.testing import ProviderSimulator, peak_in_flight

RUN_TIMEOUT = 120.0  # seconds, one run including its imports
API_KEY = "sk-bench"
MODEL = "gpt-4o-mini"
Label = Literal["positive", "negative", "neutral"]


@dataclass(frozen=True)
class Implementation:
    """A row: which LM, and how many DSPy threads run the batch."""

    name: str
    lm: str  # "dspy" (DSPy's own dspy.LM) or "dspy_lm" (dspy_async.dspy_lm)
    threads: int


DSPY_16 = Implementation("DSPy dspy.LM", "dspy", 16)
BRIDGE_16 = Implementation("dspy_async.dspy_lm", "dspy_lm", 16)
BRIDGE_64 = Implementation("dspy_async.dspy_lm", "dspy_lm", 64)
DSPY_64 = Implementation("DSPy dspy.LM (64 in flight: not S2)", "dspy", 64)
IMPLEMENTATIONS = (DSPY_16, BRIDGE_16, BRIDGE_64, DSPY_64)


@dataclass(frozen=True)
class Run:
    wall: float
    answered: int
    attempts: int
    peak: int  # requests the simulator held at once


# -- one run, in its own process ----------------------------------------------------------


def run_once(lm_kind: str, base_url: str, threads: int, concurrency: int) -> dict[str, Any]:
    """Build the program on one LM, then time one batch of S2's documents."""
    import dspy

    import dspy_async

    if lm_kind == "dspy":
        lm = dspy.LM(
            f"openai/{MODEL}", api_base=base_url, api_key=API_KEY, num_retries=3, cache=False
        )
    else:
        lm = dspy_async.dspy_lm(
            f"openai/{MODEL}",
            api_base=base_url,
            api_key=API_KEY,
            max_concurrency=concurrency,
            cache=False,
        )
    # The simulator answers the JSON schema in the request; with ChatAdapter every call would
    # fail to parse once and fall back to JSON, doubling the requests for both LMs.
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())

    class Doc(dspy.Signature):  # type: ignore[misc]
        """Summarise."""

        text: str = dspy.InputField()
        label: Label = dspy.OutputField()

    program = dspy.Predict(Doc)
    texts = scenarios(quick=False)["S2"].texts()
    examples = [dspy.Example(text=text).with_inputs("text") for text in texts]
    started = time.perf_counter()
    results = program.batch(
        examples, num_threads=threads, max_errors=len(examples), disable_progress_bar=True
    )
    wall = time.perf_counter() - started
    answered = sum(
        getattr(r, "label", None) in ("positive", "negative", "neutral") for r in results
    )
    return {"wall": wall, "answered": answered}


# -- the parent: simulator, runs, table ---------------------------------------------------


def measure(sim: ProviderSimulator, s2: Scenario, implementation: Implementation) -> Run:
    sim.reset()
    s2.inject(sim)
    path = os.pathsep.join(filter(None, [LIBRARY, os.environ.get("PYTHONPATH")]))
    argv = [
        *(sys.executable, __file__, "--run", implementation.lm),
        *("--base-url", sim.openai_base_url, "--threads", str(implementation.threads)),
        *("--concurrency", str(s2.concurrency)),
    ]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, **NO_PHONING_HOME, "DSPY_CACHEDIR": cache, "PYTHONPATH": path}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env, check=False
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{implementation.name}: run failed: {last}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    requests = sim.wait_for_requests(len(sim.requests), finished=True)
    return Run(result["wall"], result["answered"], len(requests), peak_in_flight(requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median shown)")
    parser.add_argument("--run", choices=("dspy", "dspy_lm"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        result = run_once(args.run, args.base_url, args.threads, args.concurrency)
        print("RESULT " + json.dumps(result), flush=True)
        return

    s2 = scenarios(quick=False)["S2"]
    ideal = s2.ideal()
    print(f"S2 through DSPy: {s2.summary}; ideal {ideal:.2f} s, {s2.attempts_needed()} attempts")
    rows: list[tuple[Implementation, Run]] = []
    with ProviderSimulator(latency=s2.latency) as sim:
        for implementation in IMPLEMENTATIONS:
            runs = [measure(sim, s2, implementation) for _ in range(args.repeat)]
            median = sorted(runs, key=lambda run: run.wall)[(len(runs) - 1) // 2]
            rows.append((implementation, median))
            walls = ", ".join(f"{run.wall:.2f}" for run in runs)
            print(f"  {implementation.name}, {implementation.threads} threads: {walls}", flush=True)

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nMedian of {args.repeat} run(s), each in a fresh process; load average {load}.\n")
    header = f"{'LM':36}  {'threads':>7}  {'wall s':>6}  {'x ideal':>7}  {'attempts':>8}"
    print(header + f"  {'answered':>8}  {'peak in flight':>14}")
    print("-" * (len(header) + 26))
    print(f"{'ideal schedule (16 slots)':36}  {'':>7}  {ideal:6.2f}  {1:7.2f}")
    for implementation, run in rows:
        print(
            f"{implementation.name:36}  {implementation.threads:7d}  {run.wall:6.2f}  "
            f"{run.wall / ideal:7.2f}  {run.attempts:8d}  {run.answered:>4}/{len(s2.texts()):<3}  "
            f"{run.peak:14d}"
        )
    found = dict(rows)
    speedup = found[DSPY_16].wall / found[BRIDGE_64].wall
    ratio = found[BRIDGE_64].wall / ideal
    print("\nTargets (dspy_lm with 64 threads over max_concurrency=16):")
    print(
        f"  >= 1.4x faster than dspy.LM with 16 threads  {speedup:5.2f}x  {verdict(speedup >= 1.4)}"
    )
    print(f"  within 1.10x of the ideal schedule           {ratio:5.2f}x  {verdict(ratio <= 1.10)}")


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    main()
