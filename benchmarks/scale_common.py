"""What the scale benchmarks (`scale_*.py`) share: a provider simulator in its own process, the
open-file limit raised, peak RSS and OS threads, and aligned tables.

The simulator runs as `python -m dspy_async.testing serve`, so its work (thousands of requests
at once) is not counted in the client's RSS, threads or GC, and it has its own file limit.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from worker import os_threads

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench"


def raise_open_files() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def simulator_process(latency: float) -> Iterator[str]:
    """A ProviderSimulator in its own process, answering after `latency` seconds; yields its
    OpenAI base URL."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dspy_async.testing", "serve", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "OpenAI base URL:" in line:
                yield line.split("OpenAI base URL:")[1].strip()
                break
        else:
            raise RuntimeError("the simulator process exited before serving")
    finally:
        process.terminate()
        process.wait(10)


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakThreads:
    """The most OS threads this process had while the block ran (the sampler not counted)."""

    def __init__(self, every: float = 0.005) -> None:
        self.peak = os_threads()
        self._every = every
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, os_threads() - 1)

    def __enter__(self) -> PeakThreads:
        self._sampler.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._sampler.join()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned: the first left, the others right."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    lines = [line(header), "-" * len(line(header)), *(line(row) for row in rows)]
    return "\n".join(lines)


def load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())
