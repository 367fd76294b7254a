"""Command line: `python -m dspy_async demo [--model provider/model] [--items N]`."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "demo":
        print("usage: python -m dspy_async demo [--help]", file=sys.stderr)
        return 2
    from ._demo import main as demo

    return demo(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
