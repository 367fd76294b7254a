"""Timed runs of one implementation, each in a fresh process so its memory and threads are its own.

`run_scenarios.py` starts it and writes a JSON spec line to its stdin, then one `go` line per
run, once the simulator is scripted for it. The worker imports the implementation's libraries
once; each run is a fork made after that, so it starts as cold as a new process (no runtime
thread, no pooled connection, no client) without paying the imports again. A run builds its
clients, times the workload and prints one `RESULT {...}` line: wall seconds, documents
answered, peak RSS (MB, whole process, imports included) and the peak number of OS threads
while the workload ran (the sampling thread itself not counted).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

from implementations import IMPLEMENTATIONS, Job, Workload

SAMPLE_EVERY = 0.005  # seconds


def os_threads() -> int:
    """This process's OS threads (Linux), else the Python threads."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


class ThreadPeak:
    """Samples the thread count from a background thread while the block runs."""

    def __init__(self) -> None:
        self.peak = os_threads()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, os_threads() - 1)

    def __enter__(self) -> ThreadPeak:
        self._sampler.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._sampler.join()


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    job = Job(**spec["job"])
    factory = IMPLEMENTATIONS[spec["implementation"]]
    try:
        factory(job)  # imports what the runs need, so that they fork with it loaded
    except ImportError as error:
        report({"error": f"not installed ({error.name})"})
        return
    for _ in sys.stdin:  # one line per run
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            try:
                measure(factory, job)
            finally:
                sys.stdout.flush()
                os._exit(0)
        os.waitpid(child, 0)


def measure(factory: Callable[[Job], Workload], job: Job) -> None:
    """Build the clients, run the workload once and report."""
    try:
        workload = factory(job)
        with ThreadPeak() as threads:
            started = time.perf_counter()
            outcomes = workload()
            wall = time.perf_counter() - started
    except Exception as error:
        report({"error": f"failed: {type(error).__name__}: {error}"[:80]})
        return
    report(
        {
            "wall": wall,
            "answered": sum(outcomes),
            "documents": len(outcomes),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": threads.peak,
        }
    )


def report(result: dict[str, object]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
