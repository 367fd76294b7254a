"""Command line: `python -m dspy_async COMMAND`; `--help` lists the commands.

Errors are one line on stderr (exit 2 for bad arguments, 1 for a failure), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

PROG = "python -m dspy_async"


class _Parser(argparse.ArgumentParser):
    """argparse, with a one-line error instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    from . import _demo
    from .errors import DSPyAsyncError

    parser = _Parser(
        prog=PROG,
        description="dspy-async's command line.",
        epilog="The provider simulator has its own: python -m dspy_async.testing --help",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="a batch through injected faults, raced against the blocking design",
        description=_demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _demo.add_arguments(demo)
    demo.set_defaults(run=_demo.run, prog=demo.prog)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (DSPyAsyncError, OSError) as error:
        print(f"{args.prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
