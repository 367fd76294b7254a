"""Peak RSS and the longest event-loop stall of each hostile case, each in a fresh interpreter.

The cases (tests/hostile/measure.py) are compression bombs, JSON nested past the stack, and
replies built to make parsing slow. A probe task ticks every 10 ms on the runtime loop while
the call runs; "longest gap" is the most time between two ticks (10 ms if nothing blocks).
RSS is the kernel's peak for the process during the call, and its growth over the start.

    python benchmarks/hostile_stalls.py [--repeat 3] [CASE ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hostile.measure import CASES, Measurement, measure_in_subprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", choices=[[], *CASES], help="default: all")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (worst shown)")
    args = parser.parse_args()
    print(
        f"{'case':<22} {'outcome':<24} {'seconds':>8} {'longest gap':>12} "
        f"{'peak RSS':>10} {'RSS growth':>11}"
    )
    for name in args.cases or CASES:
        runs = [measure_in_subprocess(name) for _ in range(args.repeat)]
        worst = Measurement(
            name,
            runs[0].outcome,
            max(run.seconds for run in runs),
            max(run.max_stall for run in runs),
            max(run.peak_rss_mib for run in runs),
            max(run.rss_growth_mib for run in runs),
        )
        print(
            f"{worst.case:<22} {worst.outcome:<24} {worst.seconds:>7.2f}s "
            f"{worst.max_stall * 1000:>9.0f} ms {worst.peak_rss_mib:>6.0f} MiB "
            f"{worst.rss_growth_mib:>7.0f} MiB"
        )


if __name__ == "__main__":
    main()
