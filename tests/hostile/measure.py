"""Measure a hostile call: its peak memory and the longest stall of the runtime loop.

`StallProbe` ticks every 10 ms on the runtime loop while a call runs; `max_gap` is the longest
time between two ticks (10 ms when nothing blocks the loop). `measure(case)` runs one of
`CASES` against its hostile server and also records the peak RSS during the call (Linux:
the kernel's high-water mark, reset just before the call). `measure_in_subprocess(name)`
does it in a fresh interpreter, so that no earlier test's memory hides the peak:

    python -m tests.hostile.measure bomb_gzip_gzip      # prints one JSON line
    python benchmarks/hostile_stalls.py                 # every case, as a table
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import dspy_async as dspy
from dspy_async import _runtime

from .payloads import MiB, deep_brackets, gzip_bomb, gzip_zeros, never_closed_objects
from .servers import Handler, RawServer, canned, openai_chat

__all__ = [
    "CASES",
    "MAX_STALL",
    "Case",
    "Measurement",
    "StallProbe",
    "measure",
    "measure_in_subprocess",
]

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-hostile-measure-0123456789"
FAST = dspy.RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)
MAX_STALL = 1.0
"""The longest loop stall tests accept, in seconds. The fixed code measures 60-100 ms on a
quiet 2-core machine and up to 400 ms at a load of 7 (the probe's thread waits for a core
too); before the fixes the stacked-gzip bomb stalled the loop 35 s, the never-closed reply
4.3 s."""


class StallProbe:
    """A task on the runtime loop that ticks every `interval` seconds while in use."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.max_gap = 0.0
        self.ticks = 0
        self._stop = threading.Event()
        self._task: concurrent.futures.Future[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    def __enter__(self) -> StallProbe:
        self._task = _runtime.submit(self._tick())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        assert self._task is not None
        self._task.result(timeout=30)


@dataclass(frozen=True)
class Case:
    """A hostile server (`handler`, built before measuring) and the call made to it."""

    name: str
    handler: Callable[[], Handler]
    call: Callable[[dspy.LM], object]
    expected: type[Exception] | None  # None: the call must succeed


@dataclass(frozen=True)
class Measurement:
    case: str
    outcome: str
    seconds: float
    max_stall: float
    peak_rss_mib: float
    rss_growth_mib: float


def _predict(lm: dspy.LM) -> object:
    return dspy.Predict("question -> answer", lm=lm)(question="q")


def _json_200(body: bytes, encoding: str | None = None) -> Callable[[], Handler]:
    headers = {"Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return lambda: canned(200, headers, body)


def _reply(text: str) -> Callable[[], Handler]:
    return lambda: canned(200, {}, openai_chat(text))


def _dense_reply(size: int) -> Callable[[], Handler]:
    # Output padded with `size` bytes of empty arrays: the most tokens per byte for the scan,
    # and the most objects per byte for the parser.
    pad = "[]," * (size // 3)
    return _reply(f'{{"answer": "ok", "pad": [{pad}[]]}}')


CASES: dict[str, Case] = {
    case.name: case
    for case in [
        Case(
            "bomb_gzip_gzip",
            lambda: _json_200(gzip_bomb(2048 * MiB, stages=2), "gzip, gzip")(),
            lambda lm: lm("q"),
            dspy.ProviderResponseError,
        ),
        Case(
            "bomb_gzip",
            lambda: _json_200(gzip_zeros(1024 * MiB), "gzip")(),
            lambda lm: lm("q"),
            dspy.ProviderResponseError,
        ),
        Case(
            "bomb_gzip_x4",
            lambda: _json_200(gzip_bomb(2048 * MiB, stages=4), "gzip, gzip, gzip, gzip")(),
            lambda lm: lm("q"),
            dspy.ProviderResponseError,
        ),
        Case(
            "deep_body_200",
            _json_200(deep_brackets(100_000)),
            lambda lm: lm("q"),
            dspy.ProviderResponseError,
        ),
        Case(
            "parser_never_closed",
            _reply(never_closed_objects(900, 1_700_000)),
            _predict,
            dspy.OutputValidationError,
        ),
        Case(
            "parser_deep_output",
            _reply('{"answer": ' + '{"a": ' * 2000 + "1" + "}" * 2001),
            _predict,
            dspy.OutputValidationError,
        ),
        Case("parser_dense_2mib", _dense_reply(2 * MiB), _predict, None),
        Case("parser_dense_8mib", _dense_reply(8 * MiB), _predict, dspy.OutputValidationError),
    ]
}


@contextlib.contextmanager
def _peak_rss() -> Iterator[dict[str, float]]:
    """Yields a dict that gets `peak_mib` and `growth_mib` over the block, in MiB."""
    result: dict[str, float] = {}
    status = Path("/proc/self/status")
    try:
        # Writing 5 resets the kernel's peak-RSS mark (VmHWM) to the current RSS.
        Path("/proc/self/clear_refs").write_text("5")
        resettable = True
    except OSError:
        resettable = False
    before = _status_kib(status, "VmRSS") if resettable else _maxrss_kib()
    yield result
    peak = _status_kib(status, "VmHWM") if resettable else _maxrss_kib()
    result["peak_mib"] = peak / 1024
    result["growth_mib"] = max(0.0, peak - before) / 1024


def _status_kib(status: Path, field: str) -> float:
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1])
    raise LookupError(field)


def _maxrss_kib() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure(case: Case) -> Measurement:
    """Run `case` once in this process, after a warm-up call to a well-behaved server."""
    handler = case.handler()
    with RawServer(canned(200, {}, openai_chat('{"answer": "warm"}'))) as server:
        warm = dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, retry=FAST)
        _predict(warm)
    with RawServer(handler) as server:
        lm = dspy.LM("openai/m", api_base=f"{server.url}/v1", api_key=KEY, retry=FAST)
        began = time.perf_counter()
        with _peak_rss() as rss, StallProbe() as probe:
            try:
                case.call(lm)
            except Exception as exc:
                if case.expected is None or not isinstance(exc, case.expected):
                    raise
                outcome = type(exc).__name__
            else:
                if case.expected is not None:
                    raise AssertionError(f"{case.name}: expected {case.expected.__name__}")
                outcome = "ok"
        seconds = time.perf_counter() - began
    return Measurement(
        case.name, outcome, seconds, probe.max_gap, rss["peak_mib"], rss["growth_mib"]
    )


def measure_in_subprocess(name: str, *, timeout: float = 110) -> Measurement:
    """`measure(CASES[name])` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.hostile.measure", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        raise AssertionError(f"measuring {name} failed:\n{done.stderr}")
    fields: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return Measurement(**fields)


if __name__ == "__main__":
    print(json.dumps(dataclasses.asdict(measure(CASES[sys.argv[1]]))))
