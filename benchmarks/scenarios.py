"""The scenarios of `run_scenarios.py`: documents, injected faults, and the ideal schedule.

Every document is tagged `[doc 00042]`, so a fault can target it by that tag. The ideal
schedule is what a perfect client would achieve against the same faults: each attempt takes the
simulator's latency, a retry waits exactly what `Retry-After` demands (nothing when the server
names no wait), and an item waiting out a retry holds no concurrency slot.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from dspy_async.testing import ProviderSimulator

FaultKind = Literal["429", "503", "drop"]
RETRY_AFTER = 1.0  # seconds, on every 429

# Implementation names, shared with implementations.py through the worker's spec.
DSPY_ASYNC_BATCH = "dspy-async batch"
DSPY_ASYNC_THREADS = "dspy-async sync, threads"
BLOCKING = "blocking: threads + time.sleep"
DSPY_BATCH = "DSPy Module.batch"
DSPY_ACALL = "DSPy acall + semaphore"
DSPY_THREADS = "DSPy sync, threads"
OPENAI_THREADS = "openai sync, threads"
OPENAI_ASYNC = "AsyncOpenAI + semaphore"
RAW_AIOHTTP = "raw aiohttp"
PLAIN_HTTPX = "plain httpx.AsyncClient"

BATCH_PEERS = (
    DSPY_ASYNC_BATCH,
    DSPY_ASYNC_THREADS,
    BLOCKING,
    DSPY_BATCH,
    DSPY_ACALL,
    OPENAI_THREADS,
    OPENAI_ASYNC,
)
THREADED_PEERS = (DSPY_ASYNC_THREADS, BLOCKING, DSPY_THREADS, OPENAI_THREADS)
SCALE_PEERS = (DSPY_ASYNC_BATCH, RAW_AIOHTTP, PLAIN_HTTPX)


@dataclass(frozen=True)
class Fault:
    """How one document's first `times` attempts fail."""

    kind: FaultKind
    times: int = 1

    @property
    def demanded_wait(self) -> float:
        """The wait before a retry that the server asks for."""
        return RETRY_AFTER if self.kind == "429" else 0.0


@dataclass(frozen=True)
class Scenario:
    """A workload: `documents` calls, `concurrency` slots (or `callers` sequential threads)."""

    name: str
    summary: str
    documents: int
    concurrency: int
    implementations: tuple[str, ...]
    faults: Mapping[int, Fault] = field(default_factory=dict)
    latency: float = 0.2
    callers: int | None = None  # set: that many threads, each calling its share in sequence

    def texts(self) -> list[str]:
        return [
            f"{tag(index)} Quarterly note {index}: team {index % 7} shipped the release "
            f"on day {index % 30}, with {index % 5} open issues left for the next sprint."
            for index in range(self.documents)
        ]

    def inject(self, sim: ProviderSimulator) -> None:
        """Script this scenario's faults into a freshly reset simulator."""
        for index, fault in self.faults.items():
            if fault.kind == "drop":
                sim.fault(tag(index), kind="drop", times=fault.times)
            elif fault.kind == "429":
                sim.fault(tag(index), status=429, retry_after=RETRY_AFTER, times=fault.times)
            else:
                sim.fault(tag(index), status=503, times=fault.times)

    def ideal(self) -> float:
        """The ideal schedule's wall time, in seconds."""
        chains = [self._chain(index) for index in range(self.documents)]
        if self.callers is None:
            return list_schedule(chains, self.concurrency, self.latency)
        share = self.documents // self.callers
        return max(
            sum(sum(waits) + self.latency * len(waits) for waits in chains[start : start + share])
            for start in range(0, self.documents, share)
        )

    def _chain(self, index: int) -> list[float]:
        """Waits before each attempt of document `index` (the first is 0)."""
        fault = self.faults.get(index)
        if fault is None:
            return [0.0]
        return [0.0] + [fault.demanded_wait] * fault.times

    def attempts_needed(self) -> int:
        return self.documents + sum(fault.times for fault in self.faults.values())


def tag(index: int) -> str:
    return f"[doc {index:05d}]"


def list_schedule(chains: list[list[float]], slots: int, latency: float) -> float:
    """Makespan of greedy list scheduling: attempts of `latency` s on `slots` slots, each
    document's attempts in sequence with its waits between them (holding no slot); a free slot
    takes the attempt that became ready first (document order on ties)."""
    ready = [(0.0, index, 0) for index in range(len(chains))]
    heapq.heapify(ready)
    free = [0.0] * slots
    end = 0.0
    while ready:
        ready_at, index, step = heapq.heappop(ready)
        slot_free = heapq.heappop(free)
        start = max(ready_at, slot_free)
        finish = start + latency
        heapq.heappush(free, finish)
        end = max(end, finish)
        if step + 1 < len(chains[index]):
            heapq.heappush(ready, (finish + chains[index][step + 1], index, step + 1))
    return end


def _spread(documents: int, every: int, kinds: tuple[FaultKind, ...]) -> dict[int, Fault]:
    """Fault every `every`-th document, starting with the first, cycling through `kinds`."""
    picked = range(0, documents, every)
    return {index: Fault(kinds[n % len(kinds)]) for n, index in enumerate(picked)}


def scenarios(*, quick: bool) -> dict[str, Scenario]:
    s3_documents = 300 if quick else 1000
    s4_documents = 1000 if quick else 5000
    return {
        "S1": Scenario(
            "S1",
            "10 docs, one fails twice with 503, concurrency 10",
            10,
            10,
            BATCH_PEERS,
            {3: Fault("503", times=2)},
        ),
        "S1b": Scenario(
            "S1b",
            "10 docs, one gets 429 + Retry-After 1 s twice, concurrency 10",
            10,
            10,
            BATCH_PEERS,
            {3: Fault("429", times=2)},
        ),
        "S2": Scenario(
            "S2",
            "100 docs, 20 % get 429 + Retry-After 1 s once, concurrency 16",
            100,
            16,
            BATCH_PEERS,
            _spread(100, 5, ("429",)),
        ),
        "S3": Scenario(
            "S3",
            f"{s3_documents} docs, 5 % fail once (429 / 503 / dropped connection), concurrency 64",
            s3_documents,
            64,
            BATCH_PEERS,
            _spread(s3_documents, 20, ("429", "503", "drop")),
        ),
        "S4": Scenario(
            "S4",
            f"scale: {s4_documents} calls in flight at once, 1 s latency",
            s4_documents,
            s4_documents,
            SCALE_PEERS,
            latency=1.0,
        ),
        "S5": Scenario(
            "S5",
            "32 threads x 20 sequential sync calls, 10 % need one retry (429, Retry-After 1 s)",
            640,
            32,
            THREADED_PEERS,
            _spread(640, 10, ("429",)),
            callers=32,
        ),
    }
