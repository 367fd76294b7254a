"""Time to first chunk: how long after the server sends a stream's first piece of text the sync
consumer has it, through the whole stack (aiohttp, the stream reader, the channel, the thread
handoff).

    python benchmarks/stream_first_chunk.py [--streams 200] [--threads 50]

For each provider's wire format, and for `Predict.stream` (fields parsed as they come), runs
`--streams` streams one after another, then the same number from `--threads` threads at once,
against the provider simulator on 127.0.0.1 (one process: the simulator records when it wrote
the first piece, `RecordedRequest.first_chunk_at`, on the same monotonic clock). Prints the
median and p95 of (first chunk seen by the consumer) - (first chunk sent by the server), in
milliseconds. Everything runs in one process on one GIL: with many consumer threads, the
handoff waits for the interpreter's switch interval (5 ms) more than for the library.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import dspy_async as dspy
from dspy_async.testing import ProviderSimulator

ANSWER = " ".join(f"word{i}" for i in range(20))


def first_chunk(stream: Iterator[object]) -> float:
    """Wait for the stream's first item; when it came. The rest is read, not timed."""
    next(stream)
    seen = time.monotonic()
    for _ in stream:
        pass
    return seen


def measure(
    sim: ProviderSimulator,
    start: Callable[[str], Iterator[object]],
    output: str,
    streams: int,
    threads: int,
) -> list[float]:
    """Milliseconds from the server's first chunk to the consumer's, one per stream, after
    an untimed warm-up stream."""
    sim.reset()
    sim.respond(output=output)
    first_chunk(start("warm-up"))
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def run(prompts: list[str]) -> None:
        for prompt in prompts:
            when = first_chunk(start(prompt))
            with lock:
                seen[prompt] = when

    prompts = [f"stream number {index:05d}" for index in range(streams)]
    if threads == 1:
        run(prompts)
    else:
        workers = [
            threading.Thread(target=run, args=(prompts[i::threads],)) for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    records = sim.wait_for_requests(streams + 1, finished=True)
    sent = {
        prompt: record.first_chunk_at
        for record in records
        for prompt in [record.text[record.text.find("stream number ") :][:19]]
        if prompt in seen and record.first_chunk_at is not None
    }
    return [(seen[prompt] - sent[prompt]) * 1000 for prompt in prompts]


def starter(sim: ProviderSimulator, provider: str) -> Callable[[str], Iterator[object]]:
    """How to start one stream: `lm.stream(prompt)`, or Predict's for "predict"."""
    wire = "openai" if provider == "predict" else provider
    lm = dspy.LM(f"{wire}/m", api_base=sim.api_base(wire), api_key="sk-bench", cache=False)
    if provider != "predict":
        return lm.stream
    predict = dspy.Predict("question -> answer", lm=lm)
    return lambda prompt: predict.stream(question=prompt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--threads", type=int, default=50)
    args = parser.parse_args()
    print(f"{'stream':<22} {'consumers':>10} {'median ms':>10} {'p95 ms':>10} {'n':>6}")
    with ProviderSimulator(chunk_delay=0.002) as sim:
        for provider in ("openai", "anthropic", "ollama", "predict"):
            start = starter(sim, provider)
            # Predict's reply is JSON written tight, so that its first piece has answer text.
            output = f'{{"answer":"{ANSWER}"}}' if provider == "predict" else ANSWER
            for threads in (1, args.threads):
                samples = measure(sim, start, output, args.streams, threads)
                p95 = statistics.quantiles(samples, n=20)[-1]
                name = f"{provider} ({'Predict' if provider == 'predict' else 'LM'})"
                print(
                    f"{name:<22} {threads:>10} {statistics.median(samples):>10.2f} "
                    f"{p95:>10.2f} {len(samples):>6}"
                )


if __name__ == "__main__":
    main()
