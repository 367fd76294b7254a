"""A journaled batch killed with SIGKILL halfway, then run again: what the provider sees.

    python benchmarks/scale_journal.py [--items 2000] [--latency 0.05]

A child process runs `Predict(Classify).batch(items, journal=..., max_concurrency=40)` against
the provider simulator (in this process, so its request log can be read); once the journal
holds half the items, the child is killed with SIGKILL, and the same command runs again to
the end. The table counts the provider's requests per item: an item recorded before the kill
must be asked exactly once, an item in flight at the kill at most twice. A second table gives
the journal's cost: the same batch with and without it, no latency, each in a fresh process.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from scale_common import ROOT, load, table

from dspy_async.testing import ProviderSimulator

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from typing import Literal
    import dspy_async as dspy

    class Classify(dspy.Signature):
        email_content: str = dspy.InputField()
        category: Literal["meeting", "spam", "other"] = dspy.OutputField()

    base, journal, count = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
    lm = dspy.LM("openai/gpt-4o-mini", api_base=base, api_key="sk-bench", cache=False)
    items = ({"email_content": f"[doc {i:05d}] please read"} for i in range(count))
    started = time.perf_counter()
    results = dspy.Predict(Classify, lm=lm).batch(items, max_concurrency=40, journal=journal)
    wall = time.perf_counter() - started
    print(json.dumps({"wall": wall, "answered": sum(r.category is not None for r in results)}))
    """
)


def rows(journal: Path) -> int:
    """Rows recorded so far (0 until the child has made the file and its table)."""
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as connection:
            return int(connection.execute("SELECT count(*) FROM items").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def recorded(journal: Path) -> set[int]:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as connection:
        return {index for (index,) in connection.execute("SELECT idx FROM items")}


def child(
    sim: ProviderSimulator, journal: Path | None, count: int
) -> tuple[list[str], dict[str, str]]:
    """The child's command line and environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DSPY_ASYNC_RESPONSE_CACHE": "off"}
    path = "" if journal is None else str(journal)
    return [sys.executable, "-c", CHILD, sim.openai_base_url, path, str(count)], env


def asked(sim: ProviderSimulator) -> collections.Counter[int]:
    return collections.Counter(
        int(found.group(1))
        for request in sim.requests
        if (found := re.search(r"\[doc (\d{5})\]", request.text))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    count = args.items
    with ProviderSimulator(latency=args.latency) as sim, tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "run.sqlite"
        argv, env = child(sim, journal, count)
        started = time.perf_counter()
        first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while rows(journal) < count // 2:
            if first.poll() is not None:
                raise SystemExit(f"the first run ended early: {first.stderr.read()[-300:]!r}")
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
        killed_after = time.perf_counter() - started
        before = recorded(journal)
        sent_before = len(sim.requests)
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        second = json.loads(rerun.stdout)
        counts = asked(sim)
        twice = [index for index in range(count) if counts[index] > 1]
        lines = [
            ["items", f"{count:,}"],
            ["recorded when killed (SIGKILL)", f"{len(before):,}"],
            ["requests before the kill", f"{sent_before:,}"],
            ["requests of the rerun", f"{len(sim.requests) - sent_before:,}"],
            ["recorded items asked again", str(sum(counts[i] > 1 for i in before))],
            ["items asked twice (in flight at the kill)", str(len(twice))],
            ["items asked at all / never", f"{len(counts):,} / {count - len(counts)}"],
            ["answered after the rerun", f"{second['answered']:,}"],
            ["first run until the kill, s", f"{killed_after:.2f}"],
            ["rerun wall, s", f"{second['wall']:.2f}"],
        ]
        print(f"\n2 CPUs, load average {load()}; {args.latency:g} s per request.\n")
        print(table(["kill -9 halfway, then rerun", ""], lines))

        sim.latency = 0.0
        cost = []
        for name, path in (("no journal", None), ("journal", Path(tmp) / "cost.sqlite")):
            argv, env = child(sim, path, count)
            done = json.loads(subprocess.run(argv, env=env, capture_output=True, check=True).stdout)
            cost.append([name, f"{count:,}", f"{done['wall']:.2f}", f"{count / done['wall']:,.0f}"])
        print()
        print(table(["no latency, max_concurrency=40", "items", "wall s", "items/s"], cost))


if __name__ == "__main__":
    main()
