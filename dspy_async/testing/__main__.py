"""``python -m dspy_async.testing serve``: run a ProviderSimulator until Ctrl-C or SIGTERM.

Lets benchmarks and other libraries' clients talk to the simulator from another process.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from ._simulator import ProviderSimulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dspy_async.testing",
        description="Tools from dspy_async.testing.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the OpenAI, Anthropic and Ollama simulator on 127.0.0.1",
        description="Serve the ProviderSimulator on 127.0.0.1 until Ctrl-C or SIGTERM.",
    )
    serve.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    serve.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    serve.add_argument("--api-key", default=None, help="reject requests without this key")
    args = parser.parse_args(argv)

    stop = threading.Event()  # fork-safe: per call (this serve command)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with ProviderSimulator(latency=args.latency, api_key=args.api_key, port=args.port) as sim:
        print(f"ProviderSimulator serving on {sim.base_url}", flush=True)
        print(f"  OpenAI base URL:    {sim.openai_base_url}")
        print(f"  Anthropic base URL: {sim.anthropic_base_url}")
        print(f"  Ollama base URL:    {sim.ollama_base_url}")
        print("Press Ctrl-C to stop.", flush=True)
        stop.wait()
    print("ProviderSimulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
