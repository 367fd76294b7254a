"""Jobs in a fork-context process pool (the shape of Celery's prefork pool) calling Predict
after the parent already used it: each child starts its own runtime loop on its first call.

Run: python -m examples.prefork_worker
"""

from __future__ import annotations

import multiprocessing
import os

from examples.triage import triage

MESSAGES = [
    "I was charged twice this month",
    "The export button crashes the app",
    "Do you offer a discount for teams?",
    "Can I change the email on my account?",
    "My invoice shows the wrong VAT number",
    "The API returns 500 on every upload",
]


def job(message: str) -> tuple[int, str]:
    return os.getpid(), triage(message=message).team


def main() -> None:
    print(f"parent {os.getpid()}: {triage(message='warm-up in the parent').team}")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for pid, team in pool.map(job, MESSAGES):
            print(f"worker {pid}: {team}")
    print(f"parent {os.getpid()}: {triage(message='after the pool').team}")


if __name__ == "__main__":
    main()
