"""What a Jupyter cell is: code running inside an event loop that is already running. The sync
API works there as is, without nest_asyncio (the call runs on the runtime's own loop thread while
this one waits), and the cell can await the async API too.

Run: python -m examples.jupyter_cell
"""

from __future__ import annotations

import asyncio

from examples.triage import triage


async def cell() -> None:
    print("sync:", triage(message="The export button crashes the app").team)
    print("async:", (await triage.acall(message="I was charged twice")).team)


if __name__ == "__main__":
    asyncio.run(cell())
